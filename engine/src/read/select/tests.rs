//! Tests of the typed select: the direct path against DataFusion, and the row cache.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::engine::EngineConfig;
use crate::read::filter::CmpOp;
use crate::read::pattern::{PatternKind, TextPattern};
use crate::write::mutate::ConflictAction;
use kalamdb_auth::identity::{Role, UserId};

const WORDS: [&str; 9] = [
    "apple", "Banana", "cherry", "date", "Éclair", "fig", "grape", "", "a_b%c",
];

async fn open_engine() -> (tempfile::TempDir, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.bcrypt_cost = 4;
    let engine = Engine::open(cfg).await.unwrap();
    (dir, engine)
}

fn col(n: &str) -> ColumnName {
    ColumnName::parse(n).unwrap()
}

fn random_value(rng: &mut StdRng, column: &str) -> Value {
    match column {
        "id" | "a" => Value::Int(rng.random_range(-5..40)),
        "b" => Value::Text(WORDS[rng.random_range(0..WORDS.len())].to_string()),
        "c" => Value::Double([-1.5, 0.0, 0.25, 2.0, 3.75, 10.0][rng.random_range(0..6)]),
        "d" => Value::Boolean(rng.random_bool(0.5)),
        _ => Value::Timestamp(1_700_000_000_000_000 + rng.random_range(0..5) * 1_000_000),
    }
}

fn random_filter(rng: &mut StdRng, depth: usize) -> Filter {
    let columns = ["id", "a", "b", "c", "d", "e", "_seq"];
    if depth < 3 && rng.random_bool(0.35) {
        let n = rng.random_range(0..3);
        let parts = (0..n).map(|_| random_filter(rng, depth + 1)).collect();
        return match rng.random_range(0..3) {
            0 => Filter::And(parts),
            1 => Filter::Or(parts),
            _ => Filter::Not(Box::new(random_filter(rng, depth + 1))),
        };
    }
    let c = columns[rng.random_range(0..columns.len())];
    let value = |rng: &mut StdRng| {
        if c == "_seq" {
            Value::BigInt(rng.random_range(0..i64::MAX))
        } else {
            random_value(rng, c)
        }
    };
    match rng.random_range(0..5) {
        0 | 1 => {
            let op = [CmpOp::Eq, CmpOp::Neq, CmpOp::Gt, CmpOp::Gte, CmpOp::Lt, CmpOp::Lte][rng.random_range(0..6)];
            Filter::Compare {
                column: col(c),
                op,
                value: value(rng),
            }
        }
        2 => Filter::In {
            column: col(c),
            values: (0..rng.random_range(0..4)).map(|_| value(rng)).collect(),
            negated: rng.random_bool(0.3),
        },
        3 => Filter::IsNull {
            column: col(c),
            is_null: rng.random_bool(0.5),
        },
        _ => {
            let (kind, patterns): (PatternKind, &[&str]) = if rng.random_bool(0.5) {
                (PatternKind::Like, &["a%", "%an%", "_i%", "%E%", "%", "a\\_b%", "%a%a%"])
            } else {
                (
                    PatternKind::Regex,
                    &["^a", "an", "^.i", "E", "", "a_b", "a.*a", "^[a-c]+$", "n$"],
                )
            };
            Filter::Match {
                column: col("b"),
                pattern: TextPattern {
                    kind,
                    pattern: patterns[rng.random_range(0..patterns.len())].to_string(),
                    case_insensitive: rng.random_bool(0.5),
                },
                negated: rng.random_bool(0.3),
            }
        }
    }
}

