//! The job that indexes the rows a table held before an index was created.
//!
//! From the moment an index exists (building), every write maintains its entries. The
//! job adds the entries of the older rows: first the hot rows, in key order, a chunk at
//! a time between two commit groups, each chunk's entries written in one batch with
//! the position reached (so a crash resumes after the last chunk); then the rows only
//! segments hold, each checked between commit groups against the hot tier, where a
//! newer version (indexed by its writer) shadows it. Flushes and compactions of the
//! table wait for the job, so no row moves between tiers under it. Entries are
//! idempotent: a row a writer indexed and the job indexes again holds one entry.
//! Once both passes end, the index is ready. A unique index that meets two rows with
//! the same values fails the job with `DUPLICATE_KEY` and is dropped.

use std::sync::Arc;

use kalamdb_auth::identity::UserId;
use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::catalog::schema::{IndexDef, IndexState, TableDef};
use crate::codec::{decode_row, pk_bytes, row_key, split_row_key};
use crate::engine::{Engine, Row};
use crate::error::{EngineError, ErrorCode, Result};
use crate::ids::{IndexId, StorageUid};
use crate::index::{PendingEntries, duplicate, entry, index_prefix, unique_conflict};
use crate::jobs::{CancelFlag, JobFailure, JobId};
use crate::read::reader::KeyPlan;

type JobResult<T> = std::result::Result<T, JobFailure>;

/// Hot rows indexed per chunk (one batch, between two commit groups).
pub const BUILD_CHUNK: usize = 8192;

/// Where a build got to, persisted with each chunk's entries.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    indexes: Vec<IndexId>,
    /// The last hot row key indexed.
    after: Vec<u8>,
    rows: u64,
}

fn progress_key(uid: StorageUid) -> Vec<u8> {
    format!("index_build/{}", uid.0).into_bytes()
}

/// The building indexes among `ids` that the table still has.
fn building<'a>(table: &'a TableDef, ids: &[IndexId]) -> Vec<&'a IndexDef> {
    table
        .indexes
        .iter()
        .filter(|i| i.state == IndexState::Building && ids.contains(&i.id))
        .collect()
}

/// Puts the entries of one row, checking unique indexes against the store and the
/// entries already in `written`.
#[allow(clippy::too_many_arguments)]
fn put_entries(
    store: &HotStore,
    table: &TableDef,
    indexes: &[&IndexDef],
    user: Option<&UserId>,
    values: &[crate::types::Value],
    pk_enc: &[u8],
    written: &mut PendingEntries,
    batch: &mut WriteBatch,
) -> Result<()> {
    let uid = table.uid.0;
    let part = Partition::index(uid);
    for index in indexes {
        let e = entry(table, index, user, values, pk_enc)?;
        if index.unique && !e.has_null && unique_conflict(store, uid, &e, &[written])?.is_some() {
            return Err(duplicate(table, index, values));
        }
        written.insert((uid, e.key.clone()), true);
        batch.put(&part, e.key, pk_enc.to_vec());
    }
    Ok(())
}

/// Indexes the next chunk of hot rows after `after`; returns the last key indexed and
/// the rows seen, fewer than a chunk at the end.
fn hot_chunk(
    store: &HotStore,
    catalog: &Catalog,
    uid: StorageUid,
    ids: &[IndexId],
    progress: &mut Progress,
) -> Result<usize> {
    let Some(table) = catalog.table_by_uid(uid) else {
        return Ok(0);
    };
    let indexes = building(&table, ids);
    if indexes.is_empty() {
        return Ok(0);
    }
    let per_user = table.table_type.is_per_user();
    let mut lower = progress.after.clone();
    if !lower.is_empty() {
        lower.push(0);
    }
    let mut batch = WriteBatch::new();
    let mut written = PendingEntries::new();
    let mut seen = 0;
    {
        let mut it = store.scan(&Partition::table(uid.0), &lower, None)?;
        while let Some((k, v)) = it.next_entry()? {
            let row = decode_row(&table, v)?;
            if !row.deleted {
                let (user, pk_enc) = split_row_key(k, per_user)?;
                put_entries(
                    store,
                    &table,
                    &indexes,
                    user.as_ref(),
                    &row.values,
                    pk_enc,
                    &mut written,
                    &mut batch,
                )?;
            }
            progress.after = k.to_vec();
            seen += 1;
            if seen == BUILD_CHUNK {
                break;
            }
        }
    }
    progress.rows += seen as u64;
    let json = serde_json::to_vec(progress).map_err(|e| EngineError::Internal(e.to_string()))?;
    batch.put(&Partition::system(), progress_key(uid), json);
    store.write(batch)?;
    Ok(seen)
}

/// Indexes cold rows of one partition that no hot version shadows.
fn cold_chunk(
    store: &HotStore,
    catalog: &Catalog,
    uid: StorageUid,
    ids: &[IndexId],
    user: Option<&UserId>,
    rows: &[Row],
) -> Result<()> {
    let Some(table) = catalog.table_by_uid(uid) else {
        return Ok(());
    };
    let indexes = building(&table, ids);
    if indexes.is_empty() {
        return Ok(());
    }
    let schema = table.current();
    let part = Partition::table(uid.0);
    let mut batch = WriteBatch::new();
    let mut written = PendingEntries::new();
    for (_, values) in rows {
        let pk = schema.pk_of(values);
        if store.get_with(&part, &row_key(user, &pk)?, |_| ())?.is_some() {
            continue;
        }
        let pk_enc = pk_bytes(&pk)?;
        put_entries(store, &table, &indexes, user, values, &pk_enc, &mut written, &mut batch)?;
    }
    store.write(batch)?;
    Ok(())
}

