//! Which index a read uses: the conditions a filter puts on single columns, the index
//! they narrow most, the entry ranges to walk, and whether walking them gives the
//! order the read asks for.

use std::collections::HashMap;
use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use kalamdb_auth::identity::UserId;

use crate::catalog::schema::{IndexDef, TableDef};
use crate::error::Result;
use crate::ids::IndexName;
use crate::index::{VALUE_TAG, after_prefix, index_prefix, push_value};
use crate::read::filter::{BoundFilter, BoundOrderKey, CmpOp, FieldRef, compare_values};
use crate::read::provider::scalar_to_key;
use crate::types::Value;

/// The most entry ranges one read walks (the product of its `IN` lists).
const MAX_RANGES: usize = 1024;

/// What the conditions of a filter allow of one column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnCond {
    Points(Vec<Value>),
    Range { lo: Bound<Value>, hi: Bound<Value> },
}

/// Conditions by column (current schema index).
pub type Conds = HashMap<usize, ColumnCond>;

fn tighter(a: Bound<Value>, b: Bound<Value>, lower: bool) -> Bound<Value> {
    let v = |x: &Bound<Value>| match x {
        Bound::Included(v) | Bound::Excluded(v) => Some(v.clone()),
        Bound::Unbounded => None,
    };
    match (v(&a), v(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(x), Some(y)) => {
            let o = compare_values(&x, &y);
            let keep_a = if lower { o.is_gt() } else { o.is_lt() };
            if o.is_eq() {
                // equal values: the excluded bound is the tighter one
                if matches!(a, Bound::Excluded(_)) { a } else { b }
            } else if keep_a {
                a
            } else {
                b
            }
        }
    }
}

fn add(conds: &mut Conds, col: usize, cond: ColumnCond) {
    match (conds.get_mut(&col), cond) {
        (None, c) => {
            conds.insert(col, c);
        }
        (Some(c @ ColumnCond::Range { .. }), p @ ColumnCond::Points(_)) => *c = p,
        (Some(ColumnCond::Range { lo, hi }), ColumnCond::Range { lo: l2, hi: h2 }) => {
            *lo = tighter(std::mem::replace(lo, Bound::Unbounded), l2, true);
            *hi = tighter(std::mem::replace(hi, Bound::Unbounded), h2, false);
        }
        // the filter is applied to every row again: one narrowing is enough
        (Some(ColumnCond::Points(_)), _) => {}
    }
}

fn cmp_cond(op: CmpOp, v: Value) -> Option<ColumnCond> {
    Some(match op {
        CmpOp::Eq => ColumnCond::Points(vec![v]),
        CmpOp::Gt => ColumnCond::Range {
            lo: Bound::Excluded(v),
            hi: Bound::Unbounded,
        },
        CmpOp::Gte => ColumnCond::Range {
            lo: Bound::Included(v),
            hi: Bound::Unbounded,
        },
        CmpOp::Lt => ColumnCond::Range {
            lo: Bound::Unbounded,
            hi: Bound::Excluded(v),
        },
        CmpOp::Lte => ColumnCond::Range {
            lo: Bound::Unbounded,
            hi: Bound::Included(v),
        },
        CmpOp::Neq => return None,
    })
}

/// The single-column conditions among a typed filter's conjuncts.
pub fn from_filter(filter: Option<&BoundFilter>) -> Conds {
    let mut conds = Conds::new();
    for c in filter.iter().flat_map(|f| f.conjuncts()) {
        match c {
            BoundFilter::Compare {
                field: FieldRef::Column(i),
                op,
                value,
                ..
            } if !value.is_null() => {
                if let Some(cond) = cmp_cond(*op, value.clone()) {
                    add(&mut conds, *i, cond);
                }
            }
            BoundFilter::In {
                field: FieldRef::Column(i),
                values,
                negated: false,
                ..
            } => {
                let vs: Vec<Value> = values.iter().filter(|v| !v.is_null()).cloned().collect();
                add(&mut conds, *i, ColumnCond::Points(vs));
            }
            _ => {}
        }
    }
    conds
}

