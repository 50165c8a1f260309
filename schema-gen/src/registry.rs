//! The schemas in use: one per role, built on first use and rebuilt when the catalog
//! changes (any committed DDL). A request takes the schema current when it starts and
//! finishes on it, whatever DDL commits meanwhile.

use std::sync::Arc;

use async_graphql::dynamic::{Schema, SchemaError};
use kalamdb_auth::identity::Role;
use kalamdb_engine::engine::Engine;
use parking_lot::RwLock;

use crate::documents::{Document, DocumentCache};
use crate::fast::FastPaths;
use crate::schema::{GraphqlLimits, build_role_schema};

const ROLES: usize = 4;

fn slot(role: Role) -> usize {
    match role {
        Role::User => 0,
        Role::Service => 1,
        Role::Dba => 2,
        Role::System => 3,
    }
}

/// A role's schema and the direct paths of its `_by_pk` fields, of one catalog
/// generation.
#[derive(Clone)]
pub struct RoleSchema {
    pub schema: Schema,
    pub fast: Arc<FastPaths>,
}

struct Cached {
    generation: u64,
    schemas: [Option<RoleSchema>; ROLES],
}

pub struct SchemaRegistry {
    engine: Arc<Engine>,
    limits: GraphqlLimits,
    cache: RwLock<Cached>,
    documents: DocumentCache,
}

impl SchemaRegistry {
    pub fn new(engine: Arc<Engine>, limits: GraphqlLimits) -> Self {
        Self {
            engine,
            limits,
            cache: RwLock::new(Cached {
                generation: u64::MAX,
                schemas: Default::default(),
            }),
            documents: DocumentCache::default(),
        }
    }

    pub fn limits(&self) -> &GraphqlLimits {
        &self.limits
    }

    /// The parsed document of a query text (kept for the next request that sends it).
    pub fn parse(&self, query: &str) -> Result<Document, crate::documents::ParseFailure> {
        self.documents.parse(query)
    }

    /// The current schema of `role`.
    pub fn schema_for(&self, role: Role) -> Result<RoleSchema, SchemaError> {
        let generation = self.engine.catalog().generation();
        {
            let c = self.cache.read();
            if c.generation == generation
                && let Some(s) = &c.schemas[slot(role)]
            {
                return Ok(s.clone());
            }
        }
        let (schema, fast) = build_role_schema(&self.engine, role, &self.limits)?;
        let schema = RoleSchema {
            schema,
            fast: Arc::new(fast),
        };
        let mut c = self.cache.write();
        if c.generation == u64::MAX || generation > c.generation {
            *c = Cached {
                generation,
                schemas: Default::default(),
            };
        }
        if c.generation == generation {
            c.schemas[slot(role)] = Some(schema.clone());
        }
        Ok(schema)
    }
}
