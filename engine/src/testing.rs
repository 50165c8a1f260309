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
