//! kalamdb-schema-gen: turns the catalog into GraphQL schemas, one per role, whose
//! resolvers translate GraphQL arguments into the engine's typed requests (filters,
//! sort keys, limits, assignments). Nothing here builds SQL text.

pub mod depth;
pub mod documents;
pub mod errors;
pub mod fast;
#[cfg(test)]
mod fuzz;
pub mod inputs;
pub mod meta;
pub mod names;
pub mod objects;
pub mod registry;
pub mod resolvers;
pub mod schema;
pub mod spec;
pub mod values;
