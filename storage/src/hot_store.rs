//! The RocksDB hot store. A [`Partition`] is a RocksDB column family: the system area,
//! the change log, and one per table. Writes go through [`WriteBatch`], applied
//! atomically; the caller (the engine's commit pipeline) groups concurrent writers into
//! one batch, so one fsync serves many of them.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, DBWithThreadMode, MultiThreaded, Options,
    ReadOptions, WriteOptions,
};

use crate::error::{Result, StorageError};
use crate::seq::{Seq, SeqAllocator};

type Db = DBWithThreadMode<MultiThreaded>;

/// A named key space (a RocksDB column family).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition(String);

impl Partition {
    /// Catalog, users and store metadata.
    pub fn system() -> Self {
        Partition("sys".into())
    }
    /// Change-log entries keyed by `_seq`.
    pub fn change_log() -> Self {
        Partition("changelog".into())
    }
    /// The rows of one table, by its numeric storage id.
    pub fn table(storage_id: u64) -> Self {
        Partition(format!("t{storage_id}"))
    }
    /// The secondary-index entries of one table, by its numeric storage id.
    pub fn index(storage_id: u64) -> Self {
        Partition(format!("x{storage_id}"))
    }
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before acknowledging; concurrent writers share one fsync (group commit).
    #[default]
    Sync,
    /// Acknowledge once the write is in the OS page cache: a process crash loses
    /// nothing, a power loss may lose the last moments of writes.
    Async,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Total memtable budget across all partitions.
    pub write_buffer_bytes: usize,
    /// Block cache shared by all partitions.
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            write_buffer_bytes: 128 << 20,
            block_cache_bytes: 128 << 20,
        }
    }
}

const SEQ_HIGH_WATER_KEY: &[u8] = b"meta/seq_high_water";
/// The key [`HotStore::probe_space`] writes.
const SPACE_PROBE_KEY: &[u8] = b"meta/space_probe";

pub struct HotStore {
    db: Db,
    cf_opts: Options,
    durability: Durability,
    seq: SeqAllocator,
    /// Set by a write that found the device full, cleared by the next that succeeds.
    full: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for HotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotStore").finish_non_exhaustive()
    }
}

