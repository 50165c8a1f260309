//! Bounded caches of immutable segment data: byte ranges of segment files, and row
//! groups decoded by key lookups.

use std::collections::HashMap;
use std::sync::Arc;

/// Values of immutable segment data (byte ranges, decoded row groups) kept up to a
/// budget and dropped oldest first. Segments never change, so nothing cached is stale.
pub(crate) struct BoundedCache<K, V> {
    inner: parking_lot::Mutex<BoundedInner<K, V>>,
    budget: usize,
}

struct BoundedInner<K, V> {
    map: HashMap<K, (V, usize)>,
    order: std::collections::VecDeque<K>,
    size: usize,
}

impl<K, V> Default for BoundedInner<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            size: 0,
        }
    }
}

impl<K: Clone + Eq + std::hash::Hash, V: Clone> BoundedCache<K, V> {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            inner: parking_lot::Mutex::new(BoundedInner::default()),
            budget,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.inner.lock().map.get(key).map(|(v, _)| v.clone())
    }

    fn put_sized(&self, key: K, v: V, size: usize) {
        if size > self.budget / 8 {
            return;
        }
        let mut c = self.inner.lock();
        if c.map.insert(key.clone(), (v, size)).is_some() {
            return;
        }
        c.size += size;
        c.order.push_back(key);
        while c.size > self.budget {
            let Some(old) = c.order.pop_front() else { break };
            if let Some((_, n)) = c.map.remove(&old) {
                c.size -= n;
            }
        }
    }
}

/// Byte ranges of segment files, by (path, start, end).
pub(crate) type RangeKey = (Arc<str>, u64, u64);
pub(crate) type RangeCache = BoundedCache<RangeKey, bytes::Bytes>;

impl RangeCache {
    pub(crate) fn put(&self, key: RangeKey, b: bytes::Bytes) {
        let n = b.len();
        self.put_sized(key, b, n);
    }
}

/// Row groups decoded whole for key lookups, by (segment handle id, row group).
pub(crate) type DecodedKey = (u64, usize);
pub(crate) struct DecodedCache(pub(crate) BoundedCache<DecodedKey, arrow::array::RecordBatch>);

impl DecodedCache {
    pub(crate) fn get(&self, key: &DecodedKey) -> Option<arrow::array::RecordBatch> {
        self.0.get(key)
    }
    pub(crate) fn put(&self, key: DecodedKey, b: arrow::array::RecordBatch) {
        let n = b.get_array_memory_size();
        self.0.put_sized(key, b, n);
    }
}
