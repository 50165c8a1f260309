//! Index reads against full scans: the same rows in the same order, and the same
//! aggregates, for random filters, orders and pages, with rows in both tiers.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::context::ExecContext;
use crate::engine::{Engine, EngineConfig};
use crate::ids::{ColumnName, NamespaceId, TableId, TableName};
use crate::read::filter::{CmpOp, Filter, OrderKey};
use crate::read::select::{AggFn, Aggregate, AggregateRequest, SelectRequest};

const WORDS: [&str; 6] = ["apple", "banana", "", "cherry", "a\0b", "zed"];

fn col(n: &str) -> ColumnName {
    ColumnName::parse(n).unwrap()
}

fn value(rng: &mut StdRng, c: &str) -> Value {
    match c {
        "id" | "a" => Value::Int(rng.random_range(-5..40)),
        "b" => Value::Text(WORDS[rng.random_range(0..WORDS.len())].to_string()),
        // no -0.0: the in-memory filter and DataFusion do not agree on it yet (the
        // query-semantics issue), with or without an index
        "c" => Value::Double([-1.5, -0.5, 0.0, 0.25, 2.0, 10.0][rng.random_range(0..6)]),
        _ => Value::Boolean(rng.random_bool(0.5)),
    }
}

fn condition(rng: &mut StdRng) -> Filter {
    let c = ["a", "b", "c", "d", "id"][rng.random_range(0..5)];
    match rng.random_range(0..6) {
        0..=2 => Filter::Compare {
            column: col(c),
            op: [
                CmpOp::Eq,
                CmpOp::Eq,
                CmpOp::Gt,
                CmpOp::Gte,
                CmpOp::Lt,
                CmpOp::Lte,
                CmpOp::Neq,
            ][rng.random_range(0..7)],
            value: value(rng, c),
        },
        3 => Filter::In {
            column: col(c),
            values: (0..rng.random_range(0..4)).map(|_| value(rng, c)).collect(),
            negated: rng.random_bool(0.2),
        },
        4 => Filter::IsNull {
            column: col(c),
            is_null: rng.random_bool(0.5),
        },
        _ => Filter::Or(vec![condition(rng), condition(rng)]),
    }
}

fn request(rng: &mut StdRng) -> SelectRequest {
    let filter = match rng.random_range(0..10) {
        0 => None,
        _ => Some(Filter::And(
            (0..rng.random_range(1..4)).map(|_| condition(rng)).collect(),
        )),
    };
    let order_by = (0..rng.random_range(0..3))
        .map(|_| OrderKey {
            column: col(["a", "b", "c", "d", "id"][rng.random_range(0..5)]),
            descending: rng.random_bool(0.5),
            nulls_first: [None, Some(true), Some(false)][rng.random_range(0..3)],
        })
        .collect();
    SelectRequest {
        filter,
        order_by,
        limit: rng.random_bool(0.6).then(|| rng.random_range(0..25)),
        offset: if rng.random_bool(0.3) {
            rng.random_range(0..5)
        } else {
            0
        },
    }
}

async fn sql(engine: &Engine, ctx: &ExecContext, q: &str) -> crate::sql::result::SqlResult {
    engine
        .execute_sql(ctx, q, &[])
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
}

