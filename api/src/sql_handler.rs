//! `POST /v1/sql`: `{"sql": "...", "params": [...]}` in, `{"columns", "rows"}` (or
//! `affected_rows` / `message`) out.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use kalamdb_engine::error::ErrorCode;
use kalamdb_engine::sql::result::SqlResult;
use serde::Deserialize;
use tracing::Instrument;

use crate::app::AppState;
use crate::error::ApiError;
use crate::http_auth;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

/// Reads a JSON body of at most `limit` bytes.
pub async fn read_json<T: serde::de::DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("bad JSON body: {e}")))
}

pub async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SqlResult>, ApiError> {
    let ctx = http_auth::authenticate(&state, &headers, peer).await?;
    let req: SqlRequest = read_json(body, state.config.max_body_bytes).await?;
    let span = tracing::info_span!("sql", user = %ctx.user, role = %ctx.role);
    let result = state
        .engine
        .execute_sql(&ctx, &req.sql, &req.params)
        .instrument(span)
        .await?;
    Ok(Json(result))
}
