//! WebSocket load generator: starts the release `kalamdb` binary as its own process,
//! opens subscriptions over `graphql-transport-ws` from many connections (spread over
//! 127.0.0.x source addresses), commits inserts at a steady rate over HTTP and measures
//! latency at the client from two timestamps carried in each row: `ts`, taken by the
//! client just before the insert is sent (so that figure includes the HTTP request and
//! its fsync), and `at`, the server's `DEFAULT NOW()` taken as the write is applied,
//! just before its commit (so that figure is commit-to-delivery plus the fsync wait).
//! It reports its own CPU use and the server's, since both share the machine's cores.
//!
//! Scenarios (`WS_ONLY=shared|user|idle` runs one; `LOAD_SECS` sets the measured time;
//! `WS_DURABILITY=async` takes the fsync out of the write path):
//! - shared: 1,000 subscribers (1,000 users, one connection each) to one SHARED table's
//!   change feed, 100 inserts/s;
//! - user: 10,000 subscribers over 1,000 users (10 per connection, each with its own
//!   `where`) on one USER table, every user writing, 100 inserts/s in all;
//! - idle: 100,000 distinct idle subscriptions over 1,000 connections: server RSS before
//!   and after connecting and after subscribing. `WS_HOLD=<seconds>` keeps them open
//!   that long afterwards, with the server's pid printed, to attach a memory profiler.
//!
//! Needs `target/release/kalamdb` (`make bench` builds it first).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

const ROOT_PASSWORD: &str = "bench-root-password";
const USERS: usize = 1000;

struct Server {
    child: Child,
    addr: SocketAddr,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's durability: `sync` (the default) puts an fsync in every write's path;
/// `WS_DURABILITY=async` takes it out, leaving the delivery path itself.
fn durability() -> String {
    match std::env::var("WS_DURABILITY").as_deref() {
        Ok("async") => "async".into(),
        _ => "sync".into(),
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// CPU seconds used by a process so far (utime + stime from /proc).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are the 14th and 15th
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Server {
    async fn start() -> Self {
        let exe = std::env::current_exe()
            .expect("bench path")
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("kalamdb"))
            .expect("target dir");
        assert!(
            exe.exists(),
            "{} is missing: build it with `cargo build --release --workspace --bins` (make bench does)",
            exe.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let config = dir.path().join("kalamdb.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nlisten = \"{addr}\"\nbcrypt_cost = 4\nroot_password = \"{ROOT_PASSWORD}\"\n\
                 max_subscriptions_per_connection = 1000\nmax_subscriptions_per_user = 1000000\n\
                 max_body_bytes = 4194304\ndurability = \"{}\"\n",
                dir.path().join("data"),
                durability()
            ),
        )
        .expect("write config");
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("KALAMDB_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kalamdb");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let s = Self {
            child,
            addr,
            http,
            _dir: dir,
        };
        for _ in 0..200 {
            if s.http.get(format!("http://{addr}/healthz")).send().await.is_ok() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not come up");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn sql(&self, sql: &str) {
        let resp = self
            .http
            .post(format!("http://{}/v1/sql", self.addr))
            .basic_auth("root", Some(ROOT_PASSWORD))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .expect("sql");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{sql}: {body}");
    }

    async fn token(&self, user: &str, password: &str) -> String {
        let body: Value = self
            .http
            .post(format!("http://{}/v1/auth/login", self.addr))
            .json(&json!({ "username": user, "password": password }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login body");
        body["access_token"].as_str().expect("token").to_string()
    }

    async fn gql(&self, token: &str, query: &str, variables: Value) {
        let resp = self
            .http
            .post(format!("http://{}/v1/graphql", self.addr))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if body.get("errors").is_some() {
                    eprintln!("write failed: {body}");
                }
            }
            Ok(r) => eprintln!("write failed: {}", r.status()),
            Err(e) => eprintln!("write failed: {e}"),
        }
    }

    /// A `graphql-transport-ws` connection from 127.0.0.(1 + i % 32), initialised.
    async fn connect(&self, i: usize, token: &str) -> Ws {
        let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 32) as u8));
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(local, 0)).expect("bind");
        let stream = sock.connect(self.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut req = format!("ws://{}/v1/graphql", self.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.expect("upgrade");
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
        )
        .await;
        let ack = recv(&mut ws).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// Subscribes and waits for the pong that says the server registered the subscriptions.
async fn subscribe_all(ws: &mut Ws, subs: &[(String, Value)]) {
    for (id, payload) in subs {
        send(ws, json!({ "id": id, "type": "subscribe", "payload": payload })).await;
    }
    send(ws, json!({ "type": "ping" })).await;
    loop {
        let m = recv(ws).await;
        match m["type"].as_str() {
            Some("pong") => return,
            Some("error") => panic!("subscription failed: {m}"),
            _ => {}
        }
    }
}

/// Microseconds since midnight UTC of an RFC 3339 timestamp ending in `Z` (as the
/// server writes them); with a clock of the same machine, a difference of two is exact
/// except across midnight, which [`since_stamp`] folds.
fn micros_of_day(ts: &str) -> Option<i64> {
    let time = ts.split_once('T')?.1.strip_suffix('Z')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let digits = frac.get(..frac.len().min(6))?;
    let frac_us = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10_i64.pow(6 - digits.len() as u32)
    };
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + frac_us)
}