async fn wait_jobs(engine: &Engine) {
    for _ in 0..4000 {
        if engine.jobs.list().iter().all(|j| !j.status.is_active()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("jobs did not finish");
}

/// Compares the indexed table `p` with its unindexed twin `q` for many random
/// requests; returns how many of them an index answered.
async fn compare(engine: &Engine, ctx: &ExecContext, rng: &mut StdRng, stage: &str) -> usize {
    let ns = NamespaceId::public();
    let p = TableId::new(ns.clone(), TableName::parse("p").unwrap());
    let q = TableId::new(ns, TableName::parse("q").unwrap());
    let values = |rows: Vec<crate::engine::Row>| rows.into_iter().map(|r| r.1).collect::<Vec<_>>();
    let (mut used, mut covered) = (0, 0);
    for _ in 0..300 {
        let req = request(rng);
        let a = engine.select(ctx, &p, &req).await.map(|r| values(r.rows));
        let b = engine.select(ctx, &q, &req).await.map(|r| values(r.rows));
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{stage}: {req:?}"),
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{stage}: {req:?}"),
            (a, b) => panic!("{stage}: {req:?}: {a:?} vs {b:?}"),
        }
        let def = engine.catalog.resolve(&p).unwrap();
        let bound = req
            .filter
            .as_ref()
            .map(|f| f.bind(&def, engine.filter_limits()).unwrap());
        let user = def.table_type.is_per_user().then(|| ctx.subject());
        let conds = plan::from_filter(bound.as_ref());
        used += usize::from(plan::choose(&def, user, &conds, &[], false).unwrap().is_some());

        let agg = AggregateRequest {
            filter: req.filter.clone(),
            group_by: if rng.random_bool(0.5) { vec![col("b")] } else { vec![] },
            aggregates: vec![
                Aggregate {
                    func: AggFn::Count,
                    column: None,
                },
                Aggregate {
                    func: AggFn::Count,
                    column: Some(col("c")),
                },
                Aggregate {
                    func: AggFn::Sum,
                    column: Some(col("a")),
                },
                Aggregate {
                    func: AggFn::Min,
                    column: Some(col("b")),
                },
                Aggregate {
                    func: AggFn::Max,
                    column: Some(col("a")),
                },
                Aggregate {
                    func: AggFn::CountDistinct,
                    column: Some(col("d")),
                },
            ],
        };
        let a = engine.aggregate(ctx, &p, &agg).await.unwrap();
        let b = engine.aggregate(ctx, &q, &agg).await.unwrap();
        assert_eq!(a, b, "{stage}: aggregate {agg:?}");
        // a bare count: the index's entries alone answer it when they select exactly
        let count = AggregateRequest {
            filter: req.filter.clone(),
            group_by: vec![],
            aggregates: vec![Aggregate {
                func: AggFn::Count,
                column: None,
            }],
        };
        let a = engine.aggregate(ctx, &p, &count).await.unwrap();
        let b = engine.aggregate(ctx, &q, &count).await.unwrap();
        assert_eq!(a, b, "{stage}: count {count:?}");
        if let (Some(f), Some(c)) = (&bound, plan::choose(&def, user, &conds, &[], false).unwrap()) {
            covered += usize::from(plan::fully_covered(f, &c));
        }
    }
    assert!(
        covered > 10,
        "{stage}: only {covered} counts were answered by entries alone"
    );
    used
}

/// Rows written before and after the indexes exist, moved to segments, updated and
/// deleted there, compacted: through an index, every answer stays that of a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_reads_match_full_scans_in_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.bcrypt_cost = 4;
    cfg.default_flush_policy = None;
    let engine: Arc<Engine> = Engine::open(cfg).await.unwrap();
    let root = ExecContext::system();
    for t in ["p", "q"] {
        sql(
            &engine,
            &root,
            &format!(
                "CREATE TABLE {t} (id INT PRIMARY KEY, a INT, b TEXT, c DOUBLE, d BOOLEAN) WITH (TYPE = 'SHARED')"
            ),
        )
        .await;
    }
    let mut rng = StdRng::seed_from_u64(22);
    let mut insert = |from: i32, to: i32| {
        let rows: Vec<String> = (from..to)
            .map(|i| {
                let mut v = |c: &str| {
                    if rng.random_bool(0.15) {
                        "NULL".to_string()
                    } else {
                        match value(&mut rng, c) {
                            Value::Text(s) => format!("'{}'", s.replace('\0', "")),
                            Value::Double(d) => format!("{d:?}"),
                            other => other.to_string(),
                        }
                    }
                };
                format!("({i}, {}, {}, {}, {})", v("a"), v("b"), v("c"), v("d"))
            })
            .collect();
        rows.join(", ")
    };
    let first = insert(0, 400);
    let second = insert(400, 700);
    for t in ["p", "q"] {
        sql(&engine, &root, &format!("INSERT INTO {t} VALUES {first}")).await;
    }
    // two indexes built over existing rows, two maintained from the start
    for ix in ["CREATE INDEX pa ON p (a)", "CREATE INDEX pbd ON p (b DESC, a)"] {
        sql(&engine, &root, ix).await;
    }
    wait_jobs(&engine).await;
    for ix in ["CREATE INDEX pc ON p (c)", "CREATE INDEX pd ON p (d, id DESC)"] {
        sql(&engine, &root, ix).await;
    }
    wait_jobs(&engine).await;
    let shown = sql(&engine, &root, "SHOW INDEXES ON p").await;
    assert_eq!(shown.rows.len(), 4);
    assert!(shown.rows.iter().all(|r| r[5] == "ready"), "{:?}", shown.rows);
    let used = compare(&engine, &root, &mut rng, "hot").await;
    assert!(used > 100, "an index answered only {used} requests");

    for t in ["p", "q"] {
        sql(&engine, &root, &format!("INSERT INTO {t} VALUES {second}")).await;
    }
    sql(&engine, &root, "FLUSH TABLE p").await;
    wait_jobs(&engine).await;
    compare(&engine, &root, &mut rng, "flushed").await;

    // rows of the segment move between index keys and go
    for t in ["p", "q"] {
        sql(
            &engine,
            &root,
            &format!("UPDATE {t} SET a = a + 7, b = 'moved' WHERE id % 5 = 0"),
        )
        .await;
        sql(&engine, &root, &format!("DELETE FROM {t} WHERE id % 7 = 0")).await;
        sql(
            &engine,
            &root,
            &format!("UPDATE {t} SET c = NULL, d = true WHERE id % 11 = 0"),
        )
        .await;
    }
    compare(&engine, &root, &mut rng, "updated in both tiers").await;
    sql(&engine, &root, "FLUSH TABLE p").await;
    wait_jobs(&engine).await;
    sql(&engine, &root, "COMPACT TABLE p").await;
    wait_jobs(&engine).await;
    compare(&engine, &root, &mut rng, "compacted").await;

    // SQL through DataFusion reads by index, and says so
    let plan = sql(&engine, &root, "EXPLAIN SELECT count(*) FROM p WHERE a = 3").await;
    assert!(format!("{:?}", plan.rows).contains("index=pa"), "{:?}", plan.rows);
    let a = sql(
        &engine,
        &root,
        "SELECT id, a, b FROM p WHERE b = 'moved' AND a > 10 ORDER BY id",
    )
    .await;
    let b = sql(
        &engine,
        &root,
        "SELECT id, a, b FROM q WHERE b = 'moved' AND a > 10 ORDER BY id",
    )
    .await;
    assert!(!a.rows.is_empty());
    assert_eq!(a.rows, b.rows);
}

