//! Conversions between rows of [`Value`]s and Arrow record batches.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::catalog::schema::TableDef;
use crate::error::{EngineError, Result};
use crate::types::{ColumnType, TIMESTAMP_TZ, Value, format_date, format_timestamp};

pub const SEQ_COLUMN: &str = "_seq";
pub const DELETED_COLUMN: &str = "_deleted";
/// Field metadata key that records our column type where Arrow's is ambiguous.
pub const TYPE_METADATA: &str = "kalamdb.type";

/// The Arrow schema of a table as SQL sees it: its columns, then `_seq` and `_deleted`.
pub fn table_arrow_schema(table: &TableDef) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .current()
        .columns
        .iter()
        .map(|c| {
            Field::new(c.name.as_str(), c.ty.arrow_type(), c.nullable)
                .with_metadata(HashMap::from([(TYPE_METADATA.to_string(), c.ty.as_str().to_string())]))
        })
        .collect();
    fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
    fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// Builds one column of output.
pub(crate) enum ColBuilder {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Bin(BinaryBuilder),
}

impl ColBuilder {
    pub(crate) fn new(ty: ColumnType, cap: usize) -> Self {
        match ty {
            ColumnType::Boolean => ColBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            ColumnType::Int => ColBuilder::I32(Int32Builder::with_capacity(cap)),
            ColumnType::BigInt => ColBuilder::I64(Int64Builder::with_capacity(cap)),
            ColumnType::Double => ColBuilder::F64(Float64Builder::with_capacity(cap)),
            ColumnType::Text | ColumnType::Uuid | ColumnType::Json => {
                ColBuilder::Str(StringBuilder::with_capacity(cap, cap * 16))
            }
            ColumnType::Timestamp => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone(TIMESTAMP_TZ))
            }
            ColumnType::Date => ColBuilder::Date(Date32Builder::with_capacity(cap)),
            ColumnType::Bytes => ColBuilder::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
        }
    }

    pub(crate) fn push(&mut self, v: &Value) {
        match (self, v) {
            (ColBuilder::Bool(b), Value::Boolean(x)) => b.append_value(*x),
            (ColBuilder::I32(b), Value::Int(x)) => b.append_value(*x),
            (ColBuilder::I64(b), Value::BigInt(x)) => b.append_value(*x),
            (ColBuilder::F64(b), Value::Double(x)) => b.append_value(*x),
            (ColBuilder::Str(b), Value::Text(s) | Value::Json(s)) => b.append_value(s),
            (ColBuilder::Str(b), Value::Uuid(u)) => b.append_value(uuid::Uuid::from_bytes(*u).to_string()),
            (ColBuilder::Ts(b), Value::Timestamp(x)) => b.append_value(*x),
            (ColBuilder::Date(b), Value::Date(x)) => b.append_value(*x),
            (ColBuilder::Bin(b), Value::Bytes(x)) => b.append_value(x),
            (ColBuilder::Bool(b), _) => b.append_null(),
            (ColBuilder::I32(b), _) => b.append_null(),
            (ColBuilder::I64(b), _) => b.append_null(),
            (ColBuilder::F64(b), _) => b.append_null(),
            (ColBuilder::Str(b), _) => b.append_null(),
            (ColBuilder::Ts(b), _) => b.append_null(),
            (ColBuilder::Date(b), _) => b.append_null(),
            (ColBuilder::Bin(b), _) => b.append_null(),
        }
    }

    pub(crate) fn finish(self) -> ArrayRef {
        match self {
            ColBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColBuilder::I32(mut b) => Arc::new(b.finish()),
            ColBuilder::I64(mut b) => Arc::new(b.finish()),
            ColBuilder::F64(mut b) => Arc::new(b.finish()),
            ColBuilder::Str(mut b) => Arc::new(b.finish()),
            ColBuilder::Ts(mut b) => Arc::new(b.finish()),
            ColBuilder::Date(mut b) => Arc::new(b.finish()),
            ColBuilder::Bin(mut b) => Arc::new(b.finish()),
        }
    }
}

/// An Arrow array of `n` copies of `v` (a column's value in rows written before it existed).
pub fn constant_array(ty: ColumnType, v: &Value, n: usize) -> ArrayRef {
    let mut b = ColBuilder::new(ty, n);
    for _ in 0..n {
        b.push(v);
    }
    b.finish()
}

/// An Arrow array of `values`, all of type `ty`.
pub fn values_array(ty: ColumnType, values: &[Value]) -> ArrayRef {
    let mut b = ColBuilder::new(ty, values.len());
    for v in values {
        b.push(v);
    }
    b.finish()
}

/// Builds a batch of the projected columns (indexes into [`table_arrow_schema`]).
pub fn rows_to_batch(
    table: &TableDef,
    full_schema: &SchemaRef,
    projection: &[usize],
    rows: &[(kalamdb_storage::seq::Seq, Vec<Value>)],
) -> Result<RecordBatch> {
    let cols = &table.current().columns;
    let n = rows.len();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for &p in projection {
        if p < cols.len() {
            let mut b = ColBuilder::new(cols[p].ty, n);
            for (_, r) in rows {
                b.push(&r[p]);
            }
            arrays.push(b.finish());
        } else if p == cols.len() {
            let mut b = Int64Builder::with_capacity(n);
            for (s, _) in rows {
                b.append_value(s.as_i64());
            }
            arrays.push(Arc::new(b.finish()));
        } else {
            let mut b = BooleanBuilder::with_capacity(n);
            b.append_n(n, false);
            arrays.push(Arc::new(b.finish()));
        }
    }
    let schema = Arc::new(
        full_schema
            .project(projection)
            .map_err(|e| EngineError::Internal(e.to_string()))?,
    );
    RecordBatch::try_new_with_options(
        schema,
        arrays,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| EngineError::Internal(e.to_string()))
}

