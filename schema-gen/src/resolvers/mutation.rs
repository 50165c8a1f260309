//! The mutation root: inserts (with upserts), updates and deletes.

use std::sync::Arc;

use async_graphql::Value as Gql;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, TypeRef};
use futures::FutureExt;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::engine::Engine;
use kalamdb_engine::error::ErrorCode;
use kalamdb_engine::write::mutate::ConflictAction;

use super::query::pk_arg;
use super::{GqlResult, OrGql, RowObj, arg, changed_rows, env, filter_arg, root_field};
use crate::errors::gql_error;
use crate::inputs;
use crate::meta::TableMeta;
use crate::spec::{Arg, RootField};

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

fn mutation_result(rows: Vec<RowObj>) -> Option<FieldValue<'static>> {
    Some(FieldValue::owned_any(MutationResult { rows }))
}

pub fn insert_field(meta: &Arc<TableMeta>) -> Field {
    root_field(
        meta,
        RootField::Insert,
        TypeRef::named(meta.names.mutation_response()),
        format!("Inserts rows into {}, all or none.", meta.id),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let objects = match arg(&ctx, Arg::Objects) {
                    Some(Gql::List(items)) => items
                        .iter()
                        .map(|o| inputs::insert_object(&meta, o))
                        .collect::<Result<Vec<_>, _>>()
                        .gql()?,
                    _ => return Err(gql_error(ErrorCode::InvalidInput, "objects must be a list")),
                };
                let action = conflict_action(&meta, arg(&ctx, Arg::OnConflict))?;
                let changes = env.engine.insert(env.exec, &meta.id, objects, action).await.gql()?;
                Ok(mutation_result(changed_rows(changes)))
            }
            .boxed()
        },
    )
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
    root_field(
        meta,
        RootField::InsertOne,
        TypeRef::named(&meta.names.base),
        format!("Inserts one row into {}.", meta.id),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let object = arg(&ctx, Arg::Object);
                let row = insert_one(env.engine, env.exec, &meta, object, arg(&ctx, Arg::OnConflict)).await?;
                Ok(row.map(FieldValue::owned_any))
            }
            .boxed()
        },
    )
}

pub fn update_field(meta: &Arc<TableMeta>) -> Field {
    root_field(
        meta,
        RootField::Update,
        TypeRef::named(meta.names.mutation_response()),
        format!("Updates the rows of {} that match where.", meta.id),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let filter = filter_arg(&ctx, env.engine, &meta)?
                    .ok_or_else(|| gql_error(ErrorCode::InvalidInput, "where is required"))?;
                let set = inputs::assignments(&meta, arg(&ctx, Arg::Set), arg(&ctx, Arg::Inc)).gql()?;
                let changes = env.engine.update_where(env.exec, &meta.id, &filter, &set).await.gql()?;
                Ok(mutation_result(changed_rows(changes)))
            }
            .boxed()
        },
    )
}

pub fn update_by_pk_field(meta: &Arc<TableMeta>) -> Field {
    root_field(
        meta,
        RootField::UpdateByPk,
        TypeRef::named(&meta.names.base),
        format!(
            "Updates one row of {} by primary key; null when there is none.",
            meta.id
        ),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let Some(Gql::Object(key)) = arg(&ctx, Arg::PkColumns) else {
                    return Err(gql_error(ErrorCode::InvalidInput, "pk_columns is required"));
                };
                let pk = super::query::key_of(&meta, |name| key.get(name))?;
                let set = inputs::assignments(&meta, arg(&ctx, Arg::Set), arg(&ctx, Arg::Inc)).gql()?;
                let changes = env.engine.update_by_pk(env.exec, &meta.id, &pk, &set).await.gql()?;
                Ok(changed_rows(changes).pop().map(FieldValue::owned_any))
            }
            .boxed()
        },
    )
}

pub fn delete_field(meta: &Arc<TableMeta>) -> Field {
    root_field(
        meta,
        RootField::Delete,
        TypeRef::named(meta.names.mutation_response()),
        format!("Deletes the rows of {} that match where.", meta.id),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let filter = filter_arg(&ctx, env.engine, &meta)?
                    .ok_or_else(|| gql_error(ErrorCode::InvalidInput, "where is required"))?;
                let changes = env.engine.delete_where(env.exec, &meta.id, &filter).await.gql()?;
                Ok(mutation_result(changed_rows(changes)))
            }
            .boxed()
        },
    )
}

pub fn delete_by_pk_field(meta: &Arc<TableMeta>) -> Field {
    root_field(
        meta,
        RootField::DeleteByPk,
        TypeRef::named(&meta.names.base),
        format!(
            "Deletes one row of {} by primary key; null when there is none.",
            meta.id
        ),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let pk = pk_arg(&ctx, &meta)?;
                let changes = env.engine.delete_by_pk(env.exec, &meta.id, &pk).await.gql()?;
                Ok(changed_rows(changes).pop().map(FieldValue::owned_any))
            }
            .boxed()
        },
    )
}
