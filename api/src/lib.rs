//! kalamdb-api: configuration, the axum application, HTTP handlers and the CLI.

/// The server's allocator, for every binary that links the server (the `kalamdb`
/// binary, the end-to-end tests and the benches): mimalloc's per-thread free lists cost
/// far less than glibc's arenas on the request path, where allocation is about a tenth
/// of the CPU, and memory freed on another thread (the commit thread's replies) goes
/// back without arena contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod auth_handler;
pub mod cli_sql;
pub mod config;
pub mod demo;
pub mod error;
pub mod external_auth;
pub mod graphql_handler;
pub mod http_auth;
pub mod oauth;
pub mod realtime;
pub mod sql_handler;
pub mod ws;
