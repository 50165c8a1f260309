//! The row codec and the key layout of table partitions.
//!
//! Row value: `[format=1][varint schema version][varint _seq][flags][null bitmap]
//! [values of the non-null columns, in that version's column order]`. A tombstone has
//! `flags & DELETED` and no columns. Keys: `pk` for SHARED tables,
//! `(user_id, pk)` for USER and STREAM tables, both order-preserving.

use kalamdb_auth::identity::UserId;
use kalamdb_storage::keys::{KeyBuilder, KeyReader};
use kalamdb_storage::seq::Seq;

use crate::catalog::schema::{TableDef, TableSchema};
use crate::error::{EngineError, Result};
use crate::types::{ColumnType, Pk, Value};

const FORMAT: u8 = 1;
const FLAG_DELETED: u8 = 1;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    buf: &'a [u8],
}

fn corrupt() -> EngineError {
    EngineError::Internal("corrupt row encoding".into())
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.buf.split_first().ok_or_else(corrupt)?;
        self.buf = rest;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(corrupt());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7F) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt())
    }
    fn str(&mut self) -> Result<String> {
        let n = self.varint()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| corrupt())
    }
}

/// A row as stored: its version stamp, tombstone flag and values (in the order of
/// the schema version it was written under).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub schema_version: u32,
    pub seq: Seq,
    pub deleted: bool,
    pub values: Vec<Value>,
}

pub fn encode_row(schema: &TableSchema, seq: Seq, values: &[Value]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + values.len() * 8);
    buf.push(FORMAT);
    put_varint(&mut buf, schema.version as u64);
    put_varint(&mut buf, seq.0);
    buf.push(0);
    let n = values.len();
    let bitmap_at = buf.len();
    buf.resize(bitmap_at + n.div_ceil(8), 0);
    for (i, v) in values.iter().enumerate() {
        if v.is_null() {
            buf[bitmap_at + i / 8] |= 1 << (i % 8);
            continue;
        }
        match v {
            Value::Null => {}
            Value::Boolean(b) => buf.push(*b as u8),
            Value::Int(x) => put_varint(&mut buf, zigzag(*x as i64)),
            Value::BigInt(x) | Value::Timestamp(x) => put_varint(&mut buf, zigzag(*x)),
            Value::Date(x) => put_varint(&mut buf, zigzag(*x as i64)),
            Value::Double(d) => buf.extend_from_slice(&d.to_le_bytes()),
            Value::Uuid(u) => buf.extend_from_slice(u),
            Value::Text(s) | Value::Json(s) => {
                put_varint(&mut buf, s.len() as u64);
                buf.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                put_varint(&mut buf, b.len() as u64);
                buf.extend_from_slice(b);
            }
        }
    }
    buf
}

pub fn encode_tombstone(schema: &TableSchema, seq: Seq) -> Vec<u8> {
    let mut buf = Vec::with_capacity(12);
    buf.push(FORMAT);
    put_varint(&mut buf, schema.version as u64);
    put_varint(&mut buf, seq.0);
    buf.push(FLAG_DELETED);
    buf
}

/// Reads `(schema version, seq, flags)` off the front of a row.
fn read_header(r: &mut Reader<'_>) -> Result<(u32, Seq, u8)> {
    if r.byte()? != FORMAT {
        return Err(corrupt());
    }
    let version = r.varint()? as u32;
    let seq = Seq(r.varint()?);
    Ok((version, seq, r.byte()?))
}

/// Reads only the header: `(schema version, seq, deleted)`.
pub fn decode_header(bytes: &[u8]) -> Result<(u32, Seq, bool)> {
    let (version, seq, flags) = read_header(&mut Reader { buf: bytes })?;
    Ok((version, seq, flags & FLAG_DELETED != 0))
}

