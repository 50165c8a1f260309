//! Resolvers: each root field turns its arguments into one typed engine request
//! (select, aggregate, insert, update, delete) for the caller's [`ExecContext`]; the
//! engine checks permissions and per-user isolation itself. One module per kind of
//! root field; this one holds what they share: the request's environment, arguments,
//! and rows as the fields of row objects read them.

pub mod aggregate;
pub mod mutation;
pub mod query;
pub mod subscription;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::Value as Gql;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, ResolverContext, TypeRef};
use futures::future::BoxFuture;
use kalamdb_engine::catalog::schema::TableDef;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::{EngineError, ErrorCode};
use kalamdb_engine::read::filter::{Filter, FilterLimits};
use kalamdb_engine::read::select::{Rows, SelectRequest};
use kalamdb_engine::types::Value;
use kalamdb_engine::write::commit::AppliedChange;
use kalamdb_engine::write::mutate::Changes;
use kalamdb_storage::seq::Seq;

use crate::errors::{engine_error, gql_error};
use crate::inputs;
use crate::meta::{DELETED, SEQ, TableMeta};
use crate::schema::GraphqlLimits;
use crate::spec::{Arg, RootField};
use crate::values::{self, non_negative, to_gql};

type GqlResult<T> = async_graphql::Result<T>;

/// Engine results in resolvers keep their error code.
trait OrGql<T> {
    fn gql(self) -> GqlResult<T>;
}

impl<T> OrGql<T> for Result<T, EngineError> {
    fn gql(self) -> GqlResult<T> {
        self.map_err(engine_error)
    }
}

/// A row handed to the fields of a row object.
pub struct RowObj {
    pub table: Arc<TableDef>,
    pub seq: Seq,
    pub values: Vec<Value>,
    pub deleted: bool,
}

/// A field of a row object, resolved against the table's current schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowField {
    Column(usize),
    Seq,
    Deleted,
    /// A name the current schema does not have (a column dropped since the query began).
    Missing,
}

impl RowField {
    pub fn resolve(table: &TableDef, col: &str) -> Self {
        match col {
            SEQ => RowField::Seq,
            DELETED => RowField::Deleted,
            _ => table
                .current()
                .column_index(col)
                .map_or(RowField::Missing, RowField::Column),
        }
    }
}

impl RowField {
    /// Writes this field of a row as JSON: what serializing [`RowObj::field`] gives.
    pub fn write_json(self, out: &mut Vec<u8>, seq: Seq, values: &[Value], deleted: bool) {
        match self {
            RowField::Seq => values::write_json(out, &Value::BigInt(seq.as_i64())),
            RowField::Deleted => values::write_json(out, &Value::Boolean(deleted)),
            RowField::Column(i) => values::write_json(out, values.get(i).unwrap_or(&Value::Null)),
            RowField::Missing => out.extend_from_slice(b"null"),
        }
    }
}

impl RowObj {
    pub fn get(&self, col: &str) -> Gql {
        self.field(RowField::resolve(&self.table, col))
    }

    pub fn field(&self, field: RowField) -> Gql {
        match field {
            RowField::Seq => Gql::String(self.seq.as_i64().to_string()),
            RowField::Deleted => Gql::Boolean(self.deleted),
            RowField::Column(i) => self.values.get(i).map_or(Gql::Null, to_gql),
            RowField::Missing => Gql::Null,
        }
    }
}

/// A scalar field's value: `None` is GraphQL null.
pub fn scalar(v: Gql) -> Option<FieldValue<'static>> {
    match v {
        Gql::Null => None,
        v => Some(FieldValue::value(v)),
    }
}

pub(crate) fn rows_of(rows: Rows) -> Vec<RowObj> {
    let table = rows.table;
    rows.rows
        .into_iter()
        .map(|(seq, values)| RowObj {
            table: table.clone(),
            seq,
            values,
            deleted: false,
        })
        .collect()
}

