//! Sign-in with OAuth 2.0 / OIDC against a fake provider on loopback that speaks the
//! real protocol: discovery, authorize, token (PKCE, single-use codes, client
//! authentication) and JWKS with real RS256 keys. The browser follows redirects and
//! keeps cookies.

use std::time::Duration;

use kalamdb_tests::{Browser, FakeIssuer, IdTokenFault, TestServer};
use serde_json::{Value, json};

/// Redeems a one-time code from the browser `b` (the code is bound to the browser that
/// started its sign-in).
async fn exchange(s: &TestServer, b: &mut Browser, code: &str) -> (u16, Value) {
    b.post_json(&format!("{}/v1/auth/exchange", s.url), &json!({ "code": code }))
        .await
}

fn code_of(url: &str) -> String {
    url.split("code=")
        .nth(1)
        .unwrap_or("")
        .split('&')
        .next()
        .unwrap_or("")
        .to_string()
}

async fn users(s: &TestServer) -> Vec<String> {
    let r = s
        .root("SELECT user_id FROM system.users WHERE deleted_at IS NULL ORDER BY user_id")
        .await;
    kalamdb_tests::rows(&r)
        .into_iter()
        .map(|r| r[0].as_str().unwrap_or("").to_string())
        .collect()
}

/// The user whose tokens the one-time code in the app URL `url` redeems for.
async fn signed_in_as(s: &TestServer, b: &mut Browser, url: &str) -> Value {
    let (st, pair) = exchange(s, b, &code_of(url)).await;
    assert_eq!(st, 200, "{pair}");
    let (_, me) = s
        .gql_with(
            &format!("Bearer {}", pair["access_token"].as_str().unwrap_or("")),
            "{ _me { user_id } }",
            json!({}),
        )
        .await;
    me["data"]["_me"]["user_id"].clone()
}

