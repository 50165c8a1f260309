//! Live queries and change feeds over WebSocket, driven by a raw client the way the
//! protocols describe, against the real server.

use std::time::Duration;

use kalamdb_tests::{TestServer, WsEnd, rows};
use serde_json::{Value, json};

async fn setup(s: &TestServer) {
    s.root("CREATE NAMESPACE app").await;
    s.root(
        "CREATE TABLE app.items (id BIGINT PRIMARY KEY, title TEXT NOT NULL, done BOOLEAN DEFAULT false, \
         n INT) WITH (TYPE = 'USER')",
    )
    .await;
    s.root(
        "CREATE TABLE app.news (id BIGINT PRIMARY KEY, title TEXT NOT NULL) \
         WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
    )
    .await;
    s.root("CREATE TABLE app.secrets (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PRIVATE')")
        .await;
    for u in ["alice", "bob"] {
        s.user(u, "user").await;
    }
}

async fn insert(s: &TestServer, user: &str, id: i64, title: &str, done: bool) {
    s.gql_ok(
        user,
        "mutation($o: app_items_insert_input!) { insert_app_items_one(object: $o) { id } }",
        json!({ "o": { "id": id, "title": title, "done": done } }),
    )
    .await;
}

fn ids(events: &[Value], key: &str) -> Vec<String> {
    events
        .iter()
        .map(|e| e[key]["id"].as_str().unwrap_or("null").to_string())
        .collect()
}

