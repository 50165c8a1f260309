//! Resolvers: each root field turns its arguments into one typed engine request
//! (select, aggregate, insert, update, delete) for the caller's [`ExecContext`]; the
//! engine checks permissions and per-user isolation itself.

use std::sync::Arc;

use async_graphql::Value as Gql;
use async_graphql::context::SelectionField;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, ResolverContext, SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use kalamdb_engine::commit::AppliedChange;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::{EngineError, ErrorCode};
use kalamdb_engine::filter::{Filter, FilterLimits};
use kalamdb_engine::ids::ColumnName;
use kalamdb_engine::live::{ChangeFeed, FeedBatch, FeedStart, LiveResults};
use kalamdb_engine::mutate::{Changes, ConflictAction};
use kalamdb_engine::schema::TableDef;
use kalamdb_engine::select::{AggFn, Aggregate, AggregateRequest, Rows, SelectRequest};
use kalamdb_engine::types::{ColumnType, Value};
use kalamdb_storage::seq::Seq;

use crate::errors::{engine_error, gql_error};
use crate::inputs;
use crate::meta::{DELETED, SEQ, TableMeta};
use crate::objects::IDENTITY;
use crate::schema::GraphqlLimits;
use crate::values::{self, from_gql, non_negative, scalar_name, to_gql};

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
}

fn env<'a>(ctx: &ResolverContext<'a>) -> GqlResult<Env<'a>> {
    let missing = || gql_error(ErrorCode::Internal, "internal error");
    Ok(Env {
        engine: ctx.data_opt::<Arc<Engine>>().ok_or_else(missing)?,
        exec: ctx
            .data_opt::<ExecContext>()
            .ok_or_else(|| gql_error(ErrorCode::Unauthenticated, "not signed in"))?,
        limits: ctx.data_opt::<GraphqlLimits>().ok_or_else(missing)?,
    })
}

fn arg<'a>(ctx: &'a ResolverContext<'_>, name: &str) -> Option<&'a Gql> {
    ctx.args.get(name).map(|v| v.as_value()).filter(|v| **v != Gql::Null)
}

fn int_arg(ctx: &ResolverContext<'_>, name: &str) -> GqlResult<Option<usize>> {
    int_value(arg(ctx, name), name)
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
    filter_value(arg(ctx, "where"), engine.filter_limits(), meta)
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
    checked_rows(env.limits, rows)
}

/// The select a list field (query or live subscription) asks for, with its limit
/// capped one above the rows-per-result bound so that an overflow shows.
fn list_request(ctx: &ResolverContext<'_>, env: &Env<'_>, meta: &TableMeta) -> GqlResult<SelectRequest> {
    list_request_of(&|name| arg(ctx, name), env.engine.filter_limits(), env.limits, meta)
}

/// [`list_request`] over argument values however they were obtained (the resolver's
/// context, or the direct path's checked arguments); absent and null are alike.
pub(crate) fn list_request_of<'v>(
    arg: &dyn Fn(&str) -> Option<&'v Gql>,
    filter_limits: FilterLimits,
    limits: &GraphqlLimits,
    meta: &TableMeta,
) -> GqlResult<SelectRequest> {
    let max = limits.max_rows;
    let limit = int_value(arg("limit"), "limit")?;
    if let Some(l) = limit
        && l > max
    {
        return Err(engine_error(EngineError::TooManyRows(format!(
            "limit {l} is above the maximum of {max} rows per result"
        ))));
    }
    Ok(SelectRequest {
        filter: filter_value(arg("where"), filter_limits, meta)?,
        order_by: arg("order_by")
            .map(|o| inputs::order_by(meta, o))
            .transpose()
            .gql()?
            .unwrap_or_default(),
        limit: Some(limit.unwrap_or(max.saturating_add(1))),
        offset: int_value(arg("offset"), "offset")?.unwrap_or(0),
    })
}

pub(crate) fn checked_rows(limits: &GraphqlLimits, rows: Rows) -> GqlResult<Vec<RowObj>> {
    let max = limits.max_rows;
    if rows.rows.len() > max {
        return Err(engine_error(EngineError::TooManyRows(format!(
            "the result has more than {max} rows; add a limit or narrow the where"
        ))));
    }
    Ok(rows_of(rows))
}

