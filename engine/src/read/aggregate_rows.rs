//! Aggregates over rows already in memory: the path of typed aggregates whose filter
//! an index narrows to a few rows, where planning a DataFusion query would cost more
//! than the work. The results are those DataFusion gives (a differential test holds
//! the two paths to the same answers).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::engine::Row;
use crate::read::filter::{FieldRef, compare_values};
use crate::read::select::{AggFn, AggregateGroup};
use crate::types::{ColumnType, Value};

/// One aggregate: its function, its column (none for `count(*)`) and the column type.
pub struct AggSpec {
    pub func: AggFn,
    pub field: Option<FieldRef>,
    pub ty: ColumnType,
}

/// A group key ordered as the aggregate results are: by value, nulls last.
#[derive(PartialEq)]
struct GroupKey(Vec<Value>);

impl Eq for GroupKey {}

impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| compare_values(a, b))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

fn value_of(field: FieldRef, row: &Row) -> Value {
    field.get(row.0, &row.1).into_owned()
}

/// One aggregate over one group's rows; `None` when DataFusion must answer (an
/// integer sum that overflows).
fn compute(spec: &AggSpec, rows: &[&Row]) -> Option<Value> {
    let values = || {
        rows.iter()
            .filter_map(move |r| spec.field.map(|f| value_of(f, r)))
            .filter(|v| !v.is_null())
    };
    Some(match spec.func {
        AggFn::Count => match spec.field {
            None => Value::BigInt(rows.len() as i64),
            Some(_) => Value::BigInt(values().count() as i64),
        },
        AggFn::CountDistinct => {
            let mut seen: Vec<Value> = values().collect();
            seen.sort_by(compare_values);
            seen.dedup_by(|a, b| compare_values(a, b).is_eq());
            Value::BigInt(seen.len() as i64)
        }
        AggFn::Sum if spec.ty == ColumnType::Double => {
            let vs: Vec<f64> = values().filter_map(|v| v.as_f64()).collect();
            if vs.is_empty() {
                Value::Null
            } else {
                Value::Double(vs.iter().sum())
            }
        }
        AggFn::Sum => {
            let mut total: Option<i64> = None;
            for v in values() {
                let n = v.as_i64()?;
                total = Some(total.unwrap_or(0).checked_add(n)?);
            }
            total.map_or(Value::Null, Value::BigInt)
        }
        AggFn::Avg => {
            let vs: Vec<f64> = values().filter_map(|v| v.as_f64()).collect();
            if vs.is_empty() {
                Value::Null
            } else {
                Value::Double(vs.iter().sum::<f64>() / vs.len() as f64)
            }
        }
        AggFn::Min => values().min_by(compare_values).unwrap_or(Value::Null),
        AggFn::Max => values().max_by(compare_values).unwrap_or(Value::Null),
    })
}

/// The groups of `rows` by `group_by`, each with its aggregates, ordered by key; one
/// group (possibly of no rows) without `group_by`.
pub fn aggregate_rows(rows: &[Row], group_by: &[FieldRef], specs: &[AggSpec]) -> Option<Vec<AggregateGroup>> {
    let mut groups: BTreeMap<GroupKey, Vec<&Row>> = BTreeMap::new();
    if group_by.is_empty() {
        groups.insert(GroupKey(vec![]), rows.iter().collect());
    } else {
        for r in rows {
            let key = GroupKey(group_by.iter().map(|f| value_of(*f, r)).collect());
            groups.entry(key).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|(key, rows)| {
            let values = specs.iter().map(|s| compute(s, &rows)).collect::<Option<Vec<_>>>()?;
            Some(AggregateGroup { keys: key.0, values })
        })
        .collect()
}
