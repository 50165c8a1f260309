//! Password login to tokens, bearer access, refresh rotation and reuse detection.

use kalamdb_tests::{TestServer, pw, rows};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_bearer_refresh_and_reuse_detection() {
    let s = TestServer::start().await;
    s.user("ann", "user").await;
    s.root("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')")
        .await;

    let (st, pair) = s.login("ann", &pw("ann")).await;
    assert_eq!(st, 200, "{pair}");
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    let access = pair["access_token"].as_str().unwrap().to_string();
    let refresh1 = pair["refresh_token"].as_str().unwrap().to_string();

    let (st, _) = s.sql_bearer(&access, "INSERT INTO notes VALUES (1, 'hi')").await;
    assert_eq!(st, 200);
    let (_, r) = s.sql_bearer(&access, "SELECT body FROM notes").await;
    assert_eq!(rows(&r), vec![vec![json!("hi")]]);
    // the token carries ann's role: no DDL
    let (st, r) = s.sql_bearer(&access, "DROP TABLE notes").await;
    assert_eq!((st, r["error"]["code"].as_str()), (403, Some("FORBIDDEN")));

    // tampered, alg none and garbage tokens
    let mut parts: Vec<String> = access.split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    let tampered = parts.join(".");
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        access.split('.').nth(1).unwrap()
    );
    for bad in [tampered.as_str(), none.as_str(), "garbage"] {
        let (st, r) = s.sql_bearer(bad, "SELECT 1").await;
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{bad}"
        );
    }

    // rotation: a refresh token works once
    let (st, pair2) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": refresh1}))
        .await;
    assert_eq!(st, 200, "{pair2}");
    let refresh2 = pair2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, refresh2);
    let (st, _) = s.sql_bearer(pair2["access_token"].as_str().unwrap(), "SELECT 1").await;
    assert_eq!(st, 200);
    // reusing the old one fails and revokes the family: the new one dies too
    let (st, _) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": refresh1}))
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .post("/v1/auth/refresh", None, &[], json!({"refresh_token": refresh2}))
        .await;
    assert_eq!(st, 401, "reuse must revoke the whole session family");

    // a fresh login is a new family and works
    let (_, pair3) = s.login("ann", &pw("ann")).await;
    let (st, _) = s
        .post(
            "/v1/auth/refresh",
            None,
            &[],
            json!({"refresh_token": pair3["refresh_token"]}),
        )
        .await;
    assert_eq!(st, 200);

    // failed logins all look the same
    let (st1, b1) = s.login("ann", "wrong-password").await;
    let (st2, b2) = s.login("ghost", "wrong-password").await;
    assert_eq!((st1, &b1), (st2, &b2));
    assert_eq!(st1, 401);

    // a dropped user's token stops working at once
    s.root("DROP USER ann").await;
    let (st, _) = s.sql_bearer(pair3["access_token"].as_str().unwrap(), "SELECT 1").await;
    assert_eq!(st, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_tokens_say_so() {
    let s = TestServer::start_with(|c| c.engine.access_token_ttl_secs = 1).await;
    s.user("bo", "user").await;
    let (_, pair) = s.login("bo", &pw("bo")).await;
    let token = pair["access_token"].as_str().unwrap().to_string();
    let (st, _) = s.sql_bearer(&token, "SELECT 1").await;
    assert_eq!(st, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (st, r) = s.sql_bearer(&token, "SELECT 1").await;
    assert_eq!((st, r["error"]["code"].as_str()), (401, Some("TOKEN_EXPIRED")));
    s.stop().await;
}
