//! `FLUSH TABLE`, `FLUSH ALL`, `COMPACT TABLE` and `KILL JOB`: statements that queue or
//! stop jobs. They answer at once with the job; `system.jobs` shows how it goes.

use kalamdb_auth::permissions::{self, TableType};
use kalamdb_storage::seq::now_millis;
use serde_json::json;

use crate::catalog::schema::TableDef;
use crate::context::ExecContext;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::jobs::{JobId, JobKind, JobTarget, Submitted};
use crate::sql::parse::Statement;
use crate::sql::result::SqlResult;

fn require_maintenance(ctx: &ExecContext) -> Result<()> {
    if permissions::can_run_ddl(ctx.role) {
        Ok(())
    } else {
        Err(EngineError::forbidden(format!(
            "role {} may not flush, compact or kill jobs",
            ctx.role
        )))
    }
}

impl Engine {
    pub(crate) async fn execute_maintenance(&self, ctx: &ExecContext, stmt: Statement) -> Result<SqlResult> {
        require_maintenance(ctx)?;
        let now = now_millis();
        let queue = |kind: JobKind, t: &TableDef| -> Result<(Submitted, String)> {
            let target = JobTarget {
                table: t.id.clone(),
                uid: t.uid,
            };
            Ok((self.jobs.submit(kind, target, now)?, t.id.to_string()))
        };
        let flushable = |t: &TableDef| -> Result<()> {
            if t.table_type == TableType::Stream {
                return Err(EngineError::InvalidInput(format!(
                    "{} is a STREAM table: its rows stay in the hot tier until their TTL",
                    t.id
                )));
            }
            Ok(())
        };
        let queued = match stmt {
            Statement::FlushTable { table } => {
                let t = self.catalog.resolve(&table)?;
                flushable(&t)?;
                vec![queue(JobKind::Flush, &t)?]
            }
            Statement::CompactTable { table } => {
                let t = self.catalog.resolve(&table)?;
                flushable(&t)?;
                vec![queue(JobKind::Compact, &t)?]
            }
            Statement::FlushAll { namespace } => {
                if let Some(ns) = &namespace
                    && !self.catalog.namespace_exists(ns)
                {
                    return Err(EngineError::NamespaceNotFound(ns.to_string()));
                }
                self.catalog
                    .tables()
                    .iter()
                    .filter(|t| t.table_type != TableType::Stream)
                    .filter(|t| namespace.as_ref().is_none_or(|ns| &t.id.namespace == ns))
                    .map(|t| queue(JobKind::Flush, t))
                    .collect::<Result<Vec<_>>>()?
            }
            Statement::KillJob { id } => {
                let id = JobId::parse(&id)?;
                let record = self.jobs.get(&id);
                let status = self.jobs.kill(&id, now)?;
                // a build cancelled before it ran takes its indexes with it, as a
                // running one does when it stops
                if status == crate::jobs::JobStatus::Cancelled
                    && let Some(r) = record.filter(|r| r.kind == JobKind::IndexBuild)
                {
                    self.abandon_build(r.target.uid, None).await?;
                }
                let note = if status == crate::jobs::JobStatus::Running {
                    "is stopping"
                } else {
                    "was cancelled"
                };
                return Ok(SqlResult::message(format!("job {id} {note}")));
            }
            _ => return Err(EngineError::Internal("not a maintenance statement".into())),
        };
        let rows = queued
            .iter()
            .map(|(s, table)| {
                vec![
                    json!(s.id.as_str()),
                    json!(table),
                    json!(s.status.as_str()),
                    json!(s.created),
                ]
            })
            .collect();
        Ok(SqlResult::table(&["job_id", "table", "status", "new"], rows))
    }
}