/// The arguments of a list field, the query's and the live subscription's.
fn list_args(meta: &TableMeta) -> [InputValue; 4] {
    [
        InputValue::new("where", TypeRef::named(meta.names.bool_exp())),
        InputValue::new("order_by", TypeRef::named_nn_list(meta.names.order_by())),
        InputValue::new("limit", TypeRef::named(TypeRef::INT)),
        InputValue::new("offset", TypeRef::named(TypeRef::INT)),
    ]
}

// ---- query root -------------------------------------------------------------------

pub fn me_field() -> Field {
    Field::new("_me", TypeRef::named_nn(IDENTITY), |_| {
        FieldFuture::Value(Some(FieldValue::owned_any(())))
    })
    .description("The user and role this request runs as.")
}

pub fn identity(ctx: &ResolverContext<'_>, role: bool) -> Option<FieldValue<'static>> {
    let exec = ctx.data_opt::<ExecContext>()?;
    let s = if role {
        exec.role.to_string()
    } else {
        exec.subject().to_string()
    };
    Some(FieldValue::value(Gql::String(s)))
}

pub fn list_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    let field = Field::new(
        &meta.names.base,
        TypeRef::named_nn_list_nn(&meta.names.base),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let req = list_request(&ctx, &env, &meta)?;
                let rows = bounded_select(&env, &meta, req).await?;
                Ok(Some(list_value(rows)))
            })
        },
    )
    .description(format!("Rows of {}.", meta.id));
    list_args(meta).into_iter().fold(field, Field::argument)
}

/// The primary-key argument of `_by_pk` and `delete_.._by_pk`, typed.
fn pk_arg(ctx: &ResolverContext<'_>, meta: &TableMeta) -> GqlResult<Value> {
    let pk = meta.pk_column();
    let v =
        arg(ctx, pk.name.as_str()).ok_or_else(|| gql_error(ErrorCode::InvalidInput, "the primary key is required"))?;
    from_gql(pk.ty, v).gql()
}

pub fn by_pk_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    let pk = meta.pk_column();
    Field::new(meta.names.by_pk(), TypeRef::named(&meta.names.base), move |ctx| {
        let meta = m.clone();
        FieldFuture::new(async move {
            let env = env(&ctx)?;
            let pk = pk_arg(&ctx, &meta)?;
            let row = rows_of(env.engine.get_by_pk(env.exec, &meta.id, &pk).await.gql()?).pop();
            Ok(row.map(FieldValue::owned_any))
        })
    })
    .description(format!("One row of {} by primary key.", meta.id))
    .argument(InputValue::new(pk.name.as_str(), TypeRef::named_nn(scalar_name(pk.ty))))
}

// ---- aggregates -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Sum,
    Avg,
    Min,
    Max,
}

impl AggKind {
    pub const ALL: [AggKind; 4] = [AggKind::Sum, AggKind::Avg, AggKind::Min, AggKind::Max];

