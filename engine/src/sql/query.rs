//! SELECT (and EXPLAIN) through DataFusion. Each statement gets a catalog bound to the
//! caller: resolving a table checks the caller's permission, and per-user tables resolve
//! to a provider that can only see the subject user's rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::Array;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProviderList, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast;
use futures::StreamExt;
use kalamdb_auth::permissions::TableOp;
use kalamdb_storage::hot_store::HotStore;

use crate::accounts::users::UserStore;
use crate::catalog::Catalog;
use crate::catalog::system_tables;
use crate::context::ExecContext;
use crate::engine::{Engine, resolve_table};
use crate::error::{EngineError, Result};
use crate::ids::{NamespaceId, TableId, TableName};
use crate::jobs::Jobs;
use crate::live::LiveHub;
use crate::read::provider::TieredTableProvider;
use crate::tiers::cold::ColdTier;

/// What one statement may read, bound to its caller.
#[derive(Clone)]
struct Scope {
    store: Arc<HotStore>,
    catalog: Arc<Catalog>,
    users: Arc<UserStore>,
    live: Arc<LiveHub>,
    cold: Arc<ColdTier>,
    jobs: Arc<Jobs>,
    ctx: ExecContext,
}

struct RequestCatalog(Scope);

struct RequestSchema {
    scope: Scope,
    namespace: String,
}

impl std::fmt::Debug for RequestCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestCatalog")
    }
}

impl std::fmt::Debug for RequestSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestSchema({})", self.namespace)
    }
}

impl CatalogProvider for RequestCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .catalog
            .namespaces()
            .into_iter()
            .map(|n| n.id.to_string())
            .collect();
        names.push(NamespaceId::system().to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        // unknown namespaces resolve too, so that `table()` can say which part is unknown
        Some(Arc::new(RequestSchema {
            scope: self.0.clone(),
            namespace: name.to_string(),
        }))
    }
}

#[async_trait]
impl SchemaProvider for RequestSchema {
    fn table_names(&self) -> Vec<String> {
        match NamespaceId::parse(&self.namespace) {
            Ok(ns) => self
                .scope
                .catalog
                .tables_in(&ns)
                .iter()
                .map(|t| t.id.table.to_string())
                .collect(),
            Err(_) => vec![],
        }
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.resolve(name).map(Some).map_err(EngineError::into_datafusion)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }
}

impl RequestSchema {
    fn resolve(&self, name: &str) -> Result<Arc<dyn TableProvider>> {
        let s = &self.scope;
        let ns =
            NamespaceId::parse(&self.namespace).map_err(|_| EngineError::NamespaceNotFound(self.namespace.clone()))?;
        let table = TableName::parse(name).map_err(|_| EngineError::TableNotFound(format!("{ns}.{name}")))?;
        let id = TableId::new(ns, table);
        if id.namespace == NamespaceId::system() {
            return system_tables::provider(&s.catalog, &s.users, &s.live, &s.jobs, &s.store, &s.ctx, &id);
        }
        let def = resolve_table(&s.catalog, &s.ctx, &id, TableOp::Read)?;
        Ok(Arc::new(TieredTableProvider::new(
            s.store.clone(),
            s.cold.clone(),
            def,
            s.ctx.subject().clone(),
        )))
    }
}

fn json_to_scalar(v: &serde_json::Value) -> ScalarValue {
    match v {
        serde_json::Value::Null => ScalarValue::Null,
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => ScalarValue::Utf8(Some(other.to_string())),
    }
}

/// Binds `$n` parameters, cast to the types the plan infers for them.
fn bind_params(plan: LogicalPlan, params: &[serde_json::Value]) -> Result<LogicalPlan> {
    let types = plan.get_parameter_types()?;
    if types.is_empty() && params.is_empty() {
        return Ok(plan);
    }
    if types.len() != params.len() {
        return Err(EngineError::InvalidInput(format!(
            "the statement has {} parameter(s), {} given",
            types.len(),
            params.len()
        )));
    }
    let mut values = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let name = format!("${}", i + 1);
        let scalar = json_to_scalar(p);
        let scalar = match types.get(&name) {
            Some(Some(dt)) => scalar
                .cast_to(dt)
                .map_err(|_| EngineError::TypeMismatch(format!("parameter {name} cannot be converted to {dt}")))?,
            Some(None) => scalar,
            None => {
                return Err(EngineError::InvalidInput(format!(
                    "parameter {name} is not used by the statement"
                )));
            }
        };
        values.push(scalar);
    }
    plan.with_param_values(values).map_err(EngineError::from)
}

