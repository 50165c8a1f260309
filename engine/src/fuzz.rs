//! A fuzzer of the SQL entry: statements made at random and by mutating a seed corpus
//! (insertions, deletions, repeats that build long operator chains, deep nesting) go
//! through parsing, planning and execution as a plain user and as root. None may
//! panic, abort or overflow the stack; each is answered or refused with a code.
//!
//! `make test` runs it for `FUZZ_SECS` (a few seconds); `make fuzz` for much longer.
//! `FUZZ_SEED` repeats a run, and `FUZZ_TRACE` prints each input before it runs.
//! It runs on a thread with the server's request stack, as requests do.

use std::time::{Duration, Instant};

use kalamdb_auth::identity::{Role, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::context::ExecContext;
use crate::engine::{Engine, EngineConfig};

/// Statements that exercise each part of the dialect; mutated into the rest.
pub const SQL_SEEDS: &[&str] = &[
    "SELECT * FROM f.t WHERE id = 1",
    "SELECT id, s FROM f.t WHERE v > 1.5 AND s LIKE 'a%' ORDER BY id DESC LIMIT 3 OFFSET 1",
    "SELECT count(*), max(v), min(s) FROM f.t GROUP BY s HAVING count(*) > 0",
    "INSERT INTO f.t (id, s, v) VALUES (1, 'a', 1.5), (2, 'b', NULL)",
    "UPDATE f.t SET s = s || 'x', v = v + 1 WHERE id > 2",
    "DELETE FROM f.t WHERE s ~ '^a' OR id IN (1, 2, 3)",
    "SELECT a.id FROM f.t a JOIN f.t b ON a.id = b.id",
    "SELECT CASE WHEN v > 1 THEN 'x' ELSE 'y' END, CAST(id AS TEXT) FROM f.t",
    "SELECT length(repeat(s, 3)), lpad(s, 5, '*'), replace(s, 'a', 'bb') FROM f.t",
    "SELECT (SELECT max(id) FROM f.t) + 1",
    "WITH c AS (SELECT id FROM f.t) SELECT * FROM c WHERE EXISTS (SELECT 1 FROM f.t)",
    "SELECT * FROM f.t WHERE s IS NOT NULL AND NOT (id < 0)",
    "SELECT $1 + 1, $2",
    "CREATE TABLE f.u (id INT PRIMARY KEY, x TEXT NOT NULL) WITH (TYPE = 'SHARED')",
    "ALTER TABLE f.t ADD COLUMN w INT",
    "SHOW TABLES",
    "DESCRIBE f.t",
    "SELECT * FROM system.users",
    "EXPLAIN SELECT * FROM f.t WHERE id = 2",
    "FLUSH TABLE f.t",
    "SELECT arrow_cast('x', 'LargeUtf8') || 'y'",
    "SELECT now(), CURRENT_USER()",
];

/// Pieces that mutations insert.
pub const SQL_PIECES: &[&str] = &[
    "(",
    ")",
    " SELECT ",
    " FROM ",
    " WHERE ",
    "+",
    "-",
    "*",
    "/",
    "||",
    " AND ",
    " OR ",
    " NOT ",
    "'",
    "\"",
    ";",
    ",",
    "1",
    "-1",
    "9223372036854775807",
    "1e308",
    "NULL",
    "f.t",
    "id",
    "s",
    "v",
    "=",
    "<",
    " IN ",
    " LIKE ",
    "%",
    "\\",
    "::",
    "[",
    "]",
    "repeat",
    "999999999999",
    " ORDER BY ",
    " GROUP BY ",
    " LIMIT ",
    " JOIN ",
    " CASE WHEN ",
    " UNION ALL ",
    " DISTINCT ",
    "é",
    "\n",
    "--",
    "/*",
    "$1",
    "~",
    " VALUES ",
    " DROP TABLE ",
    " KILL JOB ",
];

fn boundary(s: &str, rng: &mut StdRng) -> usize {
    let mut i = rng.random_range(0..=s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One mutation of `s`: an inserted piece, a deleted range, a range repeated (long
/// chains), or the whole wrapped in parentheses (deep nesting).
fn mutate(s: &str, pieces: &[&str], rng: &mut StdRng) -> String {
    let mut s = s.to_string();
    match rng.random_range(0..5) {
        0 => {
            let i = boundary(&s, rng);
            s.insert_str(i, pieces[rng.random_range(0..pieces.len())]);
        }
        1 => {
            let (a, b) = (boundary(&s, rng), boundary(&s, rng));
            s.replace_range(a.min(b)..a.max(b), "");
        }
        2 => {
            let (a, b) = (boundary(&s, rng), boundary(&s, rng));
            let part = s[a.min(b)..a.max(b)].to_string();
            let times = rng.random_range(1..400);
            s.insert_str(a.max(b), &part.repeat(times));
        }
        3 => {
            let depth = rng.random_range(1..600);
            s = format!("{}{s}{}", "(".repeat(depth), ")".repeat(depth));
        }
        _ => {
            s = (0..rng.random_range(1..40))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
        }
    }
    s
}

/// Inputs made from a seed corpus for `FUZZ_SECS` seconds (`FUZZ_SEED` repeats a run).
pub struct Fuzz<'a> {
    pub rng: StdRng,
    until: Instant,
    seeds: &'a [&'a str],
    pieces: &'a [&'a str],
    pub runs: u64,
    /// `FUZZ_TRACE` set: each input is printed before it runs (to find one that crashes).
    trace: bool,
}

impl<'a> Fuzz<'a> {
    /// A run of `FUZZ_SECS` seconds (`default_secs` unless set) over `seeds`, whose
    /// mutations insert `pieces`.
    pub fn new(default_secs: u64, seeds: &'a [&'a str], pieces: &'a [&'a str]) -> Self {
        let secs = std::env::var("FUZZ_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_secs);
        let seed: u64 = std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("fuzzing for {secs} s with FUZZ_SEED={seed} over {} seeds", seeds.len());
        Self {
            rng: StdRng::seed_from_u64(seed),
            until: Instant::now() + Duration::from_secs(secs),
            seeds,
            pieces,
            runs: 0,
            trace: std::env::var_os("FUZZ_TRACE").is_some(),
        }
    }

    /// The next input, until the time is up.
    pub fn next_input(&mut self) -> Option<String> {
        if Instant::now() >= self.until {
            eprintln!("{} inputs", self.runs);
            return None;
        }
        let mut input = self.seeds[self.rng.random_range(0..self.seeds.len())].to_string();
        for _ in 0..self.rng.random_range(0..4) {
            input = mutate(&input, self.pieces, &mut self.rng);
        }
        self.runs += 1;
        if self.trace {
            eprintln!("#{} {input:?}", self.runs);
        }
        Some(input)
    }
}

