//! Bearer tokens of a trusted external issuer, verified against its JWKS: the fake
//! issuer runs on loopback and signs with real RS256 and ES256 keys.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use kalamdb_tests::{FakeIssuer, TestServer, oidc_fixture, rows};
use serde_json::{Value, json};

async fn me(s: &TestServer, token: &str) -> Value {
    let (st, body) = s
        .gql_with(&format!("Bearer {token}"), "{ _me { user_id role } }", json!({}))
        .await;
    assert_eq!(st, 200, "{body}");
    body["data"]["_me"].clone()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_are_verified_against_the_issuers_keys() {
    let idp = FakeIssuer::start().await;
    let trusted = idp.trusted("kalamdb");
    let s = TestServer::start_with(|c| {
        c.trusted_issuers = vec![trusted];
        c.jwks_min_refetch_secs = 1;
    })
    .await;
    s.root("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')")
        .await;
    let claims = |sub: &str| idp.claims(sub, "kalamdb", 300);

    // RS256: the token's subject is the caller, with the default role, and its rows are its own
    let ann = idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa1.der", &claims("ext-ann"));
    assert_eq!(
        s.sql_bearer(&ann, "INSERT INTO notes VALUES (1, 'from ann')").await.0,
        200
    );
    let (_, r) = s.sql_bearer(&ann, "SELECT body FROM notes").await;
    assert_eq!(rows(&r), vec![vec![json!("from ann")]]);
    assert_eq!(me(&s, &ann).await, json!({"user_id": "ext-ann", "role": "user"}));
    // ES256 too; another subject sees none of ann's rows
    let bo = idp.sign(Algorithm::ES256, Some("ec-1"), "ec1.der", &claims("ext-bo"));
    let (st, r) = s.sql_bearer(&bo, "SELECT body FROM notes").await;
    assert_eq!((st, rows(&r).len()), (200, 0), "{r}");
    // roles come from the role claim; system is never granted
    let mut c = claims("ext-svc");
    c["roles"] = json!(["other", "kalam-service"]);
    let svc = idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa1.der", &c);
    assert_eq!(me(&s, &svc).await["role"], "service");
    c["roles"] = json!("kalam-admin");
    let admin = idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa1.der", &c);
    assert_eq!(me(&s, &admin).await["role"], "dba");
    assert_eq!(idp.fetches(), 1, "keys are fetched once and cached");

    // refused: each is a 401 and nothing is written
    let mut wrong_aud = claims("ext-ann");
    wrong_aud["aud"] = json!("someone-else");
    let mut other_iss = claims("ext-ann");
    other_iss["iss"] = json!("http://127.0.0.1:1/not-trusted");
    let pem_public = oidc_fixture("rsa1.pub.pem");
    let hs_confusion = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("rsa-1".into()),
            ..jsonwebtoken::Header::new(Algorithm::HS256)
        },
        &claims("ext-ann"),
        &jsonwebtoken::EncodingKey::from_secret(&pem_public),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        b64(claims("ext-ann").to_string().as_bytes())
    );
    let mut parts: Vec<String> = ann.split('.').map(String::from).collect();
    parts[1] = b64(claims("ext-root").to_string().as_bytes());
    let tampered = parts.join(".");
    let cases = [
        (
            "wrong aud",
            idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa1.der", &wrong_aud),
            "UNAUTHENTICATED",
        ),
        (
            "untrusted iss",
            idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa1.der", &other_iss),
            "UNAUTHENTICATED",
        ),
        (
            "expired",
            idp.sign(
                Algorithm::RS256,
                Some("rsa-1"),
                "rsa1.der",
                &idp.claims("ext-ann", "kalamdb", -120),
            ),
            "TOKEN_EXPIRED",
        ),
        ("tampered payload", tampered, "UNAUTHENTICATED"),
        ("alg none", alg_none, "UNAUTHENTICATED"),
        ("HS256 keyed with the public key", hs_confusion, "UNAUTHENTICATED"),
        (
            "signed by another key under rsa-1",
            idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa2.der", &claims("ext-ann")),
            "UNAUTHENTICATED",
        ),
        (
            "RSA key used for ES256",
            idp.sign(Algorithm::ES256, Some("rsa-1"), "ec1.der", &claims("ext-ann")),
            "UNAUTHENTICATED",
        ),
    ];
    for (name, token, code) in cases {
        let (st, body) = s.sql_bearer(&token, "INSERT INTO notes VALUES (2, 'forged')").await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{name}: {body}"
        );
    }
    let (_, r) = s.sql_bearer(&ann, "SELECT body FROM notes").await;
    assert_eq!(rows(&r).len(), 1, "nothing forged was written");

    // rotation: a new kid makes the server fetch the keys again, once
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.publish("jwks2.json");
    let rotated = idp.sign(Algorithm::RS256, Some("rsa-2"), "rsa2.der", &claims("ext-ann"));
    assert_eq!(s.sql_bearer(&rotated, "SELECT 1").await.0, 200);
    assert_eq!(idp.fetches(), 2);
    // an unknown kid right after does not fetch again
    let unknown = idp.sign(Algorithm::RS256, Some("rsa-9"), "rsa2.der", &claims("ext-ann"));
    assert_eq!(s.sql_bearer(&unknown, "SELECT 1").await.0, 401);
    assert_eq!(idp.fetches(), 2, "refetches are rate-limited");

    // the same tokens over WebSocket
    let mut ws = s.ws("graphql-transport-ws").await;
    ws.send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {ann}") } }))
        .await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    ws.subscribe("1", "subscription { notes { body } }", json!({})).await;
    assert_eq!(ws.next_data("1").await["notes"], json!([{"body": "from ann"}]));
    s.stop().await;
}

