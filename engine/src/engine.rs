//! The engine: opens the store, loads the catalog and users, runs the commit pipeline,
//! and offers the typed read/write API that the SQL and GraphQL layers call. Every
//! entry point checks the caller's permission before it touches data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use kalamdb_auth::{identity::UserId, password, permissions, permissions::TableOp};
use kalamdb_storage::cold::{ColdStore, ColdStoreOptions};
use kalamdb_storage::{hot_store::Durability, hot_store::HotStore, hot_store::StoreOptions, seq::Seq, seq::now_millis};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::accounts::audit::{AuditAction, AuditEvent};
use crate::catalog::schema::{DefaultExpr, FlushPolicy, TableDef};
use crate::catalog::{Catalog, NamespaceDef};
use crate::context::ExecContext;
use crate::error::{EngineError, Result};
use crate::faults::Faults;
use crate::ids::{ColumnName, NamespaceId, TableId};
use crate::jobs::{Jobs, JobsConfig};
use crate::live::LiveHub;
use crate::read::row_cache::RowCache;
use crate::read::select::Rows;
use crate::sql::eval::{BuiltinFn, EvalEnv};
use crate::sql::parse::{self, Statement};
use crate::sql::result::SqlResult;
use crate::tiers::cold::ColdTier;
use crate::tiers::flush::Unflushed;
use crate::types::{Pk, Value};
use crate::write::commit::{CommitPipeline, OnConflict, Sinks, WriteOp, WriteOutcome, WriteRequest};
use crate::write::mutate::{Changes, ConflictAction};
use crate::write::row_expr::RowExpr;

/// The engine's settings. This is the one definition of each: the server's
/// configuration file and environment take them by these names (the server's `Config`
/// flattens this struct), and [`EngineConfig::default`] holds their defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// bcrypt cost for new password hashes (12 in production; tests may go lower).
    pub bcrypt_cost: u32,
    /// Given to `root` at first start when it has no password yet.
    pub root_password: Option<String>,
    /// Whether `root` may log in from addresses other than loopback.
    pub root_remote_login: bool,
    /// How often a statement is retried when rows changed under it.
    pub write_retries: usize,
    /// Lifetime of access tokens.
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens.
    pub refresh_token_ttl_secs: u64,
    /// How deep a typed filter (`where`) may nest.
    pub max_filter_depth: usize,
    /// How many conditions and list values a typed filter may hold.
    pub max_filter_nodes: usize,
    /// How long change-log entries are kept for resuming change feeds.
    pub change_log_retention_secs: u64,
    /// Changes a subscription may have queued before it is ended as too slow (a live
    /// query reads its result again instead).
    pub live_queue_capacity: usize,
    /// Threads that evaluate live queries, at a lower CPU priority than requests.
    pub live_eval_threads: usize,
    /// Failed logins in a row after which an account is locked (0: never).
    pub login_max_failures: u32,
    /// How long a locked account stays locked.
    pub login_lockout_secs: u64,
    /// Where Parquet segments go (default: `<data_dir>/cold`).
    pub cold_dir: Option<PathBuf>,
    /// An object store for the Parquet segments instead of `cold_dir`
    /// (`s3://bucket[/prefix]`), with its options.
    pub cold_store_url: Option<String>,
    pub cold_store_options: ColdStoreOptions,
    /// The flush policy of tables created without `FLUSH_POLICY`, written
    /// `rows:N,interval:S`; empty: flush on demand only.
    #[serde(with = "flush_policy_text")]
    pub default_flush_policy: Option<FlushPolicy>,
    /// How many jobs run at once.
    pub max_concurrent_jobs: usize,
    /// How often a failed job is retried.
    pub job_max_retries: u32,
    /// The first retry waits this long, each next one twice as long.
    pub job_backoff_ms: u64,
    /// How often STREAM tables are swept for expired rows.
    pub ttl_check_secs: u64,
    /// How long a deleted row's tombstone is kept before it is purged.
    pub deleted_retention_secs: u64,
    /// How often tables are swept for tombstones past retention.
    pub retention_check_secs: u64,
    /// How long a compaction leaves the segments it replaced for readers still on them.
    pub segment_delete_grace_ms: u64,
    /// How long one query may run before it is stopped (`STATEMENT_TIMEOUT`).
    pub statement_timeout_ms: u64,
    /// The memory one query's joins, sorts and aggregates may take
    /// (`MEMORY_LIMIT_EXCEEDED` past it).
    pub max_query_memory_bytes: usize,
    /// The most bytes one query's result may hold (`RESULT_TOO_LARGE` past it).
    pub max_result_bytes: usize,
    /// The longest text one function (`repeat`, `lpad`, `rpad`, `replace`) may build.
    pub max_value_bytes: usize,
    /// The memory the cache of decoded rows may take.
    pub row_cache_bytes: usize,
    /// RocksDB's block cache, shared by all tables.
    pub block_cache_bytes: usize,
    /// RocksDB's memtables across all tables.
    pub write_buffer_bytes: usize,
    /// The caches of the cold tier's key lookups (byte ranges of segments, decoded row
    /// groups).
    pub cold_cache_bytes: usize,
    /// How long audit-log events are kept.
    pub audit_retention_days: u64,
    /// How often expired audit events, refresh tokens and revoked sessions are purged.
    pub housekeeping_secs: u64,
    /// Test-only fault injection (`KALAMDB_TEST_FAULTS`), never from a file.
    #[serde(skip)]
    pub faults: Faults,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::new("./data")
    }
}

