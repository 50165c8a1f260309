//! Reads rows of one table partition from the hot store: point lookups and ordered key
//! range scans, skipping tombstones and (for STREAM tables) expired rows.

use std::ops::Bound;

use kalamdb_auth::{identity::UserId, permissions::TableType};
use kalamdb_storage::keys::{KeyBuilder, prefix_successor};
use kalamdb_storage::{hot_store::HotStore, hot_store::Partition, seq::Seq, seq::now_millis};

use crate::catalog::schema::TableDef;
use crate::codec::{StoredRow, decode_row, encode_key_value, partition_prefix, pk_bytes, row_key};
use crate::error::Result;
use crate::types::{Pk, Value};

/// Which keys of the partition a read needs.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPlan {
    All,
    /// Whole keys.
    Points(Vec<Pk>),
    /// A range of the key's leading column (of a composite key: every key whose first
    /// column lies in it).
    Range {
        lo: Bound<Value>,
        hi: Bound<Value>,
    },
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

    /// The stored version of a key: a row or a tombstone, expired or not.
    pub fn get_stored(&self, pk: &Pk) -> Result<Option<StoredRow>> {
        let key = row_key(self.user, pk)?;
        self.store
            .get_with(&self.partition(), &key, |bytes| decode_row(self.table, bytes))?
            .transpose()
    }

    fn visible(&self, row: &StoredRow, floor: Option<Seq>) -> bool {
        !row.deleted && floor.is_none_or(|f| row.seq >= f)
    }

    pub fn get(&self, pk: &Pk) -> Result<Option<VisibleRow>> {
        let floor = self.ttl_floor();
        Ok(self
            .get_stored(pk)?
            .filter(|r| self.visible(r, floor))
            .map(|r| (r.seq, r.values)))
    }

    /// Visits every visible row in key order and returns the highest `_seq` of any key
    /// of the partition, tombstones and expired rows included: the read holds exactly
    /// the changes up to that seq (one RocksDB iterator is one consistent view).
    pub fn scan_versions(&self, mut visit: impl FnMut(Seq, Vec<Value>)) -> Result<Seq> {
        let floor = self.ttl_floor();
        let mut high = Seq::ZERO;
        self.scan_stored(&KeyPlan::All, |_, row| {
            high = high.max(row.seq);
            if self.visible(&row, floor) {
                visit(row.seq, row.values);
            }
            true
        })?;
        Ok(high)
    }

    /// Visits visible rows in key order until `visit` returns `false` or `limit` rows
    /// were visited.
    pub fn scan(&self, plan: &KeyPlan, limit: Option<usize>, mut visit: impl FnMut(VisibleRow) -> bool) -> Result<()> {
        let mut left = limit.unwrap_or(usize::MAX);
        if left == 0 {
            return Ok(());
        }
        let floor = self.ttl_floor();
        self.scan_stored(plan, |_, row| {
            if !self.visible(&row, floor) {
                return true;
            }
            left -= 1;
            visit((row.seq, row.values)) && left > 0
        })
    }

    /// Visits every stored version the plan covers, tombstones and expired rows
    /// included, in key order, with its key, until `visit` returns `false`.
    pub fn scan_stored(&self, plan: &KeyPlan, mut visit: impl FnMut(&[u8], StoredRow) -> bool) -> Result<()> {
        if let KeyPlan::Points(pks) = plan {
            let mut keys = pks
                .iter()
                .map(|pk| row_key(self.user, pk))
                .collect::<Result<Vec<_>>>()?;
            keys.sort();
            keys.dedup();
            for key in &keys {
                let found = self
                    .store
                    .get_with(&self.partition(), key, |bytes| decode_row(self.table, bytes))?
                    .transpose()?;
                if let Some(row) = found
                    && !visit(key, row)
                {
                    break;
                }
            }
            return Ok(());
        }
        let prefix = partition_prefix(self.user);
        let (mut lower, mut upper) = (prefix.clone(), prefix_successor(&prefix));
        if let KeyPlan::Range { lo, hi } = plan {
            let Some((lo, hi)) = leading_range(lo, hi)? else {
                return Ok(());
            };
            let with_prefix = |k: Vec<u8>| [prefix.as_slice(), &k].concat();
            lower = with_prefix(lo);
            if let Some(hi) = hi {
                upper = Some(with_prefix(hi));
            }
            if upper.as_ref().is_some_and(|u| *u <= lower) {
                return Ok(());
            }
        }
        let mut it = self.store.scan(&self.partition(), &lower, upper.as_deref())?;
        while let Some((k, v)) = it.next_entry()? {
            let row = decode_row(self.table, v)?;
            if !visit(k, row) {
                break;
            }
        }
        Ok(())
    }
}

/// Encoded keys from the first (included) up to the second (excluded; `None`: no end).
type ByteRange = (Vec<u8>, Option<Vec<u8>>);

/// The encoded-key range `[lo, hi)` (no `hi`: unbounded) of the keys whose leading
/// column lies within the bounds; `None` when no key can. A value's encoding is
/// self-delimiting, so the keys whose leading column is `v` are exactly those that
/// start with its encoding, and they end before the encoding's successor.
fn leading_range(lo: &Bound<Value>, hi: &Bound<Value>) -> Result<Option<ByteRange>> {
    let enc = |v: &Value| -> Result<Vec<u8>> {
        let mut k = KeyBuilder::new();
        encode_key_value(&mut k, v)?;
        Ok(k.finish())
    };
    let lower = match lo {
        Bound::Unbounded => vec![],
        Bound::Included(v) => enc(v)?,
        Bound::Excluded(v) => match prefix_successor(&enc(v)?) {
            Some(k) => k,
            None => return Ok(None),
        },
    };
    let upper = match hi {
        Bound::Unbounded => None,
        Bound::Included(v) => prefix_successor(&enc(v)?),
        Bound::Excluded(v) => Some(enc(v)?),
    };
    Ok(Some((lower, upper)))
}

impl KeyPlan {
    /// How much of the key space the plan reads, for `EXPLAIN`: `points(n)` or `range`
    /// (`None`: all of it).
    pub fn describe(&self) -> Option<String> {
        match self {
            KeyPlan::All => None,
            KeyPlan::Points(pks) => Some(format!("points({})", pks.len())),
            KeyPlan::Range { .. } => Some("range".into()),
        }
    }

    /// Whether an encoded primary key (a row key without its user prefix) is one the
    /// plan covers.
    pub fn covers(&self, pk: &[u8]) -> bool {
        match self {
            KeyPlan::All => true,
            KeyPlan::Points(pks) => pks.iter().any(|k| pk_bytes(k).ok().as_deref() == Some(pk)),
            KeyPlan::Range { lo, hi } => match leading_range(lo, hi) {
                Ok(Some((lower, upper))) => pk >= lower.as_slice() && upper.is_none_or(|u| pk < u.as_slice()),
                Ok(None) => false,
                // a bound that cannot be a key (NULL) leaves the range to the filter
                Err(_) => true,
            },
        }
    }
}
