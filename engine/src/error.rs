//! Engine errors and the one [`ErrorCode`] table every layer maps to.

use kalamdb_auth::error::AuthError;
use kalamdb_storage::error::StorageError;
use thiserror::Error;

/// Stable error codes. They reach clients as GraphQL `extensions.code` and in the SQL
/// API's `error.code`; the API gives each its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    SqlSyntax,
    Unsupported,
    InvalidInput,
    NamespaceNotFound,
    TableNotFound,
    ColumnNotFound,
    UserNotFound,
    JobNotFound,
    IndexNotFound,
    AlreadyExists,
    TypeMismatch,
    NotNullViolation,
    DuplicateKey,
    WriteConflict,
    PayloadTooLarge,
    Unauthenticated,
    TokenExpired,
    Forbidden,
    /// A `where` nested deeper or larger than the configured bound.
    FilterTooComplex,
    /// A result with more rows than the configured bound.
    TooManyRows,
    /// A GraphQL document that does not parse.
    GraphqlParseFailed,
    /// A GraphQL document that fails validation: unknown fields, wrong variable types...
    GraphqlValidationFailed,
    QueryTooDeep,
    QueryTooComplex,
    /// A GraphQL-over-HTTP request whose parameters are malformed.
    BadRequest,
    /// More subscriptions than a connection or user may hold.
    TooManySubscriptions,
    /// A subscriber that fell too far behind the changes it was sent.
    SlowConsumer,
    /// A subscription ended because its table's definition changed or went away.
    SchemaChanged,
    /// A result (a SQL result or a GraphQL response) over the configured byte bound.
    ResultTooLarge,
    /// A query that needed more memory than one query may take.
    MemoryLimitExceeded,
    /// A statement that ran past the statement timeout, and was stopped.
    StatementTimeout,
    /// The device holding the data is full: writes fail until space is freed.
    StorageFull,
    /// A number outside its type's range: an integer overflow, a non-finite DOUBLE.
    OutOfRange,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SqlSyntax => "SQL_SYNTAX_ERROR",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::NamespaceNotFound => "NAMESPACE_NOT_FOUND",
            ErrorCode::TableNotFound => "TABLE_NOT_FOUND",
            ErrorCode::ColumnNotFound => "COLUMN_NOT_FOUND",
            ErrorCode::UserNotFound => "USER_NOT_FOUND",
            ErrorCode::JobNotFound => "JOB_NOT_FOUND",
            ErrorCode::IndexNotFound => "INDEX_NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::NotNullViolation => "NOT_NULL_VIOLATION",
            ErrorCode::DuplicateKey => "DUPLICATE_KEY",
            ErrorCode::WriteConflict => "WRITE_CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::FilterTooComplex => "FILTER_TOO_COMPLEX",
            ErrorCode::TooManyRows => "TOO_MANY_ROWS",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::QueryTooDeep => "QUERY_TOO_DEEP",
            ErrorCode::QueryTooComplex => "QUERY_TOO_COMPLEX",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::SchemaChanged => "SCHEMA_CHANGED",
            ErrorCode::ResultTooLarge => "RESULT_TOO_LARGE",
            ErrorCode::MemoryLimitExceeded => "MEMORY_LIMIT_EXCEEDED",
            ErrorCode::StatementTimeout => "STATEMENT_TIMEOUT",
            ErrorCode::StorageFull => "STORAGE_FULL",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("namespace '{0}' does not exist")]
    NamespaceNotFound(String),
    #[error("table '{0}' does not exist")]
    TableNotFound(String),
    #[error("column '{column}' does not exist in '{table}'")]
    ColumnNotFound { table: String, column: String },
    #[error("user '{0}' does not exist")]
    UserNotFound(String),
    #[error("job '{0}' does not exist")]
    JobNotFound(String),
    #[error("index '{0}' does not exist")]
    IndexNotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    TypeMismatch(String),
    #[error("column '{0}' may not be null")]
    NotNull(String),
    #[error("a row with primary key {0} already exists")]
    DuplicateKey(String),
    /// Another row holds the values of a unique index.
    #[error("duplicate key value {0}")]
    UniqueViolation(String),
    #[error("the rows changed while the statement ran; retry it")]
    WriteConflict,
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A number outside its type's range (PostgreSQL's numeric_value_out_of_range).
    #[error("{0}")]
    OutOfRange(String),
    /// The one message every failed login gets.
    #[error("invalid username or password")]
    Unauthenticated,
    /// A bearer or refresh token that is not valid (never says why in detail).
    #[error("{0}")]
    InvalidToken(String),
    #[error("token expired")]
    TokenExpired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    FilterTooComplex(String),
    #[error("{0}")]
    TooManyRows(String),
    /// Input nested deeper than the bound (expressions in SQL, values in GraphQL).
    #[error("{0}")]
    TooDeep(String),
    #[error("{0}")]
    ResultTooLarge(String),
    #[error("{0}")]
    MemoryLimit(String),
    #[error("the statement ran longer than the statement timeout of {0} ms and was stopped")]
    Timeout(u64),
    #[error("{0}")]
    TooManySubscriptions(String),
    #[error("the subscription fell too far behind and was ended")]
    SlowConsumer,
    #[error("the definition of table '{0}' changed; subscribe again")]
    SchemaChanged(String),
    #[error("storage: {0}")]
    Storage(StorageError),
    /// What a write gets while the device is full (the detail goes to the log).
    #[error("the server's storage is full: writes are refused until space is freed (reads still work)")]
    StorageFull,
    /// An engine error that came back out of DataFusion, which carries errors as trait
    /// objects: the original's code and message.
    #[error("{message}")]
    Returned { code: ErrorCode, message: String },
    #[error("internal: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::Syntax(_) => ErrorCode::SqlSyntax,
            EngineError::Unsupported(_) => ErrorCode::Unsupported,
            EngineError::InvalidInput(_) => ErrorCode::InvalidInput,
            EngineError::NamespaceNotFound(_) => ErrorCode::NamespaceNotFound,
            EngineError::TableNotFound(_) => ErrorCode::TableNotFound,
            EngineError::ColumnNotFound { .. } => ErrorCode::ColumnNotFound,
            EngineError::UserNotFound(_) => ErrorCode::UserNotFound,
            EngineError::JobNotFound(_) => ErrorCode::JobNotFound,
            EngineError::IndexNotFound(_) => ErrorCode::IndexNotFound,
            EngineError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            EngineError::TypeMismatch(_) => ErrorCode::TypeMismatch,
            EngineError::NotNull(_) => ErrorCode::NotNullViolation,
            EngineError::DuplicateKey(_) | EngineError::UniqueViolation(_) => ErrorCode::DuplicateKey,
            EngineError::WriteConflict => ErrorCode::WriteConflict,
            EngineError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            EngineError::OutOfRange(_) => ErrorCode::OutOfRange,
            EngineError::Unauthenticated | EngineError::InvalidToken(_) => ErrorCode::Unauthenticated,
            EngineError::TokenExpired => ErrorCode::TokenExpired,
            EngineError::Forbidden(_) => ErrorCode::Forbidden,
            EngineError::FilterTooComplex(_) => ErrorCode::FilterTooComplex,
            EngineError::TooManyRows(_) => ErrorCode::TooManyRows,
            EngineError::TooDeep(_) => ErrorCode::QueryTooDeep,
            EngineError::ResultTooLarge(_) => ErrorCode::ResultTooLarge,
            EngineError::MemoryLimit(_) => ErrorCode::MemoryLimitExceeded,
            EngineError::Timeout(_) => ErrorCode::StatementTimeout,
            EngineError::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            EngineError::SlowConsumer => ErrorCode::SlowConsumer,
            EngineError::SchemaChanged(_) => ErrorCode::SchemaChanged,
            EngineError::StorageFull => ErrorCode::StorageFull,
            EngineError::Storage(_) | EngineError::Internal(_) => ErrorCode::Internal,
            EngineError::Returned { code, .. } => *code,
        }
    }

    /// The message a client may see: internal detail stays in the logs.
    pub fn client_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal error".to_string(),
            _ => self.to_string(),
        }
    }

    pub fn forbidden(what: impl Into<String>) -> Self {
        EngineError::Forbidden(what.into())
    }
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        if e.is_full() {
            tracing::error!(error = %e, "the storage device is full");
            EngineError::StorageFull
        } else {
            EngineError::Storage(e)
        }
    }
}

