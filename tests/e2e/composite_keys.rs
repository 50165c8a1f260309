//! Composite primary keys as a user meets them: a join table through every GraphQL
//! root field and through SQL, in both tiers; per-user partitions; STREAM tables; a
//! secondary index over such a table; and the statements' errors.

use kalamdb_tests::{ROOT_PASSWORD, TestServer, rows};
use serde_json::{Value, json};

const MEMBERS: &str = "CREATE TABLE chat.room_members (room_id BIGINT, user_id TEXT, role TEXT NOT NULL, \
     joined TIMESTAMP DEFAULT NOW(), PRIMARY KEY (room_id, user_id)) WITH (TYPE = 'SHARED')";

async fn member(s: &TestServer, room: i64, user: &str) -> Value {
    let q = "query($r: BigInt!, $u: String!) { chat_room_members_by_pk(room_id: $r, user_id: $u) { room_id user_id role } }";
    s.gql_ok("root", q, json!({"r": room, "u": user})).await["chat_room_members_by_pk"].clone()
}

async fn room(s: &TestServer, room: i64) -> Vec<(String, String)> {
    let q = "query($r: BigInt!) { chat_room_members(where: {room_id: {_eq: $r}}) { user_id role } }";
    let d = s.gql_ok("root", q, json!({"r": room})).await;
    d["chat_room_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_table_through_every_root_field_and_sql_in_both_tiers() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE chat").await;
    s.root(MEMBERS).await;
    let described = s.root("DESCRIBE chat.room_members").await;
    let keys: Vec<(Value, Value)> = rows(&described).iter().map(|r| (r[0].clone(), r[3].clone())).collect();
    assert_eq!(
        keys,
        vec![
            (json!("room_id"), json!(true)),
            (json!("user_id"), json!(true)),
            (json!("role"), json!(false)),
            (json!("joined"), json!(false))
        ]
    );

    // inserts: one, many, and a duplicate key
    let one = "mutation($r: BigInt!, $u: String!, $role: String!) { insert_chat_room_members_one(object: {room_id: $r, user_id: $u, role: $role}) { room_id user_id role } }";
    let d = s
        .gql_ok("root", one, json!({"r": 1, "u": "ann", "role": "owner"}))
        .await;
    assert_eq!(
        d["insert_chat_room_members_one"],
        json!({"room_id": "1", "user_id": "ann", "role": "owner"})
    );
    let many = r#"mutation { insert_chat_room_members(objects: [
        {room_id: 1, user_id: "bob", role: "member"}, {room_id: 2, user_id: "ann", role: "member"},
        {room_id: 2, user_id: "cy", role: "owner"}, {room_id: 10, user_id: "ann", role: "member"}]) { affected_rows } }"#;
    assert_eq!(
        s.gql_ok("root", many, json!({})).await["insert_chat_room_members"]["affected_rows"],
        4
    );
    let (_, code) = s.gql_err("root", one, json!({"r": 1, "u": "ann", "role": "x"})).await;
    assert_eq!(code, "DUPLICATE_KEY");
    // the same user in another room, and another user in the same room, are other keys
    assert_eq!(member(&s, 2, "ann").await["role"], "member");
    assert_eq!(member(&s, 1, "ann").await["role"], "owner");
    assert_eq!(member(&s, 1, "cy").await, Value::Null);
    // a key needs every column
    let (status, body) = s
        .gql("root", "{ chat_room_members_by_pk(room_id: 1) { role } }", json!({}))
        .await;
    assert!(
        body["errors"].is_array() && body.get("data").is_none_or(Value::is_null),
        "{status} {body}"
    );

    // a list narrowed by the leading key column reads only that room, in key order
    assert_eq!(room(&s, 1).await, pairs(&[("ann", "owner"), ("bob", "member")]));
    assert_eq!(room(&s, 2).await, pairs(&[("ann", "member"), ("cy", "owner")]));

    // upsert through the key constraint
    let upsert = r#"mutation { insert_chat_room_members_one(object: {room_id: 1, user_id: "bob", role: "admin"},
        on_conflict: {constraint: chat_room_members_pkey, update_columns: [role]}) { role } }"#;
    assert_eq!(
        s.gql_ok("root", upsert, json!({})).await["insert_chat_room_members_one"]["role"],
        "admin"
    );

    for tier in ["hot", "flushed", "compacted"] {
        match tier {
            "flushed" => {
                s.run_job("FLUSH TABLE chat.room_members").await;
            }
            "compacted" => {
                // a newer version of a flushed row and a second segment, merged
                s.root("UPDATE chat.room_members SET role = 'member' WHERE room_id = 10 AND user_id = 'ann'")
                    .await;
                s.run_job("FLUSH TABLE chat.room_members").await;
                s.run_job("COMPACT TABLE chat.room_members").await;
            }
            _ => {}
        }
        assert_eq!(member(&s, 1, "bob").await["role"], "admin", "{tier}");
        assert_eq!(member(&s, 2, "cy").await["role"], "owner", "{tier}");
        assert_eq!(member(&s, 2, "bob").await, Value::Null, "{tier}");
        assert_eq!(
            room(&s, 2).await,
            pairs(&[("ann", "member"), ("cy", "owner")]),
            "{tier}"
        );
        let count = "{ chat_room_members_aggregate(where: {user_id: {_eq: \"ann\"}}) { aggregate { count } } }";
        assert_eq!(
            s.gql_ok("root", count, json!({})).await["chat_room_members_aggregate"]["aggregate"]["count"],
            3,
            "{tier}"
        );
        let sql = s
            .root("SELECT role FROM chat.room_members WHERE room_id = 2 AND user_id = 'cy'")
            .await;
        assert_eq!(rows(&sql), vec![vec![json!("owner")]], "{tier}");
    }

    // update and delete by key, of rows that now live in a segment
    let update = r#"mutation { update_chat_room_members_by_pk(pk_columns: {room_id: 2, user_id: "cy"}, _set: {role: "member"}) { room_id user_id role } }"#;
    assert_eq!(
        s.gql_ok("root", update, json!({})).await["update_chat_room_members_by_pk"],
        json!({"room_id": "2", "user_id": "cy", "role": "member"})
    );
    // key columns cannot be assigned: `_set` has no field for them
    let moved = r#"mutation { update_chat_room_members_by_pk(pk_columns: {room_id: 2, user_id: "cy"}, _set: {room_id: 3}) { role } }"#;
    let (_, body) = s.gql("root", moved, json!({})).await;
    assert!(body["errors"].is_array(), "{body}");
    let (_, code) = s
        .err(
            "root",
            ROOT_PASSWORD,
            "UPDATE chat.room_members SET user_id = 'x' WHERE room_id = 2",
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    let delete = r#"mutation { delete_chat_room_members_by_pk(room_id: 2, user_id: "ann") { user_id } }"#;
    assert_eq!(
        s.gql_ok("root", delete, json!({})).await["delete_chat_room_members_by_pk"]["user_id"],
        "ann"
    );
    assert_eq!(room(&s, 2).await, pairs(&[("cy", "member")]));
    assert_eq!(member(&s, 2, "ann").await, Value::Null);
    let update_where =
        r#"mutation { update_chat_room_members(where: {room_id: {_eq: 1}}, _set: {role: "guest"}) { affected_rows } }"#;
    assert_eq!(
        s.gql_ok("root", update_where, json!({})).await["update_chat_room_members"]["affected_rows"],
        2
    );
    let delete_where = r#"mutation { delete_chat_room_members(where: {user_id: {_eq: "ann"}}) { affected_rows } }"#;
    assert_eq!(
        s.gql_ok("root", delete_where, json!({})).await["delete_chat_room_members"]["affected_rows"],
        2
    );
    assert_eq!(room(&s, 1).await, pairs(&[("bob", "guest")]));

    // SQL: duplicates, upserts by the key's columns in any order or by its constraint
    let (_, code) = s
        .err(
            "root",
            ROOT_PASSWORD,
            "INSERT INTO chat.room_members (room_id, user_id, role) VALUES (1, 'bob', 'x')",
        )
        .await;
    assert_eq!(code, "DUPLICATE_KEY");
    s.root(
        "INSERT INTO chat.room_members (room_id, user_id, role) VALUES (1, 'bob', 'owner') \
         ON CONFLICT (user_id, room_id) DO UPDATE SET role = EXCLUDED.role",
    )
    .await;
    s.root(
        "INSERT INTO chat.room_members (room_id, user_id, role) VALUES (1, 'bob', 'ignored'), (1, 'dee', 'member') \
         ON CONFLICT ON CONSTRAINT room_members_pkey DO NOTHING",
    )
    .await;
    assert_eq!(room(&s, 1).await, pairs(&[("bob", "owner"), ("dee", "member")]));
    let (_, code) = s
        .err(
            "root",
            ROOT_PASSWORD,
            "INSERT INTO chat.room_members (room_id, user_id, role) VALUES (1, 'bob', 'x') ON CONFLICT (room_id) DO NOTHING",
        )
        .await;
    assert_eq!(code, "INVALID_INPUT");
    s.root("DELETE FROM chat.room_members WHERE room_id = 1 AND user_id = 'dee'")
        .await;
    let all = s
        .root("SELECT room_id, user_id, role FROM chat.room_members ORDER BY room_id, user_id")
        .await;
    assert_eq!(
        rows(&all),
        vec![
            vec![json!(1), json!("bob"), json!("owner")],
            vec![json!(2), json!("cy"), json!("member")]
        ]
    );
    let plan = s
        .root("EXPLAIN SELECT role FROM chat.room_members WHERE room_id = 2 AND user_id = 'cy'")
        .await;
    assert!(plan["rows"].to_string().contains("keys=points"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_and_stream_tables_with_composite_keys_and_an_index() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    s.root(
        "CREATE TABLE app.prefs (scope TEXT, name TEXT, value TEXT, PRIMARY KEY (scope, name)) WITH (TYPE = 'USER')",
    )
    .await;
    s.user("alice", "user").await;
    s.user("bob", "user").await;
    let set = r#"mutation($s: String!, $n: String!, $v: String) { insert_app_prefs_one(object: {scope: $s, name: $n, value: $v},
        on_conflict: {constraint: app_prefs_pkey, update_columns: [value]}) { value } }"#;
    for (who, v) in [("alice", "dark"), ("bob", "light")] {
        s.gql_ok(who, set, json!({"s": "ui", "n": "theme", "v": v})).await;
        s.gql_ok(who, set, json!({"s": "ui", "n": "lang", "v": "en"})).await;
    }
    s.gql_ok("alice", set, json!({"s": "ui", "n": "theme", "v": "solarized"}))
        .await;
    let get = "query($s: String!, $n: String!) { app_prefs_by_pk(scope: $s, name: $n) { value } }";
    for (who, want) in [("alice", "solarized"), ("bob", "light")] {
        let d = s.gql_ok(who, get, json!({"s": "ui", "n": "theme"})).await;
        assert_eq!(d["app_prefs_by_pk"]["value"], want, "{who}");
    }
    // each user's partition is flushed to its own segments and still found by key
    s.run_job("FLUSH TABLE app.prefs").await;
    let d = s.gql_ok("bob", get, json!({"s": "ui", "n": "theme"})).await;
    assert_eq!(d["app_prefs_by_pk"]["value"], "light");
    // a live query over the partition sees the delete of a flushed row by its key
    let mut live = s.ws_as("alice").await;
    live.subscribe(
        "prefs",
        "subscription { app_prefs(order_by: {name: asc}) { name value } }",
        json!({}),
    )
    .await;
    assert_eq!(
        live.next_data("prefs").await["app_prefs"],
        json!([{"name": "lang", "value": "en"}, {"name": "theme", "value": "solarized"}])
    );
    let del = "mutation { delete_app_prefs_by_pk(scope: \"ui\", name: \"lang\") { name } }";
    s.gql_ok("alice", del, json!({})).await;
    assert_eq!(
        live.next_data("prefs").await["app_prefs"],
        json!([{"name": "theme", "value": "solarized"}])
    );
    let list = "{ app_prefs(order_by: {name: asc}) { name value } }";
    assert_eq!(
        s.gql_ok("alice", list, json!({})).await["app_prefs"],
        json!([{"name": "theme", "value": "solarized"}])
    );
    assert_eq!(
        s.gql_ok("bob", list, json!({})).await["app_prefs"],
        json!([{"name": "lang", "value": "en"}, {"name": "theme", "value": "light"}])
    );

    // a secondary index over a composite-key table points at whole keys
    s.root("CREATE INDEX prefs_value ON app.prefs (value)").await;
    let by_value = "{ app_prefs(where: {value: {_eq: \"en\"}}) { scope name } }";
    assert_eq!(
        s.gql_ok("bob", by_value, json!({})).await["app_prefs"],
        json!([{"scope": "ui", "name": "lang"}])
    );
    assert_eq!(s.gql_ok("alice", by_value, json!({})).await["app_prefs"], json!([]));

    // STREAM tables take composite keys too
    s.root(
        "CREATE TABLE app.typing (room BIGINT, at BIGINT, text TEXT, PRIMARY KEY (room, at)) \
         WITH (TYPE = 'STREAM', TTL_SECONDS = 60)",
    )
    .await;
    for at in [3, 1, 2] {
        s.ok_as(
            "alice",
            &format!("INSERT INTO app.typing (room, at, text) VALUES (7, {at}, 't{at}')"),
        )
        .await;
    }
    s.ok_as(
        "alice",
        "INSERT INTO app.typing (room, at, text) VALUES (8, 1, 'other')",
    )
    .await;
    let d = s
        .gql_ok(
            "alice",
            "{ app_typing(where: {room: {_eq: 7}}) { at text } }",
            json!({}),
        )
        .await;
    assert_eq!(
        d["app_typing"],
        json!([{"at": "1", "text": "t1"}, {"at": "2", "text": "t2"}, {"at": "3", "text": "t3"}])
    );
    let (_, code) = s
        .err_as(
            "alice",
            "INSERT INTO app.typing (room, at, text) VALUES (7, 2, 'again')",
        )
        .await;
    assert_eq!(code, "DUPLICATE_KEY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_key_statements_refuse_bad_definitions() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    for (sql, want) in [
        ("CREATE TABLE app.a (x INT, y INT, PRIMARY KEY (x, x))", "INVALID_INPUT"),
        (
            "CREATE TABLE app.a (x INT, y INT, PRIMARY KEY (x, z))",
            "COLUMN_NOT_FOUND",
        ),
        (
            "CREATE TABLE app.a (x INT, j JSON, PRIMARY KEY (x, j))",
            "INVALID_INPUT",
        ),
        (
            "CREATE TABLE app.a (x INT PRIMARY KEY, y INT, PRIMARY KEY (x, y))",
            "INVALID_INPUT",
        ),
        (
            "CREATE TABLE app.a (x INT PRIMARY KEY, y INT PRIMARY KEY)",
            "INVALID_INPUT",
        ),
        ("CREATE TABLE app.a (x INT, y INT)", "INVALID_INPUT"),
    ] {
        let (_, code) = s.err("root", ROOT_PASSWORD, sql).await;
        assert_eq!(code, want, "{sql}");
    }
    s.root("CREATE TABLE app.a (x INT, y TEXT, z INT, PRIMARY KEY (x, y)) WITH (TYPE = 'SHARED')")
        .await;
    let (_, code) = s.err("root", ROOT_PASSWORD, "ALTER TABLE app.a DROP COLUMN y").await;
    assert_eq!(code, "INVALID_INPUT");
    s.root("ALTER TABLE app.a DROP COLUMN z").await;
    // key columns are NOT NULL
    let (_, code) = s
        .err("root", ROOT_PASSWORD, "INSERT INTO app.a (x, y) VALUES (1, NULL)")
        .await;
    assert_eq!(code, "NOT_NULL_VIOLATION");
    s.root("INSERT INTO app.a (x, y) VALUES (1, 'a')").await;
    let cols = s
        .root("SELECT column_name, is_primary_key FROM system.columns WHERE table_name = 'a' ORDER BY ordinal_position")
        .await;
    assert_eq!(
        rows(&cols),
        vec![vec![json!("x"), json!(true)], vec![json!("y"), json!(true)]]
    );
}
