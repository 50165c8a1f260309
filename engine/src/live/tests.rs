//! Tests of the live-query hub: changes reach the subscriptions of their partition only.

use super::*;
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