impl Engine {
    /// The index-build job: indexes the existing rows for every building index of the
    /// table, then makes them ready.
    pub(crate) async fn build_indexes(
        &self,
        table: &Arc<TableDef>,
        job: &JobId,
        cancel: &CancelFlag,
    ) -> JobResult<String> {
        let uid = table.uid;
        let lock = self.table_lock(uid.0);
        let _guard = lock.lock().await;
        let mut total = 0u64;
        loop {
            let Some(def) = self.catalog.table_by_uid(uid) else {
                return Ok("the table no longer exists".into());
            };
            let ids: Vec<IndexId> = def
                .indexes
                .iter()
                .filter(|i| i.state == IndexState::Building)
                .map(|i| i.id)
                .collect();
            if ids.is_empty() {
                break;
            }
            match self.build_some(&def, &ids, job, cancel).await {
                Ok(n) => total += n,
                Err(JobFailure::Error(e)) if e.code() == ErrorCode::DuplicateKey => {
                    self.abandon_build(uid, Some(&ids)).await?;
                    return Err(JobFailure::Fatal(e));
                }
                Err(JobFailure::Cancelled) => {
                    self.abandon_build(uid, Some(&ids)).await?;
                    return Err(JobFailure::Cancelled);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(format!("indexed {total} row(s)"))
    }

    async fn build_some(
        &self,
        def: &Arc<TableDef>,
        ids: &[IndexId],
        job: &JobId,
        cancel: &CancelFlag,
    ) -> JobResult<u64> {
        let uid = def.uid;
        let faults = &self.config.faults;
        // resume after the last chunk a crashed run wrote
        let mut progress = self
            .store
            .get(&Partition::system(), &progress_key(uid))?
            .and_then(|v| serde_json::from_slice::<Progress>(&v).ok())
            .filter(|p| p.indexes == ids)
            .unwrap_or_else(|| Progress {
                indexes: ids.to_vec(),
                ..Progress::default()
            });
        loop {
            cancel.check()?;
            let (catalog, ids_owned, mut p) = (self.catalog.clone(), ids.to_vec(), std::mem::take(&mut progress));
            let (seen, p) = self
                .commit
                .exclusive(move |store| hot_chunk(store, &catalog, uid, &ids_owned, &mut p).map(|n| (n, p)))
                .await??;
            progress = p;
            faults.crash_point("index_build:chunk_written");
            self.jobs.progress(job, format!("indexed {} hot row(s)", progress.rows));
            if seen < BUILD_CHUNK {
                break;
            }
        }
        let mut cold_rows = 0u64;
        for user in self.partitions(def, true).await? {
            cancel.check()?;
            if self.cold.manifest(def, user.as_ref()).await?.is_empty() {
                continue;
            }
            let (rows, _) = self.partition_rows(def, user.as_ref(), &KeyPlan::All).await?;
            for chunk in rows.chunks(BUILD_CHUNK) {
                cancel.check()?;
                cold_rows += chunk.len() as u64;
                let (catalog, ids_owned, user, chunk) =
                    (self.catalog.clone(), ids.to_vec(), user.clone(), chunk.to_vec());
                self.commit
                    .exclusive(move |store| cold_chunk(store, &catalog, uid, &ids_owned, user.as_ref(), &chunk))
                    .await??;
                self.jobs.progress(
                    job,
                    format!("indexed {} hot row(s), {cold_rows} cold row(s)", progress.rows),
                );
            }
        }
        // the build wrote its entries in bulk: read from a sorted file, a walk over
        // them costs a few times less than over the memtable
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush(&Partition::index(uid.0)))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        // ready: reads may use them from now on
        let (catalog, ids_owned) = (self.catalog.clone(), ids.to_vec());
        self.commit
            .exclusive(move |store| -> Result<()> {
                let Some(t) = catalog.table_by_uid(uid) else {
                    return Ok(());
                };
                let mut t = (*t).clone();
                for i in &mut t.indexes {
                    if ids_owned.contains(&i.id) {
                        i.state = IndexState::Ready;
                    }
                }
                let mut b = WriteBatch::new();
                b.delete(&Partition::system(), progress_key(uid));
                store.write(b)?;
                catalog.put_table(store, t)?;
                Ok(())
            })
            .await??;
        Ok(progress.rows + cold_rows)
    }

    /// Drops indexes whose build cannot finish (`ids`, or every building one), with
    /// their entries.
    pub(crate) async fn abandon_build(&self, uid: StorageUid, ids: Option<&[IndexId]>) -> Result<()> {
        let (catalog, ids) = (self.catalog.clone(), ids.map(<[IndexId]>::to_vec));
        self.commit
            .exclusive(move |store| -> Result<()> {
                let Some(t) = catalog.table_by_uid(uid) else {
                    return Ok(());
                };
                let mut t = (*t).clone();
                let gone: Vec<IndexId> = t
                    .indexes
                    .iter()
                    .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id)) && i.state == IndexState::Building)
                    .map(|i| i.id)
                    .collect();
                t.indexes.retain(|i| !gone.contains(&i.id));
                let mut b = WriteBatch::new();
                for id in &gone {
                    delete_entries(&mut b, uid, *id);
                }
                b.delete(&Partition::system(), progress_key(uid));
                store.write(b)?;
                catalog.put_table(store, t)?;
                Ok(())
            })
            .await?
    }
}

/// Deletes every entry of one index (all users).
pub fn delete_entries(b: &mut WriteBatch, uid: StorageUid, id: IndexId) {
    let from = index_prefix(id, None);
    let to = index_prefix(IndexId(id.0 + 1), None);
    b.delete_range(&Partition::index(uid.0), from, to);
}
