//! Column types and typed values, with the conversions the SQL and GraphQL layers use.

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnType {
    Boolean,
    Int,
    BigInt,
    Double,
    Text,
    Timestamp,
    Date,
    Uuid,
    Json,
    Bytes,
}

pub const TIMESTAMP_TZ: &str = "UTC";

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Int => "INT",
            ColumnType::BigInt => "BIGINT",
            ColumnType::Double => "DOUBLE",
            ColumnType::Text => "TEXT",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
            ColumnType::Uuid => "UUID",
            ColumnType::Json => "JSON",
            ColumnType::Bytes => "BYTES",
        }
    }

    /// Maps a SQL type name (as written in DDL) to a column type.
    pub fn from_sql_name(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        let base = upper.split('(').next().unwrap_or("").trim();
        Some(match base {
            "BOOLEAN" | "BOOL" => ColumnType::Boolean,
            "INT" | "INTEGER" | "INT4" => ColumnType::Int,
            "BIGINT" | "INT8" => ColumnType::BigInt,
            "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" | "FLOAT" | "REAL" => ColumnType::Double,
            "TEXT" | "VARCHAR" | "STRING" | "CHARACTER VARYING" => ColumnType::Text,
            "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" | "TIMESTAMP WITHOUT TIME ZONE" => {
                ColumnType::Timestamp
            }
            "DATE" => ColumnType::Date,
            "UUID" => ColumnType::Uuid,
            "JSON" | "JSONB" => ColumnType::Json,
            "BYTES" | "BYTEA" | "BLOB" | "BINARY" | "VARBINARY" => ColumnType::Bytes,
            _ => return None,
        })
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Text | ColumnType::Uuid | ColumnType::Json => DataType::Utf8,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::Bytes => DataType::Binary,
        }
    }

    /// Whether `sum`, `avg` and `_inc` apply.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::BigInt | ColumnType::Double)
    }

    /// Whether `min` and `max` apply.
    pub fn is_ordered(self) -> bool {
        !matches!(self, ColumnType::Json | ColumnType::Bytes | ColumnType::Boolean)
    }

    /// Whether the type may be a primary key.
    pub fn can_be_key(self) -> bool {
        !matches!(self, ColumnType::Json | ColumnType::Double)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One typed value. Timestamps are microseconds since the Unix epoch (UTC), dates days
/// since it; JSON is kept as its canonical text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Int(i32),
    BigInt(i64),
    Double(f64),
    Text(String),
    Timestamp(i64),
    Date(i32),
    Uuid([u8; 16]),
    Json(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// About how much memory the value takes: its own size and its heap bytes.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::Text(s) | Value::Json(s) => s.len(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            }
    }
}

/// A DOUBLE value as stored: finite (JSON, and so every client, has no NaN or
/// infinity), and with -0.0 as 0.0, which PostgreSQL treats as equal to it everywhere
/// (filters, sorts, DISTINCT, keys).
pub fn double(d: f64) -> Result<Value> {
    if !d.is_finite() {
        return Err(EngineError::OutOfRange(format!(
            "value out of range: DOUBLE takes finite values only, not {d}"
        )));
    }
    Ok(Value::Double(d + 0.0))
}

fn mismatch(ty: ColumnType, got: impl fmt::Display) -> EngineError {
    EngineError::TypeMismatch(format!("expected a value of type {ty}, got {got}"))
}

/// Splits off fractional seconds finer than a microsecond, rounded as PostgreSQL
/// rounds them (to the nearest microsecond, ties to even): the text with six digits
/// at most, and the microseconds the rounding adds (0 or 1).
fn round_fraction(s: &str) -> (std::borrow::Cow<'_, str>, i64) {
    let b = s.as_bytes();
    // the fraction follows the seconds of a time: "...:SS.fffffffff"
    let Some(dot) = (3..b.len())
        .find(|&i| b[i] == b'.' && b[i - 3] == b':' && b[i - 2].is_ascii_digit() && b[i - 1].is_ascii_digit())
    else {
        return (s.into(), 0);
    };
    let digits = b[dot + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits <= 6 {
        return (s.into(), 0);
    }
    let end = dot + 1 + digits;
    let frac: f64 = s[dot..end].parse().unwrap_or(0.0);
    let micros = (frac * 1e6).round_ties_even() as i64;
    let kept: i64 = s[dot + 1..dot + 7].parse().unwrap_or(0);
    (format!("{}{}", &s[..dot + 7], &s[end..]).into(), micros - kept)
}

pub fn parse_timestamp(s: &str) -> Option<i64> {
    let (s, carry) = round_fraction(s);
    Some(parse_timestamp_micros(&s)? + carry)
}

fn parse_timestamp_micros(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(n.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc().timestamp_micros())
}

/// Parses an RFC 3339 timestamp only (the strict form the GraphQL scalar takes).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (s, carry) = round_fraction(s);
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|dt| dt.timestamp_micros() + carry)
}

