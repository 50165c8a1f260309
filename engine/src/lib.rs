//! kalamdb-engine: the catalog, the row codec, DataFusion table providers over the hot
//! and cold tiers, the jobs that move rows between them, the SQL dialect, the typed
//! read/write API the GraphQL layer calls, and the authorization that guards all of it.

pub mod arrow_convert;
pub mod audit;
pub mod catalog;
pub mod changelog;
pub mod codec;
pub mod cold;
pub mod commit;
pub mod context;
pub mod engine;
pub mod error;
pub mod faults;
pub mod filter;
pub mod flush;
pub mod ids;
pub mod jobs;
pub mod live;
pub mod mutate;
pub mod provider;
pub mod reader;
pub mod row_cache;
pub mod row_expr;
pub mod schema;
pub mod select;
pub mod sessions;
pub mod sql;
pub mod system_tables;
pub mod tiered;
pub mod types;
pub mod users;
