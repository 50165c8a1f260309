//! Requests an attacker with a plain account would send to crash, starve or exhaust the
//! server. Each gets a coded error; the server stays up and keeps answering others.
//! The crash cases run against the release binary, as deployed.

use std::time::Duration;

use kalamdb_tests::{TestServer, basic, pw, rows};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chain(n: usize, op: &str, term: &str) -> String {
    vec![term; n].join(op)
}

/// A spawned server with a user `mallory` who owns `h.mine` (USER) rows 1..=n.
async fn binary_with_rows(env: &[(&str, &str)], n: usize) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::spawn_binary(dir.path(), env);
    s.root("CREATE NAMESPACE h").await;
    s.root("CREATE TABLE h.mine (id BIGINT PRIMARY KEY, s TEXT) WITH (TYPE = 'USER')")
        .await;
    s.user("mallory", "user").await;
    s.user("victim", "user").await;
    let values: Vec<String> = (1..=n).map(|i| format!("({i}, 'row {i}')")).collect();
    s.ok_as(
        "mallory",
        &format!("INSERT INTO h.mine (id, s) VALUES {}", values.join(", ")),
    )
    .await;
    s.ok_as("victim", "INSERT INTO h.mine (id, s) VALUES (1, 'mine')").await;
    (s, dir)
}

/// The victim's own query still answers.
async fn victim_served(s: &TestServer) {
    let r = s.ok_as("victim", "SELECT s FROM h.mine").await;
    assert_eq!(rows(&r), vec![vec![json!("mine")]]);
    assert!(s.healthy().await, "/healthz answers");
}

async fn sql_code(s: &TestServer, sql: &str) -> (u16, String) {
    let (status, body) = s.sql("mallory", &pw("mallory"), sql).await;
    (status, body["error"]["code"].as_str().unwrap_or("").to_string())
}

