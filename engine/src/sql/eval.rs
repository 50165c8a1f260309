//! Evaluation of the constant expressions of DML (`VALUES`, `SET`, defaults) and their
//! compilation into [`RowExpr`]s that run inside the commit pipeline.

use datafusion::sql::sqlparser::ast::{self, BinaryOperator, Expr, FunctionArguments, UnaryOperator};
use kalamdb_auth::identity::UserId;
use kalamdb_storage::{seq::SeqAllocator, seq::now_micros};

use crate::catalog::schema::{DefaultExpr, TableSchema};
use crate::error::{EngineError, Result};
use crate::sql::parse::ident_name;
use crate::types::{ColumnType, Value};
use crate::write::row_expr::{BinOp, RowExpr};

/// What constant expressions may refer to.
pub struct EvalEnv<'a> {
    pub params: &'a [serde_json::Value],
    pub subject: &'a UserId,
    pub seq: &'a SeqAllocator,
}

/// The functions usable in defaults and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinFn {
    Now,
    SnowflakeId,
    UuidV7,
    CurrentUser,
}

impl BuiltinFn {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "NOW" | "CURRENT_TIMESTAMP" => BuiltinFn::Now,
            "SNOWFLAKE_ID" => BuiltinFn::SnowflakeId,
            "UUID_V7" => BuiltinFn::UuidV7,
            "CURRENT_USER" => BuiltinFn::CurrentUser,
            _ => return None,
        })
    }

    pub fn eval(self, env: &EvalEnv<'_>) -> Value {
        match self {
            BuiltinFn::Now => Value::Timestamp(now_micros() as i64),
            BuiltinFn::SnowflakeId => Value::BigInt(env.seq.next().as_i64()),
            BuiltinFn::UuidV7 => Value::Uuid(*uuid::Uuid::now_v7().as_bytes()),
            BuiltinFn::CurrentUser => Value::Text(env.subject.to_string()),
        }
    }

    pub fn as_default(self) -> DefaultExpr {
        match self {
            BuiltinFn::Now => DefaultExpr::Now,
            BuiltinFn::SnowflakeId => DefaultExpr::SnowflakeId,
            BuiltinFn::UuidV7 => DefaultExpr::UuidV7,
            BuiltinFn::CurrentUser => DefaultExpr::CurrentUser,
        }
    }
}

/// A call of a built-in function with no arguments, if `e` is one.
pub fn builtin_call(e: &Expr) -> Option<BuiltinFn> {
    match e {
        Expr::Function(f) => {
            let no_args = match &f.args {
                FunctionArguments::None => true,
                FunctionArguments::List(l) => l.args.is_empty(),
                FunctionArguments::Subquery(_) => false,
            };
            if !no_args {
                return None;
            }
            BuiltinFn::from_name(&f.name.to_string())
        }
        Expr::Identifier(i) if i.quote_style.is_none() => match i.value.to_ascii_uppercase().as_str() {
            "CURRENT_TIMESTAMP" => Some(BuiltinFn::Now),
            "CURRENT_USER" => Some(BuiltinFn::CurrentUser),
            _ => None,
        },
        _ => None,
    }
}

fn placeholder<'p>(name: &str, params: &'p [serde_json::Value]) -> Result<&'p serde_json::Value> {
    let idx: usize = name
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| EngineError::Syntax(format!("unsupported parameter '{name}': use $1, $2, ...")))?;
    params
        .get(idx - 1)
        .ok_or_else(|| EngineError::InvalidInput(format!("parameter ${idx} was not given")))
}

/// The text of a negated number literal (`-9223372036854775808`), read as one
/// literal as PostgreSQL does: its positive part alone may be out of range.
fn negative_number(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => Some(format!("-{n}")),
            _ => None,
        },
        Expr::Nested(inner) => negative_number(inner),
        _ => None,
    }
}

/// A number literal without a target type: integers are BIGINT, others DOUBLE.
fn untyped_number(n: &str) -> Result<Value> {
    match n.parse::<i64>() {
        Ok(i) => Ok(Value::BigInt(i)),
        Err(_) => crate::types::double(
            n.parse()
                .map_err(|_| EngineError::TypeMismatch(format!("bad number {n}")))?,
        ),
    }
}

/// A literal without a target type: integers are BIGINT, other numbers DOUBLE,
/// strings TEXT (converted when assigned to a column).
fn untyped_literal(v: &ast::Value, params: &[serde_json::Value]) -> Result<Value> {
    use ast::Value as V;
    Ok(match v {
        V::Number(n, _) => untyped_number(n)?,
        V::SingleQuotedString(s) | V::DoubleQuotedString(s) | V::EscapedStringLiteral(s) => Value::Text(s.clone()),
        V::Boolean(b) => Value::Boolean(*b),
        V::Null => Value::Null,
        V::Placeholder(name) => match placeholder(name, params)? {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Boolean(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::BigInt(i),
                None => crate::types::double(n.as_f64().unwrap_or(f64::NAN))?,
            },
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => Value::Json(other.to_string()),
        },
        other => return Err(EngineError::Unsupported(format!("unsupported literal {other}"))),
    })
}