impl HotStore {
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        // a clock cache takes no lock on a hit (the LRU cache's shard mutexes showed in
        // profiles of concurrent point reads); 0 lets RocksDB size its entries itself
        let cache = rocksdb::Cache::new_hyper_clock_cache(options.block_cache_bytes, 0);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&cache);
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);
        block.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // a point read finds its key in a data block by hash, not by binary search
        block.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&block);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        cf_opts.set_write_buffer_size(16 << 20);

        let mut db_opts = cf_opts.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_db_write_buffer_size(options.write_buffer_bytes);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(4);

        let mut names = Db::list_cf(&db_opts, path).unwrap_or_default();
        for required in [Partition::system(), Partition::change_log()] {
            if !names.iter().any(|n| n == required.name()) {
                names.push(required.name().to_string());
            }
        }
        let descriptors = names.iter().map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
        let db = Db::open_cf_descriptors(&db_opts, path, descriptors)?;

        let high_water = {
            let cf = db
                .cf_handle(Partition::system().name())
                .ok_or_else(|| StorageError::NoSuchPartition("sys".into()))?;
            match db.get_pinned_cf(&cf, SEQ_HIGH_WATER_KEY)? {
                Some(v) => Seq(u64::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StorageError::Corrupt("seq high-water mark".into()))?,
                )),
                None => Seq::ZERO,
            }
        };
        Ok(Self {
            db,
            cf_opts,
            durability: options.durability,
            seq: SeqAllocator::new(high_water),
            full: Default::default(),
        })
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The `_seq` allocator, resumed past the persisted high-water mark.
    pub fn seq(&self) -> &SeqAllocator {
        &self.seq
    }

    fn cf(&self, p: &Partition) -> Result<Arc<BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(p.name())
            .ok_or_else(|| StorageError::NoSuchPartition(p.name().to_string()))
    }

    pub fn has_partition(&self, p: &Partition) -> bool {
        self.db.cf_handle(p.name()).is_some()
    }

    pub fn create_partition(&self, p: &Partition) -> Result<()> {
        if self.has_partition(p) {
            return Ok(());
        }
        self.db.create_cf(p.name(), &self.cf_opts)?;
        Ok(())
    }

    pub fn drop_partition(&self, p: &Partition) -> Result<()> {
        if !self.has_partition(p) {
            return Ok(());
        }
        self.db.drop_cf(p.name())?;
        Ok(())
    }

    pub fn get(&self, p: &Partition, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(p)?;
        Ok(self.db.get_pinned_cf(&cf, key)?.map(|v| v.to_vec()))
    }

    /// Calls `f` with the value of `key`, without copying it out of RocksDB.
    pub fn get_with<R>(&self, p: &Partition, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let cf = self.cf(p)?;
        Ok(self.db.get_pinned_cf(&cf, key)?.map(|v| f(v.as_ref())))
    }

    /// Calls `f` with the value of each key (`None` where there is none), in the order
    /// given, reading them as one batch.
    pub fn multi_get_with<R>(
        &self,
        p: &Partition,
        keys: &[Vec<u8>],
        mut f: impl FnMut(Option<&[u8]>) -> R,
    ) -> Result<Vec<R>> {
        let cf = self.cf(p)?;
        self.db
            .batched_multi_get_cf(&cf, keys.iter(), false)
            .into_iter()
            .map(|v| Ok(f(v?.as_deref())))
            .collect()
    }

    /// Writes the partition's memtable to a sorted file and waits for it: after a bulk
    /// write, a walk over its keys reads them from contiguous blocks rather than
    /// chasing the memtable's skip list.
    pub fn flush(&self, p: &Partition) -> Result<()> {
        let cf = self.cf(p)?;
        self.db.flush_cf(&cf)?;
        Ok(())
    }

    /// Compacts the whole partition, memtable included: versions a range delete covers
    /// leave memory and files, so point reads and scans no longer pass over them.
    pub fn compact(&self, p: &Partition) -> Result<()> {
        let cf = self.cf(p)?;
        let mut opts = rocksdb::CompactOptions::default();
        // the bottom level too: a range tombstone left there would still be consulted
        // by every read of the range
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db.compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &opts);
        Ok(())
    }

    /// RocksDB's estimate of the keys in `p` (tombstones included), cheap to read: from
    /// its files' properties and the memtable's count.
    pub fn estimated_keys(&self, p: &Partition) -> Result<u64> {
        let cf = self.cf(p)?;
        Ok(self
            .db
            .property_int_value_cf(&cf, "rocksdb.estimate-num-keys")?
            .unwrap_or(0))
    }

    /// How many versions of keys RocksDB physically holds in `p`, those a range delete
    /// covers included: what compaction has not dropped yet.
    pub fn stored_versions(&self, p: &Partition) -> Result<u64> {
        let cf = self.cf(p)?;
        let mut ro = ReadOptions::default();
        // deprecated as a performance knob, which is not its use here: it shows the
        // versions a range delete hides
        #[allow(deprecated)]
        ro.set_ignore_range_deletions(true);
        let mut it = self.db.raw_iterator_cf_opt(&cf, ro);
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// Iterates keys in `[lower, upper)` (no upper bound when `None`), in key order.
    pub fn scan(&self, p: &Partition, lower: &[u8], upper: Option<&[u8]>) -> Result<ScanIter<'_>> {
        let cf = self.cf(p)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.to_vec());
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(&cf, ro);
        it.seek(lower);
        Ok(ScanIter {
            it,
            started: false,
            reverse: false,
        })
    }

    /// Iterates keys in `[lower, upper)` in reverse key order, from the last.
    pub fn scan_rev(&self, p: &Partition, lower: &[u8], upper: &[u8]) -> Result<ScanIter<'_>> {
        let cf = self.cf(p)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.to_vec());
        ro.set_iterate_upper_bound(upper.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(&cf, ro);
        it.seek_to_last();
        Ok(ScanIter {
            it,
            started: false,
            reverse: true,
        })
    }

    /// Applies the batch atomically, with the store's durability. The batch carries the
    /// `_seq` high-water mark when it allocated any seq.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        let cfs = batch.parts.iter().map(|p| self.cf(p)).collect::<Result<Vec<_>>>()?;
        for op in &batch.ops {
            match op {
                BatchOp::Put(p, k, v) => wb.put_cf(&cfs[*p as usize], k, v),
                BatchOp::Delete(p, k) => wb.delete_cf(&cfs[*p as usize], k),
                BatchOp::DeleteRange(p, from, to) => wb.delete_range_cf(&cfs[*p as usize], from, to),
            }
        }
        if let Some(seq) = batch.max_seq {
            wb.put_cf(&self.cf(&Partition::system())?, SEQ_HIGH_WATER_KEY, seq.to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.durability == Durability::Sync);
        self.note_outcome(self.db.write_opt(wb, &wo).map_err(StorageError::from))
    }

    /// A consistent copy of the whole store at `dir` (which must not exist): hard links
    /// to its files and a copy of what is still in memory.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Whether the last write found the device full (or a job's file did).
    pub fn is_full(&self) -> bool {
        self.full.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that a write elsewhere (a cold-tier file) found the device full.
    pub fn mark_full(&self) {
        self.full.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tries a small synced write (4 KiB to one key of the system partition), which
    /// clears the full state once the device takes writes again. Returns whether the
    /// store is still full.
    pub fn probe_space(&self) -> bool {
        let write = || -> Result<()> {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            let cf = self.cf(&Partition::system())?;
            self.db.put_cf_opt(&cf, SPACE_PROBE_KEY, [0u8; 4096], &wo)?;
            Ok(())
        };
        let _ = self.note_outcome(write());
        self.is_full()
    }

    fn note_outcome(&self, res: Result<()>) -> Result<()> {
        match &res {
            // a load, not a store, on every write: the flag's cache line stays shared
            Ok(()) if self.is_full() => self.full.store(false, std::sync::atomic::Ordering::Relaxed),
            Ok(()) => {}
            Err(e) if e.is_full() => self.mark_full(),
            Err(_) => {}
        }
        res
    }
}

enum BatchOp {
    Put(u16, Vec<u8>, Vec<u8>),
    Delete(u16, Vec<u8>),
    DeleteRange(u16, Vec<u8>, Vec<u8>),
}

/// Puts and deletes applied together or not at all.
#[derive(Default)]
pub struct WriteBatch {
    /// The partitions the ops refer to, by index.
    parts: Vec<Partition>,
    ops: Vec<BatchOp>,
    max_seq: Option<Seq>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    fn part(&mut self, p: &Partition) -> u16 {
        match self.parts.iter().position(|x| x == p) {
            Some(i) => i as u16,
            None => {
                self.parts.push(p.clone());
                (self.parts.len() - 1) as u16
            }
        }
    }
    pub fn put(&mut self, p: &Partition, key: Vec<u8>, value: Vec<u8>) {
        let i = self.part(p);
        self.ops.push(BatchOp::Put(i, key, value));
    }
    pub fn delete(&mut self, p: &Partition, key: Vec<u8>) {
        let i = self.part(p);
        self.ops.push(BatchOp::Delete(i, key));
    }
    /// Deletes every key in `[from, to)`.
    pub fn delete_range(&mut self, p: &Partition, from: Vec<u8>, to: Vec<u8>) {
        let i = self.part(p);
        self.ops.push(BatchOp::DeleteRange(i, from, to));
    }
    /// Records that this batch persists rows up to `seq`.
    pub fn note_seq(&mut self, seq: Seq) {
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
    }
    /// Moves every operation of `other` into this batch.
    pub fn append(&mut self, other: WriteBatch) {
        let map: Vec<u16> = other.parts.iter().map(|p| self.part(p)).collect();
        self.ops.extend(other.ops.into_iter().map(|op| match op {
            BatchOp::Put(p, k, v) => BatchOp::Put(map[p as usize], k, v),
            BatchOp::Delete(p, k) => BatchOp::Delete(map[p as usize], k),
            BatchOp::DeleteRange(p, a, b) => BatchOp::DeleteRange(map[p as usize], a, b),
        }));
        if let Some(s) = other.max_seq {
            self.note_seq(s);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.max_seq.is_none()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// An iterator over a key range, forward or in reverse.
pub struct ScanIter<'a> {
    it: DBRawIteratorWithThreadMode<'a, Db>,
    started: bool,
    reverse: bool,
}

impl ScanIter<'_> {
    /// The next `(key, value)`, borrowed until the following call.
    pub fn next_entry(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        if self.started {
            if self.reverse {
                self.it.prev();
            } else {
                self.it.next();
            }
        }
        self.started = true;
        if !self.it.valid() {
            self.it.status()?;
            return Ok(None);
        }
        match (self.it.key(), self.it.value()) {
            (Some(k), Some(v)) => Ok(Some((k, v))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_scan_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = Partition::table(7);
        let last;
        {
            let s = HotStore::open(dir.path(), &StoreOptions::default()).unwrap();
            s.create_partition(&t).unwrap();
            let mut b = WriteBatch::new();
            for i in 0..10u8 {
                b.put(&t, vec![1, i], vec![i]);
            }
            b.put(&t, vec![2, 0], vec![99]);
            last = s.seq().next();
            b.note_seq(last);
            s.write(b).unwrap();
            let mut it = s.scan(&t, &[1], Some(&[2])).unwrap();
            let mut n = 0;
            while let Some((k, v)) = it.next_entry().unwrap() {
                assert_eq!(k, &[1, n]);
                assert_eq!(v, &[n]);
                n += 1;
            }
            assert_eq!(n, 10);
        }
        let s = HotStore::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(s.has_partition(&t));
        assert_eq!(s.get(&t, &[2, 0]).unwrap(), Some(vec![99]));
        assert!(s.seq().next() > last);
        s.drop_partition(&t).unwrap();
        assert!(s.get(&t, &[2, 0]).is_err());
    }
}
