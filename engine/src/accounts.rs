//! Accounts: users (`users`), sessions and tokens (`sessions`), the audit log
//! (`audit`), and what joins them: password login with lockout, OAuth sign-in and its
//! links to local users, token refresh and logout, the revocations open connections
//! listen to, and the bcrypt work queue. [`Accounts`] owns all of that state; the
//! engine holds one and hands it out (`Engine::accounts`).

pub mod audit;
pub mod sessions;
pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use kalamdb_auth::identity::{Role, UserId};
use kalamdb_auth::password;
use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use kalamdb_storage::seq::now_millis;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use self::audit::{AuditAction, AuditEvent, AuditLog};
use self::sessions::{RefreshOutcome, Sessions, TokenPair};
use self::users::{UserRecord, UserStore};
use crate::context::ExecContext;
use crate::engine::EngineConfig;
use crate::error::{EngineError, Result};

/// System-partition keys of the links from an OAuth provider's subject to a local
/// user: `oauth_link/{provider}/{subject}` holds the user id.
const OAUTH_LINK_PREFIX: &str = "oauth_link/";
/// Links from a trusted issuer's subject to the local user it maps to.
const EXTERNAL_LINK_PREFIX: &str = "external_link/";
/// Links kept in memory; past this the memory starts over.
const MAX_CACHED_LINKS: usize = 100_000;

/// The settings accounts run by, taken from the engine's.
#[derive(Debug, Clone)]
struct AccountsConfig {
    bcrypt_cost: u32,
    root_password: Option<String>,
    root_remote_login: bool,
    login_max_failures: u32,
    login_lockout_secs: u64,
}

impl From<&EngineConfig> for AccountsConfig {
    fn from(c: &EngineConfig) -> Self {
        Self {
            bcrypt_cost: c.bcrypt_cost,
            root_password: c.root_password.clone(),
            root_remote_login: c.root_remote_login,
            login_max_failures: c.login_max_failures,
            login_lockout_secs: c.login_lockout_secs,
        }
    }
}

/// Users, sessions, logins and the audit log, with their state.
pub struct Accounts {
    store: Arc<HotStore>,
    config: AccountsConfig,
    pub(crate) users: Arc<UserStore>,
    sessions: Sessions,
    /// Verified when the user is unknown, so that every refusal costs one bcrypt.
    dummy_hash: String,
    pub(crate) audit: AuditLog,
    revocations: broadcast::Sender<Revocation>,
    failures: Mutex<HashMap<UserId, LoginFailures>>,
    /// When each (caller, user) pair last had its acting-as audited.
    act_as_audited: Mutex<HashMap<(UserId, UserId), u64>>,
    /// Serializes creating linked users, so that two first sign-ins of one identity
    /// make one user.
    link_lock: Mutex<()>,
    /// External links already read, by issuer and subject: every request of an
    /// external token maps its subject without hashing or reading storage. Links never
    /// change once made (a dropped user's link stays, and signs nobody in).
    external_links: parking_lot::RwLock<HashMap<String, HashMap<String, UserId>>>,
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

impl Accounts {
    /// Loads users and sessions from the store (blocking I/O).
    pub(crate) fn open(store: Arc<HotStore>, config: &EngineConfig) -> Result<Self> {
        let users = Arc::new(UserStore::load(&store)?);
        let sessions = Sessions::open(&store, config.access_token_ttl_secs, config.refresh_token_ttl_secs)?;
        Ok(Self {
            dummy_hash: password::dummy_hash(config.bcrypt_cost),
            config: AccountsConfig::from(config),
            store,
            users,
            sessions,
            audit: AuditLog::default(),
            revocations: broadcast::channel(1024).0,
            failures: Mutex::new(HashMap::new()),
            act_as_audited: Mutex::new(HashMap::new()),
            link_lock: Mutex::new(()),
            external_links: parking_lot::RwLock::new(HashMap::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
            ),
        })
    }