/// An issuer's subject is an identity of its own: it never becomes the local user of
/// the same name, root included, nor inherits a dropped user's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_subjects_never_merge_with_local_users() {
    let idp = FakeIssuer::start().await;
    let trusted = idp.trusted("kalamdb");
    let s = TestServer::start_with(|c| c.trusted_issuers = vec![trusted]).await;
    s.root("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')")
        .await;
    s.user("alice", "user").await;
    s.ok_as("alice", "INSERT INTO notes VALUES (1, 'alice private')").await;
    s.root("INSERT INTO notes VALUES (1, 'root private')").await;
    s.user("gone", "user").await;
    s.ok_as("gone", "INSERT INTO notes VALUES (1, 'gone private')").await;
    s.root("DROP USER gone").await;

    for (sub, role) in [("alice", None), ("root", Some("kalam-admin")), ("gone", None)] {
        let mut c = idp.claims(sub, "kalamdb", 300);
        if let Some(r) = role {
            c["roles"] = json!(r);
        }
        let token = idp.sign(Algorithm::RS256, Some("rsa-1"), "rsa1.der", &c);
        let who = me(&s, &token).await;
        let user = who["user_id"].as_str().unwrap_or("").to_string();
        assert_ne!(user, sub, "{sub} maps to a user of its own: {who}");
        let (st, r) = s.sql_bearer(&token, "SELECT body FROM notes").await;
        assert_eq!((st, rows(&r).len()), (200, 0), "{sub} reads no local user's rows: {r}");
        assert_eq!(
            s.sql_bearer(&token, "INSERT INTO notes VALUES (2, 'from outside')")
                .await
                .0,
            200
        );
        // the same subject maps to the same user again
        assert_eq!(me(&s, &token).await["user_id"], json!(user));
    }
    // nothing landed in the local users' partitions
    let r = s.root("SELECT body FROM notes ORDER BY id").await;
    assert_eq!(rows(&r), vec![vec![json!("root private")]]);
    let r = s.ok_as("alice", "SELECT body FROM notes ORDER BY id").await;
    assert_eq!(rows(&r), vec![vec![json!("alice private")]]);
    s.stop().await;
}
