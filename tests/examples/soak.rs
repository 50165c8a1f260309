//! The soak test, `make soak` (not part of `make test`): the real binary for
//! `SOAK_SECS` seconds (default 600) under writers, readers, live queries, live
//! aggregates, a resuming change feed, slow subscribers that never read, flushes and
//! compactions, with SIGKILL restarts at random through the first 60% of
//! the run. At the end every acknowledged write and every change-feed event is
//! checked, and the server's RSS over time is reported; through the quiet part (no
//! restarts) it must stay flat after a warm-up. `SOAK_SEED` repeats a run's choices.
//! Exits non-zero on any violation.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kalamdb_tests::{ROOT_PASSWORD, TestServer, WsClient, WsEnd, basic, rows};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const WRITERS: i64 = 6;
const USERS: usize = 2;
const READERS: usize = 3;
const LIVE: usize = 8;
const LIVE_AGGREGATES: usize = 2;
const SLOW: usize = 2;

/// How many of a kind of client to run: `default`, or `SOAK_<KIND>` when set (to
/// find which part of the load a figure follows).
fn clients(kind: &str, default: usize) -> usize {
    std::env::var(format!("SOAK_{kind}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
/// How long a slow subscriber goes without reading: long enough for its queue to pass
/// `ws_max_queued_bytes`, short enough to read up to its close frame within the 15 s
/// the server gives it.
const SLOW_STALL: Duration = Duration::from_secs(8);
const SLOW_QUEUE_BYTES: &str = "1048576";

/// What a write did, as far as its client knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// Acknowledged: the row must be there.
    Acked,
    /// Sent without an answer (the server was killed): either way.
    InDoubt,
    /// Deleted and acknowledged: the row must be gone.
    Deleted,
    DeleteInDoubt,
}

#[derive(Default)]
struct Counters {
    inserts: AtomicU64,
    deletes: AtomicU64,
    in_doubt: AtomicU64,
    user_inserts: AtomicU64,
    reads: AtomicU64,
    read_errors: AtomicU64,
    live_payloads: AtomicU64,
    aggregate_payloads: AtomicU64,
    feed_events: AtomicU64,
    feed_resumes: AtomicU64,
    slow_1008: AtomicU64,
    slow_dropped: AtomicU64,
    slow_kept_up: AtomicU64,
    jobs: AtomicU64,
    job_errors: AtomicU64,
    restarts: AtomicU64,
}

#[derive(Default)]
struct Feed {
    last_seq: Option<u64>,
    inserted: HashSet<i64>,
    deleted: HashSet<i64>,
}

struct Soak {
    url: RwLock<String>,
    pid: AtomicU32,
    /// How many times the server was restarted.
    lifetime: AtomicU32,
    stop: AtomicBool,
    /// Every writer has stopped and has its last answer.
    writers_done: AtomicBool,
    events: Mutex<BTreeMap<i64, (Fate, String)>>,
    /// Acknowledged rows no writer deletes, for the readers.
    readable: Mutex<Vec<(i64, String)>>,
    notes: Mutex<BTreeMap<(usize, i64), Fate>>,
    feed: Mutex<Feed>,
    violations: Mutex<Vec<String>>,
    c: Counters,
    http: reqwest::Client,
    root: String,
}

impl Soak {
    fn url(&self) -> String {
        self.url.read().unwrap().clone()
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Records a violation; the first twenty are printed as they come.
    fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap();
        if v.len() < 20 {
            eprintln!("VIOLATION: {what}");
        }
        v.push(what);
    }
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A GraphQL request over HTTP: the answer, or why there was none.
    async fn gql(&self, auth: &str, query: &str, variables: Value) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}/v1/graphql", self.url()))
            .header("authorization", auth)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        resp.json().await.map_err(|e| e.to_string())
    }

    async fn sql(&self, sql: &str) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}/v1/sql", self.url()))
            .header("authorization", &self.root)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    }
}

fn user_auth(u: usize) -> String {
    basic(&format!("soaker{u}"), &format!("soaker{u}-password"))
}