const DAY_US: i64 = 86_400_000_000;

/// Microseconds from a server stamp to `now` (µs since the epoch).
fn since_stamp(now: i64, stamp: &str) -> Option<i64> {
    micros_of_day(stamp).map(|at| (now.rem_euclid(DAY_US) - at).rem_euclid(DAY_US))
}

/// Reads change events until `stop`, recording per row the latency from the client's
/// send time (`ts`) and from the server's stamp (`at`).
async fn read_events(
    mut ws: Ws,
    field: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Histogram<u64>, Histogram<u64>) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut stamped = h.clone();
    let mut stop = stop;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let now = now_us();
                    // the client shares the cores with the server: find the timestamps
                    // without building a JSON tree
                    let text = t.as_str();
                    debug_assert!(text.contains(field.as_str()));
                    for part in text.split("\"ts\":\"").skip(1) {
                        if let Some(ts) = part.split('"').next().and_then(|s| s.parse::<i64>().ok()) {
                            let _ = h.record((now - ts).max(1) as u64);
                        }
                        let at = part.split_once("\"at\":\"").and_then(|(_, r)| r.split('"').next());
                        if let Some(us) = at.and_then(|a| since_stamp(now, a)) {
                            let _ = stamped.record(us.max(1) as u64);
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
    (h, stamped)
}

struct Report {
    name: String,
    writes: u64,
    acks: Histogram<u64>,
    expected: u64,
    hist: Histogram<u64>,
    /// From the server's stamp.
    stamped: Histogram<u64>,
    client_cpu: f64,
    server_cpu: f64,
    secs: f64,
}

impl Report {
    fn print(&self) {
        let h = &self.hist;
        println!(
            "{:<62} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.0}% {:>7.0}%",
            self.name,
            self.writes,
            self.acks.value_at_quantile(0.99),
            self.expected,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            self.stamped.value_at_quantile(0.5),
            self.stamped.value_at_quantile(0.99),
            100.0 * self.client_cpu / self.secs,
            100.0 * self.server_cpu / self.secs,
        );
    }
}

/// Writes `rate` rows per second for `secs` seconds, each carrying its send time;
/// returns how many and the histogram of their acknowledgement times (µs).
async fn write_steadily(
    server: &Arc<Server>,
    tokens: &[String],
    rate: u64,
    secs: u64,
    body: impl Fn(u64, i64) -> (String, Value),
) -> (u64, Histogram<u64>) {
    let total = rate * secs;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_micros(n * 1_000_000 / rate)).await;
        let (query, vars) = body(n, now_us());
        let token = tokens[n as usize % tokens.len()].clone();
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            server.gql(&token, &query, vars).await;
            t.elapsed().as_micros() as u64
        }));
    }
    let mut acks = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        if let Ok(us) = t.await {
            let _ = acks.record(us.max(1));
        }
    }
    (total, acks)
}

