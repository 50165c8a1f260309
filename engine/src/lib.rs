//! kalamdb-engine: the catalog, the row codec, DataFusion table providers over the hot
//! and cold tiers, the jobs that move rows between them, the SQL dialect, the typed
//! read/write API the GraphQL layer calls, and the authorization that guards all of it.
//!
//! `Engine` (`engine`) is the one entry point; the rest is grouped by what it is
//! about: `catalog` (namespaces, tables, schemas, system tables), `write` (the commit
//! pipeline and mutations), `read` (filters, selects, readers, table providers, the row
//! cache, reads across tiers), `live` (live queries and change feeds), `tiers` (the
//! cold tier, flush and compaction), `jobs`, `accounts` (users, sessions, audit) and
//! `sql` (the dialect). `error`, `context`, `ids`, `types` and `codec` are the
//! vocabulary all of them share.

pub mod accounts;
pub mod catalog;
pub mod codec;
pub mod context;
pub mod engine;
pub mod error;
pub mod faults;
pub mod fuzz;
pub mod ids;
pub mod index;
pub mod jobs;
pub mod live;
pub mod read;
pub mod sql;
pub mod tiers;
pub mod types;
pub mod write;

#[cfg(test)]
mod testing;