/// Rows after a write: new values, or the old ones (flagged) for deletes.
fn changed_rows(changes: Changes) -> Vec<RowObj> {
    let table = changes.table;
    changes
        .changes
        .into_iter()
        .filter_map(|AppliedChange { seq, new, old, .. }| {
            let deleted = new.is_none();
            new.or(old).map(|values| RowObj {
                table: table.clone(),
                seq,
                values,
                deleted,
            })
        })
        .collect()
}

struct Env<'a> {
    engine: &'a Arc<Engine>,
    exec: &'a ExecContext,
    limits: &'a GraphqlLimits,
    budget: Option<&'a ResponseBudget>,
}

/// What is left of one response's byte bound: every field's rows are charged to it as
/// they are fetched, so that many aliases of one large list fail with
/// `RESULT_TOO_LARGE` before they are built, not after.
#[derive(Debug)]
pub struct ResponseBudget {
    max: usize,
    used: AtomicUsize,
}

impl ResponseBudget {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` from the budget, or fails when it would run out.
    pub fn charge(&self, bytes: usize) -> GqlResult<()> {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        if used > self.max {
            return Err(engine_error(EngineError::ResultTooLarge(format!(
                "the response would be larger than {} bytes; ask for fewer rows or fields",
                self.max
            ))));
        }
        Ok(())
    }
}

/// About how many bytes a row's values make.
pub(crate) fn row_bytes(values: &[Value]) -> usize {
    values.iter().map(Value::approx_bytes).sum::<usize>() + 16
}

fn env<'a>(ctx: &ResolverContext<'a>) -> GqlResult<Env<'a>> {
    let missing = || gql_error(ErrorCode::Internal, "internal error");
    Ok(Env {
        engine: ctx.data_opt::<Arc<Engine>>().ok_or_else(missing)?,
        exec: ctx
            .data_opt::<ExecContext>()
            .ok_or_else(|| gql_error(ErrorCode::Unauthenticated, "not signed in"))?,
        limits: ctx.data_opt::<GraphqlLimits>().ok_or_else(missing)?,
        budget: ctx.data_opt::<ResponseBudget>(),
    })
}

/// An argument's value; absent and null are alike.
fn named_arg<'a>(ctx: &'a ResolverContext<'_>, name: &str) -> Option<&'a Gql> {
    ctx.args.get(name).map(|v| v.as_value()).filter(|v| **v != Gql::Null)
}

fn arg<'a>(ctx: &'a ResolverContext<'_>, a: Arg) -> Option<&'a Gql> {
    named_arg(ctx, a.name())
}

fn int_arg(ctx: &ResolverContext<'_>, a: Arg) -> GqlResult<Option<usize>> {
    int_value(arg(ctx, a), a.name())
}

/// A non-negative 32-bit integer argument; `None` when absent or null.
fn int_value(v: Option<&Gql>, name: &str) -> GqlResult<Option<usize>> {
    match v {
        None => Ok(None),
        Some(Gql::Number(n)) => {
            // async-graphql's Int takes any 64-bit integer; GraphQL's Int is 32-bit
            let v = n
                .as_i64()
                .filter(|v| i32::try_from(*v).is_ok())
                .ok_or_else(|| gql_error(ErrorCode::InvalidInput, format!("'{name}' is out of range for Int")))?;
            Ok(Some(non_negative(name, v).gql()?))
        }
        Some(_) => Err(gql_error(
            ErrorCode::InvalidInput,
            format!("'{name}' must be an integer"),
        )),
    }
}

fn filter_arg(ctx: &ResolverContext<'_>, engine: &Engine, meta: &TableMeta) -> GqlResult<Option<Filter>> {
    filter_value(arg(ctx, Arg::Where), engine.filter_limits(), meta)
}

fn filter_value(v: Option<&Gql>, limits: FilterLimits, meta: &TableMeta) -> GqlResult<Option<Filter>> {
    v.map(|w| inputs::bool_exp(meta, w, limits)).transpose().gql()
}

fn list_value(rows: Vec<RowObj>) -> FieldValue<'static> {
    FieldValue::list(rows.into_iter().map(FieldValue::owned_any))
}

/// Runs a select bounded by the rows-per-result limit: an explicit `limit` above it,
/// or a result that would exceed it, is an error rather than a silent truncation.
async fn bounded_select(env: &Env<'_>, meta: &TableMeta, req: SelectRequest) -> GqlResult<Vec<RowObj>> {
    let rows = env.engine.select(env.exec, &meta.id, &req).await.gql()?;
    check_row_count(env.limits, rows.rows.len())?;
    if let Some(budget) = env.budget {
        budget.charge(rows.rows.iter().map(|(_, v)| row_bytes(v)).sum())?;
    }
    Ok(rows_of(rows))
}

/// The select a list field (query or live subscription) asks for, with its limit
/// capped one above the rows-per-result bound so that an overflow shows.
fn list_request(ctx: &ResolverContext<'_>, env: &Env<'_>, meta: &TableMeta) -> GqlResult<SelectRequest> {
    list_request_of(&|a| arg(ctx, a), env.engine.filter_limits(), env.limits, meta)
}

/// [`list_request`] over argument values however they were obtained (the resolver's
/// context, or the direct path's checked arguments); absent and null are alike.
pub(crate) fn list_request_of<'v>(
    arg: &dyn Fn(Arg) -> Option<&'v Gql>,
    filter_limits: FilterLimits,
    limits: &GraphqlLimits,
    meta: &TableMeta,
) -> GqlResult<SelectRequest> {
    let max = limits.max_rows;
    let limit = int_value(arg(Arg::Limit), Arg::Limit.name())?;
    if let Some(l) = limit
        && l > max
    {
        return Err(engine_error(EngineError::TooManyRows(format!(
            "limit {l} is above the maximum of {max} rows per result"
        ))));
    }
    Ok(SelectRequest {
        filter: filter_value(arg(Arg::Where), filter_limits, meta)?,
        order_by: arg(Arg::OrderBy)
            .map(|o| inputs::order_by(meta, o))
            .transpose()
            .gql()?
            .unwrap_or_default(),
        limit: Some(limit.unwrap_or(max.saturating_add(1))),
        offset: int_value(arg(Arg::Offset), Arg::Offset.name())?.unwrap_or(0),
    })
}

/// The rows-per-result bound: a result over it is an error rather than a silent
/// truncation.
pub(crate) fn check_row_count(limits: &GraphqlLimits, rows: usize) -> GqlResult<()> {
    let max = limits.max_rows;
    if rows > max {
        return Err(engine_error(EngineError::TooManyRows(format!(
            "the result has more than {max} rows; add a limit or narrow the where"
        ))));
    }
    Ok(())
}

pub(crate) fn checked_rows(limits: &GraphqlLimits, rows: Rows) -> GqlResult<Vec<RowObj>> {
    check_row_count(limits, rows.rows.len())?;
    Ok(rows_of(rows))
}

/// A root field of `meta`'s table: its name and arguments as the spec declares them,
/// and a resolver that gets the request's context and the table.
fn root_field<F>(meta: &Arc<TableMeta>, root: RootField, ty: TypeRef, description: String, resolve: F) -> Field
where
    F: for<'a> Fn(ResolverContext<'a>, Arc<TableMeta>) -> BoxFuture<'a, GqlResult<Option<FieldValue<'a>>>>
        + Send
        + Sync
        + 'static,
{
    let m = meta.clone();
    let field = Field::new(root.name(&meta.names), ty, move |ctx| {
        FieldFuture::new(resolve(ctx, m.clone()))
    })
    .description(description);
    root.inputs(meta).into_iter().fold(field, Field::argument)
}
