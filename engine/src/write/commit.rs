//! The commit pipeline: one writer thread takes every pending write request, checks
//! each against the rows as they are at that moment (primary-key uniqueness,
//! compare-and-set on `_seq`, `ON CONFLICT`), allocates `_seq`s in commit order and
//! writes all of them as one RocksDB batch with one fsync (group commit). A request is
//! all-or-nothing: if any of its rows fails, none of them is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use kalamdb_auth::identity::UserId;
use kalamdb_auth::permissions::TableType;
use kalamdb_storage::{hot_store::HotStore, hot_store::Partition, hot_store::WriteBatch, seq::Seq};
use tokio::sync::oneshot;

use crate::catalog::Catalog;
use crate::catalog::schema::TableDef;
use crate::codec::{decode_header, decode_row, encode_row, encode_tombstone, pk_bytes, row_key};
use crate::error::{EngineError, Result};
use crate::index::{EntryWrite, PendingEntries, duplicate, entry_writes, unique_conflict};
use crate::live::LiveHub;
use crate::live::changelog::{ChangeKind, encode_entry, entry_key};
use crate::read::row_cache::{PartitionKey, RowCache};
use crate::tiers::cold::{ColdTier, partition_dir};
use crate::tiers::flush::Unflushed;
use crate::types::{Pk, Value};
use crate::write::row_expr::RowExpr;

/// What an insert does when its primary key exists.
#[derive(Debug, Clone, PartialEq)]
pub enum OnConflict {
    Error,
    DoNothing,
    /// Assign these columns (current schema indexes) on the existing row.
    DoUpdate(Vec<(usize, RowExpr)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// A full row in the current schema's column order, defaults already applied.
    Insert {
        values: Vec<Value>,
        on_conflict: OnConflict,
    },
    /// Assigns columns of the row with this key. With `expected_seq`, fails with a
    /// write conflict unless the row is still at that version.
    Update {
        pk: Pk,
        expected_seq: Option<Seq>,
        set: Vec<(usize, RowExpr)>,
    },
    Delete {
        pk: Pk,
        expected_seq: Option<Seq>,
    },
}

pub struct WriteRequest {
    pub table: Arc<TableDef>,
    /// The owner of the rows, for per-user tables.
    pub user: Option<UserId>,
    pub ops: Vec<WriteOp>,
}

/// One row change that was committed.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedChange {
    pub kind: ChangeKind,
    pub seq: Seq,
    /// The row after the change (none for deletes).
    pub new: Option<Vec<Value>>,
    /// The row before the change (none for inserts).
    pub old: Option<Vec<Value>>,
}

#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub changes: Vec<AppliedChange>,
}

type Exclusive = Box<dyn FnOnce(&HotStore) + Send>;

enum Job {
    Write(WriteRequest, oneshot::Sender<Result<WriteOutcome>>),
    Exclusive(Exclusive),
}

pub struct CommitPipeline {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Closing the pipeline lets the writer finish what is queued and waits for it, so the
/// store is closed before whoever dropped the engine goes on (a process that exits
/// with RocksDB still open may abort).
impl Drop for CommitPipeline {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The largest number of requests grouped into one batch.
const MAX_GROUP: usize = 512;

impl CommitPipeline {
    /// Starts the writer thread. It reads cold rows (for key checks on flushed rows)
    /// through the runtime it is started from.
    pub fn start(store: Arc<HotStore>, catalog: Arc<Catalog>, sinks: Sinks, cold: Arc<ColdTier>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let cold = ColdLookup {
            cold,
            runtime: tokio::runtime::Handle::current(),
        };
        let thread = thread::Builder::new()
            .name("kalamdb-commit".into())
            .spawn(move || writer_loop(&store, &catalog, &sinks, &cold, rx))
            .expect("spawn the commit thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn sender(&self) -> Result<&mpsc::Sender<Job>> {
        self.tx
            .as_ref()
            .ok_or_else(|| EngineError::Internal("commit pipeline stopped".into()))
    }

    pub async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Job::Write(req, tx))
            .map_err(|_| EngineError::Internal("commit pipeline stopped".into()))?;
        rx.await
            .map_err(|_| EngineError::Internal("commit pipeline dropped a request".into()))?
    }

