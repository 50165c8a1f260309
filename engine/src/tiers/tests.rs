//! Tests of the jobs that tidy the tiers.

use std::time::Duration;

use kalamdb_storage::hot_store::Partition;
use kalamdb_storage::seq::Seq;

use crate::context::ExecContext;
use crate::engine::{Engine, EngineConfig};
use crate::ids::{ColumnName, NamespaceId, TableId, TableName};
use crate::live::{FeedBatch, FeedStart};
use crate::testing::{flush, sql_rows};
use crate::types::Value;
use crate::write::mutate::ConflictAction;

/// The message of the first completed job of `kind`, waiting up to ten seconds.
async fn completed_job(engine: &Engine, kind: &str) -> String {
    for _ in 0..1000 {
        let r = sql_rows(
            engine,
            &format!("SELECT message FROM system.jobs WHERE kind = '{kind}' AND status = 'completed'"),
        )
        .await;
        if let Some(m) = r.first().and_then(|r| r[0].as_str()) {
            return m.to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {kind} job completed");
}

/// Deleting most of a table queues a tombstone purge at once. It drops the tombstones
/// no segment may need and keeps those whose keys a segment holds (the retention
/// decides those) and the partition's newest, so RocksDB holds little more than the
/// live rows again, reads give the same rows, and a change feed's snapshot still
/// reflects every change up to the last delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletes_leave_only_the_tombstones_something_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.bcrypt_cost = 4;
    cfg.default_flush_policy = None;
    cfg.live_queue_capacity = 100_000;
    let engine = Engine::open(cfg).await.unwrap();
    sql_rows(&engine, "CREATE NAMESPACE app").await;
    sql_rows(
        &engine,
        "CREATE TABLE app.t (id BIGINT PRIMARY KEY, v INT) WITH (TYPE = 'SHARED')",
    )
    .await;
    let root = ExecContext::system();
    let table = TableId::new(NamespaceId::parse("app").unwrap(), TableName::parse("t").unwrap());
    let (id, v) = (ColumnName::parse("id").unwrap(), ColumnName::parse("v").unwrap());
    let insert = |from: i64, to: i64| {
        let rows = (from..to)
            .map(|i| vec![(id.clone(), Value::BigInt(i)), (v.clone(), Value::Int(1))])
            .collect();
        engine.insert(&root, &table, rows, ConflictAction::Error)
    };
    insert(0, 2000).await.unwrap();
    flush(&engine, "app.t").await;
    insert(2000, 30_000).await.unwrap();
    let mut feed = engine
        .subscribe_changes(&root, &table, None, FeedStart::default(), "all".into())
        .unwrap();
    // 1,000 rows of the segment and 27,000 hot-only rows
    sql_rows(&engine, "DELETE FROM app.t WHERE id >= 1000 AND id < 29000").await;
    let mut last_delete = Seq::ZERO;
    while last_delete == Seq::ZERO || feed.take().await.unwrap().is_some() {
        feed.ready().await;
        while let Some(FeedBatch::Changes(c)) = feed.take().await.unwrap() {
            last_delete = last_delete.max(c.last().unwrap().seq);
        }
    }
    let message = completed_job(&engine, "retention_purge").await;
    let purged: u64 = message
        .strip_prefix("purged ")
        .and_then(|m| m.strip_suffix(" tombstone(s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    // every hot-only tombstone but the newest, when that one is hot-only
    assert!((26_999..=27_000).contains(&purged), "{message}");
    let uid = engine.catalog.table(&table).unwrap().uid.0;
    // the 1,000 live hot rows, the tombstones of the segment's 1,000 keys, and the
    // newest tombstone if it was kept
    assert_eq!(
        engine.store.stored_versions(&Partition::table(uid)).unwrap(),
        2000 + (27_000 - purged)
    );
    assert_eq!(
        sql_rows(&engine, "SELECT count(*), min(id), max(id) FROM app.t WHERE id >= 500").await,
        [[
            serde_json::json!(1500),
            serde_json::json!(500),
            serde_json::json!(29_999)
        ]]
    );
    let mut snapshot = engine
        .subscribe_changes(
            &root,
            &table,
            None,
            FeedStart {
                since_seq: None,
                initial_batch_size: Some(5000),
            },
            "snapshot".into(),
        )
        .unwrap();
    let Some(FeedBatch::Snapshot { rows, watermark, .. }) = snapshot.take().await.unwrap() else {
        panic!("a snapshot first");
    };
    assert_eq!((rows.len(), watermark), (2000, last_delete));
}
