//! Decoded rows of recently read partitions, so that repeated list reads of one
//! partition filter and sort in memory instead of scanning and decoding RocksDB rows.
//!
//! Consistency: the commit pipeline invalidates the partitions a batch touched after the
//! batch is durable and before any of its writes is acknowledged, and bumps a
//! generation. A read fills the cache only if the generation did not move while it
//! scanned, so a filled entry never misses a write acknowledged before the fill. Entries
//! carry the schema version they were decoded under; DDL clears the cache.
//!
//! A cached partition also keeps the row order of the sort keys that reads ask for
//! again and again ([`CachedPartition::order`]), so that a small ordered page walks the
//! rows in order and stops once it is full, instead of comparing every row. It sorts
//! only after as many scans as a sort costs, so partitions that writes keep replacing
//! pay at most twice the scans. The order belongs to the immutable cached rows, so it
//! is as fresh as they are.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kalamdb_auth::identity::UserId;
use parking_lot::Mutex;

use crate::engine::Row;
use crate::read::filter::BoundOrderKey;

/// A partition: a table, and the owner for per-user tables.
pub type PartitionKey = (u64, Option<UserId>);

/// Partitions with more rows than this are never cached.
pub const MAX_PARTITION_ROWS: usize = 10_000;
/// A partition is never given more than this share of the cache's bytes.
const MAX_PARTITION_SHARE: usize = 8;
/// The most sort orders kept per cached partition; a new one replaces the oldest.
const MAX_ORDERS: usize = 4;

struct Entry {
    schema_version: u32,
    part: Arc<CachedPartition>,
}

/// The decoded rows of one partition, in key order, and the orders kept for them.
pub struct CachedPartition {
    pub rows: Vec<Row>,
    /// About how much memory the rows take.
    bytes: usize,
    orders: Mutex<Vec<KeptOrder>>,
}

struct KeptOrder {
    keys: Vec<BoundOrderKey>,
    /// Requests for this order answered by a scan so far.
    scans: u32,
    /// Positions in `rows`, in this order, once sorted.
    index: Option<Arc<[u32]>>,
}

impl CachedPartition {
    pub fn new(rows: Vec<Row>) -> Self {
        let bytes = rows
            .iter()
            .map(|(_, v)| 16 + v.iter().map(crate::types::Value::approx_bytes).sum::<usize>())
            .sum();
        CachedPartition {
            rows,
            bytes,
            orders: Mutex::new(Vec::new()),
        }
    }

    /// How many scans of an order come before it is sorted. A sort costs about as
    /// much as log2(rows) scans, so sorting after that many (ski rental) costs at most
    /// twice the better of never sorting and sorting at once, however soon a write
    /// replaces these rows.
    pub fn scans_before_sort(&self) -> u32 {
        (usize::BITS - self.rows.len().leading_zeros()).max(2)
    }

    /// The positions of the rows sorted by `keys` (a total order), once this order
    /// has been scanned [`Self::scans_before_sort`] times on these rows; `None` until
    /// then, and the caller scans. The sort (`sort`) runs once.
    pub fn order(&self, keys: &[BoundOrderKey], sort: impl FnOnce(&mut [u32])) -> Option<Arc<[u32]>> {
        let mut orders = self.orders.lock();
        let Some(kept) = orders.iter_mut().find(|o| o.keys == keys) else {
            // the oldest kept order makes way
            if orders.len() == MAX_ORDERS {
                orders.remove(0);
            }
            orders.push(KeptOrder {
                keys: keys.to_vec(),
                scans: 1,
                index: None,
            });
            return None;
        };
        if let Some(ix) = &kept.index {
            return Some(ix.clone());
        }
        if kept.scans < self.scans_before_sort() {
            kept.scans += 1;
            return None;
        }
        // sorted under the lock: readers of the same order wait for it rather than
        // sort it again
        let n = u32::try_from(self.rows.len()).ok()?;
        let mut ix: Vec<u32> = (0..n).collect();
        sort(&mut ix);
        let ix: Arc<[u32]> = ix.into();
        kept.index = Some(ix.clone());
        Some(ix)
    }
}

