//! What the jobs do: flush a partition's hot rows to a Parquet segment, compact a
//! partition's segments into one, delete a dropped table's files, evict expired rows of
//! STREAM tables and purge old tombstones. Each is safe to run again after a crash at
//! any point: a flush first deletes files its manifest does not list and skips hot
//! rows the manifest already covers.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use kalamdb_auth::identity::UserId;
use kalamdb_auth::permissions::TableType;
use kalamdb_storage::cold::manifest::{Manifest, SegmentMeta};
use kalamdb_storage::cold::reader::ReadRequest;
use kalamdb_storage::hot_store::{Partition, WriteBatch};
use kalamdb_storage::keys::prefix_successor;
use kalamdb_storage::seq::{Seq, now_millis};
use parking_lot::Mutex;

use crate::catalog::schema::{FlushPolicy, TableDef};
use crate::codec::{decode_header, decode_pk, key_user, partition_prefix, pk_bytes, split_row_key};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::ids::StorageUid;
use crate::jobs::{CancelFlag, JobFailure, JobKind, JobRecord, JobTarget};
use crate::read::reader::KeyPlan;
use crate::tiers::cold::{
    BuiltSegment, SegmentBuilder, conform, dir_user, partition_dir, pk_arrays, pk_keys, plan_allows, row_at,
    segment_out_schema, table_prefix,
};
use crate::types::Pk;

pub(super) type JobResult<T> = std::result::Result<T, JobFailure>;

/// Rows written per table since its last flush was queued, and since when.
#[derive(Default)]
pub struct Unflushed(Mutex<HashMap<u64, (u64, u64)>>);

impl Unflushed {
    pub fn add(&self, uid: u64, rows: u64) {
        let mut m = self.0.lock();
        let e = m.entry(uid).or_insert((0, now_millis()));
        e.0 += rows;
    }
    fn get(&self, uid: u64) -> Option<(u64, u64)> {
        self.0.lock().get(&uid).copied()
    }
    fn reset(&self, uid: u64) {
        self.0.lock().remove(&uid);
    }
}

/// Rows deleted in a table since its last purge after which one is queued at once.
pub(crate) const PURGE_AFTER_DELETES: u64 = 10_000;

/// When the scheduler last queued the periodic jobs.
#[derive(Default)]
struct Schedule {
    ttl_at: u64,
    purge_at: u64,
}

pub(super) fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

/// Whether a segment may hold the key (by its key statistics).
pub(super) fn cold_may_hold(table: &TableDef, manifest: &Manifest, pk: &Pk) -> bool {
    let plan = KeyPlan::Points(vec![pk.clone()]);
    manifest.segments.iter().any(|s| plan_allows(table, s, &plan))
}

impl Engine {
    /// Starts the loop that queues policy-driven jobs and runs due ones.
    pub(crate) fn spawn_job_runner(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let jobs = self.jobs.clone();
        for t in self.catalog.tables() {
            if t.table_type != TableType::Stream && self.flush_policy_of(&t).is_some() {
                // the rows written before the restart are the hot ones (a flush deletes
                // what it moves): RocksDB's estimate of them, so that a rows-only
                // policy still fires however often the server restarts
                let hot = self.store.estimated_keys(&Partition::table(t.uid.0)).unwrap_or(0);
                self.unflushed.add(t.uid.0, hot.max(1));
            }
            // an index left building without a job (its job failed for good) is built again
            if t.indexes
                .iter()
                .any(|i| i.state == crate::catalog::schema::IndexState::Building)
                && self.jobs.active(JobKind::IndexBuild, t.uid).is_none()
            {
                self.submit_quietly(JobKind::IndexBuild, &t);
            }
        }
        tokio::spawn(async move {
            let mut schedule = Schedule {
                ttl_at: 0,
                purge_at: now_millis(),
            };
            loop {
                let next = {
                    let Some(engine) = weak.upgrade() else { return };
                    engine.schedule(&mut schedule);
                    engine.start_due_jobs();
                    engine.jobs.next_due_ms()
                };
                let wait = next
                    .map_or(1000, |due| due.saturating_sub(now_millis()))
                    .clamp(10, 1000);
                tokio::select! {
                    _ = jobs.wake.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                }
            }
        });
    }

