//! Turns request credentials into an [`ExecContext`]: a bearer access token, or HTTP
//! Basic checked against bcrypt hashes, and `X-KalamDB-User-Id` for callers allowed to act as a user.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use base64::Engine as _;
use kalamdb_auth::identity::UserId;
use kalamdb_engine::accounts::Principal;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::error::{EngineError, ErrorCode};

use crate::app::AppState;
use crate::error::ApiError;

pub const ACT_AS_HEADER: &str = "x-kalamdb-user-id";

enum Credentials {
    Basic(String, String),
    Bearer(String),
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "missing credentials: use Authorization: Bearer or Basic",
        )
    })?;
    let value = value.to_str().map_err(|_| ApiError::unauthenticated())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(ApiError::unauthenticated)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.trim().to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "unsupported authorization scheme: use Bearer or Basic",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| ApiError::unauthenticated())?;
    let text = String::from_utf8(decoded).map_err(|_| ApiError::unauthenticated())?;
    let (user, pass) = text.split_once(':').ok_or_else(ApiError::unauthenticated)?;
    Ok(Credentials::Basic(user.to_string(), pass.to_string()))
}

pub async fn authenticate(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<ExecContext, ApiError> {
    authenticate_session(state, headers, peer).await.map(|p| p.ctx)
}

/// The caller and its credentials, seen from the client's address (`X-Forwarded-For`
/// counts only from a trusted proxy).
pub async fn authenticate_session(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Principal, ApiError> {
    let engine = &state.engine;
    let source = state.config.client_addr(peer.ip(), headers);
    let mut principal = match credentials(headers)? {
        Credentials::Basic(user, pass) => engine.accounts().authenticate(&user, &pass, source).await?,
        Credentials::Bearer(token) if state.external.claims_trusted_issuer(&token) => {
            let identity = state.external.verify(&token).await?;
            let user = engine
                .accounts()
                .external_user(&identity.issuer, &identity.subject, source)?;
            identity.principal(user)
        }
        Credentials::Bearer(token) => engine.accounts().token_session(&token)?,
    };
    principal.ctx = act_as(state, headers, principal.ctx.from_source(source))?;
    Ok(principal)
}

fn act_as(state: &AppState, headers: &HeaderMap, ctx: ExecContext) -> Result<ExecContext, ApiError> {
    let engine = &state.engine;
    match headers.get(ACT_AS_HEADER) {
        None => Ok(ctx),
        Some(v) => {
            let subject = v
                .to_str()
                .ok()
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidInput, format!("bad {ACT_AS_HEADER} header")))?;
            let acting = match ctx.clone().acting_as(subject.clone()) {
                Ok(c) => c,
                Err(e) => {
                    engine.accounts().audit_forbidden(&ctx, &format!("act as {subject}"));
                    return Err(e.into());
                }
            };
            if engine.accounts().context_for(&subject).is_none() {
                return Err(EngineError::UserNotFound(subject.to_string()).into());
            }
            engine.accounts().audit_act_as(&acting);
            Ok(acting)
        }
    }
}
