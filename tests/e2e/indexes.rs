//! Secondary indexes as a user meets them: the statements and their errors, unique
//! indexes under concurrent writers in both tiers, per-user partitions, and builds
//! over existing rows that take writes meanwhile, survive a crash and can be dropped.

use std::time::Duration;

use kalamdb_tests::{TestServer, rows};
use serde_json::{Value, json};

/// Runs `CREATE INDEX`; returns its state and its build job, if any.
async fn create_index(s: &TestServer, sql: &str) -> (String, Option<String>) {
    let r = s.root(sql).await;
    let row = &rows(&r)[0];
    (
        row[2].as_str().unwrap().to_string(),
        row[3].as_str().map(str::to_string),
    )
}

async fn explain(s: &TestServer, sql: &str) -> String {
    s.root(&format!("EXPLAIN {sql}")).await["rows"].to_string()
}

/// `n` todos over ten owners, from id `from`.
async fn todos(s: &TestServer, table: &str, from: i64, n: i64) {
    for start in (from..from + n).step_by(2000) {
        let values: Vec<String> = (start..(start + 2000).min(from + n))
            .map(|i| {
                format!(
                    "({i}, 'u{}', 'todo {i}', {}, '2026-01-{:02}T00:00:00Z')",
                    i % 10,
                    i % 3 == 0,
                    1 + i % 28
                )
            })
            .collect();
        s.root(&format!(
            "INSERT INTO {table} (id, owner, title, done, created) VALUES {}",
            values.join(",")
        ))
        .await;
    }
}