const CHANGES: &str = "subscription($w: app_items_bool_exp) { app_items_changes(where: $w) \
                       { op seq row { id title done } old_row { id title done } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_arrive_in_commit_order_with_old_rows() {
    let s = TestServer::start().await;
    setup(&s).await;
    let mut c = s.ws_as("alice").await;
    c.subscribe("1", CHANGES, json!({})).await;
    // the subscription is registered before the server reads anything else from us
    c.send(json!({ "type": "ping" })).await;
    assert_eq!(c.recv().await["type"], "pong");

    for i in 1..=3 {
        insert(&s, "alice", i, &format!("t{i}"), false).await;
    }
    s.gql_ok(
        "alice",
        "mutation { update_app_items_by_pk(pk_columns: {id: 2}, _set: {title: \"two\", done: true}) { id } }",
        json!({}),
    )
    .await;
    s.gql_ok("alice", "mutation { delete_app_items_by_pk(id: 1) { id } }", json!({}))
        .await;

    let ev = c.events("1", "app_items_changes", 5).await;
    let ops: Vec<&str> = ev.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["INSERT", "INSERT", "INSERT", "UPDATE", "DELETE"]);
    assert_eq!(ids(&ev, "row"), ["1", "2", "3", "2", "null"]);
    let seqs: Vec<i64> = ev.iter().map(|e| e["seq"].as_str().unwrap().parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // updates and deletes carry the row as it was
    assert_eq!(ev[3]["old_row"], json!({ "id": "2", "title": "t2", "done": false }));
    assert_eq!(ev[3]["row"], json!({ "id": "2", "title": "two", "done": true }));
    assert_eq!(ev[4]["old_row"], json!({ "id": "1", "title": "t1", "done": false }));
    assert_eq!(ev[4]["row"], Value::Null);
    assert_eq!(ev[0]["old_row"], Value::Null);

    // system.live_queries lists it while it runs, with the last seq sent
    let live = s
        .root("SELECT user_id, namespace, table_name, kind, query, last_seq FROM system.live_queries")
        .await;
    let r = rows(&live);
    assert_eq!(r.len(), 1, "{live}");
    assert_eq!(r[0][0], "alice");
    assert_eq!(r[0][2], "items");
    assert_eq!(r[0][3], "changes");
    assert!(r[0][4].as_str().unwrap().contains("app_items_changes"));
    assert_eq!(r[0][5].as_i64(), Some(seqs[4]));

    // complete ends it; nothing more arrives and the listing empties
    c.send(json!({ "id": "1", "type": "complete" })).await;
    insert(&s, "alice", 9, "after", false).await;
    c.silent_for(300).await;
    let live = s.root("SELECT live_id FROM system.live_queries").await;
    assert!(rows(&live).is_empty(), "{live}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_changes_never_arrive() {
    let s = TestServer::start().await;
    setup(&s).await;
    let mut a = s.ws_as("alice").await;
    let mut b = s.ws_as("bob").await;
    let w = json!({ "w": { "done": { "_eq": false } } });
    a.subscribe("x", CHANGES, w.clone()).await;
    b.subscribe("x", CHANGES, w).await;
    for c in [&mut a, &mut b] {
        c.send(json!({ "type": "ping" })).await;
        assert_eq!(c.recv().await["type"], "pong");
    }
    insert(&s, "bob", 1, "bob's", false).await;
    let ev = b.events("x", "app_items_changes", 1).await;
    assert_eq!(ev[0]["row"]["title"], "bob's");
    a.silent_for(400).await;

    // a live query of the same shape is isolated too
    a.send(json!({ "id": "x", "type": "complete" })).await;
    a.subscribe("l", "subscription { app_items { id title } }", json!({}))
        .await;
    assert_eq!(a.next_data("l").await, json!({ "app_items": [] }));
    insert(&s, "bob", 2, "more of bob's", false).await;
    a.silent_for(300).await;
    insert(&s, "alice", 5, "alice's", false).await;
    assert_eq!(
        a.next_data("l").await,
        json!({ "app_items": [{ "id": "5", "title": "alice's" }] })
    );

    // a service acting for alice (X-KalamDB-User-Id in connection_init) sees alice's rows
    s.user("svc", "service").await;
    let mut svc = s.ws("graphql-transport-ws").await;
    svc.send(json!({ "type": "connection_init", "payload": { "headers": {
        "Authorization": kalamdb_tests::basic("svc", &kalamdb_tests::pw("svc")),
        "X-KalamDB-User-Id": "alice"
    } } }))
    .await;
    assert_eq!(svc.recv().await["type"], "connection_ack");
    svc.subscribe("l", "subscription { app_items { id title } }", json!({}))
        .await;
    assert_eq!(
        svc.next_data("l").await,
        json!({ "app_items": [{ "id": "5", "title": "alice's" }] })
    );
    // a plain user may not act for another
    let mut bad = s.ws("graphql-transport-ws").await;
    bad.send(json!({ "type": "connection_init", "payload": {
        "Authorization": kalamdb_tests::basic("bob", &kalamdb_tests::pw("bob")),
        "x-kalamdb-user-id": "alice"
    } }))
    .await;
    assert_eq!(bad.closed().await, WsEnd::Closed(4403, "Forbidden".into()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_query_sends_only_changed_results() {
    let s = TestServer::start().await;
    setup(&s).await;
    for i in 1..=3 {
        insert(&s, "alice", i, &format!("t{i}"), false).await;
    }
    let mut c = s.ws_as("alice").await;
    c.subscribe(
        "q",
        "subscription { app_items(where: {done: {_eq: false}}, order_by: [{id: asc}], limit: 2) { id title } }",
        json!({}),
    )
    .await;
    let first = c.next_data("q").await;
    assert_eq!(
        first,
        json!({ "app_items": [{ "id": "1", "title": "t1" }, { "id": "2", "title": "t2" }] })
    );
    // outside the where
    insert(&s, "alice", 10, "done already", true).await;
    c.silent_for(300).await;
    // matches the where but falls outside the limit window
    insert(&s, "alice", 20, "late", false).await;
    c.silent_for(300).await;
    // inside the window
    s.gql_ok(
        "alice",
        "mutation { update_app_items_by_pk(pk_columns: {id: 2}, _set: {title: \"second\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        c.next_data("q").await,
        json!({ "app_items": [{ "id": "1", "title": "t1" }, { "id": "2", "title": "second" }] })
    );
    // a row leaving the window pulls the next one in
    s.gql_ok("alice", "mutation { delete_app_items_by_pk(id: 1) { id } }", json!({}))
        .await;
    assert_eq!(
        c.next_data("q").await,
        json!({ "app_items": [{ "id": "2", "title": "second" }, { "id": "3", "title": "t3" }] })
    );
    s.stop().await;
}

/// `<t>_aggregate` as a subscription: counts, sums and groups now, again after each
/// change that changes them, and nothing for a change that leaves them as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_aggregates_follow_the_rows_they_cover() {
    let s = TestServer::start().await;
    setup(&s).await;
    for (i, done) in [(1, false), (2, true), (3, false)] {
        insert(&s, "alice", i, &format!("t{i}"), done).await;
    }
    insert(&s, "bob", 9, "bob's", false).await;
    let mut c = s.ws_as("alice").await;
    c.subscribe(
        "a",
        "subscription { app_items_aggregate(where: {done: {_eq: false}}) { aggregate { count sum { id } } } }",
        json!({}),
    )
    .await;
    let agg = |count: i64, sum: i64| json!({ "app_items_aggregate": { "aggregate": { "count": count, "sum": { "id": sum.to_string() } } } });
    assert_eq!(c.next_data("a").await, agg(2, 4));
    insert(&s, "alice", 10, "ten", false).await;
    assert_eq!(c.next_data("a").await, agg(3, 14));
    // another user's partition, and a change within the where that changes no aggregate
    insert(&s, "bob", 11, "bob's too", false).await;
    s.gql_ok(
        "alice",
        "mutation { update_app_items_by_pk(pk_columns: {id: 3}, _set: {title: \"renamed\"}) { id } }",
        json!({}),
    )
    .await;
    c.silent_for(300).await;
    s.gql_ok(
        "alice",
        "mutation { update_app_items(where: {id: {_eq: 1}}, _set: {done: true}) { affected_rows } }",
        json!({}),
    )
    .await;
    assert_eq!(c.next_data("a").await, agg(2, 13));
    c.subscribe(
        "g",
        "subscription { app_items_aggregate(group_by: [done]) { groups { keys { done } aggregate { count } } } }",
        json!({}),
    )
    .await;
    let groups = |open: i64, closed: i64| {
        json!({ "app_items_aggregate": { "groups": [
            { "keys": { "done": false }, "aggregate": { "count": open } },
            { "keys": { "done": true }, "aggregate": { "count": closed } },
        ] } })
    };
    assert_eq!(c.next_data("g").await, groups(2, 2));
    s.gql_ok("alice", "mutation { delete_app_items_by_pk(id: 2) { id } }", json!({}))
        .await;
    assert_eq!(c.next_data("g").await, groups(2, 1));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_table_reaches_all_100_subscribers() {
    let s = TestServer::start().await;
    setup(&s).await;
    let mut conns = Vec::new();
    for i in 0..10 {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let mut c = s.ws_as(user).await;
        for j in 0..10 {
            c.subscribe(
                &format!("s{j}"),
                "subscription { app_news_changes { op row { id title } } }",
                json!({}),
            )
            .await;
        }
        c.send(json!({ "type": "ping" })).await;
        assert_eq!(c.recv().await["type"], "pong");
        conns.push(c);
    }
    s.gql_ok(
        "root",
        "mutation { insert_app_news_one(object: {id: 1, title: \"hello\"}) { id } }",
        json!({}),
    )
    .await;
    let mut delivered = 0;
    for c in &mut conns {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 10 {
            let m = c.recv().await;
            assert_eq!(m["type"], "next", "{m}");
            assert_eq!(
                m["payload"]["data"]["app_news_changes"],
                json!([{ "op": "INSERT", "row": { "id": "1", "title": "hello" } }])
            );
            assert!(seen.insert(m["id"].as_str().unwrap().to_string()), "{m}");
            delivered += 1;
        }
    }
    assert_eq!(delivered, 100);
    s.stop().await;
}

const RESUME: &str = "subscription($s: BigInt, $b: Int) { app_items_changes(since_seq: $s, initial_batch_size: $b) \
                      { op seq reset row { id } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_seq_has_no_gap_and_no_duplicate() {
    let s = TestServer::start().await;
    setup(&s).await;
    insert(&s, "alice", 1, "first", false).await;
    insert(&s, "alice", 2, "second", false).await;

    // a snapshot in batches, then live events
    let mut c = s.ws_as("alice").await;
    c.subscribe("r", RESUME, json!({ "b": 1 })).await;
    let snap = c.events("r", "app_items_changes", 2).await;
    assert_eq!(ids(&snap, "row"), ["1", "2"]);
    assert!(snap.iter().all(|e| e["op"] == "SNAPSHOT" && e["reset"] == false));
    insert(&s, "alice", 3, "third", false).await;
    let ev = c.events("r", "app_items_changes", 1).await;
    assert_eq!(ev[0]["op"], "INSERT");
    let last_seq = ev[0]["seq"].as_str().unwrap().to_string();
    drop(c);

    // while away: 100 commits, and bob's rows, which are not ours
    for i in 100..200 {
        insert(&s, "alice", i, "away", false).await;
        if i % 10 == 0 {
            insert(&s, "bob", i, "bob", false).await;
        }
    }
    let mut c = s.ws_as("alice").await;
    c.subscribe("r", RESUME, json!({ "s": last_seq })).await;
    let ev = c.events("r", "app_items_changes", 100).await;
    let expected: Vec<String> = (100..200).map(|i| i.to_string()).collect();
    assert_eq!(ids(&ev, "row"), expected);
    assert!(ev.iter().all(|e| e["op"] == "INSERT"));
    c.silent_for(300).await;
    // and it goes on live
    insert(&s, "alice", 500, "live", false).await;
    assert_eq!(ids(&c.events("r", "app_items_changes", 1).await, "row"), ["500"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_log_gets_a_flagged_snapshot() {
    let s = TestServer::start_with(|c| c.engine.change_log_retention_secs = 1).await;
    setup(&s).await;
    insert(&s, "alice", 1, "old", false).await;
    let mut c = s.ws_as("alice").await;
    c.subscribe("r", RESUME, json!({ "s": "1" })).await;
    // seq 1 is far older than a second ago, once the purge has run
    let mut tries = 0;
    let ev = loop {
        let ev = c.events("r", "app_items_changes", 1).await;
        if ev[0]["reset"] == true || tries > 20 {
            break ev;
        }
        // the purge had not run yet: the replay came from the log; try again later
        c.send(json!({ "id": "r", "type": "complete" })).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.subscribe("r", RESUME, json!({ "s": "1" })).await;
        tries += 1;
    };
    assert_eq!(ev[0]["op"], "SNAPSHOT");
    assert_eq!(ev[0]["reset"], true);
    assert_eq!(ev[0]["row"]["id"], "1");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_with_the_right_codes() {
    let s = TestServer::start_with(|c| {
        c.ws_init_timeout_ms = 300;
        c.max_subscriptions_per_connection = 3;
    })
    .await;
    setup(&s).await;
    let closed = |code: u16| move |e: WsEnd| matches!(e, WsEnd::Closed(c, _) if c == code);

    // invalid message
    let mut c = s.ws("graphql-transport-ws").await;
    c.send_text("{not json").await;
    assert!(closed(4400)(c.closed().await));
    let mut c = s.ws("graphql-transport-ws").await;
    c.send(json!({ "type": "no_such_type" })).await;
    assert!(closed(4400)(c.closed().await));

    // subscribe before connection_ack
    let mut c = s.ws("graphql-transport-ws").await;
    c.subscribe("1", "subscription { app_news { id } }", json!({})).await;
    assert!(closed(4401)(c.closed().await));

    // rejected credentials: wrong password, garbage token, none at all
    for payload in [
        json!({ "Authorization": kalamdb_tests::basic("alice", "wrong") }),
        json!({ "headers": { "Authorization": "Bearer not.a.token" } }),
        json!({}),
    ] {
        let mut c = s.ws("graphql-transport-ws").await;
        c.send(json!({ "type": "connection_init", "payload": payload })).await;
        assert_eq!(c.closed().await, WsEnd::Closed(4403, "Forbidden".into()));
    }

    // no connection_init in time
    let mut c = s.ws("graphql-transport-ws").await;
    assert_eq!(
        c.closed().await,
        WsEnd::Closed(4408, "Connection initialisation timeout".into())
    );

    // a second connection_init
    let mut c = s.ws_as("alice").await;
    c.send(json!({ "type": "connection_init" })).await;
    assert!(closed(4429)(c.closed().await));

    // a duplicate id
    let mut c = s.ws_as("alice").await;
    c.subscribe("d", "subscription { app_news { id } }", json!({})).await;
    c.next_data("d").await;
    c.subscribe("d", "subscription { app_news { id } }", json!({})).await;
    assert_eq!(
        c.closed().await,
        WsEnd::Closed(4409, "Subscriber for d already exists".into())
    );

    // errors that end one operation only: an `error` message, the connection goes on
    let mut c = s.ws_as("alice").await;
    let cases = [
        (
            "subscription { no_such_table { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "subscription { app_news { no_such_column } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "subscription { app_news(where: {nope: {_eq: 1}}) { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "subscription { app_news(where: {id: {_eq: \"x\"}}) { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        // the role may not read this table: it is not in alice's schema at all
        (
            "subscription { app_secrets { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "subscription { app_news(limit: -1) { id } }",
            json!({}),
            "INVALID_INPUT",
        ),
        (
            "subscription { app_items_changes(since_seq: \"-5\") { seq } }",
            json!({}),
            "INVALID_INPUT",
        ),
        ("subscription { app_news { id ", json!({}), "GRAPHQL_PARSE_FAILED"),
        // GraphQL allows one root field per subscription
        (
            "subscription { app_news { id } app_items { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ];
    for (i, (q, vars, code)) in cases.iter().enumerate() {
        let id = format!("e{i}");
        c.subscribe(&id, q, vars.clone()).await;
        assert_eq!(c.error_code(&id).await, *code, "{q}");
    }
    // a subscribe message whose payload has no query
    c.send(json!({ "id": "np", "type": "subscribe", "payload": {} })).await;
    assert_eq!(c.error_code("np").await, "BAD_REQUEST");
    // the limit on subscriptions per connection
    for i in 0..3 {
        c.subscribe(&format!("ok{i}"), "subscription { app_news { id } }", json!({}))
            .await;
        c.next_data(&format!("ok{i}")).await;
    }
    c.subscribe("over", "subscription { app_news { id } }", json!({})).await;
    assert_eq!(c.error_code("over").await, "TOO_MANY_SUBSCRIPTIONS");
    // ... and after all that, queries, mutations and ping still work on this socket
    c.send(json!({ "type": "ping" })).await;
    assert_eq!(c.recv().await["type"], "pong");
    c.subscribe(
        "m",
        "mutation { insert_app_items_one(object: {id: 1, title: \"ws\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(c.next_data("m").await, json!({ "insert_app_items_one": { "id": "1" } }));
    assert_eq!(c.recv().await, json!({ "id": "m", "type": "complete" }));
    // and a binary frame is an invalid message
    use futures::SinkExt;
    let mut raw = c.into_inner();
    raw.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1u8, 2].into()))
        .await
        .unwrap();
    let mut c = kalamdb_tests::WsClient::from_stream(raw);
    assert!(closed(4400)(c.closed().await));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_close_4403_and_shutdown_closes_1001() {
    let s = TestServer::start_with(|c| c.engine.access_token_ttl_secs = 2).await;
    setup(&s).await;
    let token = s.token("alice", &kalamdb_tests::pw("alice")).await;
    let mut c = s.ws("graphql-transport-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
        .await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c.subscribe("t", "subscription { app_news { id } }", json!({})).await;
    c.next_data("t").await;
    // the token runs out while the subscription is open
    assert_eq!(c.closed().await, WsEnd::Closed(4403, "Forbidden: token expired".into()));
    // and an expired token cannot open a connection
    let mut c = s.ws("graphql-transport-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
        .await;
    assert!(matches!(c.closed().await, WsEnd::Closed(4403, _)));

    // a server that shuts down says so to every socket
    let mut a = s.ws_as("alice").await;
    let mut b = s.ws("graphql-ws").await;
    s.stop().await;
    assert_eq!(a.closed().await, WsEnd::Closed(1001, "server shutting down".into()));
    assert_eq!(b.closed().await, WsEnd::Closed(1001, "server shutting down".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_graphql_ws_protocol() {
    let s = TestServer::start().await;
    setup(&s).await;
    let mut c = s.ws("graphql-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "authorization": kalamdb_tests::basic("bob", "bob-password") } }))
        .await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    assert_eq!(c.recv().await["type"], "ka");
    c.send(json!({ "id": "1", "type": "start", "payload": { "query": "subscription { app_items { id } }" } }))
        .await;
    let m = c.recv().await;
    assert_eq!(
        m,
        json!({ "id": "1", "type": "data", "payload": { "data": { "app_items": [] } } })
    );
    insert(&s, "bob", 4, "four", false).await;
    let m = c.recv().await;
    assert_eq!(m["payload"]["data"]["app_items"], json!([{ "id": "4" }]));
    c.send(json!({ "id": "2", "type": "start", "payload": { "query": "subscription { nope { id } }" } }))
        .await;
    let m = c.recv().await;
    assert_eq!(m["type"], "error");
    assert_eq!(m["id"], "2");
    c.send(json!({ "id": "1", "type": "stop" })).await;
    insert(&s, "bob", 5, "five", false).await;
    c.silent_for(300).await;
    c.send(json!({ "type": "connection_terminate" })).await;
    assert!(matches!(c.closed().await, WsEnd::Closed(1000, _)));

    // bad credentials: connection_error, then the socket closes
    let mut c = s.ws("graphql-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer nope" } }))
        .await;
    assert_eq!(c.recv().await["type"], "connection_error");
    assert!(matches!(c.closed().await, WsEnd::Closed(4403, _)));
    s.stop().await;
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_memory_stays_bounded() {
    const QUEUE: usize = 256 * 1024;
    const SUBS: usize = 50;
    let s = TestServer::start_with(|c| {
        c.ws_max_queued_bytes = QUEUE;
        c.max_body_bytes = 4 << 20;
    })
    .await;
    setup(&s).await;
    let title = "x".repeat(4096);
    let mut next = 0i64;
    let mut write = async || {
        let objects: Vec<Value> = (next..next + 25).map(|i| json!({ "id": i, "title": title })).collect();
        next += 25;
        s.gql_ok(
            "root",
            "mutation($o: [app_news_insert_input!]!) { insert_app_news(objects: $o) { affected_rows } }",
            json!({ "o": objects }),
        )
        .await;
    };
    // warm up allocators and RocksDB before measuring
    for _ in 0..20 {
        write().await;
    }
    let mut c = s.ws_as("alice").await;
    for i in 0..SUBS {
        c.subscribe(
            &format!("slow{i}"),
            "subscription { app_news_changes { row { id title } } }",
            json!({}),
        )
        .await;
    }
    c.send(json!({ "type": "ping" })).await;
    assert_eq!(c.recv().await["type"], "pong");
    // from here on the client reads nothing
    let stalled = c.into_inner();

    // each 100 KB write is 5 MB of events for the stalled client: 200 MB in all if the
    // server kept them
    let before = rss_bytes();
    let mut cut_off_after = None;
    for round in 0..40 {
        write().await;
        let live = s.root("SELECT live_id FROM system.live_queries").await;
        if rows(&live).is_empty() && cut_off_after.is_none() {
            cut_off_after = Some(round);
        }
    }
    let after = rss_bytes();
    let cut = cut_off_after.expect("the stalled subscriber was never cut off");
    assert!(cut < 5, "cut off only after {cut} rounds");
    let growth = after.saturating_sub(before);
    // bound: the 256 KB queue, socket buffers and what 4 MB of writes cost RocksDB
    assert!(growth < 48 << 20, "RSS grew by {} MB", growth >> 20);
    eprintln!(
        "stalled client cut off after {cut} rounds; RSS growth {} KB",
        growth >> 10
    );

    // the client, reading again, finds the close frame after what was buffered
    let mut c = kalamdb_tests::WsClient::from_stream(stalled);
    let end = c.closed().await;
    assert!(matches!(end, WsEnd::Closed(1008, _)), "{end:?}");
    // the server is healthy
    assert_eq!(
        s.gql_ok("alice", "{ app_news_aggregate { aggregate { count } } }", json!({}))
            .await,
        json!({ "app_news_aggregate": { "aggregate": { "count": 1500 } } })
    );
    s.stop().await;
}

/// A client that reads too slowly gets 1008 even when the server's writer is stuck
/// behind megabytes of queued frames (the socket buffers full): the close overtakes
/// the queue, and waits for the client to read what the socket holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_behind_a_full_socket_still_gets_1008() {
    const SUBS: usize = 10;
    let s = TestServer::start_with(|c| c.max_body_bytes = 4 << 20).await;
    setup(&s).await;
    let title = "x".repeat(4096);
    let mut c = s.ws_as("alice").await;
    for i in 0..SUBS {
        // each its own execution: the queue fills a batch at a time, not in one burst
        c.subscribe(
            &format!("slow{i}"),
            "subscription($n: BigInt!) { app_news_changes(where: {id: {_gt: $n}}) { row { id title } } }",
            json!({ "n": (-1 - i as i64).to_string() }),
        )
        .await;
    }
    c.send(json!({ "type": "ping" })).await;
    assert_eq!(c.recv().await["type"], "pong");
    let stalled = c.into_inner();
    // 1 MB of events a round: the socket buffers fill first, then the 4 MB queue
    let mut cut = false;
    for round in 0..200i64 {
        let objects: Vec<Value> = (0..25)
            .map(|i| json!({ "id": round * 25 + i, "title": title }))
            .collect();
        s.gql_ok(
            "root",
            "mutation($o: [app_news_insert_input!]!) { insert_app_news(objects: $o) { affected_rows } }",
            json!({ "o": objects }),
        )
        .await;
        if rows(&s.root("SELECT live_id FROM system.live_queries").await).is_empty() {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow client was never cut off");
    // the client goes on reading, slowly: a tenth of a second per message. Behind 4 MB
    // of queued frames (40 messages) the close would come after 4 s, and the server
    // gives up on a close after 2; overtaking them, it comes after what the socket holds
    let mut c = kalamdb_tests::WsClient::from_stream(stalled);
    let end = loop {
        match c.recv_within(Duration::from_secs(10)).await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(None) => panic!("nothing for 10 s and no close"),
            Err(end) => break end,
        }
    };
    assert!(matches!(end, WsEnd::Closed(1008, _)), "{end:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altering_or_dropping_a_table_ends_its_subscriptions() {
    let s = TestServer::start().await;
    setup(&s).await;
    let mut c = s.ws_as("alice").await;
    c.subscribe("f", "subscription { app_news_changes { op } }", json!({}))
        .await;
    c.subscribe("l", "subscription { app_news { id } }", json!({})).await;
    assert_eq!(c.next_data("l").await, json!({ "app_news": [] }));
    s.root("ALTER TABLE app.news ADD COLUMN body TEXT").await;
    // each ends with its error as the last result, then complete
    let mut ended = std::collections::HashMap::new();
    while ended.len() < 2 {
        let m = c.recv().await;
        let id = m["id"].as_str().unwrap().to_string();
        match m["type"].as_str().unwrap() {
            "next" => {
                assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "SCHEMA_CHANGED", "{m}");
            }
            "complete" => {
                ended.insert(id, true);
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    // a new subscription sees the new column, and DROP TABLE ends it too
    c.subscribe("n", "subscription { app_news { id body } }", json!({}))
        .await;
    assert_eq!(c.next_data("n").await, json!({ "app_news": [] }));
    s.root("DROP TABLE app.news").await;
    let m = c.recv().await;
    assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "SCHEMA_CHANGED", "{m}");
    assert_eq!(c.recv().await, json!({ "id": "n", "type": "complete" }));
    let live = s.root("SELECT live_id FROM system.live_queries").await;
    assert!(rows(&live).is_empty(), "{live}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tables_are_routed_per_user() {
    let s = TestServer::start().await;
    setup(&s).await;
    s.root("CREATE TABLE app.typing (id BIGINT PRIMARY KEY, who TEXT) WITH (TYPE = 'STREAM', TTL_SECONDS = 60)")
        .await;
    let mut a = s.ws_as("alice").await;
    a.subscribe(
        "t",
        "subscription { app_typing_changes(initial_batch_size: 10) { op row { id who } } }",
        json!({}),
    )
    .await;
    // the (empty) snapshot says the feed is registered
    assert_eq!(a.next_data("t").await, json!({ "app_typing_changes": [] }));
    for (user, id) in [("bob", 1), ("alice", 2)] {
        s.gql_ok(
            user,
            "mutation($id: BigInt!, $w: String!) { insert_app_typing_one(object: {id: $id, who: $w}) { id } }",
            json!({ "id": id, "w": user }),
        )
        .await;
    }
    assert_eq!(
        a.next_data("t").await,
        json!({ "app_typing_changes": [{ "op": "INSERT", "row": { "id": "2", "who": "alice" } }] })
    );
    a.silent_for(300).await;
    s.stop().await;
}

/// A change feed filtered by a regular expression gets the changes whose old or new
/// row matches, and a live query the rows that match, as they change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_expressions_filter_subscriptions() {
    let s = TestServer::start().await;
    setup(&s).await;
    let mut c = s.ws_as("alice").await;
    c.subscribe("f", CHANGES, json!({ "w": { "title": { "_iregex": "^urgent:" } } }))
        .await;
    c.subscribe(
        "q",
        "subscription { app_items(where: {title: {_niregex: \"^urgent:\"}}, order_by: {id: asc}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(c.next_data("q").await, json!({ "app_items": [] }));
    insert(&s, "alice", 1, "routine", false).await;
    assert_eq!(c.next_data("q").await, json!({ "app_items": [{ "id": "1" }] }));
    insert(&s, "alice", 2, "URGENT: call back", false).await;
    let ev = c.events("f", "app_items_changes", 1).await;
    assert_eq!(ids(&ev, "row"), ["2"]);
    // routine becomes urgent: it leaves the live query and enters the feed
    s.gql_ok(
        "alice",
        "mutation { update_app_items_by_pk(pk_columns: {id: 1}, _set: {title: \"urgent: now\"}) { id } }",
        json!({}),
    )
    .await;
    // both subscriptions hear of it, in either order
    let mut by_id = std::collections::HashMap::new();
    while by_id.len() < 2 {
        let m = c.recv().await;
        if m["type"] == "next" {
            by_id.insert(
                m["id"].as_str().unwrap_or_default().to_string(),
                m["payload"]["data"].clone(),
            );
        }
    }
    assert_eq!(by_id["q"], json!({ "app_items": [] }));
    let ev = by_id["f"]["app_items_changes"].as_array().unwrap();
    assert_eq!(ev[0]["op"], "UPDATE");
    assert_eq!(ids(ev, "row"), ["1"]);
    s.stop().await;
}
