//! Builds the GraphQL schema of one role from the catalog: the tables the role may
//! read, with mutations only where it may write. Tables it may not read are absent,
//! introspection included.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::dynamic::{Object, Schema, SchemaError, Subscription, Type};
use kalamdb_auth::identity::Role;
use kalamdb_auth::permissions::{TableOp, can_access_table};
use kalamdb_engine::catalog::schema::TableDef;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::ids::NamespaceId;

use crate::errors::{ComplexityLimit, ErrorPath};
use crate::fast::FastPaths;
use crate::meta::TableMeta;
use crate::objects::{shared_types, table_types};
use crate::resolvers;
use crate::spec::RootField;

pub const QUERY_ROOT: &str = "query_root";
pub const MUTATION_ROOT: &str = "mutation_root";
pub const SUBSCRIPTION_ROOT: &str = "subscription_root";

/// Bounds every generated schema enforces.
#[derive(Debug, Clone)]
pub struct GraphqlLimits {
    /// Deepest nesting of data selections (introspection is bounded apart: see
    /// [`crate::depth`]), checked by [`crate::depth::check_depth`] before execution.
    pub max_depth: usize,
    /// Most fields in one document (each field costs 1).
    pub max_complexity: usize,
    /// Most rows (or groups) in one list result.
    pub max_rows: usize,
    /// Most bytes of row data one response may carry, over all its fields (aliases of
    /// one big list included).
    pub max_response_bytes: usize,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 1000,
            max_rows: 10_000,
            max_response_bytes: 64 << 20,
        }
    }
}

struct Visible {
    meta: Arc<TableMeta>,
    writable: bool,
}

/// Root-field names a table contributes.
fn root_fields(meta: &TableMeta, writable: bool) -> Vec<String> {
    RootField::of_table(meta, writable)
        .map(|r| r.name(&meta.names))
        .collect()
}

/// The tables `role` may read, in name order, minus any whose generated names would
/// collide with an earlier table's (logged; rename one of them to expose both).
fn visible_tables(engine: &Engine, role: Role) -> Vec<(Visible, Vec<Type>)> {
    let mut tables = engine.catalog().tables();
    tables.retain(|t| t.id.namespace != NamespaceId::system());
    let mut metas: Vec<(Arc<TableMeta>, bool)> = tables
        .iter()
        .filter(|t| can_access_table(role, t.table_type, t.access_level, TableOp::Read))
        .map(|t| {
            (
                Arc::new(TableMeta::from_def(t)),
                can_access_table(role, t.table_type, t.access_level, TableOp::Write),
            )
        })
        .collect();
    metas.sort_by(|a, b| a.0.names.base.cmp(&b.0.names.base));
    let mut type_names: HashSet<String> = shared_types().iter().map(|t| type_name(t).to_string()).collect();
    type_names.extend(
        [
            "query_root",
            "mutation_root",
            "subscription_root",
            "Int",
            "Float",
            "String",
            "Boolean",
            "ID",
        ]
        .map(String::from),
    );
    let mut field_names: HashSet<String> = HashSet::from(["_me".to_string()]);
    let mut out = Vec::new();
    for (meta, writable) in metas {
        let types = table_types(&meta, writable);
        let tnames: Vec<String> = types.iter().map(|t| type_name(t).to_string()).collect();
        let fnames = root_fields(&meta, writable);
        let clash = tnames
            .iter()
            .find(|n| type_names.contains(*n))
            .or_else(|| fnames.iter().find(|n| field_names.contains(*n)));
        if let Some(name) = clash {
            tracing::warn!(table = %meta.id, name = %name, "GraphQL name taken by another table; table left out of the schema");
            continue;
        }
        type_names.extend(tnames);
        field_names.extend(fnames);
        out.push((Visible { meta, writable }, types));
    }
    out
}

fn type_name(t: &Type) -> &str {
    match t {
        Type::Scalar(s) => s.type_name(),
        Type::Object(o) => o.type_name(),
        Type::InputObject(i) => i.type_name(),
        Type::Enum(e) => e.type_name(),
        Type::Interface(i) => i.type_name(),
        Type::Union(u) => u.type_name(),
        Type::Subscription(s) => s.type_name(),
        Type::Upload => "Upload",
    }
}

/// The schema `role` sees now.
pub fn build_schema(engine: &Arc<Engine>, role: Role, limits: &GraphqlLimits) -> Result<Schema, SchemaError> {
    build_role_schema(engine, role, limits).map(|(schema, _)| schema)
}