    pub fn as_str(self) -> &'static str {
        match self {
            AggKind::Sum => "sum",
            AggKind::Avg => "avg",
            AggKind::Min => "min",
            AggKind::Max => "max",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn func(self) -> AggFn {
        match self {
            AggKind::Sum => AggFn::Sum,
            AggKind::Avg => AggFn::Avg,
            AggKind::Min => AggFn::Min,
            AggKind::Max => AggFn::Max,
        }
    }
}

/// The parent of the fields of `<t>_aggregate`.
struct AggParent {
    meta: Arc<TableMeta>,
    filter: Option<Filter>,
    group_by: Vec<ColumnName>,
}

/// Computed aggregates: each requested [`Aggregate`] with its value.
pub struct AggValues {
    specs: Vec<Aggregate>,
    values: Vec<Value>,
}

impl AggValues {
    fn get(&self, spec: &Aggregate) -> Gql {
        self.specs
            .iter()
            .position(|s| s == spec)
            .and_then(|i| self.values.get(i))
            .map_or(Gql::Null, to_gql)
    }
}

struct AggFnObj {
    kind: AggKind,
    values: Arc<AggValues>,
}

struct GroupObj {
    keys: Vec<(ColumnName, Value)>,
    values: Arc<AggValues>,
}

fn count_spec(meta: &TableMeta, columns: Option<&Gql>, distinct: bool) -> Result<Aggregate, EngineError> {
    let cols = columns
        .map(|c| inputs::column_list(meta, c))
        .transpose()?
        .unwrap_or_default();
    match cols.as_slice() {
        [] => Ok(Aggregate {
            func: AggFn::Count,
            column: None,
        }),
        [c] => Ok(Aggregate {
            func: if distinct { AggFn::CountDistinct } else { AggFn::Count },
            column: Some(c.clone()),
        }),
        _ => Err(EngineError::InvalidInput("count takes at most one column".into())),
    }
}

/// The aggregates a selection of `<t>_aggregate_fields` asks for.
fn requested_aggregates(meta: &TableMeta, field: SelectionField<'_>) -> GqlResult<Vec<Aggregate>> {
    let mut specs: Vec<Aggregate> = Vec::new();
    let mut add = |a: Aggregate| {
        if !specs.contains(&a) {
            specs.push(a);
        }
    };
    for sub in field.selection_set() {
        if sub.name() == "count" {
            let args = sub.arguments()?;
            let get = |n: &str| {
                args.iter()
                    .find(|(k, _)| k.as_str() == n)
                    .map(|(_, v)| v)
                    .filter(|v| **v != Gql::Null)
            };
            let distinct = matches!(get("distinct"), Some(Gql::Boolean(true)));
            add(count_spec(meta, get("columns"), distinct).gql()?);
        } else if let Some(kind) = AggKind::from_name(sub.name()) {
            for col in sub.selection_set() {
                if col.name().starts_with("__") {
                    continue;
                }
                let column = ColumnName::parse(col.name()).gql()?;
                add(Aggregate {
                    func: kind.func(),
                    column: Some(column),
                });
            }
        }
    }
    Ok(specs)
}

async fn run_aggregate(
    env: &Env<'_>,
    parent: &AggParent,
    group_by: Vec<ColumnName>,
    specs: Vec<Aggregate>,
) -> GqlResult<Vec<GroupObj>> {
    let req = AggregateRequest {
        filter: parent.filter.clone(),
        group_by: group_by.clone(),
        aggregates: specs.clone(),
    };
    let groups = env.engine.aggregate(env.exec, &parent.meta.id, &req).await.gql()?;
    if groups.len() > env.limits.max_rows {
        return Err(engine_error(EngineError::TooManyRows(format!(
            "the aggregate has more than {} groups",
            env.limits.max_rows
        ))));
    }
    Ok(groups
        .into_iter()
        .map(|g| GroupObj {
            keys: group_by.iter().cloned().zip(g.keys).collect(),
            values: Arc::new(AggValues {
                specs: specs.clone(),
                values: g.values,
            }),
        })
        .collect())
}

pub fn aggregate_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    Field::new(
        meta.names.aggregate(),
        TypeRef::named_nn(meta.names.aggregate()),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let filter = filter_arg(&ctx, env.engine, &meta)?;
                let group_by = arg(&ctx, "group_by")
                    .map(|g| inputs::column_list(&meta, g))
                    .transpose()
                    .gql()?
                    .unwrap_or_default();
                Ok(Some(FieldValue::owned_any(AggParent { meta, filter, group_by })))
            })
        },
    )
    .description(format!(
        "Aggregates over rows of {}; with group_by, `groups` holds one entry per distinct key.",
        meta.id
    ))
    .argument(InputValue::new("where", TypeRef::named(meta.names.bool_exp())))
    .argument(InputValue::new(
        "group_by",
        TypeRef::named_nn_list(meta.names.select_column()),
    ))
}

/// `aggregate`: over all matching rows.
pub fn aggregate_overall_field(meta: &Arc<TableMeta>) -> Field {
    Field::new("aggregate", TypeRef::named(meta.names.aggregate_fields()), |ctx| {
        FieldFuture::new(async move {
            let env = env(&ctx)?;
            let parent = ctx.parent_value.try_downcast_ref::<AggParent>()?;
            let specs = requested_aggregates(&parent.meta, ctx.field())?;
            let values = if specs.is_empty() {
                Arc::new(AggValues { specs, values: vec![] })
            } else {
                run_aggregate(&env, parent, vec![], specs)
                    .await?
                    .pop()
                    .map(|g| g.values)
                    .ok_or_else(|| gql_error(ErrorCode::Internal, "internal error"))?
            };
            Ok(Some(FieldValue::owned_any(values)))
        })
    })
}

pub fn aggregate_nodes_field(meta: &Arc<TableMeta>) -> Field {
    Field::new("nodes", TypeRef::named_nn_list_nn(&meta.names.base), |ctx| {
        FieldFuture::new(async move {
            let env = env(&ctx)?;
            let parent = ctx.parent_value.try_downcast_ref::<AggParent>()?;
            let req = SelectRequest {
                filter: parent.filter.clone(),
                limit: Some(env.limits.max_rows.saturating_add(1)),
                ..SelectRequest::default()
            };
            Ok(Some(list_value(bounded_select(&env, &parent.meta, req).await?)))
        })
    })
}