/// Evaluates a constant expression as a value of `ty`.
pub fn eval_const(e: &Expr, ty: ColumnType, env: &EvalEnv<'_>) -> Result<Value> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(name) => Value::from_json(ty, placeholder(name, env.params)?),
            ast::Value::Number(n, _) => match ty {
                ColumnType::Int | ColumnType::BigInt | ColumnType::Double => Value::from_text(ty, n),
                _ => Err(EngineError::TypeMismatch(format!(
                    "expected a value of type {ty}, got the number {n}"
                ))),
            },
            other => untyped_literal(other, env.params)?.coerce(ty),
        },
        Expr::Nested(inner) => eval_const(inner, ty, env),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match negative_number(expr) {
            Some(n) if matches!(ty, ColumnType::Int | ColumnType::BigInt | ColumnType::Double) => {
                Value::from_text(ty, &n)
            }
            _ => RowExpr::Neg(Box::new(RowExpr::Literal(eval_const(expr, ty, env)?))).eval_as(ty, &[], None),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => eval_const(expr, ty, env),
        Expr::TypedString(ts) => match &ts.value.value {
            ast::Value::SingleQuotedString(s) => Value::from_text(ty, s),
            other => Err(EngineError::Unsupported(format!("unsupported literal {other}"))),
        },
        other => match builtin_call(other) {
            Some(f) => f.eval(env).coerce(ty),
            None => compile_row_expr(other, None, env)?.eval_as(ty, &[], None),
        },
    }
}

fn binop(op: &BinaryOperator) -> Option<BinOp> {
    Some(match op {
        BinaryOperator::Plus => BinOp::Add,
        BinaryOperator::Minus => BinOp::Sub,
        BinaryOperator::Multiply => BinOp::Mul,
        BinaryOperator::Divide => BinOp::Div,
        BinaryOperator::Modulo => BinOp::Mod,
        BinaryOperator::StringConcat => BinOp::Concat,
        _ => return None,
    })
}

/// Compiles an assignment's right-hand side. Column references resolve against
/// `schema` (none for constant contexts); `EXCLUDED.col` is the proposed row.
pub fn compile_row_expr(e: &Expr, schema: Option<&TableSchema>, env: &EvalEnv<'_>) -> Result<RowExpr> {
    let column = |name: &str| -> Result<usize> {
        let schema = schema.ok_or_else(|| EngineError::InvalidInput(format!("column '{name}' is not allowed here")))?;
        schema.column_index(name).ok_or_else(|| EngineError::ColumnNotFound {
            table: String::new(),
            column: name.to_string(),
        })
    };
    Ok(match e {
        Expr::Value(v) => RowExpr::Literal(untyped_literal(&v.value, env.params)?),
        Expr::Nested(inner) => compile_row_expr(inner, schema, env)?,
        Expr::TypedString(ts) => match &ts.value.value {
            ast::Value::SingleQuotedString(s) => RowExpr::Literal(Value::Text(s.clone())),
            other => return Err(EngineError::Unsupported(format!("unsupported literal {other}"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match negative_number(expr) {
            Some(n) => RowExpr::Literal(untyped_number(&n)?),
            None => RowExpr::Neg(Box::new(compile_row_expr(expr, schema, env)?)),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => compile_row_expr(expr, schema, env)?,
        Expr::BinaryOp { left, op, right } => {
            let op =
                binop(op).ok_or_else(|| EngineError::Unsupported(format!("operator {op} is not supported here")))?;
            RowExpr::Binary(
                op,
                Box::new(compile_row_expr(left, schema, env)?),
                Box::new(compile_row_expr(right, schema, env)?),
            )
        }
        e if builtin_call(e).is_some() => RowExpr::Literal(builtin_call(e).map(|f| f.eval(env)).unwrap_or(Value::Null)),
        Expr::Identifier(i) => RowExpr::Column(column(&ident_name(i))?),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            let col = column(&ident_name(&parts[1]))?;
            if ident_name(&parts[0]) == "excluded" {
                RowExpr::Excluded(col)
            } else {
                RowExpr::Column(col)
            }
        }
        other => {
            return Err(EngineError::Unsupported(format!(
                "expression '{other}' is not supported in VALUES or SET: use literals, parameters, columns, arithmetic and ||"
            )));
        }
    })
}
