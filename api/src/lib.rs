//! kalamdb-api: configuration, the axum application, HTTP handlers and the CLI.

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
