//! End-to-end tests: one binary, a module per capability, each against a real server.

mod auth_tokens;
mod bad_input;
mod cold_tier;
mod composite_keys;
mod durability;
mod external_tokens;
mod full_disk;
mod graphql_access;
mod graphql_api;
mod graphql_clients;
mod hardening;
mod indexes;
mod isolation;
mod jobs;
mod oauth;
mod pg_semantics;
mod playground;
mod role_matrix;
mod session_security;
mod sql_roundtrip;
mod subscriptions;
