//! The shape of one table as a generated schema sees it: a snapshot of the catalog
//! taken when the schema was built.

use kalamdb_engine::catalog::schema::TableDef;
use kalamdb_engine::ids::{ColumnName, TableId};
use kalamdb_engine::types::ColumnType;

use crate::names::TableNames;

pub const SEQ: &str = "_seq";
pub const DELETED: &str = "_deleted";

#[derive(Debug, Clone)]
pub struct ColumnMeta {
    pub name: ColumnName,
    pub ty: ColumnType,
    pub nullable: bool,
}

#[derive(Debug, Clone)]
pub struct TableMeta {
    pub id: TableId,
    pub names: TableNames,
    pub columns: Vec<ColumnMeta>,
    /// The primary key's columns, as indexes into `columns`, in key order.
    pub pk: Vec<usize>,
}

impl TableMeta {
    pub fn from_def(def: &TableDef) -> Self {
        let schema = def.current();
        Self {
            id: def.id.clone(),
            names: TableNames::new(&def.id),
            columns: schema
                .columns
                .iter()
                .map(|c| ColumnMeta {
                    name: c.name.clone(),
                    ty: c.ty,
                    nullable: c.nullable,
                })
                .collect(),
            pk: schema.pk.clone(),
        }
    }

    /// The primary key's columns, in key order.
    pub fn pk_columns(&self) -> impl ExactSizeIterator<Item = &ColumnMeta> + '_ {
        self.pk.iter().map(|&i| &self.columns[i])
    }

    /// A user column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnMeta> {
        self.columns.iter().find(|c| c.name.as_str() == name)
    }

    /// Whether a row object of the table has a field of this name: a column, `_seq`
    /// or `_deleted`.
    pub fn has_row_field(&self, name: &str) -> bool {
        name == SEQ || name == DELETED || self.column(name).is_some()
    }

    /// A column that filters and sort keys may name: user columns and `_seq`.
    pub fn filterable(&self, name: &str) -> Option<(ColumnName, ColumnType)> {
        if name == SEQ {
            return ColumnName::parse(SEQ).ok().map(|n| (n, ColumnType::BigInt));
        }
        self.column(name).map(|c| (c.name.clone(), c.ty))
    }

    /// Columns an update may assign: everything but the primary key's.
    pub fn settable(&self) -> impl Iterator<Item = &ColumnMeta> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.pk.contains(i))
            .map(|(_, c)| c)
    }

    pub fn incrementable(&self) -> impl Iterator<Item = &ColumnMeta> {
        self.settable().filter(|c| c.ty.is_numeric())
    }
}
