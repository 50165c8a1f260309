//! A direct path for the commonest operations: queries whose root fields are all
//! `_by_pk` lookups or list fields (`where`, `order_by`, `limit`, `offset`), and
//! mutations that are one `insert_<t>_one` without `on_conflict`, selecting plain
//! columns. Such a document is answered without async-graphql's validation and
//! field-by-field execution: its arguments are checked here as the validator would
//! check them and turned into the same engine requests the resolvers make (one
//! `Engine::get_by_pk`, `Engine::select` or `Engine::insert` per field), and the
//! response body is written straight from the rows, byte for byte as the general
//! executor's (the same output conversions, keys in query order).
//!
//! An insert that the engine refuses wrote nothing (a write is all or nothing), so it
//! too can go on to the general path, which makes the same request and reports the
//! error. That is why a mutation takes this path only as a document's one root field.
//!
//! The path answers successful requests, and one failure: an insert it made whose row
//! it cannot render (a non-null column dropped meanwhile) is answered here with the
//! field's error, since the general path would insert the row again. Anything else
//! (another shape, a fragment or directive, a variable missing, nullable or of the
//! wrong type, a null literal, a single value where a list is due, an enum or JSON
//! value given by variable, a null in a non-null column of a read, the rows-per-result
//! limit, any engine error) returns `None`, and the request takes the general path,
//! which produces the proper errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{BaseType, ExecutableDocument, Field, OperationType, Selection, VariableDefinition};
use async_graphql::{Name, Value as Gql};
use async_graphql_value::Value as Ast;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::ErrorCode;
use kalamdb_engine::filter::FilterLimits;
use kalamdb_engine::schema::TableDef;
use kalamdb_engine::select::SelectRequest;
use kalamdb_engine::types::{ColumnType, Value};
use kalamdb_storage::seq::Seq;
use serde_json::{Map, Value as Json};

use crate::documents::operation;
use crate::meta::{DELETED, SEQ, TableMeta};
use crate::objects::ORDER_DIRECTIONS;
use crate::resolvers::{RowField, insert_one, list_request_of};
use crate::schema::GraphqlLimits;
use crate::values::{accepts, from_gql, scalar_name};

const TYPENAME: &str = "__typename";
/// `where` literals nested deeper than this go to the general path.
const MAX_LITERAL_DEPTH: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum RootKind {
    ByPk,
    List,
    InsertOne,
}

/// The `_by_pk`, list and (for tables the role may write) `insert_<t>_one` root fields
/// of one role's schema.
#[derive(Default)]
pub struct FastPaths {
    roots: HashMap<String, (RootKind, Arc<TableMeta>)>,
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
    meta: Arc<TableMeta>,
    fetch: Fetch,
    /// Response keys and the field each reads (a column, `_seq`, `_deleted` or
    /// `__typename`), in query order.
    fields: Vec<(Name, Name)>,
}

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
            for (op, value) in ops {
                let want = match op.as_str() {
                    "_eq" | "_neq" => Want::Scalar(ty),
                    "_gt" | "_gte" | "_lt" | "_lte" if ty != ColumnType::Json => Want::Scalar(ty),
                    "_in" | "_nin" => Want::ScalarList(ty),
                    "_is_null" => Want::Scalar(ColumnType::Boolean),
                    "_like" | "_ilike" | "_nlike" | "_nilike" if ty == ColumnType::Text => Want::Scalar(ty),
                    _ => return None,
                };
                out.insert(op.clone(), literal(value, want, meta, vars, depth + 1)?);
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
            roots.insert(m.names.by_pk(), (RootKind::ByPk, m.clone()));
            if writable {
                roots.insert(m.names.insert_one(), (RootKind::InsertOne, m.clone()));
            }
            roots.insert(m.names.base.clone(), (RootKind::List, m));
        }
        Self { roots, limits }
    }

    /// Answers the document if it has the shape this path serves, with the response
    /// body (`{"data":...}`) written as the general executor's would be; `None` sends
    /// it to the general executor.
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
        // an inserted row that cannot be rendered (a column dropped meanwhile)
        let mut failed = None;
        out.extend_from_slice(b"{\"data\":{");
        for (i, p) in planned.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, &p.key);
            match &p.fetch {
                Fetch::ByPk(pk) => {
                    let rows = engine.get_by_pk(ctx, &p.meta.id, pk).await.ok()?;
                    match rows.rows.first() {
                        None => out.extend_from_slice(b"null"),
                        Some((seq, values)) => p
                            .write_object(&mut out, &p.resolve(&rows.table), *seq, values, false)
                            .ok()?,
                    }
                }
                Fetch::List(req) => {
                    let rows = engine.select(ctx, &p.meta.id, req).await.ok()?;
                    // over the limit: the general path reports it
                    if rows.rows.len() > self.limits.max_rows {
                        return None;
                    }
                    let fields = p.resolve(&rows.table);
                    out.push(b'[');
                    for (n, (seq, values)) in rows.rows.iter().enumerate() {
                        if n > 0 {
                            out.push(b',');
                        }
                        p.write_object(&mut out, &fields, *seq, values, false).ok()?;
                    }
                    out.push(b']');
                }
                Fetch::InsertOne(obj) => match insert_one(engine, ctx, &p.meta, Some(obj), None).await.ok()? {
                    None => out.extend_from_slice(b"null"),
                    Some(row) => {
                        // the row is written: whatever happens now, this request must
                        // not go on to the general path, which would insert it again
                        let start = out.len();
                        let written =
                            p.write_object(&mut out, &p.resolve(&row.table), row.seq, &row.values, row.deleted);
                        if let Err(field) = written {
                            out.truncate(start);
                            out.extend_from_slice(b"null");
                            failed = Some(null_field_error(&p.key, &field));
                        }
                    }
                },
            }
        }
        out.extend_from_slice(b"}");
        if let Some(error) = failed {
            out.extend_from_slice(b",\"errors\":[");
            out.extend_from_slice(error.to_string().as_bytes());
            out.push(b']');
        }
        out.push(b'}');
        Some(out)
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
            let Selection::Field(f) = &sel.node else {
                return None;
            };
            let f = &f.node;
            let (kind, meta) = self.roots.get(f.name.node.as_str())?;
            if !f.directives.is_empty() || !keys.insert(f.response_key().node.as_str()) {
                return None;
            }
            let fetch = match (kind, mutation) {
                (RootKind::ByPk, false) => Fetch::ByPk(by_pk_argument(f, meta, &mut vars)?),
                (RootKind::List, false) => Fetch::List(self.list_arguments(f, meta, &mut vars, filter_limits)?),
                (RootKind::InsertOne, true) => Fetch::InsertOne(insert_argument(f, meta, &mut vars)?),
                _ => return None,
            };
            let fields = plain_fields(f, meta)?;
            complexity += 1 + fields.len();
            out.push(Planned {
                key: f.response_key().node.clone(),
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
            let want = match name.node.as_str() {
                "where" => Want::BoolExp,
                "order_by" => Want::OrderBy,
                "limit" | "offset" => Want::Scalar(ColumnType::Int),
                _ => return None,
            };
            let checked = literal(&value.node, want, meta, vars, 0)?;
            if args.insert(name.node.as_str(), checked).is_some() {
                return None;
            }
        }
        list_request_of(&|name| args.get(name), filter_limits, &self.limits, meta).ok()
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
    if arg_name.node.as_str() != "object" {
        return None;
    }
    literal(&arg.node, Want::InsertObject, meta, vars, 0)
}

