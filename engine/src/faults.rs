//! Fault injection for the crash and retry tests, compiled only with the `faults`
//! feature (which the `tests` crate turns on; `make run` and
//! `cargo build --release -p kalamdb-api` build without it, and there any fault
//! specification is refused). It comes from `KALAMDB_TEST_FAULTS`, a comma-separated
//! list of
//! - `crash@<point>`: abort the process when the job reaches `<point>`
//!   (`flush:scanned`, `flush:segment_written`, `flush:manifest_written`,
//!   `flush:hot_deleted`, `compact:segment_written`, `compact:manifest_written`);
//! - `fail@<job kind>:<n>`: make the first `n` runs of jobs of that kind fail;
//! - `sleep@<job kind>:<ms>`: make every run of jobs of that kind wait `ms` first.

#[cfg(feature = "faults")]
use std::collections::{HashMap, HashSet};
#[cfg(feature = "faults")]
use std::sync::Arc;

#[cfg(feature = "faults")]
use parking_lot::Mutex;

use crate::error::{EngineError, Result};

#[cfg(feature = "faults")]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    crash: HashSet<String>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    sleeps: HashMap<String, u64>,
}

#[cfg(feature = "faults")]
impl Faults {
    pub fn parse(spec: &str) -> Result<Self> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || EngineError::InvalidInput(format!("bad fault '{item}': use crash@<point> or fail@<kind>:<n>"));
            let (what, arg) = item.split_once('@').ok_or_else(bad)?;
            match what {
                "crash" => {
                    f.crash.insert(arg.to_string());
                }
                "fail" => {
                    let (kind, n) = arg.rsplit_once(':').ok_or_else(bad)?;
                    let n: u32 = n.parse().map_err(|_| bad())?;
                    f.failures.lock().insert(kind.to_string(), n);
                }
                "sleep" => {
                    let (kind, ms) = arg.rsplit_once(':').ok_or_else(bad)?;
                    let ms: u64 = ms.parse().map_err(|_| bad())?;
                    f.sleeps.insert(kind.to_string(), ms);
                }
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.crash.is_empty() && self.failures.lock().is_empty() && self.sleeps.is_empty()
    }

    /// How long every run of a job of `kind` is to wait before it starts working.
    pub fn sleep_ms(&self, kind: &str) -> Option<u64> {
        self.sleeps.get(kind).copied()
    }

    /// Aborts the process here when the tests asked for a crash at `point`.
    pub fn crash_point(&self, point: &str) {
        if self.crash.contains(point) {
            tracing::error!(point, "injected crash");
            std::process::abort();
        }
    }

    /// Whether this run of a job of `kind` is to fail (counting down).
    pub fn take_failure(&self, kind: &str) -> bool {
        let mut f = self.failures.lock();
        match f.get_mut(kind) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Without the `faults` feature: no faults, and none can be asked for.
#[cfg(not(feature = "faults"))]
#[derive(Debug, Clone, Default)]
pub struct Faults;

#[cfg(not(feature = "faults"))]
impl Faults {
    pub fn parse(spec: &str) -> Result<Self> {
        if spec.trim().is_empty() {
            return Ok(Faults);
        }
        Err(EngineError::InvalidInput(
            "this build has no fault injection (the `faults` feature)".into(),
        ))
    }

    pub fn is_empty(&self) -> bool {
        true
    }

    #[inline]
    pub fn sleep_ms(&self, _kind: &str) -> Option<u64> {
        None
    }

    #[inline]
    pub fn crash_point(&self, _point: &str) {}

    #[inline]
    pub fn take_failure(&self, _kind: &str) -> bool {
        false
    }
}

#[cfg(all(test, feature = "faults"))]
mod tests {
    use super::*;

    #[test]
    fn parses_and_counts_down() {
        let f = Faults::parse("crash@flush:scanned, fail@flush:2, sleep@compact:50").unwrap();
        assert_eq!(f.sleep_ms("compact"), Some(50));
        assert!(f.crash.contains("flush:scanned"));
        assert!(f.take_failure("flush"));
        assert!(f.take_failure("flush"));
        assert!(!f.take_failure("flush"));
        assert!(!f.take_failure("compact"));
        assert!(Faults::parse("explode@x").is_err());
        assert!(Faults::parse("fail@flush").is_err());
        assert!(Faults::parse("").unwrap().is_empty());
    }
}
