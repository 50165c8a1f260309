//! The cold tier as the engine sees it (`cold`: partition directories, rows to
//! segments, segments back to the current schema, pruning), and the jobs that move and
//! tidy rows (`flush`: flush, compaction, TTL eviction, cleanup; `purge`: the tombstone purge).

pub mod cold;
pub mod flush;
mod purge;

#[cfg(test)]
mod power_loss;
#[cfg(test)]
mod tests;