/// The single-column conditions among the filters DataFusion pushes into a scan.
pub fn from_exprs(table: &TableDef, filters: &[Expr]) -> Conds {
    let schema = table.current();
    let column = |e: &Expr| match e {
        Expr::Column(c) => schema.column_index(&c.name),
        _ => None,
    };
    // `c = x OR c = y` (DataFusion's form of a short IN list): the points of `c`
    fn or_points(e: &Expr, out: &mut Vec<(String, ScalarValue)>) -> bool {
        match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => or_points(left, out) && or_points(right, out),
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                    out.push((c.name.clone(), v.clone()));
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }
    let mut conds = Conds::new();
    for f in filters {
        match f {
            Expr::BinaryExpr(BinaryExpr { op: Operator::Or, .. }) => {
                let mut points = vec![];
                if !or_points(f, &mut points) {
                    continue;
                }
                let Some(i) = points.first().and_then(|(c, _)| schema.column_index(c)) else {
                    continue;
                };
                if points.iter().any(|(c, _)| *c != schema.columns[i].name.as_str()) {
                    continue;
                }
                let ty = schema.columns[i].ty;
                let vs: Option<Vec<Value>> = points
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(_, v)| scalar_to_key(ty, v))
                    .collect();
                if let Some(vs) = vs {
                    add(&mut conds, i, ColumnCond::Points(vs));
                }
            }
            Expr::InList(list) if !list.negated => {
                let Some(i) = column(&list.expr) else { continue };
                let ty = schema.columns[i].ty;
                let vs: Option<Vec<Value>> = list
                    .list
                    .iter()
                    .map(|e| match e {
                        Expr::Literal(s, _) if !s.is_null() => scalar_to_key(ty, s),
                        _ => None,
                    })
                    .collect();
                if let Some(vs) = vs {
                    add(&mut conds, i, ColumnCond::Points(vs));
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (i, op, lit) = match (column(left), right.as_ref(), column(right), left.as_ref()) {
                    (Some(i), Expr::Literal(v, _), _, _) => (i, *op, v),
                    (_, _, Some(i), Expr::Literal(v, _)) => match op.swap() {
                        Some(op) => (i, op, v),
                        None => continue,
                    },
                    _ => continue,
                };
                let Some(v) = scalar_to_key(schema.columns[i].ty, lit) else {
                    continue;
                };
                let op = match op {
                    Operator::Eq => CmpOp::Eq,
                    Operator::Gt => CmpOp::Gt,
                    Operator::GtEq => CmpOp::Gte,
                    Operator::Lt => CmpOp::Lt,
                    Operator::LtEq => CmpOp::Lte,
                    _ => continue,
                };
                if let Some(c) = cmp_cond(op, v) {
                    add(&mut conds, i, c);
                }
            }
            _ => {}
        }
    }
    conds
}

/// Whether the index ranges of `choice` select exactly the rows `filter` matches: every
/// conjunct is a condition on a column the ranges apply, and a column with an equality
/// or `IN` has no other condition (ranges on one column merge exactly).
pub fn fully_covered(filter: &BoundFilter, choice: &IndexChoice) -> bool {
    let mut points: HashMap<usize, usize> = HashMap::new();
    let mut ranges: HashMap<usize, usize> = HashMap::new();
    for c in filter.conjuncts() {
        match c {
            BoundFilter::Compare {
                field: FieldRef::Column(i),
                op,
                value,
                ..
            } if *op != CmpOp::Neq && !value.is_null() && choice.used.contains(i) => {
                let kind = if *op == CmpOp::Eq { &mut points } else { &mut ranges };
                *kind.entry(*i).or_default() += 1;
            }
            BoundFilter::In {
                field: FieldRef::Column(i),
                negated: false,
                ..
            } if choice.used.contains(i) => *points.entry(*i).or_default() += 1,
            _ => return false,
        }
    }
    points.iter().all(|(c, n)| *n == 1 && !ranges.contains_key(c))
}

/// The entry range of one column's values within `prefix`.
fn range_bytes(prefix: &[u8], lo: &Bound<Value>, hi: &Bound<Value>, desc: bool) -> Result<(Vec<u8>, Vec<u8>)> {
    let with = |v: &Value| -> Result<Vec<u8>> {
        let mut k = prefix.to_vec();
        push_value(&mut k, v, desc)?;
        Ok(k)
    };
    let mut any = prefix.to_vec();
    any.push(if desc { !VALUE_TAG } else { VALUE_TAG });
    // a descending column's bytes run from its highest value to its lowest
    let (low, high) = if desc { (hi, lo) } else { (lo, hi) };
    let lower = match low {
        Bound::Unbounded => any.clone(),
        Bound::Included(v) => with(v)?,
        Bound::Excluded(v) => after_prefix(&with(v)?),
    };
    let upper = match high {
        Bound::Unbounded => after_prefix(&any),
        Bound::Included(v) => after_prefix(&with(v)?),
        Bound::Excluded(v) => with(v)?,
    };
    Ok((lower, upper))
}

/// How walking an index's entries orders the rows.
#[derive(Debug, Clone)]
pub struct OrderWalk {
    /// Walk backwards.
    pub reverse: bool,
    /// The leading sort keys the walk yields in order (rows that tie on them are
    /// ordered by the rest afterwards).
    pub keys: Vec<BoundOrderKey>,
    /// The walk yields the whole order.
    pub exact: bool,
}