/// `groups`: one entry per distinct `group_by` key, ordered by key.
pub fn aggregate_groups_field(meta: &Arc<TableMeta>) -> Field {
    Field::new("groups", TypeRef::named_nn_list_nn(meta.names.group()), |ctx| {
        FieldFuture::new(async move {
            let env = env(&ctx)?;
            let parent = ctx.parent_value.try_downcast_ref::<AggParent>()?;
            let mut specs: Vec<Aggregate> = Vec::new();
            for sub in ctx.field().selection_set().filter(|f| f.name() == "aggregate") {
                for s in requested_aggregates(&parent.meta, sub)? {
                    if !specs.contains(&s) {
                        specs.push(s);
                    }
                }
            }
            if specs.is_empty() {
                // keys alone: count rows per group anyway, the cheapest aggregate
                specs.push(Aggregate {
                    func: AggFn::Count,
                    column: None,
                });
            }
            let groups = run_aggregate(&env, parent, parent.group_by.clone(), specs).await?;
            Ok(Some(FieldValue::list(groups.into_iter().map(FieldValue::owned_any))))
        })
    })
    .description("One entry per distinct value of the group_by columns (an extension to Hasura's API).")
}

pub fn group_keys_field(meta: &Arc<TableMeta>) -> Field {
    Field::new("keys", TypeRef::named_nn(meta.names.group_key()), |ctx| {
        FieldFuture::Value(
            ctx.parent_value
                .downcast_ref::<GroupObj>()
                .map(|g| FieldValue::borrowed_any(g)),
        )
    })
}

pub fn group_key_field(name: &str, ty: TypeRef) -> Field {
    let col = name.to_string();
    Field::new(name, ty, move |ctx| {
        let v = ctx.parent_value.downcast_ref::<GroupObj>().map(|g| {
            g.keys
                .iter()
                .find(|(k, _)| k.as_str() == col)
                .map_or(Gql::Null, |(_, v)| to_gql(v))
        });
        FieldFuture::Value(v.and_then(scalar))
    })
}

pub fn group_aggregate_field(meta: &Arc<TableMeta>) -> Field {
    Field::new("aggregate", TypeRef::named_nn(meta.names.aggregate_fields()), |ctx| {
        FieldFuture::Value(
            ctx.parent_value
                .downcast_ref::<GroupObj>()
                .map(|g| FieldValue::owned_any(g.values.clone())),
        )
    })
}

pub fn count_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    Field::new("count", TypeRef::named_nn(TypeRef::INT), move |ctx| {
        let meta = m.clone();
        FieldFuture::new(async move {
            let values = ctx.parent_value.try_downcast_ref::<Arc<AggValues>>()?;
            let distinct = matches!(arg(&ctx, "distinct"), Some(Gql::Boolean(true)));
            let spec = count_spec(&meta, arg(&ctx, "columns"), distinct).gql()?;
            Ok(scalar(match values.get(&spec) {
                // counts are BIGINT in the engine and Int here
                Gql::String(s) => s.parse::<i64>().map(Gql::from).unwrap_or(Gql::Null),
                other => other,
            }))
        })
    })
    .argument(InputValue::new(
        "columns",
        TypeRef::named_nn_list(meta.names.select_column()),
    ))
    .argument(InputValue::new("distinct", TypeRef::named(TypeRef::BOOLEAN)))
}

pub fn agg_fn_field(kind: AggKind, type_name: &str) -> Field {
    Field::new(kind.as_str(), TypeRef::named(type_name), move |ctx| {
        FieldFuture::Value(ctx.parent_value.downcast_ref::<Arc<AggValues>>().map(|v| {
            FieldValue::owned_any(AggFnObj {
                kind,
                values: v.clone(),
            })
        }))
    })
}

pub fn agg_value_field(col: &str, ty: TypeRef) -> Field {
    let column = ColumnName::parse(col).ok();
    Field::new(col, ty, move |ctx| {
        let v = ctx.parent_value.downcast_ref::<AggFnObj>().map(|o| {
            o.values.get(&Aggregate {
                func: o.kind.func(),
                column: column.clone(),
            })
        });
        FieldFuture::Value(v.and_then(scalar))
    })
}

// ---- mutations --------------------------------------------------------------------

struct MutationResult {
    rows: Vec<RowObj>,
}