    fn flush_policy_of(&self, t: &TableDef) -> Option<FlushPolicy> {
        t.flush_policy.or(self.config.default_flush_policy)
    }

    fn submit_quietly(&self, kind: JobKind, t: &TableDef) {
        let target = JobTarget {
            table: t.id.clone(),
            uid: t.uid,
        };
        if let Err(e) = self.jobs.submit(kind, target, now_millis()) {
            tracing::warn!(error = %e, table = %t.id, "cannot queue a {} job", kind.as_str());
        }
    }

    /// Queues the jobs that flush policies, TTLs and retention call for.
    fn schedule(&self, s: &mut Schedule) {
        let now = now_millis();
        let tables = self.catalog.tables();
        for t in &tables {
            if t.table_type == TableType::Stream {
                continue;
            }
            let (Some(policy), Some((rows, since))) = (self.flush_policy_of(t), self.unflushed.get(t.uid.0)) else {
                continue;
            };
            let due = policy.rows.is_some_and(|n| rows >= n)
                || policy
                    .interval_secs
                    .is_some_and(|i| now.saturating_sub(since) >= i * 1000);
            if due {
                self.unflushed.reset(t.uid.0);
                self.submit_quietly(JobKind::Flush, t);
            }
        }
        for t in tables.iter().filter(|t| t.table_type != TableType::Stream) {
            if self.deleted.get(t.uid.0).is_some_and(|(n, _)| n >= PURGE_AFTER_DELETES) {
                self.deleted.reset(t.uid.0);
                self.submit_quietly(JobKind::RetentionPurge, t);
            }
        }
        if now.saturating_sub(s.ttl_at) >= self.config.ttl_check_secs * 1000 {
            s.ttl_at = now;
            for t in tables
                .iter()
                .filter(|t| t.table_type == TableType::Stream && t.ttl_seconds.is_some())
            {
                self.submit_quietly(JobKind::TtlEviction, t);
            }
        }
        if now.saturating_sub(s.purge_at) >= self.config.retention_check_secs * 1000 {
            s.purge_at = now;
            for t in tables.iter().filter(|t| t.table_type != TableType::Stream) {
                self.submit_quietly(JobKind::RetentionPurge, t);
            }
        }
    }

