//! A direct path for the commonest operations: queries whose root fields are all
//! `_by_pk` lookups or list fields (`where`, `order_by`, `limit`, `offset`), and
//! mutations that are one `insert_<t>_one` without `on_conflict`, selecting plain
//! columns. Such a document is answered without async-graphql's validation and
//! field-by-field execution: its arguments are checked here as the validator would
//! check them (against the same [`crate::spec`]) and turned into the same engine
//! requests the resolvers make (one `Engine::get_by_pk`, `Engine::select` or
//! `Engine::insert` per field), and the response body is written straight from the
//! rows, byte for byte as the general executor's (the same output conversions, keys in
//! query order).
//!
//! Once a document is planned here, this path answers it, errors included: an engine
//! error (a refused insert, a result over the row limit) or a null in a non-null field
//! is reported as the general executor reports it (message, location, path, code, and
//! the nulls it propagates), so no engine call is ever made twice. Several failed
//! fields are reported in field order (the general executor reports them in the order
//! its concurrent resolvers fail, which no client can rely on).
//!
//! A document is planned once per role schema (so per role and catalog generation)
//! and operation, and the plan is kept by the document's text: a request only binds
//! its variables' values, each checked against the scalar it stands for.
//!
//! A document of another shape, or one the validator might refuse (a fragment or
//! directive, a variable missing, nullable or of the wrong type, a null literal, a
//! single value where a list is due, an enum or JSON value given by variable), returns
//! `None` before any engine call, and the request takes the general path, which
//! produces the proper errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{Name, PathSegment, Pos, ServerError, Value as Gql};
use async_graphql_value::Value as Ast;
use kalamdb_engine::catalog::schema::TableDef;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::{EngineError, ErrorCode};
use kalamdb_engine::read::filter::FilterLimits;
use kalamdb_engine::read::select::SelectRequest;
use kalamdb_engine::types::{ColumnType, Value};
use kalamdb_storage::seq::Seq;
use parking_lot::RwLock;
use serde_json::{Map, Value as Json};

mod check;

use self::check::{Vars, by_pk_argument, insert_argument, list_arguments, plain_fields};
use crate::documents::{Document, operation};
use crate::errors::engine_error;
use crate::meta::TableMeta;
use crate::resolvers::mutation::insert_one;
use crate::resolvers::{RowField, check_row_count, list_request_of};
use crate::schema::GraphqlLimits;
use crate::spec::RootField;
use crate::values::{accepts, from_gql};

const TYPENAME: &str = "__typename";

/// The `_by_pk`, list and (for tables the role may write) `insert_<t>_one` root fields
/// of one role's schema.
#[derive(Default)]
pub struct FastPaths {
    roots: HashMap<String, (RootField, Arc<TableMeta>)>,
    limits: GraphqlLimits,
    /// Each document's plan per operation name (`None`: the general path serves it),
    /// by the document's text. The paths are built per role and catalog generation,
    /// so this holds a plan per (role, generation, document, operation).
    plans: RwLock<HashMap<Arc<str>, Vec<OperationPlan>>>,
}

/// An operation's name and its plan (`None`: the general path serves it).
type OperationPlan = (Option<String>, Option<Arc<DocPlan>>);

/// The most documents whose plans are kept; past it the memory starts again.
const MAX_PLANNED_DOCUMENTS: usize = 1024;
/// Longer documents are planned on every request (the document cache does not keep
/// them either).
const MAX_PLANNED_LEN: usize = 16 * 1024;

/// A document planned once: each root field checked, with its arguments still holding
/// the variables, and each use of a variable with the scalar it must be. A request
/// only binds its variables' values to it.
struct DocPlan {
    fields: Vec<Planned>,
    uses: Vec<(Name, ColumnType)>,
}

enum Fetch {
    ByPk(Value),
    List(SelectRequest),
    InsertOne(Gql),
}