/// Reads every connection's events while `writers` insert 100 rows/s for `secs`.
#[allow(clippy::too_many_arguments)]
async fn drive(
    server: &Arc<Server>,
    conns: Vec<Ws>,
    field: &str,
    writers: &[String],
    secs: u64,
    name: String,
    deliveries_per_write: u64,
    body: impl Fn(u64, i64) -> (String, Value),
) -> Report {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = conns
        .into_iter()
        .map(|ws| tokio::spawn(read_events(ws, field.to_string(), stop_rx.clone())))
        .collect();
    // the client settles first: starting a thousand readers kept its two workers busy
    // long enough to hold the first writes back by up to 150 ms, which is the load
    // generator's start-up, not delivery
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c0, s0, t0) = (cpu_secs(None), cpu_secs(Some(server.pid())), Instant::now());
    let (writes, acks) = write_steadily(server, writers, 100, secs, body).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c1, s1, elapsed) = (cpu_secs(None), cpu_secs(Some(server.pid())), t0.elapsed().as_secs_f64());
    stop_tx.send_replace(true);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut stamped = hist.clone();
    for r in readers {
        let (h, s) = r.await.expect("reader");
        hist.add(h).expect("merge");
        stamped.add(s).expect("merge");
    }
    Report {
        name,
        writes,
        acks,
        expected: writes * deliveries_per_write,
        hist,
        stamped,
        client_cpu: c1 - c0,
        server_cpu: s1 - s0,
        secs: elapsed,
    }
}

async fn scenario_shared(server: &Arc<Server>, tokens: &[String], root: &str, secs: u64, per_conn: usize) -> Report {
    let mut conns = Vec::new();
    let n_conns = 1000 / per_conn;
    for (i, token) in tokens.iter().take(n_conns).enumerate() {
        let mut ws = server.connect(i, token).await;
        let subs: Vec<(String, Value)> = (0..per_conn)
            .map(|j| {
                (
                    format!("f{j}"),
                    json!({ "query": "subscription { bench_feed_changes { row { ts at } } }" }),
                )
            })
            .collect();
        subscribe_all(&mut ws, &subs).await;
        conns.push(ws);
    }
    let name = format!("shared: 1,000 subscribers on {n_conns} connections, 100 inserts/s");
    drive(
        server,
        conns,
        "bench_feed_changes",
        &[root.to_string()],
        secs,
        name,
        1000,
        |_, ts| {
            (
                "mutation($ts: BigInt!) { insert_bench_feed_one(object: {ts: $ts}) { id } }".into(),
                json!({ "ts": ts.to_string() }),
            )
        },
    )
    .await
}

async fn scenario_user(server: &Arc<Server>, tokens: &[String], secs: u64) -> Report {
    let mut conns = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut ws = server.connect(i, token).await;
        let subs: Vec<(String, Value)> = (0..10)
            .map(|k| {
                (
                    format!("k{k}"),
                    json!({
                        "query": "subscription($k: Int!) { bench_inbox_changes(where: {k: {_eq: $k}}) { row { ts at } } }",
                        "variables": { "k": k }
                    }),
                )
            })
            .collect();
        subscribe_all(&mut ws, &subs).await;
        conns.push(ws);
    }
    // writes go round the users; each write matches one of its writer's 10 subscriptions
    let name = "user: 10,000 subscribers, 1,000 users, one USER table".to_string();
    let users = tokens.len() as u64;
    drive(server, conns, "bench_inbox_changes", tokens, secs, name, 1, |n, ts| {
        (
            "mutation($k: Int!, $ts: BigInt!) { insert_bench_inbox_one(object: {k: $k, ts: $ts}) { id } }".into(),
            json!({ "k": (n / users) % 10, "ts": ts.to_string() }),
        )
    })
    .await
}