pub fn affected_rows_field() -> Field {
    Field::new("affected_rows", TypeRef::named_nn(TypeRef::INT), |ctx| {
        FieldFuture::Value(
            ctx.parent_value
                .downcast_ref::<MutationResult>()
                .map(|r| FieldValue::value(Gql::from(r.rows.len() as i64))),
        )
    })
}

pub fn returning_field(meta: &Arc<TableMeta>) -> Field {
    Field::new("returning", TypeRef::named_nn_list_nn(&meta.names.base), |ctx| {
        FieldFuture::Value(
            ctx.parent_value
                .downcast_ref::<MutationResult>()
                .map(|r| FieldValue::list(r.rows.iter().map(|row| FieldValue::borrowed_any(row)))),
        )
    })
}

fn conflict_action(meta: &TableMeta, v: Option<&Gql>) -> GqlResult<ConflictAction> {
    let Some(Gql::Object(obj)) = v else {
        return Ok(ConflictAction::Error);
    };
    let cols = obj
        .get("update_columns")
        .map(|c| inputs::column_list(meta, c))
        .transpose()
        .gql()?
        .unwrap_or_default();
    Ok(if cols.is_empty() {
        ConflictAction::DoNothing
    } else {
        ConflictAction::Update(cols)
    })
}

fn on_conflict_arg(meta: &TableMeta) -> InputValue {
    InputValue::new("on_conflict", TypeRef::named(meta.names.on_conflict()))
}

pub fn insert_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    Field::new(
        meta.names.insert(),
        TypeRef::named(meta.names.mutation_response()),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let objects = match arg(&ctx, "objects") {
                    Some(Gql::List(items)) => items
                        .iter()
                        .map(|o| inputs::insert_object(&meta, o))
                        .collect::<Result<Vec<_>, _>>()
                        .gql()?,
                    _ => return Err(gql_error(ErrorCode::InvalidInput, "objects must be a list")),
                };
                let action = conflict_action(&meta, arg(&ctx, "on_conflict"))?;
                let changes = env.engine.insert(env.exec, &meta.id, objects, action).await.gql()?;
                Ok(Some(FieldValue::owned_any(MutationResult {
                    rows: changed_rows(changes),
                })))
            })
        },
    )
    .description(format!("Inserts rows into {}, all or none.", meta.id))
    .argument(InputValue::new(
        "objects",
        TypeRef::named_nn_list_nn(meta.names.insert_input()),
    ))
    .argument(on_conflict_arg(meta))
}

/// `insert_<t>_one`: the row as inserted (or as updated by an upsert), none when an
/// `on_conflict` without update columns left an existing row alone.
pub(crate) async fn insert_one(
    engine: &Engine,
    exec: &ExecContext,
    meta: &TableMeta,
    object: Option<&Gql>,
    on_conflict: Option<&Gql>,
) -> GqlResult<Option<RowObj>> {
    let object = object.ok_or_else(|| gql_error(ErrorCode::InvalidInput, "object is required"))?;
    let row = inputs::insert_object(meta, object).gql()?;
    let action = conflict_action(meta, on_conflict)?;
    let changes = engine.insert(exec, &meta.id, vec![row], action).await.gql()?;
    Ok(changed_rows(changes).pop())
}

pub fn insert_one_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    Field::new(meta.names.insert_one(), TypeRef::named(&meta.names.base), move |ctx| {
        let meta = m.clone();
        FieldFuture::new(async move {
            let env = env(&ctx)?;
            let row = insert_one(
                env.engine,
                env.exec,
                &meta,
                arg(&ctx, "object"),
                arg(&ctx, "on_conflict"),
            )
            .await?;
            Ok(row.map(FieldValue::owned_any))
        })
    })
    .description(format!("Inserts one row into {}.", meta.id))
    .argument(InputValue::new("object", TypeRef::named_nn(meta.names.insert_input())))
    .argument(on_conflict_arg(meta))
}

fn assignment_args(meta: &TableMeta, field: Field) -> Field {
    let mut field = field.argument(InputValue::new("_set", TypeRef::named(meta.names.set_input())));
    if meta.incrementable().next().is_some() {
        field = field.argument(InputValue::new("_inc", TypeRef::named(meta.names.inc_input())));
    }
    field
}

