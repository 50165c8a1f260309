//! kalamdb-storage: the RocksDB hot store (partitions, ordered keys, atomic write
//! batches, the `_seq` allocator) and the cold tier (Parquet segments and their manifests
//! in an `object_store`).

pub mod cold;
pub mod error;
pub mod hot_store;
pub mod keys;
pub mod seq;
