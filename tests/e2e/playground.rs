//! The playground in a real browser: tests/clients/playground.mjs drives Debian's
//! headless Chromium (playwright-core) against this server, started with the demo
//! schema as `make run` starts it. A screenshot lands in test-output/.

use kalamdb_api::demo::{DEMO_PASSWORD, DEMO_USER};
use kalamdb_tests::{FakeIssuer, ROOT_PASSWORD, TestServer, pw, tests_dir};

/// Short enough that the test outlives the first access token.
const ACCESS_TOKEN_TTL_SECS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playground_in_headless_chromium() {
    let idp = FakeIssuer::start().await;
    idp.next_user("subject-olga", "olga");
    let s = TestServer::start_at(|c, url| {
        c.demo = true;
        c.engine.access_token_ttl_secs = ACCESS_TOKEN_TTL_SECS;
        let mut provider = idp.provider("fake-oidc", url, true);
        provider.app_redirects.push(format!("{url}/"));
        c.oauth_providers = vec![provider];
    })
    .await;
    s.user("svc", "service").await;
    let out_dir = tests_dir().join("..").join("test-output");
    let seen = s
        .node(
            "playground.mjs",
            &[
                ("DEMO_USER", DEMO_USER.to_string()),
                ("DEMO_PASSWORD", DEMO_PASSWORD.to_string()),
                ("SERVICE_USER", "svc".to_string()),
                ("SERVICE_PASSWORD", pw("svc")),
                ("ROOT_PASSWORD", ROOT_PASSWORD.to_string()),
                ("ACCESS_TOKEN_TTL_SECS", ACCESS_TOKEN_TTL_SECS.to_string()),
                ("OAUTH_PROVIDER", "fake-oidc".to_string()),
                ("TEST_OUTPUT_DIR", out_dir.to_string_lossy().into_owned()),
            ],
        )
        .await;
    let seen: serde_json::Value = serde_json::from_str(seen.lines().last().unwrap_or("")).expect("a JSON line");
    assert_eq!(seen["wrongPassword"], "invalid username or password", "{seen}");
    assert_eq!(seen["signedIn"], "Signed in as demo · role user", "{seen}");
    let default_query = seen["defaultQuery"].as_str().unwrap_or("");
    assert!(
        default_query.contains("Welcome to the KalamDB playground, demo (role user)")
            && default_query.contains("app_todos(limit: 10)")
            && default_query.contains(r#"insert_app_todos_one(object: {title: "hello from the playground"})"#),
        "{default_query}"
    );
    assert_eq!(seen["tokenRefreshed"], true, "{seen}");
    assert_eq!(seen["schemaRefreshed"], true, "{seen}");
    assert_eq!(seen["actedAs"], true, "{seen}");
    assert_eq!(seen["loggedOut"], true, "{seen}");
    assert_eq!(seen["oauthSignedIn"], "Signed in as olga · role user", "{seen}");
    assert!(seen["websockets"].as_u64() >= Some(1), "{seen}");
    assert_eq!(seen["foreign"], serde_json::json!([]), "{seen}");
    let shot = std::fs::metadata(out_dir.join("playground.png")).expect("the screenshot");
    assert!(shot.len() > 10_000, "{} bytes", shot.len());
    s.stop().await;
}