/// Decodes a stored row and maps it onto the table's current schema: columns added
/// since take their backfill value, dropped ones are skipped, renamed ones keep their id.
pub fn decode_row(table: &TableDef, bytes: &[u8]) -> Result<StoredRow> {
    let mut r = Reader { buf: bytes };
    let (version, seq, flags) = read_header(&mut r)?;
    let current = table.current();
    if flags & FLAG_DELETED != 0 {
        return Ok(StoredRow {
            schema_version: version,
            seq,
            deleted: true,
            values: vec![],
        });
    }
    let written = table.version(version).ok_or_else(corrupt)?;
    let n = written.columns.len();
    let bitmap = r.take(n.div_ceil(8))?;
    let mut values = Vec::with_capacity(n);
    for (i, col) in written.columns.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            values.push(Value::Null);
            continue;
        }
        values.push(match col.ty {
            ColumnType::Boolean => Value::Boolean(r.byte()? != 0),
            ColumnType::Int => Value::Int(unzigzag(r.varint()?) as i32),
            ColumnType::BigInt => Value::BigInt(unzigzag(r.varint()?)),
            ColumnType::Timestamp => Value::Timestamp(unzigzag(r.varint()?)),
            ColumnType::Date => Value::Date(unzigzag(r.varint()?) as i32),
            ColumnType::Double => Value::Double(f64::from_le_bytes(r.take(8)?.try_into().map_err(|_| corrupt())?)),
            ColumnType::Uuid => Value::Uuid(r.take(16)?.try_into().map_err(|_| corrupt())?),
            ColumnType::Text => Value::Text(r.str()?),
            ColumnType::Json => Value::Json(r.str()?),
            ColumnType::Bytes => {
                let len = r.varint()? as usize;
                Value::Bytes(r.take(len)?.to_vec())
            }
        });
    }
    if version != current.version {
        let mut old: Vec<Option<Value>> = values.into_iter().map(Some).collect();
        values = current
            .columns
            .iter()
            .map(|c| match written.index_of_id(c.id) {
                Some(i) => old[i].take().unwrap_or(Value::Null),
                None => TableDef::backfill_value(c),
            })
            .collect();
    }
    Ok(StoredRow {
        schema_version: version,
        seq,
        deleted: false,
        values,
    })
}

/// Appends the order-preserving encoding of a key value.
pub fn encode_key_value(k: &mut KeyBuilder, v: &Value) -> Result<()> {
    match v {
        Value::Boolean(b) => k.bool(*b),
        Value::Int(i) | Value::Date(i) => k.i32(*i),
        Value::BigInt(i) | Value::Timestamp(i) => k.i64(*i),
        Value::Double(d) => k.f64(*d),
        Value::Text(s) => k.text(s),
        Value::Uuid(u) => k.fixed(u),
        Value::Bytes(b) => k.bytes(b),
        Value::Null => return Err(EngineError::NotNull("primary key".into())),
        Value::Json(_) => return Err(EngineError::InvalidInput("JSON cannot be a key".into())),
    };
    Ok(())
}

/// Reads back a key value of type `ty` written by [`encode_key_value`].
pub fn decode_key_value(r: &mut KeyReader<'_>, ty: ColumnType) -> Option<Value> {
    Some(match ty {
        ColumnType::Boolean => Value::Boolean(r.bool()?),
        ColumnType::Int => Value::Int(r.i32()?),
        ColumnType::Date => Value::Date(r.i32()?),
        ColumnType::BigInt => Value::BigInt(r.i64()?),
        ColumnType::Timestamp => Value::Timestamp(r.i64()?),
        ColumnType::Double => Value::Double(r.f64()?),
        ColumnType::Text => Value::Text(String::from_utf8(r.bytes()?).ok()?),
        ColumnType::Uuid => Value::Uuid(r.fixed(16)?.try_into().ok()?),
        ColumnType::Bytes => Value::Bytes(r.bytes()?),
        ColumnType::Json => return None,
    })
}

/// The encoded primary key alone (a row key without its user prefix).
pub fn pk_bytes(pk: &Pk) -> Result<Vec<u8>> {
    row_key(None, pk)
}

/// The key prefix that holds all rows a scan may see: the user's rows of a per-user
/// table, everything of a shared one.
pub fn partition_prefix(user: Option<&UserId>) -> Vec<u8> {
    let mut k = KeyBuilder::new();
    if let Some(u) = user {
        k.text(u.as_str());
    }
    k.finish()
}

/// The storage key of one row: the user (per-user tables), then each key column's
/// value in key order. Every value's encoding is self-delimiting and order-preserving,
/// so keys sort by their columns in order.
pub fn row_key(user: Option<&UserId>, pk: &Pk) -> Result<Vec<u8>> {
    let mut k = KeyBuilder::with_capacity(32);
    if let Some(u) = user {
        k.text(u.as_str());
    }
    for v in &pk.0 {
        encode_key_value(&mut k, v)?;
    }
    Ok(k.finish())
}

/// Reads an encoded primary key (see [`pk_bytes`]) back into its values.
pub fn decode_pk(schema: &TableSchema, enc: &[u8]) -> Option<Pk> {
    let mut r = KeyReader::new(enc);
    schema
        .pk_columns()
        .map(|c| decode_key_value(&mut r, c.ty))
        .collect::<Option<Vec<_>>>()
        .map(Pk)
}

/// Splits a stored row key into its user (per-user tables) and its encoded primary key.
pub fn split_row_key(key: &[u8], per_user: bool) -> Result<(Option<UserId>, &[u8])> {
    if !per_user {
        return Ok((None, key));
    }
    let mut r = KeyReader::new(key);
    let user = r
        .bytes()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| EngineError::Internal("a row key without its user".into()))?;
    Ok((Some(UserId::parse(&user)?), r.rest()))
}