/// One root field of a planned document.
struct Planned {
    key: Name,
    /// Where the field is in the document, for its errors.
    pos: Pos,
    meta: Arc<TableMeta>,
    kind: RootField,
    /// The arguments, checked, with their variables.
    args: Vec<(Name, Ast)>,
    /// The selected fields, in query order.
    fields: Vec<Selected>,
}

/// A field of a row object: its response key, what it reads (a column, `_seq`,
/// `_deleted` or `__typename`) and where it is in the document.
struct Selected {
    key: Name,
    name: Name,
    pos: Pos,
}

/// Why a root field has no value.
enum Failure {
    /// The resolver's error (an engine error, the row limit).
    Resolver(async_graphql::Error),
    /// A null in a non-null field: the row at this list index (none for a single
    /// row), the selected field.
    NullField(Option<usize>, usize),
}

/// The message async-graphql gives a non-null field that has no value.
const NON_NULL_MESSAGE: &str = "internal: non-null types require a return value";

impl FastPaths {
    /// The paths of the tables a role sees, each with whether the role may write it.
    pub fn new(tables: impl IntoIterator<Item = (Arc<TableMeta>, bool)>, limits: GraphqlLimits) -> Self {
        let mut roots = HashMap::new();
        for (m, writable) in tables {
            roots.insert(m.names.by_pk(), (RootField::ByPk, m.clone()));
            if writable {
                roots.insert(m.names.insert_one(), (RootField::InsertOne, m.clone()));
            }
            roots.insert(m.names.base.clone(), (RootField::List, m));
        }
        Self {
            roots,
            limits,
            plans: RwLock::default(),
        }
    }

