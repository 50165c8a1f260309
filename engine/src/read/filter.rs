//! Typed row filters and sort keys: what GraphQL `where` and `order_by` become. A
//! [`Filter`] names columns and carries typed values; it is bound once against a table's
//! current schema ([`BoundFilter`]) and then either evaluated on rows in memory (the
//! direct read path, live queries) or turned into a DataFusion expression. Both follow
//! SQL's three-valued logic, so they select the same rows.

use std::borrow::Cow;
use std::cmp::Ordering;

use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::{BinaryExpr, InList, Like};
use datafusion::logical_expr::{Expr, Operator, SortExpr, lit};
use kalamdb_storage::seq::Seq;

use crate::catalog::schema::TableDef;
use crate::error::{EngineError, Result};
use crate::ids::ColumnName;
use crate::read::arrow_convert::{DELETED_COLUMN, SEQ_COLUMN};
use crate::read::pattern::{Matcher, PatternKind, TextPattern};
use crate::types::{ColumnType, TIMESTAMP_TZ, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A boolean expression over one table's columns (and `_seq`, `_deleted`).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        column: ColumnName,
        op: CmpOp,
        value: Value,
    },
    In {
        column: ColumnName,
        values: Vec<Value>,
        negated: bool,
    },
    IsNull {
        column: ColumnName,
        is_null: bool,
    },
    /// A text column against a LIKE pattern or a regular expression.
    Match {
        column: ColumnName,
        pattern: TextPattern,
        negated: bool,
    },
}

/// Bounds on the size of a filter, so that a hostile `where` cannot exhaust the stack
/// or the CPU.
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    pub max_depth: usize,
    pub max_nodes: usize,
}

/// A column of a row as the read API sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef {
    /// A column of the current schema, by index.
    Column(usize),
    Seq,
    Deleted,
}

impl FieldRef {
    /// Resolves a name against the table's current schema.
    pub fn resolve(table: &TableDef, name: &ColumnName) -> Result<(FieldRef, ColumnType)> {
        match name.as_str() {
            SEQ_COLUMN => Ok((FieldRef::Seq, ColumnType::BigInt)),
            DELETED_COLUMN => Ok((FieldRef::Deleted, ColumnType::Boolean)),
            n => {
                let schema = table.current();
                let i = schema.column_index(n).ok_or_else(|| EngineError::ColumnNotFound {
                    table: table.id.to_string(),
                    column: n.to_string(),
                })?;
                Ok((FieldRef::Column(i), schema.columns[i].ty))
            }
        }
    }

    /// The field's value in a visible row.
    #[inline]
    pub fn get<'a>(self, seq: Seq, values: &'a [Value]) -> Cow<'a, Value> {
        match self {
            FieldRef::Column(i) => values.get(i).map_or(Cow::Owned(Value::Null), Cow::Borrowed),
            FieldRef::Seq => Cow::Owned(Value::BigInt(seq.as_i64())),
            FieldRef::Deleted => Cow::Owned(Value::Boolean(false)),
        }
    }

    pub fn name(self, table: &TableDef) -> &str {
        match self {
            FieldRef::Column(i) => table.current().columns[i].name.as_str(),
            FieldRef::Seq => SEQ_COLUMN,
            FieldRef::Deleted => DELETED_COLUMN,
        }
    }

    pub fn df_column(self, table: &TableDef) -> Expr {
        Expr::Column(Column::new_unqualified(self.name(table)))
    }
}

/// A filter resolved against one schema version: column indexes and values of the
/// columns' types.
#[derive(Debug, Clone, PartialEq)]
pub enum BoundFilter {
    And(Vec<BoundFilter>),
    Or(Vec<BoundFilter>),
    Not(Box<BoundFilter>),
    Compare {
        field: FieldRef,
        ty: ColumnType,
        op: CmpOp,
        value: Value,
    },
    In {
        field: FieldRef,
        ty: ColumnType,
        values: Vec<Value>,
        negated: bool,
    },
    IsNull {
        field: FieldRef,
        is_null: bool,
    },
    Match {
        field: FieldRef,
        pattern: TextPattern,
        matcher: Matcher,
        negated: bool,
    },
}

