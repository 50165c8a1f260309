//! The role matrix, table-driven: role x table type x access level x operation. The
//! expected answers are written out here, not computed by the code under test.

use kalamdb_tests::{TestServer, pw};

const ROLES: [&str; 4] = ["user", "service", "dba", "system"];
const OPS: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/// (table, allowed per role as a string for SELECT INSERT UPDATE DELETE: Y allowed, N
/// refused with FORBIDDEN, H hidden: answered TABLE_NOT_FOUND, exactly as an unknown table)
const MATRIX: &[(&str, [&str; 4])] = &[
    //                 user    service  dba     system
    ("m.u_tab", ["YYYY", "YYYY", "YYYY", "YYYY"]),
    ("m.st_tab", ["YYYY", "YYYY", "YYYY", "YYYY"]),
    ("m.sh_public", ["YNNN", "YYYY", "YYYY", "YYYY"]),
    ("m.sh_private", ["HHHH", "YYYY", "YYYY", "YYYY"]),
    ("m.sh_restricted", ["HHHH", "HHHH", "YYYY", "YYYY"]),
    ("system.users", ["NNNN", "NNNN", "YNNN", "YNNN"]),
];

fn statement(op: &str, table: &str, id: i64) -> String {
    let sys = table.starts_with("system.");
    match (op, sys) {
        ("SELECT", _) => format!("SELECT count(*) FROM {table}"),
        ("INSERT", false) => format!("INSERT INTO {table} (id, v) VALUES ({id}, 'x')"),
        ("UPDATE", false) => format!("UPDATE {table} SET v = 'y' WHERE id = {id}"),
        ("DELETE", false) => format!("DELETE FROM {table} WHERE id = {id}"),
        ("INSERT", true) => format!("INSERT INTO {table} (user_id, role) VALUES ('u{id}', 'user')"),
        ("UPDATE", true) => format!("UPDATE {table} SET role = 'system' WHERE user_id = 'root'"),
        _ => format!("DELETE FROM {table} WHERE user_id = 'u{id}'"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_is_enforced() {
    let s = TestServer::start().await;
    s.root("CREATE NAMESPACE m").await;
    s.root("CREATE TABLE m.u_tab (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'USER')")
        .await;
    s.root("CREATE TABLE m.st_tab (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'STREAM', TTL_SECONDS = 600)")
        .await;
    for level in ["public", "private", "restricted"] {
        s.root(&format!(
            "CREATE TABLE m.sh_{level} (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED', ACCESS_LEVEL = '{}')",
            level.to_uppercase()
        ))
        .await;
    }
    for r in ROLES {
        s.user(&format!("r_{r}"), r).await;
    }
    let mut failures = vec![];
    for (ri, role) in ROLES.iter().enumerate() {
        let user = format!("r_{role}");
        for (table, expected) in MATRIX {
            for (oi, op) in OPS.iter().enumerate() {
                let expect = expected[ri].as_bytes()[oi];
                let sql = statement(op, table, ri as i64 + 1);
                let (status, body) = s.sql(&user, &pw(&user), &sql).await;
                let code = body["error"]["code"].as_str().unwrap_or("");
                let (want_status, want_code) = match expect {
                    b'Y' => (200, ""),
                    b'N' => (403, "FORBIDDEN"),
                    _ => (404, "TABLE_NOT_FOUND"),
                };
                if status != want_status || code != want_code {
                    failures.push(format!(
                        "{role} {op} {table}: expected {want_status} {want_code}, got {status} {body}"
                    ));
                }
                // hidden: the same answer, message included, as a table that does not exist
                if expect == b'H' {
                    let missing = statement(op, &format!("{table}_nope"), ri as i64 + 1);
                    let (_, other) = s.sql(&user, &pw(&user), &missing).await;
                    let strip =
                        |b: &serde_json::Value| b["error"]["message"].as_str().unwrap_or("").replace("_nope", "");
                    if strip(&other) != strip(&body) || other["error"]["code"] != body["error"]["code"] {
                        failures.push(format!(
                            "{role} {op} {table}: {body} differs from an unknown table's {other}"
                        ));
                    }
                }
            }
        }
        // DDL and user management
        let ddl_allowed = ri >= 2;
        for sql in [
            format!("CREATE TABLE m.made_by_{role} (id INT PRIMARY KEY) WITH (TYPE = 'SHARED')"),
            format!("CREATE NAMESPACE ns_{role}"),
            format!("CREATE USER new_by_{role} WITH PASSWORD 'new-password' ROLE user"),
        ] {
            let (status, body) = s.sql(&user, &pw(&user), &sql).await;
            if (status == 200) != ddl_allowed || (!ddl_allowed && status != 403) {
                failures.push(format!("{role}: {sql} -> {status} {body}"));
            }
        }
    }
    // a dba manages users up to dba only
    let (status, _) = s
        .sql(
            "r_dba",
            &pw("r_dba"),
            "CREATE USER boss WITH PASSWORD 'boss-password' ROLE system",
        )
        .await;
    if status != 403 {
        failures.push(format!("dba created a system user: {status}"));
    }
    let (status, _) = s
        .sql("r_dba", &pw("r_dba"), "ALTER USER r_system SET PASSWORD 'taken-over!'")
        .await;
    if status != 403 {
        failures.push(format!("dba changed a system user's password: {status}"));
    }
    assert!(failures.is_empty(), "role matrix violations:\n{}", failures.join("\n"));
    s.stop().await;
}