/// A flush policy setting as text: `rows:N,interval:S`, or empty for none.
mod flush_policy_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::catalog::schema::FlushPolicy;

    pub fn serialize<S: Serializer>(p: &Option<FlushPolicy>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.map(|p| p.render()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FlushPolicy>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        FlushPolicy::parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Sync,
            bcrypt_cost: password::DEFAULT_COST,
            root_password: None,
            root_remote_login: false,
            write_retries: 32,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            max_filter_depth: 16,
            max_filter_nodes: 1000,
            change_log_retention_secs: 24 * 3600,
            live_queue_capacity: 4096,
            live_eval_threads: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            login_max_failures: 5,
            login_lockout_secs: 15 * 60,
            cold_dir: None,
            cold_store_url: None,
            cold_store_options: ColdStoreOptions::default(),
            default_flush_policy: Some(FlushPolicy {
                rows: Some(100_000),
                interval_secs: Some(600),
            }),
            max_concurrent_jobs: 2,
            job_max_retries: 3,
            job_backoff_ms: 1000,
            ttl_check_secs: 10,
            deleted_retention_secs: 7 * 24 * 3600,
            retention_check_secs: 3600,
            segment_delete_grace_ms: 5000,
            statement_timeout_ms: 30_000,
            max_query_memory_bytes: 256 << 20,
            max_result_bytes: 64 << 20,
            max_value_bytes: 16 << 20,
            row_cache_bytes: 256 << 20,
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 128 << 20,
            cold_cache_bytes: 192 << 20,
            audit_retention_days: 90,
            housekeeping_secs: 3600,
            faults: Faults::default(),
        }
    }
}

pub struct Engine {
    pub(crate) store: Arc<HotStore>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) accounts: Accounts,
    pub(crate) commit: CommitPipeline,
    pub(crate) df_state: SessionState,
    pub(crate) config: EngineConfig,
    pub(crate) row_cache: Arc<RowCache>,
    pub(crate) live: Arc<LiveHub>,
    pub(crate) cold: Arc<ColdTier>,
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) unflushed: Arc<Unflushed>,
    /// Rows deleted per table since its last tombstone purge.
    pub(crate) deleted: Arc<Unflushed>,
    /// When the full device was last probed for space (ms since the epoch).
    space_probed_ms: std::sync::atomic::AtomicU64,
    /// Flushes and compactions of one table run one at a time.
    pub(crate) table_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

