//! The cold tier: every answer is the same whichever tier holds the rows, through
//! flushes, updates and deletes of flushed rows, compaction, schema changes, crashes
//! at every step of a flush and restarts of the real binary.

use std::time::Duration;

use kalamdb_tests::{TestServer, rows};
use serde_json::{Value, json};

const COLUMNS: &str =
    "(id BIGINT PRIMARY KEY, name TEXT NOT NULL, cat TEXT, qty INT, price DOUBLE, born TIMESTAMP, tags JSON)";

/// The fixed dataset: 300 rows with nulls, repeats and every type of the table.
fn dataset(from: i64, to: i64) -> String {
    let rows: Vec<String> = (from..=to)
        .map(|i| {
            let cat = ["'a'", "'b'", "'c'", "NULL"][(i % 4) as usize];
            let price = if i % 5 == 0 {
                "NULL".to_string()
            } else {
                format!("{}", i as f64 * 1.25)
            };
            let born = format!("'2024-{:02}-{:02}T08:00:00Z'", 1 + (i % 12), 1 + (i % 28));
            format!(
                "({i}, 'item {i}', {cat}, {}, {price}, {born}, '{{\"i\": {i}}}')",
                i % 37
            )
        })
        .collect();
    rows.join(", ")
}

/// GraphQL documents over table field `t`, every result under the alias `r`: filters
/// with every operator, orderings, pagination, aggregates and lookups by key.
fn queries(t: &str) -> Vec<String> {
    vec![
        format!("{{ r: {t}(order_by: [{{id: asc}}]) {{ id name cat qty price born tags }} }}"),
        format!(
            r#"{{ r: {t}(where: {{_and: [{{qty: {{_gte: 10}}}}, {{_or: [{{cat: {{_in: ["a", "b"]}}}}, {{name: {{_like: "%7%"}}}}]}}], _not: {{price: {{_is_null: true}}}}}},
                 order_by: [{{cat: desc_nulls_last}}, {{qty: asc}}], limit: 15, offset: 5) {{ id cat qty }} }}"#
        ),
        format!(r#"{{ r: {t}(where: {{name: {{_ilike: "ITEM 1%"}}, cat: {{_nin: ["c"]}}}}) {{ id name }} }}"#),
        format!(
            "{{ r: {t}(where: {{id: {{_gt: 50, _lte: 120}}}}, order_by: [{{price: asc_nulls_first}}, {{id: desc}}]) {{ id price }} }}"
        ),
        format!(
            r#"{{ r: {t}(where: {{cat: {{_eq: "b"}}, name: {{_nlike: "%3%"}}, tags: {{_is_null: false}}}}, order_by: [{{qty: desc}}], limit: 7) {{ id qty }} }}"#
        ),
        format!(
            r#"{{ r: {t}(where: {{qty: {{_neq: 5}}, born: {{_gt: "2024-06-01T00:00:00Z"}}, name: {{_nilike: "%9"}}}}) {{ id }} }}"#
        ),
        format!("{{ r: {t}(where: {{id: {{_in: [1, 7, 42, 77, 150, 299, 305, 9999]}}}}) {{ id name qty }} }}"),
        // an empty page, and a page too large to be chosen by insertion
        format!("{{ r: {t}(order_by: [{{qty: desc}}], limit: 0) {{ id }} }}"),
        format!("{{ r: {t}(order_by: [{{name: desc}}], limit: 280, offset: 3) {{ id name }} }}"),
        format!(
            "{{ r: {t}_by_pk(id: 42) {{ id name qty price }} a: {t}_by_pk(id: 77) {{ name cat }} b: {t}_by_pk(id: 150) {{ id }} }}"
        ),
        format!(
            "{{ r: {t}_aggregate(group_by: [cat]) {{ aggregate {{ count }} groups {{ keys {{ cat }} aggregate {{ count sum {{ qty price }} avg {{ qty }} min {{ name born }} max {{ qty }} }} }} }} }}"
        ),
        format!(
            "{{ r: {t}_aggregate(where: {{qty: {{_lt: 30}}}}) {{ aggregate {{ count sum {{ qty }} max {{ price }} min {{ id }} }} nodes {{ id }} }} }}"
        ),
    ]
}

