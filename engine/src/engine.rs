//! The engine: opens the store, loads the catalog and users, runs the commit pipeline,
//! and offers the typed read/write API that the SQL and GraphQL layers call. Every
//! entry point checks the caller's permission before it touches data.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use kalamdb_auth::{identity::Role, identity::UserId, password, permissions, permissions::TableOp};
use kalamdb_storage::cold::{ColdStore, ColdStoreOptions};
use kalamdb_storage::{
    hot_store::Durability, hot_store::HotStore, hot_store::Partition, hot_store::StoreOptions, hot_store::WriteBatch,
    seq::Seq, seq::now_millis,
};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::audit::{AuditAction, AuditEvent, AuditLog};
use crate::catalog::{Catalog, NamespaceDef};
use crate::cold::ColdTier;
use crate::commit::{CommitPipeline, OnConflict, Sinks, WriteOp, WriteOutcome, WriteRequest};
use crate::context::ExecContext;
use crate::error::{EngineError, Result};
use crate::faults::Faults;
use crate::flush::Unflushed;
use crate::ids::{ColumnName, NamespaceId, TableId};
use crate::jobs::{Jobs, JobsConfig};
use crate::live::LiveHub;
use crate::mutate::{Changes, ConflictAction};
use crate::row_cache::RowCache;
use crate::row_expr::RowExpr;
use crate::schema::{DefaultExpr, FlushPolicy, TableDef};
use crate::select::Rows;
use crate::sessions::{RefreshOutcome, Sessions, TokenPair};
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
    /// Failed logins in a row after which an account is locked (0: never).
    pub login_max_failures: u32,
    /// How long a locked account stays locked.
    pub login_lockout_secs: u64,
    /// Where Parquet segments go (default: `<data_dir>/cold`).
    pub cold_dir: Option<PathBuf>,
    /// An object store for the Parquet segments instead of `cold_dir`
    /// (`s3://bucket[/prefix]`), with its options.
    pub cold_url: Option<String>,
    pub cold_options: ColdStoreOptions,
    /// The flush policy of tables created without `FLUSH_POLICY`.
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
    /// Test-only fault injection (`KALAMDB_TEST_FAULTS`).
    pub faults: Faults,
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
            login_max_failures: 5,
            login_lockout_secs: 15 * 60,
            cold_dir: None,
            cold_url: None,
            cold_options: ColdStoreOptions::default(),
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
            faults: Faults::default(),
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
    pub(crate) cold: Arc<ColdTier>,
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) unflushed: Arc<Unflushed>,
    /// Flushes and compactions of one table run one at a time.
    pub(crate) table_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    dummy_hash: String,
    pub(crate) audit: AuditLog,
    revocations: broadcast::Sender<Revocation>,
    failures: Mutex<HashMap<UserId, LoginFailures>>,
    /// When each (caller, user) pair last had its acting-as audited.
    act_as_audited: Mutex<HashMap<(UserId, UserId), u64>>,
    /// bcrypt runs off the async executor and on at most all cores but one, so that a
    /// burst of logins queues instead of starving every other request of CPU.
    bcrypt_slots: tokio::sync::Semaphore,
}

/// Acting as a user is audited once per this window per caller and user, not per request.
const ACT_AS_AUDIT_WINDOW_MS: u64 = 60_000;

/// Sessions that ended before their tokens expired; open WebSockets of theirs close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One session (a logout, or a reused refresh token).
    Session(String),
    /// Every session of a user (password or role change, deletion).
    User(UserId),
}

/// An authenticated caller and what its credentials were.
#[derive(Debug, Clone)]
pub struct Principal {
    pub ctx: ExecContext,
    /// Unix seconds at which a bearer token expires; `None` for a password.
    pub expires_at: Option<u64>,
    /// The session of a bearer token.
    pub session: Option<String>,
    /// The user's session epoch when authenticated.
    pub epoch: u64,
    /// Vouched for by a trusted external issuer, not by a local account.
    pub external: bool,
}