    /// Runs `f` on the writer thread between two batches, so it never interleaves with a
    /// write (DDL that creates or drops partitions).
    pub async fn exclusive<R: Send + 'static>(&self, f: impl FnOnce(&HotStore) -> R + Send + 'static) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: Exclusive = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        self.sender()?
            .send(Job::Exclusive(job))
            .map_err(|_| EngineError::Internal("commit pipeline stopped".into()))?;
        rx.await
            .map_err(|_| EngineError::Internal("commit pipeline dropped a request".into()))
    }
}

/// The newest state of keys written by the group being built, per table: the row's
/// seq and encoded bytes, or `None` once deleted.
type Pending = HashMap<u64, HashMap<Vec<u8>, Option<(Seq, Vec<u8>)>>>;

/// What a group (or one request of it) has written so far: rows and index entries.
#[derive(Default)]
struct Written {
    rows: Pending,
    entries: PendingEntries,
}

impl Written {
    fn merge(&mut self, from: Written) {
        for (uid, keys) in from.rows {
            self.rows.entry(uid).or_default().extend(keys);
        }
        self.entries.extend(from.entries);
    }
}

/// Who hears of a committed batch before its writers are acknowledged.
pub struct Sinks {
    pub cache: Arc<RowCache>,
    pub live: Arc<LiveHub>,
    pub unflushed: Arc<Unflushed>,
    /// Deletes per table, which queue a tombstone purge.
    pub deleted: Arc<Unflushed>,
}

/// Reads of flushed rows from the writer thread.
struct ColdLookup {
    cold: Arc<ColdTier>,
    runtime: tokio::runtime::Handle,
}

impl ColdLookup {
    /// The newest cold version of a key, encoded as a hot row would be.
    fn get(&self, table: &TableDef, user: Option<&UserId>, pk: &Pk) -> Result<Option<(Seq, Vec<u8>)>> {
        let dir = partition_dir(table, user);
        if self.cold.store.cached_manifest(&dir).is_some_and(|m| m.is_empty()) {
            return Ok(None);
        }
        let found = self.runtime.block_on(self.cold.get(table, user, pk))?;
        Ok(found.map(|(seq, values)| (seq, encode_row(table.current(), seq, &values))))
    }
}

fn writer_loop(store: &HotStore, catalog: &Catalog, sinks: &Sinks, cold: &ColdLookup, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut writes = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                Job::Write(req, reply) => writes.push((req, reply)),
                Job::Exclusive(f) => {
                    // keep order: commit what came before, then run the exclusive job
                    commit_group(store, catalog, sinks, cold, std::mem::take(&mut writes));
                    f(store);
                    sinks.cache.clear();
                }
            }
        }
        commit_group(store, catalog, sinks, cold, writes);
    }
}

