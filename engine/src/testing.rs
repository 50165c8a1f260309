//! Test support: an engine on a temporary directory, with a schema.

use std::sync::Arc;

use crate::context::ExecContext;
use crate::engine::{Engine, EngineConfig};

/// An engine on `dir` (cheap bcrypt) after running `sql` as root.
pub async fn engine_with(dir: &std::path::Path, sql: &[&str]) -> Arc<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.bcrypt_cost = 4;
    let engine = Engine::open(cfg).await.expect("open the engine");
    for statement in sql {
        engine
            .execute_sql(&ExecContext::system(), statement, &[])
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    engine
}

/// Runs `statement` as root and returns its rows.
pub async fn sql_rows(engine: &Engine, statement: &str) -> Vec<Vec<serde_json::Value>> {
    engine
        .execute_sql(&ExecContext::system(), statement, &[])
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
        .rows
}

/// Flushes `table` and waits for the job to complete.
pub async fn flush(engine: &Engine, table: &str) {
    let id = sql_rows(engine, &format!("FLUSH TABLE {table}")).await[0][0].clone();
    let id = id.as_str().expect("a job id");
    for _ in 0..2000 {
        let r = sql_rows(engine, &format!("SELECT status FROM system.jobs WHERE job_id = '{id}'")).await;
        match r[0][0].as_str() {
            Some("completed") => return,
            Some("failed" | "cancelled") => panic!("flush {id}: {r:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    panic!("flush {id} did not finish");
}
