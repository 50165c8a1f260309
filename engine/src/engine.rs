//! The engine: opens the store, loads the catalog and users, runs the commit pipeline,
//! and offers the typed read/write API that the SQL and GraphQL layers call. Every
//! entry point checks the caller's permission before it touches data.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use kalamdb_auth::{identity::Role, identity::UserId, password, permissions, permissions::TableOp};
use kalamdb_storage::{hot_store::Durability, hot_store::HotStore, hot_store::StoreOptions, seq::Seq, seq::now_millis};

use crate::catalog::{Catalog, NamespaceDef};
use crate::commit::{CommitPipeline, OnConflict, WriteOp, WriteOutcome, WriteRequest};
use crate::context::ExecContext;
use crate::error::{EngineError, Result};
use crate::ids::{ColumnName, NamespaceId, TableId};
use crate::live::LiveHub;
use crate::mutate::{Changes, ConflictAction};
use crate::reader::PartitionReader;
use crate::row_cache::RowCache;
use crate::row_expr::RowExpr;
use crate::schema::{DefaultExpr, TableDef};
use crate::select::Rows;
use crate::sessions::{Sessions, TokenPair};
use crate::sql::eval::{BuiltinFn, EvalEnv};
use crate::sql::parse::{self, Statement};
use crate::sql::result::SqlResult;
use crate::types::Value;
use crate::users::{UserRecord, UserStore};

#[derive(Debug, Clone)]
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
    /// Changes a subscription may have queued before it is ended as too slow.
    pub live_queue_capacity: usize,
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
        }
    }
}

pub struct Engine {
    pub(crate) store: Arc<HotStore>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) users: Arc<UserStore>,
    pub(crate) commit: CommitPipeline,
    pub(crate) df_state: SessionState,
    pub(crate) config: EngineConfig,
    sessions: Sessions,
    pub(crate) row_cache: Arc<RowCache>,
    pub(crate) live: Arc<LiveHub>,
    dummy_hash: String,
}

