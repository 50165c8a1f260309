//! The GraphQL types of the schema: shared scalars and comparison inputs, and for each
//! table its object, input, enum and aggregate types (Hasura v2's shapes).

use std::sync::Arc;

use async_graphql::dynamic::{Enum, EnumItem, Field, FieldFuture, InputObject, InputValue, Object, Type, TypeRef};
use kalamdb_engine::types::ColumnType;

use crate::meta::{DELETED, SEQ, TableMeta};
use crate::resolvers::aggregate::{self, AggKind};
use crate::resolvers::{RowObj, mutation, query, scalar, subscription};
use crate::spec::FilterOp;
use crate::values::{ALL_TYPES, custom_scalars, scalar_name};

pub const ORDER_BY: &str = "order_by";
/// The values of the `order_by` enum.
pub const ORDER_DIRECTIONS: [&str; 6] = [
    "asc",
    "asc_nulls_first",
    "asc_nulls_last",
    "desc",
    "desc_nulls_first",
    "desc_nulls_last",
];
pub const IDENTITY: &str = "kalamdb_identity";
pub const CHANGE_OP: &str = "change_op";

pub fn comparison_exp(ty: ColumnType) -> String {
    format!("{}_comparison_exp", scalar_name(ty))
}

/// Types every schema has, whatever tables the role sees.
pub fn shared_types() -> Vec<Type> {
    let mut out: Vec<Type> = custom_scalars().into_iter().map(Type::from).collect();
    let mut seen = std::collections::HashSet::new();
    for ty in ALL_TYPES {
        let s = scalar_name(ty);
        if !seen.insert(s) {
            continue;
        }
        let mut input = InputObject::new(comparison_exp(ty)).description(format!(
            "Conditions on a {s} column. Several conditions in one object must all hold."
        ));
        for op in FilterOp::of_type(ty) {
            input = input.field(InputValue::new(op.name(), op.operand().type_ref(ty)));
        }
        out.push(input.into());
    }
    out.push(
        Enum::new(ORDER_BY)
            .description("Sort direction; nulls come last ascending and first descending unless stated.")
            .items(ORDER_DIRECTIONS)
            .into(),
    );
    out.push(
        Enum::new(CHANGE_OP)
            .description("What a change event reports.")
            .item(EnumItem::new("SNAPSHOT").description("A current row, sent before live changes."))
            .item(EnumItem::new("INSERT"))
            .item(EnumItem::new("UPDATE"))
            .item(EnumItem::new("DELETE"))
            .into(),
    );
    out.push(
        Object::new(IDENTITY)
            .description("Who the request runs as.")
            .field(Field::new("user_id", TypeRef::named_nn(TypeRef::STRING), |ctx| {
                FieldFuture::Value(query::identity(&ctx, false))
            }))
            .field(Field::new("role", TypeRef::named_nn(TypeRef::STRING), |ctx| {
                FieldFuture::Value(query::identity(&ctx, true))
            }))
            .into(),
    );
    out
}

fn column_type_ref(ty: ColumnType, nullable: bool) -> TypeRef {
    if nullable {
        TypeRef::named(scalar_name(ty))
    } else {
        TypeRef::named_nn(scalar_name(ty))
    }
}

/// A field of a row object that reads one column of the parent [`RowObj`].
fn row_field(name: &str, ty: TypeRef) -> Field {
    let col = name.to_string();
    Field::new(name, ty, move |ctx| {
        FieldFuture::Value(
            ctx.parent_value
                .downcast_ref::<RowObj>()
                .and_then(|r| scalar(r.get(&col))),
        )
    })
}

/// Whether the table has columns for each aggregate function's fields.
fn agg_columns(meta: &TableMeta, kind: AggKind) -> Vec<(String, ColumnType)> {
    let mut cols: Vec<(String, ColumnType)> = meta
        .columns
        .iter()
        .filter(|c| match kind {
            AggKind::Sum | AggKind::Avg => c.ty.is_numeric(),
            AggKind::Min | AggKind::Max => c.ty.is_ordered(),
        })
        .map(|c| (c.name.to_string(), c.ty))
        .collect();
    if matches!(kind, AggKind::Min | AggKind::Max) {
        cols.push((SEQ.to_string(), ColumnType::BigInt));
    }
    cols
}

/// The output type of an aggregate function over a column type.
fn agg_output(kind: AggKind, ty: ColumnType) -> TypeRef {
    match kind {
        AggKind::Sum if ty == ColumnType::Double => TypeRef::named(TypeRef::FLOAT),
        AggKind::Sum => TypeRef::named("BigInt"),
        AggKind::Avg => TypeRef::named(TypeRef::FLOAT),
        AggKind::Min | AggKind::Max => TypeRef::named(scalar_name(ty)),
    }
}

