//! Tests of the live-query hub: changes reach the subscriptions of their partition only.

use super::*;
use crate::engine::Row;
use crate::read::select::SelectRequest;
use kalamdb_auth::identity::Role;

use crate::ids::{ColumnName, NamespaceId, TableName};
use crate::live::changelog::ChangeKind;
use crate::read::filter::CmpOp;
use crate::testing::engine_with;
use crate::types::Value;

/// The changes a feed has now, as (kind, key) pairs.
/// The changes a feed delivers until it has `n` (they reach it from the dispatcher
/// thread, after the writes were acknowledged) and nothing more is queued; gives up
/// waiting after five seconds.
async fn taken(feed: &mut ChangeFeed, n: usize) -> Vec<(ChangeKind, Value)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        while let Some(batch) = feed.take().await.unwrap() {
            let FeedBatch::Changes(changes) = batch else {
                panic!("no snapshot was asked for");
            };
            for c in changes {
                let row = c.new.as_ref().or(c.old.as_ref()).unwrap();
                out.push((c.kind, row[0].clone()));
            }
        }
        if out.len() >= n || tokio::time::timeout_at(deadline, feed.ready()).await.is_err() {
            return out;
        }
    }
}

/// A feed hears the changes of its partition whose old or new row matches its
/// filter (a row leaving the filter is still news), and nothing of other users'
/// partitions.
#[tokio::test]
async fn feeds_hear_matching_changes_of_their_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE NAMESPACE app",
            "CREATE TABLE app.todos (id INT PRIMARY KEY, done BOOLEAN) WITH (TYPE = 'USER')",
            "CREATE USER ann WITH PASSWORD 'ann-password' ROLE user",
            "CREATE USER bob WITH PASSWORD 'bob-password' ROLE user",
        ],
    )
    .await;
    let as_user = |name: &str| ExecContext::new(UserId::parse(name).unwrap(), Role::User);
    let (ann, bob) = (as_user("ann"), as_user("bob"));
    let table = TableId::new(NamespaceId::parse("app").unwrap(), TableName::parse("todos").unwrap());
    let open_only = Filter::Compare {
        column: ColumnName::parse("done").unwrap(),
        op: CmpOp::Eq,
        value: Value::Boolean(false),
    };
    let mut open_feed = engine
        .subscribe_changes(&ann, &table, Some(&open_only), FeedStart::default(), "open".into())
        .unwrap();
    let mut all_feed = engine
        .subscribe_changes(&ann, &table, None, FeedStart::default(), "all".into())
        .unwrap();
    for (ctx, sql) in [
        (&ann, "INSERT INTO app.todos (id, done) VALUES (1, false), (2, true)"),
        (&bob, "INSERT INTO app.todos (id, done) VALUES (3, false)"),
        (&ann, "UPDATE app.todos SET done = true WHERE id = 1"),
        (&ann, "UPDATE app.todos SET done = true WHERE id = 2"),
        (&ann, "DELETE FROM app.todos WHERE id = 2"),
    ] {
        engine.execute_sql(ctx, sql, &[]).await.unwrap();
    }
    let one = Value::Int(1);
    let two = Value::Int(2);
    assert_eq!(
        taken(&mut open_feed, 2).await,
        [(ChangeKind::Insert, one.clone()), (ChangeKind::Update, one.clone())],
    );
    assert_eq!(
        taken(&mut all_feed, 5).await,
        [
            (ChangeKind::Insert, one.clone()),
            (ChangeKind::Insert, two.clone()),
            (ChangeKind::Update, one),
            (ChangeKind::Update, two.clone()),
            (ChangeKind::Delete, two),
        ],
    );
}

/// A small deterministic generator, so that a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn col(name: &str) -> ColumnName {
    ColumnName::parse(name).unwrap()
}

fn cmp(column: &str, op: CmpOp, value: Value) -> Filter {
    Filter::Compare {
        column: col(column),
        op,
        value,
    }
}