    /// Answers the document if it has the shape this path serves, with the response
    /// body (`{"data":...}`, and `"errors"` when a field failed) written as the general
    /// executor's would be; `None` sends it to the general executor.
    pub async fn run(
        &self,
        engine: &Engine,
        ctx: &ExecContext,
        doc: &Document,
        operation_name: Option<&str>,
        variables: &Map<String, Json>,
    ) -> Option<Vec<u8>> {
        let plan = self.plan_of(doc, operation_name)?;
        let fetches = self.bind(&plan, variables, engine.filter_limits())?;
        let mut out = Vec::with_capacity(512);
        // the failed fields' errors, in field order, and whether a null takes `data` with it
        let mut errors: Vec<ServerError> = Vec::new();
        let mut nulls_data = false;
        out.extend_from_slice(b"{\"data\":{");
        for (i, (p, fetch)) in plan.fields.iter().zip(&fetches).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, &p.key);
            let start = out.len();
            let Err(failure) = self.answer(engine, ctx, p, fetch, &mut out).await else {
                continue;
            };
            out.truncate(start);
            out.extend_from_slice(b"null");
            let error = p.error(failure);
            if error.extensions.as_ref().and_then(|x| x.get("code")) == Some(&Gql::from(ErrorCode::Forbidden.as_str()))
            {
                engine.accounts().audit_forbidden(ctx, &error.message);
            }
            // a list field is non-null, so its error nulls `data`; so does any error of a
            // mutation's field, which the general executor resolves serially with `?`
            nulls_data |= matches!(fetch, Fetch::List(_) | Fetch::InsertOne(_));
            errors.push(error);
        }
        out.extend_from_slice(b"}");
        if !errors.is_empty() {
            if nulls_data {
                out.clear();
                out.extend_from_slice(b"{\"data\":null");
            }
            out.extend_from_slice(b",\"errors\":");
            // ServerErrors of plain strings and numbers always serialize
            let _ = serde_json::to_writer(&mut out, &errors);
        }
        out.push(b'}');
        Some(out)
    }

    /// Makes one root field's engine call and writes its value.
    async fn answer(
        &self,
        engine: &Engine,
        ctx: &ExecContext,
        p: &Planned,
        fetch: &Fetch,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let engine_failure = |e: EngineError| Failure::Resolver(engine_error(e));
        match fetch {
            Fetch::ByPk(pk) => {
                let rows = engine.get_by_pk(ctx, &p.meta.id, pk).await.map_err(engine_failure)?;
                match rows.rows.first() {
                    None => out.extend_from_slice(b"null"),
                    Some((seq, values)) => p
                        .write_object(out, &p.resolve(&rows.table), *seq, values, false)
                        .map_err(|f| Failure::NullField(None, f))?,
                }
            }
            Fetch::List(req) => {
                let rows = engine.select(ctx, &p.meta.id, req).await.map_err(engine_failure)?;
                check_row_count(&self.limits, rows.rows.len()).map_err(Failure::Resolver)?;
                let fields = p.resolve(&rows.table);
                out.push(b'[');
                for (n, (seq, values)) in rows.rows.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    p.write_object(out, &fields, *seq, values, false)
                        .map_err(|f| Failure::NullField(Some(n), f))?;
                }
                out.push(b']');
            }
            Fetch::InsertOne(obj) => match insert_one(engine, ctx, &p.meta, Some(obj), None)
                .await
                .map_err(Failure::Resolver)?
            {
                None => out.extend_from_slice(b"null"),
                Some(row) => p
                    .write_object(out, &p.resolve(&row.table), row.seq, &row.values, row.deleted)
                    .map_err(|f| Failure::NullField(None, f))?,
            },
        }
        Ok(())
    }

    /// The document's plan, made on its first request and kept.
    fn plan_of(&self, doc: &Document, operation_name: Option<&str>) -> Option<Arc<DocPlan>> {
        let found = self.plans.read().get(&*doc.text).and_then(|ops| {
            ops.iter()
                .find(|(name, _)| name.as_deref() == operation_name)
                .map(|(_, plan)| plan.clone())
        });
        if let Some(plan) = found {
            return plan;
        }
        let plan = self.prepare(&doc.doc, operation_name).map(Arc::new);
        if doc.text.len() <= MAX_PLANNED_LEN {
            let mut plans = self.plans.write();
            if plans.len() >= MAX_PLANNED_DOCUMENTS {
                plans.clear();
            }
            plans
                .entry(doc.text.clone())
                .or_default()
                .push((operation_name.map(str::to_owned), plan.clone()));
        }
        plan
    }

    /// Plans a document of the shape this path serves: every check that does not
    /// depend on the variables' values.
    fn prepare(&self, doc: &ExecutableDocument, operation_name: Option<&str>) -> Option<DocPlan> {
        if !doc.fragments.is_empty() {
            return None;
        }
        let op = operation(doc, operation_name)?;
        let op = &op.node;
        let mutation = match op.ty {
            OperationType::Query => false,
            OperationType::Mutation if op.selection_set.node.items.len() == 1 => true,
            _ => return None,
        };
        if !op.directives.is_empty() {
            return None;
        }
        let mut vars = Vars {
            defs: op
                .variable_definitions
                .iter()
                .map(|d| (d.node.name.node.as_str(), &d.node))
                .collect(),
            uses: Vec::new(),
        };
        if vars.defs.len() != op.variable_definitions.len() {
            return None;
        }
        let mut keys: HashSet<&str> = HashSet::new();
        let mut complexity = 0usize;
        let mut fields = Vec::new();
        for sel in &op.selection_set.node.items {
            let Selection::Field(field) = &sel.node else {
                return None;
            };
            let f = &field.node;
            let (kind, meta) = self.roots.get(f.name.node.as_str())?;
            if !f.directives.is_empty() || !keys.insert(f.response_key().node.as_str()) {
                return None;
            }
            match (kind, mutation) {
                (RootField::ByPk, false) => by_pk_argument(f, meta, &mut vars)?,
                (RootField::List, false) => list_arguments(f, meta, &mut vars)?,
                (RootField::InsertOne, true) => insert_argument(f, meta, &mut vars)?,
                _ => return None,
            }
            let selected = plain_fields(f, meta)?;
            complexity += 1 + selected.len();
            fields.push(Planned {
                key: f.response_key().node.clone(),
                pos: field.pos,
                meta: meta.clone(),
                kind: *kind,
                args: f
                    .arguments
                    .iter()
                    .map(|(n, v)| (n.node.clone(), v.node.clone()))
                    .collect(),
                fields: selected,
            });
        }
        // every declared variable used, within the complexity limit
        let used: HashSet<&str> = vars.uses.iter().map(|(n, _)| n.as_str()).collect();
        if fields.is_empty() || used.len() != vars.defs.len() || complexity > self.limits.max_complexity {
            return None;
        }
        Some(DocPlan {
            fields,
            uses: vars.uses,
        })
    }

    /// A request's engine calls: the plan with the variables' values, each checked
    /// against the scalar it stands for; `None` sends the request to the general path
    /// (before any engine call).
    fn bind(&self, plan: &DocPlan, variables: &Map<String, Json>, filter_limits: FilterLimits) -> Option<Vec<Fetch>> {
        let mut values: HashMap<&str, Gql> = HashMap::with_capacity(plan.uses.len());
        for (name, ty) in &plan.uses {
            let value = Gql::from_json(variables.get(name.as_str())?.clone()).ok()?;
            if value == Gql::Null || !accepts(*ty, &value) {
                return None;
            }
            values.insert(name.as_str(), value);
        }
        let bound = |ast: &Ast| {
            ast.clone()
                .into_const_with(|n| values.get(n.as_str()).cloned().ok_or(()))
                .ok()
        };
        plan.fields
            .iter()
            .map(|p| {
                Some(match p.kind {
                    RootField::ByPk => Fetch::ByPk(from_gql(p.meta.pk_column().ty, &bound(&p.args.first()?.1)?).ok()?),
                    RootField::InsertOne => Fetch::InsertOne(bound(&p.args.first()?.1)?),
                    RootField::List => {
                        let args = p
                            .args
                            .iter()
                            .map(|(n, a)| Some((n.as_str(), bound(a)?)))
                            .collect::<Option<HashMap<&str, Gql>>>()?;
                        Fetch::List(
                            list_request_of(&|a| args.get(a.name()), filter_limits, &self.limits, &p.meta).ok()?,
                        )
                    }
                    _ => return None,
                })
            })
            .collect()
    }
}