/// The answers of `queries` on a table.
async fn answers(s: &TestServer, t: &str) -> Vec<Value> {
    let mut out = vec![];
    for q in queries(t) {
        out.push(s.gql_ok("root", &q, json!({})).await);
    }
    let sql = [
        format!(
            "SELECT id, name, cat, qty, price, born, tags FROM {} ORDER BY id",
            t.replace('_', ".")
        ),
        format!(
            "SELECT cat, count(*), sum(qty), min(price) FROM {} GROUP BY cat ORDER BY cat NULLS LAST",
            t.replace('_', ".")
        ),
        format!(
            "SELECT id, name, cat, qty, price FROM {} WHERE id IN (77, 151, 5) ORDER BY id",
            t.replace('_', ".")
        ),
    ];
    for q in sql {
        out.push(s.root(&q).await["rows"].clone());
    }
    out
}

/// The flushed table answers exactly as its twin that stays hot.
async fn same_answers(s: &TestServer, stage: &str) -> Vec<Value> {
    let cold = answers(s, "shop_items").await;
    let hot = answers(s, "shop_mirror").await;
    for (i, (c, h)) in cold.iter().zip(&hot).enumerate() {
        assert_eq!(
            c, h,
            "{stage}: answer {i} differs between the flushed table and its hot twin"
        );
    }
    assert!(
        cold[0]["r"].as_array().is_some_and(|a| !a.is_empty()),
        "{stage}: no rows at all"
    );
    cold
}

/// `shop.items` (the table to flush) and its twin `shop.mirror` (kept hot), each with
/// the dataset.
async fn create_twins(s: &TestServer) {
    s.root("CREATE NAMESPACE shop").await;
    for t in ["items", "mirror"] {
        s.root(&format!("CREATE TABLE shop.{t} {COLUMNS} WITH (TYPE = 'SHARED')"))
            .await;
        s.root(&format!("INSERT INTO shop.{t} VALUES {}", dataset(1, 300)))
            .await;
    }
}

/// Flushes `table` and checks the job's message begins with `expected`.
async fn flush_reporting(s: &TestServer, table: &str, expected: &str) {
    let j = s.run_job(&format!("FLUSH TABLE {table}")).await;
    assert!(j["message"].as_str().unwrap().starts_with(expected), "{j}");
}

/// Flushes `shop.items` for the first time: every row goes to one segment.
async fn first_flush(s: &TestServer) {
    flush_reporting(s, "shop.items", "flushed 300 row(s) into 1 segment(s)").await;
}

