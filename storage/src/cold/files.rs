//! Power-safe file replacement for a cold tier on the local filesystem.
//!
//! `object_store`'s local `put` renames a temporary file into place without syncing
//! the file or its directory, and a flush deletes the hot rows right after: a power
//! loss in the writeback window could keep the deletion and lose the segment or the
//! manifest. Here every file is written to a temporary name, its data synced, renamed
//! into place and its directory synced, and a directory created on the way is synced
//! into its parent, before the write returns. So a flush's order is durable: the
//! segment, then the manifest, then (in RocksDB) the deletion of the rows they hold.
//!
//! The calls go through [`FileOps`] so that the crash-consistency tests can record
//! each of them and build what a disk would hold after a power loss at any point.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The file-system calls the cold tier's writes are made of.
pub trait FileOps: Send + Sync {
    /// Creates one directory (its parent exists).
    fn create_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Creates or truncates `file` and writes `bytes` into it.
    fn write(&self, file: &Path, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes `file`'s data durable (fsync).
    fn sync_file(&self, file: &Path) -> std::io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (atomic on POSIX filesystems).
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Makes the entries of `dir` durable: files created, renamed or removed in it.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Removes `file`.
    fn remove(&self, file: &Path) -> std::io::Result<()>;
}

/// The operating system's calls.
#[derive(Debug, Default)]
pub struct SystemFiles;

impl FileOps for SystemFiles {
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir(dir)
    }
    fn write(&self, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::File::create(file)?.write_all(bytes)
    }
    fn sync_file(&self, file: &Path) -> std::io::Result<()> {
        std::fs::File::open(file)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn remove(&self, file: &Path) -> std::io::Result<()> {
        std::fs::remove_file(file)
    }
}

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// The cold tier's directory on the local filesystem, written durably.
#[derive(Clone)]
pub struct LocalFiles {
    root: PathBuf,
    ops: Arc<dyn FileOps>,
}

impl LocalFiles {
    pub fn new(root: PathBuf, ops: Arc<dyn FileOps>) -> Self {
        Self { root, ops }
    }

    /// Puts `bytes` at `rel` (a `/`-separated path under the root) so that, once this
    /// returns, the file and every directory leading to it survive a power loss, and a
    /// power loss before then leaves the file as it was. The temporary name starts
    /// with the file's own name, so a partition's cleanup recognises one left behind.
    pub fn put_durably(&self, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
        let file = self.root.join(rel);
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            return Err(std::io::Error::other(format!("'{rel}' names no file")));
        };
        self.ensure_dir(dir)?;
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{}.{n}.tmp", name.to_string_lossy()));
        self.ops.write(&temp, bytes)?;
        self.ops.sync_file(&temp)?;
        self.ops.rename(&temp, &file)?;
        self.ops.sync_dir(dir)
    }

    /// Removes the file at `rel`; a file already gone is not an error. The removal is
    /// not synced: the manifest no longer lists the file, and a file that comes back
    /// after a power loss is deleted by the partition's next cleanup.
    pub fn remove(&self, rel: &str) -> std::io::Result<()> {
        match self.ops.remove(&self.root.join(rel)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Creates `dir` and the directories above it that are missing, each synced into
    /// its parent.
    fn ensure_dir(&self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let Some(parent) = dir.parent() else {
            return Err(std::io::Error::other(format!("{} has no parent", dir.display())));
        };
        self.ensure_dir(parent)?;
        match self.ops.create_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            other => other?,
        }
        self.ops.sync_dir(parent)
    }
}