/// Checks that the caller may perform `op` on this table. A table the caller may not
/// even read is answered as if it did not exist, exactly as an unknown name is, so
/// that no caller learns which tables exist beyond those it may read (its GraphQL
/// schema leaves them out the same way).
pub(crate) fn authorize_table(ctx: &ExecContext, table: &TableDef, op: TableOp) -> Result<()> {
    let may = |op| permissions::can_access_table(ctx.role, table.table_type, table.access_level, op);
    if may(op) {
        return Ok(());
    }
    if !may(TableOp::Read) {
        return Err(EngineError::TableNotFound(table.id.to_string()));
    }
    let verb = match op {
        TableOp::Read => "read",
        TableOp::Write => "write",
    };
    Err(EngineError::forbidden(format!(
        "role {} may not {verb} table {}",
        ctx.role, table.id
    )))
}

/// Resolves a table for the caller: the one place that decides whether a table may be
/// read or written, used by every entry point (typed API, SQL, DataFusion catalog).
pub(crate) fn resolve_table(catalog: &Catalog, ctx: &ExecContext, id: &TableId, op: TableOp) -> Result<Arc<TableDef>> {
    if id.namespace == NamespaceId::system() {
        return Err(if op == TableOp::Write {
            EngineError::forbidden("system tables are read-only")
        } else {
            EngineError::forbidden("system tables are read through SQL only")
        });
    }
    let table = catalog.resolve(id)?;
    authorize_table(ctx, &table, op)?;
    Ok(table)
}

/// Purges the change log past its retention now and then, for as long as the engine lives.
fn spawn_change_log_purge(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    let every = std::time::Duration::from_millis((engine.config.change_log_retention_secs * 250).clamp(50, 60_000));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(engine) = weak.upgrade() else { return };
            if let Err(e) = engine.purge_change_log() {
                tracing::warn!(error = %e, "change-log purge failed");
            }
        }
    });
}

/// Runs the accounts' housekeeping (audit retention, expired tokens and sessions) at
/// start and then every `housekeeping_secs`, for as long as the engine lives.
fn spawn_housekeeping(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    let every = std::time::Duration::from_secs(engine.config.housekeeping_secs.max(1));
    tokio::spawn(async move {
        loop {
            let Some(engine) = weak.upgrade() else { return };
            if let Err(e) = engine.accounts.housekeeping(engine.config.audit_retention_days) {
                tracing::warn!(error = %e, "housekeeping failed");
            }
            drop(engine);
            tokio::time::sleep(every).await;
        }
    });
}

/// A row returned by the typed read API: its `_seq` and values in column order.
pub type Row = (Seq, Vec<Value>);

impl Engine {
    pub async fn open(config: EngineConfig) -> Result<Arc<Self>> {
        Self::open_with(config, None).await
    }