#[test]
fn values_sort_with_nulls_last_ascending_and_first_descending() {
    let enc = |v: &Value, desc: bool| {
        let mut out = vec![];
        push_value(&mut out, v, desc).unwrap();
        out
    };
    let vals = [
        Value::Text(String::new()),
        Value::Text("a".into()),
        Value::Text("a\0".into()),
        Value::Text("b".into()),
        Value::Null,
    ];
    let asc: Vec<Vec<u8>> = vals.iter().map(|v| enc(v, false)).collect();
    assert!(asc.windows(2).all(|w| w[0] < w[1]), "{asc:?}");
    let desc: Vec<Vec<u8>> = vals.iter().map(|v| enc(v, true)).collect();
    assert!(desc.windows(2).all(|w| w[0] > w[1]), "{desc:?}");
    // a composite stays ordered by its first part whatever follows
    let mut a = enc(&Value::Text("a".into()), true);
    a.extend(enc(&Value::BigInt(i64::MIN), false));
    let mut b = enc(&Value::Text("ab".into()), true);
    b.extend(enc(&Value::BigInt(i64::MAX), false));
    assert!(a > b);
    let ints = [Value::BigInt(-5), Value::BigInt(0), Value::BigInt(7), Value::Null];
    let e: Vec<Vec<u8>> = ints.iter().map(|v| enc(v, false)).collect();
    assert!(e.windows(2).all(|w| w[0] < w[1]));
}