fn order(column: &str, descending: bool, nulls_first: Option<bool>) -> crate::read::filter::OrderKey {
    crate::read::filter::OrderKey {
        column: col(column),
        descending,
        nulls_first,
    }
}

/// The live queries of the randomized test: filters that an index serves and that it
/// does not, orders with ties and nulls, limits with and without offsets, no limit.
fn live_requests() -> Vec<SelectRequest> {
    use crate::read::pattern::{PatternKind, TextPattern};
    vec![
        SelectRequest {
            filter: Some(cmp("g", CmpOp::Eq, Value::Int(3))),
            order_by: vec![order("v", true, None)],
            limit: Some(4),
            offset: 0,
        },
        SelectRequest {
            filter: Some(cmp("v", CmpOp::Gt, Value::Int(50))),
            order_by: vec![order("s", false, None)],
            limit: Some(3),
            offset: 2,
        },
        SelectRequest {
            filter: None,
            order_by: vec![order("id", true, None)],
            limit: Some(5),
            offset: 0,
        },
        SelectRequest {
            filter: Some(Filter::Or(vec![
                Filter::In {
                    column: col("g"),
                    values: vec![Value::Int(1), Value::Int(2)],
                    negated: false,
                },
                Filter::IsNull {
                    column: col("s"),
                    is_null: true,
                },
            ])),
            order_by: vec![],
            limit: None,
            offset: 0,
        },
        SelectRequest {
            filter: Some(Filter::Match {
                column: col("s"),
                pattern: TextPattern {
                    kind: PatternKind::Like,
                    pattern: "a%".into(),
                    case_insensitive: false,
                },
                negated: false,
            }),
            order_by: vec![order("v", false, Some(true))],
            limit: Some(2),
            offset: 0,
        },
        SelectRequest {
            filter: Some(Filter::And(vec![
                cmp("g", CmpOp::Eq, Value::Int(1)),
                cmp("v", CmpOp::Lt, Value::Int(30)),
            ])),
            order_by: vec![order("id", false, None)],
            limit: Some(1),
            offset: 0,
        },
    ]
}

/// One random write statement on `table`.
fn random_write(rng: &mut Lcg, table: &str) -> String {
    let id = rng.below(40);
    let g = rng.below(5);
    let v = match rng.below(8) {
        0 => "NULL".to_string(),
        _ => rng.below(100).to_string(),
    };
    let s = ["'a'", "'ab'", "'b'", "'c'", "NULL"][rng.below(5) as usize];
    match rng.below(20) {
        0..=8 => format!(
            "INSERT INTO {table} (id, g, v, s) VALUES ({id}, {g}, {v}, {s}) \
             ON CONFLICT (id) DO UPDATE SET g = EXCLUDED.g, v = EXCLUDED.v, s = EXCLUDED.s"
        ),
        9..=12 => format!("UPDATE {table} SET v = {v}, s = {s} WHERE id = {id}"),
        13..=15 => format!("DELETE FROM {table} WHERE id = {id}"),
        16 => format!("DELETE FROM {table} WHERE g = {g} AND id > {id}"),
        17 => format!("UPDATE {table} SET v = v + 7 WHERE g = {g}"),
        _ => format!(
            "INSERT INTO {table} (id, g, v, s) VALUES ({id}, {g}, {v}, {s}), ({}, {g}, 99, 'ab') \
             ON CONFLICT (id) DO NOTHING",
            (id + 17) % 40
        ),
    }
}