async fn gql_code(s: &TestServer, query: &str, variables: Value) -> (u16, Value) {
    let (status, body) = s.gql("mallory", query, variables).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_input_is_refused_with_a_code_and_never_crashes() {
    let (s, _dir) = binary_with_rows(&[], 10).await;
    for sql in [
        format!("SELECT {}", chain(1000, "+", "1")),
        format!("SELECT * FROM h.mine WHERE {}", chain(1000, " AND ", "id = 1")),
        format!("UPDATE h.mine SET s = {} WHERE id = 1", chain(1000, " || ", "'a'")),
        // 800 KB of operators, under the body limit
        format!("SELECT {}", chain(400_000, "+", "1")),
        format!("SELECT {}1{}", "(".repeat(3000), ")".repeat(3000)),
    ] {
        let (status, code) = sql_code(&s, &sql).await;
        assert_eq!(status, 400, "{}", &sql[..60.min(sql.len())]);
        assert_eq!(code, "QUERY_TOO_DEEP", "{}", &sql[..60.min(sql.len())]);
        victim_served(&s).await;
    }
    // within the bound, the same shapes work
    let r = s
        .ok_as("mallory", &format!("SELECT {} AS n", chain(200, "+", "1")))
        .await;
    assert_eq!(rows(&r), vec![vec![json!(200)]]);
    let r = s
        .ok_as(
            "mallory",
            &format!("SELECT count(*) FROM h.mine WHERE {}", chain(200, " OR ", "id = 3")),
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!(1)]]);

    // GraphQL: a wide _or is served (a balanced tree, not a chain a thousand deep)
    let or: Vec<String> = (0..990).map(|i| format!("{{id: {{_eq: {i}}}}}")).collect();
    let (status, body) = gql_code(
        &s,
        &format!(
            "{{ h_mine(where: {{_or: [{}]}}, order_by: {{id: asc}}) {{ id }} }}",
            or.join(", ")
        ),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["h_mine"].as_array().map(Vec::len), Some(10), "{body}");
    // deep nesting in the document, refused before it is parsed
    for query in [
        format!(
            "{{ h_mine(where: {}{{id: {{_eq: 1}}}}{}) {{ id }} }}",
            "{_not: ".repeat(2000),
            "}".repeat(2000)
        ),
        format!(
            "{{ h_mine(where: {{id: {{_in: {}1{}}}}}) {{ id }} }}",
            "[".repeat(2000),
            "]".repeat(2000)
        ),
    ] {
        let (status, body) = gql_code(&s, &query, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_TOO_DEEP", "{body}");
        victim_served(&s).await;
    }
    // deep nesting in the variables: the JSON itself is refused
    let mut deep = json!({"id": {"_eq": 1}});
    for _ in 0..3000 {
        deep = json!({ "_not": deep });
    }
    let body = json!({
        "query": "query($w: h_mine_bool_exp) { h_mine(where: $w) { id } }",
        "variables": { "w": deep },
    });
    let resp = s
        .client
        .post(format!("{}/v1/graphql", s.url))
        .header("authorization", basic("mallory", &pw("mallory")))
        .header("content-type", "application/json")
        .body(serde_json::to_string(&body).unwrap_or_default())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // a _not nested past max_filter_depth but within the document bound
    let (status, body) = gql_code(
        &s,
        &format!(
            "{{ h_mine(where: {}{{id: {{_eq: 1}}}}{}) {{ id }} }}",
            "{_not: ".repeat(40),
            "}".repeat(40)
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, &body["errors"][0]["extensions"]["code"]),
        (200, &json!("FILTER_TOO_COMPLEX")),
        "{body}"
    );
    victim_served(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_queries_are_stopped_by_their_bounds() {
    let (s, _dir) = binary_with_rows(
        &[
            ("KALAMDB_STATEMENT_TIMEOUT_MS", "1500"),
            ("KALAMDB_SHUTDOWN_GRACE_SECS", "1"),
        ],
        1000,
    )
    .await;
    // a function asked to build a terabyte is refused before it allocates
    for sql in [
        "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 1000000000000))",
        "SELECT length(repeat('x', 1000000000000))",
        "SELECT length(lpad('x', 2000000000))",
        "SELECT length(replace(repeat('x', 1000000), '', repeat('y', 1000)))",
        "SELECT length(repeat(s, 100000000)) FROM h.mine",
    ] {
        assert_eq!(sql_code(&s, sql).await, (400, "RESULT_TOO_LARGE".into()), "{sql}");
        victim_served(&s).await;
    }
    // small ones still work
    let r = s.ok_as("mallory", "SELECT length(repeat('ab', 1000)) AS n").await;
    assert_eq!(rows(&r), vec![vec![json!(2000)]]);

    // a cross join of a thousand rows three times: stopped at the result bound while
    // another user is served
    let attack = {
        let (url, client) = (s.url.clone(), s.client.clone());
        tokio::spawn(async move {
            let resp = client
                .post(format!("{url}/v1/sql"))
                .header("authorization", basic("mallory", &pw("mallory")))
                .json(&json!({"sql": "SELECT a.s, b.s, c.s FROM h.mine a, h.mine b, h.mine c"}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body["error"]["code"].as_str().unwrap_or("").to_string())
        })
    };
    victim_served(&s).await;
    let (status, code) = attack.await.unwrap();
    assert_eq!(status, 400);
    assert!(code == "RESULT_TOO_LARGE" || code == "MEMORY_LIMIT_EXCEEDED", "{code}");
    // counting a billion rows runs past the statement timeout and is stopped
    assert_eq!(
        sql_code(
            &s,
            "SELECT count(*) FROM h.mine a, h.mine b, h.mine c WHERE a.s || b.s <> c.s"
        )
        .await,
        (400, "STATEMENT_TIMEOUT".into())
    );
    victim_served(&s).await;
    // a LIKE pattern of 60,000 characters is refused; a long value with many
    // wildcards is matched in linear time
    let long = format!("%{}", "a%".repeat(30_000));
    let (status, body) = gql_code(
        &s,
        "query($p: String!) { h_mine(where: {s: {_like: $p}}) { id } }",
        json!({ "p": long }),
    )
    .await;
    assert_eq!(
        (status, &body["errors"][0]["extensions"]["code"]),
        (200, &json!("FILTER_TOO_COMPLEX")),
        "{body}"
    );
    let big = "a".repeat(120_000);
    s.ok_as("mallory", &format!("INSERT INTO h.mine (id, s) VALUES (5000, '{big}')"))
        .await;
    let pattern = format!("%{}b", "a%".repeat(400));
    let (status, body) = gql_code(
        &s,
        "query($p: String!) { h_mine(where: {s: {_like: $p}}) { id } }",
        json!({ "p": pattern }),
    )
    .await;
    assert_eq!((status, &body["data"]["h_mine"]), (200, &json!([])), "{body}");
    victim_served(&s).await;

    // shutdown does not wait for a runaway query: SIGTERM during one ends the process
    let runaway = {
        let (url, client) = (s.url.clone(), s.client.clone());
        tokio::spawn(async move {
            let _ = client
                .post(format!("{url}/v1/sql"))
                .header("authorization", basic("mallory", &pw("mallory")))
                .json(&json!({"sql": "SELECT count(*) FROM h.mine a, h.mine b, h.mine c WHERE a.s || b.s <> c.s"}))
                .send()
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = s;
    s.terminate();
    assert!(s.exited_within(Duration::from_secs(15)), "the server stopped");
    runaway.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_is_bounded_in_bytes_over_all_its_fields() {
    for fast_path in [true, false] {
        let s = TestServer::start_with(|c| {
            c.max_response_bytes = 256 << 10;
            c.graphql_fast_path = fast_path;
        })
        .await;
        s.root("CREATE NAMESPACE h").await;
        s.root("CREATE TABLE h.big (id BIGINT PRIMARY KEY, s TEXT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')")
            .await;
        let text = "x".repeat(30_000);
        for i in 0..20 {
            s.root(&format!("INSERT INTO h.big (id, s) VALUES ({i}, '{text}')"))
                .await;
        }
        s.user("mallory", "user").await;
        // thirty aliases of a 600 KB list
        let aliases: Vec<String> = (0..30).map(|i| format!("a{i}: h_big {{ s }}")).collect();
        let (status, body) = s
            .gql("mallory", &format!("{{ {} }}", aliases.join(" ")), json!({}))
            .await;
        assert_eq!(status, 200);
        let codes: Vec<&Value> = body["errors"]
            .as_array()
            .map(|e| e.iter().map(|e| &e["extensions"]["code"]).collect())
            .unwrap_or_default();
        assert!(!codes.is_empty(), "fast path {fast_path}: no error");
        assert!(
            codes.iter().all(|c| **c == json!("RESULT_TOO_LARGE")),
            "fast path {fast_path}: {codes:?}"
        );
        // a page under the bound is served in full
        let (status, body) = s.gql("mallory", "{ h_big(limit: 5) { id } }", json!({})).await;
        assert_eq!((status, body["data"]["h_big"].as_array().map(Vec::len)), (200, Some(5)));
        s.stop().await;
    }
}

/// Reads until the server closes the connection (or `wait` passes); returns what came.
async fn read_to_close(tcp: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    read.ok().map(|_| String::from_utf8_lossy(&out).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_timed_out_and_capped() {
    let s = TestServer::start_with(|c| {
        c.max_connections_per_ip = 8;
        c.header_read_timeout_secs = 1;
    })
    .await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for i in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            // half-sent headers
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        }
        held.push(tcp);
    }
    // over the per-address bound: a clear refusal, at once
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let refused = read_to_close(&mut extra, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("TOO_MANY_CONNECTIONS"), "{refused}");
    // idle and half-sent connections are closed after the header timeout
    for tcp in &mut held {
        assert!(
            read_to_close(tcp, Duration::from_secs(10)).await.is_some(),
            "the server closed the connection"
        );
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.healthy().await);
    // a keep-alive connection left idle is closed too
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_grow_the_audit_log_without_bound() {
    let s = TestServer::start().await;
    s.user("mallory", "user").await;
    for i in 0..200 {
        let (status, _) = s
            .sql("mallory", &pw("mallory"), &format!("SELECT {i} FROM system.users"))
            .await;
        assert_eq!(status, 403);
    }
    let r = s
        .root("SELECT count(*), max(detail) FROM system.audit_log WHERE action = 'forbidden' AND actor = 'mallory'")
        .await;
    let n = rows(&r)[0][0].as_i64().unwrap_or(0);
    assert!((1..=20).contains(&n), "{n} rows for 200 refusals");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_root_logins_from_afar_cannot_lock_root_out() {
    let s = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.engine.login_max_failures = 3;
    })
    .await;
    for _ in 0..10 {
        let (status, body) = s
            .post(
                "/v1/auth/login",
                None,
                &[("x-forwarded-for", "203.0.113.9")],
                json!({"username": "root", "password": "guess"}),
            )
            .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = s.login("root", kalamdb_tests::ROOT_PASSWORD).await;
    assert_eq!(status, 200, "root is not locked out: {body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_get_nothing() {
    let s = TestServer::start().await;
    s.user("alice", "user").await;
    // a cross-site <form enctype="text/plain"> cannot send JSON
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .header("authorization", basic("alice", &pw("alice")))
        .header("content-type", "text/plain")
        .body(r#"{"sql": "SELECT 1", "x": "="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
    // no Basic challenge for a browser to answer with cached credentials
    let resp = s
        .client
        .post(format!("{}/v1/sql", s.url))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::spawn_binary(dir.path(), &[]);
    let (status, _) = s
        .post(
            "/v1/auth/login",
            None,
            &[],
            json!({"username": "eve\nFORGED audit line", "password": "x"}),
        )
        .await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = s.log_lines();
    assert!(
        logs.iter().any(|l| l.contains("login_failed")),
        "the failure is logged: {logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.starts_with("FORGED")),
        "a line break in a username starts no line: {logs:?}"
    );
}

/// Random and malformed messages on a signed-in WebSocket: each gets an error or closes
/// that socket; the server and other sockets go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_garbage_is_answered_and_survived() {
    use rand::{Rng, SeedableRng};

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::spawn_binary(dir.path(), &[]);
    s.root("CREATE NAMESPACE h").await;
    s.root("CREATE TABLE h.mine (id BIGINT PRIMARY KEY, s TEXT) WITH (TYPE = 'USER')")
        .await;
    s.user("mallory", "user").await;
    let seed: u64 = rand::random();
    eprintln!("websocket garbage with seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        "\"type\"",
        ":",
        "\"subscribe\"",
        "\"connection_init\"",
        "\"id\"",
        "\"payload\"",
        "\"query\"",
        "\"{ h_mine { id } }\"",
        "null",
        "1e999",
        "\"complete\"",
        "\"ping\"",
        ",",
        "\"\\u0000\"",
        "\"variables\"",
        "{\"_not\":",
        "\"where\"",
    ];
    let mut ws = s.ws_as("mallory").await;
    for i in 0..400 {
        let text = match rng.random_range(0..4) {
            0 => (0..rng.random_range(1..30))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect::<String>(),
            1 => json!({"id": format!("{i}"), "type": "subscribe", "payload": {
                "query": format!("{{ h_mine(where: {}{{id: {{_eq: 1}}}}{}) {{ id }} }}",
                    "{_not: ".repeat(rng.random_range(0..300)), "}".repeat(rng.random_range(0..300))),
            }})
            .to_string(),
            2 => json!({"id": format!("{i}"), "type": "subscribe", "payload": {
                "query": "subscription($w: h_mine_bool_exp) { h_mine(where: $w) { id } }",
                "variables": {"w": {"s": {"_like": "%a".repeat(rng.random_range(0..2000))}}},
            }})
            .to_string(),
            _ => "x".repeat(rng.random_range(0..70_000)),
        };
        ws.send_text(&text).await;
        if ws.recv_within(Duration::from_millis(20)).await.is_err() {
            // this socket was closed for what it sent: open another
            ws = s.ws_as("mallory").await;
        }
    }
    assert!(s.healthy().await);
    let mut fresh = s.ws_as("mallory").await;
    fresh.subscribe("ok", "subscription { h_mine { id } }", json!({})).await;
    assert_eq!(fresh.next_data("ok").await["h_mine"], json!([]));
}
