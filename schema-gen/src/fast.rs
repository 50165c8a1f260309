//! A direct path for the commonest operations: queries whose root fields are all
//! `_by_pk` lookups, list fields (`where`, `order_by`, `limit`, `offset`) or bare
//! counts (`<t>_aggregate(where) { aggregate { count } }`), and mutations that are one
//! `insert_<t>_one` without `on_conflict`, selecting plain columns. Such a document is answered without async-graphql's validation and
//! field-by-field execution: its arguments are checked here as the validator would
//! check them (against the same [`crate::spec`]) and turned into the same engine
//! requests the resolvers make (one `Engine::get_by_pk`, `Engine::select`,
//! `Engine::aggregate` or `Engine::insert` per field), and the response body is written straight from the
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
use kalamdb_engine::read::filter::Filter;
use kalamdb_engine::read::filter::FilterLimits;
use kalamdb_engine::read::select::{AggFn, Aggregate, AggregateRequest, SelectRequest};
use kalamdb_engine::types::{ColumnType, Pk, Value};
use kalamdb_storage::seq::Seq;
use parking_lot::RwLock;
use serde_json::{Map, Value as Json};

mod check;

use self::check::{
    Vars, aggregate_arguments, by_pk_argument, count_selection, insert_argument, list_arguments, plain_fields,
};
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
    ByPk(Pk),
    List(SelectRequest),
    InsertOne(Gql),
    /// `<t>_aggregate(where) { aggregate { count } }`.
    Count(Option<Filter>),
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
    /// The selected fields, in query order (of an aggregate: its `aggregate` field).
    fields: Vec<Selected>,
    /// Of an aggregate: the `count`s its `aggregate` field selects.
    counts: Vec<Selected>,
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
    /// The error of an aggregate's `aggregate` field (its path goes through it).
    Aggregate(async_graphql::Error),
}

/// The message async-graphql gives a non-null field that has no value.
const NON_NULL_MESSAGE: &str = "internal: non-null types require a return value";

impl FastPaths {
    /// The paths of the tables a role sees, each with whether the role may write it.
    pub fn new(tables: impl IntoIterator<Item = (Arc<TableMeta>, bool)>, limits: GraphqlLimits) -> Self {
        let mut roots = HashMap::new();
        for (m, writable) in tables {
            roots.insert(m.names.by_pk(), (RootField::ByPk, m.clone()));
            roots.insert(m.names.aggregate(), (RootField::Aggregate, m.clone()));
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
            let answered = self.answer(engine, ctx, p, fetch, &mut out).await.and_then(|()| {
                if out.len() > self.limits.max_response_bytes {
                    return Err(Failure::Resolver(engine_error(EngineError::ResultTooLarge(format!(
                        "the response would be larger than {} bytes; ask for fewer rows or fields",
                        self.limits.max_response_bytes
                    )))));
                }
                Ok(())
            });
            let Err(failure) = answered else {
                continue;
            };
            out.truncate(start);
            out.extend_from_slice(b"null");
            // a list or aggregate field is non-null, so its error nulls `data` (the
            // general executor nulls it for an error of the aggregate's `aggregate`
            // field too); so does any error of a mutation's field, which the general
            // executor resolves serially with `?`
            nulls_data |= !matches!(fetch, Fetch::ByPk(_));
            let error = p.error(failure);
            if error.extensions.as_ref().and_then(|x| x.get("code")) == Some(&Gql::from(ErrorCode::Forbidden.as_str()))
            {
                engine.accounts().audit_forbidden(ctx, &error.message);
            }
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
            Fetch::Count(filter) => {
                let req = AggregateRequest {
                    filter: filter.clone(),
                    group_by: vec![],
                    aggregates: vec![Aggregate {
                        func: AggFn::Count,
                        column: None,
                    }],
                };
                let groups = engine
                    .aggregate(ctx, &p.meta.id, &req)
                    .await
                    .map_err(|e| Failure::Aggregate(engine_error(e)))?;
                let count = match groups.first().and_then(|g| g.values.first()) {
                    Some(Value::BigInt(n)) => *n,
                    _ => {
                        return Err(Failure::Aggregate(engine_error(EngineError::Internal(
                            "a count without its value".into(),
                        ))));
                    }
                };
                out.push(b'{');
                write_key(out, &p.fields[0].key);
                out.push(b'{');
                for (i, c) in p.counts.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_key(out, &c.key);
                    out.extend_from_slice(count.to_string().as_bytes());
                }
                out.extend_from_slice(b"}}");
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
            let ops = plans.entry(doc.text.clone()).or_default();
            // a concurrent first request may have planned it meanwhile
            if !ops.iter().any(|(name, _)| name.as_deref() == operation_name) {
                ops.push((operation_name.map(str::to_owned), plan.clone()));
            }
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
                (RootField::Aggregate, false) => aggregate_arguments(f, meta, &mut vars)?,
                (RootField::InsertOne, true) => insert_argument(f, meta, &mut vars)?,
                _ => return None,
            }
            let (selected, counts) = match kind {
                RootField::Aggregate => {
                    let (outer, counts) = count_selection(f)?;
                    (vec![outer], counts)
                }
                _ => (plain_fields(f, meta)?, vec![]),
            };
            complexity += 1 + selected.len() + counts.len();
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
                counts,
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
                    RootField::ByPk => Fetch::ByPk(Pk(p
                        .meta
                        .pk_columns()
                        .map(|c| {
                            let (_, a) = p.args.iter().find(|(n, _)| n.as_str() == c.name.as_str())?;
                            from_gql(c.ty, &bound(a)?).ok()
                        })
                        .collect::<Option<_>>()?)),
                    RootField::InsertOne => Fetch::InsertOne(bound(&p.args.first()?.1)?),
                    RootField::Aggregate => Fetch::Count(match p.args.first() {
                        None => None,
                        Some((_, w)) => Some(crate::inputs::bool_exp(&p.meta, &bound(w)?, filter_limits).ok()?),
                    }),
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
            Failure::Aggregate(e) => {
                let inner = &self.fields[0];
                let mut error = e.into_server_error(inner.pos);
                error.path = vec![root, PathSegment::Field(inner.key.to_string())];
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
mod tests;
