//! Typed names. Every name is lowercase `[a-z_][a-z0-9_]*`, at most 63 bytes, so it is
//! safe as a SQL identifier, a storage path part and a GraphQL name.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

fn check_name(kind: &str, s: &str) -> Result<String> {
    let lower = s.to_ascii_lowercase();
    let mut bytes = lower.bytes();
    let ok = lower.len() <= 63
        && matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    if ok {
        Ok(lower)
    } else {
        Err(EngineError::InvalidInput(format!(
            "invalid {kind} name '{}': use letters, digits and '_', starting with a letter or '_', at most 63 bytes",
            s.chars().take(80).collect::<String>()
        )))
    }
}

macro_rules! name_type {
    ($(#[$m:meta])* $t:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $t(String);

        impl $t {
            pub fn parse(s: &str) -> Result<Self> {
                check_name($kind, s).map($t)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A namespace (`app` in `app.todos`).
    NamespaceId,
    "namespace"
);
name_type!(
    /// A table's name within its namespace.
    TableName,
    "table"
);
name_type!(
    /// A column's name.
    ColumnName,
    "column"
);

name_type!(
    /// A secondary index's name, unique within its namespace.
    IndexName,
    "index"
);

impl NamespaceId {
    pub fn public() -> Self {
        NamespaceId("public".into())
    }
    pub fn system() -> Self {
        NamespaceId("system".into())
    }
}

/// A table's full name: namespace and table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    pub namespace: NamespaceId,
    pub table: TableName,
}

impl TableId {
    pub fn new(namespace: NamespaceId, table: TableName) -> Self {
        Self { namespace, table }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.table)
    }
}

/// The number that names a table's storage (its partition); never reused, so a table
/// dropped and created again under the same name starts empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StorageUid(pub u64);

/// A column's identity across schema versions (renames keep it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ColumnId(pub u32);

/// A secondary index's number within its table: the first part of its entries' keys,
/// never reused by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IndexId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_and_lowercased() {
        assert_eq!(TableName::parse("Todos").unwrap().as_str(), "todos");
        assert!(TableName::parse("_x1").is_ok());
        assert!(TableName::parse("1x").is_err());
        assert!(TableName::parse("a-b").is_err());
        assert!(TableName::parse("").is_err());
        assert!(TableName::parse(&"a".repeat(64)).is_err());
    }
}