fn commit_group(
    store: &HotStore,
    catalog: &Catalog,
    sinks: &Sinks,
    cold: &ColdLookup,
    writes: Vec<(WriteRequest, oneshot::Sender<Result<WriteOutcome>>)>,
) {
    if writes.is_empty() {
        return;
    }
    let mut batch = WriteBatch::new();
    let mut pending = Written::default();
    let mut results = Vec::with_capacity(writes.len());
    let mut touched: Vec<PartitionKey> = Vec::new();
    let mut committed: Vec<(Arc<TableDef>, Option<UserId>)> = Vec::new();
    for (req, reply) in writes {
        let mut local = WriteBatch::new();
        let mut local_pending = Written::default();
        let res = apply_request(store, catalog, cold, &req, &pending, &mut local_pending, &mut local);
        if res.is_ok() {
            batch.append(local);
            pending.merge(local_pending);
            touched.push((req.table.uid.0, req.user.clone()));
        }
        committed.push((req.table, req.user));
        results.push((reply, res));
    }
    let written = if batch.is_empty() { Ok(()) } else { store.write(batch) };
    match written {
        Ok(()) => {
            // durable now; readers must not be served the old rows once this is acknowledged
            sinks.cache.invalidate(&touched);
            for ((table, user), (reply, res)) in committed.iter().zip(results) {
                if let Ok(out) = &res {
                    sinks.live.publish(table, user.as_ref(), &out.changes);
                    sinks.unflushed.add(table.uid.0, out.changes.len() as u64);
                    let deletes = out.changes.iter().filter(|c| c.new.is_none()).count();
                    if deletes > 0 {
                        sinks.deleted.add(table.uid.0, deletes as u64);
                    }
                }
                let _ = reply.send(res);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed");
            let full = e.is_full();
            for (reply, res) in results {
                let failed = if full {
                    EngineError::StorageFull
                } else {
                    EngineError::Internal("commit failed".into())
                };
                let _ = reply.send(res.and(Err(failed)));
            }
        }
    }
}

fn apply_request(
    store: &HotStore,
    catalog: &Catalog,
    cold: &ColdLookup,
    req: &WriteRequest,
    group: &Written,
    local: &mut Written,
    batch: &mut WriteBatch,
) -> Result<WriteOutcome> {
    let table = catalog
        .table_by_uid(req.table.uid)
        .ok_or_else(|| EngineError::TableNotFound(req.table.id.to_string()))?;
    if table.current().version != req.table.current().version {
        // the schema changed after the statement was planned
        return Err(EngineError::WriteConflict);
    }
    let schema = table.current();
    let part = Partition::table(table.uid.0);
    let user = req.user.as_ref();
    let mut out = WriteOutcome::default();

    // the live version of a key: what this group wrote last, else what is stored hot,
    // else the newest cold version
    let lookup = |local: &Written, key: &[u8], pk: &Pk| -> Result<Option<(Seq, Vec<u8>)>> {
        let uid = table.uid.0;
        let pending = local
            .rows
            .get(&uid)
            .and_then(|m| m.get(key))
            .or_else(|| group.rows.get(&uid).and_then(|m| m.get(key)));
        if let Some(v) = pending {
            return Ok(v.clone());
        }
        let found = store.get_with(&part, key, |bytes| -> Result<Option<(Seq, Vec<u8>)>> {
            let (_, seq, deleted) = decode_header(bytes)?;
            Ok((!deleted).then(|| (seq, bytes.to_vec())))
        })?;
        match found.transpose()? {
            Some(hot) => Ok(hot),
            None if table.table_type == TableType::Stream => Ok(None),
            None => cold.get(&table, user, pk),
        }
    };
    let values_of = |bytes: &[u8]| -> Result<Vec<Value>> { Ok(decode_row(&table, bytes)?.values) };
    // the keys this request's upserts proposed: PostgreSQL refuses one proposed twice
    let mut upserted: HashSet<Vec<u8>> = HashSet::new();

    for op in &req.ops {
        let (pk, key) = match op {
            WriteOp::Insert { values, .. } => {
                let pk = schema.pk_of(values);
                let key = row_key(user, &pk)?;
                (pk, key)
            }
            WriteOp::Update { pk, .. } | WriteOp::Delete { pk, .. } => (pk.clone(), row_key(user, pk)?),
        };
        if let WriteOp::Insert {
            on_conflict: OnConflict::DoUpdate(_),
            ..
        } = op
            && !upserted.insert(key.clone())
        {
            return Err(EngineError::InvalidInput(format!(
                "ON CONFLICT DO UPDATE cannot affect row {pk} a second time: the rows proposed name one key twice"
            )));
        }
        let existing = lookup(local, &key, &pk)?;
        let check_version = |existing: &Option<(Seq, Vec<u8>)>, expected: &Option<Seq>| -> Result<()> {
            match (existing, expected) {
                (Some((seq, _)), Some(exp)) if seq != exp => Err(EngineError::WriteConflict),
                (None, Some(_)) => Err(EngineError::WriteConflict),
                _ => Ok(()),
            }
        };
        // (kind, new values, old values, old encoded row)
        let change = match (op, existing) {
            (WriteOp::Insert { values, .. }, None) => (ChangeKind::Insert, Some(values.clone()), None, None),
            (WriteOp::Insert { on_conflict, .. }, Some(_)) if *on_conflict == OnConflict::Error => {
                return Err(EngineError::DuplicateKey(pk.to_string()));
            }
            (
                WriteOp::Insert {
                    on_conflict: OnConflict::DoUpdate(set),
                    values,
                },
                Some((_, old_bytes)),
            ) => {
                let old = values_of(&old_bytes)?;
                let new = assign(&table, &old, set, Some(values))?;
                (ChangeKind::Update, Some(new), Some(old), Some(old_bytes))
            }
            (WriteOp::Insert { .. }, Some(_)) => continue,
            (WriteOp::Update { expected_seq, set, .. }, existing) => {
                check_version(&existing, expected_seq)?;
                let Some((_, old_bytes)) = existing else { continue };
                let old = values_of(&old_bytes)?;
                let new = assign(&table, &old, set, None)?;
                (ChangeKind::Update, Some(new), Some(old), Some(old_bytes))
            }
            (WriteOp::Delete { expected_seq, .. }, existing) => {
                check_version(&existing, expected_seq)?;
                let Some((_, old_bytes)) = existing else { continue };
                (ChangeKind::Delete, None, Some(values_of(&old_bytes)?), Some(old_bytes))
            }
        };
        let (kind, new, old, old_bytes) = change;
        if !table.indexes.is_empty() {
            write_entries(
                store,
                &table,
                user,
                &pk,
                (old.as_deref(), new.as_deref()),
                group,
                local,
                batch,
            )?;
        }
        let seq = store.seq().next();
        let new_bytes = match &new {
            Some(v) => encode_row(schema, seq, v),
            None => encode_tombstone(schema, seq),
        };
        let entry = encode_entry(
            table.uid,
            kind,
            &key,
            new.is_some().then_some(&new_bytes[..]),
            old_bytes.as_deref(),
        );
        batch.put(&Partition::change_log(), entry_key(seq), entry);
        local
            .rows
            .entry(table.uid.0)
            .or_default()
            .insert(key.clone(), new.is_some().then(|| (seq, new_bytes.clone())));
        batch.put(&part, key, new_bytes);
        batch.note_seq(seq);
        out.changes.push(AppliedChange { kind, seq, new, old });
    }
    Ok(out)
}

/// Writes the index entry changes of one row change into the request's batch, after
/// checking unique indexes against the store and what the group wrote before.
#[allow(clippy::too_many_arguments)]
fn write_entries(
    store: &HotStore,
    table: &TableDef,
    user: Option<&UserId>,
    pk: &Pk,
    (old, new): (Option<&[Value]>, Option<&[Value]>),
    group: &Written,
    local: &mut Written,
    batch: &mut WriteBatch,
) -> Result<()> {
    let uid = table.uid.0;
    let part = Partition::index(uid);
    let pk_enc = pk_bytes(pk)?;
    for w in entry_writes(table, user, &pk_enc, old, new)? {
        match w {
            EntryWrite::Delete(key) => {
                local.entries.insert((uid, key.clone()), false);
                batch.delete(&part, key);
            }
            EntryWrite::Put { entry, index, unique } => {
                if unique && unique_conflict(store, uid, &entry, &[&local.entries, &group.entries])?.is_some() {
                    return Err(duplicate(table, &table.indexes[index], new.unwrap_or_default()));
                }
                local.entries.insert((uid, entry.key.clone()), true);
                batch.put(&part, entry.key, pk_enc.clone());
            }
        }
    }
    Ok(())
}

/// Applies assignments to a copy of `old`, enforcing types, NOT NULL and a fixed key.
fn assign(table: &TableDef, old: &[Value], set: &[(usize, RowExpr)], excluded: Option<&[Value]>) -> Result<Vec<Value>> {
    let schema = table.current();
    let mut new = old.to_vec();
    for (idx, expr) in set {
        let col = schema
            .columns
            .get(*idx)
            .ok_or_else(|| EngineError::Internal("assignment to a column out of range".into()))?;
        // every expression sees the row as it was before this statement
        let v = expr.eval_as(col.ty, old, excluded)?;
        if schema.is_pk(*idx) && v != old[*idx] {
            return Err(EngineError::InvalidInput("the primary key cannot be changed".into()));
        }
        if v.is_null() && !col.nullable {
            return Err(EngineError::NotNull(col.name.to_string()));
        }
        new[*idx] = v;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ExecContext;
    use crate::error::ErrorCode;
    use crate::ids::{NamespaceId, TableId, TableName};
    use crate::live::changelog::ChangeKind;
    use crate::testing::engine_with;

    /// The pipeline's conflict rules: a duplicate key fails its request only, whole
    /// (its other ops are not applied) while the rest of the group commits; `ON
    /// CONFLICT` does nothing or updates; a `_seq` compare-and-set fails once the row
    /// moved on; ops of one request apply in order.
    #[tokio::test]
    async fn conflicts_fail_their_request_whole_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with(
            dir.path(),
            &[
                "CREATE NAMESPACE app",
                "CREATE TABLE app.kv (k INT PRIMARY KEY, v INT) WITH (TYPE = 'SHARED')",
                "INSERT INTO app.kv (k, v) VALUES (1, 10)",
            ],
        )
        .await;
        let id = TableId::new(NamespaceId::parse("app").unwrap(), TableName::parse("kv").unwrap());
        let table = engine.catalog.table(&id).unwrap();
        let request = |ops: Vec<WriteOp>| WriteRequest {
            table: table.clone(),
            user: None,
            ops,
        };
        let insert = |k: i32, v: i32, on_conflict: OnConflict| WriteOp::Insert {
            values: vec![Value::Int(k), Value::Int(v)],
            on_conflict,
        };
        let value_of = |k: i32| {
            let engine = engine.clone();
            let id = id.clone();
            async move {
                let rows = engine
                    .get_by_pk(&ExecContext::system(), &id, &Pk::one(Value::Int(k)))
                    .await
                    .unwrap();
                rows.rows.first().map(|(seq, v)| (*seq, v[1].clone()))
            }
        };

        // one request of a group fails; the other commits
        let (dup, fresh) = tokio::join!(
            engine.commit.write(request(vec![
                insert(5, 50, OnConflict::Error),
                insert(1, 11, OnConflict::Error)
            ])),
            engine.commit.write(request(vec![insert(2, 20, OnConflict::Error)])),
        );
        assert_eq!(dup.err().map(|e| e.code()), Some(ErrorCode::DuplicateKey));
        assert_eq!(fresh.unwrap().changes[0].kind, ChangeKind::Insert);
        assert_eq!(value_of(5).await, None, "a failed request applies none of its ops");
        assert_eq!(value_of(1).await.map(|r| r.1), Some(Value::Int(10)));

        // ON CONFLICT DO NOTHING changes nothing; DO UPDATE sees the old row
        let none = engine
            .commit
            .write(request(vec![insert(1, 12, OnConflict::DoNothing)]))
            .await
            .unwrap();
        assert!(none.changes.is_empty());
        let set = vec![(1, RowExpr::Excluded(1))];
        let up = engine
            .commit
            .write(request(vec![insert(1, 13, OnConflict::DoUpdate(set))]))
            .await
            .unwrap();
        assert_eq!(up.changes[0].kind, ChangeKind::Update);
        assert_eq!(up.changes[0].old.as_ref().unwrap()[1], Value::Int(10));
        assert_eq!(up.changes[0].new.as_ref().unwrap()[1], Value::Int(13));

        // compare-and-set on _seq
        let (seq, _) = value_of(1).await.unwrap();
        let stale = Seq(seq.0 - 1);
        let update = |expected_seq| WriteOp::Update {
            pk: Pk::one(Value::Int(1)),
            expected_seq: Some(expected_seq),
            set: vec![(1, RowExpr::Literal(Value::Int(14)))],
        };
        let refused = engine.commit.write(request(vec![update(stale)])).await;
        assert_eq!(refused.err().map(|e| e.code()), Some(ErrorCode::WriteConflict));
        let delete = WriteOp::Delete {
            pk: Pk::one(Value::Int(1)),
            expected_seq: Some(stale),
        };
        let refused = engine.commit.write(request(vec![delete])).await;
        assert_eq!(refused.err().map(|e| e.code()), Some(ErrorCode::WriteConflict));
        engine.commit.write(request(vec![update(seq)])).await.unwrap();
        assert_eq!(value_of(1).await.map(|r| r.1), Some(Value::Int(14)));

        // ops of one request apply in order, each with a later _seq
        let out = engine
            .commit
            .write(request(vec![
                insert(3, 30, OnConflict::Error),
                WriteOp::Update {
                    pk: Pk::one(Value::Int(3)),
                    expected_seq: None,
                    set: vec![(1, RowExpr::Literal(Value::Int(31)))],
                },
                WriteOp::Delete {
                    pk: Pk::one(Value::Int(2)),
                    expected_seq: None,
                },
            ]))
            .await
            .unwrap();
        let kinds: Vec<ChangeKind> = out.changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete]);
        assert!(out.changes.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(value_of(3).await.map(|r| r.1), Some(Value::Int(31)));
        assert_eq!(value_of(2).await, None);
    }
}