    /// As [`Engine::open`], with a local cold tier written through `files` (the
    /// crash-consistency tests record its calls).
    pub(crate) async fn open_with(
        config: EngineConfig,
        files: Option<Arc<dyn kalamdb_storage::cold::files::FileOps>>,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| EngineError::Internal(format!("cannot create data dir: {e}")))?;
        let store_opts = StoreOptions {
            durability: config.durability,
            write_buffer_bytes: config.write_buffer_bytes,
            block_cache_bytes: config.block_cache_bytes,
        };
        let path = config.data_dir.join("hot");
        let cold_dir = config.cold_dir.clone().unwrap_or_else(|| config.data_dir.join("cold"));
        let (cold_url, cold_options) = (config.cold_store_url.clone(), config.cold_store_options.clone());
        let cold_cache_bytes = config.cold_cache_bytes;
        let jobs_config = JobsConfig {
            max_concurrent: config.max_concurrent_jobs,
            max_retries: config.job_max_retries,
            backoff_base_ms: config.job_backoff_ms,
            keep_finished_ms: 7 * 24 * 3600 * 1000,
        };
        let accounts_config = config.clone();
        let (store, catalog, accounts, cold, jobs) = tokio::task::spawn_blocking(move || -> Result<_> {
            let store = Arc::new(HotStore::open(&path, &store_opts)?);
            let catalog = Arc::new(Catalog::load(&store)?);
            let accounts = Accounts::open(store.clone(), &accounts_config)?;
            let cold = Arc::new(ColdTier {
                store: Arc::new(
                    match &cold_url {
                        Some(url) => ColdStore::at_url(url, &cold_options)?,
                        None => match files {
                            Some(ops) => ColdStore::local_with(&cold_dir, ops)?,
                            None => ColdStore::local(&cold_dir)?,
                        },
                    }
                    .with_cache_bytes(cold_cache_bytes),
                ),
            });
            let jobs = Arc::new(Jobs::load(store.clone(), jobs_config, now_millis())?);
            Ok((store, catalog, accounts, cold, jobs))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;

        let session_config = SessionConfig::new()
            .with_default_catalog_and_schema("kalam", "public")
            .with_information_schema(false)
            .with_target_partitions(1)
            .with_create_default_catalog_and_schema(false);
        let mut df_state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_default_features()
            .build();
        crate::sql::bounded::bound_growing_functions(&mut df_state, config.max_value_bytes);
        crate::sql::pg_text::fold_case_as_postgresql(&mut df_state);
        let row_cache = Arc::new(RowCache::new(config.row_cache_bytes));
        let live = LiveHub::new(config.live_queue_capacity, config.live_eval_threads);
        let unflushed = Arc::new(Unflushed::default());
        let deleted = Arc::new(Unflushed::default());
        let commit = CommitPipeline::start(
            store.clone(),
            catalog.clone(),
            Sinks {
                cache: row_cache.clone(),
                live: live.clone(),
                unflushed: unflushed.clone(),
                deleted: deleted.clone(),
            },
            cold.clone(),
        );
        let engine = Arc::new(Self {
            store,
            catalog,
            accounts,
            commit,
            df_state,
            config,
            row_cache,
            live,
            cold,
            jobs,
            unflushed,
            deleted,
            space_probed_ms: Default::default(),
            table_locks: Mutex::new(HashMap::new()),
        });
        engine.bootstrap().await?;
        spawn_change_log_purge(&engine);
        spawn_housekeeping(&engine);
        engine.spawn_job_runner();
        Ok(engine)
    }

    /// Creates `public` and `root` on first start; gives root its configured password.
    async fn bootstrap(&self) -> Result<()> {
        if !self.catalog.namespace_exists(&NamespaceId::public()) {
            self.catalog.put_namespace(
                &self.store,
                NamespaceDef {
                    id: NamespaceId::public(),
                    created_at_ms: now_millis(),
                },
            )?;
        }
        self.accounts.bootstrap_root().await
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether the device holding the data is full, so that writes fail with
    /// `STORAGE_FULL` (reads still work). Once a write found it full, a small synced
    /// write checks again, at most once a second, and clears it when space is back.
    pub async fn storage_full(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.store.is_full() {
            return false;
        }
        let now = now_millis();
        let last = self.space_probed_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .space_probed_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return true;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.probe_space())
            .await
            .unwrap_or(true)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Users, sessions, logins and the audit log.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Resolves a table and checks that the caller may perform `op` on it.
    pub fn table_for(&self, ctx: &ExecContext, id: &TableId, op: TableOp) -> Result<Arc<TableDef>> {
        resolve_table(&self.catalog, ctx, id, op)
    }

    pub(crate) fn eval_env<'a>(&'a self, ctx: &'a ExecContext, params: &'a [serde_json::Value]) -> EvalEnv<'a> {
        EvalEnv {
            params,
            subject: ctx.subject(),
            seq: self.store.seq(),
        }
    }

    pub(crate) fn row_owner(table: &TableDef, ctx: &ExecContext) -> Option<UserId> {
        table.table_type.is_per_user().then(|| ctx.subject().clone())
    }

