//! kalamdb-api: configuration, the axum application, HTTP handlers and the CLI.

pub mod app;
pub mod auth;
pub mod body;
pub mod cli_sql;
pub mod config;
pub mod demo;
pub mod error;
pub mod graphql;
pub mod listen;
pub mod metrics;
pub mod sql_handler;
