//! `CREATE [UNIQUE] INDEX`, `DROP INDEX` and `SHOW INDEXES` (dba and above), and the
//! rows `SHOW INDEXES` and `system.indexes` share.

use std::sync::Arc;

use kalamdb_storage::hot_store::{Partition, WriteBatch};
use kalamdb_storage::seq::now_millis;
use serde_json::json;

use crate::catalog::Catalog;
use crate::catalog::schema::{IndexColumn, IndexDef, IndexState, MAX_KEY_COLUMNS, TableDef};
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::ids::{ColumnName, IndexId, IndexName, NamespaceId, TableId};
use crate::index::build::delete_entries;
use crate::jobs::{JobKind, JobTarget};
use crate::sql::ddl::require_ddl;
use crate::sql::result::SqlResult;
use crate::types::ColumnType;

/// One index as `SHOW INDEXES` and `system.indexes` list it.
pub struct IndexRow {
    pub table: Arc<TableDef>,
    pub index: IndexDef,
    /// `owner, created_at DESC`
    pub columns: String,
}

pub const INDEX_ROW_COLUMNS: [&str; 7] = [
    "namespace",
    "table_name",
    "index_name",
    "columns",
    "is_unique",
    "state",
    "created_at",
];

/// Every index, or those of one table, by table then index name.
pub fn index_rows(catalog: &Catalog, table: Option<&TableId>) -> Vec<IndexRow> {
    let mut out = vec![];
    for t in catalog.tables() {
        if table.is_some_and(|id| *id != t.id) {
            continue;
        }
        let schema = t.current();
        for ix in &t.indexes {
            let columns = ix
                .columns
                .iter()
                .map(|c| {
                    let name = schema
                        .index_of_id(c.column)
                        .map_or("?", |i| schema.columns[i].name.as_str());
                    if c.descending {
                        format!("{name} DESC")
                    } else {
                        name.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            out.push(IndexRow {
                table: t.clone(),
                index: ix.clone(),
                columns,
            });
        }
    }
    out.sort_by(|a, b| (&a.table.id, &a.index.name).cmp(&(&b.table.id, &b.index.name)));
    out
}

/// The table in `ns` that has an index of this name.
fn table_with_index(catalog: &Catalog, ns: &NamespaceId, name: &IndexName) -> Option<Arc<TableDef>> {
    catalog
        .tables_in(ns)
        .into_iter()
        .find(|t| t.indexes.iter().any(|i| &i.name == name))
}

impl Engine {
    pub(crate) async fn create_index(
        &self,
        ctx: &ExecContext,
        name: IndexName,
        table: TableId,
        columns: Vec<(ColumnName, bool)>,
        unique: bool,
        if_not_exists: bool,
    ) -> Result<SqlResult> {
        require_ddl(ctx)?;
        if table.namespace == NamespaceId::system() {
            return Err(EngineError::forbidden("the system namespace is read-only"));
        }
        let def = self.catalog.resolve(&table)?;
        if let Some(t) = table_with_index(&self.catalog, &table.namespace, &name) {
            if if_not_exists {
                return Ok(SqlResult::message(format!("index {name} already exists on {}", t.id)));
            }
            return Err(EngineError::AlreadyExists(format!("index '{name}' (on {})", t.id)));
        }
        if columns.is_empty() || columns.len() > MAX_KEY_COLUMNS {
            return Err(EngineError::InvalidInput(format!(
                "an index has 1 to {MAX_KEY_COLUMNS} columns"
            )));
        }
        let schema = def.current();
        let mut cols: Vec<IndexColumn> = Vec::with_capacity(columns.len());
        for (c, descending) in &columns {
            let i = schema
                .column_index(c.as_str())
                .ok_or_else(|| EngineError::ColumnNotFound {
                    table: table.to_string(),
                    column: c.to_string(),
                })?;
            let col = &schema.columns[i];
            if col.ty == ColumnType::Json {
                return Err(EngineError::InvalidInput(format!(
                    "column '{c}' is JSON, which cannot be indexed"
                )));
            }
            if cols.iter().any(|x| x.column == col.id) {
                return Err(EngineError::InvalidInput(format!("column '{c}' is indexed twice")));
            }
            cols.push(IndexColumn {
                column: col.id,
                descending: *descending,
            });
        }
        // no flush or compaction moves rows while the index is registered, so "no rows
        // in either tier" stays true until it is
        let lock = self.table_lock(def.uid.0);
        let _guard = lock.lock().await;
        let mut has_cold = false;
        for user in self.partitions(&def, true).await? {
            has_cold |= !self.cold.manifest(&def, user.as_ref()).await?.is_empty();
        }
        let (catalog, uid, index_name) = (self.catalog.clone(), def.uid, name.clone());
        let state = self
            .commit
            .exclusive(move |store| -> Result<IndexState> {
                let t = catalog
                    .table_by_uid(uid)
                    .ok_or_else(|| EngineError::TableNotFound(table.to_string()))?;
                if t.indexes.iter().any(|i| i.name == index_name) {
                    return Err(EngineError::AlreadyExists(format!("index '{index_name}'")));
                }
                let part = Partition::table(uid.0);
                let empty = !has_cold && store.scan(&part, &[], None)?.next_entry()?.is_none();
                let state = if empty { IndexState::Ready } else { IndexState::Building };
                let mut t = (*t).clone();
                let id = IndexId(t.next_index_id.max(1));
                t.next_index_id = id.0 + 1;
                t.indexes.push(IndexDef {
                    id,
                    name: index_name,
                    columns: cols,
                    unique,
                    state,
                    created_at_ms: now_millis(),
                });
                store.create_partition(&Partition::index(uid.0))?;
                catalog.put_table(store, t)?;
                Ok(state)
            })
            .await??;
        let job = if state == IndexState::Building {
            let target = JobTarget {
                table: def.id.clone(),
                uid: def.uid,
            };
            Some(self.jobs.submit(JobKind::IndexBuild, target, now_millis())?.id)
        } else {
            None
        };
        Ok(SqlResult::table(
            &["index", "table", "state", "job_id"],
            vec![vec![
                json!(name.as_str()),
                json!(def.id.to_string()),
                json!(state.as_str()),
                json!(job.as_ref().map(|j| j.as_str())),
            ]],
        ))
    }

    pub(crate) async fn drop_index(
        &self,
        ctx: &ExecContext,
        namespace: NamespaceId,
        name: IndexName,
        if_exists: bool,
    ) -> Result<SqlResult> {
        require_ddl(ctx)?;
        let Some(def) = table_with_index(&self.catalog, &namespace, &name) else {
            if if_exists {
                return Ok(SqlResult::message(format!("index {namespace}.{name} does not exist")));
            }
            return Err(EngineError::IndexNotFound(format!("{namespace}.{name}")));
        };
        let (catalog, uid, index_name) = (self.catalog.clone(), def.uid, name.clone());
        let building_left = self
            .commit
            .exclusive(move |store| -> Result<bool> {
                let Some(t) = catalog.table_by_uid(uid) else {
                    return Ok(false);
                };
                let mut t = (*t).clone();
                let Some(pos) = t.indexes.iter().position(|i| i.name == index_name) else {
                    return Ok(false);
                };
                let ix = t.indexes.remove(pos);
                let mut b = WriteBatch::new();
                delete_entries(&mut b, uid, ix.id);
                store.write(b)?;
                let left = t.indexes.iter().any(|i| i.state == IndexState::Building);
                catalog.put_table(store, t)?;
                Ok(left)
            })
            .await??;
        // a build of nothing but dropped indexes is cancelled
        if !building_left && let Some(job) = self.jobs.active(JobKind::IndexBuild, def.uid) {
            let _ = self.jobs.kill(&job, now_millis());
        }
        Ok(SqlResult::message(format!("index {namespace}.{name} dropped")))
    }

    pub(crate) fn show_indexes(&self, ctx: &ExecContext, table: Option<TableId>) -> Result<SqlResult> {
        require_ddl(ctx)?;
        if let Some(t) = &table {
            self.catalog.resolve(t)?;
        }
        let rows = index_rows(&self.catalog, table.as_ref())
            .into_iter()
            .map(|r| {
                vec![
                    json!(r.table.id.namespace.as_str()),
                    json!(r.table.id.table.as_str()),
                    json!(r.index.name.as_str()),
                    json!(r.columns),
                    json!(r.index.unique),
                    json!(r.index.state.as_str()),
                    json!(r.index.created_at_ms),
                ]
            })
            .collect();
        Ok(SqlResult::table(&INDEX_ROW_COLUMNS, rows))
    }
}
