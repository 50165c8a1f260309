//! The job system: background work (flush, compaction, cleanup after DROP TABLE, STREAM
//! TTL eviction, retention purge) recorded in `system.jobs`, so that it survives
//! restarts. Jobs run at most `max_concurrent_jobs` at a time, are retried with
//! exponential backoff, can be killed, and an active job (queued, running or waiting
//! to retry) absorbs a second request with the same idempotency key.
//!
//! On start, a job the previous process left running is queued again (it counts as a
//! retry) or failed once it has used up its retries; every job kind is written so
//! that running it again after a crash finishes what the crashed run began.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kalamdb_storage::{hot_store::HotStore, hot_store::Partition, hot_store::WriteBatch, keys::prefix_successor};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::ids::{StorageUid, TableId};

const JOB_PREFIX: &str = "jobs/";
/// The longest a job failed by a full device waits before it tries again.
const STORAGE_FULL_MAX_BACKOFF_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Flush,
    Compact,
    Cleanup,
    TtlEviction,
    RetentionPurge,
    IndexBuild,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Flush => "flush",
            JobKind::Compact => "compact",
            JobKind::Cleanup => "cleanup",
            JobKind::TtlEviction => "ttl_eviction",
            JobKind::RetentionPurge => "retention_purge",
            JobKind::IndexBuild => "index_build",
        }
    }
    /// The prefix of this kind's job ids.
    fn prefix(self) -> &'static str {
        match self {
            JobKind::Flush => "FL",
            JobKind::Compact => "CO",
            JobKind::Cleanup => "CL",
            JobKind::TtlEviction => "TT",
            JobKind::RetentionPurge => "RP",
            JobKind::IndexBuild => "IB",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    /// Failed, and queued again after a backoff.
    Retrying,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running | JobStatus::Retrying)
    }
}