/// The same mutations, applied to a table through GraphQL: updates and deletes of
/// flushed rows, an upsert of a flushed key and new rows.
async fn mutate(s: &TestServer, t: &str, round: i64) {
    let m = format!(
        r#"mutation {{
            a: update_{t}(where: {{id: {{_lte: 40}}}}, _inc: {{qty: 3}}) {{ affected_rows }}
            b: update_{t}_by_pk(pk_columns: {{id: {}}}, _set: {{name: "renamed {round}", cat: null}}) {{ id }}
            c: delete_{t}(where: {{id: {{_gt: {}, _lte: {}}}}}) {{ affected_rows }}
            d: delete_{t}_by_pk(id: {}) {{ id }}
            e: insert_{t}(objects: [{{id: 5, name: "upserted {round}", qty: 1}}, {{id: {}, name: "new {round}", cat: "a", qty: 2}}],
                          on_conflict: {{constraint: {t}_pkey, update_columns: [name, qty]}}) {{ affected_rows }}
        }}"#,
        70 + round,
        280 - round * 10,
        290 - round * 10,
        150 + round,
        1000 + round
    );
    let d = s.gql_ok("root", &m, json!({})).await;
    assert_eq!(d["a"]["affected_rows"], 40, "{d}");
    assert_eq!(d["c"]["affected_rows"], 10, "{d}");
    assert_eq!(d["d"]["id"], json!((150 + round).to_string()), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_same_through_flush_update_compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::spawn_binary(dir.path(), &[]);
    create_twins(&s).await;
    let before = same_answers(&s, "before any flush").await;
    let seqs_before = s.root("SELECT id, _seq FROM shop.items ORDER BY id").await;

    first_flush(&s).await;
    let after = same_answers(&s, "after a flush").await;
    assert_eq!(before, after, "a flush changed an answer");
    // rows keep their versions in the cold tier
    assert_eq!(seqs_before, s.root("SELECT id, _seq FROM shop.items ORDER BY id").await);

    for t in ["shop_items", "shop_mirror"] {
        mutate(&s, t, 1).await;
    }
    same_answers(&s, "after updates and deletes of flushed rows").await;

    let j = s.run_job("FLUSH TABLE shop.items").await;
    assert!(
        j["message"].as_str().unwrap().contains("into 1 segment(s)"),
        "the second flush wrote nothing: {j}"
    );
    for t in ["shop_items", "shop_mirror"] {
        mutate(&s, t, 2).await;
    }
    same_answers(&s, "after a second flush and more changes").await;

    let j = s.run_job("COMPACT TABLE shop.items").await;
    assert_eq!(j["message"], "compacted 2 segment(s) into 1", "{j}");
    let compacted = same_answers(&s, "after compaction").await;

    s.kill();
    let s = TestServer::spawn_binary(dir.path(), &[]);
    assert_eq!(compacted, same_answers(&s, "after a restart").await);
    // and the flushed table still takes writes on flushed keys
    let (status, body) = s
        .sql(
            "root",
            kalamdb_tests::ROOT_PASSWORD,
            "INSERT INTO shop.items (id, name) VALUES (42, 'dup')",
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "DUPLICATE_KEY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_that_commit_while_a_flush_runs_are_never_lost() {
    let s = std::sync::Arc::new(TestServer::start().await);
    s.root("CREATE TABLE counters (id BIGINT PRIMARY KEY, v BIGINT NOT NULL) WITH (TYPE = 'SHARED')")
        .await;
    let values: Vec<String> = (0..2000).map(|i| format!("({i}, 0)")).collect();
    s.root(&format!("INSERT INTO counters VALUES {}", values.join(",")))
        .await;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut expected = vec![0i64; 2000];
            let mut x: u64 = 0x2545_F491_4F6C_DD1D;
            for k in 1..=1500i64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = (x % 2000) as usize;
                s.root(&format!("UPDATE counters SET v = {k} WHERE id = {id}")).await;
                expected[id] = k;
            }
            expected
        })
    };
    let mut flushed = 0;
    while !writer.is_finished() {
        s.run_job("FLUSH TABLE counters").await;
        flushed += 1;
        if flushed % 3 == 0 {
            s.run_job("COMPACT TABLE counters").await;
        }
    }
    let expected = writer.await.unwrap();
    s.run_job("FLUSH TABLE counters").await;
    assert!(flushed >= 2, "the writer finished before two flushes ran");
    let got = rows(&s.root("SELECT id, v FROM counters ORDER BY id").await);
    assert_eq!(got.len(), 2000);
    for (id, row) in got.iter().enumerate() {
        assert_eq!(row[1], json!(expected[id]), "row {id} lost an update");
    }
}

