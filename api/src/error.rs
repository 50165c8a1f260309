//! API errors: every failure leaves as `{"error": {"code", "message"}}` with the HTTP
//! status of its [`ErrorCode`]. Internal detail is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalamdb_engine::error::{EngineError, ErrorCode};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
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
            code: e.code(),
            message: e.client_message(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (status, Json(body)).into_response();
        if self.code == ErrorCode::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kalamdb\""),
            );
        }
        resp
    }
}