/// The direct path and the DataFusion plan give identical rows, in the same order,
/// for random filters (three-valued logic included), orders and pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_matches_datafusion() {
    let (_dir, engine) = open_engine().await;
    let root = ExecContext::system();
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, b TEXT, c DOUBLE, d BOOLEAN, e TIMESTAMP) WITH (TYPE = 'SHARED')",
        "CREATE TABLE u (id INT PRIMARY KEY, a INT, b TEXT, c DOUBLE, d BOOLEAN, e TIMESTAMP) WITH (TYPE = 'USER')",
        "CREATE USER ann WITH PASSWORD 'ann-password' ROLE user",
        "CREATE USER bob WITH PASSWORD 'bob-password' ROLE user",
    ] {
        engine.execute_sql(&root, sql, &[]).await.unwrap();
    }
    let mut rng = StdRng::seed_from_u64(7);
    let public = crate::ids::NamespaceId::public();
    let t = TableId::new(public.clone(), crate::ids::TableName::parse("t").unwrap());
    let u = TableId::new(public, crate::ids::TableName::parse("u").unwrap());
    let ann = ExecContext::new(UserId::parse("ann").unwrap(), Role::User);
    let bob = ExecContext::new(UserId::parse("bob").unwrap(), Role::User);
    for (ctx, table, n) in [(&root, &t, 300), (&ann, &u, 120), (&bob, &u, 80)] {
        let rows: Vec<Vec<(ColumnName, Value)>> = (0..n)
            .map(|i| {
                let mut r = vec![(col("id"), Value::Int(i))];
                for c in ["a", "b", "c", "d", "e"] {
                    if !rng.random_bool(0.2) {
                        r.push((col(c), random_value(&mut rng, c)));
                    }
                }
                r
            })
            .collect();
        engine.insert(ctx, table, rows, ConflictAction::Error).await.unwrap();
    }
    let columns = ["id", "a", "b", "c", "d", "e", "_seq"];
    let mut non_empty = 0;
    for i in 0..400 {
        let (ctx, table) = match i % 3 {
            0 => (&ann, &u),
            _ => (&root, &t),
        };
        let order_by = (0..rng.random_range(0..3))
            .map(|_| OrderKey {
                column: col(columns[rng.random_range(0..columns.len())]),
                descending: rng.random_bool(0.5),
                nulls_first: [None, Some(true), Some(false)][rng.random_range(0..3)],
            })
            .collect();
        let req = SelectRequest {
            filter: rng.random_bool(0.9).then(|| random_filter(&mut rng, 0)),
            order_by,
            limit: rng.random_bool(0.5).then(|| rng.random_range(0..30)),
            offset: if rng.random_bool(0.3) {
                rng.random_range(0..10)
            } else {
                0
            },
        };
        let direct = engine.select(ctx, table, &req).await;
        let planned = engine.select_datafusion(ctx, table, &req).await;
        match (direct, planned) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.rows, b.rows, "request {req:?}");
                // asked again and again, the cached partition's rows are sorted in
                // that order and walked (after at most 9 scans of 300 rows)
                for n in 0..10 {
                    let again = engine.select(ctx, table, &req).await.unwrap();
                    assert_eq!(again.rows, b.rows, "request {req:?} asked again ({n})");
                }
                non_empty += usize::from(!a.rows.is_empty());
            }
            (a, b) => panic!(
                "request {req:?}: {:?} vs {:?}",
                a.map(|r| r.rows.len()),
                b.map(|r| r.rows.len())
            ),
        }
    }
    assert!(non_empty > 100, "too few requests matched anything: {non_empty}");
    // per-user isolation holds on both paths
    let all = SelectRequest::default();
    assert_eq!(engine.select(&bob, &u, &all).await.unwrap().rows.len(), 80);
    assert_eq!(engine.select_datafusion(&bob, &u, &all).await.unwrap().rows.len(), 80);
}

/// Reads served from the row cache see every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_partitions_see_every_write() {
    let (_dir, engine) = open_engine().await;
    let root = ExecContext::system();
    engine
        .execute_sql(
            &root,
            "CREATE TABLE c (id INT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')",
            &[],
        )
        .await
        .unwrap();
    let t = TableId::new(
        crate::ids::NamespaceId::public(),
        crate::ids::TableName::parse("c").unwrap(),
    );
    let by_v = SelectRequest {
        order_by: vec![OrderKey {
            column: col("v"),
            descending: true,
            nulls_first: None,
        }],
        ..SelectRequest::default()
    };
    // a partition is scanned, then served from the cache, then (these partitions
    // are tiny) sorted in the order asked for and walked: three reads that agree
    let values = async |engine: &Engine| {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let rows = engine.select(&root, &t, &by_v).await.unwrap();
            seen.push(rows.rows.into_iter().map(|r| r.1[1].clone()).collect::<Vec<_>>());
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
        seen.swap_remove(0)
    };
    let text = |s: &str| Value::Text(s.to_string());
    for i in 0..3 {
        let row = vec![(col("id"), Value::Int(i)), (col("v"), text(&format!("v{i}")))];
        engine
            .insert(&root, &t, vec![row], ConflictAction::Error)
            .await
            .unwrap();
        assert_eq!(values(&engine).await.len(), i as usize + 1);
    }
    engine
        .update_by_pk(
            &root,
            &t,
            &Pk::one(Value::Int(0)),
            &[(col("v"), crate::write::mutate::Assign::Set(text("z")))],
        )
        .await
        .unwrap();
    assert_eq!(values(&engine).await, vec![text("z"), text("v2"), text("v1")]);
    engine.delete_by_pk(&root, &t, &Pk::one(Value::Int(2))).await.unwrap();
    assert_eq!(values(&engine).await, vec![text("z"), text("v1")]);
    engine
        .execute_sql(&root, "ALTER TABLE c ADD COLUMN w INT DEFAULT 5", &[])
        .await
        .unwrap();
    let rows = engine.select(&root, &t, &by_v).await.unwrap();
    assert_eq!(rows.rows[0].1.len(), 3, "rows are decoded under the new schema");
}