/// Checks that the caller may perform `op` on this table.
pub(crate) fn authorize_table(ctx: &ExecContext, table: &TableDef, op: TableOp) -> Result<()> {
    if permissions::can_access_table(ctx.role, table.table_type, table.access_level, op) {
        return Ok(());
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

/// A row returned by the typed read API: its `_seq` and values in column order.
pub type Row = (Seq, Vec<Value>);

impl Engine {
    pub async fn open(config: EngineConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| EngineError::Internal(format!("cannot create data dir: {e}")))?;
        let store_opts = StoreOptions {
            durability: config.durability,
            ..StoreOptions::default()
        };
        let path = config.data_dir.join("hot");
        let cost = config.bcrypt_cost;
        let (access_ttl, refresh_ttl) = (config.access_token_ttl_secs, config.refresh_token_ttl_secs);
        let (store, catalog, users, sessions, dummy_hash) = tokio::task::spawn_blocking(move || -> Result<_> {
            let store = Arc::new(HotStore::open(&path, &store_opts)?);
            let catalog = Arc::new(Catalog::load(&store)?);
            let users = Arc::new(UserStore::load(&store)?);
            let sessions = Sessions::open(&store, access_ttl, refresh_ttl)?;
            Ok((store, catalog, users, sessions, password::dummy_hash(cost)))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??;

        let session_config = SessionConfig::new()
            .with_default_catalog_and_schema("kalam", "public")
            .with_information_schema(false)
            .with_target_partitions(1)
            .with_create_default_catalog_and_schema(false);
        let df_state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_default_features()
            .build();
        let row_cache = Arc::new(RowCache::default());
        let live = Arc::new(LiveHub::new(config.live_queue_capacity));
        let commit = CommitPipeline::start(store.clone(), catalog.clone(), row_cache.clone(), live.clone());
        let engine = Arc::new(Self {
            store,
            catalog,
            users,
            commit,
            df_state,
            config,
            sessions,
            row_cache,
            live,
            dummy_hash,
        });
        engine.bootstrap().await?;
        spawn_change_log_purge(&engine);
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
        let root = self.users.get(&UserId::root());
        let needs_password = root.as_ref().is_none_or(|r| r.password_hash.is_none());
        if root.is_none() || (needs_password && self.config.root_password.is_some()) {
            let hash = match (&self.config.root_password, needs_password) {
                (Some(p), true) => Some(self.hash_password(p.clone()).await?),
                _ => root.as_ref().and_then(|r| r.password_hash.clone()),
            };
            let now = now_millis();
            self.users.put(
                &self.store,
                UserRecord {
                    id: UserId::root(),
                    role: Role::System,
                    password_hash: hash,
                    created_at_ms: root.as_ref().map_or(now, |r| r.created_at_ms),
                    updated_at_ms: now,
                    deleted_at_ms: None,
                },
            )?;
        }
        Ok(())
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) async fn hash_password(&self, pw: String) -> Result<String> {
        let cost = self.config.bcrypt_cost;
        tokio::task::spawn_blocking(move || password::hash(&pw, cost))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .map_err(EngineError::from)
    }

    /// Checks a username and password. Every failure (unknown, deleted, wrong password,
    /// no password, root from afar) is the same [`EngineError::Unauthenticated`] and
    /// costs one bcrypt verification, so neither message nor timing tells them apart.
    pub async fn authenticate(&self, username: &str, pw: &str, from_loopback: bool) -> Result<ExecContext> {
        let user = UserId::parse(username).ok().and_then(|id| self.users.active(&id));
        let hash = user
            .as_ref()
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let pw = pw.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        match user {
            Some(u) if ok && u.password_hash.is_some() => {
                if u.role == Role::System
                    && u.id.as_str() == UserId::ROOT
                    && !from_loopback
                    && !self.config.root_remote_login
                {
                    return Err(EngineError::Unauthenticated);
                }
                Ok(ExecContext::new(u.id, u.role))
            }
            _ => Err(EngineError::Unauthenticated),
        }
    }

    /// The caller of a bearer access token and when the token expires (Unix seconds).
    /// The user must still be active, and the role is the lower of the token's and the
    /// current one.
    pub fn token_session(&self, token: &str) -> Result<(ExecContext, u64)> {
        let (user, role, exp) = self.sessions.verify(token)?;
        let current = self
            .users
            .active(&user)
            .ok_or_else(|| EngineError::InvalidToken("invalid token".into()))?;
        Ok((ExecContext::new(user, role.min(current.role)), exp))
    }

    /// The context for an already verified identity (a token), if the user is active.
    pub fn context_for(&self, user: &UserId) -> Option<ExecContext> {
        self.users.active(user).map(|u| ExecContext::new(u.id, u.role))
    }

    /// Password login: an access token and a refresh token.
    pub async fn login(&self, username: &str, pw: &str, from_loopback: bool) -> Result<TokenPair> {
        let ctx = self.authenticate(username, pw, from_loopback).await?;
        self.sessions.issue(&self.store, &ctx.user, ctx.role)
    }

    /// Rotates a refresh token (used once; reuse revokes the session family).
    pub fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        self.sessions
            .refresh(&self.store, refresh_token, |u| self.users.active(u).map(|r| r.role))
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
                    if i == table.current().pk {
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
    pub fn get_by_pk(&self, ctx: &ExecContext, table: &TableId, pk: &Value) -> Result<Rows> {
        let table = self.table_for(ctx, table, TableOp::Read)?;
        let pk = pk.clone().coerce(table.current().pk_column().ty)?;
        let row = PartitionReader::new(&self.store, &table, ctx.subject()).get(&pk)?;
        Ok(Rows {
            table,
            rows: row.into_iter().collect(),
        })
    }

    /// Runs one SQL statement with `$n` parameters.
    pub async fn execute_sql(&self, ctx: &ExecContext, sql: &str, params: &[serde_json::Value]) -> Result<SqlResult> {
        let stmt = parse::parse(sql)?;
        match stmt {
            Statement::Sql(s) => self.execute_standard(ctx, *s, params).await,
            other => self.execute_admin(ctx, other).await,
        }
    }
}
