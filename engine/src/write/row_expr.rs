//! Expressions evaluated on one row inside the commit pipeline: `SET` clauses,
//! `ON CONFLICT DO UPDATE` and GraphQL `_inc`. Running them there, on the row as it is
//! at commit time, makes read-modify-write updates atomic.

use crate::error::{EngineError, Result};
use crate::types::{ColumnType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RowExpr {
    Literal(Value),
    /// A column of the row being updated (current schema index).
    Column(usize),
    /// A column of the row proposed for insertion (`EXCLUDED.col`).
    Excluded(usize),
    Neg(Box<RowExpr>),
    Binary(BinOp, Box<RowExpr>, Box<RowExpr>),
}

fn overflow() -> EngineError {
    EngineError::OutOfRange("numeric value out of range".into())
}

fn arith_i64(op: BinOp, a: i64, b: i64) -> Result<i64> {
    match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div | BinOp::Mod if b == 0 => return Err(EngineError::InvalidInput("division by zero".into())),
        BinOp::Div => a.checked_div(b),
        BinOp::Mod => a.checked_rem(b),
        BinOp::Concat => None,
    }
    .ok_or_else(overflow)
}

/// Float arithmetic as PostgreSQL does it: division by zero and results past the
/// range of DOUBLE are errors, never infinities.
fn arith_f64(op: BinOp, a: f64, b: f64) -> Result<f64> {
    let r = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div | BinOp::Mod if b == 0.0 => return Err(EngineError::InvalidInput("division by zero".into())),
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Concat => return Err(EngineError::TypeMismatch("|| needs text".into())),
    };
    if r.is_finite() {
        Ok(r)
    } else {
        Err(EngineError::OutOfRange("value out of range: overflow".into()))
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Text(s) | Value::Json(s) => s.clone(),
        other => other.to_json().to_string().trim_matches('"').to_string(),
    }
}

impl RowExpr {
    pub fn eval(&self, row: &[Value], excluded: Option<&[Value]>) -> Result<Value> {
        Ok(match self {
            RowExpr::Literal(v) => v.clone(),
            RowExpr::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            RowExpr::Excluded(i) => excluded
                .and_then(|e| e.get(*i).cloned())
                .ok_or_else(|| EngineError::InvalidInput("EXCLUDED is only valid in ON CONFLICT DO UPDATE".into()))?,
            RowExpr::Neg(e) => match e.eval(row, excluded)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(overflow)?),
                Value::BigInt(i) => Value::BigInt(i.checked_neg().ok_or_else(overflow)?),
                Value::Double(d) => Value::Double(-d),
                other => {
                    return Err(EngineError::TypeMismatch(format!(
                        "cannot negate {}",
                        other.type_name()
                    )));
                }
            },
            RowExpr::Binary(op, a, b) => {
                let (a, b) = (a.eval(row, excluded)?, b.eval(row, excluded)?);
                if a.is_null() || b.is_null() {
                    return Ok(Value::Null);
                }
                if *op == BinOp::Concat {
                    return Ok(Value::Text(as_text(&a) + &as_text(&b)));
                }
                match (a, b) {
                    (Value::Int(x), Value::Int(y)) => {
                        let r = arith_i64(*op, x as i64, y as i64)?;
                        Value::Int(i32::try_from(r).map_err(|_| overflow())?)
                    }
                    (Value::Int(x), Value::BigInt(y)) => Value::BigInt(arith_i64(*op, x as i64, y)?),
                    (Value::BigInt(x), Value::Int(y)) => Value::BigInt(arith_i64(*op, x, y as i64)?),
                    (Value::BigInt(x), Value::BigInt(y)) => Value::BigInt(arith_i64(*op, x, y)?),
                    (x, y) => {
                        let f = |v: &Value| match v {
                            Value::Int(i) => Some(*i as f64),
                            Value::BigInt(i) => Some(*i as f64),
                            Value::Double(d) => Some(*d),
                            _ => None,
                        };
                        match (f(&x), f(&y)) {
                            (Some(p), Some(q)) => Value::Double(arith_f64(*op, p, q)?),
                            _ => {
                                return Err(EngineError::TypeMismatch(format!(
                                    "cannot apply {op:?} to {} and {}",
                                    x.type_name(),
                                    y.type_name()
                                )));
                            }
                        }
                    }
                }
            }
        })
    }

    /// Evaluates and converts to the target column's type.
    pub fn eval_as(&self, ty: ColumnType, row: &[Value], excluded: Option<&[Value]>) -> Result<Value> {
        self.eval(row, excluded)?.coerce(ty)
    }
}