/// An index read: the entry ranges to walk, in order.
#[derive(Debug, Clone)]
pub struct IndexChoice {
    pub name: IndexName,
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether conditions narrow the walk (otherwise it only gives the order).
    pub narrowed: bool,
    /// The columns whose conditions the ranges apply.
    pub used: Vec<usize>,
    pub order: Option<OrderWalk>,
}

/// Whether walking the index after its `fixed` leading columns gives the requested
/// order, and how much of it.
fn order_walk(
    table: &TableDef,
    index: &IndexDef,
    cols: &[usize],
    fixed: &[usize],
    order: &[BoundOrderKey],
) -> Option<OrderWalk> {
    let pk = &table.current().pk;
    let mut seq: Vec<(usize, bool)> = cols
        .iter()
        .zip(&index.columns)
        .skip(fixed.len())
        .map(|(c, ic)| (*c, ic.descending))
        .collect();
    // entries of equal values follow in key order
    seq.extend(pk.iter().map(|&c| (c, false)));
    // order keys on columns one value fixes change nothing
    let keys: Vec<&BoundOrderKey> = order
        .iter()
        .filter(|k| !matches!(k.field, FieldRef::Column(c) if fixed.contains(&c)))
        .collect();
    let mut reverse = None;
    let mut matched: Vec<BoundOrderKey> = vec![];
    let mut exact = false;
    for (k, (col, desc)) in keys.iter().zip(&seq) {
        if k.field != FieldRef::Column(*col) {
            break;
        }
        let rev = k.descending != *desc;
        // forward, a column stored ascending yields its NULLs last; backwards, first
        let nulls_first = *desc != rev;
        let key_col = pk.contains(col);
        if reverse.is_some_and(|r| r != rev) || (!key_col && k.nulls_first != nulls_first) {
            break;
        }
        reverse = Some(rev);
        matched.push(**k);
        let known = |c: &usize| fixed.contains(c) || matched.iter().any(|m| m.field == FieldRef::Column(*c));
        if key_col && pk.iter().all(known) {
            // the whole key is unique: nothing after it can reorder rows
            exact = true;
            break;
        }
    }
    if matched.is_empty() {
        return None;
    }
    exact |= matched.len() == keys.len();
    Some(OrderWalk {
        reverse: reverse.unwrap_or(false),
        keys: matched,
        exact,
    })
}

/// The ready index that narrows a read most (equalities on more leading columns, then
/// a range), or, with no narrowing one, one whose order the read asks for when it has
/// a limit and no filter to pass over rows with.
pub fn choose(
    table: &TableDef,
    user: Option<&UserId>,
    conds: &Conds,
    order: &[BoundOrderKey],
    ordered_walk_allowed: bool,
) -> Result<Option<IndexChoice>> {
    let mut best: Option<(usize, IndexChoice)> = None;
    for index in table.ready_indexes() {
        let cols = table.index_columns(index)?;
        let mut prefixes = vec![index_prefix(index.id, user)];
        let mut fixed: Vec<usize> = vec![];
        let mut single = true;
        let mut i = 0;
        while i < cols.len() {
            let Some(ColumnCond::Points(vs)) = conds.get(&cols[i]) else {
                break;
            };
            if prefixes.len().saturating_mul(vs.len()) > MAX_RANGES {
                break;
            }
            let desc = index.columns[i].descending;
            let mut next = Vec::with_capacity(prefixes.len() * vs.len());
            for p in &prefixes {
                for v in vs {
                    let mut k = p.clone();
                    push_value(&mut k, v, desc)?;
                    next.push(k);
                }
            }
            prefixes = next;
            if vs.len() == 1 && single {
                fixed.push(cols[i]);
            } else {
                single = false;
            }
            i += 1;
        }
        let mut score = i * 2;
        let mut used = cols[..i].to_vec();
        let mut ranges = Vec::with_capacity(prefixes.len());
        match cols.get(i).and_then(|c| conds.get(c)) {
            Some(ColumnCond::Range { lo, hi }) => {
                score += 1;
                used.push(cols[i]);
                for p in &prefixes {
                    ranges.push(range_bytes(p, lo, hi, index.columns[i].descending)?);
                }
            }
            _ => ranges.extend(prefixes.iter().map(|p| (p.clone(), after_prefix(p)))),
        }
        ranges.retain(|(lo, hi)| lo < hi);
        ranges.sort();
        ranges.dedup();
        let walk = order_walk(table, index, &cols, &fixed, order);
        if score == 0 && !(ordered_walk_allowed && walk.is_some()) {
            continue;
        }
        // a walk in the requested order lets a limited read stop early
        let narrows = score > 0;
        let score = score * 2 + walk.is_some() as usize;
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((
                score,
                IndexChoice {
                    name: index.name.clone(),
                    ranges,
                    narrowed: narrows,
                    used,
                    order: walk,
                },
            ));
        }
    }
    Ok(best.map(|(_, c)| c))
}
