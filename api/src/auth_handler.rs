//! `POST /v1/auth/login` and `POST /v1/auth/refresh`: our own access tokens (HS256
//! JWT) and rotating refresh tokens.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
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

pub async fn login(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, body: Body) -> Response {
    let result = async {
        let req: LoginRequest = read_json(body, state.config.max_body_bytes).await?;
        state
            .engine
            .login(&req.username, &req.password, peer.ip().is_loopback())
            .await
            .map_err(ApiError::from)
    }
    .await;
    token_response(result)
}

pub async fn refresh(State(state): State<AppState>, body: Body) -> Response {
    let result = async {
        let req: RefreshRequest = read_json(body, state.config.max_body_bytes).await?;
        state.engine.refresh(&req.refresh_token).map_err(ApiError::from)
    }
    .await;
    token_response(result)
}

/// Tokens, or the error without a `WWW-Authenticate: Basic` challenge: these routes take
/// credentials in their body, and a challenge would make a browser open its own
/// password dialog over the page that called them.
fn token_response(result: Result<TokenPair, ApiError>) -> Response {
    match result {
        Ok(pair) => Json(pair).into_response(),
        Err(e) => {
            let mut resp = e.into_response();
            resp.headers_mut().remove(header::WWW_AUTHENTICATE);
            resp
        }
    }
}