pub fn update_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    let field = Field::new(
        meta.names.update(),
        TypeRef::named(meta.names.mutation_response()),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let filter = filter_arg(&ctx, env.engine, &meta)?
                    .ok_or_else(|| gql_error(ErrorCode::InvalidInput, "where is required"))?;
                let set = inputs::assignments(&meta, arg(&ctx, "_set"), arg(&ctx, "_inc")).gql()?;
                let changes = env.engine.update_where(env.exec, &meta.id, &filter, &set).await.gql()?;
                Ok(Some(FieldValue::owned_any(MutationResult {
                    rows: changed_rows(changes),
                })))
            })
        },
    )
    .description(format!("Updates the rows of {} that match where.", meta.id))
    .argument(InputValue::new("where", TypeRef::named_nn(meta.names.bool_exp())));
    assignment_args(meta, field)
}

pub fn update_by_pk_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    let field = Field::new(
        meta.names.update_by_pk(),
        TypeRef::named(&meta.names.base),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let pk_name = meta.pk_column().name.as_str();
                let pk = match arg(&ctx, "pk_columns") {
                    Some(Gql::Object(o)) => o.get(pk_name).cloned(),
                    _ => None,
                }
                .ok_or_else(|| gql_error(ErrorCode::InvalidInput, "pk_columns is required"))?;
                let pk = from_gql(meta.pk_column().ty, &pk).gql()?;
                let set = inputs::assignments(&meta, arg(&ctx, "_set"), arg(&ctx, "_inc")).gql()?;
                let changes = env.engine.update_by_pk(env.exec, &meta.id, &pk, &set).await.gql()?;
                Ok(changed_rows(changes).pop().map(FieldValue::owned_any))
            })
        },
    )
    .description(format!(
        "Updates one row of {} by primary key; null when there is none.",
        meta.id
    ))
    .argument(InputValue::new(
        "pk_columns",
        TypeRef::named_nn(meta.names.pk_columns_input()),
    ));
    assignment_args(meta, field)
}

pub fn delete_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    Field::new(
        meta.names.delete(),
        TypeRef::named(meta.names.mutation_response()),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let filter = filter_arg(&ctx, env.engine, &meta)?
                    .ok_or_else(|| gql_error(ErrorCode::InvalidInput, "where is required"))?;
                let changes = env.engine.delete_where(env.exec, &meta.id, &filter).await.gql()?;
                Ok(Some(FieldValue::owned_any(MutationResult {
                    rows: changed_rows(changes),
                })))
            })
        },
    )
    .description(format!("Deletes the rows of {} that match where.", meta.id))
    .argument(InputValue::new("where", TypeRef::named_nn(meta.names.bool_exp())))
}

pub fn delete_by_pk_field(meta: &Arc<TableMeta>) -> Field {
    let m = meta.clone();
    let pk = meta.pk_column();
    Field::new(
        meta.names.delete_by_pk(),
        TypeRef::named(&meta.names.base),
        move |ctx| {
            let meta = m.clone();
            FieldFuture::new(async move {
                let env = env(&ctx)?;
                let pk = pk_arg(&ctx, &meta)?;
                let changes = env.engine.delete_by_pk(env.exec, &meta.id, &pk).await.gql()?;
                Ok(changed_rows(changes).pop().map(FieldValue::owned_any))
            })
        },
    )
    .description(format!(
        "Deletes one row of {} by primary key; null when there is none.",
        meta.id
    ))
    .argument(InputValue::new(pk.name.as_str(), TypeRef::named_nn(scalar_name(pk.ty))))
}

// ---- subscriptions ----------------------------------------------------------------

/// What `system.live_queries` shows as a subscription's query; the transport sets it
/// to the document's text.
#[derive(Debug, Clone)]
pub struct SubscriptionLabel(pub Arc<str>);

fn label(ctx: &ResolverContext<'_>, field: &str) -> Arc<str> {
    ctx.data_opt::<SubscriptionLabel>()
        .map_or_else(|| field.into(), |l| l.0.clone())
}

/// `subscription { <t>(where, order_by, limit, offset) }`: the result now, and again
/// each time it changes.
/// The engine side of one subscription, opened once by its root field and then read
/// by the transport, which renders each item with a one-shot execution of the same
/// document. So an idle subscription holds only this, not a suspended execution.
pub enum SubscriptionSource {
    Changes(ChangeFeed),
    Live(Box<LiveResults>),
}

/// One thing a subscription yields.
pub enum SubscriptionItem {
    Changes(Arc<TableDef>, FeedBatch),
    Live(Rows),
}

impl SubscriptionSource {
    /// Waits until [`take`](Self::take) may have an item. An idle subscription waits
    /// here, in a future of a few words.
    pub async fn ready(&self) {
        match self {
            SubscriptionSource::Changes(feed) => feed.ready().await,
            SubscriptionSource::Live(results) => results.ready().await,
        }
    }

