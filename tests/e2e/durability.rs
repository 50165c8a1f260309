//! Durability against the real binary: acknowledged writes survive SIGKILL.

use kalamdb_tests::{TestServer, rows};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::spawn_binary(dir.path(), &[]);
    server.root("CREATE NAMESPACE d").await;
    server
        .root("CREATE TABLE d.events (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')")
        .await;
    server
        .root("CREATE USER keeper WITH PASSWORD 'keeper-password' ROLE dba")
        .await;

    // 400 single-row inserts from 16 concurrent writers, then one 600-row batch
    const WRITERS: i64 = 16;
    const PER_WRITER: i64 = 25;
    let server = std::sync::Arc::new(server);
    let mut tasks = vec![];
    for w in 0..WRITERS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let id = w * PER_WRITER + i;
                server
                    .root(&format!("INSERT INTO d.events VALUES ({id}, 'w{w}')"))
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut server = std::sync::Arc::into_inner(server).expect("writers are done");
    let values: Vec<String> = (400..1000).map(|i| format!("({i}, 'batch')")).collect();
    server
        .root(&format!("INSERT INTO d.events VALUES {}", values.join(",")))
        .await;
    let before = server.root("SELECT max(_seq) FROM d.events").await;
    let max_seq_before = rows(&before)[0][0].as_i64().unwrap();

    // no graceful anything: SIGKILL right after the last acknowledgement
    server.kill();

    let server = TestServer::spawn_binary(dir.path(), &[]);
    let r = server
        .ok(
            "keeper",
            "keeper-password",
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM d.events",
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!(1000), json!(1000), json!(0), json!(999)]]);
    server.root("INSERT INTO d.events VALUES (1000, 'after')").await;
    let r = server.root("SELECT _seq FROM d.events WHERE id = 1000").await;
    assert!(
        rows(&r)[0][0].as_i64().unwrap() > max_seq_before,
        "_seq went backwards after restart"
    );
}

/// Many writers at once: group commit checks each request against the store and the
/// rows written before it in its own group, so no increment is lost, no key is taken
/// twice, and what was acknowledged is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_lose_no_increment_and_take_no_key_twice() {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    let server = Arc::new(TestServer::start().await);
    server.root("CREATE NAMESPACE r").await;
    server
        .root("CREATE TABLE r.counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL) WITH (TYPE = 'SHARED')")
        .await;
    server
        .root("CREATE TABLE r.claims (id BIGINT PRIMARY KEY, writer INT NOT NULL) WITH (TYPE = 'SHARED')")
        .await;
    server.root("INSERT INTO r.counter VALUES (1, 0)").await;

    const WRITERS: i64 = 24;
    const ROUNDS: i64 = 15;
    const KEYS: i64 = 40;
    let key = |w: i64, i: i64| (w * 3 + i) % KEYS;
    let mut tasks = vec![];
    for w in 0..WRITERS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = vec![];
            for i in 0..ROUNDS {
                server
                    .gql_ok(
                        "root",
                        "mutation { update_r_counter_by_pk(pk_columns: {id: 1}, _inc: {n: 1}) { n } }",
                        json!({}),
                    )
                    .await;
                let (status, body) = server
                    .gql(
                        "root",
                        "mutation($id: BigInt!, $w: Int!) { insert_r_claims_one(object: {id: $id, writer: $w}) { id } }",
                        json!({ "id": key(w, i).to_string(), "w": w }),
                    )
                    .await;
                match body["errors"][0]["extensions"]["code"].as_str() {
                    None => {
                        assert_eq!(status, 200, "{body}");
                        won.push(key(w, i));
                    }
                    Some(code) => assert_eq!(code, "DUPLICATE_KEY", "{body}"),
                }
            }
            (w, won)
        }));
    }
    let mut winners = std::collections::BTreeMap::new();
    for t in tasks {
        let (w, won) = t.await.unwrap();
        for k in won {
            assert!(winners.insert(k, w).is_none(), "key {k} was taken twice");
        }
    }
    let tried: BTreeSet<i64> = (0..WRITERS).flat_map(|w| (0..ROUNDS).map(move |i| key(w, i))).collect();
    assert_eq!(winners.keys().copied().collect::<BTreeSet<_>>(), tried);

    let r = server.root("SELECT n FROM r.counter WHERE id = 1").await;
    assert_eq!(rows(&r), vec![vec![json!(WRITERS * ROUNDS)]]);
    let r = server.root("SELECT id, writer FROM r.claims ORDER BY id").await;
    let stored: Vec<(i64, i64)> = rows(&r)
        .iter()
        .map(|row| (row[0].as_i64().unwrap(), row[1].as_i64().unwrap()))
        .collect();
    assert_eq!(stored, winners.into_iter().collect::<Vec<_>>());
}

/// A rows-only flush policy counts the rows written before a restart: 600 rows, a
/// crash, 600 more, and the 1,000-row policy flushes (counting from nothing at each
/// start, a server that restarts often never flushed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rows_only_flush_policy_counts_rows_from_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let insert = async |server: &TestServer, from: i64| {
        let values: Vec<String> = (from..from + 600).map(|i| format!("({i}, 'v{i}')")).collect();
        server
            .root(&format!("INSERT INTO f.t (id, v) VALUES {}", values.join(",")))
            .await;
    };
    let mut server = TestServer::spawn_binary(dir.path(), &[]);
    server.root("CREATE NAMESPACE f").await;
    server
        .root("CREATE TABLE f.t (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED', FLUSH_POLICY = 'rows:1000')")
        .await;
    insert(&server, 0).await;
    server.kill();
    let server = TestServer::spawn_binary(dir.path(), &[]);
    insert(&server, 600).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = server
            .root("SELECT count(*) FROM system.jobs WHERE kind = 'flush' AND status = 'completed'")
            .await;
        if rows(&r)[0][0] != json!(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no flush after 1,200 rows over a restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        rows(&server.root("SELECT count(*) FROM f.t").await),
        vec![vec![json!(1200)]]
    );
}