impl From<AuthError> for EngineError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Hash(_) => EngineError::Internal(e.to_string()),
            other => EngineError::InvalidInput(other.to_string()),
        }
    }
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        // Our own errors travel through DataFusion as `External`: take them back out.
        let root = e.find_root();
        if let D::External(inner) = root
            && let Some(ours) = inner.downcast_ref::<SharedEngineError>()
        {
            return ours.to_engine_error();
        }
        match root {
            D::SQL(err, _) => EngineError::Syntax(err.to_string()),
            D::SchemaError(s, _) => match s.as_ref() {
                datafusion::common::SchemaError::FieldNotFound { field, .. } => EngineError::ColumnNotFound {
                    table: field.relation.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                    column: field.name.clone(),
                },
                other => EngineError::InvalidInput(other.to_string()),
            },
            D::Plan(m) => EngineError::InvalidInput(m.clone()),
            D::NotImplemented(m) => EngineError::Unsupported(m.clone()),
            D::ArrowError(a, _) => EngineError::InvalidInput(a.to_string()),
            D::Execution(m) => EngineError::InvalidInput(m.clone()),
            D::ResourcesExhausted(m) => {
                EngineError::MemoryLimit(format!("the query needs more memory than allowed: {m}"))
            }
            other => EngineError::Internal(other.to_string()),
        }
    }
}