impl Planned {
    /// The selected fields against the schema the rows were read under (`None` for
    /// `__typename`).
    fn resolve(&self, table: &TableDef) -> Vec<Option<RowField>> {
        self.fields
            .iter()
            .map(|f| (f.name.as_str() != TYPENAME).then(|| RowField::resolve(table, f.name.as_str())))
            .collect()
    }

    /// Writes one row object, keys in query order; a null in a non-null column (the
    /// general executor's error) stops it with that field's index.
    fn write_object(
        &self,
        out: &mut Vec<u8>,
        fields: &[Option<RowField>],
        seq: Seq,
        values: &[Value],
        deleted: bool,
    ) -> Result<(), usize> {
        out.push(b'{');
        for (i, (selected, field)) in self.fields.iter().zip(fields).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, &selected.key);
            let start = out.len();
            match field {
                None => {
                    // a string into a Vec cannot fail
                    let _ = serde_json::to_writer(&mut *out, &self.meta.names.base);
                }
                Some(f) => f.write_json(out, seq, values, deleted),
            }
            if out[start..] == *b"null" && !self.meta.column(selected.name.as_str()).is_some_and(|c| c.nullable) {
                return Err(i);
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// A failure of this field as the general executor reports it: the message and
    /// extensions, where in the document, and the path to the field that has no value.
    fn error(&self, failure: Failure) -> ServerError {
        let root = PathSegment::Field(self.key.to_string());
        match failure {
            Failure::Resolver(e) => {
                let mut error = e.into_server_error(self.pos);
                error.path = vec![root];
                error
            }
            Failure::NullField(index, field) => {
                let selected = &self.fields[field];
                let mut error = ServerError::new(NON_NULL_MESSAGE, Some(selected.pos));
                error.path = std::iter::once(root)
                    .chain(index.map(PathSegment::Index))
                    .chain([PathSegment::Field(selected.key.to_string())])
                    .collect();
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", ErrorCode::Internal.as_str());
                error
            }
        }
    }
}

/// A response key and its colon. Keys are GraphQL names, which JSON never escapes.
fn write_key(out: &mut Vec<u8>, key: &Name) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use kalamdb_engine::ids::{ColumnName, NamespaceId, TableId, TableName};
    use kalamdb_engine::read::filter::FilterLimits;
    use kalamdb_engine::types::ColumnType;
    use serde_json::json;

