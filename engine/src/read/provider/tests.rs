//! Tests of the tiered table provider: key plans, flushed versions, streamed segments.
use super::*;
use crate::catalog::schema::{ColumnDef, TableSchema};
use crate::ids::{ColumnId, ColumnName, NamespaceId, StorageUid, TableId, TableName};
use crate::testing::flush;
use datafusion::prelude::{col, lit};
use kalamdb_auth::permissions::{AccessLevel, TableType};

fn table() -> TableDef {
    let c = |id, name: &str, ty| ColumnDef {
        id: ColumnId(id),
        name: ColumnName::parse(name).unwrap(),
        ty,
        nullable: true,
        default: None,
    };
    TableDef {
        id: TableId::new(NamespaceId::public(), TableName::parse("t").unwrap()),
        uid: StorageUid(1),
        table_type: TableType::Shared,
        access_level: AccessLevel::Public,
        ttl_seconds: None,
        flush_policy: None,
        versions: vec![TableSchema {
            version: 1,
            pk: vec![0],
            columns: vec![c(1, "id", ColumnType::BigInt), c(2, "name", ColumnType::Text)],
        }],
        next_column_id: 3,
        created_at_ms: 0,
        indexes: vec![],
        next_index_id: 1,
    }
}

#[test]
fn primary_key_predicates_become_lookups_and_ranges() {
    let t = table();
    assert_eq!(
        key_plan(&t, &[col("id").eq(lit(5i32))]),
        KeyPlan::Points(vec![Pk::one(Value::BigInt(5))])
    );
    assert_eq!(
        key_plan(&t, &[lit(7i64).eq(col("id"))]),
        KeyPlan::Points(vec![Pk::one(Value::BigInt(7))])
    );
    assert_eq!(
        key_plan(&t, &[col("id").in_list(vec![lit(1i64), lit(2i64)], false)]),
        KeyPlan::Points(vec![Pk::one(Value::BigInt(1)), Pk::one(Value::BigInt(2))])
    );
    assert_eq!(
        key_plan(&t, &[col("id").gt(lit(3i64)), col("id").lt_eq(lit(9i64))]),
        KeyPlan::Range {
            lo: Bound::Excluded(Value::BigInt(3)),
            hi: Bound::Included(Value::BigInt(9))
        }
    );
    // a literal on the left flips the comparison: 3 < id is id > 3
    assert_eq!(
        key_plan(&t, &[lit(3i64).lt(col("id"))]),
        KeyPlan::Range {
            lo: Bound::Excluded(Value::BigInt(3)),
            hi: Bound::Unbounded
        }
    );
    assert_eq!(key_plan(&t, &[col("name").eq(lit("x"))]), KeyPlan::All);
    assert_eq!(key_plan(&t, &[col("id").in_list(vec![lit(1i64)], true)]), KeyPlan::All);
}

#[test]
fn composite_keys_need_every_column_equated_for_points() {
    let mut t = table();
    // PRIMARY KEY (name, id)
    t.versions[0].pk = vec![1, 0];
    let key = |n: &str, i: i64| Pk(vec![Value::Text(n.into()), Value::BigInt(i)]);
    assert_eq!(
        key_plan(
            &t,
            &[
                col("id").in_list(vec![lit(1i64), lit(2i64)], false),
                col("name").eq(lit("a"))
            ]
        ),
        KeyPlan::Points(vec![key("a", 1), key("a", 2)])
    );
    // only the leading column: the run of keys that start with it
    assert_eq!(
        key_plan(&t, &[col("name").eq(lit("a"))]),
        KeyPlan::Range {
            lo: Bound::Included(Value::Text("a".into())),
            hi: Bound::Included(Value::Text("a".into()))
        }
    );
    // a condition on the second column alone cannot narrow the key order
    assert_eq!(key_plan(&t, &[col("id").eq(lit(1i64))]), KeyPlan::All);
    // the leading range covers every key that starts with its bounds
    let plan = key_plan(&t, &[col("name").lt_eq(lit("b"))]);
    let enc = |n: &str, i: i64| crate::codec::pk_bytes(&key(n, i)).unwrap();
    assert!(plan.covers(&enc("b", i64::MAX)));
    assert!(plan.covers(&enc("a", 0)));
    assert!(!plan.covers(&enc("ba", 0)));
    let plan = key_plan(&t, &[col("name").gt(lit("b"))]);
    assert!(!plan.covers(&enc("b", i64::MAX)));
    assert!(plan.covers(&enc("ba", i64::MIN)));
}

async fn sql(engine: &crate::engine::Engine, q: &str) -> Vec<Vec<serde_json::Value>> {
    crate::testing::sql_rows(engine, q).await
}

/// An engine under `dir` with no automatic flushes, holding one SHARED table `name`
/// of `columns` in namespace `public`.
async fn engine_with_table(dir: &std::path::Path, name: &str, columns: &str) -> (Arc<crate::engine::Engine>, TableId) {
    let mut cfg = crate::engine::EngineConfig::new(dir);
    cfg.bcrypt_cost = 4;
    cfg.default_flush_policy = None;
    let engine = crate::engine::Engine::open(cfg).await.unwrap();
    sql(
        &engine,
        &format!("CREATE TABLE {name} {columns} WITH (TYPE = 'SHARED')"),
    )
    .await;
    (
        engine,
        TableId::new(NamespaceId::public(), TableName::parse(name).unwrap()),
    )
}