/// Reads the user id back out of a per-user row key.
pub fn key_user(key: &[u8]) -> Option<String> {
    KeyReader::new(key).bytes().and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::ColumnDef;
    use crate::ids::{ColumnId, ColumnName, NamespaceId, StorageUid, TableId, TableName};
    use kalamdb_auth::{permissions::AccessLevel, permissions::TableType};

    fn col(id: u32, name: &str, ty: ColumnType) -> ColumnDef {
        ColumnDef {
            id: ColumnId(id),
            name: ColumnName::parse(name).unwrap(),
            ty,
            nullable: true,
            default: None,
        }
    }

    #[test]
    fn roundtrip_all_types_and_schema_evolution() {
        let v1 = TableSchema {
            version: 1,
            pk: vec![0],
            columns: vec![
                col(1, "id", ColumnType::BigInt),
                col(2, "b", ColumnType::Boolean),
                col(3, "i", ColumnType::Int),
                col(4, "d", ColumnType::Double),
                col(5, "t", ColumnType::Text),
                col(6, "ts", ColumnType::Timestamp),
                col(7, "dt", ColumnType::Date),
                col(8, "u", ColumnType::Uuid),
                col(9, "j", ColumnType::Json),
                col(10, "by", ColumnType::Bytes),
            ],
        };
        let mut table = TableDef {
            id: TableId::new(NamespaceId::public(), TableName::parse("x").unwrap()),
            uid: StorageUid(1),
            table_type: TableType::Shared,
            access_level: AccessLevel::Public,
            ttl_seconds: None,
            flush_policy: None,
            versions: vec![v1.clone()],
            next_column_id: 11,
            created_at_ms: 0,
            indexes: vec![],
            next_index_id: 1,
        };
        let values = vec![
            Value::BigInt(-5),
            Value::Boolean(true),
            Value::Int(i32::MIN),
            Value::Double(-2.5),
            Value::Text("héllo".into()),
            Value::Timestamp(1_700_000_000_123_456),
            Value::Null,
            Value::Uuid([7; 16]),
            Value::Json("{\"a\":1}".into()),
            Value::Bytes(vec![0, 1, 255]),
        ];
        let bytes = encode_row(&v1, Seq(42), &values);
        let row = decode_row(&table, &bytes).unwrap();
        assert_eq!(row.values, values);
        assert_eq!(row.seq, Seq(42));

        // v2: drop "b", rename "t" -> "title", add "extra" with default 7
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.columns.remove(1);
        v2.columns[3].name = ColumnName::parse("title").unwrap();
        let mut extra = col(11, "extra", ColumnType::Int);
        extra.default = Some(crate::catalog::schema::DefaultExpr::Literal(serde_json::json!(7)));
        v2.columns.push(extra);
        table.versions.push(v2.clone());
        let row = decode_row(&table, &bytes).unwrap();
        assert_eq!(row.values.len(), v2.columns.len());
        assert_eq!(row.values[3], Value::Text("héllo".into()));
        assert_eq!(row.values[9], Value::Int(7));

        let t = encode_tombstone(&v2, Seq(43));
        let row = decode_row(&table, &t).unwrap();
        assert!(row.deleted);
        assert_eq!(decode_header(&t).unwrap(), (2, Seq(43), true));
    }

    #[test]
    fn user_keys_group_by_user_then_pk() {
        let a = UserId::parse("alice").unwrap();
        let ab = UserId::parse("alicebob").unwrap();
        let k1 = row_key(Some(&a), &Pk::one(Value::BigInt(i64::MAX))).unwrap();
        let k2 = row_key(Some(&ab), &Pk::one(Value::BigInt(i64::MIN))).unwrap();
        assert!(k1 < k2);
        assert!(k1.starts_with(&partition_prefix(Some(&a))));
        assert!(!k2.starts_with(&partition_prefix(Some(&a))));
        assert_eq!(key_user(&k1).as_deref(), Some("alice"));
    }

    #[test]
    fn composite_keys_sort_column_by_column_and_decode() {
        let schema = TableSchema {
            version: 1,
            pk: vec![1, 0],
            columns: vec![col(1, "user_id", ColumnType::Text), col(2, "room", ColumnType::BigInt)],
        };
        let key = |room: i64, user: &str| pk_bytes(&Pk(vec![Value::BigInt(room), Value::Text(user.into())])).unwrap();
        // the text's terminator keeps "a" before "a\0..." and the room sorts first
        assert!(key(1, "b") < key(2, "a"));
        assert!(key(1, "a") < key(1, "ab"));
        assert!(key(-1, "zz") < key(1, ""));
        let pk = Pk(vec![Value::BigInt(7), Value::Text("x\u{0}y".into())]);
        assert_eq!(decode_pk(&schema, &pk_bytes(&pk).unwrap()), Some(pk));
        assert_eq!(
            schema.pk_of(&[Value::Text("u".into()), Value::BigInt(3)]).0[0],
            Value::BigInt(3)
        );
    }
}
