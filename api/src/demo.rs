//! The demo schema `make run` starts with: a todo app with a per-user table and a
//! shared one, and a demo user. Applying it again changes nothing.

use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::sql::parse::split_script;

pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";
const DEMO_SQL: &str = include_str!("demo.sql");

pub async fn apply(engine: &Engine) -> anyhow::Result<()> {
    let ctx = ExecContext::system();
    for stmt in split_script(DEMO_SQL) {
        engine.execute_sql(&ctx, &stmt, &[]).await?;
    }
    engine
        .execute_sql(
            &ctx,
            &format!("CREATE USER IF NOT EXISTS {DEMO_USER} WITH PASSWORD '{DEMO_PASSWORD}' ROLE user"),
            &[],
        )
        .await?;
    Ok(())
}
