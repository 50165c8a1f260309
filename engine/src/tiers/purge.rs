//! The tombstone purge (`retention_purge` jobs): which tombstones of deleted rows
//! nothing needs any more, and dropping them.

use std::sync::Arc;

use kalamdb_storage::hot_store::Partition;
use kalamdb_storage::seq::{Seq, now_millis};

use super::flush::{JobResult, cold_may_hold, internal};
use crate::catalog::schema::TableDef;
use crate::codec::{decode_pk, partition_prefix};
use crate::engine::Engine;
use crate::jobs::CancelFlag;
use crate::read::reader::KeyPlan;

/// Tombstones purged at once after which the table's RocksDB files are compacted.
const COMPACT_AFTER_PURGE: u64 = 10_000;

impl Engine {
    /// Drops the tombstones of deleted rows that nothing needs any more, so that reads
    /// of a table where most rows were deleted cost what reads of a fresh one do:
    /// - a tombstone older than the retention goes, after the segments that may still
    ///   hold its key were compacted (so no deleted row comes back);
    /// - a younger one goes at once when no segment may hold its key (it masks nothing).
    ///
    /// Each partition keeps the tombstone with its highest `_seq`, when it has one, so
    /// that a change feed's snapshot still reflects exactly the changes up to that
    /// position (its watermark is the highest `_seq` of any key). Readers already
    /// scanning hold a RocksDB snapshot, and the index entries of a deleted row went
    /// with its delete. The table lock keeps flushes and compactions out meanwhile.
    pub(super) async fn purge_deleted(&self, table: &Arc<TableDef>, cancel: &CancelFlag) -> JobResult<String> {
        let retention_ms = self.config.deleted_retention_secs.saturating_mul(1000);
        let cutoff = Seq::floor_at_millis(now_millis().saturating_sub(retention_ms));
        let lock = self.table_lock(table.uid.0);
        let _guard = lock.lock().await;
        let mut purged = 0;
        for user in self.partitions(table, false).await? {
            cancel.check()?;
            let prefix = partition_prefix(user.as_ref());
            let mut old = vec![];
            let mut tombstones = 0usize;
            // the key holding the partition's highest `_seq`, and that seq
            let mut high: (Vec<u8>, Seq) = (vec![], Seq::ZERO);
            self.reader(table, user.as_ref()).scan_stored(&KeyPlan::All, |k, row| {
                if row.seq >= high.1 {
                    high = (k.to_vec(), row.seq);
                }
                if row.deleted {
                    tombstones += 1;
                    if row.seq < cutoff {
                        old.extend(decode_pk(table.current(), &k[prefix.len()..]));
                    }
                }
                true
            })?;
            if tombstones == 0 || (tombstones == 1 && old.is_empty()) {
                continue;
            }
            let mut manifest = self.cold.manifest(table, user.as_ref()).await?;
            if old.iter().any(|pk| cold_may_hold(table, &manifest, pk)) {
                self.compact_partition(table, user.clone(), cancel).await?;
                manifest = self.cold.manifest(table, user.as_ref()).await?;
            }
            // no segment holds an old tombstone's key any more (and none can gain one
            // while the table is locked); later writes have higher seqs and stay
            let (t, skip) = (table.clone(), prefix.len());
            purged += self
                .delete_hot_where(table, prefix, false, move |k, seq, deleted| {
                    deleted
                        && seq < high.1
                        && k != high.0.as_slice()
                        && (seq < cutoff
                            || decode_pk(t.current(), &k[skip..]).is_some_and(|pk| !cold_may_hold(&t, &manifest, &pk)))
                })
                .await?;
        }
        if purged >= COMPACT_AFTER_PURGE {
            // the range deletes leave RocksDB's memtable and files too, and so do the
            // index entries the deletes removed: entry walks then pass over none of them
            let store = self.store.clone();
            let mut parts = vec![Partition::table(table.uid.0)];
            if !table.indexes.is_empty() {
                parts.push(Partition::index(table.uid.0));
            }
            tokio::task::spawn_blocking(move || parts.iter().try_for_each(|p| store.compact(p)))
                .await
                .map_err(internal)??;
        }
        Ok(format!("purged {purged} tombstone(s)"))
    }
}
