//! The server under test: the app in this process on `127.0.0.1:0` with a temporary
//! data directory, or the real `kalamdb` binary, and the HTTP requests tests make of it.

use std::time::Duration;

use base64::Engine as _;
use kalamdb_api::app;
use kalamdb_api::config::Config;
use kalamdb_engine::engine::EngineConfig;
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
    /// A spawned binary's log lines so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
    let mut engine = EngineConfig::new(dir);
    engine.bcrypt_cost = 4;
    engine.root_password = Some(ROOT_PASSWORD.into());
    Config {
        engine,
        listen: "127.0.0.1:0".into(),
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
            logs: Default::default(),
            _dir: Some(dir),
        }
    }

    /// Starts `kalamdb serve` on `data` with `env` added, and waits for its
    /// `listening on` line. The process is killed when the server is dropped.
    pub fn spawn_binary(data: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = std::process::Command::new(kalamdb_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data);
        Self::spawn_command(cmd, env)
    }

    /// As [`Self::spawn_binary`], with `data` on a disk of `size_mb` MiB of its own: a
    /// tmpfs mounted over it in a user and mount namespace of the server's (`unshare`,
    /// no privileges needed), gone when the server stops. The test reaches the disk
    /// through [`Self::server_path`].
    pub fn spawn_on_small_disk(data: &std::path::Path, size_mb: u32, env: &[(&str, &str)]) -> Self {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size_mb}m tmpfs \"$1\" && exec \"$0\" serve --listen 127.0.0.1:0 --data-dir \"$1\""
            ))
            .arg(kalamdb_bin())
            .arg(data);
        Self::spawn_command(cmd, env)
    }

    /// The process id of a spawned binary.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a spawned binary").id()
    }

    /// `path` as the spawned server sees it (through its mount namespace).
    pub fn server_path(&self, path: &std::path::Path) -> std::path::PathBuf {
        let pid = self.pid();
        std::path::PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
    }

    fn spawn_command(mut cmd: std::process::Command, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let bin = kalamdb_bin();
        let mut child = cmd
            .env("KALAMDB_ROOT_PASSWORD", ROOT_PASSWORD)
            .env("KALAMDB_BCRYPT_COST", "4")
            .env("KALAMDB_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with `make test`)", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        // the server's output (its log is on stdout), kept for assertions
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Ok(mut l) = kept.lock() {
                    l.push(line);
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
                if let Ok(mut l) = kept.lock() {
                    l.push(line);
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
            logs,
            _dir: None,
        }
    }

    /// The log lines a spawned binary has written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `GET /healthz` answers, within a few seconds.
    pub async fn healthy(&self) -> bool {
        let resp = self
            .client
            .get(format!("{}/healthz", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        resp.is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// Sends SIGTERM to a spawned binary: a graceful shutdown.
    pub fn terminate(&mut self) {
        let child = self.child.as_ref().expect("a spawned binary");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
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

    /// POSTs `body` as JSON to `path`, with an `Authorization` value and more headers
    /// when given; returns the status and the JSON body (null when it is not JSON).
    pub async fn post(&self, path: &str, auth: Option<&str>, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs `body`, as it is, to `/v1/graphql` as `application/json`, asking for
    /// `application/graphql-response+json`; returns the status and the body's text.
    pub async fn post_graphql(&self, auth: &str, body: &str) -> (u16, String) {
        let resp = self
            .client
            .post(format!("{}/v1/graphql", self.url))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .header("accept", "application/graphql-response+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        (resp.status().as_u16(), resp.text().await.expect("body"))
    }

    /// A GraphQL request as root, with an operation name when given; returns the status
    /// and the body's text, byte for byte.
    pub async fn gql_text(&self, query: &str, operation: Option<&str>, variables: Value) -> (u16, String) {
        let mut body = json!({ "query": query, "variables": variables });
        if let Some(op) = operation {
            body["operationName"] = json!(op);
        }
        self.post_graphql(&basic("root", ROOT_PASSWORD), &body.to_string())
            .await
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
    /// `POST /v1/auth/login`: the status and the JSON answer.
    pub async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.post(
            "/v1/auth/login",
            None,
            &[],
            json!({ "username": user, "password": password }),
        )
        .await
    }

    pub async fn token(&self, user: &str, password: &str) -> String {
        let (status, body) = self.login(user, password).await;
        assert_eq!(status, 200, "login of {user}: {body}");
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
