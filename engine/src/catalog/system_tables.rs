//! `system.*` tables, built from the engine's state when a query reads them. Only dba
//! and above may read them; password hashes never appear.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::{MemTable, TableProvider};
use kalamdb_auth::{identity::Role, permissions::TableType};

use kalamdb_storage::hot_store::HotStore;

use crate::accounts::audit::AuditLog;
use crate::accounts::users::UserStore;
use crate::catalog::Catalog;
use crate::context::ExecContext;
use crate::error::{EngineError, Result};
use crate::ids::TableId;
use crate::jobs::Jobs;
use crate::live::LiveHub;

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

fn ts(values: Vec<Option<u64>>) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from(values.into_iter().map(|v| v.map(|x| x as i64)).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

fn strs<S: AsRef<str>>(values: Vec<Option<S>>) -> ArrayRef {
    Arc::new(StringArray::from(
        values
            .iter()
            .map(|v| v.as_ref().map(|s| s.as_ref()))
            .collect::<Vec<_>>(),
    ))
}

pub const SYSTEM_TABLES: [&str; 8] = [
    "users",
    "namespaces",
    "tables",
    "columns",
    "indexes",
    "live_queries",
    "audit_log",
    "jobs",
];

pub fn provider(
    catalog: &Catalog,
    users: &UserStore,
    live: &LiveHub,
    jobs: &Jobs,
    store: &HotStore,
    ctx: &ExecContext,
    id: &TableId,
) -> Result<Arc<dyn TableProvider>> {
    if ctx.role < Role::Dba {
        return Err(EngineError::forbidden(format!(
            "role {} may not read system tables",
            ctx.role
        )));
    }
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = match id.table.as_str() {
        "users" => {
            let u = users.all();
            (
                vec![
                    Field::new("user_id", DataType::Utf8, false),
                    Field::new("role", DataType::Utf8, false),
                    Field::new("has_password", DataType::Boolean, false),
                    ts_field("created_at", false),
                    ts_field("updated_at", false),
                    ts_field("deleted_at", true),
                ],
                vec![
                    strs(u.iter().map(|x| Some(x.id.as_str())).collect()),
                    strs(u.iter().map(|x| Some(x.role.as_str())).collect()),
                    Arc::new(BooleanArray::from(
                        u.iter().map(|x| x.password_hash.is_some()).collect::<Vec<_>>(),
                    )),
                    ts(u.iter().map(|x| Some(x.created_at_ms)).collect()),
                    ts(u.iter().map(|x| Some(x.updated_at_ms)).collect()),
                    ts(u.iter().map(|x| x.deleted_at_ms).collect()),
                ],
            )
        }
        "namespaces" => {
            let n = catalog.namespaces();
            (
                vec![
                    Field::new("namespace", DataType::Utf8, false),
                    ts_field("created_at", false),
                ],
                vec![
                    strs(n.iter().map(|x| Some(x.id.as_str())).collect()),
                    ts(n.iter().map(|x| Some(x.created_at_ms)).collect()),
                ],
            )
        }
        "tables" => {
            let t = catalog.tables();
            (
                vec![
                    Field::new("namespace", DataType::Utf8, false),
                    Field::new("table_name", DataType::Utf8, false),
                    Field::new("table_type", DataType::Utf8, false),
                    Field::new("access_level", DataType::Utf8, true),
                    Field::new("ttl_seconds", DataType::Int64, true),
                    Field::new("flush_policy", DataType::Utf8, true),
                    Field::new("schema_version", DataType::Int64, false),
                    ts_field("created_at", false),
                ],
                vec![
                    strs(t.iter().map(|x| Some(x.id.namespace.as_str())).collect()),
                    strs(t.iter().map(|x| Some(x.id.table.as_str())).collect()),
                    strs(t.iter().map(|x| Some(x.table_type.as_str())).collect()),
                    strs(
                        t.iter()
                            .map(|x| (x.table_type == TableType::Shared).then(|| x.access_level.as_str()))
                            .collect(),
                    ),
                    Arc::new(Int64Array::from(
                        t.iter().map(|x| x.ttl_seconds.map(|v| v as i64)).collect::<Vec<_>>(),
                    )),
                    strs(t.iter().map(|x| x.flush_policy.map(|p| p.render())).collect()),
                    Arc::new(Int64Array::from(
                        t.iter().map(|x| x.current().version as i64).collect::<Vec<_>>(),
                    )),
                    ts(t.iter().map(|x| Some(x.created_at_ms)).collect()),
                ],
            )
        }
        "columns" => {
            let mut rows = vec![];
            for t in catalog.tables() {
                let s = t.current();
                for (i, c) in s.columns.iter().enumerate() {
                    rows.push((t.clone(), i, c.clone(), s.is_pk(i)));
                }
            }
            (
                vec![
                    Field::new("namespace", DataType::Utf8, false),
                    Field::new("table_name", DataType::Utf8, false),
                    Field::new("column_name", DataType::Utf8, false),
                    Field::new("ordinal_position", DataType::Int64, false),
                    Field::new("data_type", DataType::Utf8, false),
                    Field::new("is_nullable", DataType::Boolean, false),
                    Field::new("is_primary_key", DataType::Boolean, false),
                    Field::new("column_default", DataType::Utf8, true),
                ],
                vec![
                    strs(rows.iter().map(|r| Some(r.0.id.namespace.as_str())).collect()),
                    strs(rows.iter().map(|r| Some(r.0.id.table.as_str())).collect()),
                    strs(rows.iter().map(|r| Some(r.2.name.as_str())).collect()),
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.1 as i64 + 1).collect::<Vec<_>>(),
                    )),
                    strs(rows.iter().map(|r| Some(r.2.ty.as_str())).collect()),
                    Arc::new(BooleanArray::from(
                        rows.iter().map(|r| r.2.nullable).collect::<Vec<_>>(),
                    )),
                    Arc::new(BooleanArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                    strs(rows.iter().map(|r| r.2.default.as_ref().map(|d| d.sql())).collect()),
                ],
            )
        }
        "indexes" => {
            let r = crate::index::ddl::index_rows(catalog, None);
            let names = crate::index::ddl::INDEX_ROW_COLUMNS;
            (
                vec![
                    Field::new(names[0], DataType::Utf8, false),
                    Field::new(names[1], DataType::Utf8, false),
                    Field::new(names[2], DataType::Utf8, false),
                    Field::new(names[3], DataType::Utf8, false),
                    Field::new(names[4], DataType::Boolean, false),
                    Field::new(names[5], DataType::Utf8, false),
                    ts_field(names[6], false),
                ],
                vec![
                    strs(r.iter().map(|x| Some(x.table.id.namespace.as_str())).collect()),
                    strs(r.iter().map(|x| Some(x.table.id.table.as_str())).collect()),
                    strs(r.iter().map(|x| Some(x.index.name.as_str())).collect()),
                    strs(r.iter().map(|x| Some(x.columns.as_str())).collect()),
                    Arc::new(BooleanArray::from(r.iter().map(|x| x.index.unique).collect::<Vec<_>>())),
                    strs(r.iter().map(|x| Some(x.index.state.as_str())).collect()),
                    ts(r.iter().map(|x| Some(x.index.created_at_ms)).collect()),
                ],
            )
        }
        "live_queries" => {
            let l = live.list();
            (
                vec![
                    Field::new("live_id", DataType::Int64, false),
                    Field::new("user_id", DataType::Utf8, false),
                    Field::new("namespace", DataType::Utf8, false),
                    Field::new("table_name", DataType::Utf8, false),
                    Field::new("kind", DataType::Utf8, false),
                    Field::new("query", DataType::Utf8, false),
                    ts_field("created_at", false),
                    Field::new("last_seq", DataType::Int64, true),
                ],
                vec![
                    Arc::new(Int64Array::from(l.iter().map(|x| x.id.0 as i64).collect::<Vec<_>>())),
                    strs(l.iter().map(|x| Some(x.user.as_str())).collect()),
                    strs(l.iter().map(|x| Some(x.table.namespace.as_str())).collect()),
                    strs(l.iter().map(|x| Some(x.table.table.as_str())).collect()),
                    strs(l.iter().map(|x| Some(x.kind.as_str())).collect()),
                    strs(l.iter().map(|x| Some(x.query.as_str())).collect()),
                    ts(l.iter().map(|x| Some(x.created_at_ms)).collect()),
                    Arc::new(Int64Array::from(
                        l.iter().map(|x| x.last_seq.map(|s| s.as_i64())).collect::<Vec<_>>(),
                    )),
                ],
            )
        }
        "audit_log" => {
            let a = AuditLog::read_recent(store, crate::accounts::audit::MAX_READ)?;
            (
                vec![
                    Field::new("id", DataType::Int64, false),
                    ts_field("at", false),
                    Field::new("action", DataType::Utf8, false),
                    Field::new("actor", DataType::Utf8, false),
                    Field::new("subject", DataType::Utf8, true),
                    Field::new("target", DataType::Utf8, false),
                    Field::new("source", DataType::Utf8, true),
                    Field::new("detail", DataType::Utf8, false),
                ],
                vec![
                    Arc::new(Int64Array::from(a.iter().map(|x| x.id).collect::<Vec<_>>())),
                    ts(a.iter().map(|x| Some(x.at_ms)).collect()),
                    strs(a.iter().map(|x| Some(x.action.as_str())).collect()),
                    strs(a.iter().map(|x| Some(x.actor.as_str())).collect()),
                    strs(a.iter().map(|x| x.subject.as_deref()).collect()),
                    strs(a.iter().map(|x| Some(x.target.as_str())).collect()),
                    strs(a.iter().map(|x| x.source.as_deref()).collect()),
                    strs(a.iter().map(|x| Some(x.detail.as_str())).collect()),
                ],
            )
        }
        "jobs" => {
            let j = jobs.list();
            (
                vec![
                    Field::new("job_id", DataType::Utf8, false),
                    Field::new("kind", DataType::Utf8, false),
                    Field::new("status", DataType::Utf8, false),
                    Field::new("namespace", DataType::Utf8, false),
                    Field::new("table_name", DataType::Utf8, false),
                    Field::new("parameters", DataType::Utf8, false),
                    Field::new("message", DataType::Utf8, true),
                    Field::new("error", DataType::Utf8, true),
                    Field::new("retries", DataType::Int64, false),
                    Field::new("idempotency_key", DataType::Utf8, false),
                    ts_field("created_at", false),
                    ts_field("started_at", true),
                    ts_field("finished_at", true),
                ],
                vec![
                    strs(j.iter().map(|x| Some(x.id.as_str())).collect()),
                    strs(j.iter().map(|x| Some(x.kind.as_str())).collect()),
                    strs(j.iter().map(|x| Some(x.status.as_str())).collect()),
                    strs(j.iter().map(|x| Some(x.target.table.namespace.as_str())).collect()),
                    strs(j.iter().map(|x| Some(x.target.table.table.as_str())).collect()),
                    strs(j.iter().map(|x| Some(x.params())).collect()),
                    strs(j.iter().map(|x| x.message.as_deref()).collect()),
                    strs(j.iter().map(|x| x.error.as_deref()).collect()),
                    Arc::new(Int64Array::from(j.iter().map(|x| x.retries as i64).collect::<Vec<_>>())),
                    strs(j.iter().map(|x| Some(x.idempotency_key.as_str())).collect()),
                    ts(j.iter().map(|x| Some(x.created_ms)).collect()),
                    ts(j.iter().map(|x| x.started_ms).collect()),
                    ts(j.iter().map(|x| x.finished_ms).collect()),
                ],
            )
        }
        _ => return Err(EngineError::TableNotFound(id.to_string())),
    };
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