fn typed(column: &ColumnName, ty: ColumnType, v: &Value) -> Result<Value> {
    if v.is_null() {
        return Err(EngineError::InvalidInput(format!(
            "a comparison on '{column}' needs a value; use _is_null to test for null"
        )));
    }
    v.clone().coerce(ty).map_err(|e| match e {
        EngineError::TypeMismatch(m) => EngineError::TypeMismatch(format!("column '{column}': {m}")),
        other => other,
    })
}

impl Filter {
    /// Resolves names and converts values to the columns' types, enforcing `limits`.
    pub fn bind(&self, table: &TableDef, limits: FilterLimits) -> Result<BoundFilter> {
        let mut nodes = 0usize;
        self.bind_at(table, limits, 1, &mut nodes)
    }

    fn bind_at(&self, table: &TableDef, limits: FilterLimits, depth: usize, nodes: &mut usize) -> Result<BoundFilter> {
        *nodes += 1;
        if depth > limits.max_depth {
            return Err(EngineError::FilterTooComplex(format!(
                "the filter is nested more than {} levels deep",
                limits.max_depth
            )));
        }
        if *nodes > limits.max_nodes {
            return Err(EngineError::FilterTooComplex(format!(
                "the filter has more than {} conditions",
                limits.max_nodes
            )));
        }
        let list = |fs: &[Filter], nodes: &mut usize| -> Result<Vec<BoundFilter>> {
            fs.iter().map(|f| f.bind_at(table, limits, depth + 1, nodes)).collect()
        };
        Ok(match self {
            Filter::And(fs) => BoundFilter::And(list(fs, nodes)?),
            Filter::Or(fs) => BoundFilter::Or(list(fs, nodes)?),
            Filter::Not(f) => BoundFilter::Not(Box::new(f.bind_at(table, limits, depth + 1, nodes)?)),
            Filter::Compare { column, op, value } => {
                let (field, ty) = FieldRef::resolve(table, column)?;
                BoundFilter::Compare {
                    field,
                    ty,
                    op: *op,
                    value: typed(column, ty, value)?,
                }
            }
            Filter::In {
                column,
                values,
                negated,
            } => {
                let (field, ty) = FieldRef::resolve(table, column)?;
                *nodes += values.len();
                if *nodes > limits.max_nodes {
                    return Err(EngineError::FilterTooComplex(format!(
                        "the filter has more than {} values",
                        limits.max_nodes
                    )));
                }
                BoundFilter::In {
                    field,
                    ty,
                    values: values.iter().map(|v| typed(column, ty, v)).collect::<Result<_>>()?,
                    negated: *negated,
                }
            }
            Filter::IsNull { column, is_null } => BoundFilter::IsNull {
                field: FieldRef::resolve(table, column)?.0,
                is_null: *is_null,
            },
            Filter::Match {
                column,
                pattern,
                negated,
            } => {
                let (field, ty) = FieldRef::resolve(table, column)?;
                if ty != ColumnType::Text {
                    let what = match pattern.kind {
                        PatternKind::Like => "LIKE",
                        PatternKind::Regex => "a regular expression",
                    };
                    return Err(EngineError::TypeMismatch(format!(
                        "{what} needs a TEXT column; '{column}' is {ty}"
                    )));
                }
                BoundFilter::Match {
                    field,
                    matcher: Matcher::new(pattern)?,
                    pattern: pattern.clone(),
                    negated: *negated,
                }
            }
        })
    }
}

/// Orders two non-null values of one column type as PostgreSQL does (-0.0 and 0.0 are
/// one value; text and bytes bytewise).
#[inline]
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::BigInt(x), Value::BigInt(y)) => x.cmp(y),
        // adding 0.0 turns -0.0 into 0.0 and leaves every other value as it is
        (Value::Double(x), Value::Double(y)) => (x + 0.0).total_cmp(&(y + 0.0)),
        (Value::Text(x), Value::Text(y)) | (Value::Json(x), Value::Json(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        // values of one column share a type; order mixed ones by type for totality
        (x, y) => x.type_name().cmp(y.type_name()),
    }
}

