//! Live queries and change feeds, pushed from the write path.
//!
//! The commit thread calls [`LiveHub::publish`] for every committed write request,
//! after the batch is durable and before the writer is acknowledged; it only queues
//! the changes for the hub's dispatcher thread, which matches them in commit order, so
//! no subscription's filter ever delays a write. The hub's
//! registry is keyed by partition (the table, and the user for USER and STREAM
//! tables), so a change is matched only against subscriptions that may see it. Each
//! subscription's `where` was bound once into a [`BoundFilter`] and is evaluated on the
//! changed row in memory:
//! - a change feed gets the change itself (shared as an `Arc`, never copied per
//!   subscriber), when the old or the new row matches;
//! - a live query gets the change too. It keeps its current window (the first rows
//!   of its result in order, a few more than it shows) and applies the changes to it:
//!   it reads the current rows of the changed keys by key and puts them in place. It
//!   reads its whole result again only to start, to refill a window that deletes
//!   emptied, after its queue overflowed, and for STREAM tables (whose rows expire).
//!   Whole reads (and live aggregates) run on the hub's own evaluation threads, at a
//!   lower CPU priority than requests, one evaluation per live query at a time with
//!   the changes queued since coalesced, so a costly live query delays only itself. It
//!   yields a new result only when the rows or their versions differ.
//!
//! Every subscription has a bounded queue. One that is full is ended with
//! [`EngineError::SlowConsumer`] rather than allowed to grow.
//!
//! A feed starts gap-free: it registers first, then reads its starting point (a
//! snapshot of the partition, or the change log after `since_seq`) and drops queued
//! changes the starting point already holds. A partition's snapshot holds exactly the
//! changes up to the highest `_seq` of any of its keys, tombstones included, because
//! seqs are allocated in commit order and each commit group is one atomic batch.

pub mod changelog;
pub mod results;

use results::{LiveEval, LiveStats, LiveStatsSnapshot};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use kalamdb_auth::identity::UserId;
use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use kalamdb_storage::seq::{Seq, now_millis};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::catalog::schema::TableDef;
use crate::codec::{decode_row, partition_prefix};
use crate::context::ExecContext;
use crate::engine::{Engine, Row};
use crate::error::{EngineError, Result};
use crate::ids::{StorageUid, TableId};
use crate::live::changelog::{ChangeEntry, entry_key};
use crate::read::filter::{BoundFilter, Filter};
use crate::read::reader::KeyPlan;
use crate::read::row_cache::PartitionKey;
use crate::write::commit::AppliedChange;

/// The id of one subscription, unique in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LiveQueryId(pub u64);

impl std::fmt::Display for LiveQueryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// The full result, re-sent when it changes.
    Live,
    /// Change events.
    Changes,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Live => "live",
            FeedKind::Changes => "changes",
        }
    }
}

/// One active subscription, as `system.live_queries` lists it.
#[derive(Debug, Clone)]
pub struct LiveInfo {
    pub id: LiveQueryId,
    pub user: UserId,
    pub table: TableId,
    pub kind: FeedKind,
    pub query: String,
    pub created_at_ms: u64,
    pub last_seq: Option<Seq>,
}

const OPEN: u8 = 0;
const LAGGED: u8 = 1;
const SCHEMA_CHANGED: u8 = 2;

struct SubEntry {
    id: LiveQueryId,
    key: PartitionKey,
    table: Arc<TableDef>,
    subject: UserId,
    filter: Option<BoundFilter>,
    label: Arc<str>,
    created_at_ms: u64,
    /// The seq of the last change sent (0: none yet).
    last_seq: AtomicU64,
    state: AtomicU8,
    kind: FeedKind,
    /// Changes not yet taken.
    queue: Mutex<VecDeque<Arc<AppliedChange>>>,
    /// A live query's queue overflowed: it reads its whole result again.
    resync: AtomicBool,
    /// Wakes the consumer; a wake-up given while it is busy is kept, so none is lost.
    wake: Notify,
}

impl SubEntry {
    fn relevant(&self, c: &AppliedChange) -> bool {
        let Some(f) = &self.filter else { return true };
        let m = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v| f.matches(c.seq, v));
        m(&c.new) || m(&c.old)
    }

    fn end(&self, state: u8) {
        let _ = self
            .state
            .compare_exchange(OPEN, state, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Ends the subscription and wakes its consumer, which then sees why.
    fn end_and_wake(&self, state: u8) {
        self.end(state);
        self.wake.notify_one();
    }

    fn ended(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            OPEN => Ok(()),
            LAGGED => Err(EngineError::SlowConsumer),
            _ => Err(EngineError::SchemaChanged(self.table.id.to_string())),
        }
    }
}