    use super::*;
    use crate::meta::ColumnMeta;
    use crate::names::TableNames;
    use crate::values::scalar_name;

    fn paths() -> FastPaths {
        let id = TableId {
            namespace: NamespaceId::parse("shop").unwrap(),
            table: TableName::parse("items").unwrap(),
        };
        let col = |name: &str, ty, nullable| ColumnMeta {
            name: ColumnName::parse(name).unwrap(),
            ty,
            nullable,
        };
        FastPaths::new(
            [(
                Arc::new(TableMeta {
                    names: TableNames::new(&id),
                    id,
                    columns: vec![
                        col("id", ColumnType::Int, false),
                        col("name", ColumnType::Text, false),
                        col("qty", ColumnType::Int, true),
                    ],
                    pk: 0,
                }),
                true,
            )],
            GraphqlLimits::default(),
        )
    }

    fn served(query: &str, op: Option<&str>, vars: Json) -> bool {
        let doc = parse_query(query).expect("parses");
        let Json::Object(vars) = vars else { panic!() };
        let p = paths();
        p.prepare(&doc, op)
            .and_then(|plan| p.bind(&plan, &vars, limits()))
            .is_some()
    }

    fn limits() -> FilterLimits {
        FilterLimits {
            max_depth: 8,
            max_nodes: 64,
        }
    }

    /// A row without a value for a non-null column (one dropped after the document
    /// was planned: the field resolves to nothing) stops the object at that field, and
    /// the error is the general executor's: its message, the field's location, the
    /// path through the list index, and the code.
    #[test]
    fn a_null_in_a_non_null_field_is_reported_with_its_path() {
        let doc = parse_query("{ shop_items(limit: 2) { id\n label: name } }").expect("parses");
        let plan = paths().prepare(&doc, None).expect("served");
        let p = &plan.fields[0];
        let fields = [Some(RowField::Column(0)), Some(RowField::Missing)];
        let mut out = Vec::new();
        let failed = p.write_object(&mut out, &fields, Seq(1), &[Value::Int(1)], false);
        assert_eq!(failed, Err(1));
        let error = serde_json::to_value(p.error(Failure::NullField(Some(3), 1))).unwrap();
        assert_eq!(
            error,
            json!({
                "message": NON_NULL_MESSAGE,
                "locations": [{"line": 2, "column": 2}],
                "path": ["shop_items", 3, "label"],
                "extensions": {"code": "INTERNAL_ERROR"},
            })
        );
    }