fn and3(items: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in items {
        match v {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

fn or3(items: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in items {
        match v {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    if unknown { None } else { Some(false) }
}

/// The DataFusion literal of a typed value.
pub fn scalar_of(v: &Value, ty: ColumnType) -> ScalarValue {
    match v {
        Value::Null => ScalarValue::try_from(&ty.arrow_type()).unwrap_or(ScalarValue::Null),
        Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        Value::Int(i) => ScalarValue::Int32(Some(*i)),
        Value::BigInt(i) => ScalarValue::Int64(Some(*i)),
        Value::Double(d) => ScalarValue::Float64(Some(*d + 0.0)),
        Value::Text(s) | Value::Json(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Timestamp(t) => ScalarValue::TimestampMicrosecond(Some(*t), Some(TIMESTAMP_TZ.into())),
        Value::Date(d) => ScalarValue::Date32(Some(*d)),
        Value::Uuid(u) => ScalarValue::Utf8(Some(uuid::Uuid::from_bytes(*u).to_string())),
        Value::Bytes(b) => ScalarValue::Binary(Some(b.clone())),
    }
}

/// Joins `items` pairwise into a tree of depth log2(n), or `None` for none.
fn balanced(mut items: Vec<Expr>, join: &dyn Fn(Expr, Expr) -> Expr) -> Option<Expr> {
    while items.len() > 1 {
        let mut next = Vec::with_capacity(items.len().div_ceil(2));
        let mut it = items.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => join(a, b),
                None => a,
            });
        }
        items = next;
    }
    items.pop()
}

impl BoundFilter {
    /// Evaluates the filter on one row: `Some(true)` keeps it; `None` is SQL's unknown.
    pub fn eval(&self, seq: Seq, values: &[Value]) -> Option<bool> {
        match self {
            BoundFilter::And(fs) => and3(fs.iter().map(|f| f.eval(seq, values))),
            BoundFilter::Or(fs) => or3(fs.iter().map(|f| f.eval(seq, values))),
            BoundFilter::Not(f) => f.eval(seq, values).map(|b| !b),
            BoundFilter::Compare { field, op, value, .. } => {
                // a column is compared in place; `_seq` and `_deleted` are made values
                let ord = match field {
                    FieldRef::Column(i) => match values.get(*i) {
                        None | Some(Value::Null) => return None,
                        Some(v) => compare_values(v, value),
                    },
                    f => compare_values(&f.get(seq, values), value),
                };
                Some(match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Neq => ord != Ordering::Equal,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Gte => ord != Ordering::Less,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Lte => ord != Ordering::Greater,
                })
            }
            BoundFilter::In {
                field,
                values: list,
                negated,
                ..
            } => {
                if list.is_empty() {
                    // `_in: []` is false and `_nin: []` true, whatever the value
                    return Some(*negated);
                }
                let v = field.get(seq, values);
                if v.is_null() {
                    return None;
                }
                let found = list.iter().any(|x| compare_values(&v, x) == Ordering::Equal);
                Some(found != *negated)
            }
            BoundFilter::IsNull { field, is_null } => Some(field.get(seq, values).is_null() == *is_null),
            BoundFilter::Match {
                field,
                matcher,
                negated,
                ..
            } => match field.get(seq, values).as_ref() {
                Value::Text(s) => Some(matcher.matches(s) != *negated),
                _ => None,
            },
        }
    }

    pub fn matches(&self, seq: Seq, values: &[Value]) -> bool {
        self.eval(seq, values) == Some(true)
    }

    /// The same condition as a DataFusion expression over the table's Arrow schema.
    pub fn to_df_expr(&self, table: &TableDef) -> Expr {
        // balanced, so that a list of a thousand conditions is a tree ten levels deep
        // (DataFusion recurses over it) rather than a chain a thousand deep
        let fold = |fs: &[BoundFilter], and: bool| -> Expr {
            let exprs: Vec<Expr> = fs.iter().map(|f| f.to_df_expr(table)).collect();
            balanced(exprs, &|a, b| if and { a.and(b) } else { a.or(b) }).unwrap_or_else(|| lit(and))
        };
        match self {
            BoundFilter::And(fs) => fold(fs, true),
            BoundFilter::Or(fs) => fold(fs, false),
            BoundFilter::Not(f) => Expr::Not(Box::new(f.to_df_expr(table))),
            BoundFilter::Compare { field, ty, op, value } => {
                let c = field.df_column(table);
                let l = lit(scalar_of(value, *ty));
                match op {
                    CmpOp::Eq => c.eq(l),
                    CmpOp::Neq => c.not_eq(l),
                    CmpOp::Gt => c.gt(l),
                    CmpOp::Gte => c.gt_eq(l),
                    CmpOp::Lt => c.lt(l),
                    CmpOp::Lte => c.lt_eq(l),
                }
            }
            BoundFilter::In {
                field,
                ty,
                values,
                negated,
            } if values.is_empty() => lit(*negated),
            BoundFilter::In {
                field,
                ty,
                values,
                negated,
            } => Expr::InList(InList::new(
                Box::new(field.df_column(table)),
                values.iter().map(|v| lit(scalar_of(v, *ty))).collect(),
                *negated,
            )),
            BoundFilter::IsNull { field, is_null } => {
                let c = field.df_column(table);
                if *is_null { c.is_null() } else { c.is_not_null() }
            }
            BoundFilter::Match {
                field,
                pattern,
                negated,
                ..
            } => {
                let column = Box::new(field.df_column(table));
                let text = Box::new(lit(ScalarValue::Utf8(Some(pattern.pattern.clone()))));
                match pattern.kind {
                    PatternKind::Like => Expr::Like(Like::new(*negated, column, text, None, pattern.case_insensitive)),
                    PatternKind::Regex => {
                        let op = match (*negated, pattern.case_insensitive) {
                            (false, false) => Operator::RegexMatch,
                            (false, true) => Operator::RegexIMatch,
                            (true, false) => Operator::RegexNotMatch,
                            (true, true) => Operator::RegexNotIMatch,
                        };
                        Expr::BinaryExpr(BinaryExpr::new(column, op, text))
                    }
                }
            }
        }
    }

    /// The top-level conjuncts (for key planning).
    pub fn conjuncts(&self) -> Vec<&BoundFilter> {
        match self {
            BoundFilter::And(fs) => fs.iter().flat_map(|f| f.conjuncts()).collect(),
            other => vec![other],
        }
    }
}

/// One sort key: a field, its direction and where nulls go.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub column: ColumnName,
    pub descending: bool,
    /// `None` takes PostgreSQL's default: nulls last ascending, first descending.
    pub nulls_first: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundOrderKey {
    pub field: FieldRef,
    pub descending: bool,
    pub nulls_first: bool,
}

impl OrderKey {
    pub fn bind(&self, table: &TableDef) -> Result<BoundOrderKey> {
        let (field, ty) = FieldRef::resolve(table, &self.column)?;
        if ty == ColumnType::Json {
            return Err(EngineError::InvalidInput(format!(
                "cannot order by JSON column '{}'",
                self.column
            )));
        }
        Ok(BoundOrderKey {
            field,
            descending: self.descending,
            nulls_first: self.nulls_first.unwrap_or(self.descending),
        })
    }
}

impl BoundOrderKey {
    #[inline]
    pub fn compare(&self, a: (Seq, &[Value]), b: (Seq, &[Value])) -> Ordering {
        match self.field {
            FieldRef::Column(i) => {
                const NULL: &Value = &Value::Null;
                self.order(a.1.get(i).unwrap_or(NULL), b.1.get(i).unwrap_or(NULL))
            }
            f => self.order(&f.get(a.0, a.1), &f.get(b.0, b.1)),
        }
    }

    /// Orders two values of the key's field: nulls where the key puts them, the rest
    /// in the key's direction.
    #[inline]
    fn order(&self, x: &Value, y: &Value) -> Ordering {
        match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if self.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if self.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = compare_values(x, y);
                if self.descending { o.reverse() } else { o }
            }
        }
    }

    pub fn to_df_sort(&self, table: &TableDef) -> SortExpr {
        SortExpr::new(self.field.df_column(table), !self.descending, self.nulls_first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_logic() {
        assert_eq!(and3([Some(true), None].into_iter()), None);
        assert_eq!(and3([Some(false), None].into_iter()), Some(false));
        assert_eq!(or3([Some(true), None].into_iter()), Some(true));
        assert_eq!(or3([Some(false), None].into_iter()), None);
        assert_eq!(and3(std::iter::empty()), Some(true));
        assert_eq!(or3(std::iter::empty()), Some(false));
    }
}