    fn start_due_jobs(self: &Arc<Self>) {
        let started = match self.jobs.start_due(now_millis(), self.jobs.max_concurrent()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start jobs");
                return;
            }
        };
        for (record, cancel) in started {
            let engine = self.clone();
            tokio::spawn(async move {
                let run = std::panic::AssertUnwindSafe(engine.run_job(&record, &cancel)).catch_unwind();
                let outcome = match run.await {
                    Ok(o) => o,
                    Err(_) => Err(JobFailure::Error(EngineError::Internal("the job panicked".into()))),
                };
                if let Err(JobFailure::Error(EngineError::StorageFull)) = &outcome {
                    engine.store.mark_full();
                }
                engine.jobs.finish(&record.id, outcome, now_millis());
            });
        }
    }

    async fn run_job(&self, job: &JobRecord, cancel: &CancelFlag) -> JobResult<String> {
        tracing::info!(job = %job.id, kind = job.kind.as_str(), table = %job.target.table, "job started");
        let faults = &self.config.faults;
        if let Some(ms) = faults.sleep_ms(job.kind.as_str()) {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            cancel.check()?;
        }
        if faults.take_failure(job.kind.as_str()) {
            return Err(EngineError::Internal("injected failure".into()).into());
        }
        if job.kind == JobKind::Cleanup {
            let prefix = table_prefix(&job.target.table);
            let n = self.cold.store.delete_table(&prefix, job.target.uid.0).await?;
            return Ok(format!("deleted {n} file(s)"));
        }
        let Some(table) = self.catalog.table_by_uid(job.target.uid) else {
            return Ok("the table no longer exists".into());
        };
        match job.kind {
            JobKind::Flush => self.flush_table(&table, cancel).await,
            JobKind::Compact => self.compact_table(&table, cancel).await,
            JobKind::TtlEviction => self.evict_expired(&table).await,
            JobKind::RetentionPurge => self.purge_deleted(&table, cancel).await,
            JobKind::IndexBuild => self.build_indexes(&table, &job.id, cancel).await,
            JobKind::Cleanup => unreachable!("handled above"),
        }
    }

    /// The serialization point of flushes and compactions of one table.
    pub(crate) fn table_lock(&self, uid: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.table_locks.lock().entry(uid).or_default().clone()
    }

    /// The users that have hot rows in a per-user table.
    fn hot_users(&self, table: &TableDef) -> Result<Vec<UserId>> {
        let part = Partition::table(table.uid.0);
        let mut users = vec![];
        let mut lower: Vec<u8> = vec![];
        loop {
            let mut it = self.store.scan(&part, &lower, None)?;
            let Some((k, _)) = it.next_entry()? else { break };
            let Some(u) = key_user(k).and_then(|u| UserId::parse(&u).ok()) else {
                break;
            };
            match prefix_successor(&partition_prefix(Some(&u))) {
                Some(next) => lower = next,
                None => {
                    users.push(u);
                    break;
                }
            }
            users.push(u);
        }
        Ok(users)
    }

    /// The partitions of a table: one, or one per user of a per-user table (those with
    /// hot rows, and with `cold` also those with segments).
    pub(crate) async fn partitions(&self, table: &TableDef, cold: bool) -> Result<Vec<Option<UserId>>> {
        if !table.table_type.is_per_user() {
            return Ok(vec![None]);
        }
        let mut users = self.hot_users(table)?;
        if cold {
            for d in self.cold.store.subdirs(&table_prefix(&table.id)).await? {
                if let Some(u) = dir_user(&d)
                    && !users.contains(&u)
                {
                    users.push(u);
                }
            }
        }
        Ok(users.into_iter().map(Some).collect())
    }

    async fn flush_table(&self, table: &Arc<TableDef>, cancel: &CancelFlag) -> JobResult<String> {
        if table.table_type == TableType::Stream {
            return Ok("STREAM tables stay in the hot tier".into());
        }
        let lock = self.table_lock(table.uid.0);
        let _guard = lock.lock().await;
        let (mut rows, mut bytes, mut segments, mut deleted) = (0, 0, 0, 0);
        for user in self.partitions(table, false).await? {
            cancel.check()?;
            let (r, b, d) = self.flush_partition(table.uid.0, user).await?;
            rows += r;
            bytes += b;
            segments += (r > 0) as u64;
            deleted += d;
        }
        if deleted > 0 {
            // the flushed versions leave RocksDB's memtable and files, once for the whole
            // table (not per partition, which would rewrite the rest each time): a lookup
            // of a cold key then finds nothing hot at once instead of passing over them
            let (store, part) = (self.store.clone(), Partition::table(table.uid.0));
            tokio::task::spawn_blocking(move || store.compact(&part))
                .await
                .map_err(internal)??;
        }
        Ok(format!(
            "flushed {rows} row(s) into {segments} segment(s) ({bytes} bytes)"
        ))
    }

    /// Flushes one partition: scan, write the segment, record it in the manifest, then
    /// delete the hot rows the manifest now covers. Returns (rows, bytes) written.
    /// Writes a built segment as file `id` of the partition and describes it for the
    /// manifest (rows at or below `covered` are in the cold tier once it is listed).
    async fn store_segment(
        &self,
        table: &TableDef,
        dir: &kalamdb_storage::cold::ColdDir,
        id: u64,
        built: &BuiltSegment,
        covered: Seq,
    ) -> Result<SegmentMeta> {
        let key_name = table.current().leading_pk().name.to_string();
        let bytes = self
            .cold
            .store
            .write_segment(dir, id, &built.batches, &key_name)
            .await?;
        Ok(SegmentMeta {
            id,
            file: dir.segment_file(id),
            rows: built.rows,
            bytes,
            min_seq: built.min_seq.0,
            max_seq: built.max_seq.0,
            covered_seq: covered.0,
            schema_version: built.schema_version,
            columns: built.columns.clone(),
            created_ms: now_millis(),
            handle: Default::default(),
        })
    }

    async fn flush_partition(&self, uid: u64, user: Option<UserId>) -> JobResult<(u64, u64, u64)> {
        let faults = &self.config.faults;
        // the definition as of now: rows may have been written under a newer version
        let table = self
            .catalog
            .table_by_uid(StorageUid(uid))
            .ok_or_else(|| EngineError::TableNotFound(format!("table #{uid}")))?;
        let dir = partition_dir(&table, user.as_ref());
        self.cold.store.delete_unlisted(&dir).await?;
        let manifest = self.cold.store.manifest(&dir).await?;
        let (store, t, u, covered) = (self.store.clone(), table.clone(), user.clone(), manifest.covered_seq);
        let (built, high) = tokio::task::spawn_blocking(move || -> Result<(BuiltSegment, Seq)> {
            let reader = crate::read::reader::PartitionReader {
                store: &store,
                table: &t,
                user: u.as_ref(),
            };
            let mut b = SegmentBuilder::new(t.current());
            let mut high = Seq::ZERO;
            let mut failed = None;
            reader.scan_stored(&KeyPlan::All, |_, row| {
                high = high.max(row.seq);
                // rows at or below `covered` are in a segment already (a crash came
                // between the manifest and the hot deletes)
                if !row.deleted
                    && row.seq.0 > covered
                    && let Err(e) = b.push(row.seq, &row.values)
                {
                    failed = Some(e);
                    return false;
                }
                true
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            Ok((b.finish()?, high))
        })
        .await
        .map_err(internal)??;
        faults.crash_point("flush:scanned");
        let mut written = (0, 0);
        let manifest = if built.rows > 0 {
            let id = manifest.next_segment;
            let seg = self.store_segment(&table, &dir, id, &built, high).await?;
            faults.crash_point("flush:segment_written");
            let size = seg.bytes;
            let mut next = (*manifest).clone();
            next.segments.push(seg);
            next.next_segment = id + 1;
            next.covered_seq = next.covered_seq.max(high.0);
            written = (built.rows, size);
            let m = self.cold.store.commit_manifest(&dir, next).await?;
            faults.crash_point("flush:manifest_written");
            m
        } else {
            manifest
        };
        let deleted = if manifest.covered_seq > 0 {
            self.delete_covered(&table, user, manifest).await?
        } else {
            0
        };
        faults.crash_point("flush:hot_deleted");
        Ok((written.0, written.1, deleted))
    }

    /// Deletes the hot rows a partition's manifest covers, and the tombstones at or
    /// below its `covered_seq` that no segment may hold. Runs between two commit
    /// groups, so a row updated meanwhile (a higher `_seq`) is never touched.
    async fn delete_covered(
        &self,
        table: &Arc<TableDef>,
        user: Option<UserId>,
        manifest: Arc<Manifest>,
    ) -> Result<u64> {
        let prefix = partition_prefix(user.as_ref());
        let covered = Seq(manifest.covered_seq);
        let (t, skip) = (table.clone(), prefix.len());
        // the rows move to a segment: their index entries stay
        self.delete_hot_where(table, prefix, false, move |k, seq, deleted| {
            seq <= covered
                && (!deleted || decode_pk(t.current(), &k[skip..]).is_some_and(|pk| !cold_may_hold(&t, &manifest, &pk)))
        })
        .await
    }

    async fn compact_table(&self, table: &Arc<TableDef>, cancel: &CancelFlag) -> JobResult<String> {
        if table.table_type == TableType::Stream {
            return Ok("STREAM tables have no segments".into());
        }
        let lock = self.table_lock(table.uid.0);
        let _guard = lock.lock().await;
        let (mut before, mut after) = (0, 0);
        for user in self.partitions(table, true).await? {
            cancel.check()?;
            if let Some((b, a)) = self.compact_partition(table, user, cancel).await? {
                before += b;
                after += a;
            }
        }
        Ok(format!("compacted {before} segment(s) into {after}"))
    }

    /// Rewrites a partition's segments as one, sorted by key, in the current schema,
    /// without the versions newer segments or hot rows shadow. Returns the segment
    /// counts before and after, or `None` when there was nothing to do.
    pub(super) async fn compact_partition(
        &self,
        table: &Arc<TableDef>,
        user: Option<UserId>,
        cancel: &CancelFlag,
    ) -> JobResult<Option<(usize, usize)>> {
        let faults = &self.config.faults;
        let table = self
            .catalog
            .table_by_uid(table.uid)
            .ok_or_else(|| EngineError::TableNotFound(table.id.to_string()))?;
        let dir = partition_dir(&table, user.as_ref());
        self.cold.store.delete_unlisted(&dir).await?;
        let manifest = self.cold.store.manifest(&dir).await?;
        if manifest.is_empty() {
            return Ok(None);
        }
        // the newest hot version of every key: it shadows any cold one below it
        let mut hot: HashMap<Vec<u8>, Seq> = HashMap::new();
        let prefix = partition_prefix(user.as_ref()).len();
        self.reader(&table, user.as_ref())
            .scan_stored(&KeyPlan::All, |k, row| {
                hot.insert(k[prefix..].to_vec(), row.seq);
                true
            })?;
        let segs: Vec<&SegmentMeta> = manifest.newest_first().collect();
        let read = self.cold.read_segments(&dir, &segs, ReadRequest::default).await?;
        let n = table.current().columns.len();
        let all: Vec<usize> = (0..=n).collect();
        let out = Arc::new(segment_out_schema(&table, &all));
        let mut seen = std::collections::HashSet::new();
        let mut conformed = Vec::with_capacity(read.len());
        let mut kept: Vec<(usize, usize)> = vec![];
        let mut dropped = 0u64;
        for batch in read.iter().flatten().flatten() {
            let pk = pk_arrays(&table, batch).ok_or_else(|| internal("a segment without its key"))?;
            let keys = pk_keys(&table, &pk)?;
            let b = conform(&table, batch, &all, &out)?;
            for (i, k) in keys.into_iter().enumerate() {
                let seq = Seq(seq_at(&b, n, i));
                let newer_hot = hot.get(&k).is_some_and(|h| *h > seq);
                if seen.insert(k) && !newer_hot {
                    kept.push((conformed.len(), i));
                } else {
                    dropped += 1;
                }
            }
            conformed.push(b);
        }
        if segs.len() < 2 && dropped == 0 {
            return Ok(None);
        }
        cancel.check()?;
        // sort the kept rows by key, in the hot tier's (encoded) key order
        let mut rows = Vec::with_capacity(kept.len());
        for (b, i) in kept {
            let row = row_at(&table, &conformed[b], i)?;
            rows.push((pk_bytes(&table.current().pk_of(&row.1))?, row));
        }
        drop(conformed);
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut builder = SegmentBuilder::new(table.current());
        for (_, (seq, values)) in &rows {
            builder.push(*seq, values)?;
        }
        let built = builder.finish()?;
        let old_files: Vec<String> = manifest.segments.iter().map(|s| s.file.clone()).collect();
        let mut next = Manifest::new(vec![], manifest.next_segment + 1, manifest.covered_seq);
        if built.rows > 0 {
            let id = manifest.next_segment;
            let seg = self
                .store_segment(&table, &dir, id, &built, Seq(manifest.covered_seq))
                .await?;
            faults.crash_point("compact:segment_written");
            next.segments.push(seg);
        }
        let after = next.segments.len();
        self.cold.store.commit_manifest(&dir, next).await?;
        faults.crash_point("compact:manifest_written");
        // readers that loaded the old manifest may still be reading its files: they go
        // after a grace period (or, should the process stop first, with the next flush
        // or compaction, which deletes whatever the manifest does not list)
        let (store, grace) = (self.cold.store.clone(), self.config.segment_delete_grace_ms);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(grace)).await;
            if let Err(e) = store.delete_segments(&dir, &old_files).await {
                tracing::warn!(error = %e, "cannot delete compacted segments");
            }
        });
        Ok(Some((segs.len(), after)))
    }

    /// Deletes the rows of a STREAM table older than its TTL (queries stopped showing
    /// them when they expired).
    async fn evict_expired(&self, table: &Arc<TableDef>) -> JobResult<String> {
        let Some(floor) = self.reader(table, None).ttl_floor() else {
            return Ok("the table has no TTL".into());
        };
        let n = self
            .delete_hot_where(table, vec![], true, move |_, seq, _| seq < floor)
            .await?;
        Ok(format!("evicted {n} expired row(s)"))
    }

    /// Deletes the hot versions under key `prefix` (every partition of the table when
    /// empty) for which `doomed(key, seq, deleted)` holds, between two commit groups;
    /// with `drop_entries`, the index entries of the rows deleted too (rows that leave
    /// both tiers).
    pub(super) async fn delete_hot_where(
        &self,
        table: &Arc<TableDef>,
        prefix: Vec<u8>,
        drop_entries: bool,
        doomed: impl Fn(&[u8], Seq, bool) -> bool + Send + 'static,
    ) -> Result<u64> {
        let uid = table.uid.0;
        let catalog = self.catalog.clone();
        self.commit
            .exclusive(move |store| -> Result<u64> {
                let part = Partition::table(uid);
                let upper = prefix_successor(&prefix);
                let mut runs = DeleteRuns::new(part.clone());
                let indexed = catalog
                    .table_by_uid(StorageUid(uid))
                    .filter(|t| drop_entries && !t.indexes.is_empty());
                let mut entries = WriteBatch::new();
                {
                    let mut it = store.scan(&part, &prefix, upper.as_deref())?;
                    while let Some((k, v)) = it.next_entry()? {
                        let (_, seq, deleted) = decode_header(v)?;
                        let doom = doomed(k, seq, deleted);
                        if doom
                            && !deleted
                            && let Some(t) = &indexed
                        {
                            let row = crate::codec::decode_row(t, v)?;
                            let (user, pk_enc) = split_row_key(k, t.table_type.is_per_user())?;
                            for w in crate::index::entry_writes(t, user.as_ref(), pk_enc, Some(&row.values), None)? {
                                if let crate::index::EntryWrite::Delete(key) = w {
                                    entries.delete(&Partition::index(uid), key);
                                }
                            }
                        }
                        runs.visit(k, doom);
                    }
                }
                let (mut batch, n) = runs.finish();
                batch.append(entries);
                if n > 0 {
                    store.write(batch)?;
                }
                Ok(n)
            })
            .await?
    }
}

