//! `<t>_aggregate`: counts, sums, averages, minima and maxima, overall and per group.

use std::sync::Arc;

use async_graphql::Value as Gql;
use async_graphql::context::SelectionField;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, ResolverContext, TypeRef};
use futures::FutureExt;
use kalamdb_engine::error::{EngineError, ErrorCode};
use kalamdb_engine::ids::ColumnName;
use kalamdb_engine::read::filter::Filter;
use kalamdb_engine::read::select::{AggFn, Aggregate, AggregateRequest, SelectRequest};
use kalamdb_engine::types::Value;

use super::{Env, GqlResult, OrGql, arg, bounded_select, env, filter_arg, list_value, named_arg, root_field, scalar};
use crate::errors::{engine_error, gql_error};
use crate::inputs;
use crate::meta::TableMeta;
use crate::spec::{Arg, RootField};
use crate::values::to_gql;

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
pub(super) struct AggParent {
    meta: Arc<TableMeta>,
    pub filter: Option<Filter>,
    group_by: Vec<ColumnName>,
}

/// The arguments of a `<t>_aggregate` root field (query or subscription).
pub(super) fn aggregate_parent(
    ctx: &ResolverContext<'_>,
    env: &Env<'_>,
    meta: &Arc<TableMeta>,
) -> GqlResult<AggParent> {
    let filter = filter_arg(ctx, env.engine, meta)?;
    let group_by = arg(ctx, Arg::GroupBy)
        .map(|g| inputs::column_list(meta, g))
        .transpose()
        .gql()?
        .unwrap_or_default();
    Ok(AggParent {
        meta: meta.clone(),
        filter,
        group_by,
    })
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
    root_field(
        meta,
        RootField::Aggregate,
        TypeRef::named_nn(meta.names.aggregate()),
        format!(
            "Aggregates over rows of {}; with group_by, `groups` holds one entry per distinct key.",
            meta.id
        ),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                Ok(Some(FieldValue::owned_any(aggregate_parent(&ctx, &env, &meta)?)))
            }
            .boxed()
        },
    )
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
            let distinct = matches!(named_arg(&ctx, "distinct"), Some(Gql::Boolean(true)));
            let spec = count_spec(&meta, named_arg(&ctx, "columns"), distinct).gql()?;
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
