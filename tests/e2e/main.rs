//! End-to-end tests: one binary, a module per capability, each against a real server.

mod bad_input;
mod durability;
mod isolation;
mod role_matrix;
mod sql_roundtrip;