/// A job's id: its kind's prefix and a number unique for the life of the data directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn parse(s: &str) -> Result<Self> {
        let ok = s.len() <= 40
            && s.split_once('-').is_some_and(|(p, n)| {
                p.len() == 2 && p.bytes().all(|b| b.is_ascii_uppercase()) && n.bytes().all(|b| b.is_ascii_digit())
            });
        if ok {
            Ok(JobId(s.to_string()))
        } else {
            Err(EngineError::JobNotFound(s.chars().take(40).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The number after the prefix (a `_seq`, so it orders jobs by creation).
    fn number(&self) -> u64 {
        self.0
            .split_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(u64::MAX)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The table a job works on (by uid too: cleanup runs after the table is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTarget {
    pub table: TableId,
    pub uid: StorageUid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub target: JobTarget,
    pub message: Option<String>,
    pub error: Option<String>,
    pub retries: u32,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub idempotency_key: String,
    /// A job waiting to retry does not start before this time.
    pub not_before_ms: u64,
}

impl JobRecord {
    pub fn params(&self) -> String {
        format!("{{\"table\":\"{}\",\"uid\":{}}}", self.target.table, self.target.uid.0)
    }
}

/// Why a run of a job ended without success.
#[derive(Debug)]
pub enum JobFailure {
    Cancelled,
    Error(EngineError),
    /// An error that running again cannot fix: the job fails without retries.
    Fatal(EngineError),
}

impl From<EngineError> for JobFailure {
    fn from(e: EngineError) -> Self {
        JobFailure::Error(e)
    }
}

impl From<kalamdb_storage::error::StorageError> for JobFailure {
    fn from(e: kalamdb_storage::error::StorageError) -> Self {
        JobFailure::Error(e.into())
    }
}

/// What a running job checks to learn it was killed.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn check(&self) -> std::result::Result<(), JobFailure> {
        if self.0.load(Ordering::Acquire) {
            Err(JobFailure::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub max_concurrent: usize,
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    /// Finished jobs older than this are forgotten.
    pub keep_finished_ms: u64,
}

/// What `submit` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub id: JobId,
    pub status: JobStatus,
    /// `false` when an active job with the same idempotency key absorbed the request.
    pub created: bool,
}

pub struct Jobs {
    store: Arc<HotStore>,
    config: JobsConfig,
    state: Mutex<State>,
    pub(crate) wake: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    records: BTreeMap<JobId, JobRecord>,
    running: BTreeMap<JobId, CancelFlag>,
}

fn key(id: &JobId) -> Vec<u8> {
    format!("{JOB_PREFIX}{id}").into_bytes()
}

impl Jobs {
    /// Loads `system.jobs` and settles what the last process left unfinished.
    pub fn load(store: Arc<HotStore>, config: JobsConfig, now_ms: u64) -> Result<Self> {
        let sys = Partition::system();
        let mut records = BTreeMap::new();
        {
            let upper = prefix_successor(JOB_PREFIX.as_bytes());
            let mut it = store.scan(&sys, JOB_PREFIX.as_bytes(), upper.as_deref())?;
            while let Some((_, v)) = it.next_entry()? {
                let r: JobRecord =
                    serde_json::from_slice(v).map_err(|e| EngineError::Internal(format!("system.jobs: {e}")))?;
                records.insert(r.id.clone(), r);
            }
        }
        let jobs = Self {
            store,
            config,
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
        };
        let mut batch = WriteBatch::new();
        for r in records.values_mut() {
            if r.status != JobStatus::Running {
                continue;
            }
            if r.retries < jobs.config.max_retries {
                r.status = JobStatus::Queued;
                r.retries += 1;
                r.message = Some("queued again: the server stopped while it ran".into());
                r.not_before_ms = now_ms;
            } else {
                r.status = JobStatus::Failed;
                r.finished_ms = Some(now_ms);
                r.error = Some("the server stopped while it ran, and it has no retries left".into());
            }
            batch.put(&sys, key(&r.id), encode(r)?);
        }
        let horizon = now_ms.saturating_sub(jobs.config.keep_finished_ms);
        records.retain(|id, r| {
            let old = !r.status.is_active() && r.finished_ms.is_some_and(|f| f < horizon);
            if old {
                batch.delete(&sys, key(id));
            }
            !old
        });
        if !batch.is_empty() {
            jobs.store.write(batch)?;
        }
        jobs.state.lock().records = records;
        Ok(jobs)
    }

    fn persist(&self, r: &JobRecord) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(&Partition::system(), key(&r.id), encode(r)?);
        self.store.write(b)?;
        Ok(())
    }

    /// Queues a job unless an active one has the same idempotency key.
    pub fn submit(&self, kind: JobKind, target: JobTarget, now_ms: u64) -> Result<Submitted> {
        let idempotency_key = format!("{}:{}", kind.as_str(), target.uid.0);
        let mut st = self.state.lock();
        if let Some(r) = st
            .records
            .values()
            .find(|r| r.idempotency_key == idempotency_key && r.status.is_active())
        {
            return Ok(Submitted {
                id: r.id.clone(),
                status: r.status,
                created: false,
            });
        }
        let seq = self.store.seq().next();
        let record = JobRecord {
            id: JobId(format!("{}-{}", kind.prefix(), seq.0)),
            kind,
            status: JobStatus::Queued,
            target,
            message: None,
            error: None,
            retries: 0,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            idempotency_key,
            not_before_ms: now_ms,
        };
        self.persist(&record)?;
        let out = Submitted {
            id: record.id.clone(),
            status: record.status,
            created: true,
        };
        st.records.insert(record.id.clone(), record);
        drop(st);
        self.wake.notify_one();
        Ok(out)
    }

    /// Queued jobs that may start now, oldest first, at most `slots` of them; each is
    /// marked running.
    pub(crate) fn start_due(&self, now_ms: u64, slots: usize) -> Result<Vec<(JobRecord, CancelFlag)>> {
        let mut st = self.state.lock();
        let free = slots.saturating_sub(st.running.len());
        // oldest first: ids grow with the time they were made
        let mut due: Vec<(u64, JobId)> = st
            .records
            .values()
            .filter(|r| matches!(r.status, JobStatus::Queued | JobStatus::Retrying) && r.not_before_ms <= now_ms)
            .map(|r| (r.id.number(), r.id.clone()))
            .collect();
        due.sort();
        let due: Vec<JobId> = due.into_iter().take(free).map(|(_, id)| id).collect();
        let mut out = vec![];
        for id in due {
            let Some(r) = st.records.get_mut(&id) else { continue };
            let mut started = r.clone();
            started.status = JobStatus::Running;
            started.started_ms = Some(now_ms);
            // a start that cannot be recorded (a full disk) leaves the job as it was, to
            // be picked again once a write succeeds: never running only in memory
            if let Err(e) = self.persist(&started) {
                tracing::warn!(job = %id, error = %e, "cannot record a job's start; trying again later");
                r.not_before_ms = now_ms.saturating_add(self.config.backoff_base_ms);
                continue;
            }
            *r = started.clone();
            let flag = CancelFlag::default();
            st.running.insert(id, flag.clone());
            out.push((started, flag));
        }
        Ok(out)
    }

    /// Records how a run ended: completed, cancelled, retried after a backoff, or
    /// failed for good.
    pub(crate) fn finish(&self, id: &JobId, outcome: std::result::Result<String, JobFailure>, now_ms: u64) {
        let mut st = self.state.lock();
        st.running.remove(id);
        let Some(r) = st.records.get_mut(id) else { return };
        match outcome {
            Ok(message) => {
                r.status = JobStatus::Completed;
                r.message = Some(message);
                r.finished_ms = Some(now_ms);
            }
            Err(JobFailure::Cancelled) => {
                r.status = JobStatus::Cancelled;
                r.message = Some("killed".into());
                r.finished_ms = Some(now_ms);
            }
            Err(JobFailure::Fatal(e)) => {
                tracing::warn!(job = %r.id, error = %e, "job failed for good");
                r.error = Some(format!("{}: {e}", e.code().as_str()));
                r.status = JobStatus::Failed;
                r.finished_ms = Some(now_ms);
            }
            Err(JobFailure::Error(e)) => {
                tracing::warn!(job = %r.id, error = %e, "job failed");
                r.error = Some(e.to_string());
                // a full device is waited out, however long it takes: the job runs
                // again once space comes back, at most a minute later
                let waits_for_space = e.code() == crate::error::ErrorCode::StorageFull;
                if waits_for_space || r.retries < self.config.max_retries {
                    let mut backoff = self.config.backoff_base_ms.saturating_mul(1u64 << r.retries.min(16));
                    if waits_for_space {
                        backoff = backoff.min(STORAGE_FULL_MAX_BACKOFF_MS);
                    }
                    r.retries = r.retries.saturating_add(1);
                    r.status = JobStatus::Retrying;
                    r.not_before_ms = now_ms + backoff;
                } else {
                    r.status = JobStatus::Failed;
                    r.finished_ms = Some(now_ms);
                }
            }
        }
        let r = r.clone();
        drop(st);
        if let Err(e) = self.persist(&r) {
            tracing::error!(job = %r.id, error = %e, "cannot record a job's end");
        }
        self.wake.notify_one();
    }

    /// Kills a job: a queued one is cancelled at once, a running one at its next check.
    pub fn kill(&self, id: &JobId, now_ms: u64) -> Result<JobStatus> {
        let mut st = self.state.lock();
        if let Some(flag) = st.running.get(id) {
            flag.cancel();
            return Ok(JobStatus::Running);
        }
        let r = st
            .records
            .get_mut(id)
            .ok_or_else(|| EngineError::JobNotFound(id.to_string()))?;
        if !r.status.is_active() {
            return Err(EngineError::InvalidInput(format!(
                "job {id} already ended ({})",
                r.status.as_str()
            )));
        }
        r.status = JobStatus::Cancelled;
        r.message = Some("killed".into());
        r.finished_ms = Some(now_ms);
        let r = r.clone();
        drop(st);
        self.persist(&r)?;
        Ok(JobStatus::Cancelled)
    }

    /// Shows how a running job is getting on (in its `message`).
    pub fn progress(&self, id: &JobId, message: String) {
        let mut st = self.state.lock();
        let Some(r) = st.records.get_mut(id) else { return };
        r.message = Some(message);
        let r = r.clone();
        drop(st);
        if let Err(e) = self.persist(&r) {
            tracing::warn!(job = %r.id, error = %e, "cannot record a job's progress");
        }
    }

    /// The active job of this kind on this table, if any.
    pub fn active(&self, kind: JobKind, uid: StorageUid) -> Option<JobId> {
        self.state
            .lock()
            .records
            .values()
            .find(|r| r.kind == kind && r.target.uid == uid && r.status.is_active())
            .map(|r| r.id.clone())
    }

    pub fn list(&self) -> Vec<JobRecord> {
        self.state.lock().records.values().cloned().collect()
    }

    pub fn get(&self, id: &JobId) -> Option<JobRecord> {
        self.state.lock().records.get(id).cloned()
    }

    pub fn max_concurrent(&self) -> usize {
        self.config.max_concurrent.max(1)
    }

    /// When the next waiting job becomes due, if any is waiting.
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        self.state
            .lock()
            .records
            .values()
            .filter(|r| matches!(r.status, JobStatus::Queued | JobStatus::Retrying))
            .map(|r| r.not_before_ms)
            .min()
    }
}

fn encode(r: &JobRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(r).map_err(|e| EngineError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NamespaceId, TableName};
    use kalamdb_storage::hot_store::StoreOptions;

    fn target() -> JobTarget {
        JobTarget {
            table: TableId::new(NamespaceId::public(), TableName::parse("t").unwrap()),
            uid: StorageUid(3),
        }
    }

    fn config() -> JobsConfig {
        JobsConfig {
            max_concurrent: 2,
            max_retries: 2,
            backoff_base_ms: 100,
            keep_finished_ms: 1000,
        }
    }

    /// A job whose start cannot be written stays queued, is not joined as running by
    /// later submissions' callers, and starts once writes succeed again.
    #[test]
    fn a_start_that_cannot_be_saved_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(HotStore::open(dir.path(), &StoreOptions::default()).unwrap());
        let jobs = Jobs::load(store.clone(), config(), 0).unwrap();
        let a = jobs.submit(JobKind::Flush, target(), 10).unwrap();
        // every write of a job record fails now
        store.drop_partition(&Partition::system()).unwrap();
        assert!(jobs.start_due(20, 2).unwrap().is_empty());
        assert!(jobs.state.lock().running.is_empty());
        let r = jobs.get(&a.id).unwrap();
        assert_eq!(r.status, JobStatus::Queued);
        assert!(r.not_before_ms > 20, "{r:?}");
        store.create_partition(&Partition::system()).unwrap();
        assert!(jobs.start_due(20, 2).unwrap().is_empty(), "not before its backoff");
        let started = jobs.start_due(20 + config().backoff_base_ms, 2).unwrap();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].0.id, a.id);
        assert_eq!(jobs.get(&a.id).unwrap().status, JobStatus::Running);
    }

    #[test]
    fn idempotency_retries_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(HotStore::open(dir.path(), &StoreOptions::default()).unwrap());
        let jobs = Jobs::load(store.clone(), config(), 0).unwrap();
        let a = jobs.submit(JobKind::Flush, target(), 10).unwrap();
        let b = jobs.submit(JobKind::Flush, target(), 11).unwrap();
        assert!(a.created && !b.created);
        assert_eq!(a.id, b.id);
        assert!(a.id.as_str().starts_with("FL-"));
        let c = jobs.submit(JobKind::Compact, target(), 12).unwrap();
        assert!(c.created && c.id.as_str().starts_with("CO-"));

        let started = jobs.start_due(20, 1).unwrap();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].0.id, a.id);
        // a failure is retried after base * 2^retries
        jobs.finish(&a.id, Err(JobFailure::Error(EngineError::Internal("boom".into()))), 30);
        let r = jobs.get(&a.id).unwrap();
        assert_eq!((r.status, r.retries, r.not_before_ms), (JobStatus::Retrying, 1, 130));
        assert_eq!(jobs.start_due(40, 2).unwrap().len(), 1); // only the compaction is due
        let started = jobs.start_due(130, 2).unwrap();
        assert_eq!(started[0].0.id, a.id);

        // the process dies with both running: both are queued again on load
        drop(jobs);
        let jobs = Jobs::load(store.clone(), config(), 500).unwrap();
        let r = jobs.get(&a.id).unwrap();
        assert_eq!((r.status, r.retries), (JobStatus::Queued, 2));
        let r = jobs.get(&c.id).unwrap();
        assert_eq!((r.status, r.retries), (JobStatus::Queued, 1));
        // and one out of retries fails
        jobs.start_due(500, 2).unwrap();
        drop(jobs);
        let jobs = Jobs::load(store, config(), 600).unwrap();
        assert_eq!(jobs.get(&a.id).unwrap().status, JobStatus::Failed);
        assert_eq!(jobs.get(&c.id).unwrap().status, JobStatus::Queued);
        assert_eq!(jobs.kill(&c.id, 700).unwrap(), JobStatus::Cancelled);
        assert!(jobs.kill(&c.id, 700).is_err());
        assert!(JobId::parse("FL-12").is_ok());
        assert!(JobId::parse("../x").is_err());
    }
}