/// A whole sign-in from the app's button to the app, as a browser does it.
async fn sign_in(s: &TestServer, idp: &FakeIssuer, provider: &str) -> (String, u16, String, Browser) {
    let start = format!("{}/v1/auth/oauth/{provider}/start?redirect={}/app", s.url, idp.url);
    let mut b = Browser::new();
    let (url, status, body) = b.visit(&start).await;
    (url, status, body, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_sign_in_with_an_oidc_provider() {
    let idp = FakeIssuer::start().await;
    let s = TestServer::start_at(|c, url| {
        c.oauth_providers = vec![
            idp.provider("fake", url, true),
            idp.provider("invite-only", url, false),
            idp.github_provider("gh", url),
        ];
        c.jwks_min_refetch_secs = 1;
    })
    .await;

    // the providers are listed for sign-in buttons
    let list: Value = s
        .client
        .get(format!("{}/v1/auth/providers", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["providers"][0]["start"], "/v1/auth/oauth/fake/start", "{list}");

    // the whole flow ends at the app with a one-time code, never with tokens
    idp.next_user("subject-alice", "alice");
    let (url, status, _, mut b) = sign_in(&s, &idp, "fake").await;
    assert_eq!(status, 200, "{url}");
    assert!(url.starts_with(&format!("{}/app?code=", idp.url)), "{url}");
    assert!(!url.contains("eyJ"), "no token in the URL: {url}");
    // login CSRF: the code is bound to the browser that started the flow, so an
    // attacker's own code cannot be redeemed in a victim's browser (and is not spent)
    let (st, refused) = exchange(&s, &mut Browser::new(), &code_of(&url)).await;
    assert_eq!(
        (st, &refused["error"]["code"]),
        (401, &json!("UNAUTHENTICATED")),
        "{refused}"
    );
    let (st, pair) = exchange(&s, &mut b, &code_of(&url)).await;
    assert_eq!(st, 200, "{pair}");
    let access = pair["access_token"].as_str().unwrap();
    let (st, me) = s
        .gql_with(&format!("Bearer {access}"), "{ _me { user_id role } }", json!({}))
        .await;
    assert_eq!(
        (st, &me["data"]["_me"]),
        (200, &json!({"user_id": "alice", "role": "user"}))
    );
    // the code works once
    assert_eq!(exchange(&s, &mut b, &code_of(&url)).await.0, 401);
    // signing in again is the same user; a same-named other identity gets its own
    let (url, _, _, mut b) = sign_in(&s, &idp, "fake").await;
    assert_eq!(exchange(&s, &mut b, &code_of(&url)).await.0, 200);
    idp.next_user("subject-other-alice", "alice");
    let (url, _, _, mut b) = sign_in(&s, &idp, "fake").await;
    assert_eq!(signed_in_as(&s, &mut b, &url).await, "alice-2");
    let before = users(&s).await;

    // a provider without auto_create signs in only linked identities
    idp.next_user("subject-bob", "bob");
    let (_, status, body, _) = sign_in(&s, &idp, "invite-only").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(users(&s).await, before, "no user for an unlinked identity");

    // an app URL that is not allow-listed is refused before anything happens
    let (_, status, body) = Browser::new()
        .visit(&format!(
            "{}/v1/auth/oauth/fake/start?redirect=http://evil.example/",
            s.url
        ))
        .await;
    assert_eq!(status, 400, "{body}");

    // state mismatch
    let mut b = Browser::new();
    let (_, authorize, _) = b
        .step(&format!("{}/v1/auth/oauth/fake/start?redirect={}/app", s.url, idp.url))
        .await;
    let (_, callback, _) = b.step(&authorize.unwrap()).await;
    let callback = callback.unwrap();
    let forged = format!("{}&state=forged", callback.split("&state=").next().unwrap());
    let (status, _, body) = b.step(&forged).await;
    assert_eq!(status, 401, "{body}");
    // no cookie at all: a callback not started in this browser
    let (status, _, _) = Browser::new().step(&callback).await;
    assert_eq!(status, 400);

    // PKCE: a code issued for another browser's challenge does not redeem with ours
    let mut a = Browser::new();
    let (_, auth_a, _) = a
        .step(&format!("{}/v1/auth/oauth/fake/start?redirect={}/app", s.url, idp.url))
        .await;
    let auth_a = auth_a.unwrap();
    let state_a = auth_a
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let mut other = Browser::new();
    let (_, auth_b, _) = other
        .step(&format!("{}/v1/auth/oauth/fake/start?redirect={}/app", s.url, idp.url))
        .await;
    let (_, callback_b, _) = other.step(&auth_b.unwrap()).await;
    let code_b = code_of(&callback_b.unwrap());
    let swapped = format!("{}/v1/auth/oauth/fake/callback?code={code_b}&state={state_a}", s.url);
    let (status, _, body) = a.step(&swapped).await;
    assert_eq!(status, 401, "{body}");

    // a replayed authorization code is refused by the provider, so by us
    let mut c = Browser::new();
    let (_, auth_c, _) = c
        .step(&format!("{}/v1/auth/oauth/fake/start?redirect={}/app", s.url, idp.url))
        .await;
    let (_, callback_c, _) = c.step(&auth_c.unwrap()).await;
    let callback_c = callback_c.unwrap();
    let cookies = c.cookies();
    let (status, _, _) = c.step(&callback_c).await;
    assert_eq!(status, 302);
    c.set_cookies(cookies);
    let (status, _, body) = c.step(&callback_c).await;
    assert_eq!(status, 401, "{body}");

    // id_tokens that must not pass; none of them creates a user
    let before = users(&s).await;
    for (fault, who) in [
        (IdTokenFault::WrongAudience, "f-aud"),
        (IdTokenFault::WrongIssuer, "f-iss"),
        (IdTokenFault::Expired, "f-exp"),
        (IdTokenFault::WrongNonce, "f-nonce"),
        (IdTokenFault::TamperedSignature, "f-sig"),
        (IdTokenFault::AlgNone, "f-none"),
        (IdTokenFault::Hs256WithPublicKey, "f-hs"),
        (IdTokenFault::RotatedKey, "f-kid"),
    ] {
        idp.fault(fault);
        idp.next_user(&format!("subject-{who}"), who);
        let (url, status, body, _) = sign_in(&s, &idp, "fake").await;
        assert_eq!(status, 401, "{fault:?}: {url} {body}");
    }
    assert_eq!(users(&s).await, before, "a refused sign-in creates no user");

    // key rotation: once the provider publishes rsa-2, a refetch finds it
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.publish("jwks2.json");
    idp.next_user("subject-carol", "carol");
    let (url, status, _, mut b) = sign_in(&s, &idp, "fake").await;
    assert_eq!(status, 200, "{url}");
    assert_eq!(exchange(&s, &mut b, &code_of(&url)).await.0, 200);

    // GitHub: no id_token; the identity comes from its user API
    idp.fault(IdTokenFault::None);
    idp.next_user("subject-dan", "dan-gh");
    let (url, status, body, mut b) = sign_in(&s, &idp, "gh").await;
    assert_eq!(status, 200, "{url} {body}");
    assert_eq!(signed_in_as(&s, &mut b, &url).await, "dan-gh");

    // audited: the users created at sign-in and the logins
    let r = s
        .root("SELECT action, actor, target FROM system.audit_log WHERE target = 'oauth:fake' OR actor = 'oauth:fake'")
        .await;
    let events = kalamdb_tests::rows(&r);
    assert!(
        events.iter().any(|e| e[0] == "create_user" && e[2] == "alice"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e[0] == "login" && e[1] == "carol"), "{events:?}");
    s.stop().await;
}