/// Whether a GraphQL `BigInt` (a string) is `id`.
fn is_id(v: &Value, id: i64) -> bool {
    v.as_str().and_then(|s| s.parse::<i64>().ok()) == Some(id)
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Inserts rows with ids of its own, and deletes every tenth a little later.
async fn writer(soak: Arc<Soak>, w: i64) {
    const INSERT: &str = "mutation($o: soak_events_insert_input!) { insert_soak_events_one(object: $o) { id } }";
    const DELETE: &str = "mutation($id: BigInt!) { delete_soak_events_by_pk(id: $id) { id } }";
    let mut k: i64 = 0;
    while !soak.stopped() {
        if k % 10 == 5 {
            let doomed = w * 1_000_000_000 + k - 5;
            let was = soak.events.lock().unwrap().get(&doomed).map(|e| e.0);
            if was == Some(Fate::Acked) {
                soak.events.lock().unwrap().get_mut(&doomed).unwrap().0 = Fate::DeleteInDoubt;
                let answer = soak.gql(&soak.root, DELETE, json!({ "id": doomed.to_string() })).await;
                if answer
                    .as_ref()
                    .is_ok_and(|a| is_id(&a["data"]["delete_soak_events_by_pk"]["id"], doomed))
                {
                    soak.events.lock().unwrap().get_mut(&doomed).unwrap().0 = Fate::Deleted;
                    Soak::count(&soak.c.deletes);
                } else {
                    Soak::count(&soak.c.in_doubt);
                    pause(100).await;
                }
            }
        }
        let id = w * 1_000_000_000 + k;
        let v = format!("w{w}k{k}");
        soak.events.lock().unwrap().insert(id, (Fate::InDoubt, v.clone()));
        let row = json!({ "id": id.to_string(), "writer": w, "n": k, "v": v });
        match soak.gql(&soak.root, INSERT, json!({ "o": row })).await {
            Ok(a) if is_id(&a["data"]["insert_soak_events_one"]["id"], id) => {
                soak.events.lock().unwrap().get_mut(&id).unwrap().0 = Fate::Acked;
                if k % 10 != 0 {
                    soak.readable.lock().unwrap().push((id, v));
                }
                Soak::count(&soak.c.inserts);
            }
            _ => {
                Soak::count(&soak.c.in_doubt);
                pause(100).await;
            }
        }
        k += 1;
    }
}

/// Inserts into the USER table as one user.
async fn user_writer(soak: Arc<Soak>, u: usize) {
    const INSERT: &str = "mutation($o: soak_notes_insert_input!) { insert_soak_notes_one(object: $o) { id } }";
    let auth = user_auth(u);
    let mut id: i64 = 0;
    while !soak.stopped() {
        soak.notes.lock().unwrap().insert((u, id), Fate::InDoubt);
        let row = json!({ "id": id.to_string(), "v": format!("note {id}") });
        match soak.gql(&auth, INSERT, json!({ "o": row })).await {
            Ok(a) if is_id(&a["data"]["insert_soak_notes_one"]["id"], id) => {
                soak.notes.lock().unwrap().insert((u, id), Fate::Acked);
                Soak::count(&soak.c.user_inserts);
            }
            _ => pause(100).await,
        }
        id += 1;
        pause(5).await;
    }
}

/// Reads acknowledged rows back by key, and pages of a list.
async fn reader(soak: Arc<Soak>, seed: u64) {
    const BY_PK: &str = "query($id: BigInt!) { soak_events_by_pk(id: $id) { id v } }";
    const LIST: &str = "query($w: Int!) { soak_events(where: {writer: {_eq: $w}, n: {_gte: 3}}, \
                        order_by: {id: desc}, limit: 20) { id n } }";
    let mut rng = StdRng::seed_from_u64(seed);
    while !soak.stopped() {
        let pick = {
            let r = soak.readable.lock().unwrap();
            (!r.is_empty()).then(|| r[rng.random_range(0..r.len())].clone())
        };
        let Some((id, v)) = pick else {
            pause(50).await;
            continue;
        };
        match soak.gql(&soak.root, BY_PK, json!({ "id": id.to_string() })).await {
            Ok(a) if a["errors"].is_null() => {
                let row = &a["data"]["soak_events_by_pk"];
                if row.is_null() {
                    soak.violation(format!("acknowledged row {id} not found by key"));
                } else if row["v"] != v.as_str() {
                    soak.violation(format!("row {id} read as {row}, written as {v}"));
                }
                Soak::count(&soak.c.reads);
            }
            _ => {
                Soak::count(&soak.c.read_errors);
                pause(100).await;
            }
        }
        let w = rng.random_range(0..WRITERS);
        match soak.gql(&soak.root, LIST, json!({ "w": w })).await {
            Ok(a) if a["errors"].is_null() => Soak::count(&soak.c.reads),
            _ => Soak::count(&soak.c.read_errors),
        }
    }
}

/// The events of one `next` frame of a subscription field (one event or a list).
fn events_of(m: &Value, field: &str) -> Vec<Value> {
    match &m["payload"]["data"][field] {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        one => vec![one.clone()],
    }
}

/// Follows the change feed from the start, resuming with `since_seq` after every
/// restart, until the writers stopped and it has seen everything they acknowledged.
async fn feed(soak: Arc<Soak>) {
    const CHANGES: &str = "subscription($s: BigInt) { soak_events_changes(since_seq: $s) \
                           { op seq reset row { id } old_row { id } } }";
    // once the writers stop, it has a minute to catch up
    let mut stopped_at: Option<Instant> = None;
    let mut done = |soak: &Soak| {
        if soak.stopped() && stopped_at.is_none() {
            stopped_at = Some(Instant::now());
        }
        stopped_at.is_some_and(|at| {
            (soak.writers_done.load(Ordering::Relaxed) && caught_up(soak)) || at.elapsed() > Duration::from_secs(60)
        })
    };
    loop {
        if done(&soak) {
            return;
        }
        let Ok(mut c) = WsClient::connect_as(&soak.url(), &soak.root).await else {
            pause(200).await;
            continue;
        };
        let since = soak.feed.lock().unwrap().last_seq.map(|s| s.to_string());
        let sub =
            json!({ "id": "f", "type": "subscribe", "payload": { "query": CHANGES, "variables": { "s": since } } });
        if c.try_send(&sub).await.is_err() {
            continue;
        }
        Soak::count(&soak.c.feed_resumes);
        loop {
            if done(&soak) {
                return;
            }
            match c.recv_within(Duration::from_secs(1)).await {
                Ok(Some(m)) if m["type"] == "next" => {
                    let mut f = soak.feed.lock().unwrap();
                    for e in events_of(&m, "soak_events_changes") {
                        Soak::count(&soak.c.feed_events);
                        let seq: u64 = e["seq"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
                        if e["reset"] == true {
                            soak.violation(format!("the feed was reset at {seq}"));
                        }
                        if f.last_seq.is_some_and(|last| seq <= last) {
                            soak.violation(format!(
                                "feed event {seq} after {:?}: out of order or twice",
                                f.last_seq
                            ));
                        }
                        f.last_seq = Some(seq);
                        let id = |r: &Value| r["id"].as_str().and_then(|s| s.parse::<i64>().ok());
                        match e["op"].as_str() {
                            Some("INSERT" | "SNAPSHOT") => f.inserted.extend(id(&e["row"])),
                            Some("DELETE") => f.deleted.extend(id(&e["old_row"])),
                            other => soak.violation(format!("unexpected feed op {other:?}: {e}")),
                        }
                    }
                }
                // an error (a feed that fell behind is ended) or a complete: resume
                Ok(Some(m)) if m["type"] == "error" || m["type"] == "complete" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Whether the feed has seen every acknowledged insert and delete.
fn caught_up(soak: &Soak) -> bool {
    let f = soak.feed.lock().unwrap();
    soak.events.lock().unwrap().iter().all(|(id, (fate, _))| match fate {
        Fate::Acked => f.inserted.contains(id),
        Fate::Deleted => f.deleted.contains(id),
        _ => true,
    })
}

/// A live query (or aggregate) that reads everything it is sent.
async fn live(soak: Arc<Soak>, query: &'static str, counter: fn(&Counters) -> &AtomicU64) {
    while !soak.stopped() {
        let Ok(mut c) = WsClient::connect_as(&soak.url(), &soak.root).await else {
            pause(200).await;
            continue;
        };
        let sub = json!({ "id": "l", "type": "subscribe", "payload": { "query": query } });
        if c.try_send(&sub).await.is_err() {
            continue;
        }
        while !soak.stopped() {
            match c.recv_within(Duration::from_secs(1)).await {
                Ok(Some(m)) if m["type"] == "next" => Soak::count(counter(&soak.c)),
                Ok(Some(m)) if m["type"] == "error" => {
                    soak.violation(format!("a live query failed: {m}"));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Subscribes to a large live result and stops reading: the server must close it with
/// 1008 once its queue passes `ws_max_queued_bytes` (or a restart drops it).
async fn slow(soak: Arc<Soak>) {
    const QUERY: &str = "subscription { soak_events(order_by: {id: desc}, limit: 300) { id writer n v } }";
    while !soak.stopped() {
        let life = soak.lifetime.load(Ordering::Relaxed);
        let Ok(mut c) = WsClient::connect_as(&soak.url(), &soak.root).await else {
            pause(200).await;
            continue;
        };
        let sub = json!({ "id": "s", "type": "subscribe", "payload": { "query": QUERY } });
        if c.try_send(&sub).await.is_err() {
            continue;
        }
        let until = Instant::now() + SLOW_STALL;
        while Instant::now() < until && !soak.stopped() {
            pause(200).await;
        }
        let end = loop {
            match c.recv_within(Duration::from_secs(3)).await {
                Ok(Some(_)) => continue,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        match end {
            Some(WsEnd::Closed(1008, _)) => Soak::count(&soak.c.slow_1008),
            Some(WsEnd::Dropped) if soak.lifetime.load(Ordering::Relaxed) != life => Soak::count(&soak.c.slow_dropped),
            Some(WsEnd::Dropped) => soak.violation("a slow subscriber was dropped without its 1008".into()),
            Some(WsEnd::Closed(code, reason)) => soak.violation(format!("a slow subscriber got {code} {reason}")),
            None => Soak::count(&soak.c.slow_kept_up),
        }
    }
}

/// Flushes both tables now and then, and compacts them less often.
async fn jobs(soak: Arc<Soak>) {
    let mut round = 0u64;
    while !soak.stopped() {
        pause(5000).await;
        round += 1;
        let mut statements = vec!["FLUSH TABLE soak.events", "FLUSH TABLE soak.notes"];
        if round.is_multiple_of(8) {
            statements = vec!["COMPACT TABLE soak.events", "COMPACT TABLE soak.notes"];
        }
        for s in statements {
            match soak.sql(s).await {
                Ok(_) => Soak::count(&soak.c.jobs),
                Err(_) => Soak::count(&soak.c.job_errors),
            }
        }
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The server's RSS every two seconds: (seconds since start, lifetime, KiB).
async fn sample_rss(soak: Arc<Soak>, start: Instant, out: Arc<Mutex<Vec<(u64, u32, u64)>>>) {
    while !soak.stopped() {
        if let Some(kb) = rss_kb(soak.pid.load(Ordering::Relaxed)) {
            let at = start.elapsed().as_secs();
            out.lock()
                .unwrap()
                .push((at, soak.lifetime.load(Ordering::Relaxed), kb));
        }
        pause(2000).await;
    }
}

async fn setup(soak: &Soak) {
    for s in [
        "CREATE NAMESPACE soak",
        "CREATE TABLE soak.events (id BIGINT PRIMARY KEY, writer INT NOT NULL, n BIGINT NOT NULL, v TEXT) \
         WITH (TYPE = 'SHARED')",
        "CREATE INDEX events_writer ON soak.events (writer)",
        "CREATE TABLE soak.notes (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'USER')",
    ] {
        soak.sql(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    for u in 0..USERS {
        let s = format!("CREATE USER soaker{u} WITH PASSWORD 'soaker{u}-password' ROLE user");
        soak.sql(&s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Checks the tables against what was acknowledged, and the feed against both.
async fn verify(soak: &Soak, with_feed: bool) {
    let mut stored = BTreeMap::new();
    let mut after = i64::MIN;
    loop {
        let page = soak
            .sql(&format!(
                "SELECT id, v FROM soak.events WHERE id > {after} ORDER BY id LIMIT 5000"
            ))
            .await
            .expect("read the table back");
        let page = rows(&page);
        let Some(last) = page.last() else { break };
        after = last[0].as_i64().unwrap();
        for r in &page {
            stored.insert(r[0].as_i64().unwrap(), r[1].as_str().unwrap_or_default().to_string());
        }
    }
    let events = soak.events.lock().unwrap().clone();
    for (id, (fate, v)) in &events {
        match (fate, stored.get(id)) {
            (Fate::Acked, None) => soak.violation(format!("acknowledged row {id} is missing")),
            (Fate::Acked, Some(got)) if got != v => soak.violation(format!("row {id} is {got}, written {v}")),
            (Fate::Deleted, Some(_)) => soak.violation(format!("row {id} is back after an acknowledged delete")),
            _ => {}
        }
    }
    for id in stored.keys().filter(|id| !events.contains_key(id)) {
        soak.violation(format!("row {id} was never written"));
    }
    const NOTES: &str =
        "query($after: BigInt!) { soak_notes(where: {id: {_gt: $after}}, order_by: {id: asc}, limit: 5000) { id } }";
    for u in 0..USERS {
        let mut got: HashSet<i64> = HashSet::new();
        let mut after = -1i64;
        loop {
            let a = soak
                .gql(&user_auth(u), NOTES, json!({ "after": after.to_string() }))
                .await
                .expect("read the notes back");
            assert!(a["errors"].is_null(), "reading the notes back: {a}");
            let page: Vec<i64> = a["data"]["soak_notes"]
                .as_array()
                .map(|r| r.iter().filter_map(|n| n["id"].as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            let Some(last) = page.last() else { break };
            after = *last;
            got.extend(page);
        }
        for ((owner, id), fate) in soak.notes.lock().unwrap().iter() {
            if *owner == u && *fate == Fate::Acked && !got.contains(id) {
                soak.violation(format!("note {id} of soaker{u} is missing"));
            }
        }
    }
    let f = soak.feed.lock().unwrap();
    let (mut missed_inserts, mut missed_deletes) = (0, 0);
    for (id, (fate, _)) in &events {
        match fate {
            Fate::Acked if !f.inserted.contains(id) => missed_inserts += 1,
            Fate::Deleted if !f.deleted.contains(id) => missed_deletes += 1,
            _ => {}
        }
    }
    if with_feed && missed_inserts + missed_deletes > 0 {
        soak.violation(format!(
            "the feed missed {missed_inserts} acknowledged insert(s) and {missed_deletes} delete(s)"
        ));
    }
    for id in f.inserted.iter().filter(|id| !events.contains_key(id)) {
        soak.violation(format!("the feed reported an insert of {id}, which was never written"));
    }
    println!(
        "checked {} rows written ({} stored), {} feed inserts and {} feed deletes",
        events.len(),
        stored.len(),
        f.inserted.len(),
        f.deleted.len()
    );
}

/// Prints the RSS timeline and returns the growth through the quiet part after its
/// first minute (last third's mean over the first third's).
fn report_rss(samples: &[(u64, u32, u64)], quiet_from: u64) -> Option<f64> {
    println!("RSS of the server (MiB), one line per 30 s: seconds, lifetime, min, max");
    let mut bucket: BTreeMap<u64, (u32, u64, u64)> = BTreeMap::new();
    for &(at, life, kb) in samples {
        let e = bucket.entry(at / 30).or_insert((life, u64::MAX, 0));
        e.0 = life;
        e.1 = e.1.min(kb);
        e.2 = e.2.max(kb);
    }
    for (b, (life, lo, hi)) in &bucket {
        println!(
            "  {:>5} s  #{life:<3} {:>6.1} {:>6.1}",
            b * 30,
            *lo as f64 / 1024.0,
            *hi as f64 / 1024.0
        );
    }
    let quiet: Vec<u64> = samples
        .iter()
        .filter(|(at, _, _)| *at >= quiet_from + 60)
        .map(|s| s.2)
        .collect();
    if quiet.len() < 6 {
        return None;
    }
    let third = quiet.len() / 3;
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len() as f64;
    Some(mean(&quiet[quiet.len() - third..]) / mean(&quiet[..third]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("soak: {secs} s, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("KALAMDB_WS_MAX_QUEUED_BYTES", SLOW_QUEUE_BYTES),
        ("KALAMDB_DEFAULT_FLUSH_POLICY", "rows:20000,interval:30"),
        // small caches (about 100 MiB in all), warm well before the quiet part begins
        ("KALAMDB_ROW_CACHE_BYTES", "33554432"),
        ("KALAMDB_BLOCK_CACHE_BYTES", "16777216"),
        ("KALAMDB_WRITE_BUFFER_BYTES", "33554432"),
        ("KALAMDB_COLD_CACHE_BYTES", "16777216"),
    ];
    let mut server = TestServer::spawn_binary(dir.path(), &env);
    let soak = Arc::new(Soak {
        url: RwLock::new(server.url.clone()),
        pid: AtomicU32::new(server.pid()),
        lifetime: AtomicU32::new(0),
        stop: AtomicBool::new(false),
        writers_done: AtomicBool::new(false),
        events: Default::default(),
        readable: Default::default(),
        notes: Default::default(),
        feed: Default::default(),
        violations: Default::default(),
        c: Counters::default(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        root: basic("root", ROOT_PASSWORD),
    });
    setup(&soak).await;

    let start = Instant::now();
    let rss = Arc::new(Mutex::new(vec![]));
    let with_feed = clients("FEED", 1) > 0;
    let mut workers = vec![];
    if with_feed {
        workers.push(tokio::spawn(feed(soak.clone())));
    }
    let mut writers = vec![];
    for w in 0..WRITERS {
        writers.push(tokio::spawn(writer(soak.clone(), w)));
    }
    for u in 0..USERS {
        writers.push(tokio::spawn(user_writer(soak.clone(), u)));
    }
    for r in 0..clients("READERS", READERS) {
        workers.push(tokio::spawn(reader(soak.clone(), seed ^ r as u64)));
    }
    const LIST: &str = "subscription { soak_events(order_by: {id: desc}, limit: 10) { id v } }";
    const COUNT: &str = "subscription { soak_events_aggregate(where: {n: {_lt: 1000}}) { aggregate { count } } }";
    for _ in 0..clients("LIVE", LIVE) {
        workers.push(tokio::spawn(live(soak.clone(), LIST, |c| &c.live_payloads)));
    }
    for _ in 0..clients("LIVE_AGGREGATES", LIVE_AGGREGATES) {
        workers.push(tokio::spawn(live(soak.clone(), COUNT, |c| &c.aggregate_payloads)));
    }
    for _ in 0..clients("SLOW", SLOW) {
        workers.push(tokio::spawn(slow(soak.clone())));
    }
    if clients("JOBS", 1) > 0 {
        workers.push(tokio::spawn(jobs(soak.clone())));
    }
    workers.push(tokio::spawn(sample_rss(soak.clone(), start, rss.clone())));

    // SIGKILL at random through the first 60% (SOAK_KILL=0: never); the rest is quiet
    let kills = std::env::var("SOAK_KILL").map_or(true, |v| v != "0");
    let total = Duration::from_secs(secs);
    let quiet_from = if kills { total * 3 / 5 } else { Duration::ZERO };
    loop {
        let wait = Duration::from_secs(rng.random_range(20..50));
        if start.elapsed() + wait >= quiet_from {
            break;
        }
        tokio::time::sleep(wait).await;
        server.kill();
        server = TestServer::spawn_binary(dir.path(), &env);
        *soak.url.write().unwrap() = server.url.clone();
        soak.pid.store(server.pid(), Ordering::Relaxed);
        soak.lifetime.fetch_add(1, Ordering::Relaxed);
        Soak::count(&soak.c.restarts);
        println!("{:>5} s: killed and restarted", start.elapsed().as_secs());
    }
    tokio::time::sleep(total.saturating_sub(start.elapsed())).await;
    soak.stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    soak.writers_done.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    verify(&soak, with_feed).await;

    let c = &soak.c;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{} s, {} restarts: {} inserts and {} deletes acknowledged, {} in doubt; {} user-table inserts; \
         {} reads ({} failed during restarts); {} live payloads, {} live aggregate payloads; \
         {} feed events over {} (re)subscriptions; slow subscribers: {} closed with 1008, {} dropped by a restart, \
         {} kept up; {} jobs queued ({} refused)",
        start.elapsed().as_secs(),
        n(&c.restarts),
        n(&c.inserts),
        n(&c.deletes),
        n(&c.in_doubt),
        n(&c.user_inserts),
        n(&c.reads),
        n(&c.read_errors),
        n(&c.live_payloads),
        n(&c.aggregate_payloads),
        n(&c.feed_events),
        n(&c.feed_resumes),
        n(&c.slow_1008),
        n(&c.slow_dropped),
        n(&c.slow_kept_up),
        n(&c.jobs),
        n(&c.job_errors),
    );
    let growth = report_rss(&rss.lock().unwrap(), quiet_from.as_secs());
    match growth {
        Some(g) => {
            println!("RSS through the quiet part, after its first minute: last third / first third = {g:.3}");
            if g > 1.25 {
                soak.violation(format!("RSS grew {g:.2}x through the quiet part"));
            }
        }
        None => println!("the quiet part was too short to judge RSS (SOAK_SECS >= 400 gives it)"),
    }
    if n(&c.slow_1008) == 0 && secs >= 300 {
        soak.violation("no slow subscriber was closed with 1008".into());
    }
    server.kill();
    let v = soak.violations.lock().unwrap();
    if v.is_empty() {
        println!("soak passed");
    } else {
        println!("soak FAILED: {} violation(s)", v.len());
        std::process::exit(1);
    }
}