/// A flush leaves no version of the rows it moved in RocksDB, memtable included: a
/// lookup of a cold key passes over nothing hot. Rows written after the flush stay
/// hot, and every row still reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_versions_leave_the_hot_store() {
    use crate::context::ExecContext;
    use crate::write::mutate::ConflictAction;
    use kalamdb_storage::hot_store::Partition;
    let dir = tempfile::tempdir().unwrap();
    let (engine, id) = engine_with_table(dir.path(), "h", "(id BIGINT PRIMARY KEY, v INT)").await;
    let part = Partition::table(engine.catalog.resolve(&id).unwrap().uid.0);
    let ctx = ExecContext::system();
    let rows = |from: i64, to: i64| -> Vec<Vec<(ColumnName, Value)>> {
        (from..to)
            .map(|i| {
                vec![
                    (ColumnName::parse("id").unwrap(), Value::BigInt(i)),
                    (ColumnName::parse("v").unwrap(), Value::Int(i as i32)),
                ]
            })
            .collect()
    };
    engine
        .insert(&ctx, &id, rows(0, 5000), ConflictAction::Error)
        .await
        .unwrap();
    assert_eq!(engine.store.stored_versions(&part).unwrap(), 5000);
    flush(&engine, "h").await;
    assert_eq!(engine.store.stored_versions(&part).unwrap(), 0);
    engine
        .insert(&ctx, &id, rows(5000, 5010), ConflictAction::Error)
        .await
        .unwrap();
    sql(&engine, "UPDATE h SET v = -1 WHERE id = 7").await;
    assert_eq!(engine.store.stored_versions(&part).unwrap(), 11);
    for (k, v) in [(0i64, 0), (7, -1), (4999, 4999), (5009, 5009)] {
        let got = engine.get_by_pk(&ctx, &id, &Pk::one(Value::BigInt(k))).await.unwrap();
        assert_eq!(got.rows[0].1[1], Value::Int(v), "key {k}");
    }
    let r = sql(&engine, "SELECT count(*) FROM h").await;
    assert_eq!(r[0][0], serde_json::json!(5010));
}

/// A segment of several row groups is streamed in pieces beside a segment read
/// ahead to drop the versions hot rows shadow, and beside the hot rows: SQL over the
/// merged tiers agrees with a model of the rows, whole, filtered, aggregated, and
/// with `_seq`; the plan shows which partitions streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_segments_stream_beside_shadowed_ones_and_agree_with_the_rows() {
    use crate::types::Value;
    use crate::write::mutate::ConflictAction;
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let (engine, id) = engine_with_table(dir.path(), "s", "(id BIGINT PRIMARY KEY, v INT, w TEXT)").await;
    let name = |n: &str| crate::ids::ColumnName::parse(n).unwrap();
    let mut model: BTreeMap<i64, (i64, String)> = BTreeMap::new();
    // segment A: 40,000 keys (three row groups); segment B: 30,000 keys past them
    for (from, to) in [(0i64, 40_000i64), (100_000, 130_000)] {
        for start in (from..to).step_by(10_000) {
            let rows = (start..start + 10_000)
                .map(|i| {
                    model.insert(i, (i % 97, format!("w{}", i % 13)));
                    vec![
                        (name("id"), Value::BigInt(i)),
                        (name("v"), Value::Int((i % 97) as i32)),
                        (name("w"), Value::Text(format!("w{}", i % 13))),
                    ]
                })
                .collect();
            let ctx = crate::context::ExecContext::system();
            engine.insert(&ctx, &id, rows, ConflictAction::Error).await.unwrap();
        }
        flush(&engine, "s").await;
    }
    // hot versions inside A's key range: A is read ahead, B streams
    sql(&engine, "UPDATE s SET v = 1000 WHERE id >= 5 AND id <= 20").await;
    sql(&engine, "DELETE FROM s WHERE id = 39999").await;
    for i in 5..=20 {
        model.get_mut(&i).unwrap().0 = 1000;
    }
    model.remove(&39999);

    let table = engine.catalog.resolve(&id).unwrap();
    let provider = TieredTableProvider::new(
        engine.store.clone(),
        engine.cold.clone(),
        table,
        kalamdb_auth::identity::UserId::parse("root").unwrap(),
    );
    let state = datafusion::prelude::SessionContext::new().state();
    let plan = provider.scan(&state, None, &[], None).await.unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .one_line()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let streamed = cores.min(2);
    assert!(shown.contains(&format!("streamed={streamed}")), "{shown}");

    let n = model.len() as i64;
    let sum: i64 = model.values().map(|(v, _)| v).sum();
    let big = model.values().filter(|(v, _)| *v > 50).count() as i64;
    let r = sql(
        &engine,
        "SELECT count(*), sum(v), min(id), max(id), count(DISTINCT _seq) FROM s",
    )
    .await;
    assert_eq!(
        r[0],
        [
            serde_json::json!(n),
            serde_json::json!(sum),
            serde_json::json!(0),
            serde_json::json!(129_999),
            serde_json::json!(n)
        ]
    );
    let r = sql(&engine, "SELECT count(*) FROM s WHERE v > 50").await;
    assert_eq!(r[0][0], serde_json::json!(big));
    let r = sql(&engine, "SELECT id, v, w FROM s ORDER BY id").await;
    let want: Vec<Vec<serde_json::Value>> = model
        .iter()
        .map(|(k, (v, w))| vec![serde_json::json!(k), serde_json::json!(v), serde_json::json!(w)])
        .collect();
    assert_eq!(r.len(), want.len());
    assert!(r == want, "rows differ");
}
