//! The KalamDB SQL dialect: parsing ([`parse`]), DDL, DML and queries. Statements are
//! parsed once into an AST; everything built from them is built from parsed, typed
//! values, never by pasting user text into SQL.

pub(crate) mod bounded;
pub mod ddl;
pub mod dml;
pub mod eval;
pub mod maintenance;
pub mod parse;
pub(crate) mod pg_text;
pub mod query;
pub mod result;