    /// Builds a full row for insertion: fills defaults, converts types, enforces NOT
    /// NULL and rejects unknown or system columns.
    pub(crate) fn build_row(table: &TableDef, provided: Vec<(usize, Value)>, env: &EvalEnv<'_>) -> Result<Vec<Value>> {
        let schema = table.current();
        let mut row: Vec<Option<Value>> = vec![None; schema.columns.len()];
        for (i, v) in provided {
            let col = &schema.columns[i];
            if row[i].is_some() {
                return Err(EngineError::InvalidInput(format!(
                    "column '{}' is given twice",
                    col.name
                )));
            }
            row[i] = Some(v.coerce(col.ty)?);
        }
        row.into_iter()
            .zip(&schema.columns)
            .map(|(v, col)| {
                let v = match v {
                    Some(v) => v,
                    None => match &col.default {
                        None => Value::Null,
                        Some(DefaultExpr::Literal(j)) => Value::from_json(col.ty, j)?,
                        Some(DefaultExpr::Now) => BuiltinFn::Now.eval(env).coerce(col.ty)?,
                        Some(DefaultExpr::SnowflakeId) => BuiltinFn::SnowflakeId.eval(env).coerce(col.ty)?,
                        Some(DefaultExpr::UuidV7) => BuiltinFn::UuidV7.eval(env).coerce(col.ty)?,
                        Some(DefaultExpr::CurrentUser) => BuiltinFn::CurrentUser.eval(env).coerce(col.ty)?,
                    },
                };
                if v.is_null() && !col.nullable {
                    return Err(EngineError::NotNull(col.name.to_string()));
                }
                Ok(v)
            })
            .collect()
    }

    /// Column index by name, with a clear error for unknown and system columns.
    pub(crate) fn column_index(table: &TableDef, name: &str) -> Result<usize> {
        if name == "_seq" || name == "_deleted" {
            return Err(EngineError::InvalidInput(format!(
                "system column '{name}' cannot be written"
            )));
        }
        table
            .current()
            .column_index(name)
            .ok_or_else(|| EngineError::ColumnNotFound {
                table: table.id.to_string(),
                column: name.to_string(),
            })
    }

    /// Runs a read-modify-write again while its rows keep changing under it.
    pub(crate) async fn retrying<'a, T, F, Fut>(&'a self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'a,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(EngineError::WriteConflict) if attempt < self.config.write_retries => {
                    attempt += 1;
                    // back off a little more each time, so contending writers spread out
                    tokio::time::sleep(std::time::Duration::from_micros(50 * attempt as u64)).await;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn write(
        &self,
        table: &Arc<TableDef>,
        ctx: &ExecContext,
        ops: Vec<WriteOp>,
    ) -> Result<WriteOutcome> {
        self.commit
            .write(WriteRequest {
                table: table.clone(),
                user: Self::row_owner(table, ctx),
                ops,
            })
            .await
    }

    // ---- the typed API -------------------------------------------------------------

    /// Inserts rows given as `(column, value)` pairs; all of them or none. With
    /// [`ConflictAction::Update`], a row whose key exists gets the named columns of the
    /// proposed row instead (an upsert).
    pub async fn insert(
        &self,
        ctx: &ExecContext,
        table: &TableId,
        rows: Vec<Vec<(ColumnName, Value)>>,
        on_conflict: ConflictAction,
    ) -> Result<Changes> {
        let table = self.table_for(ctx, table, TableOp::Write)?;
        let on_conflict = match on_conflict {
            ConflictAction::Error => OnConflict::Error,
            ConflictAction::DoNothing => OnConflict::DoNothing,
            ConflictAction::Update(cols) => {
                let mut set = Vec::with_capacity(cols.len());
                for c in &cols {
                    let i = Self::column_index(&table, c.as_str())?;
                    if table.current().is_pk(i) {
                        continue;
                    }
                    set.push((i, RowExpr::Excluded(i)));
                }
                OnConflict::DoUpdate(set)
            }
        };
        let env = self.eval_env(ctx, &[]);
        let mut ops = Vec::with_capacity(rows.len());
        for r in rows {
            let provided = r
                .into_iter()
                .map(|(c, v)| Ok((Self::column_index(&table, c.as_str())?, v)))
                .collect::<Result<Vec<_>>>()?;
            ops.push(WriteOp::Insert {
                values: Self::build_row(&table, provided, &env)?,
                on_conflict: on_conflict.clone(),
            });
        }
        let out = self.write(&table, ctx, ops).await?;
        Ok(Changes {
            table,
            changes: out.changes,
        })
    }

