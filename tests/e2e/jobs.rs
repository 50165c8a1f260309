//! The job system through SQL and `system.jobs`: retries after a failure, idempotency,
//! a concurrency limit, KILL JOB, and each state a job goes through. Recovery of a job
//! left running by a killed process is in `cold_tier` (the crash tests).

use std::time::Duration;

use kalamdb_tests::{ROOT_PASSWORD, TestServer, rows};
use serde_json::{Value, json};

/// Polls `system.jobs` until the job is in `status`.
async fn wait_status(s: &TestServer, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let j = s.job(id).await;
        if j["status"] == status {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} never was {status}: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A flush job that wrote the test tables' two rows.
fn assert_flushed_two(j: &Value) {
    let m = j["message"].as_str().unwrap_or_default();
    assert!(m.starts_with("flushed 2 row(s) into 1 segment(s)"), "{j}");
}

fn queued(r: &Value) -> (String, bool) {
    let row = &rows(r)[0];
    (row[0].as_str().unwrap().to_string(), row[3].as_bool().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_retry_deduplicate_queue_and_die_on_request() {
    let s = TestServer::start_with(|c| {
        c.engine.faults =
            kalamdb_engine::faults::Faults::parse("fail@flush:1,sleep@compact:1500,fail@cleanup:99").unwrap();
        c.engine.job_backoff_ms = 1500;
        c.engine.job_max_retries = 1;
        c.engine.max_concurrent_jobs = 1;
    })
    .await;
    for t in ["t1", "t2", "t3"] {
        s.root(&format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')"
        ))
        .await;
        s.root(&format!("INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")).await;
    }

    // a forced failure, then a retry after the backoff; a second request meanwhile is
    // absorbed by the job already active for the partition
    let (id, new) = queued(&s.root("FLUSH TABLE t1").await);
    assert!(new && id.starts_with("FL-"), "{id}");
    let j = wait_status(&s, &id, "retrying").await;
    assert_eq!(j["retries"], 1, "{j}");
    assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()), "{j}");
    let (again, new) = queued(&s.root("FLUSH TABLE t1").await);
    assert_eq!(
        (again.as_str(), new),
        (id.as_str(), false),
        "a duplicate flush was queued"
    );
    let j = s.wait_job(&id).await;
    assert_eq!(
        (j["status"].clone(), j["retries"].clone()),
        (json!("completed"), json!(1)),
        "{j}"
    );
    assert_flushed_two(&j);

    // one job at a time: a compaction runs (slowly), a flush waits its turn
    let (compact, _) = queued(&s.root("COMPACT TABLE t1").await);
    assert!(compact.starts_with("CO-"));
    wait_status(&s, &compact, "running").await;
    let (flush, _) = queued(&s.root("FLUSH TABLE t2").await);
    assert_eq!(s.job(&flush).await["status"], "queued");
    // KILL JOB: the queued one is cancelled at once, the running one at its next check
    let r = s.root(&format!("KILL JOB '{flush}'")).await;
    assert!(r["message"].as_str().unwrap().contains("cancelled"), "{r}");
    assert_eq!(s.job(&flush).await["status"], "cancelled");
    let r = s.root(&format!("KILL JOB '{compact}'")).await;
    assert!(r["message"].as_str().unwrap().contains("stopping"), "{r}");
    assert_eq!(s.wait_job(&compact).await["status"], "cancelled");
    // the cancelled flush's rows were not flushed; a new flush is a new job
    let (flush2, new) = queued(&s.root("FLUSH TABLE t2").await);
    assert!(new && flush2 != flush);
    let j = s.wait_job(&flush2).await;
    assert_flushed_two(&j);

    // out of retries: failed, with the error kept
    s.root("DROP TABLE t3").await;
    let r = s.root("SELECT job_id FROM system.jobs WHERE kind = 'cleanup'").await;
    let cleanup = rows(&r)[0][0].as_str().unwrap().to_string();
    let j = s.wait_job(&cleanup).await;
    assert_eq!(
        (j["status"].clone(), j["retries"].clone()),
        (json!("failed"), json!(1)),
        "{j}"
    );

    // every state was shown; bad requests get clear codes
    let states = s.root("SELECT DISTINCT status FROM system.jobs ORDER BY status").await;
    let states: Vec<Value> = rows(&states).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(states, [json!("cancelled"), json!("completed"), json!("failed")]);
    let (status, code) = s.err("root", ROOT_PASSWORD, "KILL JOB 'FL-1'").await;
    assert_eq!((status, code.as_str()), (404, "JOB_NOT_FOUND"));
    let (status, code) = s.err("root", ROOT_PASSWORD, &format!("KILL JOB '{id}'")).await;
    assert_eq!((status, code.as_str()), (400, "INVALID_INPUT"));
    let (status, code) = s.err("root", ROOT_PASSWORD, "KILL JOB '../etc'").await;
    assert_eq!((status, code.as_str()), (404, "JOB_NOT_FOUND"));
    let (status, code) = s.err("root", ROOT_PASSWORD, "FLUSH TABLE nope").await;
    assert_eq!((status, code.as_str()), (404, "TABLE_NOT_FOUND"));
    s.user("svc", "service").await;
    let (status, code) = s.err_as("svc", "FLUSH TABLE t1").await;
    assert_eq!((status, code.as_str()), (403, "FORBIDDEN"));
    let (status, code) = s.err_as("svc", "SELECT * FROM system.jobs").await;
    assert_eq!((status, code.as_str()), (403, "FORBIDDEN"));
    // FLUSH ALL queues one job per flushable table
    let r = s.root("FLUSH ALL").await;
    assert_eq!(rows(&r).len(), 2, "{r}");
}