    /// The next item, or `None` when there is nothing to send; an error ends the
    /// subscription (it is rendered as its last result).
    pub async fn take(&mut self) -> Result<Option<SubscriptionItem>, EngineError> {
        Ok(match self {
            SubscriptionSource::Changes(feed) => feed
                .take()
                .await?
                .map(|batch| SubscriptionItem::Changes(feed.table.clone(), batch)),
            SubscriptionSource::Live(results) => results.take().await?.map(SubscriptionItem::Live),
        })
    }
}

/// How the transport drives a subscription field through async-graphql (request data):
/// `Setup` opens the source and hands it out; `Render` turns one item into the
/// field's value, with the document's selection applied by async-graphql as usual.
pub enum SubscriptionMode {
    Setup(parking_lot::Mutex<Option<Box<SubscriptionSource>>>),
    Render(parking_lot::Mutex<Option<Result<SubscriptionItem, EngineError>>>),
}

type FieldStream<'a> = futures::stream::BoxStream<'a, GqlResult<FieldValue<'a>>>;

/// The common part of both subscription fields: render a given item, or open the
/// source with `open` and hand it to the transport.
fn drive_subscription<'a>(
    ctx: &ResolverContext<'_>,
    env: &Env<'_>,
    open: impl FnOnce() -> GqlResult<SubscriptionSource>,
) -> GqlResult<FieldStream<'a>> {
    use futures::StreamExt;
    let mode = ctx.data_opt::<Arc<SubscriptionMode>>().ok_or_else(|| {
        gql_error(
            ErrorCode::BadRequest,
            "subscriptions run over a WebSocket on /v1/graphql",
        )
    })?;
    match &**mode {
        SubscriptionMode::Setup(slot) => {
            *slot.lock() = Some(Box::new(open()?));
            Ok(futures::stream::empty().boxed())
        }
        SubscriptionMode::Render(slot) => {
            let item = slot
                .lock()
                .take()
                .ok_or_else(|| gql_error(ErrorCode::Internal, "internal error"))?;
            let value = match item.gql()? {
                SubscriptionItem::Changes(table, batch) => Ok(FieldValue::list(
                    change_objs(&table, batch).into_iter().map(FieldValue::owned_any),
                )),
                SubscriptionItem::Live(rows) => checked_rows(env.limits, rows).map(list_value),
            };
            Ok(futures::stream::once(async move { value }).boxed())
        }
    }
}

/// `subscription { <t>(where, order_by, limit, offset) }`: the result now, and again
/// each time it changes.
pub fn live_subscription_field(meta: &Arc<TableMeta>) -> SubscriptionField {
    let m = meta.clone();
    let field = SubscriptionField::new(
        &meta.names.base,
        TypeRef::named_nn_list_nn(&meta.names.base),
        move |ctx| {
            let meta = m.clone();
            SubscriptionFieldFuture::new(async move {
                let env = env(&ctx)?;
                drive_subscription(&ctx, &env, || {
                    let req = list_request(&ctx, &env, &meta)?;
                    let label = label(&ctx, &meta.names.base);
                    let results = env.engine.subscribe_live(env.exec, &meta.id, req, label).gql()?;
                    Ok(SubscriptionSource::Live(Box::new(results)))
                })
            })
        },
    )
    .description(format!(
        "Rows of {}: the result at once, then again each time it changes.",
        meta.id
    ));
    list_args(meta).into_iter().fold(field, SubscriptionField::argument)
}

/// One change event handed to the fields of a `<t>_change` object.
pub struct ChangeObj {
    op: &'static str,
    seq: Seq,
    row: Option<RowObj>,
    old_row: Option<RowObj>,
    reset: bool,
}

fn change_objs(table: &Arc<TableDef>, batch: FeedBatch) -> Vec<ChangeObj> {
    let row = |seq: Seq, values: Vec<Value>| RowObj {
        table: table.clone(),
        seq,
        values,
        deleted: false,
    };
    match batch {
        FeedBatch::Snapshot { rows, watermark, reset } => rows
            .into_iter()
            .map(|(seq, values)| ChangeObj {
                op: "SNAPSHOT",
                seq: watermark,
                row: Some(row(seq, values)),
                old_row: None,
                reset,
            })
            .collect(),
        FeedBatch::Changes(changes) => changes
            .iter()
            .map(|c| ChangeObj {
                op: c.kind.as_str(),
                seq: c.seq,
                row: c.new.clone().map(|v| row(c.seq, v)),
                old_row: c.old.clone().map(|v| RowObj {
                    deleted: c.new.is_none(),
                    ..row(c.seq, v)
                }),
                reset: false,
            })
            .collect(),
    }
}