/// Converts result batches to JSON rows, in the same representation as
/// [`Value::to_json`].
pub fn batches_to_json(batches: &[RecordBatch]) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes as dt;
    let Some(first) = batches.first() else {
        return Ok((vec![], vec![]));
    };
    let schema = first.schema();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    let opts = FormatOptions::default();
    for batch in batches {
        let mut out: Vec<Vec<serde_json::Value>> = (0..batch.num_rows())
            .map(|_| Vec::with_capacity(columns.len()))
            .collect();
        for (ci, col) in batch.columns().iter().enumerate() {
            let is_json = schema.field(ci).metadata().get(TYPE_METADATA).map(String::as_str) == Some("JSON");
            let fmt = ArrayFormatter::try_new(col.as_ref(), &opts).map_err(|e| EngineError::Internal(e.to_string()))?;
            for (ri, row) in out.iter_mut().enumerate() {
                if col.is_null(ri) {
                    row.push(serde_json::Value::Null);
                    continue;
                }
                let v = match col.data_type() {
                    DataType::Boolean => serde_json::Value::Bool(col.as_boolean().value(ri)),
                    DataType::Int8 => col.as_primitive::<dt::Int8Type>().value(ri).into(),
                    DataType::Int16 => col.as_primitive::<dt::Int16Type>().value(ri).into(),
                    DataType::Int32 => col.as_primitive::<dt::Int32Type>().value(ri).into(),
                    DataType::Int64 => col.as_primitive::<dt::Int64Type>().value(ri).into(),
                    DataType::UInt8 => col.as_primitive::<dt::UInt8Type>().value(ri).into(),
                    DataType::UInt16 => col.as_primitive::<dt::UInt16Type>().value(ri).into(),
                    DataType::UInt32 => col.as_primitive::<dt::UInt32Type>().value(ri).into(),
                    DataType::UInt64 => col.as_primitive::<dt::UInt64Type>().value(ri).into(),
                    DataType::Float32 => {
                        Value::Double(col.as_primitive::<dt::Float32Type>().value(ri) as f64).to_json()
                    }
                    DataType::Float64 => Value::Double(col.as_primitive::<dt::Float64Type>().value(ri)).to_json(),
                    DataType::Utf8 if is_json => {
                        let s = col.as_string::<i32>().value(ri);
                        serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
                    }
                    DataType::Utf8 => col.as_string::<i32>().value(ri).into(),
                    DataType::LargeUtf8 => col.as_string::<i64>().value(ri).into(),
                    DataType::Utf8View => col.as_string_view().value(ri).into(),
                    DataType::Binary => base64::engine::general_purpose::STANDARD
                        .encode(col.as_binary::<i32>().value(ri))
                        .into(),
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        format_timestamp(col.as_primitive::<dt::TimestampMicrosecondType>().value(ri)).into()
                    }
                    DataType::Date32 => format_date(col.as_primitive::<dt::Date32Type>().value(ri)).into(),
                    _ => fmt.value(ri).to_string().into(),
                };
                row.push(v);
            }
        }
        rows.extend(out);
    }
    Ok((columns, rows))
}

/// Reads one cell of an Arrow column as a value of `ty` (the column's type in our
/// model; results of `sum`, `count` and `avg` use BIGINT and DOUBLE).
pub fn array_value(col: &dyn Array, i: usize, ty: ColumnType) -> Result<Value> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes as dt;
    if col.is_null(i) {
        return Ok(Value::Null);
    }
    let bad = || EngineError::Internal(format!("unexpected {} for a {ty} column", col.data_type()));
    Ok(match (ty, col.data_type()) {
        (ColumnType::Boolean, DataType::Boolean) => Value::Boolean(col.as_boolean().value(i)),
        (ColumnType::Int, DataType::Int32) => Value::Int(col.as_primitive::<dt::Int32Type>().value(i)),
        (ColumnType::BigInt, DataType::Int64) => Value::BigInt(col.as_primitive::<dt::Int64Type>().value(i)),
        (ColumnType::BigInt, DataType::UInt64) => {
            Value::BigInt(i64::try_from(col.as_primitive::<dt::UInt64Type>().value(i)).map_err(|_| bad())?)
        }
        (ColumnType::Double, DataType::Float64) => Value::Double(col.as_primitive::<dt::Float64Type>().value(i)),
        (ColumnType::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
            Value::Timestamp(col.as_primitive::<dt::TimestampMicrosecondType>().value(i))
        }
        (ColumnType::Date, DataType::Date32) => Value::Date(col.as_primitive::<dt::Date32Type>().value(i)),
        (ColumnType::Text, DataType::Utf8) => Value::Text(col.as_string::<i32>().value(i).to_string()),
        (ColumnType::Json, DataType::Utf8) => Value::Json(col.as_string::<i32>().value(i).to_string()),
        (ColumnType::Uuid, DataType::Utf8) => Value::from_text(ty, col.as_string::<i32>().value(i))?,
        (ColumnType::Bytes, DataType::Binary) => Value::Bytes(col.as_binary::<i32>().value(i).to_vec()),
        _ => return Err(bad()),
    })
}