/// Live queries (filters, orders, limits, offsets) over a SHARED table with an index
/// and over a user's partition of a USER table, checked after every write against a
/// fresh select of the same request: each result they push is the fresh one, and
/// after every write their latest result is, over hot and flushed rows, with
/// inserts, updates, deletes, multi-row statements, other users' writes and flushes
/// interleaved, and with a queue small enough to overflow now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_queries_equal_a_fresh_select_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::engine::EngineConfig::new(dir.path());
    cfg.bcrypt_cost = 4;
    cfg.default_flush_policy = None;
    cfg.live_queue_capacity = 12;
    let engine = Engine::open(cfg).await.unwrap();
    for s in [
        "CREATE NAMESPACE app",
        "CREATE TABLE app.items (id INT PRIMARY KEY, g INT NOT NULL, v INT, s TEXT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
        "CREATE INDEX items_g ON app.items (g)",
        "CREATE TABLE app.mine (id INT PRIMARY KEY, g INT NOT NULL, v INT, s TEXT) WITH (TYPE = 'USER')",
        "CREATE USER ann WITH PASSWORD 'ann-password' ROLE user",
        "CREATE USER bob WITH PASSWORD 'bob-password' ROLE user",
    ] {
        crate::testing::sql_rows(&engine, s).await;
    }
    let as_user = |name: &str| ExecContext::new(UserId::parse(name).unwrap(), Role::User);
    let (ann, bob, root) = (as_user("ann"), as_user("bob"), ExecContext::system());
    let table = |t: &str| TableId::new(NamespaceId::parse("app").unwrap(), TableName::parse(t).unwrap());
    let mut lives = vec![];
    for t in ["items", "mine"] {
        for req in live_requests() {
            let live = engine
                .subscribe_live(&ann, &table(t), req.clone(), "live".into())
                .unwrap();
            lives.push((table(t), req, live, None::<Vec<Row>>));
        }
    }
    let mut rng = Lcg(0x5eed);
    for step in 0..400 {
        match rng.below(25) {
            0 => crate::testing::flush(&engine, "app.items").await,
            1 => crate::testing::flush(&engine, "app.mine").await,
            n => {
                let (ctx, t) = match n % 3 {
                    0 => (&root, "app.items"),
                    1 => (&ann, "app.mine"),
                    _ => (&bob, "app.mine"),
                };
                let statement = random_write(&mut rng, t);
                engine
                    .execute_sql(ctx, &statement, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
        }
        engine.live.delivered().await;
        for (i, (t, req, live, last)) in lives.iter_mut().enumerate() {
            let fresh = engine.select(&ann, t, req).await.unwrap().rows;
            if let Some(pushed) = live.take().await.unwrap() {
                assert_eq!(
                    pushed.rows, fresh,
                    "step {step}: live query {i} pushed a result a fresh select does not give"
                );
                assert_ne!(
                    last.as_ref(),
                    Some(&pushed.rows),
                    "step {step}: live query {i} pushed an unchanged result"
                );
                *last = Some(pushed.rows);
            }
            assert_eq!(
                last.as_ref(),
                Some(&fresh),
                "step {step}: live query {i} missed a change"
            );
        }
    }
    let stats = engine.live.stats();
    assert!(
        stats.incremental > 300,
        "most changes are applied to windows: {stats:?}"
    );
    assert!(stats.full_reads >= lives.len() as u64, "{stats:?}");
}

/// Live queries that need a whole read of a 1,000,000-row table are evaluated on
/// their own threads: while a hundred of them are reading, another user's inserts are
/// acknowledged within 50 ms each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scan_live_queries_never_hold_up_another_users_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::engine::EngineConfig::new(dir.path());
    cfg.bcrypt_cost = 4;
    cfg.default_flush_policy = None;
    // what is measured is the CPU the reads take from writes; an fsync's own stalls on
    // this disk (the bulk load's flush still writing) would only add noise
    cfg.durability = kalamdb_storage::hot_store::Durability::Async;
    let engine = Engine::open(cfg).await.unwrap();
    for s in [
        "CREATE NAMESPACE app",
        "CREATE TABLE app.big (id BIGINT PRIMARY KEY, v INT NOT NULL) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
        "CREATE TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')",
        "CREATE USER ann WITH PASSWORD 'ann-password' ROLE user",
        "CREATE USER bob WITH PASSWORD 'bob-password' ROLE user",
    ] {
        crate::testing::sql_rows(&engine, s).await;
    }
    let root = ExecContext::system();
    let as_user = |name: &str| ExecContext::new(UserId::parse(name).unwrap(), Role::User);
    let table = |t: &str| TableId::new(NamespaceId::parse("app").unwrap(), TableName::parse(t).unwrap());
    let (id, v) = (col("id"), col("v"));
    for chunk in 0..100i64 {
        let rows = (0..10_000i64)
            .map(|i| {
                let n = chunk * 10_000 + i;
                vec![
                    (id.clone(), Value::BigInt(n)),
                    (v.clone(), Value::Int((n % 1000) as i32)),
                ]
            })
            .collect();
        engine
            .insert(&root, &table("big"), rows, crate::write::mutate::ConflictAction::Error)
            .await
            .unwrap();
    }
    // a filter no index serves, newest first: each result is a whole read
    let ann = as_user("ann");
    let mut readers = vec![];
    for k in 0..100 {
        let req = SelectRequest {
            filter: Some(cmp("v", CmpOp::Eq, Value::Int(k))),
            order_by: vec![order("id", true, None)],
            limit: Some(20),
            offset: 0,
        };
        let mut live = engine.subscribe_live(&ann, &table("big"), req, "scan".into()).unwrap();
        readers.push(tokio::spawn(async move {
            loop {
                live.ready().await;
                if live.take().await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bob = as_user("bob");
    let mut worst = std::time::Duration::ZERO;
    for n in 0..40i64 {
        let started = std::time::Instant::now();
        engine
            .insert(
                &bob,
                &table("notes"),
                vec![vec![
                    (id.clone(), Value::BigInt(n)),
                    (col("body"), Value::Text("hello".into())),
                ]],
                crate::write::mutate::ConflictAction::Error,
            )
            .await
            .unwrap();
        worst = worst.max(started.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stats = engine.live.stats();
    assert!(
        stats.full_reads < 100,
        "the whole reads were still running while bob wrote: {stats:?}"
    );
    assert!(worst < std::time::Duration::from_millis(50), "an insert took {worst:?}");
    readers.iter().for_each(|r| r.abort());
}

/// A window keeps exactly the first rows of its result: a row that sorts past the
/// last one it holds stays out (unread rows may come first), and a window that
/// deletes leave short of its page is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_takes_no_row_past_its_end_and_refills_when_short() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE NAMESPACE app",
            "CREATE TABLE app.n (id INT PRIMARY KEY) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
            "INSERT INTO app.n (id) VALUES (1), (2), (3), (4), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15), (16), (17), (18), (19), (20)",
        ],
    )
    .await;
    let root = ExecContext::system();
    let table = TableId::new(NamespaceId::parse("app").unwrap(), TableName::parse("n").unwrap());
    let req = SelectRequest {
        filter: None,
        order_by: vec![order("id", true, None)],
        limit: Some(2),
        offset: 0,
    };
    let mut live = engine.subscribe_live(&root, &table, req.clone(), "n".into()).unwrap();
    let ids = |rows: &[Row]| rows.iter().map(|(_, v)| v[0].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&live.take().await.unwrap().unwrap().rows),
        [Value::Int(20), Value::Int(19)]
    );
    for (statement, page) in [
        ("DELETE FROM app.n WHERE id IN (20, 19, 18)", [17, 16]),
        // sorts past the window's last row (15): rows 14 down to 6 come first
        ("INSERT INTO app.n (id) VALUES (5)", [17, 16]),
        ("DELETE FROM app.n WHERE id IN (17, 16)", [15, 14]),
        ("DELETE FROM app.n WHERE id IN (15, 14, 13, 12)", [11, 10]),
    ] {
        engine.execute_sql(&root, statement, &[]).await.unwrap();
        engine.live.delivered().await;
        let fresh = engine.select(&root, &table, &req).await.unwrap().rows;
        assert_eq!(ids(&fresh), page.map(Value::Int), "{statement}");
        if let Some(pushed) = live.take().await.unwrap() {
            assert_eq!(pushed.rows, fresh, "{statement}");
        }
    }
    let stats = engine.live.stats();
    assert_eq!((stats.full_reads, stats.incremental), (2, 3), "{stats:?}");
}
