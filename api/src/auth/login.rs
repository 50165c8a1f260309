//! `POST /v1/auth/login`, `/refresh` and `/logout`: our own access tokens (HS256 JWT)
//! and rotating refresh tokens, and the end of a session.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalamdb_engine::accounts::sessions::TokenPair;
use kalamdb_engine::error::ErrorCode;
use serde::Deserialize;

use crate::app::AppState;
use crate::body::{read_bytes, read_json};
use crate::error::ApiError;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    pub refresh_token: Option<String>,
}

/// The client's address: the peer, or what a trusted proxy forwarded.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(Self(state.config.client_addr(peer, &parts.headers)))
    }
}

pub async fn login(State(state): State<AppState>, ClientAddr(source): ClientAddr, body: Body) -> Response {
    let result = async {
        let req: LoginRequest = read_json(body, state.config.max_body_bytes).await?;
        state
            .engine
            .accounts()
            .login(&req.username, &req.password, source)
            .await
            .map_err(ApiError::from)
    }
    .await;
    token_response(result)
}

pub async fn refresh(State(state): State<AppState>, ClientAddr(source): ClientAddr, body: Body) -> Response {
    let result = async {
        let req: RefreshRequest = read_json(body, state.config.max_body_bytes).await?;
        state
            .engine
            .accounts()
            .refresh(&req.refresh_token, source)
            .map_err(ApiError::from)
    }
    .await;
    token_response(result)
}

/// Ends the session of the bearer access token (expired or not) and/or of the
/// `refresh_token` in the body: its tokens stop working and its open subscriptions
/// close. `204` on success.
pub async fn logout(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let bytes = read_bytes(body, state.config.max_body_bytes).await?;
        let req: LogoutRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
            LogoutRequest::default()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(ErrorCode::InvalidInput, format!("bad JSON body: {e}")))?
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
        if bearer.is_none() && req.refresh_token.is_none() {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "send the session's access token as Authorization: Bearer, or its refresh_token",
            ));
        }
        state
            .engine
            .accounts()
            .logout(bearer.as_deref(), req.refresh_token.as_deref(), source)
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => without_challenge(e.into_response()),
    }
}

/// Tokens, or the error without a `WWW-Authenticate: Basic` challenge: these routes take
/// credentials in their body, and a challenge would make a browser open its own
/// password dialog over the page that called them.
fn token_response(result: Result<TokenPair, ApiError>) -> Response {
    match result {
        Ok(pair) => Json(pair).into_response(),
        Err(e) => without_challenge(e.into_response()),
    }
}

fn without_challenge(mut resp: Response) -> Response {
    resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    resp
}
