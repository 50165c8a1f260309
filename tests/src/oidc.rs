//! A fake OAuth 2.0 / OIDC provider on loopback: discovery, authorization with PKCE,
//! the token endpoint, and JWKS with real keys.

use serde_json::{Value, json};

use crate::server::{basic, tests_dir};

/// A file of `tests/fixtures/oidc`: the fake issuer's keys.
pub fn oidc_fixture(name: &str) -> Vec<u8> {
    std::fs::read(tests_dir().join("fixtures").join("oidc").join(name)).expect("oidc fixture")
}

/// A stand-in for an external OIDC issuer on loopback: it publishes its keys at
/// `/jwks` (real RS256 and ES256 keys from `tests/fixtures/oidc`) and signs tokens.
pub struct FakeIssuer {
    pub url: String,
    jwks: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    oidc: std::sync::Arc<std::sync::Mutex<FakeOidc>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the fake provider's next id_tokens get wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    None,
    WrongAudience,
    WrongIssuer,
    Expired,
    WrongNonce,
    TamperedSignature,
    AlgNone,
    Hs256WithPublicKey,
    /// Signed with `rsa-2`, which the published keys may not hold yet.
    RotatedKey,
}

/// The client the fake provider knows, and who signs in next.
pub const FAKE_CLIENT_ID: &str = "kalamdb-client";
pub const FAKE_CLIENT_SECRET: &str = "kalamdb-client-secret";

struct FakeGrant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    subject: String,
    username: String,
    used: bool,
}

struct FakeOidc {
    grants: std::collections::HashMap<String, FakeGrant>,
    next: u64,
    fault: IdTokenFault,
    subject: String,
    username: String,
}

/// `application/x-www-form-urlencoded` or a query string, decoded.
fn form_pairs(text: &str) -> std::collections::HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

