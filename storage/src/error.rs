use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),
    /// The device holding the data has no space left: writes fail until some is freed.
    #[error("no space left on the storage device ({0})")]
    Full(String),
    #[error("partition {0} does not exist")]
    NoSuchPartition(String),
    #[error("cold storage: {0}")]
    Cold(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// Whether an error's text reports a full device: RocksDB and `object_store` carry the
/// operating system's error as text only.
fn says_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("os error 28")
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        if says_no_space(e.as_ref()) {
            StorageError::Full(e.into_string())
        } else {
            StorageError::Rocks(e)
        }
    }
}

impl StorageError {
    /// A cold-tier error: a full device is told apart from the rest.
    pub fn cold(e: impl std::fmt::Display) -> Self {
        let message = e.to_string();
        if says_no_space(&message) {
            StorageError::Full(message)
        } else {
            StorageError::Cold(message)
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, StorageError::Full(_))
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;