    /// Errors of a planned document are answered here, so its engine calls are made
    /// once: a refused insert, a result over the row limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_errors_are_answered_here() {
        use kalamdb_auth::identity::Role;
        use kalamdb_engine::engine::EngineConfig;

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EngineConfig::new(dir.path());
        cfg.bcrypt_cost = 4;
        let engine = Engine::open(cfg).await.unwrap();
        let root = ExecContext::system();
        for sql in [
            "CREATE NAMESPACE shop",
            "CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT NOT NULL, qty INT) \
             WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')",
            "INSERT INTO shop.items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        ] {
            engine.execute_sql(&root, sql, &[]).await.unwrap();
        }
        let limits = GraphqlLimits {
            max_rows: 2,
            ..GraphqlLimits::default()
        };
        let (_, fast) = crate::schema::build_role_schema(&engine, Role::System, &limits).unwrap();
        let answer = |query: &'static str| {
            let doc = Document {
                text: query.into(),
                doc: Arc::new(parse_query(query).expect("parses")),
            };
            let (engine, fast, root) = (&engine, &fast, &root);
            async move {
                let body = fast
                    .run(engine, root, &doc, None, &Map::new())
                    .await
                    .expect("answered here");
                serde_json::from_slice::<Json>(&body).unwrap()
            }
        };
        let dup = answer("mutation { insert_shop_items_one(object: {id: 1, name: \"x\"}) { id } }").await;
        assert_eq!(dup["data"], Json::Null, "{dup}");
        assert_eq!(dup["errors"][0]["extensions"]["code"], "DUPLICATE_KEY", "{dup}");
        assert_eq!(dup["errors"][0]["path"], json!(["insert_shop_items_one"]), "{dup}");
        let many = answer("{ one: shop_items_by_pk(id: 2) { name } shop_items { id } }").await;
        assert_eq!(many["data"], Json::Null, "{many}");
        assert_eq!(many["errors"][0]["extensions"]["code"], "TOO_MANY_ROWS", "{many}");
        assert_eq!(
            many["errors"][0]["locations"],
            json!([{"line": 1, "column": 41}]),
            "{many}"
        );
        // several failures are all answered here, in field order
        let two = answer("{ a: shop_items { id } b: shop_items_by_pk(id: 1) { qty } c: shop_items { name } }").await;
        assert_eq!(two["data"], Json::Null, "{two}");
        let paths: Vec<&Json> = two["errors"].as_array().unwrap().iter().map(|e| &e["path"]).collect();
        assert_eq!(paths, [&json!(["a"]), &json!(["c"])], "{two}");
        // a document is planned once and bound per request
        let by_id = Document {
            text: "query($id: Int!) { shop_items_by_pk(id: $id) { name } }".into(),
            doc: Arc::new(parse_query("query($id: Int!) { shop_items_by_pk(id: $id) { name } }").unwrap()),
        };
        let name_of = |id: Json| {
            let (engine, fast, root, by_id) = (&engine, &fast, &root, &by_id);
            async move {
                let Json::Object(vars) = json!({ "id": id }) else {
                    unreachable!()
                };
                let body = fast.run(engine, root, by_id, None, &vars).await?;
                let v: Json = serde_json::from_slice(&body).unwrap();
                Some(v["data"]["shop_items_by_pk"]["name"].clone())
            }
        };
        assert_eq!(name_of(json!(2)).await, Some(json!("b")));
        assert_eq!(name_of(json!(3)).await, Some(json!("c")));
        assert_eq!(fast.plans.read().get(&*by_id.text).map(Vec::len), Some(1));
        // a value the scalar does not take goes to the general path, which reports it
        assert_eq!(name_of(json!("two")).await, None);
        // nothing was written twice: the first row is as it was
        let id = TableId {
            namespace: NamespaceId::parse("shop").unwrap(),
            table: TableName::parse("items").unwrap(),
        };
        let rows = engine.get_by_pk(&root, &id, &Value::Int(1)).await.unwrap();
        assert_eq!(rows.rows[0].1[1], Value::Text("a".into()));
    }

    #[test]
    fn by_pk_documents_of_plain_columns_are_served() {
        let q = "query($id: Int!) { shop_items_by_pk(id: $id) { id name qty } }";
        assert!(served(q, None, json!({"id": 3})));
        assert!(served(
            "{ a: shop_items_by_pk(id: 1) { __typename n: name _seq _deleted } b: shop_items_by_pk(id: 2) { id } }",
            None,
            json!({})
        ));
        assert!(served(
            "query One($id: Int!) { shop_items_by_pk(id: $id) { name } }",
            Some("One"),
            json!({"id": 1})
        ));
        assert!(served(
            "query A { shop_items_by_pk(id: 1) { name } } query B { shop_items_by_pk(id: 2) { name } }",
            Some("B"),
            json!({})
        ));
    }

    #[test]
    fn list_documents_with_checked_arguments_are_served() {
        assert!(served("{ shop_items { id name qty } }", None, json!({})));
        assert!(served(
            "query($q: Int!, $n: String!, $l: Int!) { shop_items(where: {_or: [{qty: {_gte: $q}}, \
             {_not: {name: {_ilike: $n}}}], id: {_in: [1, 2, $q]}, _seq: {_gt: \"0\"}}, \
             order_by: [{qty: desc_nulls_last}, {name: asc}], limit: $l, offset: 2) { id _seq } \
             one: shop_items_by_pk(id: $q) { name } }",
            None,
            json!({"q": 3, "n": "a%", "l": 20})
        ));
        assert!(served(
            "mutation($n: String!) { insert_shop_items_one(object: {id: 4, name: $n}) { id name qty _seq } }",
            None,
            json!({"n": "pear"})
        ));
        // one order_by object stands for a list of one, as GraphQL's input coercion says
        assert!(served(
            "{ shop_items(order_by: {qty: asc}, limit: 0) { id } }",
            None,
            json!({})
        ));
    }

    /// Every operator the spec gives a TEXT or INT column is served here, as a literal
    /// and as a variable: none falls to the general path unnoticed.
    #[test]
    fn every_operator_of_the_spec_is_served() {
        use crate::spec::{FilterOp, Operand, sample_operand};
        for (col, ty) in [("name", ColumnType::Text), ("qty", ColumnType::Int)] {
            for op in FilterOp::of_type(ty) {
                let sample = sample_operand(op, ty);
                let literal = format!(
                    "{{ shop_items(where: {{{col}: {{{}: {sample}}}}}) {{ id }} }}",
                    op.name()
                );
                assert!(served(&literal, None, json!({})), "{literal}");
                let (var_ty, value) = match op.operand() {
                    Operand::List => continue,
                    operand => (scalar_name(operand.value_type(ty)), sample.into_json().unwrap()),
                };
                let query = format!(
                    "query($v: {var_ty}!) {{ shop_items(where: {{{col}: {{{}: $v}}}}) {{ id }} }}",
                    op.name()
                );
                assert!(served(&query, None, json!({ "v": value })), "{query}");
            }
        }
    }

    #[test]
    fn anything_else_goes_to_the_general_executor() {
        let q = "query($id: Int!) { shop_items_by_pk(id: $id) { id } }";
        for (query, op, vars) in [
            (q, None, json!({"id": "3"})),               // a string for Int
            (q, None, json!({"id": 3_000_000_000_i64})), // out of Int's range
            (q, None, json!({})),                        // missing
            (q, None, json!({"id": null})),
            (q, Some("Other"), json!({"id": 3})),
            (
                "query($id: BigInt!) { shop_items_by_pk(id: $id) { id } }",
                None,
                json!({"id": 3}),
            ),
            (
                "query($id: Int) { shop_items_by_pk(id: $id) { id } }",
                None,
                json!({"id": 3}),
            ),
            (
                "query($id: Int!, $u: Int) { shop_items_by_pk(id: $id) { id } }",
                None,
                json!({"id": 3}),
            ),
            ("{ shop_items_by_pk(id: 1) { nope } }", None, json!({})),
            ("{ shop_items_by_pk(id: 1) { id @include(if: true) } }", None, json!({})),
            (
                "{ shop_items_by_pk(id: 1) { ...F } } fragment F on shop_items { id }",
                None,
                json!({}),
            ),
            (
                "{ shop_items_by_pk(id: 1) { id } shop_items_aggregate { aggregate { count } } }",
                None,
                json!({}),
            ),
            (
                "{ a: shop_items_by_pk(id: 1) { id } a: shop_items_by_pk(id: 2) { id } }",
                None,
                json!({}),
            ),
            ("{ shop_items_by_pk(id: 1) { id id: name } }", None, json!({})),
            ("{ shop_items_by_pk(id: 1.5) { id } }", None, json!({})),
            ("mutation { delete_shop_items_by_pk(id: 1) { id } }", None, json!({})),
            // inserts: two root fields, on_conflict, a non-column, a wrong type, a null,
            // an object variable, in a query
            (
                "mutation { a: insert_shop_items_one(object: {id: 1}) { id } b: insert_shop_items_one(object: {id: 2}) { id } }",
                None,
                json!({}),
            ),
            (
                "mutation { insert_shop_items_one(object: {id: 1}, on_conflict: {constraint: shop_items_pkey}) { id } }",
                None,
                json!({}),
            ),
            (
                "mutation { insert_shop_items_one(object: {id: 1, _seq: \"1\"}) { id } }",
                None,
                json!({}),
            ),
            (
                "mutation { insert_shop_items_one(object: {id: \"1\"}) { id } }",
                None,
                json!({}),
            ),
            (
                "mutation { insert_shop_items_one(object: {id: 1, qty: null}) { id } }",
                None,
                json!({}),
            ),
            (
                "mutation($o: shop_items_insert_input!) { insert_shop_items_one(object: $o) { id } }",
                None,
                json!({"o": {"id": 1}}),
            ),
            ("{ insert_shop_items_one(object: {id: 1}) { id } }", None, json!({})),
            ("mutation { shop_items_by_pk(id: 1) { id } }", None, json!({})),
            // lists
            ("{ shop_items(where: {qty: {_eq: null}}) { id } }", None, json!({})),
            ("{ shop_items(where: {qty: {_in: 3}}) { id } }", None, json!({})),
            ("{ shop_items(where: {_and: {qty: {_eq: 1}}}) { id } }", None, json!({})),
            ("{ shop_items(where: {qty: {_like: \"a%\"}}) { id } }", None, json!({})),
            ("{ shop_items(where: {qty: {_regex: \"a\"}}) { id } }", None, json!({})),
            ("{ shop_items(where: {name: {_eq: 1}}) { id } }", None, json!({})),
            ("{ shop_items(where: {nope: {_eq: 1}}) { id } }", None, json!({})),
            ("{ shop_items(where: {qty: {_between: 1}}) { id } }", None, json!({})),
            ("{ shop_items(order_by: {qty: sideways}) { id } }", None, json!({})),
            ("{ shop_items(order_by: {qty: \"asc\"}) { id } }", None, json!({})),
            ("{ shop_items(limit: -1) { id } }", None, json!({})),
            ("{ shop_items(limit: 10001) { id } }", None, json!({})),
            ("{ shop_items(first: 1) { id } }", None, json!({})),
            (
                "query($w: shop_items_bool_exp) { shop_items(where: $w) { id } }",
                None,
                json!({"w": {"qty": {"_eq": 1}}}),
            ),
            ("query($n: Int) { shop_items(limit: $n) { id } }", None, json!({"n": 1})),
            (
                "query($q: BigInt!) { shop_items(where: {qty: {_eq: $q}}) { id } }",
                None,
                json!({"q": "1"}),
            ),
            (
                "{ shop_items(where: {_not: {_not: {_not: {_not: {_not: {_not: {_not: {_not: {_not: {id: {_eq: 1}}}}}}}}}}}) { id } }",
                None,
                json!({}),
            ),
        ] {
            assert!(!served(query, op, vars.clone()), "{query} {vars} was served");
        }
    }
}