/// Deletes of keys visited in order, as one range delete per run of consecutive doomed
/// keys: after a flush, scans skip one range tombstone instead of a million point ones.
struct DeleteRuns {
    part: Partition,
    batch: WriteBatch,
    /// The first and last key of the run being built, and its length.
    run: Option<(Vec<u8>, Vec<u8>, u64)>,
    n: u64,
}

impl DeleteRuns {
    fn new(part: Partition) -> Self {
        Self {
            part,
            batch: WriteBatch::new(),
            run: None,
            n: 0,
        }
    }

    fn visit(&mut self, key: &[u8], doomed: bool) {
        if !doomed {
            self.close();
            return;
        }
        self.n += 1;
        match &mut self.run {
            Some((_, last, len)) => {
                last.clear();
                last.extend_from_slice(key);
                *len += 1;
            }
            None => self.run = Some((key.to_vec(), key.to_vec(), 1)),
        }
    }

    fn close(&mut self) {
        match self.run.take() {
            Some((first, _, 1)) => self.batch.delete(&self.part, first),
            Some((first, mut last, _)) => {
                // the smallest key above `last`: the range is [first, last]
                last.push(0);
                self.batch.delete_range(&self.part, first, last);
            }
            None => {}
        }
    }

    fn finish(mut self) -> (WriteBatch, u64) {
        self.close();
        (self.batch, self.n)
    }
}

fn seq_at(b: &datafusion::arrow::array::RecordBatch, seq_col: usize, i: usize) -> u64 {
    use datafusion::arrow::array::AsArray;
    b.column(seq_col)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(i) as u64
}
