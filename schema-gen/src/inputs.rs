//! GraphQL input objects to the engine's typed requests: `where` to a [`Filter`],
//! `order_by` to sort keys, insert objects and `_set` / `_inc` to typed values.

use async_graphql::{Name, Value as Gql};
use kalamdb_engine::error::{EngineError, Result};
use kalamdb_engine::ids::ColumnName;
use kalamdb_engine::read::filter::{Filter, FilterLimits, OrderKey};
use kalamdb_engine::types::{ColumnType, Value};
use kalamdb_engine::write::mutate::Assign;

use crate::meta::TableMeta;
use crate::spec::FilterOp;
use crate::values::from_gql;

fn object<'a>(v: &'a Gql, what: &str) -> Result<&'a async_graphql::indexmap::IndexMap<Name, Gql>> {
    match v {
        Gql::Object(m) => Ok(m),
        _ => Err(EngineError::InvalidInput(format!("{what} must be an object"))),
    }
}

/// A list input, with GraphQL's input coercion of a single value to a list of one.
fn list(v: &Gql) -> Vec<&Gql> {
    match v {
        Gql::List(items) => items.iter().collect(),
        Gql::Null => vec![],
        other => vec![other],
    }
}

fn unknown_column(meta: &TableMeta, name: &str) -> EngineError {
    EngineError::ColumnNotFound {
        table: meta.id.to_string(),
        column: name.to_string(),
    }
}

/// Parses a `<t>_bool_exp` value. Nesting is bounded before recursing further.
pub fn bool_exp(meta: &TableMeta, v: &Gql, limits: FilterLimits) -> Result<Filter> {
    bool_exp_at(meta, v, limits, 1)
}

fn bool_exp_at(meta: &TableMeta, v: &Gql, limits: FilterLimits, depth: usize) -> Result<Filter> {
    if depth > limits.max_depth {
        return Err(EngineError::FilterTooComplex(format!(
            "'where' is nested more than {} levels deep",
            limits.max_depth
        )));
    }
    let mut parts = Vec::new();
    for (key, value) in object(v, "where")? {
        if *value == Gql::Null {
            continue;
        }
        match key.as_str() {
            "_and" | "_or" => {
                let items = list(value)
                    .into_iter()
                    .map(|i| bool_exp_at(meta, i, limits, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                parts.push(if key.as_str() == "_and" {
                    Filter::And(items)
                } else {
                    Filter::Or(items)
                });
            }
            "_not" => parts.push(Filter::Not(Box::new(bool_exp_at(meta, value, limits, depth + 1)?))),
            col => {
                let (column, ty) = meta.filterable(col).ok_or_else(|| unknown_column(meta, col))?;
                comparison(&column, ty, value, &mut parts)?;
            }
        }
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap_or(Filter::And(vec![]))
    } else {
        Filter::And(parts)
    })
}

fn comparison(column: &ColumnName, ty: ColumnType, v: &Gql, out: &mut Vec<Filter>) -> Result<()> {
    for (name, value) in object(v, "a comparison")? {
        let op = FilterOp::from_name(name.as_str())
            .ok_or_else(|| EngineError::InvalidInput(format!("unknown operator {name}")))?;
        out.extend(op.to_filter(column, ty, value)?);
    }
    Ok(())
}

/// Parses `order_by: [<t>_order_by!]`; keys of one object count in the order given.
pub fn order_by(meta: &TableMeta, v: &Gql) -> Result<Vec<OrderKey>> {
    let mut keys = Vec::new();
    for item in list(v) {
        for (col, dir) in object(item, "order_by")? {
            if *dir == Gql::Null {
                continue;
            }
            let (column, _) = meta
                .filterable(col.as_str())
                .ok_or_else(|| unknown_column(meta, col.as_str()))?;
            let Gql::Enum(dir) = dir else {
                return Err(EngineError::InvalidInput("order_by takes asc or desc values".into()));
            };
            let (descending, nulls_first) = match dir.as_str() {
                "asc" => (false, None),
                "asc_nulls_first" => (false, Some(true)),
                "asc_nulls_last" => (false, Some(false)),
                "desc" => (true, None),
                "desc_nulls_first" => (true, Some(true)),
                "desc_nulls_last" => (true, Some(false)),
                other => return Err(EngineError::InvalidInput(format!("unknown order {other}"))),
            };
            keys.push(OrderKey {
                column,
                descending,
                nulls_first,
            });
        }
    }
    Ok(keys)
}

/// One `<t>_insert_input` as `(column, value)` pairs; omitted columns take defaults.
pub fn insert_object(meta: &TableMeta, v: &Gql) -> Result<Vec<(ColumnName, Value)>> {
    object(v, "an insert object")?
        .iter()
        .map(|(k, v)| {
            let col = meta
                .column(k.as_str())
                .ok_or_else(|| unknown_column(meta, k.as_str()))?;
            Ok((col.name.clone(), from_gql(col.ty, v)?))
        })
        .collect()
}

/// `_set` and `_inc` as assignments.
pub fn assignments(meta: &TableMeta, set: Option<&Gql>, inc: Option<&Gql>) -> Result<Vec<(ColumnName, Assign)>> {
    let mut out = Vec::new();
    for (arg, is_inc) in [(set, false), (inc, true)] {
        let Some(v) = arg.filter(|v| **v != Gql::Null) else {
            continue;
        };
        for (k, v) in object(v, if is_inc { "_inc" } else { "_set" })? {
            let col = meta
                .column(k.as_str())
                .ok_or_else(|| unknown_column(meta, k.as_str()))?;
            let value = from_gql(col.ty, v)?;
            out.push((
                col.name.clone(),
                if is_inc { Assign::Inc(value) } else { Assign::Set(value) },
            ));
        }
    }
    if out.is_empty() {
        return Err(EngineError::InvalidInput("nothing to update: give _set or _inc".into()));
    }
    Ok(out)
}

/// The columns a list of `<t>_select_column` / `<t>_update_column` values names.
pub fn column_list(meta: &TableMeta, v: &Gql) -> Result<Vec<ColumnName>> {
    list(v)
        .into_iter()
        .map(|item| match item {
            Gql::Enum(n) => meta
                .column(n.as_str())
                .map(|c| c.name.clone())
                .ok_or_else(|| unknown_column(meta, n.as_str())),
            _ => Err(EngineError::InvalidInput("expected a column name".into())),
        })
        .collect()
}