/// The cache, bounded by the bytes its rows take (not by their number: a thousand rows
/// of large texts weigh more than a million small ones).
pub struct RowCache {
    /// The entries and the bytes they take.
    entries: Mutex<(HashMap<PartitionKey, Entry>, usize)>,
    generation: AtomicU64,
    max_bytes: usize,
}

impl RowCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), 0)),
            generation: AtomicU64::new(0),
            max_bytes,
        }
    }

    /// The rows of a partition decoded under `schema_version`.
    pub fn get(&self, key: &PartitionKey, schema_version: u32) -> Option<Arc<CachedPartition>> {
        let g = self.entries.lock();
        g.0.get(key)
            .filter(|e| e.schema_version == schema_version)
            .map(|e| e.part.clone())
    }

    /// Taken before a scan that may fill the cache.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores a partition read completely since `generation`, unless a write landed
    /// meanwhile.
    pub fn fill(&self, key: PartitionKey, schema_version: u32, generation: u64, part: Arc<CachedPartition>) {
        let bytes = part.bytes;
        if part.rows.len() > MAX_PARTITION_ROWS || bytes > self.max_bytes / MAX_PARTITION_SHARE {
            return;
        }
        let mut g = self.entries.lock();
        // checked under the lock that `invalidate` takes too
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let (map, total) = &mut *g;
        while *total + bytes > self.max_bytes {
            let Some(k) = map.keys().next().cloned() else { break };
            if let Some(e) = map.remove(&k) {
                *total -= e.part.bytes;
            }
        }
        *total += bytes;
        if let Some(old) = map.insert(key, Entry { schema_version, part }) {
            *total -= old.part.bytes;
        }
    }

    /// Forgets these partitions; called once their writes are durable and before they
    /// are acknowledged.
    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a PartitionKey>) {
        let mut g = self.entries.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let (map, total) = &mut *g;
        for k in keys {
            if let Some(e) = map.remove(k) {
                *total -= e.part.bytes;
            }
        }
    }

    /// Forgets everything (after DDL).
    pub fn clear(&self) {
        let mut g = self.entries.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        g.0.clear();
        g.1 = 0;
    }
}

#[cfg(test)]
mod tests {
    use kalamdb_storage::seq::Seq;

    use super::*;
    use crate::read::filter::FieldRef;
    use crate::types::Value;

    fn by(column: usize) -> Vec<BoundOrderKey> {
        vec![BoundOrderKey {
            field: FieldRef::Column(column),
            descending: true,
            nulls_first: true,
        }]
    }

    /// An order is scanned until it has been asked for log2(rows) times, then
    /// sorted once and kept; a fifth order pushes the oldest out.
    #[test]
    fn orders_asked_again_are_sorted_once_and_kept() {
        let rows = (0..100).map(|i| (Seq(i), vec![Value::Int(i as i32)])).collect();
        let part = CachedPartition::new(rows);
        assert_eq!(part.scans_before_sort(), 7);
        let sorts = std::cell::Cell::new(0);
        let reverse = |ix: &mut [u32]| {
            sorts.set(sorts.get() + 1);
            ix.reverse();
        };
        for _ in 0..7 {
            assert!(part.order(&by(0), reverse).is_none(), "scanned");
        }
        let ix = part.order(&by(0), reverse).expect("sorted on the eighth request");
        assert_eq!(ix.len(), 100);
        assert_eq!(ix[..3], [99, 98, 97]);
        assert!(part.order(&by(0), reverse).is_some());
        assert_eq!(sorts.get(), 1, "sorted once");
        for other in 1..=MAX_ORDERS {
            assert!(part.order(&by(other), reverse).is_none());
        }
        assert!(part.order(&by(0), reverse).is_none(), "the oldest order made way");
        let small = CachedPartition::new(vec![(Seq(1), vec![Value::Int(1)])]);
        assert!(small.bytes > 0);
        assert_eq!(
            small.scans_before_sort(),
            2,
            "a tiny partition is sorted on the third request"
        );
    }
}
