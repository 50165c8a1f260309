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
//! A document of another shape, or one the validator might refuse (a fragment or
//! directive, a variable missing, nullable or of the wrong type, a null literal, a
//! single value where a list is due, an enum or JSON value given by variable), returns
//! `None` before any engine call, and the request takes the general path, which
//! produces the proper errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{BaseType, ExecutableDocument, Field, OperationType, Selection, VariableDefinition};
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
use serde_json::{Map, Value as Json};

use crate::documents::operation;
use crate::errors::engine_error;
use crate::meta::TableMeta;
use crate::objects::ORDER_DIRECTIONS;
use crate::resolvers::mutation::insert_one;
use crate::resolvers::{RowField, check_row_count, list_request_of};
use crate::schema::GraphqlLimits;
use crate::spec::{Arg, FilterOp, Operand, RootField};
use crate::values::{accepts, from_gql, scalar_name};

const TYPENAME: &str = "__typename";
/// `where` literals nested deeper than this go to the general path.
const MAX_LITERAL_DEPTH: usize = 16;

/// The `_by_pk`, list and (for tables the role may write) `insert_<t>_one` root fields
/// of one role's schema.
#[derive(Default)]
pub struct FastPaths {
    roots: HashMap<String, (RootField, Arc<TableMeta>)>,
    limits: GraphqlLimits,
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
    fetch: Fetch,
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

/// What an input position of the schema takes.
#[derive(Clone, Copy)]
enum Want {
    BoolExp,
    Comparison(ColumnType),
    Scalar(ColumnType),
    /// `[T!]`, given as a list literal.
    ScalarList(ColumnType),
    OrderBy,
    /// `<t>_insert_input`: columns, each of its scalar.
    InsertObject,
}

/// The operation's variables, as the validator would check them.
struct Vars<'a> {
    defs: HashMap<&'a str, &'a VariableDefinition>,
    values: &'a Map<String, Json>,
    used: HashSet<&'a str>,
}

impl<'a> Vars<'a> {
    /// A variable in a scalar position: declared exactly as that scalar, non-null, and
    /// given a value the scalar accepts.
    fn scalar(&mut self, name: &Name, ty: ColumnType) -> Option<Gql> {
        let (&key, def) = self.defs.get_key_value(name.as_str())?;
        let declared = !def.var_type.node.nullable
            && matches!(&def.var_type.node.base, BaseType::Named(n) if n.as_str() == scalar_name(ty));
        if !declared || !def.directives.is_empty() || ty == ColumnType::Json {
            return None;
        }
        let value = Gql::from_json(self.values.get(key)?.clone()).ok()?;
        if value == Gql::Null || !accepts(ty, &value) {
            return None;
        }
        self.used.insert(key);
        Some(value)
    }
}