pub fn parse_date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some((d - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

pub fn format_timestamp(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

pub fn format_date(days: i32) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::Duration::days(days as i64)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// An integer's value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i as i64),
            Value::BigInt(i) => Some(*i),
            _ => None,
        }
    }

    /// A number's value as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::BigInt(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// Converts a JSON value (API input) to a value of `ty`, strictly: no silent
    /// truncation, no numbers from booleans.
    pub fn from_json(ty: ColumnType, v: &serde_json::Value) -> Result<Value> {
        use serde_json::Value as J;
        if v.is_null() {
            return Ok(Value::Null);
        }
        Ok(match (ty, v) {
            (ColumnType::Boolean, J::Bool(b)) => Value::Boolean(*b),
            (ColumnType::Int, J::Number(n)) => Value::Int(
                n.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| mismatch(ty, n))?,
            ),
            (ColumnType::BigInt, J::Number(n)) => Value::BigInt(n.as_i64().ok_or_else(|| mismatch(ty, n))?),
            (ColumnType::BigInt, J::String(s)) => {
                Value::BigInt(s.trim().parse().map_err(|_| mismatch(ty, format!("'{}'", trunc(s))))?)
            }
            (ColumnType::Double, J::Number(n)) => double(n.as_f64().ok_or_else(|| mismatch(ty, n))?)?,
            (ColumnType::Json, other) => Value::Json(other.to_string()),
            (_, J::String(s)) => Value::from_text(ty, s)?,
            (ty, other) => return Err(mismatch(ty, json_kind(other))),
        })
    }

    /// Parses a textual literal into a value of `ty`.
    pub fn from_text(ty: ColumnType, s: &str) -> Result<Value> {
        let bad = || mismatch(ty, format!("'{}'", trunc(s)));
        Ok(match ty {
            ColumnType::Text => Value::Text(s.to_string()),
            ColumnType::Boolean => match s.to_ascii_lowercase().as_str() {
                "true" | "t" => Value::Boolean(true),
                "false" | "f" => Value::Boolean(false),
                _ => return Err(bad()),
            },
            ColumnType::Int => Value::Int(s.trim().parse().map_err(|_| bad())?),
            ColumnType::BigInt => Value::BigInt(s.trim().parse().map_err(|_| bad())?),
            ColumnType::Double => double(s.trim().parse().map_err(|_| bad())?)?,
            ColumnType::Timestamp => Value::Timestamp(parse_timestamp(s.trim()).ok_or_else(bad)?),
            ColumnType::Date => Value::Date(parse_date(s.trim()).ok_or_else(bad)?),
            ColumnType::Uuid => Value::Uuid(*uuid::Uuid::parse_str(s.trim()).map_err(|_| bad())?.as_bytes()),
            ColumnType::Json => {
                let parsed: serde_json::Value = serde_json::from_str(s).map_err(|_| bad())?;
                Value::Json(parsed.to_string())
            }
            ColumnType::Bytes => Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| mismatch(ty, "text that is not base64"))?,
            ),
        })
    }

    /// Converts an already typed value to `ty` where that is lossless (integer widths,
    /// integers to double, text to anything parseable).
    pub fn coerce(self, ty: ColumnType) -> Result<Value> {
        Ok(match (ty, self) {
            (_, Value::Null) => Value::Null,
            (ColumnType::Boolean, v @ Value::Boolean(_)) => v,
            (ColumnType::Int, v @ Value::Int(_)) => v,
            (ColumnType::Int, Value::BigInt(i)) => Value::Int(i32::try_from(i).map_err(|_| mismatch(ty, i))?),
            (ColumnType::BigInt, Value::Int(i)) => Value::BigInt(i as i64),
            (ColumnType::BigInt, v @ Value::BigInt(_)) => v,
            (ColumnType::Double, Value::Int(i)) => Value::Double(i as f64),
            (ColumnType::Double, Value::BigInt(i)) => Value::Double(i as f64),
            (ColumnType::Double, Value::Double(d)) => double(d)?,
            (ColumnType::Timestamp, v @ Value::Timestamp(_)) => v,
            (ColumnType::Timestamp, Value::Date(d)) => Value::Timestamp(d as i64 * 86_400_000_000),
            (ColumnType::Date, v @ Value::Date(_)) => v,
            (ColumnType::Uuid, v @ Value::Uuid(_)) => v,
            (ColumnType::Json, v @ Value::Json(_)) => v,
            (ColumnType::Bytes, v @ Value::Bytes(_)) => v,
            (ColumnType::Json, Value::Text(s)) => Value::from_text(ty, &s)?,
            (_, Value::Text(s)) => Value::from_text(ty, &s)?,
            (ty, other) => return Err(mismatch(ty, other.type_name())),
        })
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Boolean(_) => "BOOLEAN",
            Value::Int(_) => "INT",
            Value::BigInt(_) => "BIGINT",
            Value::Double(_) => "DOUBLE",
            Value::Text(_) => "TEXT",
            Value::Timestamp(_) => "TIMESTAMP",
            Value::Date(_) => "DATE",
            Value::Uuid(_) => "UUID",
            Value::Json(_) => "JSON",
            Value::Bytes(_) => "BYTES",
        }
    }

    /// The value as API output JSON: 64-bit integers as numbers, timestamps RFC 3339,
    /// bytes base64, JSON embedded as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Boolean(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::BigInt(i) => J::from(*i),
            Value::Double(d) => serde_json::Number::from_f64(*d).map(J::Number).unwrap_or(J::Null),
            Value::Text(s) => J::String(s.clone()),
            Value::Timestamp(t) => J::String(format_timestamp(*t)),
            Value::Date(d) => J::String(format_date(*d)),
            Value::Uuid(u) => J::String(uuid::Uuid::from_bytes(*u).to_string()),
            Value::Json(s) => serde_json::from_str(s).unwrap_or(J::Null),
            Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }
}

