//! Durability against the real binary: acknowledged writes survive SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kalamdb_tests::{ROOT_PASSWORD, basic, rows};
use serde_json::{Value, json};

fn kalamdb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KALAMDB_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/e2e-* -> target/<profile>/kalamdb
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("kalamdb")
}

/// Starts `kalamdb serve` and waits for its `listening on` line.
fn spawn(data: &std::path::Path) -> (Child, String) {
    let bin = kalamdb_bin();
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("KALAMDB_ROOT_PASSWORD", ROOT_PASSWORD)
        .env("KALAMDB_BCRYPT_COST", "4")
        .env("KALAMDB_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with `make test`)", bin.display()));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not report its address");
    (child, url)
}

async fn sql(client: &reqwest::Client, url: &str, user: &str, pw: &str, sql: &str) -> Value {
    let resp = client
        .post(format!("{url}/v1/sql"))
        .header("authorization", basic(user, pw))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "{sql}");
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut child, url) = spawn(dir.path());
    sql(&client, &url, "root", ROOT_PASSWORD, "CREATE NAMESPACE d").await;
    sql(
        &client,
        &url,
        "root",
        ROOT_PASSWORD,
        "CREATE TABLE d.events (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')",
    )
    .await;
    sql(
        &client,
        &url,
        "root",
        ROOT_PASSWORD,
        "CREATE USER keeper WITH PASSWORD 'keeper-password' ROLE dba",
    )
    .await;

    // 400 single-row inserts from 16 concurrent writers, then one 600-row batch
    const WRITERS: i64 = 16;
    const PER_WRITER: i64 = 25;
    let mut tasks = vec![];
    for w in 0..WRITERS {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let id = w * PER_WRITER + i;
                sql(
                    &client,
                    &url,
                    "root",
                    ROOT_PASSWORD,
                    &format!("INSERT INTO d.events VALUES ({id}, 'w{w}')"),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let values: Vec<String> = (400..1000).map(|i| format!("({i}, 'batch')")).collect();
    sql(
        &client,
        &url,
        "root",
        ROOT_PASSWORD,
        &format!("INSERT INTO d.events VALUES {}", values.join(",")),
    )
    .await;
    let before = sql(&client, &url, "root", ROOT_PASSWORD, "SELECT max(_seq) FROM d.events").await;
    let max_seq_before = rows(&before)[0][0].as_i64().unwrap();

    // no graceful anything: SIGKILL right after the last acknowledgement
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, url) = spawn(dir.path());
    let r = sql(
        &client,
        &url,
        "keeper",
        "keeper-password",
        "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM d.events",
    )
    .await;
    assert_eq!(rows(&r), vec![vec![json!(1000), json!(1000), json!(0), json!(999)]]);
    sql(
        &client,
        &url,
        "root",
        ROOT_PASSWORD,
        "INSERT INTO d.events VALUES (1000, 'after')",
    )
    .await;
    let r = sql(
        &client,
        &url,
        "root",
        ROOT_PASSWORD,
        "SELECT _seq FROM d.events WHERE id = 1000",
    )
    .await;
    assert!(
        rows(&r)[0][0].as_i64().unwrap() > max_seq_before,
        "_seq went backwards after restart"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