/// Checks an argument's value against what its position takes and returns it with the
/// variables substituted; `None` for anything the validator might refuse or that this
/// path leaves to the general one.
fn literal(v: &Ast, want: Want, meta: &TableMeta, vars: &mut Vars<'_>, depth: usize) -> Option<Gql> {
    if depth > MAX_LITERAL_DEPTH {
        return None;
    }
    match (want, v) {
        (Want::Scalar(ColumnType::Json), _) => None,
        (Want::Scalar(ty), Ast::Variable(name)) => vars.scalar(name, ty),
        (_, Ast::Variable(_) | Ast::Null) => None,
        (Want::Scalar(ty), v) => {
            let c = v.clone().into_const()?;
            accepts(ty, &c).then_some(c)
        }
        (Want::ScalarList(ty), Ast::List(items)) => items
            .iter()
            .map(|i| literal(i, Want::Scalar(ty), meta, vars, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Gql::List),
        (Want::Comparison(ty), Ast::Object(ops)) => {
            let mut out = IndexMap::with_capacity(ops.len());
            for (name, value) in ops {
                let op = FilterOp::from_name(name.as_str()).filter(|op| op.applies_to(ty))?;
                let want = match op.operand() {
                    Operand::List => Want::ScalarList(ty),
                    operand => Want::Scalar(operand.value_type(ty)),
                };
                out.insert(name.clone(), literal(value, want, meta, vars, depth + 1)?);
            }
            Some(Gql::Object(out))
        }
        (Want::BoolExp, Ast::Object(fields)) => {
            let mut out = IndexMap::with_capacity(fields.len());
            for (key, value) in fields {
                let checked = match (key.as_str(), value) {
                    ("_and" | "_or", Ast::List(items)) => Gql::List(
                        items
                            .iter()
                            .map(|i| literal(i, Want::BoolExp, meta, vars, depth + 1))
                            .collect::<Option<Vec<_>>>()?,
                    ),
                    ("_and" | "_or", _) => return None,
                    ("_not", v) => literal(v, Want::BoolExp, meta, vars, depth + 1)?,
                    (col, v) => {
                        let (_, ty) = meta.filterable(col)?;
                        literal(v, Want::Comparison(ty), meta, vars, depth + 1)?
                    }
                };
                out.insert(key.clone(), checked);
            }
            Some(Gql::Object(out))
        }
        (Want::InsertObject, Ast::Object(fields)) => {
            let mut out = IndexMap::with_capacity(fields.len());
            for (col, value) in fields {
                let ty = meta.column(col.as_str())?.ty;
                out.insert(col.clone(), literal(value, Want::Scalar(ty), meta, vars, depth + 1)?);
            }
            Some(Gql::Object(out))
        }
        (Want::OrderBy, Ast::List(items)) => items
            .iter()
            .map(|i| literal(i, Want::OrderBy, meta, vars, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Gql::List),
        (Want::OrderBy, Ast::Object(keys)) => {
            let mut out = IndexMap::with_capacity(keys.len());
            for (col, dir) in keys {
                let (_, ty) = meta.filterable(col.as_str())?;
                let Ast::Enum(d) = dir else {
                    return None;
                };
                if ty == ColumnType::Json || !ORDER_DIRECTIONS.contains(&d.as_str()) {
                    return None;
                }
                out.insert(col.clone(), Gql::Enum(d.clone()));
            }
            Some(Gql::Object(out))
        }
        _ => None,
    }
}

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
        Self { roots, limits }
    }

    /// Answers the document if it has the shape this path serves, with the response
    /// body (`{"data":...}`, and `"errors"` when a field failed) written as the general
    /// executor's would be; `None` sends it to the general executor.
    pub async fn run(
        &self,
        engine: &Engine,
        ctx: &ExecContext,
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Map<String, Json>,
    ) -> Option<Vec<u8>> {
        let planned = self.plan(doc, operation_name, variables, engine.filter_limits())?;
        let mut out = Vec::with_capacity(512);
        // the failed fields' errors, in field order, and whether a null takes `data` with it
        let mut errors: Vec<ServerError> = Vec::new();
        let mut nulls_data = false;
        out.extend_from_slice(b"{\"data\":{");
        for (i, p) in planned.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, &p.key);
            let start = out.len();
            let Err(failure) = self.answer(engine, ctx, p, &mut out).await else {
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
            nulls_data |= matches!(p.fetch, Fetch::List(_) | Fetch::InsertOne(_));
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
    async fn answer(&self, engine: &Engine, ctx: &ExecContext, p: &Planned, out: &mut Vec<u8>) -> Result<(), Failure> {
        let engine_failure = |e: EngineError| Failure::Resolver(engine_error(e));
        match &p.fetch {
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

    fn plan(
        &self,
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Map<String, Json>,
        filter_limits: FilterLimits,
    ) -> Option<Vec<Planned>> {
        if !doc.fragments.is_empty() {
            return None;
        }
        let op = operation(doc, operation_name)?;
        let op = &op.node;
        let mutation = match op.ty {
            OperationType::Query => false,
            // one root field: a refused insert then wrote nothing, and the general path
            // may make it again
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
            values: variables,
            used: HashSet::new(),
        };
        if vars.defs.len() != op.variable_definitions.len() {
            return None;
        }
        let mut keys: HashSet<&str> = HashSet::new();
        let mut complexity = 0usize;
        let mut out = Vec::new();
        for sel in &op.selection_set.node.items {
            let Selection::Field(field) = &sel.node else {
                return None;
            };
            let f = &field.node;
            let (kind, meta) = self.roots.get(f.name.node.as_str())?;
            if !f.directives.is_empty() || !keys.insert(f.response_key().node.as_str()) {
                return None;
            }
            let fetch = match (kind, mutation) {
                (RootField::ByPk, false) => Fetch::ByPk(by_pk_argument(f, meta, &mut vars)?),
                (RootField::List, false) => Fetch::List(self.list_arguments(f, meta, &mut vars, filter_limits)?),
                (RootField::InsertOne, true) => Fetch::InsertOne(insert_argument(f, meta, &mut vars)?),
                _ => return None,
            };
            let fields = plain_fields(f, meta)?;
            complexity += 1 + fields.len();
            out.push(Planned {
                key: f.response_key().node.clone(),
                pos: field.pos,
                meta: meta.clone(),
                fetch,
                fields,
            });
        }
        // every declared variable used, within the complexity limit
        if out.is_empty() || vars.used.len() != vars.defs.len() || complexity > self.limits.max_complexity {
            return None;
        }
        Some(out)
    }

    /// A list field's arguments, checked, as the select the resolver would make.
    fn list_arguments(
        &self,
        f: &Field,
        meta: &TableMeta,
        vars: &mut Vars<'_>,
        filter_limits: FilterLimits,
    ) -> Option<SelectRequest> {
        let mut args: HashMap<&str, Gql> = HashMap::with_capacity(f.arguments.len());
        for (name, value) in &f.arguments {
            let want = match RootField::List.arg(meta, name.node.as_str())? {
                Arg::Where => Want::BoolExp,
                Arg::OrderBy => Want::OrderBy,
                Arg::Limit | Arg::Offset => Want::Scalar(ColumnType::Int),
                _ => return None,
            };
            let checked = literal(&value.node, want, meta, vars, 0)?;
            if args.insert(name.node.as_str(), checked).is_some() {
                return None;
            }
        }
        list_request_of(&|a| args.get(a.name()), filter_limits, &self.limits, meta).ok()
    }
}

/// The key argument of a `_by_pk` field, checked and typed.
fn by_pk_argument(f: &Field, meta: &TableMeta, vars: &mut Vars<'_>) -> Option<Value> {
    let pk_col = meta.pk_column();
    let [(arg_name, arg)] = f.arguments.as_slice() else {
        return None;
    };
    if arg_name.node.as_str() != pk_col.name.as_str() {
        return None;
    }
    let input = literal(&arg.node, Want::Scalar(pk_col.ty), meta, vars, 0)?;
    from_gql(pk_col.ty, &input).ok()
}

/// The `object` argument of `insert_<t>_one` (without `on_conflict`), checked.
fn insert_argument(f: &Field, meta: &TableMeta, vars: &mut Vars<'_>) -> Option<Gql> {
    let [(arg_name, arg)] = f.arguments.as_slice() else {
        return None;
    };
    if RootField::InsertOne.arg(meta, arg_name.node.as_str()) != Some(Arg::Object) {
        return None;
    }
    literal(&arg.node, Want::InsertObject, meta, vars, 0)
}

/// The selection of a row object, when it is plain fields only.
fn plain_fields(f: &Field, meta: &TableMeta) -> Option<Vec<Selected>> {
    let mut fields = Vec::new();
    let mut keys: HashSet<&str> = HashSet::new();
    for s in &f.selection_set.node.items {
        let Selection::Field(field) = &s.node else {
            return None;
        };
        let c = &field.node;
        let name = c.name.node.as_str();
        let known = name == TYPENAME || meta.has_row_field(name);
        if !known
            || !c.arguments.is_empty()
            || !c.directives.is_empty()
            || !c.selection_set.node.items.is_empty()
            || !keys.insert(c.response_key().node.as_str())
        {
            return None;
        }
        fields.push(Selected {
            key: c.response_key().node.clone(),
            name: c.name.node.clone(),
            pos: field.pos,
        });
    }
    (!fields.is_empty()).then_some(fields)
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
        paths().plan(&doc, op, &vars, limits()).is_some()
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
        let planned = paths().plan(&doc, None, &Map::new(), limits()).expect("served");
        let p = &planned[0];
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
            let doc = parse_query(query).expect("parses");
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
