//! Table definitions and their versioned schemas.

use kalamdb_auth::{permissions::AccessLevel, permissions::TableType};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::ids::{ColumnId, ColumnName, IndexId, IndexName, StorageUid, TableId};
use crate::types::{ColumnType, Pk, Value};

/// A column's default, evaluated when an insert leaves the column out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum DefaultExpr {
    /// A constant, stored as API JSON and converted to the column type.
    Literal(serde_json::Value),
    Now,
    SnowflakeId,
    UuidV7,
    CurrentUser,
}

impl DefaultExpr {
    pub fn sql(&self) -> String {
        match self {
            DefaultExpr::Literal(serde_json::Value::String(s)) => format!("'{}'", s.replace('\'', "''")),
            DefaultExpr::Literal(v) => v.to_string(),
            DefaultExpr::Now => "NOW()".into(),
            DefaultExpr::SnowflakeId => "SNOWFLAKE_ID()".into(),
            DefaultExpr::UuidV7 => "UUID_V7()".into(),
            DefaultExpr::CurrentUser => "CURRENT_USER()".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub id: ColumnId,
    pub name: ColumnName,
    pub ty: ColumnType,
    pub nullable: bool,
    pub default: Option<DefaultExpr>,
}

/// The most columns a key may have: a primary key, or a secondary index.
pub const MAX_KEY_COLUMNS: usize = 16;

/// One version of a table's columns. Rows are encoded against the version they were
/// written under and read back under the current one by [`ColumnId`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub version: u32,
    pub columns: Vec<ColumnDef>,
    /// Indexes into `columns` of the primary key's columns, in key order (catalogs
    /// written before composite keys hold a single index).
    #[serde(deserialize_with = "key_positions")]
    pub pk: Vec<usize>,
}

fn key_positions<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::One(i) => vec![i],
        Stored::Many(v) => v,
    })
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.as_str() == name)
    }

    /// The primary key's columns, in key order.
    pub fn pk_columns(&self) -> impl ExactSizeIterator<Item = &ColumnDef> + '_ {
        self.pk.iter().map(|&i| &self.columns[i])
    }

    /// The key's first column: segments are sorted by it, and their statistics and
    /// probes on it narrow key lookups.
    pub fn leading_pk(&self) -> &ColumnDef {
        &self.columns[self.pk[0]]
    }

    pub fn is_pk(&self, column: usize) -> bool {
        self.pk.contains(&column)
    }

    /// The primary key of a row given in this schema's column order.
    pub fn pk_of(&self, values: &[Value]) -> Pk {
        Pk(self
            .pk
            .iter()
            .map(|&i| values.get(i).cloned().unwrap_or(Value::Null))
            .collect())
    }

    /// The key's column names, as `a` or `(a, b)`.
    pub fn pk_names(&self) -> String {
        let names: Vec<&str> = self.pk_columns().map(|c| c.name.as_str()).collect();
        match names.as_slice() {
            [one] => one.to_string(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// A key given as one value per key column, converted to the columns' types.
    pub fn coerce_pk(&self, pk: Pk) -> Result<Pk> {
        if pk.0.len() != self.pk.len() {
            return Err(EngineError::InvalidInput(format!(
                "the primary key {} has {} column(s), {} value(s) given",
                self.pk_names(),
                self.pk.len(),
                pk.0.len()
            )));
        }
        pk.0.into_iter()
            .zip(self.pk_columns())
            .map(|(v, c)| v.coerce(c.ty))
            .collect::<Result<_>>()
            .map(Pk)
    }

    pub fn index_of_id(&self, id: ColumnId) -> Option<usize> {
        self.columns.iter().position(|c| c.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushPolicy {
    pub rows: Option<u64>,
    pub interval_secs: Option<u64>,
}

impl FlushPolicy {
    /// Parses `rows:N,interval:S` (either part may be left out).
    pub fn parse(s: &str) -> Result<Self> {
        let mut p = FlushPolicy {
            rows: None,
            interval_secs: None,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once(':').ok_or_else(|| {
                EngineError::InvalidInput(format!("bad FLUSH_POLICY part '{part}': use rows:N,interval:S"))
            })?;
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| EngineError::InvalidInput(format!("bad number in FLUSH_POLICY part '{part}'")))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "rows" => p.rows = Some(n),
                "interval" => p.interval_secs = Some(n),
                other => return Err(EngineError::InvalidInput(format!("unknown FLUSH_POLICY key '{other}'"))),
            }
        }
        Ok(p)
    }

    pub fn render(&self) -> String {
        let mut parts = vec![];
        if let Some(r) = self.rows {
            parts.push(format!("rows:{r}"));
        }
        if let Some(i) = self.interval_secs {
            parts.push(format!("interval:{i}"));
        }
        parts.join(",")
    }
}

/// One column of a secondary index, by identity (a rename keeps the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexColumn {
    pub column: ColumnId,
    pub descending: bool,
}

/// Whether an index answers reads yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexState {
    /// Writes maintain it and a job is indexing the rows that existed before it; reads
    /// do not use it.
    Building,
    Ready,
}

impl IndexState {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexState::Building => "building",
            IndexState::Ready => "ready",
        }
    }
}

/// A secondary index: its entries map the indexed values (then the primary key) to
/// the primary key, in the table's index partition, per user for per-user tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDef {
    pub id: IndexId,
    pub name: IndexName,
    pub columns: Vec<IndexColumn>,
    pub unique: bool,
    pub state: IndexState,
    pub created_at_ms: u64,
}

/// Everything the catalog knows of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: TableId,
    pub uid: StorageUid,
    pub table_type: TableType,
    pub access_level: AccessLevel,
    pub ttl_seconds: Option<u64>,
    pub flush_policy: Option<FlushPolicy>,
    /// Every version, oldest first; the last is current.
    pub versions: Vec<TableSchema>,
    pub next_column_id: u32,
    pub created_at_ms: u64,
    /// Secondary indexes (data directories made before indexes existed have none).
    #[serde(default)]
    pub indexes: Vec<IndexDef>,
    #[serde(default)]
    pub next_index_id: u32,
}

impl TableDef {
    pub fn current(&self) -> &TableSchema {
        self.versions.last().expect("a table has at least one schema version")
    }

    pub fn version(&self, v: u32) -> Option<&TableSchema> {
        self.versions.iter().find(|s| s.version == v)
    }

    /// The indexes reads may use.
    pub fn ready_indexes(&self) -> impl Iterator<Item = &IndexDef> {
        self.indexes.iter().filter(|i| i.state == IndexState::Ready)
    }

    /// The current schema's column index of each of an index's columns.
    pub fn index_columns(&self, index: &IndexDef) -> Result<Vec<usize>> {
        let schema = self.current();
        index
            .columns
            .iter()
            .map(|c| {
                schema.index_of_id(c.column).ok_or_else(|| {
                    EngineError::Internal(format!("index '{}' names a column the table lacks", index.name))
                })
            })
            .collect()
    }

    /// The value a column takes in rows written before it existed.
    pub fn backfill_value(col: &ColumnDef) -> Value {
        match &col.default {
            Some(DefaultExpr::Literal(v)) => Value::from_json(col.ty, v).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}