impl FakeIssuer {
    pub async fn start() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let jwks = Arc::new(Mutex::new(oidc_fixture("jwks1.json")));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (j, f) = (jwks.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (j, f) = (j.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = j.lock().expect("jwks").clone();
                    ([(axum::http::header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let oidc = Arc::new(Mutex::new(FakeOidc {
            grants: Default::default(),
            next: 0,
            fault: IdTokenFault::None,
            subject: "subject-1".into(),
            username: "alice".into(),
        }));
        let router = router.merge(Self::oidc_routes(url.clone(), oidc.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            jwks,
            fetches,
            oidc,
            task,
        }
    }

    /// The provider side of the authorization-code flow with PKCE: discovery,
    /// `/authorize` (the user is already signed in there and consents at once),
    /// `/token` (checks the client, the code's single use, the redirect URI and the
    /// PKCE verifier; returns an id_token), and `/app`, the app the flow ends at.
    fn oidc_routes(url: String, oidc: std::sync::Arc<std::sync::Mutex<FakeOidc>>) -> axum::Router {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        let discovery = json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        let (o1, o2, o3) = (oidc.clone(), oidc.clone(), oidc);
        let issuer = url.clone();
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move { axum::Json(d) }
                }),
            )
            .route(
                "/authorize",
                axum::routing::get(move |uri: axum::http::Uri| {
                    let oidc = o1.clone();
                    async move {
                        let q = form_pairs(uri.query().unwrap_or(""));
                        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
                        if get("client_id") != FAKE_CLIENT_ID
                            || get("response_type") != "code"
                            || get("code_challenge_method") != "S256"
                            || get("code_challenge").is_empty()
                        {
                            return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
                        }
                        let mut o = oidc.lock().expect("oidc");
                        o.next += 1;
                        let code = format!("code-{}-{}", o.next, get("code_challenge").len());
                        let grant = FakeGrant {
                            challenge: get("code_challenge"),
                            nonce: get("nonce"),
                            redirect_uri: get("redirect_uri"),
                            subject: o.subject.clone(),
                            username: o.username.clone(),
                            used: false,
                        };
                        o.grants.insert(code.clone(), grant);
                        let to = format!("{}?code={code}&state={}", get("redirect_uri"), get("state"));
                        (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
                    }
                }),
            )
            .route(
                "/token",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    let oidc = o2.clone();
                    let issuer = issuer.clone();
                    async move {
                        let f = form_pairs(&body);
                        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                        let invalid =
                            |e: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": e }))).into_response();
                        let client_ok = headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v == basic(FAKE_CLIENT_ID, FAKE_CLIENT_SECRET));
                        if !client_ok {
                            return (
                                StatusCode::UNAUTHORIZED,
                                axum::Json(json!({ "error": "invalid_client" })),
                            )
                                .into_response();
                        }
                        if get("grant_type") != "authorization_code" {
                            return invalid("unsupported_grant_type");
                        }
                        let mut o = oidc.lock().expect("oidc");
                        let fault = o.fault;
                        let Some(grant) = o.grants.get_mut(&get("code")) else {
                            return invalid("invalid_grant");
                        };
                        if grant.used {
                            return invalid("invalid_grant");
                        }
                        grant.used = true;
                        use base64::Engine as _;
                        let digest = <sha2::Sha256 as sha2::Digest>::digest(get("code_verifier").as_bytes());
                        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
                        if challenge != grant.challenge || get("redirect_uri") != grant.redirect_uri {
                            return invalid("invalid_grant");
                        }
                        let id_token = fake_id_token(&issuer, grant, fault);
                        axum::Json(json!({
                            "access_token": "fake-provider-access-token",
                            "token_type": "bearer",
                            "expires_in": 300,
                            "id_token": id_token,
                        }))
                        .into_response()
                    }
                }),
            )
            .route(
                "/user",
                axum::routing::get(move |headers: axum::http::HeaderMap| {
                    let oidc = o3.clone();
                    async move {
                        let ok = headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v == "Bearer fake-provider-access-token");
                        if !ok {
                            return StatusCode::UNAUTHORIZED.into_response();
                        }
                        // GitHub's user API: a numeric id and a login
                        let o = oidc.lock().expect("oidc");
                        let id = o
                            .subject
                            .bytes()
                            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                            % 1_000_000_000;
                        axum::Json(json!({ "id": id, "login": o.username })).into_response()
                    }
                }),
            )
            .route("/app", axum::routing::get(|| async { "signed in" }))
    }

    /// A GitHub-kind provider entry whose endpoints are this fake's.
    pub fn github_provider(&self, name: &str, server_url: &str) -> kalamdb_api::auth::oauth::OAuthProvider {
        kalamdb_api::auth::oauth::OAuthProvider {
            kind: kalamdb_api::auth::oauth::ProviderKind::Github,
            issuer: None,
            authorize_url: Some(format!("{}/authorize", self.url)),
            token_url: Some(format!("{}/token", self.url)),
            user_api_url: Some(format!("{}/user", self.url)),
            ..self.provider(name, server_url, true)
        }
    }

    /// What the next id_tokens get wrong.
    pub fn fault(&self, fault: IdTokenFault) {
        self.oidc.lock().expect("oidc").fault = fault;
    }

    /// Who signs in next: the provider's subject and preferred username.
    pub fn next_user(&self, subject: &str, username: &str) {
        let mut o = self.oidc.lock().expect("oidc");
        o.subject = subject.into();
        o.username = username.into();
    }

    /// A provider entry of the server's config for this fake.
    pub fn provider(&self, name: &str, server_url: &str, auto_create: bool) -> kalamdb_api::auth::oauth::OAuthProvider {
        kalamdb_api::auth::oauth::OAuthProvider {
            name: name.into(),
            kind: kalamdb_api::auth::oauth::ProviderKind::Oidc,
            client_id: FAKE_CLIENT_ID.into(),
            client_secret: Some(FAKE_CLIENT_SECRET.into()),
            issuer: Some(self.url.clone()),
            authorize_url: None,
            token_url: None,
            user_api_url: None,
            scopes: None,
            redirect_uri: format!("{server_url}/v1/auth/oauth/{name}/callback"),
            app_redirects: vec![format!("{}/app", self.url)],
            auto_create,
            role: kalamdb_auth::identity::Role::User,
        }
    }

    /// The issuer as the server's config names it.
    pub fn trusted(&self, audience: &str) -> kalamdb_api::auth::external::TrustedIssuer {
        kalamdb_api::auth::external::TrustedIssuer {
            issuer: self.url.clone(),
            jwks_uri: format!("{}/jwks", self.url),
            audience: audience.into(),
            user_claim: "sub".into(),
            role_claim: "roles".into(),
            roles: [
                ("kalam-service".to_string(), kalamdb_auth::identity::Role::Service),
                ("kalam-admin".to_string(), kalamdb_auth::identity::Role::System),
            ]
            .into_iter()
            .collect(),
            default_role: Some(kalamdb_auth::identity::Role::User),
        }
    }

    /// Publishes another key set (a fixture file name) from now on.
    pub fn publish(&self, fixture: &str) {
        *self.jwks.lock().expect("jwks") = oidc_fixture(fixture);
    }

    /// How often `/jwks` was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A token with `claims`, signed by fixture key `key` (`rsa1.der`, `rsa2.der`:
    /// PKCS#1; `ec1.der`: PKCS#8) as `alg`, with header `kid`.
    pub fn sign(&self, alg: jsonwebtoken::Algorithm, kid: Option<&str>, key: &str, claims: &Value) -> String {
        let der = oidc_fixture(key);
        let encoding = if key.starts_with("ec") {
            jsonwebtoken::EncodingKey::from_ec_der(&der)
        } else {
            jsonwebtoken::EncodingKey::from_rsa_der(&der)
        };
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &encoding).expect("sign")
    }

    /// Standard claims for `sub`, valid for `ttl_secs` (negative: already expired).
    pub fn claims(&self, sub: &str, audience: &str, ttl_secs: i64) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        json!({ "iss": self.url, "sub": sub, "aud": audience, "iat": now, "exp": now + ttl_secs })
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fake_id_token(issuer: &str, grant: &FakeGrant, fault: IdTokenFault) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut claims = json!({
        "iss": issuer,
        "aud": FAKE_CLIENT_ID,
        "sub": grant.subject,
        "nonce": grant.nonce,
        "preferred_username": grant.username,
        "email": format!("{}@example.com", grant.username),
        "iat": now,
        "exp": now + 300,
    });
    match fault {
        IdTokenFault::WrongAudience => claims["aud"] = json!("another-client"),
        IdTokenFault::WrongIssuer => claims["iss"] = json!("http://127.0.0.1:1"),
        IdTokenFault::Expired => claims["exp"] = json!(now - 600),
        IdTokenFault::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
        _ => {}
    }
    let rs256 = |key: &str, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_der(&oidc_fixture(key)),
        )
        .expect("sign")
    };
    match fault {
        IdTokenFault::RotatedKey => rs256("rsa2.der", "rsa-2"),
        IdTokenFault::TamperedSignature => {
            let t = rs256("rsa1.der", "rsa-1");
            let (head, sig) = t.rsplit_once('.').expect("jwt");
            let mut sig: Vec<char> = sig.chars().collect();
            sig.reverse();
            format!("{head}.{}", sig.into_iter().collect::<String>())
        }
        IdTokenFault::AlgNone => format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
            b64(claims.to_string().as_bytes())
        ),
        IdTokenFault::Hs256WithPublicKey => {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("rsa-1".into());
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&oidc_fixture("rsa1.pub.pem")),
            )
            .expect("sign")
        }
        _ => rs256("rsa1.der", "rsa-1"),
    }
}
