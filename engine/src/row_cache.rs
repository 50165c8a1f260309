//! Decoded rows of recently read partitions, so that repeated list reads of one
//! partition filter and sort in memory instead of scanning and decoding RocksDB rows.
//!
//! Consistency: the commit pipeline invalidates the partitions a batch touched after the
//! batch is durable and before any of its writes is acknowledged, and bumps a
//! generation. A read fills the cache only if the generation did not move while it
//! scanned, so a filled entry never misses a write acknowledged before the fill. Entries
//! carry the schema version they were decoded under; DDL clears the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kalamdb_auth::identity::UserId;
use parking_lot::Mutex;

use crate::engine::Row;

/// A partition: a table, and the owner for per-user tables.
pub type PartitionKey = (u64, Option<UserId>);

/// Partitions with more rows than this are never cached.
pub const MAX_PARTITION_ROWS: usize = 10_000;
/// The most rows the cache holds in all.
const MAX_TOTAL_ROWS: usize = 1_000_000;

struct Entry {
    schema_version: u32,
    rows: Arc<Vec<Row>>,
}

#[derive(Default)]
pub struct RowCache {
    entries: Mutex<(HashMap<PartitionKey, Entry>, usize)>,
    generation: AtomicU64,
}

impl RowCache {
    /// The rows of a partition decoded under `schema_version`, in key order.
    pub fn get(&self, key: &PartitionKey, schema_version: u32) -> Option<Arc<Vec<Row>>> {
        let g = self.entries.lock();
        g.0.get(key)
            .filter(|e| e.schema_version == schema_version)
            .map(|e| e.rows.clone())
    }

    /// Taken before a scan that may fill the cache.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores a partition read completely since `generation`, unless a write landed
    /// meanwhile.
    pub fn fill(&self, key: PartitionKey, schema_version: u32, generation: u64, rows: Arc<Vec<Row>>) {
        if rows.len() > MAX_PARTITION_ROWS {
            return;
        }
        let mut g = self.entries.lock();
        // checked under the lock that `invalidate` takes too
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let (map, total) = &mut *g;
        while *total + rows.len() > MAX_TOTAL_ROWS {
            let Some(k) = map.keys().next().cloned() else { break };
            if let Some(e) = map.remove(&k) {
                *total -= e.rows.len();
            }
        }
        *total += rows.len();
        if let Some(old) = map.insert(key, Entry { schema_version, rows }) {
            *total -= old.rows.len();
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
                *total -= e.rows.len();
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
