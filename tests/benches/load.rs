//! Load generator: drives a real server over loopback with a fixed number of
//! connections for a fixed time per workload, and prints req/s, p50, p99 and the
//! ratio of req/s to `GET /v1/bench/noop`, measured in one-second windows that
//! alternate with the workload's.
//!
//! `make bench` runs it. LOAD_SECS (default 5) and LOAD_CONNS (default 32) tune it;
//! LOAD_ONLY=<text> runs only the workloads whose name contains it.
//! A fake OIDC issuer on loopback signs the token of the external-token workload; the
//! cost of one RS256 verification without the server's verified-token memory is timed
//! apart, in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kalamdb_tests::{FakeIssuer, TestServer, oidc_fixture, pw};

/// The server in this process allocates as the `kalamdb` binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{Value, json};

/// Builds the GraphQL body of request number `i`; `None` is `GET /v1/bench/noop`.
type BodyFn = Arc<dyn Fn(u64) -> Option<Value> + Send + Sync>;

struct Outcome {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A small deterministic mixer, so request parameters spread without a RNG per task.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One HTTP client per connection, built once for the whole run: building one loads the
/// system's root certificates, milliseconds of CPU that belong to no request, and a
/// kept-alive connection carries from one window to the next.
fn clients(conns: usize) -> Vec<reqwest::Client> {
    (0..conns)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client")
        })
        .collect()
}

async fn drive(clients: &[reqwest::Client], url: &str, token: &str, body: BodyFn, window: Duration) -> Outcome {
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let client = client.clone();
        // URLs and the header are built once per connection, not per request
        let noop = reqwest::Url::parse(&format!("{url}/v1/bench/noop")).expect("url");
        let graphql = reqwest::Url::parse(&format!("{url}/v1/graphql")).expect("url");
        let auth = format!("Bearer {token}");
        let (body, counter) = (body.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 14);
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let ok = match body(i) {
                    None => match client.get(noop.clone()).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    },
                    Some(b) => match client
                        .post(graphql.clone())
                        .header("authorization", auth.as_str())
                        .header("content-type", "application/json")
                        .body(serde_json::to_vec(&b).expect("body"))
                        .send()
                        .await
                    {
                        // the body is checked for errors without building a JSON tree, so the
                        // client spends as little of the shared CPU as it can
                        Ok(r) => {
                            let status = r.status().is_success();
                            match r.bytes().await {
                                Ok(body) => status && !body.windows(9).any(|w| w == b"\"errors\":"),
                                Err(_) => false,
                            }
                        }
                        Err(_) => false,
                    },
                };
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        latencies_us.extend(l);
        errors += e;
    }
    Outcome {
        requests: latencies_us.len(),
        errors,
        elapsed: start.elapsed(),
        latencies_us,
    }
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs a workload and the noop baseline in alternating one-second windows, so that
/// both see the same machine (this one's speed drifts by a third within a minute) and
/// their ratio is taken over the same stretch of time.
async fn interleaved(
    clients: &[reqwest::Client],
    url: &str,
    token: &str,
    body: &BodyFn,
    secs: u64,
) -> (Outcome, Outcome) {
    let noop: BodyFn = Arc::new(|_| None);
    let window = Duration::from_secs(1);
    let empty = || Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    let (mut work, mut base) = (empty(), empty());
    // which of the two goes first alternates, so that neither always follows the other
    for i in 0..secs.max(1) {
        if i % 2 == 0 {
            base.add(drive(clients, url, token, noop.clone(), window).await);
            work.add(drive(clients, url, token, body.clone(), window).await);
        } else {
            work.add(drive(clients, url, token, body.clone(), window).await);
            base.add(drive(clients, url, token, noop.clone(), window).await);
        }
    }
    work.latencies_us.sort_unstable();
    (work, base)
}

/// Rows `chunk * 1000 ..` of the items tables, as SQL values.
fn item_values(chunk: u64) -> String {
    let values: Vec<String> = (0..1000u64)
        .map(|j| {
            let id = chunk * 1000 + j;
            format!("({id}, 'item {id}', {}, {}.5)", id % 20, id % 997)
        })
        .collect();
    values.join(", ")
}

async fn seed(s: &TestServer) {
    s.root("CREATE NAMESPACE bench").await;
    s.root(
        "CREATE TABLE bench.items (id BIGINT PRIMARY KEY, name TEXT, category INT, price DOUBLE) \
         WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
    )
    .await;
    s.root(
        "CREATE TABLE bench.todos (id BIGINT PRIMARY KEY, title TEXT, done BOOLEAN, priority INT) WITH (TYPE = 'USER')",
    )
    .await;
    s.root("CREATE TABLE bench.events (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), kind TEXT, n INT) WITH (TYPE = 'USER')")
        .await;
    s.user("loadgen", "user").await;
    for chunk in 0..100u64 {
        s.root(&format!("INSERT INTO bench.items VALUES {}", item_values(chunk)))
            .await;
    }
    // the same 100,000 rows again, in 100 cold segments of 1,000 (one flush each)
    s.root(
        "CREATE TABLE bench.cold_items (id BIGINT PRIMARY KEY, name TEXT, category INT, price DOUBLE) \
         WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
    )
    .await;
    for chunk in 0..100u64 {
        s.root(&format!("INSERT INTO bench.cold_items VALUES {}", item_values(chunk)))
            .await;
        s.run_job("FLUSH TABLE bench.cold_items").await;
    }
    for chunk in 0..2u64 {
        let values: Vec<String> = (0..1000u64)
            .map(|j| {
                let id = chunk * 1000 + j;
                format!("({id}, 'todo {id}', {}, {})", id % 3 == 0, id % 5)
            })
            .collect();
        s.ok_as(
            "loadgen",
            &format!("INSERT INTO bench.todos VALUES {}", values.join(", ")),
        )
        .await;
    }
}