/// The role's schema, and the direct paths for its `_by_pk`, list and `insert_<t>_one`
/// fields.
pub fn build_role_schema(
    engine: &Arc<Engine>,
    role: Role,
    limits: &GraphqlLimits,
) -> Result<(Schema, FastPaths), SchemaError> {
    let tables = visible_tables(engine, role);
    let fast = FastPaths::new(tables.iter().map(|(v, _)| (v.meta.clone(), v.writable)), limits.clone());
    let any_writable = tables.iter().any(|(v, _)| v.writable);
    let any_table = !tables.is_empty();
    let mut builder = Schema::build(
        QUERY_ROOT,
        any_writable.then_some(MUTATION_ROOT),
        any_table.then_some(SUBSCRIPTION_ROOT),
    );
    for t in shared_types() {
        builder = builder.register(t);
    }
    let mut query = Object::new(QUERY_ROOT).field(resolvers::query::me_field());
    let mut mutation = Object::new(MUTATION_ROOT);
    let mut subscription = Subscription::new(SUBSCRIPTION_ROOT);
    for (v, types) in tables {
        for t in types {
            builder = builder.register(t);
        }
        let m = &v.meta;
        for root in RootField::of_table(m, v.writable) {
            match root {
                RootField::List => {
                    query = query.field(resolvers::query::list_field(m));
                    subscription = subscription.field(resolvers::subscription::live_subscription_field(m));
                }
                RootField::ByPk => query = query.field(resolvers::query::by_pk_field(m)),
                RootField::Aggregate => {
                    query = query.field(resolvers::aggregate::aggregate_field(m));
                    subscription = subscription.field(resolvers::subscription::aggregate_subscription_field(m));
                }
                RootField::Changes => {
                    subscription = subscription.field(resolvers::subscription::changes_subscription_field(m))
                }
                RootField::Insert => mutation = mutation.field(resolvers::mutation::insert_field(m)),
                RootField::InsertOne => mutation = mutation.field(resolvers::mutation::insert_one_field(m)),
                RootField::Update => mutation = mutation.field(resolvers::mutation::update_field(m)),
                RootField::UpdateByPk => mutation = mutation.field(resolvers::mutation::update_by_pk_field(m)),
                RootField::Delete => mutation = mutation.field(resolvers::mutation::delete_field(m)),
                RootField::DeleteByPk => mutation = mutation.field(resolvers::mutation::delete_by_pk_field(m)),
            }
        }
    }
    builder = builder.register(query);
    if any_writable {
        builder = builder.register(mutation);
    }
    if any_table {
        builder = builder.register(subscription);
    }
    let schema = builder
        .data(engine.clone())
        .data(limits.clone())
        .extension(ErrorPath)
        .extension(ComplexityLimit(limits.max_complexity))
        .finish()?;
    Ok((schema, fast))
}

/// The table behind a query or subscription root field, and whether the field is its
/// change feed.
pub fn table_of_field(engine: &Engine, field: &str) -> Option<(Arc<TableDef>, bool)> {
    engine.catalog().tables().into_iter().find_map(|t| {
        let n = crate::names::TableNames::new(&t.id);
        if n.base == field {
            Some((t, false))
        } else if n.changes() == field {
            Some((t, true))
        } else {
            None
        }
    })
}

/// The schema's SDL with types, fields, arguments and enum values sorted, so that it is
/// stable for snapshots and code generation.
pub fn sorted_sdl(schema: &Schema) -> String {
    schema.sdl_with_options(
        async_graphql::SDLExportOptions::new()
            .sorted_fields()
            .sorted_arguments()
            .sorted_enum_items(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_engine::context::ExecContext;
    use kalamdb_engine::engine::EngineConfig;
    use kalamdb_engine::sql::parse::split_script;

    /// One SDL snapshot per fixture folder and role.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sdl_snapshots() {
        // read at run time: a binary built from another checkout sharing the target
        // directory may be reused, and the compile-time path would point into it
        let root: std::path::PathBuf =
            std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into);
        let fixtures = root.join("fixtures");
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(root.join("src").join("snapshots"));
        let _bound = settings.bind_to_scope();
        let mut names: Vec<_> = std::fs::read_dir(&fixtures)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert!(names.len() >= 3);
        for name in names {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = EngineConfig::new(dir.path());
            cfg.bcrypt_cost = 4;
            let engine = Engine::open(cfg).await.unwrap();
            let sql = std::fs::read_to_string(fixtures.join(&name).join("schema.sql")).unwrap();
            for stmt in split_script(&sql) {
                engine.execute_sql(&ExecContext::system(), &stmt, &[]).await.unwrap();
            }
            for role in Role::ALL {
                let schema = build_schema(&engine, role, &GraphqlLimits::default()).unwrap();
                insta::assert_snapshot!(format!("{name}__{role}"), sorted_sdl(&schema));
            }
        }
    }
}
