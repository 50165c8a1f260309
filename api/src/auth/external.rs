//! Bearer tokens from trusted external issuers (`trusted_issuers` in the config): each
//! issuer's keys are fetched from its `jwks_uri` and cached; a token whose `kid` is not
//! among them triggers one refetch, at most once per `jwks_min_refetch_secs`, so that
//! key rotation works and unknown kids cannot make us hammer the issuer. Verified
//! tokens are remembered (by SHA-256, until they expire), so a client that sends the
//! same token again pays a hash and a map lookup, not a signature check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use kalamdb_auth::error::AuthError;
use kalamdb_auth::external::{self, Expected, SignedWith};
use kalamdb_auth::identity::{Role, UserId};
use kalamdb_auth::memory::TokenMemory;
use kalamdb_engine::accounts::Principal;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::error::ErrorCode;
use kalamdb_storage::seq::now_millis;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::ApiError;

/// One issuer whose access tokens are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    pub jwks_uri: String,
    /// The `aud` our tokens must carry.
    pub audience: String,
    /// The claim that names the user (`sub` unless set).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim holding role names (a string or a list of strings).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Role-claim value -> our role; the highest match wins. `system` is never granted.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// The role of a token whose role claim maps to nothing; without it, such a token
    /// is refused.
    #[serde(default)]
    pub default_role: Option<Role>,
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_role_claim() -> String {
    "roles".into()
}

/// Clock skew allowed on an external token's `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// Verified tokens remembered at most.
const MAX_REMEMBERED: usize = 10_000;

/// An issuer's published keys, fetched lazily and cached. A key that is not among
/// them triggers one refetch, at most once per `min_refetch`.
pub struct Jwks {
    uri: String,
    keys: RwLock<Arc<JwkSet>>,
    fetched_at: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
            keys: RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            fetched_at: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, signed: &SignedWith) -> Option<Jwk> {
        let keys = self.keys.read().clone();
        external::key_for(&keys, signed).cloned()
    }

    /// The key for a token signed as `signed`, fetching the keys again if it is unknown.
    pub async fn key(&self, http: &reqwest::Client, signed: &SignedWith, min_refetch: Duration) -> Option<Jwk> {
        if let Some(k) = self.cached(signed) {
            return Some(k);
        }
        self.refetch(http, min_refetch).await;
        self.cached(signed)
    }

    async fn refetch(&self, http: &reqwest::Client, min_refetch: Duration) {
        let _one_at_a_time = self.fetching.lock().await;
        let recent = self.fetched_at.lock().is_some_and(|at| at.elapsed() < min_refetch);
        if recent {
            return;
        }
        *self.fetched_at.lock() = Some(Instant::now());
        let fetched = async {
            http.get(&self.uri)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        match fetched {
            Ok(keys) => *self.keys.write() = Arc::new(keys),
            Err(e) => tracing::warn!(uri = %self.uri, error = %e, "cannot fetch JWKS"),
        }
    }
}

struct Issuer {
    cfg: TrustedIssuer,
    jwks: Jwks,
}

/// An external caller: who, with which role, until when (Unix seconds).
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    /// The issuer and the subject it vouches for; together they name one identity,
    /// which maps to a local user of its own (`Accounts::external_user`).
    pub issuer: String,
    pub subject: String,
    pub role: Role,
    pub expires_at: u64,
}

pub struct ExternalTokens {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
    min_refetch: Duration,
    verified: TokenMemory<ExternalIdentity>,
}

/// The HTTP client for issuers and providers: short timeouts, no redirects followed.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

fn invalid() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, "invalid token")
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::ExpiredToken => ApiError::new(ErrorCode::TokenExpired, "token expired"),
        _ => invalid(),
    }
}

impl ExternalTokens {
    pub fn new(issuers: &[TrustedIssuer], min_refetch: Duration) -> Self {
        Self {
            issuers: issuers
                .iter()
                .map(|cfg| Issuer {
                    cfg: cfg.clone(),
                    jwks: Jwks::new(&cfg.jwks_uri),
                })
                .collect(),
            http: http_client(),
            min_refetch,
            verified: TokenMemory::new(MAX_REMEMBERED),
        }
    }

    fn issuer_of(&self, token: &str) -> Option<&Issuer> {
        if self.issuers.is_empty() {
            return None;
        }
        let iss = external::claimed_issuer(token)?;
        self.issuers.iter().find(|i| i.cfg.issuer == iss)
    }

    /// Whether a bearer token names one of the trusted issuers (not yet whether it is
    /// genuine).
    pub fn claims_trusted_issuer(&self, token: &str) -> bool {
        self.issuer_of(token).is_some()
    }

    /// Verifies a token of a trusted issuer and maps it to a caller.
    pub async fn verify(&self, token: &str) -> Result<ExternalIdentity, ApiError> {
        let digest = TokenMemory::<ExternalIdentity>::digest(token);
        let now_secs = now_millis() / 1000;
        if let Some(hit) = self.verified.recall(&digest, now_secs) {
            return Ok(hit);
        }
        let issuer = self.issuer_of(token).ok_or_else(invalid)?;
        let signed = external::signed_with(token).map_err(auth_error)?;
        let key = issuer
            .jwks
            .key(&self.http, &signed, self.min_refetch)
            .await
            .ok_or_else(invalid)?;
        let expected = Expected {
            issuer: &issuer.cfg.issuer,
            audience: &issuer.cfg.audience,
            leeway_secs: LEEWAY_SECS,
        };
        let claims = external::verify(token, &key, signed.alg, &expected).map_err(auth_error)?;
        let identity = identity_of(&issuer.cfg, &claims)?;
        // valid while expires_at + LEEWAY_SECS > now, as the verification allows
        let through = (identity.expires_at + LEEWAY_SECS).saturating_sub(1);
        self.verified.remember(digest, identity.clone(), through, now_secs);
        Ok(identity)
    }
}

/// The caller a verified token names, with the highest role its role claim maps to.
/// The longest subject accepted.
const MAX_SUBJECT_LEN: usize = 256;

fn identity_of(cfg: &TrustedIssuer, claims: &serde_json::Map<String, Json>) -> Result<ExternalIdentity, ApiError> {
    let subject = claims
        .get(&cfg.user_claim)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT_LEN)
        .ok_or_else(invalid)?
        .to_string();
    let names: Vec<&str> = match claims.get(&cfg.role_claim) {
        Some(Json::String(s)) => vec![s.as_str()],
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    };
    let role = names
        .iter()
        .filter_map(|n| cfg.roles.get(*n).copied())
        .max()
        .or(cfg.default_role)
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "the token grants no role here"))?
        .min(Role::Dba);
    let expires_at = claims.get("exp").and_then(Json::as_u64).ok_or_else(invalid)?;
    Ok(ExternalIdentity {
        issuer: cfg.issuer.clone(),
        subject,
        role,
        expires_at,
    })
}

impl ExternalIdentity {
    /// The caller as the request pipeline carries it: `user` (the local user this
    /// identity maps to), vouched for by the issuer until the token expires, with no
    /// local session to revoke.
    pub fn principal(&self, user: UserId) -> Principal {
        Principal {
            ctx: ExecContext::new(user, self.role),
            expires_at: Some(self.expires_at),
            session: None,
            epoch: 0,
            external: true,
        }
    }
}
