//! Cold-tier benchmarks (release build): `make bench` or
//! `cargo bench --profile release --workspace --bench cold`. Prints figures; asserts
//! nothing. Each figure comes with its baseline, measured in the same run:
//! - flush throughput (rows per second of a 1,000,000-row flush);
//! - a `group_by` aggregate over 1,000,000 cold rows through the engine, against
//!   DataFusion reading the same Parquet files directly (no hot tier);
//! - `_by_pk` lookups on a table with 100 cold segments, against a hot-only table.
//!
//! COLD_ONLY=by_pk runs only the last (for profiling it).

use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use kalamdb_auth::identity::{Role, UserId};
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::{Engine, EngineConfig};
use kalamdb_engine::ids::{ColumnName, NamespaceId, TableId, TableName};
use kalamdb_engine::read::select::{AggFn, Aggregate, AggregateRequest};
use kalamdb_engine::types::{Pk, Value};
use kalamdb_engine::write::mutate::ConflictAction;
use kalamdb_storage::hot_store::Durability;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    pct(&v, 0.5)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn sql(engine: &Engine, q: &str) -> Vec<Vec<serde_json::Value>> {
    engine
        .execute_sql(&ExecContext::system(), q, &[])
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .rows
}

/// Queues a flush and waits for it; returns the wall time from statement to completion.
async fn flush(engine: &Engine, table: &str) -> Duration {
    let t = Instant::now();
    let id = sql(engine, &format!("FLUSH TABLE {table}")).await[0][0]
        .as_str()
        .unwrap()
        .to_string();
    loop {
        let r = sql(
            engine,
            &format!("SELECT status, message FROM system.jobs WHERE job_id = '{id}'"),
        )
        .await;
        match r[0][0].as_str() {
            Some("completed") => return t.elapsed(),
            Some("failed" | "cancelled") => panic!("flush {id}: {:?}", r[0]),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

fn id(name: &str) -> TableId {
    TableId::new(NamespaceId::public(), TableName::parse(name).unwrap())
}

async fn fill(engine: &Engine, ctx: &ExecContext, table: &str, from: i64, n: i64) {
    let cols: Vec<ColumnName> = ["id", "cat", "qty", "price", "name"]
        .iter()
        .map(|c| ColumnName::parse(c).unwrap())
        .collect();
    for start in (from..from + n).step_by(10_000) {
        let rows = (start..(start + 10_000).min(from + n))
            .map(|i| {
                vec![
                    (cols[0].clone(), Value::BigInt(i)),
                    (cols[1].clone(), Value::Int((i % 100) as i32)),
                    (cols[2].clone(), Value::Int((i % 1000) as i32)),
                    (cols[3].clone(), Value::Double(i as f64 * 0.5)),
                    (cols[4].clone(), Value::Text(format!("item {i}"))),
                ]
            })
            .collect();
        engine
            .insert(ctx, &id(table), rows, ConflictAction::Error)
            .await
            .unwrap();
    }
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path().join("data"));
    cfg.bcrypt_cost = 4;
    // setup speed only: the figures below do not depend on write durability
    cfg.durability = Durability::Async;
    cfg.default_flush_policy = None;
    cfg.segment_delete_grace_ms = 0;
    let engine = Engine::open(cfg).await.unwrap();
    let ctx = ExecContext::new(UserId::parse("bench").unwrap(), Role::Service);
    const COLUMNS: &str = "(id BIGINT PRIMARY KEY, cat INT NOT NULL, qty INT, price DOUBLE, name TEXT)";
    for t in ["big", "segs", "hot"] {
        sql(
            &engine,
            &format!("CREATE TABLE {t} {COLUMNS} WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')"),
        )
        .await;
    }

    if std::env::var("COLD_ONLY").as_deref() != Ok("by_pk") {
        flush_and_group_by(&engine, &ctx, dir.path()).await;
    }
    by_pk(&engine, &ctx).await;
}

async fn flush_and_group_by(engine: &Engine, ctx: &ExecContext, dir: &std::path::Path) {
    // 1. flush throughput
    const N: i64 = 1_000_000;
    fill(engine, ctx, "big", 0, N).await;
    let el = flush(engine, "big").await;
    println!(
        "flush of {N} rows: {el:?}, {:.0} rows/s (target >= 200,000)",
        N as f64 / el.as_secs_f64()
    );

    // 2. group_by over 1,000,000 cold rows, against DataFusion on the same files
    let req = AggregateRequest {
        filter: None,
        group_by: vec![ColumnName::parse("cat").unwrap()],
        aggregates: vec![
            Aggregate {
                func: AggFn::Count,
                column: None,
            },
            Aggregate {
                func: AggFn::Sum,
                column: Some(ColumnName::parse("price").unwrap()),
            },
            Aggregate {
                func: AggFn::Avg,
                column: Some(ColumnName::parse("qty").unwrap()),
            },
            Aggregate {
                func: AggFn::Max,
                column: Some(ColumnName::parse("qty").unwrap()),
            },
        ],
    };
    let mut ours = vec![];
    for _ in 0..12 {
        let t = Instant::now();
        let groups = engine.aggregate(ctx, &id("big"), &req).await.unwrap();
        ours.push(t.elapsed());
        assert_eq!(groups.len(), 100);
    }
    let files = dir.join("data/cold/public/big/");
    let q = "SELECT cat, count(*), sum(price), avg(qty), max(qty) FROM big GROUP BY cat";
    let direct = |partitions: usize| {
        let files = files.clone();
        async move {
            let df = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
            df.register_parquet("big", files.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
            let mut times = vec![];
            for _ in 0..12 {
                let t = Instant::now();
                let out = df.sql(q).await.unwrap().collect().await.unwrap();
                times.push(t.elapsed());
                assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 100);
            }
            median(times)
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let base_1 = direct(1).await;
    let base_n = direct(cores).await;
    let ours = median(ours);
    println!(
        "group_by over {N} cold rows: engine {ours:?}; DataFusion on the Parquet files, 1 partition {base_1:?} \
         (ratio {:.2}), {cores} partitions {base_n:?} (ratio {:.2}); target ratio <= 1.5",
        ours.as_secs_f64() / base_1.as_secs_f64(),
        ours.as_secs_f64() / base_n.as_secs_f64()
    );
}

async fn by_pk(engine: &Engine, ctx: &ExecContext) {
    // 3. _by_pk on 100 cold segments against a hot-only table
    for s in 0..100 {
        fill(engine, ctx, "segs", s * 1000, 1000).await;
        flush(engine, "segs").await;
    }
    fill(engine, ctx, "hot", 0, 100_000).await;
    let manifests = sql(
        engine,
        "SELECT count(*) FROM system.jobs WHERE kind = 'flush' AND table_name = 'segs'",
    )
    .await;
    let lookup = async |table: &str| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut samples = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 100_000) as i64;
            let t = Instant::now();
            let r = engine
                .get_by_pk(ctx, &id(table), &Pk::one(Value::BigInt(key)))
                .await
                .unwrap();
            samples.push(t.elapsed());
            assert_eq!(r.rows.len(), 1);
        }
        samples.sort();
        (pct(&samples, 0.5), pct(&samples, 0.99))
    };
    // warm both (the cold side caches segment metadata and bloom filters)
    lookup("segs").await;
    lookup("hot").await;
    let (hot50, hot99) = lookup("hot").await;
    let (cold50, cold99) = lookup("segs").await;
    println!(
        "_by_pk, {} flushes = 100 cold segments: p50 {cold50:?} p99 {cold99:?}; hot-only table p50 {hot50:?} p99 {hot99:?}; \
         ratio p50 {:.2} (target <= 2)",
        manifests[0][0],
        cold50.as_secs_f64() / hot50.as_secs_f64()
    );
}
