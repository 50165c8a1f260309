//! A full disk, for real: the server's data on a small tmpfs of its own, which the test
//! fills. Writes get `STORAGE_FULL` (HTTP 507) and readiness says so, reads keep
//! working, and once space is freed the writes and the job that failed meanwhile go on
//! without a restart. No acknowledged row is lost.

use std::time::{Duration, Instant};

use kalamdb_tests::{ROOT_PASSWORD, TestServer, basic, rows};
use serde_json::{Value, json};

async fn readiness(server: &TestServer) -> (u16, Value) {
    let resp = server
        .client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .expect("readyz");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// Writes `file` until the disk refuses: the disk is then full.
fn fill(file: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("ballast");
    let chunk = vec![7u8; 1 << 20];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "{e}");
            return;
        }
    }
}

/// The job's status and error, as `system.jobs` shows them.
async fn job(server: &TestServer, id: &str) -> (String, String) {
    let r = server
        .root(&format!("SELECT status, error FROM system.jobs WHERE job_id = '{id}'"))
        .await;
    let r = &rows(&r)[0];
    (
        r[0].as_str().unwrap_or_default().to_string(),
        r[1].as_str().unwrap_or_default().to_string(),
    )
}

async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < until, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_storage_full_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = TestServer::spawn_on_small_disk(
        &data,
        // RocksDB resumes writes once 64 MiB are free
        192,
        &[
            ("KALAMDB_DEFAULT_FLUSH_POLICY", ""),
            ("KALAMDB_JOB_BACKOFF_MS", "100"),
            // the flush queued below starts once the disk is full
            ("KALAMDB_TEST_FAULTS", "sleep@flush:1500"),
        ],
    );
    server.root("CREATE NAMESPACE f").await;
    server
        .root("CREATE TABLE f.t (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')")
        .await;
    let text = "x".repeat(4000);
    let batch = |from: i64| {
        let values: Vec<String> = (from..from + 50).map(|i| format!("({i}, '{text}')")).collect();
        format!("INSERT INTO f.t (id, v) VALUES {}", values.join(","))
    };
    let mut acked = 0;
    for _ in 0..4 {
        server.root(&batch(acked)).await;
        acked += 50;
    }
    assert_eq!(readiness(&server).await, (200, json!({"status": "ready"})));
    let flush = server.root("FLUSH TABLE f.t").await;
    let flush_id = rows(&flush)[0][0].as_str().unwrap().to_string();

    let ballast = server.server_path(&data.join("ballast"));
    fill(&ballast);
    // RocksDB's log has space set aside: writes go on into it, then fail
    let refused = loop {
        let (status, body) = server.sql("root", ROOT_PASSWORD, &batch(acked)).await;
        if status != 200 {
            break (status, body);
        }
        acked += 50;
        assert!(acked < 20_000, "inserts never failed on a full disk");
    };
    assert_eq!(refused.0, 507, "{}", refused.1);
    assert_eq!(refused.1["error"]["code"], "STORAGE_FULL", "{}", refused.1);
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("storage is full"), "{message}");
    assert!(!message.contains("/proc") && !message.contains(".log"), "{message}");

    let (status, body) = server
        .gql_with(
            &basic("root", ROOT_PASSWORD),
            "mutation { insert_f_t_one(object: {id: -1, v: \"gql\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "STORAGE_FULL",
        "{status} {body}"
    );

    let (status, body) = readiness(&server).await;
    assert_eq!((status, body["status"].clone()), (503, json!("storage_full")), "{body}");
    // reads go on
    let count = server.root("SELECT count(*), max(id) FROM f.t").await;
    assert_eq!(rows(&count), vec![vec![json!(acked), json!(acked - 1)]]);

    // the flush fails for want of space and waits for it, retried
    wait_for("the flush to fail for want of space", 30, async || {
        let (status, error) = job(&server, &flush_id).await;
        assert_ne!(status, "completed", "a flush completed on a full disk");
        error.contains("storage is full")
    })
    .await;

    std::fs::remove_file(&ballast).unwrap();
    wait_for("readiness once space is back", 30, async || {
        readiness(&server).await.0 == 200
    })
    .await;
    wait_for("the flush to complete once space is back", 90, async || {
        job(&server, &flush_id).await.0 == "completed"
    })
    .await;
    server.root(&batch(acked)).await;
    acked += 50;
    let ids = server.root("SELECT id FROM f.t ORDER BY id").await;
    let ids: Vec<i64> = rows(&ids).iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(ids, (0..acked).collect::<Vec<_>>());
    let again = server.run_job("FLUSH TABLE f.t").await;
    assert_eq!(again["status"], "completed", "{again}");
}
