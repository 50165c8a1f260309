//! kalamdb-storage: the RocksDB hot store (partitions, ordered keys, atomic write
//! batches, the `_seq` allocator). Parquet segments join this crate with the cold tier.

pub mod error;
pub mod hot_store;
pub mod keys;
pub mod seq;