/// The registry of subscriptions and the fan-out of committed changes.
pub struct LiveHub {
    subs: RwLock<HashMap<PartitionKey, HashMap<LiveQueryId, Arc<SubEntry>>>>,
    /// Where live queries are evaluated.
    eval: LiveEval,
    stats: LiveStats,
    count: AtomicUsize,
    next_id: AtomicU64,
    queue_capacity: usize,
    /// Committed changes on their way to the dispatcher thread.
    dispatch: Mutex<Option<SyncSender<ToDispatcher>>>,
}

enum ToDispatcher {
    Changes(Dispatch),
    /// Answered once everything sent before it was delivered.
    #[cfg(test)]
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The changes of one committed write request, for the subscriptions of one partition.
struct Dispatch {
    key: PartitionKey,
    /// The table's definition version the changes were written under.
    version: u32,
    changes: Vec<Arc<AppliedChange>>,
}

/// Write requests the dispatcher may have waiting; past this the partition's
/// subscriptions are ended as too slow rather than the commit thread held up.
const DISPATCH_QUEUE: usize = 1 << 16;

impl LiveHub {
    /// A hub with its dispatcher thread, which matches committed changes against
    /// subscriptions' filters off the commit thread (a filter's cost never delays a
    /// write) and in commit order. The thread ends with the hub.
    /// Live queries are evaluated on `eval_threads` threads of their own.
    pub fn new(queue_capacity: usize, eval_threads: usize) -> Arc<Self> {
        let hub = Arc::new(Self {
            subs: RwLock::new(HashMap::new()),
            eval: LiveEval::new(eval_threads),
            stats: LiveStats::default(),
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            dispatch: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToDispatcher>(DISPATCH_QUEUE);
        let weak = Arc::downgrade(&hub);
        let started = std::thread::Builder::new().name("kalamdb-live".into()).spawn(move || {
            while let Ok(d) = rx.recv() {
                let Some(hub) = weak.upgrade() else { return };
                match d {
                    ToDispatcher::Changes(d) => hub.deliver(d),
                    #[cfg(test)]
                    ToDispatcher::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        match started {
            Ok(_) => *hub.dispatch.lock() = Some(tx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the live-query dispatcher; changes are matched on the commit thread")
            }
        }
        hub
    }

    fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    fn register(self: &Arc<Self>, entry: SubEntry) -> Registration {
        let entry = Arc::new(entry);
        self.subs
            .write()
            .entry(entry.key.clone())
            .or_default()
            .insert(entry.id, entry.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        Registration {
            hub: self.clone(),
            entry,
        }
    }

    fn unregister(&self, key: &PartitionKey, id: LiveQueryId) {
        let mut subs = self.subs.write();
        if let Some(m) = subs.get_mut(key)
            && m.remove(&id).is_some()
        {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if m.is_empty() {
                subs.remove(key);
            }
        }
    }

    /// Hands the changes of one committed write request to the dispatcher, for the
    /// subscriptions of its partition. Runs on the commit thread, so it never blocks
    /// and evaluates no filter: a full dispatch queue ends the partition's
    /// subscriptions as too slow instead.
    pub(crate) fn publish(&self, table: &TableDef, owner: Option<&UserId>, changes: &[AppliedChange]) {
        if self.is_empty() || changes.is_empty() {
            return;
        }
        let key: PartitionKey = (table.uid.0, owner.cloned());
        if !self.subs.read().contains_key(&key) {
            return;
        }
        let d = Dispatch {
            key,
            version: table.current().version,
            changes: changes.iter().map(|c| Arc::new(c.clone())).collect(),
        };
        let tx = self.dispatch.lock().clone();
        match tx {
            // no dispatcher thread could be started: match here
            None => self.deliver(d),
            Some(tx) => {
                if let Err(
                    TrySendError::Full(ToDispatcher::Changes(d)) | TrySendError::Disconnected(ToDispatcher::Changes(d)),
                ) = tx.try_send(ToDispatcher::Changes(d))
                {
                    tracing::warn!(
                        "the live-query dispatcher is behind; ending the partition's subscriptions as too slow"
                    );
                    if let Some(subs) = self.subs.read().get(&d.key) {
                        subs.values().for_each(|s| s.end_and_wake(LAGGED));
                    }
                }
            }
        }
    }

    /// Waits until every change published before the call reached its subscriptions.
    #[cfg(test)]
    pub(crate) async fn delivered(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let tx = self.dispatch.lock().clone();
        if let Some(tx) = tx
            && tx.send(ToDispatcher::Barrier(done)).is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Matches one write request's changes against its partition's subscriptions.
    fn deliver(&self, d: Dispatch) {
        let subs = self.subs.read();
        let Some(subs) = subs.get(&d.key) else { return };
        for sub in subs.values() {
            if sub.ended().is_err() {
                continue;
            }
            if sub.table.current().version != d.version {
                sub.end_and_wake(SCHEMA_CHANGED);
                continue;
            }
            match sub.kind {
                FeedKind::Changes => {
                    let mut queue = sub.queue.lock();
                    let before = queue.len();
                    for c in &d.changes {
                        if !sub.relevant(c) {
                            continue;
                        }
                        if queue.len() >= self.queue_capacity {
                            sub.end(LAGGED);
                            break;
                        }
                        queue.push_back(c.clone());
                    }
                    let woken = queue.len() > before || sub.ended().is_err();
                    drop(queue);
                    if woken {
                        sub.wake.notify_one();
                    }
                }
                FeedKind::Live => {
                    let mut queue = sub.queue.lock();
                    let mut woken = false;
                    for c in d.changes.iter().filter(|c| sub.relevant(c)) {
                        woken = true;
                        sub.last_seq.fetch_max(c.seq.0, Ordering::AcqRel);
                        if queue.len() >= self.queue_capacity {
                            // the result is read again whole; what is queued adds nothing
                            queue.clear();
                            sub.resync.store(true, Ordering::Release);
                        } else {
                            queue.push_back(c.clone());
                        }
                    }
                    drop(queue);
                    if woken {
                        sub.wake.notify_one();
                    }
                }
            }
        }
    }

    /// Ends every subscription of a table whose definition changed or that was dropped.
    pub(crate) fn end_table(&self, uid: StorageUid) {
        let subs = self.subs.read();
        for (key, m) in subs.iter() {
            if key.0 == uid.0 {
                m.values().for_each(|s| s.end_and_wake(SCHEMA_CHANGED));
            }
        }
    }

    /// How much live-query evaluation has cost so far.
    pub fn stats(&self) -> LiveStatsSnapshot {
        LiveStatsSnapshot {
            full_reads: self.stats.full_reads.load(Ordering::Relaxed),
            incremental: self.stats.incremental.load(Ordering::Relaxed),
            micros: self.stats.micros.load(Ordering::Relaxed),
            active: self.count.load(Ordering::Relaxed) as u64,
        }
    }

    /// Every active subscription.
    pub fn list(&self) -> Vec<LiveInfo> {
        let subs = self.subs.read();
        let mut out: Vec<LiveInfo> = subs
            .values()
            .flat_map(|m| m.values())
            .map(|s| LiveInfo {
                id: s.id,
                user: s.subject.clone(),
                table: s.table.id.clone(),
                kind: s.kind,
                query: s.label.to_string(),
                created_at_ms: s.created_at_ms,
                last_seq: Some(Seq(s.last_seq.load(Ordering::Acquire))).filter(|s| s.0 > 0),
            })
            .collect();
        out.sort_by_key(|i| i.id);
        out
    }
}

/// Keeps a subscription registered while it lives.
struct Registration {
    hub: Arc<LiveHub>,
    entry: Arc<SubEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.entry.key, self.entry.id);
    }
}

/// What a change feed yields.
#[derive(Debug, Clone)]
pub enum FeedBatch {
    /// Current rows in primary-key order. `watermark` is the position they reflect:
    /// resuming with `since_seq = watermark` continues without a gap. `reset` says the
    /// snapshot replaces a `since_seq` older than the change log keeps.
    Snapshot {
        rows: Vec<Row>,
        watermark: Seq,
        reset: bool,
    },
    /// Committed changes in commit order.
    Changes(Vec<Arc<AppliedChange>>),
}

/// Where a change feed starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedStart {
    /// Resume after this position.
    pub since_seq: Option<Seq>,
    /// Send the current matching rows first, this many per batch.
    pub initial_batch_size: Option<usize>,
}

/// Batch size of a snapshot sent because `since_seq` was too old and none was asked for.
const DEFAULT_SNAPSHOT_BATCH: usize = 1000;
/// Most changes in one [`FeedBatch::Changes`].
const MAX_CHANGE_BATCH: usize = 1000;

/// A subscription to the changes of one partition.
pub struct ChangeFeed {
    pub id: LiveQueryId,
    pub table: Arc<TableDef>,
    initial: VecDeque<FeedBatch>,
    /// Changes at or below this were in the starting point.
    watermark: Seq,
    /// The snapshot still to read, when the feed starts with one.
    pending: Option<PendingSnapshot>,
    reg: Registration,
}

struct PendingSnapshot {
    engine: Arc<Engine>,
    ctx: ExecContext,
    size: usize,
    reset: bool,
}

impl ChangeFeed {
    /// Waits until the feed may have something for [`take`](Self::take). An idle feed
    /// waits here, in a small future; the work of `take` is not held while waiting.
    pub async fn ready(&self) {
        if self.pending.is_some() || !self.initial.is_empty() {
            return;
        }
        let entry = &self.reg.entry;
        loop {
            if entry.ended().is_err() || !entry.queue.lock().is_empty() {
                return;
            }
            entry.wake.notified().await;
        }
    }

    /// The next batch, or `None` when there is none yet; never waits for a change.
    /// `Err` ends the feed (it fell behind, or its table changed).
    pub async fn take(&mut self) -> Result<Option<FeedBatch>> {
        if let Some(p) = self.pending.take() {
            let (rows, watermark) = p.engine.partition_snapshot(&self.reg.entry, &p.ctx).await?;
            self.watermark = watermark;
            let mut rows = rows.into_iter().peekable();
            let size = p.size.max(1);
            loop {
                self.initial.push_back(FeedBatch::Snapshot {
                    rows: rows.by_ref().take(size).collect(),
                    watermark,
                    reset: p.reset,
                });
                if rows.peek().is_none() {
                    break;
                }
            }
        }
        if let Some(b) = self.initial.pop_front() {
            return Ok(Some(b));
        }
        let entry = &self.reg.entry;
        entry.ended()?;
        let batch: Vec<_> = {
            let mut queue = entry.queue.lock();
            let n = queue.len().min(MAX_CHANGE_BATCH);
            queue.drain(..n).filter(|c| c.seq > self.watermark).collect()
        };
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        entry.last_seq.fetch_max(last.seq.0, Ordering::AcqRel);
        Ok(Some(FeedBatch::Changes(batch)))
    }
}

/// The change-log position below which entries may have been purged.
const LOG_FLOOR_KEY: &[u8] = b"meta/changelog_floor";

pub(crate) fn change_log_floor(store: &HotStore) -> Result<Seq> {
    Ok(match store.get(&Partition::system(), LOG_FLOOR_KEY)? {
        Some(v) => {
            Seq(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                EngineError::Internal("corrupt change-log floor".into())
            })?))
        }
        None => Seq::ZERO,
    })
}

/// Deletes change-log entries older than `retention_ms`; returns the new floor.
pub(crate) fn purge_change_log(store: &HotStore, retention_ms: u64) -> Result<Seq> {
    let floor = Seq::floor_at_millis(now_millis().saturating_sub(retention_ms));
    if floor <= change_log_floor(store)? {
        return change_log_floor(store);
    }
    let mut b = WriteBatch::new();
    b.delete_range(&Partition::change_log(), entry_key(Seq::ZERO), entry_key(floor));
    b.put(
        &Partition::system(),
        LOG_FLOOR_KEY.to_vec(),
        floor.to_be_bytes().to_vec(),
    );
    store.write(b)?;
    Ok(floor)
}

impl Engine {
    fn feed_entry(
        &self,
        ctx: &ExecContext,
        table_id: &TableId,
        filter: Option<&Filter>,
        label: Arc<str>,
        kind: FeedKind,
    ) -> Result<SubEntry> {
        let (table, filter) = self.bind_read(ctx, table_id, filter)?;
        let key: PartitionKey = (table.uid.0, Self::row_owner(&table, ctx));
        Ok(SubEntry {
            id: LiveQueryId(self.live.next_id.fetch_add(1, Ordering::Relaxed)),
            key,
            table,
            subject: ctx.subject().clone(),
            filter,
            label,
            created_at_ms: now_millis(),
            last_seq: AtomicU64::new(0),
            state: AtomicU8::new(OPEN),
            kind,
            queue: Mutex::new(VecDeque::new()),
            resync: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Subscribes to the changes of a table the caller may read (its own rows of a
    /// per-user table). `label` is what `system.live_queries` shows as the query.
    pub fn subscribe_changes(
        self: &Arc<Self>,
        ctx: &ExecContext,
        table: &TableId,
        filter: Option<&Filter>,
        start: FeedStart,
        label: Arc<str>,
    ) -> Result<ChangeFeed> {
        let entry = self.feed_entry(ctx, table, filter, label, FeedKind::Changes)?;
        let reg = self.live.register(entry);
        let entry = reg.entry.clone();
        let mut initial = VecDeque::new();
        let mut watermark = Seq::ZERO;
        // a snapshot is read when the feed is first polled, after its registration
        let snapshot = |size: usize, reset: bool| PendingSnapshot {
            engine: self.clone(),
            ctx: ctx.clone(),
            size,
            reset,
        };
        let mut pending = None;
        match (start.since_seq, start.initial_batch_size) {
            (Some(since), size) => match self.replay_change_log(&entry, since)? {
                Some((changes, end)) => {
                    watermark = end;
                    for chunk in changes.chunks(MAX_CHANGE_BATCH) {
                        initial.push_back(FeedBatch::Changes(chunk.to_vec()));
                    }
                    if let Some(last) = changes.last() {
                        entry.last_seq.store(last.seq.0, Ordering::Release);
                    }
                }
                None => pending = Some(snapshot(size.unwrap_or(DEFAULT_SNAPSHOT_BATCH), true)),
            },
            (None, Some(size)) => pending = Some(snapshot(size, false)),
            (None, None) => {}
        }
        Ok(ChangeFeed {
            id: entry.id,
            table: entry.table.clone(),
            initial,
            watermark,
            pending,
            reg,
        })
    }

    /// The matching rows of the subscription's partition and the position they reflect.
    async fn partition_snapshot(&self, entry: &SubEntry, ctx: &ExecContext) -> Result<(Vec<Row>, Seq)> {
        let user = entry.table.table_type.is_per_user().then(|| ctx.subject());
        let (rows, watermark) = self.partition_rows(&entry.table, user, &KeyPlan::All).await?;
        let rows = rows
            .into_iter()
            .filter(|(seq, values)| entry.filter.as_ref().is_none_or(|f| f.matches(*seq, values)))
            .collect();
        Ok((rows, watermark))
    }

    /// The subscription's changes after `since`, from the change log, and the log
    /// position they reach; `None` when `since` is older than the log keeps.
    fn replay_change_log(&self, entry: &SubEntry, since: Seq) -> Result<Option<(Vec<Arc<AppliedChange>>, Seq)>> {
        let floor_ok = |floor: Seq| since.0.saturating_add(1) >= floor.0;
        if !floor_ok(change_log_floor(&self.store)?) {
            return Ok(None);
        }
        let table = &entry.table;
        let prefix = partition_prefix(entry.key.1.as_ref());
        let lower = entry_key(Seq(since.0.saturating_add(1)));
        let mut it = self.store.scan(&Partition::change_log(), &lower, None)?;
        let mut out = Vec::new();
        let mut end = since;
        while let Some((k, v)) = it.next_entry()? {
            let seq = Seq(u64::from_be_bytes(
                k.try_into()
                    .map_err(|_| EngineError::Internal("corrupt change-log key".into()))?,
            ));
            end = seq;
            let e = ChangeEntry::decode(v)?;
            if e.table != StorageUid(table.uid.0) || !e.key.starts_with(&prefix) {
                continue;
            }
            let values = |b: &Option<Vec<u8>>| -> Result<Option<Vec<_>>> {
                b.as_deref().map(|b| decode_row(table, b).map(|r| r.values)).transpose()
            };
            let change = AppliedChange {
                kind: e.kind,
                seq,
                new: values(&e.new_row)?,
                old: values(&e.old_row)?,
            };
            if entry.relevant(&change) {
                out.push(Arc::new(change));
            }
        }
        // a purge that ran before the scan began may have removed part of the range
        if !floor_ok(change_log_floor(&self.store)?) {
            return Ok(None);
        }
        Ok(Some((out, end)))
    }

    /// Purges change-log entries older than the configured retention.
    pub fn purge_change_log(&self) -> Result<Seq> {
        purge_change_log(&self.store, self.config.change_log_retention_secs.saturating_mul(1000))
    }
}

#[cfg(test)]
mod tests;
