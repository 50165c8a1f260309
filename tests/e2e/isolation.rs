use kalamdb_tests::{TestServer, pw, rows};
use serde_json::json;

/// Rows of user A never reach user B: not through SELECT, UPDATE, DELETE, ON CONFLICT,
/// nor by guessing primary keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_rows_are_isolated() {
    let s = TestServer::start().await;
    s.user("alice", "user").await;
    s.user("bob", "user").await;
    s.user("svc", "service").await;
    s.root("CREATE TABLE todos (id INT PRIMARY KEY, title TEXT) WITH (TYPE = 'USER')")
        .await;
    s.ok_as("alice", "INSERT INTO todos VALUES (1, 'alice-1'), (2, 'alice-2')")
        .await;

    // bob sees nothing, even by key
    let r = s.ok_as("bob", "SELECT * FROM todos").await;
    assert!(rows(&r).is_empty());
    let r = s.ok_as("bob", "SELECT * FROM todos WHERE id = 1").await;
    assert!(rows(&r).is_empty());
    let r = s
        .ok_as("bob", "SELECT count(*) FROM todos WHERE id IN (1, 2) OR id > 0")
        .await;
    assert_eq!(rows(&r), vec![vec![json!(0)]]);
    // bob's writes only touch bob's rows
    assert_eq!(
        s.ok_as("bob", "UPDATE todos SET title = 'hacked' WHERE id = 1").await["affected_rows"],
        0
    );
    assert_eq!(s.ok_as("bob", "DELETE FROM todos").await["affected_rows"], 0);
    // the same key is a separate row for bob; ON CONFLICT never reaches alice's row
    s.ok_as(
        "bob",
        "INSERT INTO todos VALUES (1, 'bob-1') ON CONFLICT (id) DO UPDATE SET title = 'bob-upsert'",
    )
    .await;
    s.ok_as(
        "bob",
        "INSERT INTO todos VALUES (1, 'bob-again') ON CONFLICT (id) DO UPDATE SET title = 'bob-upsert'",
    )
    .await;
    let r = s.ok_as("bob", "SELECT id, title FROM todos").await;
    assert_eq!(rows(&r), vec![vec![json!(1), json!("bob-upsert")]]);
    let r = s.ok_as("alice", "SELECT id, title FROM todos ORDER BY id").await;
    assert_eq!(
        rows(&r),
        vec![vec![json!(1), json!("alice-1")], vec![json!(2), json!("alice-2")]]
    );

    // a service acting as alice sees alice's rows; a plain user may not act as anyone
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .header("authorization", kalamdb_tests::basic("svc", &pw("svc")))
        .header("x-kalamdb-user-id", "alice")
        .json(&json!({"sql": "SELECT count(*) FROM todos"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(rows(&body), vec![vec![json!(2)]]);
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .header("authorization", kalamdb_tests::basic("bob", &pw("bob")))
        .header("x-kalamdb-user-id", "alice")
        .json(&json!({"sql": "SELECT count(*) FROM todos"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    s.stop().await;
}
