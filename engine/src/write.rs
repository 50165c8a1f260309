//! Writes: the commit pipeline (`commit`: one writer thread, group commit, conflict
//! checks), the typed mutation API (`mutate`), and the row expressions of `SET` and
//! `DO UPDATE SET` (`row_expr`).

pub mod commit;
pub mod mutate;
pub mod row_expr;
