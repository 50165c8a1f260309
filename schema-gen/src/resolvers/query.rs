//! The query root: `_me`, list fields and `_by_pk` lookups.

use std::sync::Arc;

use async_graphql::Value as Gql;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, ResolverContext, TypeRef};
use futures::FutureExt;
use kalamdb_engine::context::ExecContext;
use kalamdb_engine::error::ErrorCode;
use kalamdb_engine::types::Pk;

use super::{GqlResult, OrGql, bounded_select, env, list_request, list_value, named_arg, root_field, rows_of};
use crate::errors::gql_error;
use crate::meta::TableMeta;
use crate::objects::IDENTITY;
use crate::spec::RootField;
use crate::values::from_gql;

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
    root_field(
        meta,
        RootField::List,
        TypeRef::named_nn_list_nn(&meta.names.base),
        format!("Rows of {}.", meta.id),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let req = list_request(&ctx, &env, &meta)?;
                let rows = bounded_select(&env, &meta, req).await?;
                Ok(Some(list_value(rows)))
            }
            .boxed()
        },
    )
}

/// The primary key of a row given as one value per key column (the arguments of
/// `_by_pk` and `delete_.._by_pk`, or the fields of `pk_columns`), typed.
pub(super) fn key_of<'a>(meta: &TableMeta, get: impl Fn(&str) -> Option<&'a Gql>) -> GqlResult<Pk> {
    meta.pk_columns()
        .map(|c| {
            let v = get(c.name.as_str()).ok_or_else(|| {
                gql_error(
                    ErrorCode::InvalidInput,
                    format!("the primary key's column '{}' is required", c.name),
                )
            })?;
            from_gql(c.ty, v).gql()
        })
        .collect::<GqlResult<_>>()
        .map(Pk)
}

/// The primary-key arguments of `_by_pk` and `delete_.._by_pk`, typed.
pub(super) fn pk_arg(ctx: &ResolverContext<'_>, meta: &TableMeta) -> GqlResult<Pk> {
    key_of(meta, |name| named_arg(ctx, name))
}

pub fn by_pk_field(meta: &Arc<TableMeta>) -> Field {
    root_field(
        meta,
        RootField::ByPk,
        TypeRef::named(&meta.names.base),
        format!("One row of {} by primary key.", meta.id),
        |ctx, meta| {
            async move {
                let env = env(&ctx)?;
                let pk = pk_arg(&ctx, &meta)?;
                let row = rows_of(env.engine.get_by_pk(env.exec, &meta.id, &pk).await.gql()?).pop();
                Ok(row.map(FieldValue::owned_any))
            }
            .boxed()
        },
    )
}
