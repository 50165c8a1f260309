//! GraphQL per role (introspection follows the role matrix), USER isolation, acting
//! as a user, live DDL without a restart, and bad input with stable error codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kalamdb_auth::identity::Role;
use kalamdb_auth::permissions::{AccessLevel, TableOp, TableType, can_access_table};
use kalamdb_tests::{TestServer, basic, pw};
use serde_json::{Value, json};

async fn root_fields(s: &TestServer, user: &str) -> (Vec<String>, Vec<String>) {
    let d = s
        .gql_ok(
            user,
            "{ __schema { queryType { fields { name } } mutationType { fields { name } } } }",
            json!({}),
        )
        .await;
    let names = |v: &Value| -> Vec<String> {
        v["fields"]
            .as_array()
            .map(|a| a.iter().map(|f| f["name"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    (
        names(&d["__schema"]["queryType"]),
        names(&d["__schema"]["mutationType"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_follows_the_role_matrix() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    let tables: [(&str, &str, TableType, AccessLevel); 5] = [
        ("notes", "TYPE = 'USER'", TableType::User, AccessLevel::Public),
        (
            "news",
            "TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC'",
            TableType::Shared,
            AccessLevel::Public,
        ),
        (
            "ops",
            "TYPE = 'SHARED', ACCESS_LEVEL = 'PRIVATE'",
            TableType::Shared,
            AccessLevel::Private,
        ),
        (
            "vault",
            "TYPE = 'SHARED', ACCESS_LEVEL = 'RESTRICTED'",
            TableType::Shared,
            AccessLevel::Restricted,
        ),
        (
            "pings",
            "TYPE = 'STREAM', TTL_SECONDS = 60",
            TableType::Stream,
            AccessLevel::Public,
        ),
    ];
    for (name, with, _, _) in &tables {
        s.root(&format!(
            "CREATE TABLE app.{name} (id BIGINT PRIMARY KEY, body TEXT) WITH ({with})"
        ))
        .await;
    }
    for (user, role) in [("ann", Role::User), ("sam", Role::Service), ("dora", Role::Dba)] {
        s.user(user, &role.to_string()).await;
        let (query, mutation) = root_fields(&s, user).await;
        for (name, _, ty, level) in &tables {
            let field = format!("app_{name}");
            let read = can_access_table(role, *ty, *level, TableOp::Read);
            let write = can_access_table(role, *ty, *level, TableOp::Write);
            for f in [field.clone(), format!("{field}_by_pk"), format!("{field}_aggregate")] {
                assert_eq!(query.contains(&f), read, "{role} query field {f}");
            }
            for f in [
                format!("insert_{field}"),
                format!("insert_{field}_one"),
                format!("update_{field}"),
                format!("update_{field}_by_pk"),
                format!("delete_{field}"),
                format!("delete_{field}_by_pk"),
            ] {
                assert_eq!(mutation.contains(&f), write, "{role} mutation field {f}");
            }
            // invisible tables leave no types behind either
            let d = s
                .gql_ok(
                    user,
                    "query($n: String!) { __type(name: $n) { name } }",
                    json!({ "n": field }),
                )
                .await;
            assert_eq!(!d["__type"].is_null(), read, "{role} type {field}");
        }
    }
    // a mutation the role may not run does not exist for it
    let (st, code) = s
        .gql_err(
            "ann",
            "mutation { insert_app_news_one(object: {id: 1}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!((st, code.as_str()), (400, "GRAPHQL_VALIDATION_FAILED"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_tables_return_only_the_callers_rows() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    s.root("CREATE TABLE app.notes (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), body TEXT, owner TEXT DEFAULT CURRENT_USER()) WITH (TYPE = 'USER')")
        .await;
    s.user("ann", "user").await;
    s.user("bob", "user").await;
    s.user("sam", "service").await;
    for (u, n) in [("ann", 3), ("bob", 2)] {
        let objects: Vec<Value> = (0..n).map(|i| json!({"body": format!("{u} {i}")})).collect();
        let d = s
            .gql_ok(
                u,
                "mutation($o: [app_notes_insert_input!]!) { insert_app_notes(objects: $o) { affected_rows } }",
                json!({ "o": objects }),
            )
            .await;
        assert_eq!(d["insert_app_notes"]["affected_rows"], n);
    }
    for (u, n) in [("ann", 3), ("bob", 2)] {
        let d = s
            .gql_ok(
                u,
                "{ app_notes { body owner } app_notes_aggregate { aggregate { count } } }",
                json!({}),
            )
            .await;
        let list = d["app_notes"].as_array().unwrap();
        assert_eq!(list.len(), n);
        assert!(list.iter().all(|r| r["owner"] == u));
        assert_eq!(d["app_notes_aggregate"]["aggregate"]["count"], n);
    }
    // bob cannot reach ann's rows by key, update or delete them
    let ann_id = s.gql_ok("ann", "{ app_notes(limit: 1) { id } }", json!({})).await["app_notes"][0]["id"].clone();
    let d = s
        .gql_ok(
            "bob",
            "query($id: BigInt!) { app_notes_by_pk(id: $id) { id } } ",
            json!({ "id": ann_id }),
        )
        .await;
    assert_eq!(d["app_notes_by_pk"], Value::Null);
    let d = s
        .gql_ok(
            "bob",
            "mutation($id: BigInt!) { delete_app_notes(where: {id: {_eq: $id}}) { affected_rows } }",
            json!({ "id": ann_id }),
        )
        .await;
    assert_eq!(d["delete_app_notes"]["affected_rows"], 0);

    // a service acts for ann with X-KalamDB-User-Id; a user may not
    let resp = s
        .client
        .post(format!("{}/v1/graphql", s.url))
        .header("authorization", basic("sam", &pw("sam")))
        .header("x-kalamdb-user-id", "ann")
        .json(&json!({ "query": "{ app_notes { owner } _me { user_id role } }" }))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["app_notes"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(body["data"]["_me"], json!({"user_id": "ann", "role": "service"}));
    let resp = s
        .client
        .post(format!("{}/v1/graphql", s.url))
        .header("authorization", basic("bob", &pw("bob")))
        .header("x-kalamdb-user-id", "ann")
        .json(&json!({ "query": "{ app_notes { owner } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert!(body.get("data").is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_reshapes_the_schema_without_a_restart() {
    let s = Arc::new(TestServer::start().await);
    s.root("CREATE NAMESPACE app").await;
    s.root("CREATE TABLE app.stable (id INT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')")
        .await;
    s.root("INSERT INTO app.stable VALUES (1, 'a'), (2, 'b')").await;

    // readers run all the time the DDL below commits; every one must succeed
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (s, stop, done) = (s.clone(), stop.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let d = s
                    .gql_ok("root", "{ app_stable(order_by: {id: asc}) { id v } }", json!({}))
                    .await;
                assert_eq!(d["app_stable"].as_array().unwrap().len(), 2);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    s.root("CREATE TABLE app.fresh (id INT PRIMARY KEY, title TEXT) WITH (TYPE = 'SHARED')")
        .await;
    let d = s
        .gql_ok(
            "root",
            r#"mutation { insert_app_fresh_one(object: {id: 1, title: "t"}) { id title } }"#,
            json!({}),
        )
        .await;
    assert_eq!(d["insert_app_fresh_one"]["title"], "t");

    let (_, code) = s.gql_err("root", "{ app_fresh { extra } }", json!({})).await;
    assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");
    s.root("ALTER TABLE app.fresh ADD COLUMN extra INT DEFAULT 7").await;
    let d = s.gql_ok("root", "{ app_fresh { id title extra } }", json!({})).await;
    assert_eq!(d["app_fresh"][0]["extra"], 7);

    s.root("DROP TABLE app.fresh").await;
    let (_, code) = s.gql_err("root", "{ app_fresh { id } }", json!({})).await;
    assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");
    let d = s
        .gql_ok("root", "{ __type(name: \"app_fresh\") { name } }", json!({}))
        .await;
    assert_eq!(d["__type"], Value::Null);

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("a reader failed during DDL");
    }
    assert!(done.load(Ordering::Relaxed) > 0);
    if let Ok(s) = Arc::try_unwrap(s) {
        s.stop().await;
    }
}

/// A raw body to `/v1/graphql`; the status and the JSON answer (null when not JSON).
async fn raw(s: &TestServer, auth: &str, body: &str) -> (u16, Value) {
    let (status, text) = s.post_graphql(auth, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_codes_and_the_server_keeps_serving() {
    let s = TestServer::start_with(|c| {
        c.max_query_depth = 3;
        c.max_query_complexity = 40;
        c.max_result_rows = 5;
        c.engine.access_token_ttl_secs = 1;
    })
    .await;
    s.root("CREATE NAMESPACE app").await;
    s.root("CREATE TABLE app.t (id INT PRIMARY KEY, big BIGINT, v TEXT) WITH (TYPE = 'SHARED')")
        .await;
    s.root("INSERT INTO app.t VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c'), (4, 4, 'd'), (5, 5, 'e'), (6, 6, 'f')")
        .await;
    s.user("ann", "user").await;
    let root = basic("root", kalamdb_tests::ROOT_PASSWORD);

    let deep_and = (0..40).fold("{id: {_eq: 1}}".to_string(), |acc, _| format!("{{_and: [{acc}]}}"));
    let many = (0..30)
        .map(|i| format!("f{i}: app_t_by_pk(id: 1) {{ id }}"))
        .collect::<Vec<_>>()
        .join(" ");
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        ("syntax", "{ app_t { id ".into(), json!({}), 400, "GRAPHQL_PARSE_FAILED"),
        (
            "unknown field",
            "{ app_t { nope } }".into(),
            json!({}),
            400,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "variable type",
            "query($n: Int!) { app_t(limit: $n) { id } }".into(),
            json!({"n": "three"}),
            400,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "int out of range",
            "{ app_t(limit: 3000000000) { id } }".into(),
            json!({}),
            200,
            "INVALID_INPUT",
        ),
        (
            "int column out of range",
            "{ app_t(where: {id: {_eq: 3000000000}}) { id } }".into(),
            json!({}),
            200,
            "TYPE_MISMATCH",
        ),
        (
            "BigInt not a number",
            r#"{ app_t(where: {big: {_eq: "12x"}}) { id } }"#.into(),
            json!({}),
            400,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "BigInt variable not a number",
            "query($b: BigInt!) { app_t(where: {big: {_eq: $b}}) { id } }".into(),
            json!({"b": "1e3"}),
            400,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "too deep",
            "{ app_t_aggregate { aggregate { sum { big } } } }".into(),
            json!({}),
            400,
            "QUERY_TOO_DEEP",
        ),
        (
            "introspection through the cyclic type graph",
            "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }"
                .into(),
            json!({}),
            400,
            "QUERY_TOO_DEEP",
        ),
        (
            "too complex",
            format!("{{ {many} }}"),
            json!({}),
            400,
            "QUERY_TOO_COMPLEX",
        ),
        (
            "filter too deep",
            format!("{{ app_t(where: {deep_and}) {{ id }} }}"),
            json!({}),
            200,
            "FILTER_TOO_COMPLEX",
        ),
        (
            "too many rows",
            "{ app_t { id } }".into(),
            json!({}),
            200,
            "TOO_MANY_ROWS",
        ),
        (
            "limit above max",
            "{ app_t(limit: 6) { id } }".into(),
            json!({}),
            200,
            "TOO_MANY_ROWS",
        ),
        (
            "null comparison",
            "{ app_t(where: {v: {_eq: null}}) { id } }".into(),
            json!({}),
            200,
            "INVALID_INPUT",
        ),
    ];
    for (name, query, vars, status, code) in cases {
        let (st, body) = s.gql_with(&root, &query, vars).await;
        assert_eq!(
            (st, body["errors"][0]["extensions"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        if st == 400 {
            assert!(
                body.get("data").is_none(),
                "{name}: a request error has no data: {body}"
            );
        } else {
            assert!(
                body["errors"][0]["path"].is_array(),
                "{name}: a field error has a path: {body}"
            );
        }
    }

    // introspection deeper than the data limit passes: tools send 15-level introspection
    let (st, body) = s
        .gql_with(
            &root,
            "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }",
            json!({}),
        )
        .await;
    assert!(st == 200 && body["errors"].is_null(), "{body}");

    // a 10 MB body
    let big = format!(
        "{{\"query\": \"{{ __typename }}\", \"variables\": {{\"x\": \"{}\"}}}}",
        "a".repeat(10 << 20)
    );
    let (st, body) = raw(&s, &root, &big).await;
    assert_eq!(
        (st, body["errors"][0]["extensions"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
    // not JSON, wrong parameter types
    let (st, body) = raw(&s, &root, "{ \"not json").await;
    assert_eq!(
        (st, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    let (st, _) = raw(&s, &root, r#"{"query": 1}"#).await;
    assert_eq!(st, 400);
    // a mutation over GET, anonymous or the document's only (named) operation
    for query in [
        "mutation { delete_app_t(where: {}) { affected_rows } }",
        "mutation Wipe { delete_app_t(where: {}) { affected_rows } }",
    ] {
        let resp = s
            .client
            .get(reqwest::Url::parse_with_params(&format!("{}/v1/graphql", s.url), [("query", query)]).unwrap())
            .header("authorization", &root)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{query}");
    }

    // tokens: expired, tampered, alg none
    let token = s.token("ann", &pw("ann")).await;
    let (st, _) = s
        .gql_with(&format!("Bearer {token}"), "{ _me { user_id } }", json!({}))
        .await;
    assert_eq!(st, 200);
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    let tampered = parts.join(".");
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        token.split('.').nth(1).unwrap()
    );
    for bad in [tampered, none] {
        let (st, body) = s
            .gql_with(&format!("Bearer {bad}"), "{ _me { user_id } }", json!({}))
            .await;
        assert_eq!(
            (st, body["errors"][0]["extensions"]["code"].as_str()),
            (401, Some("UNAUTHENTICATED"))
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (st, body) = s
        .gql_with(&format!("Bearer {token}"), "{ _me { user_id } }", json!({}))
        .await;
    assert_eq!(
        (st, body["errors"][0]["extensions"]["code"].as_str()),
        (401, Some("TOKEN_EXPIRED"))
    );
    let (st, _) = s.gql_with("", "{ _me { user_id } }", json!({})).await;
    assert_eq!(st, 401);

    // nothing was lost, and the server still answers
    let d = s
        .gql_ok("root", "{ app_t(limit: 5, order_by: {id: asc}) { id } }", json!({}))
        .await;
    assert_eq!(d["app_t"].as_array().unwrap().len(), 5);
    s.stop().await;
}