    /// Creates `root` on first start, and gives it the configured password while it
    /// has none.
    pub(crate) async fn bootstrap_root(&self) -> Result<()> {
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
        // root from afar is refused before the password counts: such attempts can
        // never succeed, so they must not count toward locking root out
        let refusal = match &user {
            None => Err(LoginRefusal::UnknownUser),
            Some(u) if u.password_hash.is_none() => Err(LoginRefusal::NoPassword),
            Some(u)
                if u.role == Role::System
                    && u.id.as_str() == UserId::ROOT
                    && !source.is_loopback()
                    && !self.config.root_remote_login =>
            {
                Err(LoginRefusal::RootFromAfar)
            }
            Some(u) if self.is_locked(&u.id) => Err(LoginRefusal::Locked),
            Some(u) if !ok => Err(LoginRefusal::WrongPassword(u.id.clone())),
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
        let link_key = format!("{OAUTH_LINK_PREFIX}{provider}/{subject}").into_bytes();
        let user = self.linked_user(link_key, suggested, create_as, &format!("oauth:{provider}"), source)?;
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

    /// The local user a trusted issuer's subject maps to: the user linked to
    /// (`issuer`, `subject`), or at its first request a new user of its own, without a
    /// password, named after the subject (made unique: never the name of a local user,
    /// present or deleted). An external subject therefore never reads or writes a
    /// local user's rows because the names match, and a link to a dropped user signs
    /// nobody in.
    pub fn external_user(&self, issuer: &str, subject: &str, source: IpAddr) -> Result<UserId> {
        let known = self
            .external_links
            .read()
            .get(issuer)
            .and_then(|m| m.get(subject))
            .cloned();
        if let Some(id) = known {
            return if self.users.is_active(&id) {
                Ok(id)
            } else {
                Err(EngineError::Unauthenticated)
            };
        }
        let issuer_digest: String = Sha256::digest(issuer.as_bytes())
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = format!("{EXTERNAL_LINK_PREFIX}{issuer_digest}/{subject}").into_bytes();
        let id = self
            .linked_user(key, subject, Some(Role::User), &format!("issuer:{issuer}"), source)?
            .id;
        let mut links = self.external_links.write();
        if links.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED_LINKS {
            links.clear();
        }
        links
            .entry(issuer.to_string())
            .or_default()
            .insert(subject.to_string(), id.clone());
        Ok(id)
    }

    /// The active user linked under `link_key`; when none is linked yet and `create_as`
    /// is set, a new user without a password named after `suggested`, created with its
    /// link in one batch.
    fn linked_user(
        &self,
        link_key: Vec<u8>,
        suggested: &str,
        create_as: Option<Role>,
        actor: &str,
        source: IpAddr,
    ) -> Result<UserRecord> {
        let sys = Partition::system();
        let linked = |key: &[u8]| -> Result<Option<UserId>> {
            Ok(self
                .store
                .get(&sys, key)?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| UserId::parse(&s).ok()))
        };
        if let Some(id) = linked(&link_key)? {
            return self.users.active(&id).ok_or(EngineError::Unauthenticated);
        }
        let _creating = self.link_lock.lock();
        if let Some(id) = linked(&link_key)? {
            return self.users.active(&id).ok_or(EngineError::Unauthenticated);
        }
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
            actor: actor.to_string(),
            subject: None,
            target: id.to_string(),
            source: Some(source),
            detail: format!("role {role}, signed in through {actor}"),
        });
        Ok(rec)
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

    /// Purges what would otherwise grow without bound: audit events older than
    /// `retention_days`, expired refresh tokens, and revoked sessions none of whose
    /// tokens can still be valid.
    pub fn housekeeping(&self, retention_days: u64) -> Result<()> {
        let cutoff = now_millis().saturating_sub(retention_days.saturating_mul(86_400_000));
        audit::AuditLog::purge_before(&self.store, cutoff)?;
        let (tokens, sessions) = self.sessions.purge_expired(&self.store)?;
        if tokens + sessions > 0 {
            tracing::info!(tokens, sessions, "purged expired refresh tokens and revoked sessions");
        }
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::Revocation;
    use crate::testing::engine_with;

    const HERE: std::net::IpAddr = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A session ends with its logout or with a reused refresh token, and every session
    /// of a user ends with a password change; each is announced on the revocation
    /// channel, and the other sessions live on.
    #[tokio::test]
    async fn sessions_end_by_logout_reuse_and_credential_change() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with(dir.path(), &["CREATE USER ann WITH PASSWORD 'ann-password' ROLE user"]).await;
        let accounts = engine.accounts();
        let mut revocations = accounts.revocations();
        let login = || accounts.login("ann", "ann-password", HERE);

        // logout ends that session only
        let (a, b) = (login().await.unwrap(), login().await.unwrap());
        accounts.logout(Some(&a.access_token), None, HERE).unwrap();
        assert!(accounts.token_session(&a.access_token).is_err());
        let session_b = accounts.token_session(&b.access_token).unwrap();
        assert!(accounts.still_valid(&session_b));
        assert!(matches!(revocations.try_recv(), Ok(Revocation::Session(_))));

        // a refresh token works once; presented again, it ends the session it began
        let c = login().await.unwrap();
        let rotated = accounts.refresh(&c.refresh_token, HERE).unwrap();
        assert!(accounts.token_session(&rotated.access_token).is_ok());
        assert!(accounts.refresh(&c.refresh_token, HERE).is_err());
        assert!(matches!(revocations.try_recv(), Ok(Revocation::Session(_))));
        assert!(accounts.refresh(&rotated.refresh_token, HERE).is_err());
        assert!(accounts.token_session(&b.access_token).is_ok());

        // a password change ends every session of the user
        let ctx = crate::context::ExecContext::system();
        engine
            .execute_sql(&ctx, "ALTER USER ann SET PASSWORD 'another-password'", &[])
            .await
            .unwrap();
        assert!(!accounts.still_valid(&session_b));
        assert!(matches!(revocations.try_recv(), Ok(Revocation::User(u)) if u.as_str() == "ann"));
        assert!(login().await.is_err());
        assert!(accounts.login("ann", "another-password", HERE).await.is_ok());
    }
}