/// The files of one table under a cold directory, and what its manifest lists.
fn cold_files(cold: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut files = vec![];
    let mut listed = vec![];
    let mut dirs = vec![cold.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".manifest.json") {
                let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                for seg in m["segments"].as_array().unwrap() {
                    listed.push(seg["file"].as_str().unwrap().to_string());
                }
            } else {
                files.push(name);
            }
        }
    }
    files.sort();
    listed.sort();
    (files, listed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_flush_loses_and_duplicates_nothing() {
    for point in [
        "flush:scanned",
        "flush:segment_written",
        "flush:manifest_written",
        "flush:hot_deleted",
        "compact:segment_written",
        "compact:manifest_written",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fault = format!("crash@{point}");
        let mut s = TestServer::spawn_binary(dir.path(), &[("KALAMDB_TEST_FAULTS", &fault)]);
        s.root("CREATE TABLE ledger (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')")
            .await;
        let values: Vec<String> = (0..500).map(|i| format!("({i}, 'v{i}')")).collect();
        s.root(&format!("INSERT INTO ledger VALUES {}", values.join(","))).await;
        if point.starts_with("compact") {
            // two segments to compact, the second with versions that shadow the first
            s.run_job("FLUSH TABLE ledger").await;
            s.root("UPDATE ledger SET v = 'updated' WHERE id < 100").await;
            s.run_job("FLUSH TABLE ledger").await;
        }
        s.root("UPDATE ledger SET v = 'changed' WHERE id % 7 = 0").await;
        s.root("DELETE FROM ledger WHERE id % 11 = 0").await;
        let expected = s.root("SELECT id, v, _seq FROM ledger ORDER BY id").await["rows"].clone();
        let verb = if point.starts_with("compact") {
            "COMPACT"
        } else {
            "FLUSH"
        };
        s.root(&format!("{verb} TABLE ledger")).await;
        assert!(
            s.exited_within(Duration::from_secs(30)),
            "{point}: the injected crash did not happen"
        );

        let s = TestServer::spawn_binary(dir.path(), &[]);
        assert_eq!(
            s.root("SELECT id, v, _seq FROM ledger ORDER BY id").await["rows"],
            expected,
            "{point}: rows lost, duplicated or changed by the crash"
        );
        // the job the crash interrupted is run again, and finishes
        let jobs = s
            .root(&format!(
                "SELECT job_id, retries FROM system.jobs WHERE kind = '{}' ORDER BY created_at DESC LIMIT 1",
                verb.to_lowercase()
            ))
            .await;
        let id = rows(&jobs)[0][0].as_str().unwrap().to_string();
        let j = s.wait_job(&id).await;
        assert_eq!(
            (j["status"].clone(), j["retries"].clone()),
            (json!("completed"), json!(1)),
            "{point}: {j}"
        );
        assert_eq!(
            s.root("SELECT id, v, _seq FROM ledger ORDER BY id").await["rows"],
            expected,
            "{point}: the recovered job changed rows"
        );
        // the next flush completes, and only files a manifest lists are left
        s.root("INSERT INTO ledger VALUES (1000, 'after')").await;
        s.run_job("FLUSH TABLE ledger").await;
        let (files, listed) = cold_files(&dir.path().join("cold"));
        assert_eq!(files, listed, "{point}: files the manifest does not list");
        let n = s.root("SELECT count(*), count(DISTINCT id) FROM ledger").await;
        let want = expected.as_array().unwrap().len() as i64 + 1;
        assert_eq!(rows(&n), vec![vec![json!(want), json!(want)]], "{point}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_written_under_an_old_schema_read_under_the_new_one() {
    let s = TestServer::start().await;
    s.root("CREATE TABLE evolving (id BIGINT PRIMARY KEY, a TEXT, b INT, c TEXT) WITH (TYPE = 'SHARED')")
        .await;
    let values: Vec<String> = (1..=10).map(|i| format!("({i}, 'a{i}', {i}, 'c{i}')")).collect();
    s.root(&format!("INSERT INTO evolving VALUES {}", values.join(",")))
        .await;
    s.run_job("FLUSH TABLE evolving").await;
    s.root("ALTER TABLE evolving ADD COLUMN d INT NOT NULL DEFAULT 7").await;
    s.root("ALTER TABLE evolving RENAME COLUMN a TO title").await;
    s.root("ALTER TABLE evolving DROP COLUMN c").await;
    let values: Vec<String> = (11..=15).map(|i| format!("({i}, 't{i}', {i}, 1)")).collect();
    s.root(&format!(
        "INSERT INTO evolving (id, title, b, d) VALUES {}",
        values.join(",")
    ))
    .await;
    s.run_job("FLUSH TABLE evolving").await;
    s.root("UPDATE evolving SET b = 99 WHERE id = 3").await;

    let mut want = vec![];
    for i in 1..=15i64 {
        let (title, d) = if i <= 10 {
            (format!("a{i}"), 7)
        } else {
            (format!("t{i}"), 1)
        };
        // BIGINT is a string in GraphQL
        want.push(json!({ "id": i.to_string(), "title": title, "b": if i == 3 { 99 } else { i }, "d": d }));
    }
    let want = json!({ "evolving": want });
    for stage in ["two segments and a hot row", "compacted"] {
        if stage == "compacted" {
            s.run_job("COMPACT TABLE evolving").await;
        }
        let d = s
            .gql_ok("root", "{ evolving(order_by: {id: asc}) { id title b d } }", json!({}))
            .await;
        assert_eq!(d, want, "{stage}");
        let r = s.root("SELECT * FROM evolving WHERE id = 2").await;
        let cols: Vec<&str> = r["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cols, ["id", "title", "b", "d", "_seq", "_deleted"], "{stage}");
        assert_eq!(rows(&r)[0][..4], [json!(2), json!("a2"), json!(2), json!(7)], "{stage}");
        let d = s
            .gql_ok(
                "root",
                "{ evolving_aggregate(where: {d: {_eq: 7}}) { aggregate { count sum { b } } } }",
                json!({}),
            )
            .await;
        assert_eq!(d["evolving_aggregate"]["aggregate"]["count"], 10, "{stage}");
        // lookups by key: in the old segment, the new one, and a hot row over a cold one
        let d = s
            .gql_ok(
                "root",
                "{ old: evolving_by_pk(id: \"2\") { id title b d } new: evolving_by_pk(id: \"12\") { id title b d } \
                   hot: evolving_by_pk(id: \"3\") { id title b d } none: evolving_by_pk(id: \"16\") { id } }",
                json!({}),
            )
            .await;
        let w = &want["evolving"];
        assert_eq!(
            d,
            json!({ "old": w[1], "new": w[11], "hot": w[2], "none": null }),
            "{stage}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_partitions_flush_separately_and_stay_isolated() {
    let s = TestServer::start().await;
    s.user("alice", "user").await;
    s.user("bob", "user").await;
    s.root("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')")
        .await;
    for (u, n) in [("alice", 5), ("bob", 3)] {
        let values: Vec<String> = (1..=n).map(|i| format!("({i}, '{u} {i}')")).collect();
        s.ok_as(u, &format!("INSERT INTO notes VALUES {}", values.join(",")))
            .await;
    }
    flush_reporting(&s, "notes", "flushed 8 row(s) into 2 segment(s)").await;
    s.ok_as("alice", "UPDATE notes SET body = 'edited' WHERE id = 2").await;
    s.ok_as("bob", "DELETE FROM notes WHERE id = 1").await;
    // bob cannot insert over his flushed key, alice's same key is hers alone
    let (status, code) = s.err_as("bob", "INSERT INTO notes VALUES (2, 'again')").await;
    assert_eq!((status, code.as_str()), (409, "DUPLICATE_KEY"));

    let q = "{ notes(order_by: {id: asc}) { id body } one: notes_by_pk(id: 2) { body } }";
    let a = s.gql_ok("alice", q, json!({})).await;
    let bodies: Vec<&str> = a["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["alice 1", "edited", "alice 3", "alice 4", "alice 5"]);
    assert_eq!(a["one"]["body"], "edited");
    let b = s.gql_ok("bob", q, json!({})).await;
    assert_eq!(
        b["notes"],
        json!([{ "id": 2, "body": "bob 2" }, { "id": 3, "body": "bob 3" }])
    );

    // a subscription's first result comes from both tiers too
    let mut ws = s.ws_as("bob").await;
    ws.subscribe(
        "n",
        "subscription { notes(order_by: {id: asc}) { id body } }",
        json!({}),
    )
    .await;
    assert_eq!(ws.next_data("n").await["notes"], b["notes"]);
    ws.subscribe(
        "c",
        "subscription { notes_changes(initial_batch_size: 10) { op row { id } } }",
        json!({}),
    )
    .await;
    let first = ws.next_data("c").await;
    let ids: Vec<&Value> = first["notes_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["row"]["id"])
        .collect();
    assert_eq!(ids, [&json!(2), &json!(3)]);

    let j = s.run_job("COMPACT TABLE notes").await;
    assert!(j["message"].as_str().unwrap().starts_with("compacted"), "{j}");
    assert_eq!(s.gql_ok("alice", q, json!({})).await, a);
    assert_eq!(s.gql_ok("bob", q, json!({})).await, b);
}

/// Waits for a completed job of `kind` (one the server queued itself) with `message`.
async fn wait_for_job_message(s: &TestServer, kind: &str, message: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = s
            .root(&format!(
                "SELECT message FROM system.jobs WHERE kind = '{kind}' AND status = 'completed'"
            ))
            .await;
        if rows(&r).iter().any(|row| row[0] == json!(message)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} job said '{message}': {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tombstones_are_purged_and_dropped_tables_lose_their_files() {
    let s = TestServer::start_with(|c| {
        c.engine.deleted_retention_secs = 1;
        c.engine.retention_check_secs = 1;
        c.engine.segment_delete_grace_ms = 0;
    })
    .await;
    s.root("CREATE TABLE gone (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')")
        .await;
    let values: Vec<String> = (0..100).map(|i| format!("({i}, 'v{i}')")).collect();
    s.root(&format!("INSERT INTO gone VALUES {}", values.join(","))).await;
    s.run_job("FLUSH TABLE gone").await;
    s.root("DELETE FROM gone WHERE id < 30").await;
    // a purge after the retention compacts the deleted rows away, then drops the
    // tombstones but the newest (a change feed's snapshot position rests on it)
    wait_for_job_message(&s, "retention_purge", "purged 29 tombstone(s)").await;
    let r = s.root("SELECT count(*), min(id) FROM gone").await;
    assert_eq!(rows(&r), vec![vec![json!(70), json!(30)]], "deleted rows came back");

    s.root("DROP TABLE gone").await;
    let r = s.root("SELECT job_id FROM system.jobs WHERE kind = 'cleanup'").await;
    let id = rows(&r)[0][0].as_str().unwrap().to_string();
    let j = s.wait_job(&id).await;
    assert_eq!(j["status"], "completed", "{j}");
    // the manifest and the compacted segment (the replaced one went after compaction)
    let deleted: u32 = j["message"]
        .as_str()
        .and_then(|m| m.strip_prefix("deleted "))
        .and_then(|m| m.strip_suffix(" file(s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{j}"));
    assert!(deleted >= 2, "{j}");
    s.root("CREATE TABLE gone (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')")
        .await;
    assert_eq!(rows(&s.root("SELECT count(*) FROM gone").await), vec![vec![json!(0)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_rows_expire_on_time() {
    let s = TestServer::start_with(|c| c.engine.ttl_check_secs = 1).await;
    s.user("sam", "user").await;
    s.root("CREATE TABLE pings (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'STREAM', TTL_SECONDS = 2)")
        .await;
    s.ok_as("sam", "INSERT INTO pings VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await;
    let q = "{ pings { id } }";
    assert_eq!(
        s.gql_ok("sam", q, json!({})).await["pings"].as_array().unwrap().len(),
        3
    );
    let (status, code) = s.err("root", kalamdb_tests::ROOT_PASSWORD, "FLUSH TABLE pings").await;
    assert_eq!((status, code.as_str()), (400, "INVALID_INPUT"));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        s.gql_ok("sam", q, json!({})).await["pings"],
        json!([]),
        "expired rows are still visible"
    );
    assert_eq!(
        rows(&s.ok_as("sam", "SELECT count(*) FROM pings").await),
        vec![vec![json!(0)]]
    );
    // and the eviction job deletes them from RocksDB
    wait_for_job_message(&s, "ttl_eviction", "evicted 3 expired row(s)").await;
    s.ok_as("sam", "INSERT INTO pings VALUES (1, 'again')").await;
    assert_eq!(s.gql_ok("sam", q, json!({})).await["pings"], json!([{ "id": "1" }]));
}

/// With an S3-compatible cold store (a fake that speaks the S3 protocol on loopback),
/// flushes, changes of flushed rows and compaction answer exactly as the hot twin does,
/// and the segments and manifests are objects under the configured prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_compatible_store_holds_the_segments() {
    let s3 = kalamdb_tests::FakeS3::start().await;
    let options = s3.options();
    let s = TestServer::start_with(move |c| {
        c.engine.cold_store_url = Some("s3://kalam-bucket/segments".into());
        c.engine.cold_store_options = options;
        c.engine.default_flush_policy = None;
    })
    .await;
    create_twins(&s).await;
    let before = same_answers(&s, "S3: before any flush").await;
    first_flush(&s).await;
    assert_eq!(before, same_answers(&s, "S3: after a flush").await);
    let keys = s3.keys();
    let under = |suffix: &str| {
        keys.iter()
            .filter(|k| k.starts_with("segments/shop/items/") && k.ends_with(suffix))
            .count()
    };
    assert_eq!((under(".parquet"), under(".manifest.json")), (1, 1), "{keys:?}");

    for round in 1..=2 {
        for t in ["shop_items", "shop_mirror"] {
            mutate(&s, t, round).await;
        }
        s.run_job("FLUSH TABLE shop.items").await;
        same_answers(&s, "S3: after changes of flushed rows and another flush").await;
    }
    let j = s.run_job("COMPACT TABLE shop.items").await;
    assert_eq!(j["message"], "compacted 3 segment(s) into 1", "{j}");
    same_answers(&s, "S3: after compaction").await;
}