impl Engine {
    /// Plans and runs a query statement for the caller.
    pub(crate) async fn run_query(
        &self,
        ctx: &ExecContext,
        stmt: ast::Statement,
        params: &[serde_json::Value],
    ) -> Result<Vec<RecordBatch>> {
        let scope = Scope {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            users: self.accounts.users.clone(),
            live: self.live.clone(),
            cold: self.cold.clone(),
            jobs: self.jobs.clone(),
            ctx: ctx.clone(),
        };
        let list = MemoryCatalogProviderList::new();
        datafusion::catalog::CatalogProviderList::register_catalog(
            &list,
            "kalam".into(),
            Arc::new(RequestCatalog(scope)),
        );
        let state = self.statement_state(
            SessionStateBuilder::new_from_existing(self.df_state.clone()).with_catalog_list(Arc::new(list)),
        )?;
        let plan = state.statement_to_plan(DfStatement::Statement(Box::new(stmt))).await?;
        let plan = bind_params(plan, params)?;
        self.collect_bounded(DataFrame::new(state, plan)).await
    }

    /// The session one statement runs in: `builder` with a memory pool of the
    /// statement's own, so that one query's joins, sorts and aggregates fail with
    /// `MEMORY_LIMIT_EXCEEDED` at `max_query_memory_bytes` instead of taking the
    /// process's memory.
    pub(crate) fn statement_state(&self, builder: SessionStateBuilder) -> Result<SessionState> {
        let runtime = RuntimeEnvBuilder::from_runtime_env(self.df_state.runtime_env())
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(self.config.max_query_memory_bytes)))
            .build_arc()?;
        Ok(builder.with_runtime_env(runtime).build())
    }

    /// Runs a plan to completion within the statement bounds: its batches may hold at
    /// most `max_result_bytes`, and it is stopped (its tasks dropped) after
    /// `statement_timeout_ms`. Batches are counted as they stream, so a result too
    /// large (a cross join) fails after the bound, not after it is all built.
    pub(crate) async fn collect_bounded(&self, df: DataFrame) -> Result<Vec<RecordBatch>> {
        let limit = self.config.max_result_bytes;
        let work = async move {
            let mut stream = df.execute_stream().await?;
            let (mut out, mut bytes) = (Vec::new(), 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e: DataFusionError| EngineError::from(e))?;
                bytes += batch_bytes(&batch);
                if bytes > limit {
                    return Err(EngineError::ResultTooLarge(format!(
                        "the result is larger than {limit} bytes; add a LIMIT or narrow the WHERE"
                    )));
                }
                out.push(batch);
                // a plan whose every batch is ready at once still lets the timeout in
                tokio::task::consume_budget().await;
            }
            Ok(out)
        };
        // on a task of its own, so that the timeout answers even while one poll of
        // the plan computes for long (a nested-loop join does its work in one), and so
        // that the plan is stopped when the caller goes away (the client disconnected)
        let mut task = AbortOnDrop(tokio::spawn(work));
        let timeout = self.config.statement_timeout_ms;
        match tokio::time::timeout(std::time::Duration::from_millis(timeout), &mut task.0).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(EngineError::Internal(format!("the query task failed: {e}"))),
            Err(_) => Err(EngineError::Timeout(timeout)),
        }
    }
}

/// A query's task, stopped when it is dropped: at the statement timeout, or when the
/// request that started it is dropped. The task ends at its next await point.
struct AbortOnDrop(tokio::task::JoinHandle<Result<Vec<RecordBatch>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The bytes a batch's rows take (its slice of shared buffers, not the buffers).
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}
