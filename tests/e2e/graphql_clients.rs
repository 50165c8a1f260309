//! Real Node clients against the real server: graphql-http's conformance audits,
//! Apollo Client and urql over HTTP and WebSocket, and a legacy subscriptions-transport-ws
//! client (tests/clients, installed by `make deps` with `npm ci`).

use kalamdb_tests::{TestServer, pw};

async fn run_node(s: &TestServer, script: &str, user: &str) -> String {
    s.node(
        script,
        &[("KALAMDB_USER", user.to_string()), ("KALAMDB_PASSWORD", pw(user))],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_http_audits_apollo_and_urql() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE app").await;
    s.root(
        "CREATE TABLE app.notes (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), title TEXT NOT NULL, \
         done BOOLEAN DEFAULT false) WITH (TYPE = 'USER')",
    )
    .await;
    s.user("ann", "user").await;

    let audit = run_node(&s, "audit.mjs", "ann").await;
    assert!(
        audit.contains("\"audits\":61") && audit.contains("\"passed\":61"),
        "{audit}"
    );
    run_node(&s, "apollo.mjs", "ann").await;
    run_node(&s, "urql.mjs", "ann").await;
    let subs = run_node(&s, "subscriptions.mjs", "ann").await;
    assert!(subs.contains("\"legacy\":true"), "{subs}");
    s.stop().await;
}
