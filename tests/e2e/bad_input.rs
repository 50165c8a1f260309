//! Every bad input gets an error code and message, nothing half-written, and the
//! server goes on serving.

use kalamdb_tests::{ROOT_PASSWORD, TestServer, basic, rows};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let s = TestServer::start().await;
    s.user("ann", "user").await;
    s.root("CREATE TABLE t (id INT PRIMARY KEY, name TEXT NOT NULL, n INT, ts TIMESTAMP) WITH (TYPE = 'SHARED')")
        .await;
    s.root("INSERT INTO t (id, name) VALUES (1, 'one')").await;
    let cases: &[(&str, u16, &str)] = &[
        ("SELEC * FROM t", 400, "SQL_SYNTAX_ERROR"),
        ("SELECT * FROM t WHERE", 400, "SQL_SYNTAX_ERROR"),
        ("SELECT 1; DROP TABLE t", 400, "SQL_SYNTAX_ERROR"),
        ("SELECT * FROM nope.t", 404, "NAMESPACE_NOT_FOUND"),
        ("SELECT * FROM missing", 404, "TABLE_NOT_FOUND"),
        ("INSERT INTO missing VALUES (1)", 404, "TABLE_NOT_FOUND"),
        ("SELECT nope FROM t", 400, "COLUMN_NOT_FOUND"),
        ("INSERT INTO t (id, nope) VALUES (2, 1)", 400, "COLUMN_NOT_FOUND"),
        ("UPDATE t SET nope = 1", 400, "COLUMN_NOT_FOUND"),
        ("INSERT INTO t (id, name) VALUES ('x', 'a')", 400, "TYPE_MISMATCH"),
        (
            "INSERT INTO t (id, name, n) VALUES (2, 'a', 99999999999)",
            400,
            "TYPE_MISMATCH",
        ),
        (
            "INSERT INTO t (id, name, ts) VALUES (2, 'a', 'not a time')",
            400,
            "TYPE_MISMATCH",
        ),
        ("UPDATE t SET n = 'abc' WHERE id = 1", 400, "TYPE_MISMATCH"),
        ("INSERT INTO t (id) VALUES (2)", 400, "NOT_NULL_VIOLATION"),
        ("INSERT INTO t (id, name) VALUES (NULL, 'a')", 400, "NOT_NULL_VIOLATION"),
        ("UPDATE t SET name = NULL WHERE id = 1", 400, "NOT_NULL_VIOLATION"),
        ("INSERT INTO t (id, name) VALUES (1, 'dup')", 409, "DUPLICATE_KEY"),
        (
            "INSERT INTO t (id, name) VALUES (5, 'a'), (5, 'b')",
            409,
            "DUPLICATE_KEY",
        ),
        ("CREATE TABLE t (id INT PRIMARY KEY)", 409, "ALREADY_EXISTS"),
        ("CREATE TABLE x (a INT)", 400, "INVALID_INPUT"),
        (
            "CREATE TABLE x (a INT PRIMARY KEY) WITH (TYPE = 'BOGUS')",
            400,
            "INVALID_INPUT",
        ),
        ("CREATE TABLE x (a INT PRIMARY KEY, _seq INT)", 400, "INVALID_INPUT"),
        ("UPDATE t SET _seq = 1", 400, "INVALID_INPUT"),
        ("COPY t TO 'x.csv'", 400, "UNSUPPORTED"),
        ("UPDATE t SET id = 7 WHERE id = 1", 400, "INVALID_INPUT"),
    ];
    for (sql, status, code) in cases {
        let (st, c) = s.err("root", ROOT_PASSWORD, sql).await;
        assert_eq!((st, c.as_str()), (*status, *code), "{sql}");
    }
    // atomicity: one bad row in a multi-row insert stores nothing
    let (st, c) = s
        .err(
            "root",
            ROOT_PASSWORD,
            "INSERT INTO t (id, name) VALUES (10, 'a'), (11, NULL), (12, 'c')",
        )
        .await;
    assert_eq!((st, c.as_str()), (400, "NOT_NULL_VIOLATION"));
    let (_, c) = s
        .err(
            "root",
            ROOT_PASSWORD,
            "INSERT INTO t (id, name) VALUES (20, 'a'), (21, 'b'), (1, 'dup')",
        )
        .await;
    assert_eq!(c, "DUPLICATE_KEY");
    let r = s.root("SELECT id, name FROM t ORDER BY id").await;
    assert_eq!(
        rows(&r),
        vec![vec![json!(1), json!("one")]],
        "nothing of a failed statement may be stored"
    );

    // a statement the role may not run
    let (st, c) = s.err_as("ann", "INSERT INTO t (id, name) VALUES (3, 'a')").await;
    assert_eq!((st, c.as_str()), (403, "FORBIDDEN"));
    let (st, c) = s.err_as("ann", "DROP TABLE t").await;
    assert_eq!((st, c.as_str()), (403, "FORBIDDEN"));
    let (st, c) = s.err_as("ann", "CREATE USER x WITH PASSWORD 'xxxxxxxx'").await;
    assert_eq!((st, c.as_str()), (403, "FORBIDDEN"));

    // wrong password and unknown user: the same status, code and message
    let (st1, b1) = s.sql("ann", "wrong-password", "SELECT 1").await;
    let (st2, b2) = s.sql("nobody", "wrong-password", "SELECT 1").await;
    let (st3, b3) = s.sql("root", "", "SELECT 1").await;
    assert_eq!(st1, 401);
    assert_eq!((st1, &b1), (st2, &b2));
    assert_eq!((st1, &b1), (st3, &b3));
    assert_eq!(b1["error"]["code"], "UNAUTHENTICATED");
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // a body over the configured size, and a malformed body
    let big = "x".repeat(100 * 1024);
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .header("authorization", basic("root", ROOT_PASSWORD))
        .json(&json!({"sql": format!("SELECT '{big}'")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .header("authorization", basic("root", ROOT_PASSWORD))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // deeply nested input is refused, not a crash
    let deep = format!("SELECT {}1{} FROM t", "(".repeat(3000), ")".repeat(3000));
    let (_, c) = s.err("root", ROOT_PASSWORD, &deep).await;
    assert_eq!(c, "QUERY_TOO_DEEP");

    // and the server still serves
    let r = s.root("SELECT count(*) FROM t").await;
    assert_eq!(rows(&r), vec![vec![json!(1)]]);
    let health = s.client.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    s.stop().await;
}