/// Every type one table contributes. Mutation inputs only when the role may write.
pub fn table_types(meta: &Arc<TableMeta>, writable: bool) -> Vec<Type> {
    let n = &meta.names;
    let mut out: Vec<Type> = Vec::new();

    // the row object
    let mut row = Object::new(&n.base).description(format!("A row of {}.", meta.id));
    for c in &meta.columns {
        row = row.field(row_field(c.name.as_str(), column_type_ref(c.ty, c.nullable)));
    }
    row = row
        .field(
            row_field(SEQ, TypeRef::named_nn("BigInt"))
                .description("The row's version: a server-wide, strictly increasing sequence number."),
        )
        .field(row_field(DELETED, TypeRef::named_nn(TypeRef::BOOLEAN)).description("True for a row just deleted."));
    out.push(row.into());

    out.push(
        Object::new(n.change())
            .description(format!("A change to a row of {}.", meta.id))
            .field(subscription::change_op_field())
            .field(subscription::change_seq_field())
            .field(subscription::change_row_field(meta, false))
            .field(subscription::change_row_field(meta, true))
            .field(subscription::change_reset_field())
            .into(),
    );

    // where
    let mut bool_exp = InputObject::new(n.bool_exp())
        .description(format!("A boolean expression over rows of {}.", meta.id))
        .field(InputValue::new("_and", TypeRef::named_nn_list(n.bool_exp())))
        .field(InputValue::new("_or", TypeRef::named_nn_list(n.bool_exp())))
        .field(InputValue::new("_not", TypeRef::named(n.bool_exp())));
    for c in &meta.columns {
        bool_exp = bool_exp.field(InputValue::new(c.name.as_str(), TypeRef::named(comparison_exp(c.ty))));
    }
    bool_exp = bool_exp.field(InputValue::new(SEQ, TypeRef::named(comparison_exp(ColumnType::BigInt))));
    out.push(bool_exp.into());

    // order_by
    let mut order = InputObject::new(n.order_by()).description(format!("Sort keys for rows of {}.", meta.id));
    for c in meta.columns.iter().filter(|c| c.ty != ColumnType::Json) {
        order = order.field(InputValue::new(c.name.as_str(), TypeRef::named(ORDER_BY)));
    }
    order = order.field(InputValue::new(SEQ, TypeRef::named(ORDER_BY)));
    out.push(order.into());

    // columns as enum values
    let column_names: Vec<String> = meta.columns.iter().map(|c| c.name.to_string()).collect();
    out.push(Enum::new(n.select_column()).items(column_names.clone()).into());

    // aggregates
    let mut fields = Object::new(n.aggregate_fields()).field(aggregate::count_field(meta));
    for kind in AggKind::ALL {
        let cols = agg_columns(meta, kind);
        if cols.is_empty() {
            continue;
        }
        let type_name = n.agg_fn_fields(kind.as_str());
        let mut obj = Object::new(&type_name);
        for (col, ty) in cols {
            obj = obj.field(aggregate::agg_value_field(&col, agg_output(kind, ty)));
        }
        out.push(obj.into());
        fields = fields.field(aggregate::agg_fn_field(kind, &type_name));
    }
    out.push(fields.into());
    let mut key = Object::new(n.group_key()).description("The values a group shares.");
    for c in &meta.columns {
        key = key.field(aggregate::group_key_field(c.name.as_str(), column_type_ref(c.ty, true)));
    }
    out.push(key.into());
    out.push(
        Object::new(n.group())
            .field(aggregate::group_keys_field(meta))
            .field(aggregate::group_aggregate_field(meta))
            .into(),
    );
    out.push(
        Object::new(n.aggregate())
            .field(aggregate::aggregate_overall_field(meta))
            .field(aggregate::aggregate_nodes_field(meta))
            .field(aggregate::aggregate_groups_field(meta))
            .into(),
    );

    if writable {
        let mut insert =
            InputObject::new(n.insert_input()).description("Columns of a new row; omitted ones take their defaults.");
        for c in &meta.columns {
            insert = insert.field(InputValue::new(c.name.as_str(), TypeRef::named(scalar_name(c.ty))));
        }
        out.push(insert.into());
        out.push(Enum::new(n.constraint()).item(n.pkey()).into());
        out.push(Enum::new(n.update_column()).items(column_names).into());
        out.push(
            InputObject::new(n.on_conflict())
                .description("What to do when a row with the same primary key exists (an upsert).")
                .field(InputValue::new("constraint", TypeRef::named_nn(n.constraint())))
                .field(
                    InputValue::new("update_columns", TypeRef::named_nn_list_nn(n.update_column()))
                        .default_value(async_graphql::Value::List(vec![])),
                )
                .into(),
        );
        let mut key = InputObject::new(n.pk_columns_input()).description("The primary key's columns.");
        for c in meta.pk_columns() {
            key = key.field(InputValue::new(c.name.as_str(), TypeRef::named_nn(scalar_name(c.ty))));
        }
        out.push(key.into());
        if meta.settable().next().is_some() {
            let mut set = InputObject::new(n.set_input()).description("Columns to assign.");
            for c in meta.settable() {
                set = set.field(InputValue::new(c.name.as_str(), TypeRef::named(scalar_name(c.ty))));
            }
            out.push(set.into());
        }
        if meta.incrementable().next().is_some() {
            let mut inc = InputObject::new(n.inc_input()).description("Numeric columns to add to.");
            for c in meta.incrementable() {
                inc = inc.field(InputValue::new(c.name.as_str(), TypeRef::named(scalar_name(c.ty))));
            }
            out.push(inc.into());
        }
        out.push(
            Object::new(n.mutation_response())
                .field(mutation::affected_rows_field())
                .field(mutation::returning_field(meta))
                .into(),
        );
    }
    out
}
