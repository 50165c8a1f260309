//! Sign-in with OAuth 2.0 / OIDC providers: the authorization-code flow with PKCE.
//!
//! - `GET /v1/auth/oauth/{provider}/start?redirect=APP_URL` checks `APP_URL` against the
//!   provider's allow-list, binds `state`, the PKCE verifier, the OIDC `nonce` and the
//!   app URL to the browser in a short-lived signed cookie, and redirects to the
//!   provider.
//! - `GET /v1/auth/oauth/{provider}/callback` checks `state` against that cookie,
//!   exchanges the code (with the verifier) for the provider's tokens, and learns who
//!   signed in: from the id_token for OIDC (signature against the provider's JWKS,
//!   `iss`, `aud`, `exp`, `nonce`), from the user API for GitHub. It maps that identity
//!   to a local user (linked by provider and subject, created with the configured role
//!   when `auto_create` is set), issues our tokens, and redirects to the app URL with a
//!   one-time `code` (never the tokens).
//! - `POST /v1/auth/exchange` turns that code, once and within a minute, into our tokens.
//! - `GET /v1/auth/providers` lists the providers, for sign-in buttons.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kalamdb_auth::external::{self, Expected};
use kalamdb_auth::identity::Role;
use kalamdb_engine::accounts::sessions::TokenPair;
use kalamdb_engine::error::ErrorCode;
use kalamdb_storage::seq::now_millis;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, ExtraTokenFields,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::app::AppState;
use crate::auth::external::{Jwks, LEEWAY_SECS, http_client};
use crate::auth::login::ClientAddr;
use crate::body::read_json;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// GitHub's OAuth apps: identity from its user API.
    Github,
    /// Google (OIDC, issuer `https://accounts.google.com`).
    Google,
    /// Microsoft Entra (OIDC; `issuer` names the tenant:
    /// `https://login.microsoftonline.com/<tenant>/v2.0`).
    Microsoft,
    /// Any OIDC provider, from its discovery document at `issuer`.
    Oidc,
}

/// One sign-in provider (`[[oauth_providers]]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthProvider {
    /// The path segment: `/v1/auth/oauth/<name>/start`.
    pub name: String,
    pub kind: ProviderKind,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The OIDC issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// GitHub's endpoints, for GitHub Enterprise.
    #[serde(default)]
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub user_api_url: Option<String>,
    /// Scopes asked for; each kind has a default.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Our callback as registered with the provider:
    /// `https://HOST/v1/auth/oauth/<name>/callback`.
    pub redirect_uri: String,
    /// App URLs the browser may be sent back to, exactly.
    pub app_redirects: Vec<String>,
    /// Create a local user at first sign-in.
    #[serde(default)]
    pub auto_create: bool,
    /// The role of users created at sign-in.
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::User
}

/// How long a sign-in may take from start to callback.
const FLOW_TTL_SECS: u64 = 600;
/// How long the one-time code of a finished sign-in stays valid.
const CODE_TTL: Duration = Duration::from_secs(60);
const COOKIE: &str = "kalamdb_oauth";
const COOKIE_PATH: &str = "/v1/auth/oauth/";
/// Binds a one-time code to the browser its sign-in ran in: set with the redirect that
/// carries the code, and required to redeem it, so that an attacker's own code cannot
/// be redeemed in a victim's browser (login CSRF).
const EXCHANGE_COOKIE: &str = "kalamdb_exchange";
const EXCHANGE_PATH: &str = "/v1/auth/exchange";

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Endpoints {
    authorize: String,
    token: String,
    /// OIDC: the issuer and its keys.
    oidc: Option<(String, Jwks)>,
}

struct Provider {
    cfg: OAuthProvider,
    endpoints: OnceCell<Endpoints>,
}

/// The token response, with OIDC's `id_token`.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct IdTokenField {
    #[serde(default)]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type ProviderClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What the flow cookie carries, signed (HS256 with a per-process key).
#[derive(Debug, Serialize, Deserialize)]
struct Flow {
    provider: String,
    state: String,
    verifier: String,
    nonce: String,
    redirect: String,
    exp: u64,
}

pub struct OAuth {
    providers: HashMap<String, Provider>,
    http: reqwest::Client,
    cookie_key: Vec<u8>,
    min_refetch: Duration,
    /// One-time codes by digest.
    codes: Mutex<HashMap<[u8; 32], PendingCode>>,
}