async fn scenario_idle(server: &Arc<Server>, tokens: &[String]) {
    const PER_CONN: usize = 100;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kb(server.pid());
    let mut conns = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        conns.push(server.connect(i, token).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = rss_kb(server.pid());
    let t0 = Instant::now();
    for (i, ws) in conns.iter_mut().enumerate() {
        let subs: Vec<(String, Value)> = (0..PER_CONN)
            .map(|j| {
                (
                    format!("i{j}"),
                    json!({
                        "query": "subscription($id: BigInt!) { bench_inbox_changes(where: {id: {_eq: $id}}) { op row { id k ts } } }",
                        "variables": { "id": ((i * PER_CONN + j) as u64).to_string() }
                    }),
                )
            })
            .collect();
        subscribe_all(ws, &subs).await;
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subscribed = rss_kb(server.pid());
    let n_subs = (tokens.len() * PER_CONN) as u64;
    let per_conn = connected.saturating_sub(before) * 1024 / tokens.len() as u64;
    let per_sub = subscribed.saturating_sub(connected) * 1024 / n_subs;
    println!(
        "idle: {} connections, {n_subs} distinct subscriptions (opened in {:.1} s): server RSS {} MB before, {} MB connected, {} MB subscribed",
        tokens.len(),
        took.as_secs_f64(),
        before >> 10,
        connected >> 10,
        subscribed >> 10
    );
    println!(
        "idle: {:.1} KB per connection (target <= 64 KB), {:.2} KB per subscription (target <= 2 KB)",
        per_conn as f64 / 1024.0,
        per_sub as f64 / 1024.0
    );
    if let Some(secs) = std::env::var("WS_HOLD").ok().and_then(|v| v.parse().ok()) {
        eprintln!("idle: holding the subscriptions {secs} s; server pid {}", server.pid());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    drop(conns);
}

async fn run(secs: u64, only: &str) {
    let server = Arc::new(Server::start().await);
    server.sql("CREATE NAMESPACE bench").await;
    server
        .sql(
            "CREATE TABLE bench.feed (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), ts BIGINT NOT NULL, \
             at TIMESTAMP DEFAULT NOW()) \
             WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
        )
        .await;
    server
        .sql(
            "CREATE TABLE bench.inbox (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), k INT NOT NULL, \
             ts BIGINT NOT NULL, at TIMESTAMP DEFAULT NOW()) WITH (TYPE = 'USER')",
        )
        .await;
    eprintln!("creating {USERS} users and logging them in...");
    let mut tokens = Vec::with_capacity(USERS);
    for i in 0..USERS {
        server
            .sql(&format!("CREATE USER u{i} WITH PASSWORD 'password-{i}' ROLE user"))
            .await;
        tokens.push(server.token(&format!("u{i}"), &format!("password-{i}")).await);
    }
    let root = server.token("root", ROOT_PASSWORD).await;

    println!();
    println!(
        "ws_load: release server in its own process ({} durability), client with 2 tokio workers, {secs} s per \
         scenario; latency in µs = delivery time - the client's send time of the insert (p50 .. max), \
         and - the server's NOW() stamp (stamp p50, p99)",
        durability()
    );
    println!(
        "{:<62} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "scenario",
        "writes",
        "ack p99",
        "expected",
        "received",
        "p50",
        "p99",
        "p99.9",
        "max",
        "stamp50",
        "stamp99",
        "client",
        "server"
    );
    if only.is_empty() || only == "shared" {
        scenario_shared(&server, &tokens, &root, secs, 1).await.print();
        scenario_shared(&server, &tokens, &root, secs, 10).await.print();
    }
    if only.is_empty() || only == "user" {
        scenario_user(&server, &tokens, secs).await.print();
    }
    if only.is_empty() || only == "idle" {
        scenario_idle(&server, &tokens).await;
    }
}

fn main() {
    // cargo bench passes --bench; nothing else to parse
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("WS_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, &only));
}