/// A row's primary key: the values of its key columns, in key order (one for a
/// single-column key).
#[derive(Debug, Clone, PartialEq)]
pub struct Pk(pub Vec<Value>);

impl Pk {
    pub fn one(v: Value) -> Self {
        Pk(vec![v])
    }
}

impl fmt::Display for Pk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("(")?;
                for (i, v) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => write!(f, "'{}'", trunc(s)),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

fn trunc(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s.to_string()
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_finer_than_a_microsecond_round_as_postgresql_rounds_them() {
        let at = |s: &str| parse_timestamp(s).map(format_timestamp);
        assert_eq!(
            at("2020-01-01 00:00:00.1234567").as_deref(),
            Some("2020-01-01T00:00:00.123457Z")
        );
        assert_eq!(
            at("2020-01-01T00:00:00.1234564Z").as_deref(),
            Some("2020-01-01T00:00:00.123456Z")
        );
        assert_eq!(
            at("2020-01-01T23:59:59.9999996+00:00").as_deref(),
            Some("2020-01-02T00:00:00Z")
        );
        assert_eq!(
            at("2020-01-01 00:00:00.123456").as_deref(),
            Some("2020-01-01T00:00:00.123456Z")
        );
        assert_eq!(
            parse_rfc3339("2020-01-01T00:00:00.0000015Z"),
            parse_rfc3339("2020-01-01T00:00:00.000002Z")
        );
    }

    #[test]
    fn doubles_are_finite_and_have_one_zero() {
        assert_eq!(double(-0.0).unwrap(), Value::Double(0.0));
        assert!(matches!(double(-0.0).unwrap(), Value::Double(d) if d.is_sign_positive()));
        for bad in ["NaN", "inf", "-Infinity"] {
            let e = Value::from_text(ColumnType::Double, bad).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorCode::OutOfRange, "{bad}: {e}");
        }
        assert_eq!(
            Value::Double(f64::INFINITY)
                .coerce(ColumnType::Double)
                .unwrap_err()
                .code(),
            crate::error::ErrorCode::OutOfRange
        );
    }
    use serde_json::json;

    #[test]
    fn strict_json_conversion() {
        assert_eq!(Value::from_json(ColumnType::Int, &json!(5)).unwrap(), Value::Int(5));
        assert!(Value::from_json(ColumnType::Int, &json!(5_000_000_000i64)).is_err());
        assert!(Value::from_json(ColumnType::Int, &json!(1.5)).is_err());
        assert!(Value::from_json(ColumnType::Int, &json!(true)).is_err());
        assert_eq!(
            Value::from_json(ColumnType::BigInt, &json!("9007199254740993")).unwrap(),
            Value::BigInt(9_007_199_254_740_993)
        );
        assert!(Value::from_json(ColumnType::BigInt, &json!("12x")).is_err());
        let ts = Value::from_json(ColumnType::Timestamp, &json!("2025-01-02T03:04:05Z")).unwrap();
        assert_eq!(ts.to_json(), json!("2025-01-02T03:04:05Z"));
        assert_eq!(
            Value::from_json(ColumnType::Date, &json!("2024-02-29"))
                .unwrap()
                .to_json(),
            json!("2024-02-29")
        );
        assert!(Value::from_json(ColumnType::Uuid, &json!("nope")).is_err());
        assert_eq!(
            Value::from_json(ColumnType::Json, &json!({"a": [1]}))
                .unwrap()
                .to_json(),
            json!({"a": [1]})
        );
    }
}
