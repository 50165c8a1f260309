//! Live queries and live aggregates: a live query's window and how changes update
//! it, the evaluation threads whole reads and live aggregates run on, and their
//! counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kalamdb_auth::permissions::TableType;
use kalamdb_storage::seq::Seq;

use super::{FeedKind, LiveQueryId, Registration};
use crate::codec::pk_bytes;
use crate::context::ExecContext;
use crate::engine::{Engine, Row};
use crate::error::{EngineError, Result};
use crate::ids::TableId;
use crate::read::filter::Filter;
use crate::read::select::{BoundSelect, Rows, SelectRequest};
use crate::write::commit::AppliedChange;

/// A live query: its result, again whenever it changes.
pub struct LiveResults {
    pub id: LiveQueryId,
    engine: Arc<Engine>,
    ctx: ExecContext,
    /// The request as subscribed, bound once (a schema change ends the subscription).
    sel: Arc<BoundSelect>,
    /// The current window; `None` before the first result.
    window: Option<Window>,
    /// The versions of the rows last yielded.
    last: Option<Vec<Seq>>,
    reg: Registration,
}

/// The first rows of a live query's result, in its order: the page it shows (after its
/// offset) and a few more, so that most deletes need no read to refill it.
#[derive(Debug, Default)]
struct Window {
    rows: Vec<Row>,
    /// `rows` holds every matching row.
    complete: bool,
}

/// What [`LiveResults`] does with the changes it was sent.
enum Evaluation {
    /// Read the whole result (the start, an overflowed queue, a STREAM table).
    Full,
    /// Apply these changes to the window.
    Changes(Window, Vec<Arc<AppliedChange>>),
}

/// The rows a window keeps beyond its page.
fn window_slack(limit: usize) -> usize {
    (limit / 2).clamp(4, 256)
}

impl Window {
    /// How many rows a window of `sel` is read with; `None`: all.
    fn size(sel: &BoundSelect) -> Option<usize> {
        sel.limit
            .map(|l| sel.offset.saturating_add(l).saturating_add(window_slack(l)))
    }

    /// Whether it holds at least the page's rows, or every matching row.
    fn covers_page(&self, sel: &BoundSelect) -> bool {
        self.complete
            || sel
                .limit
                .is_none_or(|l| self.rows.len() >= sel.offset.saturating_add(l))
    }

