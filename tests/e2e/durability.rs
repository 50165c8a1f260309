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