/// Rows `chunk * 10,000 ..` of the owned tables: 1,000 owners, every third row done.
fn owned_values(chunk: u64) -> String {
    let values: Vec<String> = (0..10_000u64)
        .map(|j| {
            let id = chunk * 10_000 + j;
            format!("({id}, 'o{}', 'task {id}', {})", mix(id) % 1000, id.is_multiple_of(3))
        })
        .collect();
    values.join(", ")
}

/// 1,000,000 rows over 1,000 owners in `bench.owned` (hot, `owner` indexed after the
/// rows are in: the build is timed) and in `bench.owned_cold` (900,000 of them in
/// Parquet segments, indexed from the start); `bench.events_ix`, like `bench.events`
/// with two secondary indexes. Returns the build's rows per second.
async fn seed_owned(s: &TestServer) -> f64 {
    let columns = "(id BIGINT PRIMARY KEY, owner TEXT NOT NULL, title TEXT, done BOOLEAN) \
                   WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')";
    s.root(&format!("CREATE TABLE bench.owned {columns}")).await;
    s.root(&format!("CREATE TABLE bench.owned_cold {columns}")).await;
    s.root("CREATE INDEX owned_cold_owner ON bench.owned_cold (owner)")
        .await;
    for chunk in 0..100u64 {
        let values = owned_values(chunk);
        s.root(&format!("INSERT INTO bench.owned VALUES {values}")).await;
        s.root(&format!("INSERT INTO bench.owned_cold VALUES {values}")).await;
        if chunk == 89 {
            s.run_job("FLUSH TABLE bench.owned_cold").await;
        }
    }
    let start = Instant::now();
    let r = s.root("CREATE INDEX owned_owner ON bench.owned (owner)").await;
    let job = r["rows"][0][3].as_str().expect("a build job").to_string();
    let j = s.wait_job(&job).await;
    assert_eq!(j["status"], "completed", "{j}");
    let build = 1_000_000.0 / start.elapsed().as_secs_f64();
    s.root(
        "CREATE TABLE bench.events_ix (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), kind TEXT, n INT) WITH (TYPE = 'USER')",
    )
    .await;
    s.root("CREATE INDEX events_ix_kind ON bench.events_ix (kind)").await;
    s.root("CREATE INDEX events_ix_n ON bench.events_ix (n)").await;
    build
}

/// Microseconds per RS256 verification of `token` against the fixture key, with no cache.
fn external_verify_us(idp: &FakeIssuer, token: &str) -> f64 {
    use kalamdb_auth::external::{self, Expected};
    let keys: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&oidc_fixture("jwks1.json")).expect("jwks");
    let signed = external::signed_with(token).expect("header");
    let key = external::key_for(&keys, &signed).expect("key");
    let expected = Expected {
        issuer: &idp.url,
        audience: "kalamdb",
        leeway_secs: 30,
    };
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        external::verify(token, key, signed.alg, &expected).expect("verifies");
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

