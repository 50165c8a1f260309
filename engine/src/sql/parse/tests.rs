//! Tests of the statement parser and its bounds.

#[test]
fn splits_scripts() {
    let s = split_script("-- c;\nSELECT 'a;b'; ; INSERT INTO t VALUES ('it''s;');\nSELECT \"x;\"");
    assert_eq!(
        s,
        vec!["SELECT 'a;b'", "INSERT INTO t VALUES ('it''s;')", "SELECT \"x;\""]
    );
}

use super::*;
use crate::error::ErrorCode;

/// A statement too long to be given a stack is refused with its own code (the
/// fuzzer found a 200 MB one that made the stack's mapping fail, a panic).
#[test]
fn statements_past_the_bound_are_too_large() {
    let long = format!("SELECT {}1", "1+".repeat(MAX_STATEMENT_BYTES / 2));
    assert_eq!(parse(&long).unwrap_err().code(), ErrorCode::PayloadTooLarge);
}

#[test]
fn own_statements() {
    assert_eq!(
        parse("CREATE NAMESPACE IF NOT EXISTS App;").unwrap(),
        Statement::CreateNamespace {
            name: NamespaceId::parse("app").unwrap(),
            if_not_exists: true
        }
    );
    assert_eq!(
        parse("CREATE USER alice WITH PASSWORD 'secret-pw' ROLE service").unwrap(),
        Statement::CreateUser {
            name: "alice".into(),
            password: Some("secret-pw".into()),
            role: Role::Service,
            if_not_exists: false
        }
    );
    assert_eq!(
        parse("ALTER USER alice SET ROLE 'dba'").unwrap(),
        Statement::AlterUser {
            name: "alice".into(),
            change: UserChange::Role(Role::Dba)
        }
    );
    assert!(matches!(
        parse("DESCRIBE TABLE app.todos").unwrap(),
        Statement::DescribeTable { .. }
    ));
    assert!(matches!(parse("SELECT 1").unwrap(), Statement::Sql(_)));
    assert!(matches!(
        parse("flush table app.t").unwrap(),
        Statement::FlushTable { .. }
    ));
    assert_eq!(
        parse("FLUSH ALL IN app").unwrap(),
        Statement::FlushAll {
            namespace: Some(NamespaceId::parse("app").unwrap())
        }
    );
    assert!(matches!(
        parse("COMPACT TABLE t").unwrap(),
        Statement::CompactTable { .. }
    ));
    assert_eq!(
        parse("KILL JOB 'FL-1'").unwrap(),
        Statement::KillJob { id: "FL-1".into() }
    );
    assert!(parse("KILL JOB 1 2").is_err());
}

#[test]
fn deep_statements_are_refused_with_a_code_however_long() {
    let code = |sql: &str| parse(sql).err().map(|e| e.code());
    let chain = |n: usize, op: &str, term: &str| vec![term; n].join(op);
    assert_eq!(code(&format!("SELECT {}", chain(200, "+", "1"))), None);
    for sql in [
        format!("SELECT {}", chain(1000, "+", "1")),
        format!("SELECT * FROM a.b WHERE {}", chain(1000, " AND ", "x = 1")),
        format!("UPDATE a.b SET t = {} WHERE id = 1", chain(1000, " || ", "'a'")),
        // 1 MiB of operators: parsed (and dropped) on a stack sized for it
        format!("SELECT {}", chain(500_000, "+", "1")),
        format!("SELECT {}", chain(300, "-", "(SELECT 1)")),
    ] {
        assert_eq!(code(&sql), Some(ErrorCode::QueryTooDeep), "{}", &sql[..40]);
    }
    // nesting with parentheses is refused before the parser recurses
    for (open, close) in [("(", ")"), ("[", "]")] {
        let nested = format!("SELECT {}1{}", open.repeat(5000), close.repeat(5000));
        assert_eq!(code(&nested), Some(ErrorCode::QueryTooDeep));
    }
    let query = format!("{}SELECT 1{}", "(".repeat(300), ")".repeat(300));
    assert_eq!(code(&query), Some(ErrorCode::QueryTooDeep));
    // malformed nests of keyword constructs, which the parser would retry at every
    // level (time doubling per level), are refused before it starts
    for open in ["CAST(", "ARRAY[", "CAST(CASE WHEN ", "CASE WHEN "] {
        let nested = format!("SELECT {}x", open.repeat(64));
        assert_eq!(code(&nested), Some(ErrorCode::QueryTooDeep), "{open}");
    }
    let fine = "SELECT CASE WHEN max(CAST(x AS INT)) IN (1, 2) THEN ARRAY[1] ELSE NULL END FROM a.b";
    assert_eq!(code(fine), None);
    assert_eq!(code(&format!("SELECT {}1{}", "(".repeat(60), ")".repeat(60))), None);
}

#[test]
fn subqueries_that_select_nothing_are_refused() {
    for sql in ["SELECT (SELECT FROM t) + 1", "SELECT 1 WHERE 2 IN (SELECT FROM t)"] {
        let e = parse(sql).err().map(|e| e.code());
        assert_eq!(e, Some(crate::error::ErrorCode::InvalidInput), "{sql}");
    }
    assert!(parse("SELECT (SELECT id FROM t) + 1").is_ok());
}

#[test]
fn rejects_garbage_and_multiple_statements() {
    assert!(matches!(parse("SELEC 1"), Err(EngineError::Syntax(_))));
    assert!(matches!(parse("SELECT 1; SELECT 2"), Err(EngineError::Syntax(_))));
    assert!(matches!(parse(""), Err(EngineError::Syntax(_))));
    assert!(matches!(
        parse("ALTER USER x SET ROLE god"),
        Err(EngineError::InvalidInput(_))
    ));
    let deep = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
    assert!(matches!(parse(&deep), Err(EngineError::TooDeep(_))));
}