    fn page(&self, sel: &BoundSelect) -> Vec<Row> {
        self.rows
            .iter()
            .skip(sel.offset)
            .take(sel.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Puts the current row of one changed key in place (`None`: it has none now).
    /// The window stays the first `rows.len()` matching rows in order.
    fn apply(&mut self, sel: &BoundSelect, pk: &crate::types::Pk, now: Option<Row>) {
        let schema = sel.table.current();
        if let Some(i) = self.rows.iter().position(|r| schema.pk_of(&r.1) == *pk) {
            self.rows.remove(i);
        }
        let Some(row) = now.filter(|(s, v)| sel.filter.as_ref().is_none_or(|f| f.matches(*s, v))) else {
            return;
        };
        // past the last row of an incomplete window, unread rows may come first
        let fits = self.complete || self.rows.last().is_some_and(|last| sel.compare(&row, last).is_lt());
        if !fits {
            return;
        }
        let at = self.rows.partition_point(|r| sel.compare(r, &row).is_lt());
        self.rows.insert(at, row);
        if let Some(size) = Self::size(sel)
            && self.rows.len() > size
        {
            self.rows.pop();
            self.complete = false;
        }
    }
}

impl LiveResults {
    /// Waits until the result may have changed (at once before the first result).
    pub async fn ready(&self) {
        if self.window.is_some() {
            self.reg.entry.wake.notified().await;
        }
    }

    /// The result, when it differs from the one taken before (the first always does);
    /// `None` when it is unchanged.
    pub async fn take(&mut self) -> Result<Option<Rows>> {
        let entry = &self.reg.entry;
        entry.ended()?;
        let resync = entry.resync.swap(false, Ordering::AcqRel);
        // what is queued before a whole read starts is in that read
        let changes: Vec<Arc<AppliedChange>> = entry.queue.lock().drain(..).collect();
        let eval = match self.window.take() {
            Some(w) if !resync && self.sel.table.table_type != TableType::Stream => {
                if changes.is_empty() {
                    self.window = Some(w);
                    return Ok(None);
                }
                Evaluation::Changes(w, changes)
            }
            _ => Evaluation::Full,
        };
        let window = self.engine.evaluate_live(&self.ctx, &self.sel, eval).await?;
        let page = window.page(&self.sel);
        self.window = Some(window);
        let signature: Vec<Seq> = page.iter().map(|(s, _)| *s).collect();
        if self.last.as_ref() == Some(&signature) {
            return Ok(None);
        }
        self.last = Some(signature);
        Ok(Some(Rows {
            table: self.sel.table.clone(),
            rows: page,
        }))
    }
}

/// A live aggregate's wake-ups: it says when the rows it covers may have changed
/// (coalesced: once however many changes came since it was last asked), and the
/// caller evaluates it again, on the live-query threads ([`Engine::on_live_threads`]).
pub struct LiveWatch {
    pub id: LiveQueryId,
    started: bool,
    reg: Registration,
}

impl LiveWatch {
    /// Waits until the rows may have changed (at once the first time).
    pub async fn ready(&self) {
        if self.started {
            self.reg.entry.wake.notified().await;
        }
    }

    /// Whether the rows may have changed since the last call (the first call: yes).
    pub fn take(&mut self) -> Result<bool> {
        let entry = &self.reg.entry;
        entry.ended()?;
        let resync = entry.resync.swap(false, Ordering::AcqRel);
        let changed = !std::mem::take(&mut *entry.queue.lock()).is_empty();
        let first = !std::mem::replace(&mut self.started, true);
        Ok(first || resync || changed)
    }
}

/// Counters of live-query evaluation.
#[derive(Default)]
pub(super) struct LiveStats {
    pub(super) full_reads: AtomicU64,
    pub(super) incremental: AtomicU64,
    pub(super) micros: AtomicU64,
}

/// Live-query evaluation so far, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveStatsSnapshot {
    /// Whole results read (starts, refills, resyncs).
    pub full_reads: u64,
    /// Windows updated from their changes without a whole read.
    pub incremental: u64,
    /// Time spent evaluating, in microseconds.
    pub micros: u64,
    /// Subscriptions open now (live queries and change feeds).
    pub active: u64,
}

/// The threads live queries are evaluated on: a runtime of their own, at a lower CPU
/// priority than the request workers, so that however costly a live query is, writes
/// and requests go first.
pub(super) struct LiveEval {
    rt: Option<tokio::runtime::Runtime>,
}

/// The nice value of the evaluation threads (requests run at 0).
const EVAL_NICE: i32 = 10;

impl LiveEval {
    pub(super) fn new(threads: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("kalamdb-live-eval")
            .on_thread_start(lower_priority)
            .enable_all()
            .build();
        match rt {
            Ok(rt) => Self { rt: Some(rt) },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the live-query threads; live queries are evaluated with requests");
                Self { rt: None }
            }
        }
    }

    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        match &self.rt {
            Some(rt) => rt
                .spawn(f)
                .await
                .map_err(|e| EngineError::Internal(format!("a live-query evaluation failed: {e}")))?,
            None => f.await,
        }
    }
}

impl Drop for LiveEval {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Lowers the calling thread's CPU priority (on Linux a nice value is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id only changes its nice value
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, EVAL_NICE);
    }
}

impl Engine {
    /// Subscribes to the result of a select: yields it now and whenever it changes.
    pub fn subscribe_live(
        self: &Arc<Self>,
        ctx: &ExecContext,
        table: &TableId,
        req: SelectRequest,
        label: Arc<str>,
    ) -> Result<LiveResults> {
        let sel = Arc::new(self.bind_select(ctx, table, &req)?);
        let entry = self.feed_entry(ctx, table, req.filter.as_ref(), label, FeedKind::Live)?;
        let reg = self.live.register(entry);
        Ok(LiveResults {
            id: reg.entry.id,
            engine: self.clone(),
            ctx: ctx.clone(),
            sel,
            window: None,
            last: None,
            reg,
        })
    }