/// An [`EngineError`] carried inside a `DataFusionError::External`: its code and its
/// message, so that every code survives the trip.
#[derive(Debug)]
pub(crate) struct SharedEngineError {
    code: ErrorCode,
    message: String,
}

impl SharedEngineError {
    fn to_engine_error(&self) -> EngineError {
        EngineError::Returned {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl std::fmt::Display for SharedEngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SharedEngineError {}

impl EngineError {
    /// Wraps this error so it survives a trip through DataFusion.
    pub(crate) fn into_datafusion(self) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::External(Box::new(SharedEngineError {
            code: self.code(),
            message: self.to_string(),
        }))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code, and the message a client sees, come back out of DataFusion as they
    /// went in, however deep DataFusion wrapped the error.
    #[test]
    fn every_code_survives_datafusion() {
        for e in [
            EngineError::Forbidden("role user may not read table a.b".into()),
            EngineError::TableNotFound("a.b".into()),
            EngineError::ColumnNotFound {
                table: "a.b".into(),
                column: "c".into(),
            },
            EngineError::TypeMismatch("not a number".into()),
            EngineError::NotNull("title".into()),
            EngineError::DuplicateKey("7".into()),
            EngineError::FilterTooComplex("too deep".into()),
            EngineError::TooManyRows("too many".into()),
            EngineError::SchemaChanged("a.b".into()),
            EngineError::PayloadTooLarge("big".into()),
            EngineError::Internal("secret detail".into()),
        ] {
            let (code, message) = (e.code(), e.client_message());
            let wrapped = datafusion::error::DataFusionError::Context("scan".into(), Box::new(e.into_datafusion()));
            let back = EngineError::from(wrapped);
            assert_eq!((back.code(), back.client_message()), (code, message));
        }
    }
}