/// An engine on `dir` for fuzzing, with a USER table `f.t (id BIGINT, s TEXT, v
/// DOUBLE)` holding two rows of the user `fuzzer`; returns the engine, root and that
/// user. `tune` adjusts the configuration first.
pub async fn fuzz_engine(
    dir: &std::path::Path,
    tune: impl FnOnce(&mut EngineConfig),
) -> (std::sync::Arc<Engine>, ExecContext, ExecContext) {
    let mut cfg = EngineConfig::new(dir);
    cfg.bcrypt_cost = 4;
    cfg.statement_timeout_ms = 2_000;
    tune(&mut cfg);
    let engine = Engine::open(cfg).await.expect("open");
    let root = ExecContext::system();
    for sql in [
        "CREATE NAMESPACE f",
        "CREATE TABLE f.t (id BIGINT PRIMARY KEY, s TEXT, v DOUBLE) WITH (TYPE = 'USER')",
    ] {
        engine.execute_sql(&root, sql, &[]).await.expect("schema");
    }
    let user = ExecContext::new(UserId::parse("fuzzer").expect("id"), Role::User);
    engine
        .execute_sql(
            &user,
            "INSERT INTO f.t (id, s, v) VALUES (1, 'a', 1.0), (2, 'ab', 2.5)",
            &[],
        )
        .await
        .expect("rows");
    (engine, root, user)
}

/// Runs `f` on a thread with the server's request stack and a runtime of its own.
pub fn on_request_stack<F: Future<Output = ()> + Send + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(16 << 20)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f());
        })
        .expect("thread")
        .join()
        .expect("the fuzzed code panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn fuzz_sql_statements() {
        on_request_stack(|| async {
            let dir = tempfile::tempdir().expect("temp dir");
            let (engine, root, user) = fuzz_engine(dir.path(), |cfg| {
                cfg.max_result_bytes = 1 << 20;
                cfg.max_query_memory_bytes = 64 << 20;
            })
            .await;
            let mut internal = 0;
            let mut fuzz = Fuzz::new(5, SQL_SEEDS, SQL_PIECES);
            let params = [serde_json::json!(1), serde_json::json!("x")];
            while let Some(sql) = fuzz.next_input() {
                let ctx = if fuzz.rng.random_range(0..20) == 0 {
                    &root
                } else {
                    &user
                };
                if let Err(e) = engine.execute_sql(ctx, &sql, &params).await
                    && e.code() == ErrorCode::Internal
                {
                    internal += 1;
                    eprintln!("internal error for {sql:?}: {e}");
                }
            }
            assert!(fuzz.runs > 0);
            eprintln!("{internal} internal errors");
            // the engine still answers
            let r = engine.execute_sql(&user, "SELECT 1", &[]).await;
            assert!(r.is_ok(), "{r:?}");
        });
    }
}