fn seq_arg(ctx: &ResolverContext<'_>, name: &str) -> GqlResult<Option<Seq>> {
    match arg(ctx, name) {
        None => Ok(None),
        Some(v) => match from_gql(ColumnType::BigInt, v).gql()? {
            Value::BigInt(n) if n >= 0 => Ok(Some(Seq(n as u64))),
            _ => Err(gql_error(
                ErrorCode::InvalidInput,
                format!("'{name}' must be a non-negative BigInt"),
            )),
        },
    }
}

/// `subscription { <t>_changes(where, since_seq, initial_batch_size) }`: change events,
/// in batches, in commit order.
pub fn changes_subscription_field(meta: &Arc<TableMeta>) -> SubscriptionField {
    let m = meta.clone();
    SubscriptionField::new(
        meta.names.changes(),
        TypeRef::named_nn_list_nn(meta.names.change()),
        move |ctx| {
            let meta = m.clone();
            SubscriptionFieldFuture::new(async move {
                let env = env(&ctx)?;
                drive_subscription(&ctx, &env, || {
                    let filter = filter_arg(&ctx, env.engine, &meta)?;
                    let start = FeedStart {
                        since_seq: seq_arg(&ctx, "since_seq")?,
                        initial_batch_size: int_arg(&ctx, "initial_batch_size")?
                            .map(|n| n.clamp(1, env.limits.max_rows)),
                    };
                    let label = label(&ctx, &meta.names.changes());
                    let feed = env
                        .engine
                        .subscribe_changes(env.exec, &meta.id, filter.as_ref(), start, label)
                        .gql()?;
                    Ok(SubscriptionSource::Changes(feed))
                })
            })
        },
    )
    .description(format!(
        "Changes to rows of {}: optional current rows first (SNAPSHOT), then INSERT, UPDATE and DELETE events in commit order.",
        meta.id
    ))
    .argument(InputValue::new("where", TypeRef::named(meta.names.bool_exp())))
    .argument(
        InputValue::new("since_seq", TypeRef::named("BigInt"))
            .description("Resume after this seq: the changes committed since then, without gap or duplicate."),
    )
    .argument(
        InputValue::new("initial_batch_size", TypeRef::named(TypeRef::INT))
            .description("Send the current matching rows first, as SNAPSHOT events in batches of this size."),
    )
}

fn change_of<'a>(ctx: &ResolverContext<'a>) -> Option<&'a ChangeObj> {
    ctx.parent_value.downcast_ref::<ChangeObj>()
}

pub fn change_op_field() -> Field {
    Field::new("op", TypeRef::named_nn(crate::objects::CHANGE_OP), |ctx| {
        FieldFuture::Value(change_of(&ctx).map(|c| FieldValue::value(Gql::Enum(async_graphql::Name::new(c.op)))))
    })
}

pub fn change_seq_field() -> Field {
    Field::new("seq", TypeRef::named_nn("BigInt"), |ctx| {
        FieldFuture::Value(change_of(&ctx).map(|c| FieldValue::value(Gql::String(c.seq.as_i64().to_string()))))
    })
    .description("The change's position in the change log; for SNAPSHOT events, the position the snapshot reflects. Resume with since_seq set to the last one received.")
}

pub fn change_row_field(meta: &Arc<TableMeta>, old: bool) -> Field {
    let name = if old { "old_row" } else { "row" };
    Field::new(name, TypeRef::named(&meta.names.base), move |ctx| {
        FieldFuture::Value(
            change_of(&ctx)
                .and_then(|c| if old { c.old_row.as_ref() } else { c.row.as_ref() })
                .map(|r| FieldValue::borrowed_any(r)),
        )
    })
    .description(if old {
        "The row before an UPDATE or DELETE."
    } else {
        "The row after a SNAPSHOT, INSERT or UPDATE; null for DELETE."
    })
}

pub fn change_reset_field() -> Field {
    Field::new("reset", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        FieldFuture::Value(change_of(&ctx).map(|c| FieldValue::value(Gql::Boolean(c.reset))))
    })
    .description("True on SNAPSHOT events that replace a since_seq older than the change log keeps: drop what you have and rebuild from them.")
}
