//! Scalars and value conversions: engine [`Value`]s to GraphQL output, GraphQL input
//! to typed engine values. Custom scalars parse strictly: a bad `BigInt`, `Timestamp`,
//! `Date`, `UUID` or `Bytes` fails validation before any resolver runs.

use async_graphql::Value as Gql;
use async_graphql::dynamic::Scalar;
use base64::Engine as _;
use kalamdb_engine::error::{EngineError, Result};
use kalamdb_engine::types::{ColumnType, Value, format_date, format_timestamp, parse_date, parse_rfc3339};

/// The GraphQL scalar of a column type.
pub fn scalar_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Boolean => "Boolean",
        ColumnType::Int => "Int",
        ColumnType::BigInt => "BigInt",
        ColumnType::Double => "Float",
        ColumnType::Text => "String",
        ColumnType::Timestamp => "Timestamp",
        ColumnType::Date => "Date",
        ColumnType::Uuid => "UUID",
        ColumnType::Json => "JSON",
        ColumnType::Bytes => "Bytes",
    }
}

/// Every column type, for the shared comparison types.
pub const ALL_TYPES: [ColumnType; 10] = [
    ColumnType::Boolean,
    ColumnType::Int,
    ColumnType::BigInt,
    ColumnType::Double,
    ColumnType::Text,
    ColumnType::Timestamp,
    ColumnType::Date,
    ColumnType::Uuid,
    ColumnType::Json,
    ColumnType::Bytes,
];

fn is_bigint(v: &Gql) -> bool {
    match v {
        Gql::Number(n) => n.as_i64().is_some(),
        Gql::String(s) => s.parse::<i64>().is_ok(),
        _ => false,
    }
}

fn string_with(v: &Gql, ok: impl Fn(&str) -> bool) -> bool {
    matches!(v, Gql::String(s) if ok(s))
}

/// Whether `v` is a valid input value of the scalar of column type `ty`: the custom
/// scalars' validators, and the checks async-graphql makes of its built-in scalars.
pub fn accepts(ty: ColumnType, v: &Gql) -> bool {
    match ty {
        ColumnType::Boolean => matches!(v, Gql::Boolean(_)),
        ColumnType::Int => matches!(v, Gql::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok())),
        ColumnType::BigInt => is_bigint(v),
        ColumnType::Double => matches!(v, Gql::Number(_)),
        ColumnType::Text => matches!(v, Gql::String(_)),
        ColumnType::Timestamp => string_with(v, |s| parse_rfc3339(s).is_some()),
        ColumnType::Date => string_with(v, |s| s.len() == 10 && parse_date(s).is_some()),
        ColumnType::Uuid => string_with(v, |s| Value::from_text(ColumnType::Uuid, s).is_ok()),
        ColumnType::Json => true,
        ColumnType::Bytes => string_with(v, |s| base64::engine::general_purpose::STANDARD.decode(s).is_ok()),
    }
}

/// The custom scalars, with their strict input validators.
pub fn custom_scalars() -> Vec<Scalar> {
    vec![
        Scalar::new("BigInt")
            .description("A 64-bit integer: a JSON string on output, a string or a number on input.")
            .validator(|v| accepts(ColumnType::BigInt, v)),
        Scalar::new("Timestamp")
            .description("An instant as an RFC 3339 string, e.g. 2026-01-02T03:04:05.678Z (microsecond precision).")
            .validator(|v| accepts(ColumnType::Timestamp, v)),
        Scalar::new("Date")
            .description("A calendar date, YYYY-MM-DD.")
            .validator(|v| accepts(ColumnType::Date, v)),
        Scalar::new("UUID")
            .description("A UUID in its hyphenated text form.")
            .validator(|v| accepts(ColumnType::Uuid, v)),
        Scalar::new("JSON").description("Any JSON value."),
        Scalar::new("Bytes")
            .description("Binary data as standard base64.")
            .validator(|v| accepts(ColumnType::Bytes, v)),
    ]
}

/// A value as GraphQL output.
pub fn to_gql(v: &Value) -> Gql {
    match v {
        Value::Null => Gql::Null,
        Value::Boolean(b) => Gql::Boolean(*b),
        Value::Int(i) => Gql::from(*i),
        Value::BigInt(i) => Gql::String(i.to_string()),
        Value::Double(d) => async_graphql::Number::from_f64(*d).map_or(Gql::Null, Gql::Number),
        Value::Text(s) => Gql::String(s.clone()),
        Value::Timestamp(t) => Gql::String(format_timestamp(*t)),
        Value::Date(d) => Gql::String(format_date(*d)),
        Value::Uuid(_) | Value::Bytes(_) => match v.to_json() {
            serde_json::Value::String(s) => Gql::String(s),
            _ => Gql::Null,
        },
        Value::Json(s) => serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|j| Gql::from_json(j).ok())
            .unwrap_or(Gql::Null),
    }
}

/// Writes the JSON that serializing [`to_gql`]`(v)` gives, without building the value
/// for the common scalars.
pub fn write_json(out: &mut Vec<u8>, v: &Value) {
    use std::io::Write as _;
    // writes to a Vec cannot fail
    let _ = match v {
        Value::Null => out.write_all(b"null"),
        Value::Boolean(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write!(out, "{i}"),
        Value::BigInt(i) => write!(out, "\"{i}\""),
        Value::Text(s) => serde_json::to_writer(&mut *out, s).map_err(Into::into),
        _ => serde_json::to_writer(&mut *out, &to_gql(v)).map_err(Into::into),
    };
}

/// A GraphQL input value as a value of column type `ty`.
pub fn from_gql(ty: ColumnType, v: &Gql) -> Result<Value> {
    let json = v
        .clone()
        .into_json()
        .map_err(|e| EngineError::InvalidInput(format!("bad input value: {e}")))?;
    Value::from_json(ty, &json)
}

/// An `Int` argument that must not be negative.
pub fn non_negative(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| EngineError::InvalidInput(format!("'{name}' must not be negative")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON written straight from a value is the serialized GraphQL value, for
    /// every type and the awkward cases (escapes, non-finite doubles, JSON documents).
    #[test]
    fn written_json_is_the_serialized_value() {
        let values = [
            Value::Null,
            Value::Boolean(true),
            Value::Boolean(false),
            Value::Int(i32::MIN),
            Value::Int(7),
            Value::BigInt(i64::MAX),
            Value::BigInt(-9_007_199_254_740_993),
            Value::Double(0.1),
            Value::Double(-2.5e300),
            Value::Double(f64::NAN),
            Value::Double(f64::INFINITY),
            Value::Text(String::new()),
            Value::Text("quote \" backslash \\ newline \n tab \t nul \u{0} é 😀 \u{2028}".into()),
            Value::Timestamp(1_700_000_000_123_456),
            Value::Date(19_000),
            Value::Uuid(*b"0123456789abcdef"),
            Value::Bytes(vec![0, 255, 10]),
            Value::Json(r#"{"b": [1, 2.5, null], "a": "x"}"#.into()),
            Value::Json("not json".into()),
        ];
        for v in values {
            let mut out = Vec::new();
            write_json(&mut out, &v);
            let expected = serde_json::to_vec(&to_gql(&v)).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{v:?}"
            );
        }
    }
}