    /// How much live-query evaluation has cost so far.
    pub fn live_stats(&self) -> LiveStatsSnapshot {
        self.live.stats()
    }

    /// Watches the rows of a table the caller may read that match `filter` (its own
    /// rows of a per-user table), for a live aggregate.
    pub fn subscribe_watch(
        self: &Arc<Self>,
        ctx: &ExecContext,
        table: &TableId,
        filter: Option<&Filter>,
        label: Arc<str>,
    ) -> Result<LiveWatch> {
        let entry = self.feed_entry(ctx, table, filter, label, FeedKind::Live)?;
        let reg = self.live.register(entry);
        Ok(LiveWatch {
            id: reg.entry.id,
            started: false,
            reg,
        })
    }

    /// Runs `f` on the live-query threads, at their lower CPU priority: the evaluation
    /// of a live aggregate, so that its cost never delays requests and writes.
    pub async fn on_live_threads<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.live.eval.run(async move { Ok(f.await) }).await
    }

    /// A live query's next window: its current one with the changes applied, here (a
    /// few reads by key), or, when it must be read whole (to start, or to refill a
    /// window the changes left short of its page), a read on the live-query threads.
    async fn evaluate_live(
        self: &Arc<Self>,
        ctx: &ExecContext,
        sel: &Arc<BoundSelect>,
        eval: Evaluation,
    ) -> Result<Window> {
        let started = std::time::Instant::now();
        let stats = &self.live.stats;
        let updated = match eval {
            Evaluation::Changes(mut window, changes) => {
                self.apply_live_changes(ctx, sel, &mut window, &changes).await?;
                window.covers_page(sel).then_some(window)
            }
            Evaluation::Full => None,
        };
        let window = match updated {
            Some(w) => {
                stats.incremental.fetch_add(1, Ordering::Relaxed);
                w
            }
            None => {
                let size = Window::size(sel);
                let read = BoundSelect {
                    limit: size,
                    offset: 0,
                    ..(**sel).clone()
                };
                let (engine, ctx) = (self.clone(), ctx.clone());
                let rows = self
                    .live
                    .eval
                    .run(async move { engine.select_bound(&ctx, &read).await })
                    .await?;
                stats.full_reads.fetch_add(1, Ordering::Relaxed);
                Window {
                    complete: size.is_none_or(|n| rows.len() < n),
                    rows,
                }
            }
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.micros.fetch_add(micros, Ordering::Relaxed);
        Ok(window)
    }

    /// Reads the current rows of the keys the changes touched (those the window does
    /// not already hold at that version or later) and puts each in place.
    async fn apply_live_changes(
        &self,
        ctx: &ExecContext,
        sel: &BoundSelect,
        window: &mut Window,
        changes: &[Arc<AppliedChange>],
    ) -> Result<()> {
        let schema = sel.table.current();
        let mut keys: Vec<(Vec<u8>, crate::types::Pk)> = Vec::new();
        for c in changes {
            let Some(values) = c.new.as_ref().or(c.old.as_ref()) else {
                continue;
            };
            let pk = schema.pk_of(values);
            let held = window
                .rows
                .iter()
                .any(|(seq, v)| *seq >= c.seq && schema.pk_of(v) == pk);
            if held {
                continue;
            }
            let bytes = pk_bytes(&pk)?;
            if !keys.iter().any(|(b, _)| *b == bytes) {
                keys.push((bytes, pk));
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let user = sel.table.table_type.is_per_user().then(|| ctx.subject());
        let pks: Vec<_> = keys.iter().map(|(_, pk)| pk.clone()).collect();
        let mut now: HashMap<Vec<u8>, Row> = HashMap::with_capacity(pks.len());
        for row in self.rows_by_keys(&sel.table, user, pks).await? {
            now.insert(pk_bytes(&schema.pk_of(&row.1))?, row);
        }
        for (bytes, pk) in &keys {
            window.apply(sel, pk, now.remove(bytes));
        }
        Ok(())
    }
}