/// Why a password login was refused: for the audit log only, never for the caller.
enum LoginRefusal {
    UnknownUser,
    NoPassword,
    Locked,
    WrongPassword(UserId),
    RootFromAfar,
}

impl LoginRefusal {
    fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown or deleted user",
            Self::NoPassword => "no password set",
            Self::Locked => "account locked",
            Self::WrongPassword(_) => "wrong password",
            Self::RootFromAfar => "root from a non-loopback address",
        }
    }
}

#[derive(Default)]
struct LoginFailures {
    count: u32,
    locked_until_ms: u64,
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
        let cold_dir = config.cold_dir.clone().unwrap_or_else(|| config.data_dir.join("cold"));
        let (cold_url, cold_options) = (config.cold_url.clone(), config.cold_options.clone());
        let jobs_config = JobsConfig {
            max_concurrent: config.max_concurrent_jobs,
            max_retries: config.job_max_retries,
            backoff_base_ms: config.job_backoff_ms,
            keep_finished_ms: 7 * 24 * 3600 * 1000,
        };
        let (store, catalog, users, sessions, dummy_hash, cold, jobs) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let store = Arc::new(HotStore::open(&path, &store_opts)?);
                let catalog = Arc::new(Catalog::load(&store)?);
                let users = Arc::new(UserStore::load(&store)?);
                let sessions = Sessions::open(&store, access_ttl, refresh_ttl)?;
                let cold = Arc::new(ColdTier {
                    store: Arc::new(match &cold_url {
                        Some(url) => ColdStore::at_url(url, &cold_options)?,
                        None => ColdStore::local(&cold_dir)?,
                    }),
                });
                let jobs = Arc::new(Jobs::load(store.clone(), jobs_config, now_millis())?);
                Ok((store, catalog, users, sessions, password::dummy_hash(cost), cold, jobs))
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
        let unflushed = Arc::new(Unflushed::default());
        let commit = CommitPipeline::start(
            store.clone(),
            catalog.clone(),
            Sinks {
                cache: row_cache.clone(),
                live: live.clone(),
                unflushed: unflushed.clone(),
            },
            cold.clone(),
        );
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
            cold,
            jobs,
            unflushed,
            table_locks: Mutex::new(HashMap::new()),
            dummy_hash,
            audit: AuditLog::default(),
            revocations: broadcast::channel(1024).0,
            failures: Mutex::new(HashMap::new()),
            act_as_audited: Mutex::new(HashMap::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
            ),
        });
        engine.bootstrap().await?;
        spawn_change_log_purge(&engine);
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
                    session_epoch: root.as_ref().map_or(0, |r| r.session_epoch + 1),
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

    /// Runs bcrypt work off the executor, once one of the bcrypt slots is free.
    async fn bcrypt<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let internal = |e: &dyn std::fmt::Display| EngineError::Internal(e.to_string());
        let _slot = self.bcrypt_slots.acquire().await.map_err(|e| internal(&e))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| internal(&e))
    }

    pub(crate) async fn hash_password(&self, pw: String) -> Result<String> {
        let cost = self.config.bcrypt_cost;
        self.bcrypt(move || password::hash(&pw, cost))
            .await?
            .map_err(EngineError::from)
    }

    /// Checks a username and password. Every failure (unknown, deleted, wrong password,
    /// no password, locked, root from afar) is the same [`EngineError::Unauthenticated`]
    /// and costs one bcrypt verification, so neither message nor timing tells them
    /// apart; the audit log records which it was. `login_max_failures` wrong passwords
    /// in a row lock the account for `login_lockout_secs`.
    pub async fn authenticate(&self, username: &str, pw: &str, source: IpAddr) -> Result<Principal> {
        let user = UserId::parse(username).ok().and_then(|id| self.users.active(&id));
        let hash = user
            .as_ref()
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let pw = pw.to_string();
        let ok = self.bcrypt(move || password::verify(&pw, &hash)).await?;
        let refusal = match &user {
            None => Err(LoginRefusal::UnknownUser),
            Some(u) if u.password_hash.is_none() => Err(LoginRefusal::NoPassword),
            Some(u) if self.is_locked(&u.id) => Err(LoginRefusal::Locked),
            Some(u) if !ok => Err(LoginRefusal::WrongPassword(u.id.clone())),
            Some(u)
                if u.role == Role::System
                    && u.id.as_str() == UserId::ROOT
                    && !source.is_loopback()
                    && !self.config.root_remote_login =>
            {
                Err(LoginRefusal::RootFromAfar)
            }
            Some(_) => Ok(()),
        };
        let user = match (refusal, user) {
            (Ok(()), Some(u)) => u,
            (refusal, _) => {
                let refusal = refusal.err().unwrap_or(LoginRefusal::UnknownUser);
                if let LoginRefusal::WrongPassword(id) = &refusal {
                    self.note_failure(id);
                }
                self.audit_event(AuditEvent {
                    action: AuditAction::LoginFailed,
                    actor: username.chars().take(128).collect(),
                    subject: None,
                    target: "password".into(),
                    source: Some(source),
                    detail: refusal.as_str().into(),
                });
                return Err(EngineError::Unauthenticated);
            }
        };
        self.failures.lock().remove(&user.id);
        Ok(Principal {
            ctx: ExecContext::new(user.id, user.role).from_source(source),
            expires_at: None,
            session: None,
            epoch: user.session_epoch,
            external: false,
        })
    }

    fn is_locked(&self, user: &UserId) -> bool {
        self.failures
            .lock()
            .get(user)
            .is_some_and(|f| f.locked_until_ms > now_millis())
    }

    fn note_failure(&self, user: &UserId) {
        let max = self.config.login_max_failures;
        if max == 0 {
            return;
        }
        let mut failures = self.failures.lock();
        let f = failures.entry(user.clone()).or_default();
        f.count += 1;
        if f.count >= max {
            f.count = 0;
            f.locked_until_ms = now_millis() + self.config.login_lockout_secs * 1000;
            tracing::warn!(user = %user, "account locked after repeated failed logins");
        }
    }

    /// The caller of a bearer access token. The token's session must not be revoked,
    /// the user must be active at the token's session epoch, and the role is the lower
    /// of the token's and the current one.
    pub fn token_session(&self, token: &str) -> Result<Principal> {
        let t = self.sessions.verify(token)?;
        let invalid = || EngineError::InvalidToken("invalid token".into());
        let current = self.users.active(&t.user).ok_or_else(invalid)?;
        if current.session_epoch != t.epoch || self.sessions.is_revoked(&t.session) {
            return Err(invalid());
        }
        Ok(Principal {
            ctx: ExecContext::new(t.user, t.role.min(current.role)),
            expires_at: Some(t.expires_at),
            session: Some(t.session),
            epoch: t.epoch,
            external: false,
        })
    }

    /// Whether a principal's credentials still hold: its user active at the same
    /// session epoch, and its session (if any) not revoked.
    pub fn still_valid(&self, p: &Principal) -> bool {
        if p.external {
            // the issuer, not a local account, vouches until the token expires
            return true;
        }
        let user_ok = self
            .users
            .active(&p.ctx.user)
            .is_some_and(|u| u.session_epoch == p.epoch);
        let session_ok = match &p.session {
            Some(s) => !self.sessions.is_revoked(s),
            None => true,
        };
        user_ok && session_ok
    }

    /// The context for an already verified identity (a token), if the user is active.
    pub fn context_for(&self, user: &UserId) -> Option<ExecContext> {
        self.users.active(user).map(|u| ExecContext::new(u.id, u.role))
    }

    /// Password login: an access token and a refresh token.
    pub async fn login(&self, username: &str, pw: &str, source: IpAddr) -> Result<TokenPair> {
        let p = self.authenticate(username, pw, source).await?;
        let pair = self.sessions.issue(&self.store, &p.ctx.user, p.ctx.role, p.epoch)?;
        self.audit_event(AuditEvent {
            action: AuditAction::Login,
            actor: p.ctx.user.to_string(),
            subject: None,
            target: "password".into(),
            source: Some(source),
            detail: String::new(),
        });
        Ok(pair)
    }

    /// Signs in a user vouched for by an OAuth/OIDC provider: the local user linked to
    /// (`provider`, `subject`), or, when `create_as` is set and none is linked yet, a new
    /// user without a password, named after `suggested` (made unique; never a name used
    /// before, deleted users included). Returns the user and a new session's tokens.
    pub fn oauth_login(
        &self,
        provider: &str,
        subject: &str,
        suggested: &str,
        create_as: Option<Role>,
        source: IpAddr,
    ) -> Result<(UserId, TokenPair)> {
        let sys = Partition::system();
        let link_key = format!("oauth_link/{provider}/{subject}").into_bytes();
        let linked = self
            .store
            .get(&sys, &link_key)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| UserId::parse(&s).ok());
        let user = match linked {
            Some(id) => self.users.active(&id).ok_or(EngineError::Unauthenticated)?,
            None => {
                let role = create_as.ok_or(EngineError::Unauthenticated)?;
                let id = self.unused_user_id(suggested)?;
                let now = now_millis();
                let rec = UserRecord {
                    id: id.clone(),
                    role,
                    password_hash: None,
                    created_at_ms: now,
                    updated_at_ms: now,
                    deleted_at_ms: None,
                    session_epoch: 0,
                };
                // the user and its link land together, or neither does
                let mut link = WriteBatch::new();
                link.put(&sys, link_key, id.as_str().as_bytes().to_vec());
                self.users.put_with(&self.store, rec.clone(), link)?;
                self.audit_event(AuditEvent {
                    action: AuditAction::CreateUser,
                    actor: format!("oauth:{provider}"),
                    subject: None,
                    target: id.to_string(),
                    source: Some(source),
                    detail: format!("role {role}, signed in with {provider}"),
                });
                rec
            }
        };
        let pair = self
            .sessions
            .issue(&self.store, &user.id, user.role, user.session_epoch)?;
        self.audit_event(AuditEvent {
            action: AuditAction::Login,
            actor: user.id.to_string(),
            subject: None,
            target: format!("oauth:{provider}"),
            source: Some(source),
            detail: String::new(),
        });
        Ok((user.id, pair))
    }

    /// A user id made of `suggested`'s allowed characters that no user, active or
    /// deleted, has had.
    fn unused_user_id(&self, suggested: &str) -> Result<UserId> {
        let base: String = suggested
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(48)
            .collect();
        let base = if base.is_empty() { "user".to_string() } else { base };
        for i in 1..10_000 {
            let candidate = if i == 1 { base.clone() } else { format!("{base}-{i}") };
            if let Ok(id) = UserId::parse(&candidate)
                && self.users.get(&id).is_none()
            {
                return Ok(id);
            }
        }
        Err(EngineError::Internal("no unused user name".into()))
    }

    /// Rotates a refresh token (used once). A used token presented again revokes its
    /// session, which is audited and closes the session's open subscriptions.
    pub fn refresh(&self, refresh_token: &str, source: IpAddr) -> Result<TokenPair> {
        let outcome = self.sessions.refresh(&self.store, refresh_token, |u| {
            self.users.active(u).map(|r| (r.role, r.session_epoch))
        })?;
        match outcome {
            RefreshOutcome::Issued(pair) => Ok(pair),
            RefreshOutcome::Reused { user, session } => {
                self.audit_event(AuditEvent {
                    action: AuditAction::RefreshReuse,
                    actor: user.to_string(),
                    subject: None,
                    target: "session".into(),
                    source: Some(source),
                    detail: "a used refresh token was presented again; the session is revoked".into(),
                });
                let _ = self.revocations.send(Revocation::Session(session));
                Err(EngineError::InvalidToken("invalid refresh token".into()))
            }
        }
    }

    /// Ends the session of an access token and/or a refresh token. Unknown or already
    /// ended sessions are not an error; a token that is not ours is.
    pub fn logout(&self, access_token: Option<&str>, refresh_token: Option<&str>, source: IpAddr) -> Result<()> {
        let mut ended = Vec::new();
        if let Some(t) = access_token {
            // an expired access token still names its session
            let t = self.sessions.verify_allow_expired(t)?;
            ended.push((t.user, t.session));
        }
        if let Some(r) = refresh_token
            && let Some(found) = self.sessions.session_of_refresh(&self.store, r)?
        {
            ended.push(found);
        }
        if ended.is_empty() {
            return Err(EngineError::InvalidToken("invalid token".into()));
        }
        for (user, session) in ended {
            self.sessions.revoke(&self.store, &session)?;
            self.audit_event(AuditEvent {
                action: AuditAction::Logout,
                actor: user.to_string(),
                subject: None,
                target: "session".into(),
                source: Some(source),
                detail: String::new(),
            });
            let _ = self.revocations.send(Revocation::Session(session));
        }
        Ok(())
    }

    /// Revoked sessions and users, as they happen.
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    /// Ends every session of `user` (its epoch was raised), closing its subscriptions.
    pub(crate) fn revoke_user_sessions(&self, user: &UserId) {
        let _ = self.revocations.send(Revocation::User(user.clone()));
    }

    /// Records an audit event. A failure to write it is logged, never shown to the caller.
    pub fn audit_event(&self, e: AuditEvent) {
        if let Err(err) = self.audit.record(&self.store, e) {
            tracing::error!(error = %err, "cannot write the audit log");
        }
    }

    /// Records that `ctx` acts as another user: once per caller, user and minute.
    pub fn audit_act_as(&self, ctx: &ExecContext) {
        let Some(subject) = ctx.impersonating() else { return };
        let now = now_millis();
        {
            let mut seen = self.act_as_audited.lock();
            let key = (ctx.user.clone(), subject.clone());
            if seen
                .get(&key)
                .is_some_and(|&at| now.saturating_sub(at) < ACT_AS_AUDIT_WINDOW_MS)
            {
                return;
            }
            if seen.len() >= 10_000 {
                seen.retain(|_, at| now.saturating_sub(*at) < ACT_AS_AUDIT_WINDOW_MS);
            }
            seen.insert(key, now);
        }
        self.audit_event(AuditEvent {
            action: AuditAction::ActAs,
            actor: ctx.user.to_string(),
            subject: Some(subject.to_string()),
            target: subject.to_string(),
            source: ctx.source,
            detail: format!("role {}", ctx.role),
        });
    }

    /// Records that `ctx` was refused `what`.
    pub fn audit_forbidden(&self, ctx: &ExecContext, what: &str) {
        self.audit_event(AuditEvent {
            action: AuditAction::Forbidden,
            actor: ctx.user.to_string(),
            subject: ctx.impersonating().map(ToString::to_string),
            target: what.chars().take(256).collect(),
            source: ctx.source,
            detail: String::new(),
        });
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
    pub async fn get_by_pk(&self, ctx: &ExecContext, table: &TableId, pk: &Value) -> Result<Rows> {
        let table = self.table_for(ctx, table, TableOp::Read)?;
        let pk = pk.clone().coerce(table.current().pk_column().ty)?;
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
            self.audit_forbidden(ctx, &e.to_string());
        }
        if let (Ok(_), Some((action, target, detail))) = (&result, audited) {
            self.audit_event(AuditEvent {
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