const TODO_COLUMNS: &str =
    "(id BIGINT PRIMARY KEY, owner TEXT NOT NULL, title TEXT, done BOOLEAN, meta JSON, created TIMESTAMP)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_statements_and_their_errors() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    s.root(&format!("CREATE TABLE app.todos {TODO_COLUMNS} WITH (TYPE = 'SHARED')"))
        .await;
    todos(&s, "app.todos", 0, 200).await;

    // an index over existing rows is built by a job
    let (state, job) = create_index(&s, "CREATE INDEX todos_owner ON app.todos (owner, created DESC)").await;
    assert_eq!(state, "building");
    let j = s.wait_job(&job.unwrap()).await;
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["kind"], "index_build", "{j}");
    assert_eq!(j["message"], "indexed 200 row(s)", "{j}");
    let shown = s.root("SHOW INDEXES ON app.todos").await;
    assert_eq!(
        rows(&shown)[0][..6],
        [
            json!("app"),
            json!("todos"),
            json!("todos_owner"),
            json!("owner, created DESC"),
            json!(false),
            json!("ready")
        ]
    );
    let sys = s
        .root("SELECT index_name, state FROM system.indexes WHERE namespace = 'app'")
        .await;
    assert_eq!(rows(&sys), vec![vec![json!("todos_owner"), json!("ready")]]);

    // GraphQL and SQL read through it
    let q = r#"{ app_todos(where: {owner: {_eq: "u3"}, done: {_eq: false}}, order_by: [{id: desc}], limit: 5) { id owner } }"#;
    let d = s.gql_ok("root", q, json!({})).await;
    let ids: Vec<Value> = d["app_todos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, ["193", "173", "163", "143", "133"].map(|i| json!(i)));
    assert!(
        explain(&s, "SELECT count(*) FROM app.todos WHERE owner = 'u3'")
            .await
            .contains("index=todos_owner")
    );
    let count = r#"{ app_todos_aggregate(where: {owner: {_in: ["u3", "u4"]}}) { aggregate { count } } }"#;
    assert_eq!(
        s.gql_ok("root", count, json!({})).await["app_todos_aggregate"]["aggregate"]["count"],
        40
    );

    // bad input
    let cases = [
        ("CREATE INDEX todos_owner ON app.todos (title)", "ALREADY_EXISTS"),
        ("CREATE INDEX t2 ON app.todos (nope)", "COLUMN_NOT_FOUND"),
        ("CREATE INDEX t2 ON app.todos (meta)", "INVALID_INPUT"),
        ("CREATE INDEX t2 ON app.todos (title, title)", "INVALID_INPUT"),
        ("CREATE INDEX t2 ON app.nope (title)", "TABLE_NOT_FOUND"),
        ("CREATE INDEX t2 ON app.todos ()", "SQL_SYNTAX_ERROR"),
        ("DROP INDEX app.nope", "INDEX_NOT_FOUND"),
        ("ALTER TABLE app.todos DROP COLUMN created", "INVALID_INPUT"),
    ];
    for (sql, code) in cases {
        let (_, got) = s.err("root", kalamdb_tests::ROOT_PASSWORD, sql).await;
        assert_eq!(got, code, "{sql}");
    }
    s.root("CREATE INDEX IF NOT EXISTS todos_owner ON app.todos (title)")
        .await;
    s.root("DROP INDEX IF EXISTS app.nope").await;
    s.user("ann", "user").await;
    for sql in [
        "CREATE INDEX t3 ON app.todos (title)",
        "DROP INDEX app.todos_owner",
        "SHOW INDEXES",
    ] {
        assert_eq!(s.err_as("ann", sql).await.1, "FORBIDDEN", "{sql}");
    }

    // a rename keeps the index
    s.root("ALTER TABLE app.todos RENAME COLUMN owner TO owner_id").await;
    let shown = s.root("SHOW INDEXES").await;
    assert_eq!(rows(&shown)[0][3], "owner_id, created DESC");
    assert!(
        explain(&s, "SELECT * FROM app.todos WHERE owner_id = 'u1'")
            .await
            .contains("index=todos_owner")
    );

    // a unique index over duplicate rows fails, names a duplicate and leaves no trace
    let before = s.root("SELECT count(*) FROM app.todos").await;
    let (_, job) = create_index(&s, "CREATE UNIQUE INDEX todos_owner_u ON app.todos (owner_id)").await;
    let j = s.wait_job(&job.unwrap()).await;
    assert_eq!(j["status"], "failed", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(
        error.starts_with("DUPLICATE_KEY") && error.contains("(owner_id)=(u"),
        "{error}"
    );
    assert_eq!(rows(&s.root("SHOW INDEXES").await).len(), 1);
    assert_eq!(s.root("SELECT count(*) FROM app.todos").await, before);

    s.root("DROP INDEX app.todos_owner").await;
    assert!(rows(&s.root("SHOW INDEXES").await).is_empty());
    assert!(
        !explain(&s, "SELECT * FROM app.todos WHERE owner_id = 'u1'")
            .await
            .contains("index=")
    );
    assert_eq!(
        s.gql_ok("root", &count.replace("owner", "owner_id"), json!({})).await["app_todos_aggregate"]["aggregate"]["count"],
        40
    );
    s.root("ALTER TABLE app.todos DROP COLUMN created").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_indexes_hold_for_concurrent_writers_in_both_tiers() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    s.root("CREATE TABLE app.people (id BIGINT PRIMARY KEY, email TEXT, name TEXT) WITH (TYPE = 'SHARED')")
        .await;
    let (state, job) = create_index(&s, "CREATE UNIQUE INDEX people_email ON app.people (email)").await;
    assert_eq!(
        (state.as_str(), job),
        ("ready", None),
        "an index on an empty table needs no build"
    );
    let insert = "mutation($id: BigInt!, $e: String) { insert_app_people_one(object: {id: $id, email: $e}) { id } }";
    let attempts = (0..20).map(|i| s.gql("root", insert, json!({"id": i, "e": "same@example.com"})));
    let results = futures::future::join_all(attempts).await;
    let mut won = 0;
    for (status, body) in &results {
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => won += 1,
            Some(code) => assert_eq!(code, "DUPLICATE_KEY", "{status} {body}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer may take the value: {results:?}");
    // NULLs never collide
    for id in [100, 101] {
        s.gql_ok("root", insert, json!({"id": id, "e": null})).await;
    }
    s.run_job("FLUSH TABLE app.people").await;
    let holder = s
        .root("SELECT id FROM app.people WHERE email = 'same@example.com'")
        .await;
    let holder = rows(&holder)[0][0].as_i64().unwrap();
    let dup = s.gql("root", insert, json!({"id": 200, "e": "same@example.com"})).await;
    assert_eq!(dup.1["errors"][0]["extensions"]["code"], "DUPLICATE_KEY", "{dup:?}");
    let message = dup.1["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("(email)=(same@example.com)") && message.contains("people_email"),
        "{message}"
    );
    // moving the flushed holder frees its value and takes the new one
    let update = format!(
        r#"mutation {{ update_app_people_by_pk(pk_columns: {{id: {holder}}}, _set: {{email: "moved@example.com"}}) {{ id }} }}"#
    );
    s.gql_ok("root", &update, json!({})).await;
    s.gql_ok("root", insert, json!({"id": 201, "e": "same@example.com"}))
        .await;
    let dup = s
        .gql("root", insert, json!({"id": 202, "e": "moved@example.com"}))
        .await;
    assert_eq!(dup.1["errors"][0]["extensions"]["code"], "DUPLICATE_KEY", "{dup:?}");
    s.root(&format!("DELETE FROM app.people WHERE id = {holder}")).await;
    s.gql_ok("root", insert, json!({"id": 202, "e": "moved@example.com"}))
        .await;
    let r = s
        .root("SELECT id, email FROM app.people WHERE email IS NOT NULL ORDER BY id")
        .await;
    assert_eq!(
        rows(&r),
        vec![
            vec![json!(201), json!("same@example.com")],
            vec![json!(202), json!("moved@example.com")]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_stream_tables_index_each_users_rows() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    s.root("CREATE TABLE app.notes (id BIGINT PRIMARY KEY, tag TEXT, body TEXT) WITH (TYPE = 'USER')")
        .await;
    s.root("CREATE TABLE app.typing (id BIGINT PRIMARY KEY, room TEXT) WITH (TYPE = 'STREAM', TTL_SECONDS = 3600)")
        .await;
    s.root("CREATE INDEX notes_tag ON app.notes (tag)").await;
    s.root("CREATE INDEX typing_room ON app.typing (room)").await;
    for user in ["ann", "bob"] {
        s.user(user, "user").await;
        for i in 0..30 {
            s.ok_as(
                user,
                &format!("INSERT INTO app.notes VALUES ({i}, 't{}', '{user} {i}')", i % 3),
            )
            .await;
            s.ok_as(user, &format!("INSERT INTO app.typing VALUES ({i}, 'r{}')", i % 2))
                .await;
        }
    }
    let q = r#"{ app_notes(where: {tag: {_eq: "t1"}}, order_by: [{id: desc}], limit: 3) { id body } }"#;
    let d = s.gql_ok("ann", q, json!({})).await;
    assert_eq!(
        d["app_notes"],
        json!([{"id": "28", "body": "ann 28"}, {"id": "25", "body": "ann 25"}, {"id": "22", "body": "ann 22"}])
    );
    let r = s.ok_as("bob", "SELECT count(*) FROM app.notes WHERE tag = 't1'").await;
    assert_eq!(rows(&r)[0][0], 10);
    let r = s
        .ok_as("bob", "SELECT count(*) FROM app.typing WHERE room = 'r0'")
        .await;
    assert_eq!(rows(&r)[0][0], 15);
    // a flushed partition of one user still answers through the index
    s.run_job("FLUSH TABLE app.notes").await;
    s.ok_as("ann", "UPDATE app.notes SET tag = 't9' WHERE id = 28").await;
    let d = s.gql_ok("ann", q, json!({})).await;
    assert_eq!(d["app_notes"][0], json!({"id": "25", "body": "ann 25"}));
    let moved = r#"{ app_notes(where: {tag: {_eq: "t9"}}) { id } }"#;
    assert_eq!(
        s.gql_ok("ann", moved, json!({})).await["app_notes"],
        json!([{"id": "28"}])
    );
    assert_eq!(s.gql_ok("bob", moved, json!({})).await["app_notes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_builds_take_writes_survive_a_crash_and_can_be_dropped() {
    // a crash after the first chunk: the build resumes where it stopped
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::spawn_binary(
        dir.path(),
        &[("KALAMDB_TEST_FAULTS", "crash@index_build:chunk_written")],
    );
    s.root(&format!("CREATE TABLE todos {TODO_COLUMNS} WITH (TYPE = 'SHARED')"))
        .await;
    todos(&s, "todos", 0, 20_000).await;
    s.root("CREATE INDEX todos_owner ON todos (owner)").await;
    assert!(
        s.exited_within(Duration::from_secs(30)),
        "the injected crash did not happen"
    );
    let s = TestServer::spawn_binary(dir.path(), &[]);
    let jobs = s
        .root("SELECT job_id FROM system.jobs WHERE kind = 'index_build'")
        .await;
    let j = s.wait_job(rows(&jobs)[0][0].as_str().unwrap()).await;
    assert_eq!(
        (j["status"].clone(), j["retries"].clone()),
        (json!("completed"), json!(1)),
        "{j}"
    );
    assert_eq!(j["message"], "indexed 20000 row(s)", "{j}");
    let r = s.root("SELECT count(*) FROM todos WHERE owner = 'u7'").await;
    assert_eq!(rows(&r)[0][0], 2000);
    assert!(
        explain(&s, "SELECT * FROM todos WHERE owner = 'u7'")
            .await
            .contains("index=todos_owner")
    );
    drop(s);

    // writes during a build are indexed; a drop during a build cancels it
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::spawn_binary(dir.path(), &[("KALAMDB_TEST_FAULTS", "sleep@index_build:1500")]);
    s.root(&format!("CREATE TABLE todos {TODO_COLUMNS} WITH (TYPE = 'SHARED')"))
        .await;
    todos(&s, "todos", 0, 1000).await;
    let (state, job) = create_index(&s, "CREATE INDEX todos_owner ON todos (owner)").await;
    assert_eq!(state, "building");
    // not used before it is complete
    assert!(
        !explain(&s, "SELECT * FROM todos WHERE owner = 'u7'")
            .await
            .contains("index=")
    );
    todos(&s, "todos", 1000, 500).await;
    s.root("UPDATE todos SET owner = 'moved' WHERE id < 100").await;
    s.root("DELETE FROM todos WHERE id >= 1400").await;
    let j = s.wait_job(&job.unwrap()).await;
    assert_eq!(j["status"], "completed", "{j}");
    let r = s
        .root("SELECT owner, count(*) FROM todos WHERE owner IN ('moved', 'u7') GROUP BY owner ORDER BY owner")
        .await;
    assert_eq!(
        rows(&r),
        vec![vec![json!("moved"), json!(100)], vec![json!("u7"), json!(130)]]
    );
    assert!(
        explain(&s, "SELECT * FROM todos WHERE owner IN ('moved', 'u7')")
            .await
            .contains("index=todos_owner")
    );

    let (_, job) = create_index(&s, "CREATE INDEX todos_title ON todos (title)").await;
    s.root("DROP INDEX todos_title").await;
    let j = s.wait_job(&job.unwrap()).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    let shown = s.root("SHOW INDEXES").await;
    assert_eq!(rows(&shown).len(), 1);
}