    /// Reads one row by primary key (the caller's own row for per-user tables): a point
    /// lookup, with no filter to bind or key plan to derive.
    pub async fn get_by_pk(&self, ctx: &ExecContext, table: &TableId, pk: &Pk) -> Result<Rows> {
        let table = self.table_for(ctx, table, TableOp::Read)?;
        let pk = table.current().coerce_pk(pk.clone())?;
        let user = table.table_type.is_per_user().then(|| ctx.subject());
        let row = self.lookup(&table, user, &pk).await?;
        Ok(Rows {
            table,
            rows: row.into_iter().collect(),
        })
    }

    /// Runs one SQL statement with `$n` parameters.
    pub async fn execute_sql(&self, ctx: &ExecContext, sql: &str, params: &[serde_json::Value]) -> Result<SqlResult> {
        let stmt = parse::parse(sql)?;
        let audited = audit_of(&stmt);
        let result = match stmt {
            Statement::Sql(s) => self.execute_standard(ctx, *s, params).await,
            other => self.execute_admin(ctx, other).await,
        };
        if let Err(e) = &result
            && e.code() == crate::error::ErrorCode::Forbidden
        {
            self.accounts.audit_forbidden(ctx, &e.to_string());
        }
        if let (Ok(_), Some((action, target, detail))) = (&result, audited) {
            self.accounts.audit_event(AuditEvent {
                action,
                actor: ctx.user.to_string(),
                subject: ctx.impersonating().map(ToString::to_string),
                target,
                source: ctx.source,
                detail,
            });
        }
        result
    }
}

/// The audit entry of a statement that changes schema or users: action, target and a
/// note. The note never holds a statement's text, which may carry a password.
fn audit_of(stmt: &Statement) -> Option<(AuditAction, String, String)> {
    use datafusion::sql::sqlparser::ast;
    Some(match stmt {
        Statement::CreateNamespace { name, .. } => (AuditAction::Ddl, name.to_string(), "CREATE NAMESPACE".into()),
        Statement::DropNamespace { name, .. } => (AuditAction::Ddl, name.to_string(), "DROP NAMESPACE".into()),
        Statement::CreateUser { name, role, .. } => (AuditAction::CreateUser, name.clone(), format!("role {role}")),
        Statement::AlterUser { name, change } => (
            AuditAction::AlterUser,
            name.clone(),
            match change {
                parse::UserChange::Password(_) => "password changed".into(),
                parse::UserChange::Role(r) => format!("role {r}"),
            },
        ),
        Statement::DropUser { name, .. } => (AuditAction::DropUser, name.clone(), String::new()),
        Statement::CreateIndex { name, table, .. } => {
            (AuditAction::Ddl, table.to_string(), format!("CREATE INDEX {name}"))
        }
        Statement::DropIndex { namespace, name, .. } => {
            (AuditAction::Ddl, format!("{namespace}.{name}"), "DROP INDEX".into())
        }
        Statement::Sql(s) => match s.as_ref() {
            ast::Statement::CreateTable(ct) => (AuditAction::Ddl, ct.name.to_string(), "CREATE TABLE".into()),
            ast::Statement::AlterTable(at) => (AuditAction::Ddl, at.name.to_string(), "ALTER TABLE".into()),
            ast::Statement::Drop { object_type, names, .. } => (
                AuditAction::Ddl,
                names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                format!("DROP {object_type}"),
            ),
            _ => return None,
        },
        _ => return None,
    })
}