/// The selection of a row object, when it is plain fields only.
fn plain_fields(f: &Field, meta: &TableMeta) -> Option<Vec<(Name, Name)>> {
    let mut fields = Vec::new();
    let mut keys: HashSet<&str> = HashSet::new();
    for s in &f.selection_set.node.items {
        let Selection::Field(c) = &s.node else {
            return None;
        };
        let c = &c.node;
        let name = c.name.node.as_str();
        let known = name == TYPENAME || name == SEQ || name == DELETED || meta.column(name).is_some();
        if !known
            || !c.arguments.is_empty()
            || !c.directives.is_empty()
            || !c.selection_set.node.items.is_empty()
            || !keys.insert(c.response_key().node.as_str())
        {
            return None;
        }
        fields.push((c.response_key().node.clone(), c.name.node.clone()));
    }
    (!fields.is_empty()).then_some(fields)
}

impl Planned {
    /// The selected fields against the schema the rows were read under (`None` for
    /// `__typename`).
    fn resolve(&self, table: &TableDef) -> Vec<Option<RowField>> {
        self.fields
            .iter()
            .map(|(_, name)| (name.as_str() != TYPENAME).then(|| RowField::resolve(table, name.as_str())))
            .collect()
    }

    /// Writes one row object, keys in query order; a null in a non-null column (the
    /// general executor's error) stops it with that field's response key.
    fn write_object(
        &self,
        out: &mut Vec<u8>,
        fields: &[Option<RowField>],
        seq: Seq,
        values: &[Value],
        deleted: bool,
    ) -> Result<(), Name> {
        out.push(b'{');
        for (i, ((key, name), field)) in self.fields.iter().zip(fields).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, key);
            let start = out.len();
            match field {
                None => {
                    // a string into a Vec cannot fail
                    let _ = serde_json::to_writer(&mut *out, &self.meta.names.base);
                }
                Some(f) => f.write_json(out, seq, values, deleted),
            }
            if out[start..] == *b"null" && !self.meta.column(name.as_str()).is_some_and(|c| c.nullable) {
                return Err(key.clone());
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// The error of a non-null field that has no value, at `root.field`, as the general
/// executor reports it: the nullable root field becomes null.
fn null_field_error(root: &Name, field: &Name) -> Json {
    serde_json::json!({
        "message": format!("the row has no value for the non-null field '{field}'"),
        "path": [root.as_str(), field.as_str()],
        "extensions": { "code": ErrorCode::Internal.as_str() },
    })
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
    use kalamdb_engine::filter::FilterLimits;
    use kalamdb_engine::ids::{ColumnName, NamespaceId, TableId, TableName};
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
    /// the error names it.
    #[test]
    fn a_null_in_a_non_null_field_is_reported_with_its_path() {
        let doc = parse_query("mutation { insert_shop_items_one(object: {id: 1, name: \"x\"}) { id label: name } }")
            .expect("parses");
        let planned = paths().plan(&doc, None, &Map::new(), limits()).expect("served");
        let p = &planned[0];
        let fields = [Some(RowField::Column(0)), Some(RowField::Missing)];
        let mut out = Vec::new();
        let failed = p.write_object(&mut out, &fields, Seq(1), &[Value::Int(1)], false);
        assert_eq!(failed.as_ref().map_err(Name::as_str), Err("label"));
        let error = null_field_error(&p.key, &failed.unwrap_err());
        assert_eq!(error["path"], json!(["insert_shop_items_one", "label"]));
        assert_eq!(error["extensions"]["code"], json!("INTERNAL_ERROR"));
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
