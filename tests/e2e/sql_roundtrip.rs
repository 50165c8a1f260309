use kalamdb_tests::{TestServer, pw, rows};
use serde_json::json;

/// Create, insert, update, delete and select with filters, ORDER BY and LIMIT on one
/// table of each type; the results are compared exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_every_table_type() {
    let s = TestServer::start().await;
    s.user("alice", "service").await;
    s.root("CREATE NAMESPACE shop").await;
    for (name, with) in [
        ("u_items", "TYPE = 'USER'"),
        ("s_items", "TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC'"),
        ("t_items", "TYPE = 'STREAM', TTL_SECONDS = 3600"),
    ] {
        s.root(&format!(
            "CREATE TABLE shop.{name} (id INT PRIMARY KEY, name TEXT NOT NULL, price DOUBLE, qty BIGINT DEFAULT 1, \
             tags JSON, added DATE, at TIMESTAMP DEFAULT NOW(), uid UUID DEFAULT UUID_V7(), owner TEXT DEFAULT CURRENT_USER(), \
             blob BYTES, flag BOOLEAN) WITH ({with})"
        ))
        .await;
        let r = s
            .ok_as(
                "alice",
                &format!(
                    "INSERT INTO shop.{name} (id, name, price, qty, tags, added, blob, flag) VALUES \
                     (1, 'apple', 1.5, 10, '{{\"c\":\"red\"}}', '2024-01-31', 'AAE=', true), \
                     (2, 'pear', 2.25, -3, NULL, NULL, NULL, false), \
                     (3, 'plum', NULL, DEFAULT, '[1,2]', '2023-12-01', NULL, NULL), \
                     (-4, 'fig', 0.5, 7, NULL, NULL, NULL, true)"
                ),
            )
            .await;
        assert_eq!(r["affected_rows"], 4, "{name}");

        let r = s
            .ok_as("alice", &format!("SELECT id, name, qty, owner, tags, added, blob FROM shop.{name} WHERE price > 0.6 OR price IS NULL ORDER BY qty DESC, id LIMIT 3"))
            .await;
        assert_eq!(
            rows(&r),
            vec![
                vec![
                    json!(1),
                    json!("apple"),
                    json!(10),
                    json!("alice"),
                    json!({"c": "red"}),
                    json!("2024-01-31"),
                    json!("AAE=")
                ],
                vec![
                    json!(3),
                    json!("plum"),
                    json!(1),
                    json!("alice"),
                    json!([1, 2]),
                    json!("2023-12-01"),
                    json!(null)
                ],
                vec![
                    json!(2),
                    json!("pear"),
                    json!(-3),
                    json!("alice"),
                    json!(null),
                    json!(null),
                    json!(null)
                ],
            ],
            "{name}"
        );
        assert_eq!(
            r["columns"],
            json!(["id", "name", "qty", "owner", "tags", "added", "blob"])
        );

        let r = s
            .ok_as(
                "alice",
                &format!("UPDATE shop.{name} SET qty = qty * 2 + 1, name = name || '!' WHERE id IN (1, -4)"),
            )
            .await;
        assert_eq!(r["affected_rows"], 2);
        let r = s
            .ok_as("alice", &format!("DELETE FROM shop.{name} WHERE name = 'pear'"))
            .await;
        assert_eq!(r["affected_rows"], 1);
        let r = s
            .ok_as("alice", &format!("SELECT id, name, qty FROM shop.{name} ORDER BY id"))
            .await;
        assert_eq!(
            rows(&r),
            vec![
                vec![json!(-4), json!("fig!"), json!(15)],
                vec![json!(1), json!("apple!"), json!(21)],
                vec![json!(3), json!("plum"), json!(1)],
            ],
            "{name}"
        );
        // upsert: one conflicting row updated, one new row inserted
        let r = s
            .ok_as("alice", &format!("INSERT INTO shop.{name} (id, name, qty) VALUES (3, 'plum2', 5), (9, 'kiwi', 2) ON CONFLICT (id) DO UPDATE SET qty = {name}.qty + EXCLUDED.qty, name = EXCLUDED.name"),
            )
            .await;
        assert_eq!(r["affected_rows"], 2);
        let r = s
            .ok_as(
                "alice",
                &format!("SELECT id, name, qty FROM shop.{name} WHERE id >= 3 ORDER BY id"),
            )
            .await;
        assert_eq!(
            rows(&r),
            vec![
                vec![json!(3), json!("plum2"), json!(6)],
                vec![json!(9), json!("kiwi"), json!(2)]
            ]
        );
        let r = s
            .ok_as(
                "alice",
                &format!("INSERT INTO shop.{name} (id, name) VALUES (9, 'x') ON CONFLICT (id) DO NOTHING"),
            )
            .await;
        assert_eq!(r["affected_rows"], 0);
        // parameters, aggregates and the system columns
        let (st, r) = s
            .sql_params(
                "alice",
                &pw("alice"),
                &format!("SELECT count(*) AS n, sum(qty) AS total FROM shop.{name} WHERE id > $1"),
                json!([0]),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(rows(&r), vec![vec![json!(3), json!(29)]]);
        let r = s
            .ok_as("alice", &format!("SELECT _seq, _deleted FROM shop.{name} WHERE id = 9"))
            .await;
        assert!(rows(&r)[0][0].as_i64().unwrap() > 0);
        assert_eq!(rows(&r)[0][1], json!(false));
    }
    // DESCRIBE, SHOW TABLES and system tables
    let r = s.root("DESCRIBE TABLE shop.u_items").await;
    assert_eq!(
        rows(&r)[0],
        vec![json!("id"), json!("INT"), json!(false), json!(true), json!(null)]
    );
    let r = s.root("SHOW TABLES IN shop").await;
    assert_eq!(rows(&r).len(), 3);
    let r = s
        .root("SELECT table_name, table_type FROM system.tables WHERE namespace = 'shop' ORDER BY table_name")
        .await;
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("s_items"), json!("SHARED")],
            vec![json!("t_items"), json!("STREAM")],
            vec![json!("u_items"), json!("USER")],
        ]
    );
    let r = s
        .root("SELECT user_id, role, has_password FROM system.users ORDER BY user_id")
        .await;
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("alice"), json!("service"), json!(true)],
            vec![json!("root"), json!("system"), json!(true)]
        ]
    );
    s.stop().await;
}