/// A finished sign-in's tokens, waiting for their one-time code.
struct PendingCode {
    pair: TokenPair,
    made: Instant,
    /// The digest of the browser binding the code was set with.
    binding: [u8; 32],
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, message)
}

/// Every failure after the provider answered looks the same to the browser; the log
/// and the audit say why.
fn sign_in_failed(why: &str) -> ApiError {
    tracing::info!(reason = why, "OAuth sign-in refused");
    ApiError::new(ErrorCode::Unauthenticated, "sign-in failed")
}

fn random_secret() -> String {
    CsrfToken::new_random().secret().clone()
}

impl OAuth {
    pub fn new(providers: &[OAuthProvider], min_refetch: Duration) -> Self {
        Self {
            providers: providers
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        Provider {
                            cfg: p.clone(),
                            endpoints: OnceCell::new(),
                        },
                    )
                })
                .collect(),
            http: http_client(),
            cookie_key: format!("{}{}", random_secret(), random_secret()).into_bytes(),
            min_refetch,
            codes: Mutex::new(HashMap::new()),
        }
    }

    fn provider(&self, name: &str) -> Result<&Provider, ApiError> {
        self.providers
            .get(name)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidInput, "no such sign-in provider"))
    }

    async fn endpoints<'p>(&self, p: &'p Provider) -> Result<&'p Endpoints, ApiError> {
        p.endpoints
            .get_or_try_init(|| async {
                let issuer =
                    match p.cfg.kind {
                        ProviderKind::Github => {
                            return Ok(Endpoints {
                                authorize: p
                                    .cfg
                                    .authorize_url
                                    .clone()
                                    .unwrap_or_else(|| "https://github.com/login/oauth/authorize".into()),
                                token: p
                                    .cfg
                                    .token_url
                                    .clone()
                                    .unwrap_or_else(|| "https://github.com/login/oauth/access_token".into()),
                                oidc: None,
                            });
                        }
                        ProviderKind::Google => p
                            .cfg
                            .issuer
                            .clone()
                            .unwrap_or_else(|| "https://accounts.google.com".into()),
                        ProviderKind::Microsoft | ProviderKind::Oidc => p.cfg.issuer.clone().ok_or_else(|| {
                            ApiError::new(ErrorCode::Internal, "the provider has no issuer configured")
                        })?,
                    };
                let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let d: Discovery = async { self.http.get(&url).send().await?.error_for_status()?.json().await }
                    .await
                    .map_err(|e| {
                        tracing::warn!(provider = %p.cfg.name, error = %e, "OIDC discovery failed");
                        ApiError::new(ErrorCode::Internal, "the sign-in provider cannot be reached")
                    })?;
                if d.issuer != issuer {
                    tracing::warn!(provider = %p.cfg.name, "discovery names another issuer");
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        "the sign-in provider is misconfigured",
                    ));
                }
                Ok(Endpoints {
                    authorize: d.authorization_endpoint,
                    token: d.token_endpoint,
                    oidc: Some((d.issuer, Jwks::new(&d.jwks_uri))),
                })
            })
            .await
    }

    fn client(p: &Provider, e: &Endpoints) -> Result<ProviderClient, ApiError> {
        let internal = |_| ApiError::new(ErrorCode::Internal, "the sign-in provider is misconfigured");
        let mut c = oauth2::Client::new(ClientId::new(p.cfg.client_id.clone()))
            .set_auth_uri(AuthUrl::new(e.authorize.clone()).map_err(internal)?)
            .set_token_uri(TokenUrl::new(e.token.clone()).map_err(internal)?)
            .set_redirect_uri(RedirectUrl::new(p.cfg.redirect_uri.clone()).map_err(internal)?);
        if let Some(secret) = &p.cfg.client_secret {
            c = c.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(c)
    }

    fn sign_flow(&self, flow: &Flow) -> Result<String, ApiError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            flow,
            &EncodingKey::from_secret(&self.cookie_key),
        )
        .map_err(|_| ApiError::new(ErrorCode::Internal, "internal error"))
    }

    fn read_flow(&self, headers: &HeaderMap) -> Option<Flow> {
        let value = cookie(headers, COOKIE)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_required_spec_claims(&["exp"]);
        v.leeway = 0;
        jsonwebtoken::decode::<Flow>(&value, &DecodingKey::from_secret(&self.cookie_key), &v)
            .ok()
            .map(|d| d.claims)
    }

    /// Exchanges the code for the provider's tokens and learns who signed in:
    /// `(subject, suggested user name)`.
    async fn identify(
        &self,
        p: &Provider,
        e: &Endpoints,
        code: &str,
        flow: &Flow,
    ) -> Result<(String, String), ApiError> {
        let client = Self::client(p, e)?;
        let client_http = self.http.clone();
        let http = move |req: oauth2::HttpRequest| {
            let client_http = client_http.clone();
            async move { send(&client_http, req).await }
        };
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| sign_in_failed(&format!("code exchange: {e}")))?;
        match &e.oidc {
            Some((issuer, jwks)) => {
                let id_token = tokens
                    .extra_fields()
                    .id_token
                    .as_deref()
                    .ok_or_else(|| sign_in_failed("no id_token"))?;
                let signed = external::signed_with(id_token).map_err(|_| sign_in_failed("id_token header"))?;
                let key = jwks
                    .key(&self.http, &signed, self.min_refetch)
                    .await
                    .ok_or_else(|| sign_in_failed("id_token signed by an unknown key"))?;
                let expected = Expected {
                    issuer,
                    audience: &p.cfg.client_id,
                    leeway_secs: LEEWAY_SECS,
                };
                let claims = external::verify(id_token, &key, signed.alg, &expected)
                    .map_err(|_| sign_in_failed("id_token did not verify"))?;
                let nonce_ok = claims
                    .get("nonce")
                    .and_then(Value::as_str)
                    .is_some_and(|n| constant_time_eq(n.as_bytes(), flow.nonce.as_bytes()));
                if !nonce_ok {
                    return Err(sign_in_failed("id_token nonce"));
                }
                let subject = claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .ok_or_else(|| sign_in_failed("id_token without sub"))?
                    .to_string();
                let suggested = ["preferred_username", "email", "name"]
                    .iter()
                    .find_map(|k| claims.get(*k).and_then(Value::as_str))
                    .map(|s| s.split('@').next().unwrap_or(s).to_string())
                    .unwrap_or_else(|| subject.clone());
                Ok((subject, suggested))
            }
            None => {
                let url = p.cfg.user_api_url.as_deref().unwrap_or("https://api.github.com/user");
                let user: Value = async {
                    self.http
                        .get(url)
                        .bearer_auth(tokens.access_token().secret())
                        .header(header::USER_AGENT, "kalamdb")
                        .header(header::ACCEPT, "application/json")
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await
                }
                .await
                .map_err(|e| sign_in_failed(&format!("user API: {e}")))?;
                let id = user
                    .get("id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| sign_in_failed("user API without id"))?;
                let login = user.get("login").and_then(Value::as_str).unwrap_or("github-user");
                Ok((id.to_string(), login.to_string()))
            }
        }
    }

    /// A one-time code for `pair`, and the binding for the browser that may redeem it.
    fn remember(&self, pair: TokenPair) -> (String, String) {
        let code = random_secret();
        let binding = random_secret();
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let bound: [u8; 32] = Sha256::digest(binding.as_bytes()).into();
        let mut codes = self.codes.lock();
        codes.retain(|_, c| c.made.elapsed() < CODE_TTL);
        codes.insert(
            digest,
            PendingCode {
                pair,
                made: Instant::now(),
                binding: bound,
            },
        );
        (code, binding)
    }

    /// The tokens of a code, once, and only with the binding of the browser it was
    /// made for; a code shown with another binding (or none) stays unspent.
    fn redeem(&self, code: &str, binding: Option<&str>) -> Option<TokenPair> {
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let shown: [u8; 32] = Sha256::digest(binding?.as_bytes()).into();
        let mut codes = self.codes.lock();
        if !constant_time_eq(&codes.get(&digest)?.binding, &shown) {
            return None;
        }
        let code = codes.remove(&digest)?;
        (code.made.elapsed() < CODE_TTL).then_some(code.pair)
    }
}

