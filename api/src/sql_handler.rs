//! `POST /v1/sql`: `{"sql": "...", "params": [...]}` in, `{"columns", "rows"}` (or
//! `affected_rows` / `message`) out.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use kalamdb_engine::sql::result::SqlResult;
use serde::Deserialize;
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::request as http_auth;
use crate::body::read_json;
use crate::error::{ApiCode, ApiError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

pub async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SqlResult>, ApiError> {
    // JSON only: a cross-site HTML form can send text/plain or a form encoding without
    // a preflight, never application/json
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            ApiCode::UnsupportedMediaType,
            "send the statement as JSON with Content-Type: application/json",
        ));
    }
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