/// ALTER TABLE add/rename/drop column, live: old rows read under the new schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_keeps_old_rows_readable() {
    let s = TestServer::start().await;
    s.root("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT, junk INT) WITH (TYPE = 'SHARED')")
        .await;
    s.root("INSERT INTO notes VALUES (1, 'one', 5)").await;
    s.root("ALTER TABLE notes ADD COLUMN stars INT NOT NULL DEFAULT 3")
        .await;
    s.root("ALTER TABLE notes RENAME COLUMN body TO text").await;
    s.root("ALTER TABLE notes DROP COLUMN junk").await;
    s.root("INSERT INTO notes (id, text, stars) VALUES (2, 'two', 5)").await;
    let r = s.root("SELECT * FROM notes ORDER BY id").await;
    assert_eq!(r["columns"], json!(["id", "text", "stars", "_seq", "_deleted"]));
    let got: Vec<Vec<serde_json::Value>> = rows(&r).into_iter().map(|r| r[..3].to_vec()).collect();
    assert_eq!(
        got,
        vec![
            vec![json!(1), json!("one"), json!(3)],
            vec![json!(2), json!("two"), json!(5)]
        ]
    );
    let (_, code) = s
        .err("root", kalamdb_tests::ROOT_PASSWORD, "SELECT junk FROM notes")
        .await;
    assert_eq!(code, "COLUMN_NOT_FOUND");
    s.root("DROP TABLE notes").await;
    let (_, code) = s.err("root", kalamdb_tests::ROOT_PASSWORD, "SELECT * FROM notes").await;
    assert_eq!(code, "TABLE_NOT_FOUND");
    s.stop().await;
}

/// Read-modify-write updates from many concurrent clients lose nothing: each
/// `SET n = n + 1` is checked against the row's `_seq` at commit and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_not_lost() {
    let s = std::sync::Arc::new(TestServer::start().await);
    s.root("CREATE TABLE counters (id INT PRIMARY KEY, n BIGINT NOT NULL) WITH (TYPE = 'SHARED')")
        .await;
    s.root("INSERT INTO counters VALUES (1, 0), (2, 0)").await;
    let mut tasks = vec![];
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                s.root("UPDATE counters SET n = n + 1 WHERE id = 1").await;
                s.root("UPDATE counters SET n = n + 2 WHERE n >= 0 AND id = 2").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = s.root("SELECT id, n FROM counters ORDER BY id").await;
    assert_eq!(rows(&r), vec![vec![json!(1), json!(200)], vec![json!(2), json!(400)]]);
}

/// The demo schema of `make run` works for the demo user, as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_schema_serves_the_demo_user() {
    let s = TestServer::start_with(|c| c.demo = true).await;
    let (user, pass) = (kalamdb_api::demo::DEMO_USER, kalamdb_api::demo::DEMO_PASSWORD);
    s.ok(user, pass, "INSERT INTO app.todos (title) VALUES ('buy milk')")
        .await;
    let r = s.ok(user, pass, "SELECT title, done, priority FROM app.todos").await;
    assert_eq!(rows(&r), vec![vec![json!("buy milk"), json!(false), json!(0)]]);
    let r = s.ok(user, pass, "SELECT count(*) FROM app.announcements").await;
    assert_eq!(rows(&r), vec![vec![json!(0)]]);
    // announcements are read-only for a plain user
    let (status, body) = s
        .sql(user, pass, "INSERT INTO app.announcements (message) VALUES ('hi')")
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")));
    s.stop().await;
}

/// STREAM rows disappear once older than TTL_SECONDS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_rows_expire() {
    let s = TestServer::start().await;
    s.root(
        "CREATE TABLE pings (id INT PRIMARY KEY, at TIMESTAMP DEFAULT NOW()) WITH (TYPE = 'STREAM', TTL_SECONDS = 1)",
    )
    .await;
    s.root("INSERT INTO pings (id) VALUES (1)").await;
    let r = s.root("SELECT id FROM pings").await;
    assert_eq!(rows(&r), vec![vec![json!(1)]]);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    s.root("INSERT INTO pings (id) VALUES (2)").await;
    let r = s.root("SELECT id FROM pings").await;
    assert_eq!(rows(&r), vec![vec![json!(2)]], "the expired row must be gone");
    let r = s.root("SELECT id FROM pings WHERE id = 1").await;
    assert!(rows(&r).is_empty(), "an expired row is gone from point lookups too");
    s.stop().await;
}
