//! Engine benchmarks (release build): `make bench` or `cargo bench -p kalamdb-engine`.
//! Prints figures; asserts nothing. The fdatasync latency of this disk is measured in
//! the same run as the baseline for the durable-write figures.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kalamdb_auth::identity::{Role, UserId};
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::{Engine, EngineConfig};
use kalamdb_engine::ids::{ColumnName, NamespaceId, TableId, TableName};
use kalamdb_engine::types::{Pk, Value};
use kalamdb_engine::write::mutate::ConflictAction;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn fdatasync_p50(dir: &std::path::Path) -> Duration {
    let mut f = std::fs::File::create(dir.join("sync-probe")).unwrap();
    let mut samples = Vec::new();
    for _ in 0..200 {
        f.write_all(&[7u8; 512]).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    pct(&samples, 0.5)
}

fn row(cols: &[ColumnName], id: i64) -> Vec<(ColumnName, Value)> {
    vec![
        (cols[0].clone(), Value::BigInt(id)),
        (cols[1].clone(), Value::Text(format!("item number {id}"))),
        (cols[2].clone(), Value::Int((id % 1000) as i32)),
    ]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    println!("fdatasync p50 on this disk: {:?}", fdatasync_p50(dir.path()));
    let mut cfg = EngineConfig::new(dir.path().join("data"));
    cfg.bcrypt_cost = 4;
    // every figure here is of the hot tier (the cold one has `benches/cold.rs`)
    cfg.default_flush_policy = None;
    let engine = Engine::open(cfg).await.unwrap();
    let root = ExecContext::system();
    let ctx = ExecContext::new(UserId::parse("bench").unwrap(), Role::Service);
    engine
        .execute_sql(&root, "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')", &[])
        .await
        .unwrap();
    let table = TableId::new(NamespaceId::public(), TableName::parse("items").unwrap());
    let cols: Vec<ColumnName> = ["id", "name", "qty"]
        .iter()
        .map(|c| ColumnName::parse(c).unwrap())
        .collect();

    // 1. 1,000-row batch inserts (sync durability)
    const N: i64 = 100_000;
    let t = Instant::now();
    for start in (0..N).step_by(1000) {
        let rows = (start..start + 1000).map(|i| row(&cols, i)).collect();
        engine.insert(&ctx, &table, rows, ConflictAction::Error).await.unwrap();
    }
    let el = t.elapsed();
    println!(
        "batch insert, 1,000-row batches, sync: {:.0} rows/s ({N} rows in {el:?})",
        N as f64 / el.as_secs_f64()
    );

    // 2. point reads by primary key, single thread
    let mut samples = Vec::with_capacity(100_000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = (x % N as u64) as i64;
        let t = Instant::now();
        let r = engine
            .get_by_pk(&ctx, &table, &Pk::one(Value::BigInt(id)))
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert_eq!(r.rows.len(), 1);
    }
    samples.sort();
    println!(
        "point read by primary key (typed API), 1 thread: p50 {:?}  p99 {:?}",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );

    let by_pk_p50 = pct(&samples, 0.5);

    // 2b. a page of 20 rows of one value of an indexed column, by primary key, against the
    // lookup by primary key: 1,000 values of `qty`, 100 rows each
    engine
        .execute_sql(&root, "CREATE INDEX items_qty ON items (qty)", &[])
        .await
        .unwrap();
    while engine
        .execute_sql(&root, "SELECT state FROM system.indexes", &[])
        .await
        .unwrap()
        .rows[0][0]
        != "ready"
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let qty = cols[2].clone();
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000i64 {
        let req = kalamdb_engine::read::select::SelectRequest {
            filter: Some(kalamdb_engine::read::filter::Filter::Compare {
                column: qty.clone(),
                op: kalamdb_engine::read::filter::CmpOp::Eq,
                value: Value::Int((i * 7919 % 1000) as i32),
            }),
            order_by: vec![kalamdb_engine::read::filter::OrderKey {
                column: cols[0].clone(),
                descending: i % 2 == 0,
                nulls_first: None,
            }],
            limit: Some(20),
            offset: 0,
        };
        let t = Instant::now();
        let r = engine.select(&ctx, &table, &req).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(r.rows.len(), 20);
    }
    samples.sort();
    println!(
        "20 rows of one indexed value by primary key (typed API), 1 thread: p50 {:?}  p99 {:?}  ({:.2}x the lookup by primary key)",
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        pct(&samples, 0.5).as_secs_f64() / by_pk_p50.as_secs_f64()
    );

    // and the count of one value's rows, which the index's entries alone answer
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000i64 {
        let req = kalamdb_engine::read::select::AggregateRequest {
            filter: Some(kalamdb_engine::read::filter::Filter::Compare {
                column: qty.clone(),
                op: kalamdb_engine::read::filter::CmpOp::Eq,
                value: Value::Int((i * 7919 % 1000) as i32),
            }),
            group_by: vec![],
            aggregates: vec![kalamdb_engine::read::select::Aggregate {
                func: kalamdb_engine::read::select::AggFn::Count,
                column: None,
            }],
        };
        let t = Instant::now();
        let r = engine.aggregate(&ctx, &table, &req).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(r[0].values[0], Value::BigInt(100));
    }
    samples.sort();
    println!(
        "count of one indexed value's 100 rows (typed API), 1 thread: p50 {:?}  p99 {:?}",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );

    // the same lookup through SQL and DataFusion, for reference
    let mut samples = Vec::new();
    for i in 0..2_000 {
        let t = Instant::now();
        engine
            .execute_sql(
                &ctx,
                "SELECT * FROM items WHERE id = $1",
                &[serde_json::json!(i * 37 % N)],
            )
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "point read through SQL (parse + DataFusion plan): p50 {:?}  p99 {:?}",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );

    // 3. single-row inserts from 32 concurrent writers (sync durability, group commit)
    const WRITERS: i64 = 32;
    const PER: i64 = 2_000;
    let engine2 = engine.clone();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (engine, ctx, table, cols) = (engine2.clone(), ctx.clone(), table.clone(), cols.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(PER as usize);
            for i in 0..PER {
                let id = N + w * PER + i;
                let t = Instant::now();
                engine
                    .insert(&ctx, &table, vec![row(&cols, id)], ConflictAction::Error)
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let el = t.elapsed();
    lat.sort();
    let total = WRITERS * PER;
    println!(
        "single-row insert, {WRITERS} concurrent writers, sync: {:.0} rows/s ({total} rows in {el:?}; commit p50 {:?} p99 {:?})",
        total as f64 / el.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let _ = Arc::strong_count(&engine);
}
