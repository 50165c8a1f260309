//! Session lifecycle and hardening: logout, revocation on password or role change and
//! deletion (open subscriptions close), lockout, root from a forwarded remote address,
//! and the audit log that records all of it.

use std::time::Duration;

use kalamdb_tests::{ROOT_PASSWORD, TestServer, WsClient, WsEnd, basic, pw, rows};
use serde_json::{Value, json};

async fn login(s: &TestServer, user: &str, password: &str) -> (String, String) {
    let (st, pair) = s.login(user, password).await;
    assert_eq!(st, 200, "{pair}");
    (
        pair["access_token"].as_str().unwrap().to_string(),
        pair["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn sql_status(s: &TestServer, auth: &str, sql: &str) -> u16 {
    s.post("/v1/sql", Some(auth), &[], json!({ "sql": sql })).await.0
}

/// A socket initialised with `authorization` and one live query running on it.
async fn watching(s: &TestServer, authorization: &str) -> WsClient {
    let mut c = s.ws("graphql-transport-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "Authorization": authorization } }))
        .await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c.subscribe("1", "subscription { notes { id } }", json!({})).await;
    c.next_data("1").await;
    c
}

async fn closed_as_forbidden(c: &mut WsClient) {
    match c.closed().await {
        WsEnd::Closed(code, reason) => assert_eq!((code, reason.as_str()), (4403, "Forbidden: session revoked")),
        WsEnd::Dropped => panic!("closed without a close frame"),
    }
}

async fn gql_acting_as(s: &TestServer, auth: &str, act_as: &str) -> (u16, Value) {
    s.post(
        "/v1/graphql",
        Some(auth),
        &[("x-kalamdb-user-id", act_as)],
        json!({"query": "{ app_t { id } }"}),
    )
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_credential_changes_revoke_sessions_and_close_subscriptions() {
    let s = TestServer::start().await;
    s.user("ann", "user").await;
    s.root("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')")
        .await;

    // two sessions and a password-authenticated socket
    let (a, a_refresh) = login(&s, "ann", &pw("ann")).await;
    let (b, b_refresh) = login(&s, "ann", &pw("ann")).await;
    let mut wa = watching(&s, &bearer(&a)).await;
    let mut wb = watching(&s, &bearer(&b)).await;
    let mut wc = watching(&s, &basic("ann", &pw("ann"))).await;

    // logout ends session a only: its socket closes, its tokens stop working
    let (st, body) = s.post("/v1/auth/logout", Some(&bearer(&a)), &[], json!({})).await;
    assert_eq!(st, 204, "{body}");
    closed_as_forbidden(&mut wa).await;
    assert_eq!(sql_status(&s, &bearer(&a), "SELECT 1").await, 401);
    let (st, _) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": a_refresh}))
        .await;
    assert_eq!(st, 401);
    wb.silent_for(300).await;
    wc.silent_for(10).await;
    assert_eq!(sql_status(&s, &bearer(&b), "SELECT 1").await, 200);
    // logout needs a token of ours
    let (st, _) = s.post("/v1/auth/logout", Some("Bearer garbage"), &[], json!({})).await;
    assert_eq!(st, 401);
    let (st, _) = s.post("/v1/auth/logout", None, &[], json!({})).await;
    assert_eq!(st, 401);

    // ann changes her password: every session and socket of hers ends
    let new_pw = "a-brand-new-password";
    assert_eq!(
        sql_status(&s, &bearer(&b), &format!("ALTER USER ann SET PASSWORD '{new_pw}'")).await,
        200
    );
    closed_as_forbidden(&mut wb).await;
    closed_as_forbidden(&mut wc).await;
    assert_eq!(sql_status(&s, &bearer(&b), "SELECT 1").await, 401);
    let (st, _) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": b_refresh}))
        .await;
    assert_eq!(st, 401);
    assert_eq!(sql_status(&s, &basic("ann", &pw("ann")), "SELECT 1").await, 401);

    // a role change ends them too
    let (c, c_refresh) = login(&s, "ann", new_pw).await;
    let mut w = watching(&s, &bearer(&c)).await;
    s.root("ALTER USER ann SET ROLE service").await;
    closed_as_forbidden(&mut w).await;
    let (st, _) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": c_refresh}))
        .await;
    assert_eq!(st, 401);

    // and so does deletion
    let (d, _) = login(&s, "ann", new_pw).await;
    let mut w = watching(&s, &bearer(&d)).await;
    s.root("DROP USER ann").await;
    closed_as_forbidden(&mut w).await;

    // a new account under the old name does not inherit the old tokens
    s.user("ann", "user").await;
    assert_eq!(sql_status(&s, &bearer(&d), "SELECT 1").await, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_refresh_token_closes_the_sessions_subscriptions() {
    let s = TestServer::start().await;
    s.user("bo", "user").await;
    s.root("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')")
        .await;
    let (_, r1) = login(&s, "bo", &pw("bo")).await;
    let (st, pair) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": r1}))
        .await;
    assert_eq!(st, 200);
    let mut w = watching(&s, &bearer(pair["access_token"].as_str().unwrap())).await;
    // the old refresh token comes back: the thief and the owner both lose the session
    let (st, _) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": r1}))
        .await;
    assert_eq!(st, 401);
    closed_as_forbidden(&mut w).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_after_repeated_failures_looks_like_any_failure() {
    let s = TestServer::start_with(|c| {
        c.engine.login_max_failures = 3;
        c.engine.login_lockout_secs = 2;
    })
    .await;
    s.user("cy", "user").await;
    let unknown = s.login("nobody", "whatever-password").await;
    assert_eq!(unknown.0, 401);
    for _ in 0..3 {
        assert_eq!(s.login("cy", "wrong-password").await, unknown);
    }
    // locked: the right password is refused with the very same answer, over Basic too
    let right = pw("cy");
    assert_eq!(s.login("cy", &right).await, unknown);
    assert_eq!(sql_status(&s, &basic("cy", &right), "SELECT 1").await, 401);
    // other accounts are not affected
    s.user("dee", "user").await;
    login(&s, "dee", &pw("dee")).await;
    // the lock lifts
    tokio::time::sleep(Duration::from_millis(2200)).await;
    login(&s, "cy", &right).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_refused_from_a_forwarded_remote_address() {
    // behind a trusted proxy on loopback, the client's address is the forwarded one
    let s = TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let root_login = json!({"username": "root", "password": ROOT_PASSWORD});
    let (st, body) = s
        .post(
            "/v1/auth/login",
            None,
            &[("x-forwarded-for", "203.0.113.7")],
            root_login.clone(),
        )
        .await;
    assert_eq!(
        (st, body["error"]["message"].as_str()),
        (401, Some("invalid username or password"))
    );
    let (st, _) = s
        .post(
            "/v1/sql",
            Some(&basic("root", ROOT_PASSWORD)),
            &[("x-forwarded-for", "203.0.113.7")],
            json!({"sql": "SELECT 1"}),
        )
        .await;
    assert_eq!(st, 401);
    // a local client through the proxy is still local
    let (st, _) = s
        .post(
            "/v1/auth/login",
            None,
            &[("x-forwarded-for", "127.0.0.1")],
            root_login.clone(),
        )
        .await;
    assert_eq!(st, 200);
    s.stop().await;

    // without a trusted proxy, X-Forwarded-For is ignored: the peer is loopback
    let s = TestServer::start().await;
    let (st, _) = s
        .post(
            "/v1/auth/login",
            None,
            &[("x-forwarded-for", "203.0.113.7")],
            root_login,
        )
        .await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_security_events() {
    let s = TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    s.root("CREATE NAMESPACE app").await;
    s.root("CREATE TABLE app.t (id INT PRIMARY KEY) WITH (TYPE = 'USER')")
        .await;
    s.user("eve", "user").await;
    s.user("svc", "service").await;
    s.root("ALTER USER eve SET PASSWORD 'eve-password-2'").await;

    let (_, refresh) = login(&s, "eve", "eve-password-2").await;
    let (_, body) = s
        .post(
            "/v1/auth/login",
            None,
            &[("x-forwarded-for", "198.51.100.4")],
            json!({"username": "eve", "password": "not-it-at-all"}),
        )
        .await;
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    let (st, pair) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": refresh}))
        .await;
    assert_eq!(st, 200);
    s.post("/v1/auth/refresh", None, &[], json!({"refresh_token": refresh}))
        .await;
    let (access, _) = login(&s, "eve", "eve-password-2").await;
    s.post("/v1/auth/logout", Some(&bearer(&access)), &[], json!({})).await;
    drop(pair);
    // forbidden: DDL as a user, over SQL and GraphQL's act-as
    assert_eq!(
        sql_status(&s, &basic("eve", "eve-password-2"), "DROP TABLE app.t").await,
        403
    );
    let (st, _) = gql_acting_as(&s, &basic("eve", "eve-password-2"), "svc").await;
    assert_eq!(st, 403);
    let (st, body) = gql_acting_as(&s, &basic("svc", &pw("svc")), "eve").await;
    assert_eq!(st, 200, "{body}");
    s.root("DROP USER svc").await;

    let r = s
        .root("SELECT action, actor, subject, target, source, detail FROM system.audit_log ORDER BY id")
        .await;
    let events = rows(&r);
    let has = |action: &str, actor: &str, pred: &dyn Fn(&Vec<Value>) -> bool| {
        events
            .iter()
            .any(|e| e[0] == json!(action) && e[1] == json!(actor) && pred(e))
    };
    let any = |_: &Vec<Value>| true;
    assert!(
        has("ddl", "root", &|e| e[3] == "app" && e[5] == "CREATE NAMESPACE"),
        "{events:?}"
    );
    assert!(
        has("ddl", "root", &|e| e[3] == "app.t" && e[5] == "CREATE TABLE"),
        "{events:?}"
    );
    assert!(
        has("create_user", "root", &|e| e[3] == "eve" && e[5] == "role user"),
        "{events:?}"
    );
    assert!(
        has("alter_user", "root", &|e| e[3] == "eve" && e[5] == "password changed"),
        "{events:?}"
    );
    assert!(has("login", "eve", &|e| e[4] == "127.0.0.1"), "{events:?}");
    assert!(
        has("login_failed", "eve", &|e| e[4] == "198.51.100.4"
            && e[5] == "wrong password"),
        "{events:?}"
    );
    assert!(has("refresh_reuse", "eve", &any), "{events:?}");
    assert!(has("logout", "eve", &any), "{events:?}");
    assert!(has("forbidden", "eve", &|e| e[3] != "act as svc"), "{events:?}");
    assert!(has("forbidden", "eve", &|e| e[3] == "act as svc"), "{events:?}");
    assert!(has("act_as", "svc", &|e| e[2] == "eve" && e[3] == "eve"), "{events:?}");
    assert!(has("drop_user", "root", &|e| e[3] == "svc"), "{events:?}");
    // nothing secret is ever recorded
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains("eve-password-2") && !text.contains("not-it-at-all"),
        "{text}"
    );
    // only dba and above read it
    assert_eq!(
        sql_status(&s, &basic("eve", "eve-password-2"), "SELECT * FROM system.audit_log").await,
        403
    );
    s.stop().await;
}
