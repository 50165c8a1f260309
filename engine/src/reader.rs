//! Reads rows of one table partition from the hot store: point lookups and ordered key
//! range scans, skipping tombstones and (for STREAM tables) expired rows.

use std::ops::Bound;

use kalamdb_auth::{identity::UserId, permissions::TableType};
use kalamdb_storage::keys::{KeyBuilder, prefix_successor};
use kalamdb_storage::{hot_store::HotStore, hot_store::Partition, seq::Seq, seq::now_millis};

use crate::codec::{decode_row, encode_key_value, partition_prefix, row_key};
use crate::error::Result;
use crate::schema::TableDef;
use crate::types::Value;

/// Which keys of the partition a read needs.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPlan {
    All,
    Points(Vec<Value>),
    Range { lo: Bound<Value>, hi: Bound<Value> },
}

/// The rows a reader sees: live, not expired, of one user for per-user tables.
pub struct PartitionReader<'a> {
    pub store: &'a HotStore,
    pub table: &'a TableDef,
    pub user: Option<&'a UserId>,
}

/// A visible row: its version and values in the current schema's column order.
pub type VisibleRow = (Seq, Vec<Value>);

impl<'a> PartitionReader<'a> {
    pub fn new(store: &'a HotStore, table: &'a TableDef, subject: &'a UserId) -> Self {
        let user = table.table_type.is_per_user().then_some(subject);
        Self { store, table, user }
    }

    /// The oldest `_seq` still visible (STREAM tables with a TTL).
    pub fn ttl_floor(&self) -> Option<Seq> {
        match (self.table.table_type, self.table.ttl_seconds) {
            (TableType::Stream, Some(ttl)) => Some(Seq::floor_at_millis(now_millis().saturating_sub(ttl * 1000))),
            _ => None,
        }
    }

    fn partition(&self) -> Partition {
        Partition::table(self.table.uid.0)
    }

    pub fn get(&self, pk: &Value) -> Result<Option<VisibleRow>> {
        let key = row_key(self.user, pk)?;
        let floor = self.ttl_floor();
        let found = self
            .store
            .get_with(&self.partition(), &key, |bytes| decode_row(self.table, bytes))?
            .transpose()?;
        Ok(found
            .filter(|r| !r.deleted && floor.is_none_or(|f| r.seq >= f))
            .map(|r| (r.seq, r.values)))
    }

    /// Visits every visible row in key order and returns the highest `_seq` of any key
    /// of the partition, tombstones and expired rows included: the read holds exactly
    /// the changes up to that seq (one RocksDB iterator is one consistent view).
    pub fn scan_versions(&self, mut visit: impl FnMut(Seq, Vec<Value>)) -> Result<Seq> {
        let prefix = partition_prefix(self.user);
        let upper = prefix_successor(&prefix);
        let floor = self.ttl_floor();
        let mut high = Seq::ZERO;
        let mut it = self.store.scan(&self.partition(), &prefix, upper.as_deref())?;
        while let Some((_, v)) = it.next_entry()? {
            let row = decode_row(self.table, v)?;
            high = high.max(row.seq);
            if !row.deleted && floor.is_none_or(|f| row.seq >= f) {
                visit(row.seq, row.values);
            }
        }
        Ok(high)
    }

    /// Visits visible rows in key order until `visit` returns `false` or `limit` rows
    /// were visited.
    pub fn scan(&self, plan: &KeyPlan, limit: Option<usize>, mut visit: impl FnMut(VisibleRow) -> bool) -> Result<()> {
        let mut left = limit.unwrap_or(usize::MAX);
        if left == 0 {
            return Ok(());
        }
        if let KeyPlan::Points(pks) = plan {
            let mut pks = pks.clone();
            pks.sort_by_key(|pk| row_key(self.user, pk).ok());
            pks.dedup();
            for pk in &pks {
                if let Some(row) = self.get(pk)? {
                    left -= 1;
                    if !visit(row) || left == 0 {
                        break;
                    }
                }
            }
            return Ok(());
        }
        let prefix = partition_prefix(self.user);
        let bound_key = |v: &Value, after: bool| -> Result<Vec<u8>> {
            let mut k = KeyBuilder::new();
            k.raw(&prefix);
            encode_key_value(&mut k, v)?;
            let mut out = k.finish();
            if after {
                // keys are prefix-free, so this sorts right after `v` and before the next key
                out.push(0);
            }
            Ok(out)
        };
        let (mut lower, mut upper) = (prefix.clone(), prefix_successor(&prefix));
        if let KeyPlan::Range { lo, hi } = plan {
            match lo {
                Bound::Included(v) => lower = bound_key(v, false)?,
                Bound::Excluded(v) => lower = bound_key(v, true)?,
                Bound::Unbounded => {}
            }
            match hi {
                Bound::Included(v) => upper = Some(bound_key(v, true)?),
                Bound::Excluded(v) => upper = Some(bound_key(v, false)?),
                Bound::Unbounded => {}
            }
            if upper.as_ref().is_some_and(|u| *u <= lower) {
                return Ok(());
            }
        }
        let floor = self.ttl_floor();
        let mut it = self.store.scan(&self.partition(), &lower, upper.as_deref())?;
        while let Some((_, v)) = it.next_entry()? {
            let row = decode_row(self.table, v)?;
            if row.deleted || floor.is_some_and(|f| row.seq < f) {
                continue;
            }
            left -= 1;
            if !visit((row.seq, row.values)) || left == 0 {
                break;
            }
        }
        Ok(())
    }
}