/// The value of cookie `name` in a request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The oauth2 crate's HTTP requests, sent with our client.
async fn send(http: &reqwest::Client, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let mut r = http.request(parts.method, parts.uri.to_string()).body(body);
    for (name, value) in &parts.headers {
        r = r.header(name, value);
    }
    let resp = r.send().await?;
    let mut out = oauth2::http::Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        out = out.header(name, value);
    }
    let bytes = resp.bytes().await?;
    Ok(out.body(bytes.to_vec()).unwrap_or_default())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn set_cookie(resp: &mut Response, (name, path): (&str, &str), value: &str, max_age: u64, secure: bool) {
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Deserialize)]
pub struct StartQuery {
    redirect: Option<String>,
}

pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<StartQuery>,
) -> Result<Response, ApiError> {
    let oauth = &state.oauth;
    let p = oauth.provider(&name)?;
    let app = match q.redirect {
        Some(r) => r,
        None => p
            .cfg
            .app_redirects
            .first()
            .cloned()
            .ok_or_else(|| bad("no app URL is configured"))?,
    };
    if !p.cfg.app_redirects.contains(&app) {
        return Err(bad("that redirect is not allowed"));
    }
    let e = oauth.endpoints(p).await?;
    let client = OAuth::client(p, e)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = random_secret();
    let scopes = p.cfg.scopes.clone().unwrap_or_else(|| match p.cfg.kind {
        ProviderKind::Github => vec!["read:user".into()],
        _ => vec!["openid".into(), "email".into(), "profile".into()],
    });
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.into_iter().map(Scope::new))
        .set_pkce_challenge(challenge);
    if e.oidc.is_some() {
        request = request.add_extra_param("nonce", nonce.clone());
    }
    let (url, csrf) = request.url();
    let flow = Flow {
        provider: name,
        state: csrf.secret().clone(),
        verifier: verifier.secret().clone(),
        nonce,
        redirect: app,
        exp: now_millis() / 1000 + FLOW_TTL_SECS,
    };
    let mut resp = redirect(url.as_str());
    set_cookie(
        &mut resp,
        (COOKIE, COOKIE_PATH),
        &oauth.sign_flow(&flow)?,
        FLOW_TTL_SECS,
        p.cfg.redirect_uri.starts_with("https:"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ClientAddr(source): ClientAddr,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oauth = &state.oauth;
    let p = oauth.provider(&name)?;
    let flow = oauth
        .read_flow(&headers)
        .filter(|f| f.provider == name)
        .ok_or_else(|| bad("no sign-in is in progress in this browser, or it expired"))?;
    if let Some(error) = q.error {
        return Err(sign_in_failed(&format!("provider said {error}")));
    }
    let state_ok = q
        .state
        .as_deref()
        .is_some_and(|s| constant_time_eq(s.as_bytes(), flow.state.as_bytes()));
    if !state_ok {
        return Err(sign_in_failed("state mismatch"));
    }
    let code = q.code.ok_or_else(|| bad("the callback has no code"))?;
    let e = oauth.endpoints(p).await?;
    let (subject, suggested) = oauth.identify(p, e, &code, &flow).await?;
    let create_as = p.cfg.auto_create.then_some(p.cfg.role.min(Role::Dba));
    let (_, pair) = state
        .engine
        .accounts()
        .oauth_login(&name, &subject, &suggested, create_as, source)
        .map_err(|e| match e.code() {
            ErrorCode::Unauthenticated => sign_in_failed("no local user for this identity"),
            _ => ApiError::from(e),
        })?;
    let (one_time, binding) = oauth.remember(pair);
    let sep = if flow.redirect.contains('?') { '&' } else { '?' };
    let mut resp = redirect(&format!("{}{sep}code={one_time}", flow.redirect));
    let secure = p.cfg.redirect_uri.starts_with("https:");
    set_cookie(&mut resp, (COOKIE, COOKIE_PATH), "", 0, secure);
    set_cookie(
        &mut resp,
        (EXCHANGE_COOKIE, EXCHANGE_PATH),
        &binding,
        CODE_TTL.as_secs(),
        secure,
    );
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    code: String,
}

/// `POST /v1/auth/exchange`: the one-time code of a finished sign-in, for our tokens,
/// from the browser the sign-in ran in (its binding cookie comes along).
pub async fn exchange(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: ExchangeRequest = read_json(body, state.config.max_body_bytes).await?;
    let binding = cookie(&headers, EXCHANGE_COOKIE);
    let pair = state
        .oauth
        .redeem(&req.code, binding.as_deref())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "invalid or used code"))?;
    let mut resp = axum::Json(pair).into_response();
    set_cookie(&mut resp, (EXCHANGE_COOKIE, EXCHANGE_PATH), "", 0, false);
    Ok(resp)
}

/// `GET /v1/auth/providers`: the configured sign-in providers.
pub async fn providers(State(state): State<AppState>) -> axum::Json<Value> {
    let mut list: Vec<Value> = state
        .config
        .oauth_providers
        .iter()
        .map(|p| json!({ "name": p.name, "kind": p.kind, "start": format!("/v1/auth/oauth/{}/start", p.name) }))
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    axum::Json(json!({ "providers": list }))
}
