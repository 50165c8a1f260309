//! `POST /v1/auth/login` and `POST /v1/auth/refresh`: our own access tokens (HS256
//! JWT) and rotating refresh tokens.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use kalamdb_engine::sessions::TokenPair;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::sql_handler::read_json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Result<Json<TokenPair>, ApiError> {
    let req: LoginRequest = read_json(body, state.config.max_body_bytes).await?;
    let pair = state
        .engine
        .login(&req.username, &req.password, peer.ip().is_loopback())
        .await?;
    Ok(Json(pair))
}

pub async fn refresh(State(state): State<AppState>, body: Body) -> Result<Json<TokenPair>, ApiError> {
    let req: RefreshRequest = read_json(body, state.config.max_body_bytes).await?;
    Ok(Json(state.engine.refresh(&req.refresh_token)?))
}
