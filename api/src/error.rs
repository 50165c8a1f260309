//! API errors: every failure leaves as `{"error": {"code", "message"}}` with the HTTP
//! status of its code. Codes are the engine's [`ErrorCode`]s and the few that only the
//! transport gives ([`ApiCode`]); their HTTP statuses are decided here, nowhere else.
//! Internal detail is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalamdb_engine::error::{EngineError, ErrorCode};

/// The code of an API response: the engine's, or one that only the transport gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCode {
    Engine(ErrorCode),
    /// A method the endpoint does not take (a mutation over GET).
    MethodNotAllowed,
    /// A request body of a media type the endpoint does not take.
    UnsupportedMediaType,
    /// A connection over the server's connection bounds.
    TooManyConnections,
}

impl From<ErrorCode> for ApiCode {
    fn from(c: ErrorCode) -> Self {
        ApiCode::Engine(c)
    }
}

impl ApiCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiCode::Engine(c) => c.as_str(),
            ApiCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
        }
    }

    /// The HTTP status of a response with this code.
    pub fn status(self) -> StatusCode {
        match self {
            ApiCode::Engine(c) => status_of(c),
            ApiCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The HTTP status of an engine error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::SqlSyntax
        | ErrorCode::Unsupported
        | ErrorCode::InvalidInput
        | ErrorCode::ColumnNotFound
        | ErrorCode::TypeMismatch
        | ErrorCode::NotNullViolation
        | ErrorCode::FilterTooComplex
        | ErrorCode::TooManyRows
        | ErrorCode::GraphqlParseFailed
        | ErrorCode::GraphqlValidationFailed
        | ErrorCode::QueryTooDeep
        | ErrorCode::QueryTooComplex
        | ErrorCode::ResultTooLarge
        | ErrorCode::MemoryLimitExceeded
        | ErrorCode::StatementTimeout
        | ErrorCode::OutOfRange
        | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NamespaceNotFound
        | ErrorCode::TableNotFound
        | ErrorCode::UserNotFound
        | ErrorCode::JobNotFound
        | ErrorCode::IndexNotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::DuplicateKey | ErrorCode::WriteConflict | ErrorCode::SchemaChanged => {
            StatusCode::CONFLICT
        }
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooManySubscriptions => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::SlowConsumer => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ApiCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: impl Into<ApiCode>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn unauthenticated() -> Self {
        Self::from(EngineError::Unauthenticated)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Self {
            code: e.code().into(),
            message: e.client_message(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (status, Json(body)).into_response();
        // a Bearer challenge: a Basic one would make browsers offer (and send) the
        // credentials they cached for this origin, which a cross-site form could ride
        if matches!(
            self.code,
            ApiCode::Engine(ErrorCode::Unauthenticated | ErrorCode::TokenExpired)
        ) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kalamdb\""),
            );
        }
        resp
    }
}