async fn run(secs: u64, conns: usize) {
    let idp = FakeIssuer::start().await;
    let trusted = idp.trusted("kalamdb");
    let s = TestServer::start_with(|c| {
        c.bench_noop = true;
        c.max_body_bytes = 1 << 20;
        c.trusted_issuers = vec![trusted];
        // the hot workloads stay hot; the cold one is flushed by hand
        c.engine.default_flush_policy = None;
    })
    .await;
    let external_token = idp.sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        "rsa1.der",
        &idp.claims("loadgen-ext", "kalamdb", 3600),
    );
    eprintln!("seeding 100,000 shared rows (and again in 100 cold segments) and 2,000 rows of one user...");
    seed(&s).await;
    let token = s.token("loadgen", &pw("loadgen")).await;

    let typename: BodyFn = Arc::new(|_| Some(json!({ "query": "{ __typename }" })));
    let workloads: Vec<(&str, BodyFn)> = vec![
        ("noop (GET /v1/bench/noop)", Arc::new(|_| None)),
        ("GraphQL { __typename } (transport and executor)", typename.clone()),
        ("{ __typename } with an external issuer's RS256 token", typename),
        (
            "_by_pk on 100,000 rows",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($id: BigInt!) { bench_items_by_pk(id: $id) { id name category price } }",
                    "variables": { "id": (mix(i) % 100_000).to_string() }
                }))
            }),
        ),
        (
            "_by_pk on 100,000 rows in 100 cold segments",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($id: BigInt!) { bench_cold_items_by_pk(id: $id) { id name category price } }",
                    "variables": { "id": (mix(i) % 100_000).to_string() }
                }))
            }),
        ),
        (
            "20-row filtered, ordered list (one user)",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($d: Boolean!, $p: Int!) { bench_todos(where: {done: {_eq: $d}, priority: {_gte: $p}}, \
                              order_by: [{priority: desc}, {title: asc}], limit: 20) { id title done priority } }",
                    "variables": { "d": i % 2 == 0, "p": (i % 3) as i64 }
                }))
            }),
        ),
        (
            "insert_one, sync durability",
            Arc::new(|i| {
                Some(json!({
                    "query": "mutation($k: String!, $n: Int!) { insert_bench_events_one(object: {kind: $k, n: $n}) { id } }",
                    "variables": { "k": "click", "n": (i % 1000) as i64 }
                }))
            }),
        ),
        (
            "_by_pk on 1,000,000 rows [owned]",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($id: BigInt!) { bench_owned_by_pk(id: $id) { id owner title done } }",
                    "variables": { "id": (mix(i) % 1_000_000).to_string() }
                }))
            }),
        ),
        (
            "20 rows of one owner by id, 1M rows, index [owned]",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($o: String!) { bench_owned(where: {owner: {_eq: $o}}, order_by: [{id: asc}], limit: 20) { id owner title done } }",
                    "variables": { "o": format!("o{}", mix(i) % 1000) }
                }))
            }),
        ),
        (
            "20 open rows of one owner, id desc, 1M rows, index [owned]",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($o: String!) { bench_owned(where: {owner: {_eq: $o}, done: {_eq: false}}, order_by: [{id: desc}], limit: 20) { id owner title done } }",
                    "variables": { "o": format!("o{}", mix(i) % 1000) }
                }))
            }),
        ),
        (
            "count of one owner, 1M rows, index [owned]",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($o: String!) { bench_owned_aggregate(where: {owner: {_eq: $o}}) { aggregate { count } } }",
                    "variables": { "o": format!("o{}", mix(i) % 1000) }
                }))
            }),
        ),
        (
            "20 rows of one owner by id, 900k of 1M cold [owned]",
            Arc::new(|i| {
                Some(json!({
                    "query": "query($o: String!) { bench_owned_cold(where: {owner: {_eq: $o}}, order_by: [{id: asc}], limit: 20) { id owner title done } }",
                    "variables": { "o": format!("o{}", mix(i) % 1000) }
                }))
            }),
        ),
        (
            "insert_one, two secondary indexes [owned]",
            Arc::new(|i| {
                Some(json!({
                    "query": "mutation($k: String!, $n: Int!) { insert_bench_events_ix_one(object: {kind: $k, n: $n}) { id } }",
                    "variables": { "k": "click", "n": (i % 1000) as i64 }
                }))
            }),
        ),
        (
            "_aggregate count grouped by category, 100,000 rows",
            Arc::new(|_| {
                Some(json!({
                    "query": "{ bench_items_aggregate(group_by: [category]) { groups { keys { category } aggregate { count } } } }"
                }))
            }),
        ),
    ];

    println!();
    println!(
        "load: {conns} connections, {secs} s per workload in one-second windows alternating with \
         noop, release build, server in-process on loopback"
    );
    println!(
        "{:<52} {:>9} {:>10} {:>9} {:>9} {:>8} {:>10} {:>7}",
        "workload", "requests", "req/s", "p50 µs", "p99 µs", "errors", "noop req/s", "vs noop"
    );
    let only = std::env::var("LOAD_ONLY").unwrap_or_default();
    let clients = clients(conns);
    if workloads
        .iter()
        .any(|(n, _)| n.contains("[owned]") && n.contains(only.as_str()))
    {
        eprintln!("seeding 1,000,000 rows over 1,000 owners, twice (one 90% cold), and indexing them...");
        let build = seed_owned(&s).await;
        println!("index build over 1,000,000 hot rows: {build:.0} rows/s");
    }
    for (name, body) in workloads {
        if !name.contains(only.as_str()) {
            continue;
        }
        let bearer = if name.contains("external") {
            &external_token
        } else {
            &token
        };
        let (o, base) = interleaved(&clients, &s.url, bearer, &body, secs).await;
        println!(
            "{:<52} {:>9} {:>10.0} {:>9} {:>9} {:>8} {:>10.0} {:>7.3}",
            name,
            o.requests,
            o.rps(),
            percentile(&o.latencies_us, 0.50),
            percentile(&o.latencies_us, 0.99),
            o.errors,
            base.rps(),
            o.rps() / base.rps()
        );
    }
    println!(
        "one RS256 verification of an external token, without the server's memory of verified tokens: {:.1} µs",
        external_verify_us(&idp, &external_token)
    );
    s.stop().await;
}

fn main() {
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let conns: usize = std::env::var("LOAD_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(secs, conns));
}
