//! Test harness: a real KalamDB server on `127.0.0.1:0` with a temporary data
//! directory, and an HTTP client that talks to it.

use std::time::Duration;

use base64::Engine as _;
use kalamdb_api::app;
use kalamdb_api::config::Config;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ROOT_PASSWORD: &str = "root-password";

/// A server under test: the app in this process, or the real `kalamdb` binary.
pub struct TestServer {
    pub url: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    child: Option<std::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

/// The `kalamdb` binary built beside this test binary (or `KALAMDB_BIN`).
pub fn kalamdb_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("KALAMDB_BIN") {
        return p.into();
    }
    // target/<profile>/deps/e2e-* -> target/<profile>/kalamdb
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("kalamdb")
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Kills a spawned binary the test did not stop itself.
impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A test configuration: fast bcrypt, a temporary data directory, a free port.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        bcrypt_cost: 4,
        root_password: Some(ROOT_PASSWORD.into()),
        max_body_bytes: 64 * 1024,
        ..Config::default()
    }
}

/// This crate's folder. Read when the tests run (cargo sets it then too): a test binary
/// built from another checkout sharing the target directory may be reused, and the
/// compile-time path would then point into that checkout.
pub fn tests_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(|c, _| tweak(c)).await
    }

    /// As [`Self::start_with`], with the server's URL known to `tweak` (for callback
    /// URLs in the config).
    pub async fn start_at(tweak: impl FnOnce(&mut Config, &str)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = test_config(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tweak(&mut cfg, &format!("http://{addr}"));
        let (router, state) = app::build_app(cfg).await.expect("build app");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            app::serve(listener, router, &state, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Self {
            url: format!("http://{addr}"),
            client: http_client(),
            shutdown: Some(tx),
            handle: Some(handle),
            child: None,
            _dir: Some(dir),
        }
    }

    /// Starts `kalamdb serve` on `data` with `env` added, and waits for its
    /// `listening on` line. The process is killed when the server is dropped.
    pub fn spawn_binary(data: &std::path::Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let bin = kalamdb_bin();
        let mut child = std::process::Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("KALAMDB_ROOT_PASSWORD", ROOT_PASSWORD)
            .env("KALAMDB_BCRYPT_COST", "4")
            .env("KALAMDB_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with `make test`)", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not report its address");
        Self {
            url,
            client: http_client(),
            shutdown: None,
            handle: None,
            child: Some(child),
            _dir: None,
        }
    }

    /// SIGKILLs a spawned binary: no graceful anything.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().expect("a spawned binary");
        child.kill().expect("kill");
        child.wait().expect("wait");
        self.child = None;
    }

    /// Waits up to `wait` for a spawned binary to exit by itself (an injected crash).
    pub fn exited_within(&mut self, wait: Duration) -> bool {
        let child = self.child.as_mut().expect("a spawned binary");
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs a Node script of `tests/clients` (installed by `make deps` with `npm ci`)
    /// against this server, with `KALAMDB_URL` and `env` set; returns its stdout and
    /// fails the test when the script fails.
    pub async fn node(&self, script: &str, env: &[(&str, String)]) -> String {
        let dir = tests_dir().join("clients");
        assert!(
            dir.join("node_modules").is_dir(),
            "tests/clients/node_modules is missing: run `make deps` (npm ci in tests/clients)"
        );
        let out = tokio::process::Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .env("KALAMDB_URL", &self.url)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
        stdout
    }

    /// Sends a statement with a bearer token; returns the HTTP status and JSON body.
    pub async fn sql_bearer(&self, token: &str, sql: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/sql", self.url))
            .header("authorization", format!("Bearer {token}"))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .expect("request");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// Sends a statement with parameters; returns the HTTP status and JSON body.
    pub async fn sql_params(&self, user: &str, password: &str, sql: &str, params: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/sql", self.url))
            .header("authorization", basic(user, password))
            .json(&json!({ "sql": sql, "params": params }))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn sql(&self, user: &str, password: &str, sql: &str) -> (u16, Value) {
        self.sql_params(user, password, sql, json!([])).await
    }

    /// Runs a statement that must succeed.
    pub async fn ok(&self, user: &str, password: &str, sql: &str) -> Value {
        let (status, body) = self.sql(user, password, sql).await;
        assert_eq!(status, 200, "{sql} -> {body}");
        body
    }

    /// Runs a statement that must succeed as a user made by [`TestServer::user`].
    pub async fn ok_as(&self, user: &str, sql: &str) -> Value {
        self.ok(user, &pw(user), sql).await
    }

    /// Runs a statement that must fail as a user made by [`TestServer::user`].
    pub async fn err_as(&self, user: &str, sql: &str) -> (u16, String) {
        self.err(user, &pw(user), sql).await
    }

    /// Runs a statement as root that must succeed.
    pub async fn root(&self, sql: &str) -> Value {
        self.ok("root", ROOT_PASSWORD, sql).await
    }

    /// Runs a statement that must fail; returns the status and error code.
    pub async fn err(&self, user: &str, password: &str, sql: &str) -> (u16, String) {
        let (status, body) = self.sql(user, password, sql).await;
        assert_ne!(status, 200, "{sql} should fail but gave {body}");
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {body}"));
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        (status, code.to_string())
    }

    /// Creates a user with a password of the form `<name>-password`.
    pub async fn user(&self, name: &str, role: &str) {
        self.root(&format!(
            "CREATE USER {name} WITH PASSWORD '{name}-password' ROLE {role}"
        ))
        .await;
    }

    /// Posts a GraphQL request with an `Authorization` header value; returns the HTTP
    /// status and JSON body.
    pub async fn gql_with(&self, auth: &str, query: &str, variables: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/graphql", self.url))
            .header("authorization", auth)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A GraphQL request as a user made by [`TestServer::user`] (or root).
    pub async fn gql(&self, user: &str, query: &str, variables: Value) -> (u16, Value) {
        let password = if user == "root" {
            ROOT_PASSWORD.to_string()
        } else {
            pw(user)
        };
        self.gql_with(&basic(user, &password), query, variables).await
    }

    /// A GraphQL request that must succeed without errors; returns `data`.
    pub async fn gql_ok(&self, user: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql(user, query, variables).await;
        assert_eq!(status, 200, "{query} -> {body}");
        assert!(body.get("errors").is_none(), "{query} -> {body}");
        body["data"].clone()
    }

    /// A GraphQL request that must fail; returns the status and the first error's code.
    pub async fn gql_err(&self, user: &str, query: &str, variables: Value) -> (u16, String) {
        let (status, body) = self.gql(user, query, variables).await;
        let code = body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{query}: no error code in {body}"))
            .to_string();
        (status, code)
    }

    /// A job's row of `system.jobs` as an object.
    pub async fn job(&self, id: &str) -> Value {
        let r = self
            .root(&format!(
                "SELECT status, retries, message, error, kind FROM system.jobs WHERE job_id = '{id}'"
            ))
            .await;
        let row = rows(&r)
            .pop()
            .unwrap_or_else(|| panic!("job {id} is not in system.jobs"));
        json!({ "status": row[0], "retries": row[1], "message": row[2], "error": row[3], "kind": row[4] })
    }

    /// Waits for a job to end (completed, failed or cancelled); returns its row.
    pub async fn wait_job(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let j = self.job(id).await;
            if matches!(j["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return j;
            }
            assert!(std::time::Instant::now() < deadline, "job {id} did not end: {j}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Runs a statement that queues one job (`FLUSH TABLE`, `COMPACT TABLE`), waits for
    /// the job and checks that it completed; returns its row.
    pub async fn run_job(&self, sql: &str) -> Value {
        let r = self.root(sql).await;
        let id = rows(&r)[0][0].as_str().expect("a job id").to_string();
        let j = self.wait_job(&id).await;
        assert_eq!(j["status"], "completed", "{sql}: {j}");
        j
    }

    /// Logs in with a password; returns the access token.
    pub async fn token(&self, user: &str, password: &str) -> String {
        let resp = self
            .client
            .post(format!("{}/v1/auth/login", self.url))
            .json(&json!({ "username": user, "password": password }))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status().as_u16(), 200, "login of {user}");
        let body: Value = resp.json().await.expect("login body");
        body["access_token"].as_str().expect("access_token").to_string()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// The `rows` of a result.
pub fn rows(v: &Value) -> Vec<Vec<Value>> {
    v["rows"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|row| row.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

pub fn pw(name: &str) -> String {
    format!("{name}-password")
}

/// A raw GraphQL-over-WebSocket client: frames in and out as JSON, with timeouts.
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// How a WebSocket connection ended, seen from the client.
#[derive(Debug, PartialEq)]
pub enum WsEnd {
    Closed(u16, String),
    /// The connection went away without a close frame.
    Dropped,
}

const WS_WAIT: Duration = Duration::from_secs(15);

impl TestServer {
    /// Opens `/v1/graphql` as a WebSocket with this sub-protocol.
    pub async fn ws(&self, protocol: &str) -> WsClient {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/v1/graphql", self.url.replacen("http", "ws", 1));
        let mut req = url.into_client_request().expect("ws request");
        req.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().expect("protocol"));
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        WsClient { ws }
    }

    /// A `graphql-transport-ws` connection, initialised as `user` (HTTP Basic in the
    /// `connection_init` payload) and acknowledged.
    pub async fn ws_as(&self, user: &str) -> WsClient {
        let password = if user == "root" {
            ROOT_PASSWORD.to_string()
        } else {
            pw(user)
        };
        let mut c = self.ws("graphql-transport-ws").await;
        c.send(json!({ "type": "connection_init", "payload": { "Authorization": basic(user, &password) } }))
            .await;
        assert_eq!(c.recv().await["type"], "connection_ack");
        c
    }
}

impl WsClient {
    pub fn from_stream(
        ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> Self {
        Self { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .expect("ws send");
    }

    /// The next message within `wait`, or how the connection ended.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<Value>, WsEnd> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(m) => m,
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Ok(Some(serde_json::from_str(t.as_str()).expect("server sent JSON")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(WsEnd::Closed(1005, String::new()), |f| {
                        WsEnd::Closed(f.code.into(), f.reason.to_string())
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(WsEnd::Dropped),
            }
        }
    }

    /// The next message; panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(WS_WAIT).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("no message within {WS_WAIT:?}"),
            Err(e) => panic!("connection ended: {e:?}"),
        }
    }

    /// Asserts that nothing but keep-alives arrives for `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.recv_within(left).await {
                Ok(None) => return,
                Ok(Some(v)) if v["type"] == "ka" => continue,
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Waits for the close frame (or the end of the connection).
    pub async fn closed(&mut self) -> WsEnd {
        loop {
            match self.recv_within(WS_WAIT).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the connection was not closed within {WS_WAIT:?}"),
                Err(e) => return e,
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next message for `id`, which must be `next`; returns its `data`.
    pub async fn next_data(&mut self, id: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == "ka" || m["type"] == "ping" || m["type"] == "pong" {
                continue;
            }
            assert_eq!(m["id"], id, "{m}");
            assert_eq!(m["type"], "next", "{m}");
            assert!(m["payload"].get("errors").is_none(), "{m}");
            return m["payload"]["data"].clone();
        }
    }

    /// Change events of `field` for `id` until `n` have arrived (events come in batches).
    pub async fn events(&mut self, id: &str, field: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let data = self.next_data(id).await;
            out.extend(data[field].as_array().expect("a list of events").iter().cloned());
        }
        assert_eq!(out.len(), n, "more events than expected: {out:?}");
        out
    }

    /// The next message for `id`, which must be `error`; returns the first error's code.
    pub async fn error_code(&mut self, id: &str) -> String {
        let m = self.recv().await;
        assert_eq!(m["id"], id, "{m}");
        assert_eq!(m["type"], "error", "{m}");
        m["payload"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code in {m}"))
            .to_string()
    }

    /// Stops reading, so that the server's queue for this connection fills up.
    pub fn into_inner(
        self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        self.ws
    }
}

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
    pub fn github_provider(&self, name: &str, server_url: &str) -> kalamdb_api::oauth::OAuthProvider {
        kalamdb_api::oauth::OAuthProvider {
            kind: kalamdb_api::oauth::ProviderKind::Github,
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
    pub fn provider(&self, name: &str, server_url: &str, auto_create: bool) -> kalamdb_api::oauth::OAuthProvider {
        kalamdb_api::oauth::OAuthProvider {
            name: name.into(),
            kind: kalamdb_api::oauth::ProviderKind::Oidc,
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
    pub fn trusted(&self, audience: &str) -> kalamdb_api::external_auth::TrustedIssuer {
        kalamdb_api::external_auth::TrustedIssuer {
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

/// A browser, as far as a sign-in needs one: follows redirects and keeps cookies.
pub struct Browser {
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: Default::default(),
        }
    }

    /// One request with this browser's cookies; keeps the cookies it sets. Returns the
    /// status, the `Location` and the body.
    pub async fn step(&mut self, url: &str) -> (u16, Option<String>, String) {
        let mut req = self.client.get(url);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", jar.join("; "));
        }
        let resp = req.send().await.expect("request");
        for v in resp.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap_or("");
            let first = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                let expired = text.to_ascii_lowercase().contains("max-age=0");
                if v.is_empty() || expired {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        (status, location, resp.text().await.unwrap_or_default())
    }

    /// Follows redirects from `url` to a page that is not one; returns its URL, status
    /// and body.
    pub async fn visit(&mut self, url: &str) -> (String, u16, String) {
        let mut url = url.to_string();
        for _ in 0..10 {
            let (status, location, body) = self.step(&url).await;
            match location {
                Some(next) if (300..400).contains(&status) => url = next,
                _ => return (url, status, body),
            }
        }
        panic!("too many redirects");
    }

    pub fn cookies(&self) -> std::collections::BTreeMap<String, String> {
        self.cookies.clone()
    }

    pub fn set_cookies(&mut self, cookies: std::collections::BTreeMap<String, String>) {
        self.cookies = cookies;
    }
}

/// A stand-in for an S3-compatible object store on loopback, path-style
/// (`/{bucket}/{key}`): PUT, GET (whole or one byte range), HEAD and DELETE of objects,
/// and ListObjectsV2 with a prefix and delimiter, as `object_store`'s S3 client speaks
/// them. It keeps the objects in memory, so a test can see what the server stored.
pub struct FakeS3 {
    pub url: String,
    objects: S3Objects,
    task: tokio::task::JoinHandle<()>,
}

type S3Objects = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>;

const S3_LAST_MODIFIED: &str = "Fri, 27 Nov 2026 09:00:00 GMT";

fn s3_etag(body: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(body);
    format!(
        "\"{}\"",
        d.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The byte range a `Range: bytes=...` header asks of an object of `len` bytes.
fn s3_range(h: &str, len: usize) -> Option<std::ops::Range<usize>> {
    let spec = h.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let r = match (a.is_empty(), b.is_empty()) {
        (true, false) => len.saturating_sub(b.parse().ok()?)..len,
        (false, true) => a.parse().ok()?..len,
        (false, false) => a.parse().ok()?..(b.parse::<usize>().ok()? + 1).min(len),
        (true, true) => return None,
    };
    (r.start < r.end && r.end <= len).then_some(r)
}

async fn s3_object(
    axum::extract::State(objects): axum::extract::State<S3Objects>,
    axum::extract::Path((_bucket, key)): axum::extract::Path<(String, String)>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let mut store = objects.lock().unwrap();
    match method {
        axum::http::Method::PUT => {
            let etag = s3_etag(&body);
            store.insert(key, body.to_vec());
            (StatusCode::OK, [(header::ETAG, etag)]).into_response()
        }
        axum::http::Method::DELETE => {
            store.remove(&key);
            StatusCode::NO_CONTENT.into_response()
        }
        axum::http::Method::GET | axum::http::Method::HEAD => {
            let Some(obj) = store.get(&key) else {
                return (StatusCode::NOT_FOUND, "<Error><Code>NoSuchKey</Code></Error>").into_response();
            };
            let etag = s3_etag(obj);
            let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
            let (status, bytes, content_range) = match range {
                None => (StatusCode::OK, obj.clone(), None),
                Some(h) => match s3_range(h, obj.len()) {
                    Some(r) => (
                        StatusCode::PARTIAL_CONTENT,
                        obj[r.clone()].to_vec(),
                        Some(format!("bytes {}-{}/{}", r.start, r.end - 1, obj.len())),
                    ),
                    None => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
                },
            };
            let mut resp = if method == axum::http::Method::HEAD {
                let mut r = axum::response::Response::new(axum::body::Body::empty());
                r.headers_mut().insert(header::CONTENT_LENGTH, bytes.len().into());
                r
            } else {
                bytes.into_response()
            };
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(header::ETAG, etag.parse().unwrap());
            h.insert(header::LAST_MODIFIED, S3_LAST_MODIFIED.parse().unwrap());
            if let Some(cr) = content_range {
                h.insert(header::CONTENT_RANGE, cr.parse().unwrap());
            }
            resp
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn s3_list(
    axum::extract::State(objects): axum::extract::State<S3Objects>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let delimiter = q.get("delimiter").cloned().unwrap_or_default();
    let store = objects.lock().unwrap();
    let mut contents = String::new();
    let mut listed = 0;
    let mut common = std::collections::BTreeSet::new();
    for (k, v) in store.range(prefix.clone()..) {
        let Some(rest) = k.strip_prefix(&prefix) else { break };
        if !delimiter.is_empty()
            && let Some(i) = rest.find(&delimiter)
        {
            common.insert(format!("{prefix}{}", &rest[..i + delimiter.len()]));
            continue;
        }
        listed += 1;
        contents.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>2026-11-27T09:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
            xml_escape(k),
            xml_escape(&s3_etag(v)),
            v.len()
        ));
    }
    let prefixes: String = common
        .iter()
        .map(|p| format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml_escape(p)))
        .collect();
    (
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Prefix>{}</Prefix><KeyCount>{}</KeyCount>{contents}{prefixes}</ListBucketResult>",
            xml_escape(&prefix),
            listed + common.len()
        ),
    )
        .into_response()
}

impl FakeS3 {
    pub async fn start() -> Self {
        let objects: S3Objects = Default::default();
        let router = axum::Router::new()
            .route("/{bucket}", axum::routing::get(s3_list))
            .route("/{bucket}/{*key}", axum::routing::any(s3_object))
            .with_state(objects.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, objects, task }
    }

    /// The keys of the stored objects, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// The options that point `object_store`'s S3 client here.
    pub fn options(&self) -> kalamdb_storage::cold::ColdStoreOptions {
        let o = [
            ("aws_endpoint", self.url.as_str()),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "test-key-id"),
            ("aws_secret_access_key", "test-secret"),
            ("aws_allow_http", "true"),
        ];
        kalamdb_storage::cold::ColdStoreOptions(o.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}
