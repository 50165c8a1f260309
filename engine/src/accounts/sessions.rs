//! Login sessions: our HS256 access tokens and rotating refresh tokens. A session is
//! the chain of tokens from one login (its *family*, which access tokens carry as
//! `sid`). Refresh tokens are random, stored only as SHA-256 hashes, used once each;
//! presenting a used one again revokes the whole session, as logout does. Tokens also
//! carry the user's session epoch, which a password change, role change or deletion
//! raises: that revokes every session of the user at once.

use std::collections::HashMap;

use kalamdb_auth::error::AuthError;
use kalamdb_auth::identity::{Role, UserId};
use kalamdb_auth::jwt::{Claims, Grant, TokenKeys};
use kalamdb_auth::memory::TokenMemory;
use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use kalamdb_storage::keys::prefix_successor;
use kalamdb_storage::seq::now_millis;
use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

const SECRET_KEY: &[u8] = b"meta/jwt_secret";
/// A refresh token's record, keyed by the SHA-256 of the token (never the token).
const REFRESH_PREFIX: &str = "refresh/";
const REVOKED_PREFIX: &str = "refresh_family_revoked/";
/// How many verified access tokens are remembered (skipping their signature check).
const MAX_REMEMBERED: usize = 10_000;
const ISSUER: &str = "kalamdb";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshRecord {
    user: UserId,
    family: String,
    expires_at_ms: u64,
    used: bool,
    /// The user's session epoch when the session began.
    #[serde(default)]
    epoch: u64,
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub user: UserId,
    pub role: Role,
    /// Unix seconds.
    pub expires_at: u64,
    pub session: String,
    pub epoch: u64,
}

/// Why a refresh failed, beyond a plain bad token: the engine audits reuse.
#[derive(Debug)]
pub enum RefreshOutcome {
    Issued(TokenPair),
    /// A used token came back; its session is now revoked.
    Reused {
        user: UserId,
        session: String,
    },
}

pub struct Sessions {
    keys: TokenKeys,
    refresh_ttl_ms: u64,
    /// Serializes refresh so that one token cannot be exchanged twice concurrently.
    refresh_lock: Mutex<()>,
    /// Access tokens whose signature, issuer and expiry were checked.
    verified: TokenMemory<AccessToken>,
    /// Revoked sessions and when each was revoked, as stored (loaded at open, added to
    /// by [`Self::revoke`], forgotten by [`Self::purge_expired`] once none of their
    /// tokens can be valid), so that checking a request's session reads no storage.
    revoked: RwLock<HashMap<String, u64>>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn refresh_key(token: &str) -> Vec<u8> {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|x| format!("{x:02x}")).collect();
    format!("{REFRESH_PREFIX}{hex}").into_bytes()
}

fn family_key(family: &str) -> Vec<u8> {
    format!("{REVOKED_PREFIX}{family}").into_bytes()
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

impl Sessions {
    /// Loads the signing secret, creating it at first start.
    pub fn open(store: &HotStore, access_ttl_secs: u64, refresh_ttl_secs: u64) -> Result<Self> {
        let sys = Partition::system();
        let secret = match store.get(&sys, SECRET_KEY)? {
            Some(s) => s,
            None => {
                let mut s = vec![0u8; 32];
                rand::rng().fill_bytes(&mut s);
                let mut b = WriteBatch::new();
                b.put(&sys, SECRET_KEY.to_vec(), s.clone());
                store.write(b)?;
                s
            }
        };
        let mut revoked = HashMap::new();
        let upper = prefix_successor(REVOKED_PREFIX.as_bytes());
        let mut it = store.scan(&sys, REVOKED_PREFIX.as_bytes(), upper.as_deref())?;
        while let Some((k, v)) = it.next_entry()? {
            let family = std::str::from_utf8(&k[REVOKED_PREFIX.len()..]).map_err(internal)?;
            let at = v.try_into().map(u64::from_be_bytes).unwrap_or(0);
            revoked.insert(family.to_string(), at);
        }
        drop(it);
        Ok(Self {
            keys: TokenKeys::new(&secret, ISSUER, access_ttl_secs),
            refresh_ttl_ms: refresh_ttl_secs * 1000,
            refresh_lock: Mutex::new(()),
            verified: TokenMemory::new(MAX_REMEMBERED),
            revoked: RwLock::new(revoked),
        })
    }

    fn put_refresh(&self, b: &mut WriteBatch, token: &str, rec: &RefreshRecord) -> Result<()> {
        b.put(
            &Partition::system(),
            refresh_key(token),
            serde_json::to_vec(rec).map_err(internal)?,
        );
        Ok(())
    }

    /// Issues an access token and a refresh token of session `family` (a new one when
    /// `None`), at the user's session `epoch`.
    fn issue_in(
        &self,
        store: &HotStore,
        user: &UserId,
        role: Role,
        epoch: u64,
        family: Option<String>,
        mut batch: WriteBatch,
    ) -> Result<TokenPair> {
        let family = family.unwrap_or_else(|| random_hex(16));
        let grant = Grant {
            user,
            role,
            session: &family,
            epoch,
        };
        let access_token = self.keys.issue(&grant, now_millis() / 1000).map_err(internal)?;
        let refresh_token = random_hex(32);
        let rec = RefreshRecord {
            user: user.clone(),
            family,
            expires_at_ms: now_millis() + self.refresh_ttl_ms,
            used: false,
            epoch,
        };
        self.put_refresh(&mut batch, &refresh_token, &rec)?;
        store.write(batch)?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer",
            expires_in: self.keys.ttl_secs(),
            refresh_token,
        })
    }

    /// A new session for `user` at session `epoch`.
    pub fn issue(&self, store: &HotStore, user: &UserId, role: Role, epoch: u64) -> Result<TokenPair> {
        self.issue_in(store, user, role, epoch, None, WriteBatch::new())
    }

    /// Exchanges a refresh token for a new pair. `current` gives the user's role and
    /// session epoch if the user is still active.
    pub fn refresh(
        &self,
        store: &HotStore,
        token: &str,
        current: impl Fn(&UserId) -> Option<(Role, u64)>,
    ) -> Result<RefreshOutcome> {
        let invalid = || EngineError::InvalidToken("invalid refresh token".into());
        let _guard = self.refresh_lock.lock();
        let sys = Partition::system();
        let key = refresh_key(token);
        let rec: RefreshRecord = match store.get(&sys, &key)? {
            Some(v) => serde_json::from_slice(&v).map_err(internal)?,
            None => return Err(invalid()),
        };
        if self.is_revoked(&rec.family) {
            return Err(invalid());
        }
        if rec.used {
            // a used token came back: someone holds a copy. End the whole session.
            self.revoke(store, &rec.family)?;
            tracing::warn!(user = %rec.user, "refresh token reuse; session revoked");
            return Ok(RefreshOutcome::Reused {
                user: rec.user,
                session: rec.family,
            });
        }
        if rec.expires_at_ms < now_millis() {
            return Err(EngineError::TokenExpired);
        }
        let (role, epoch) = current(&rec.user).ok_or_else(invalid)?;
        if epoch != rec.epoch {
            return Err(invalid());
        }
        let mut batch = WriteBatch::new();
        self.put_refresh(
            &mut batch,
            token,
            &RefreshRecord {
                used: true,
                ..rec.clone()
            },
        )?;
        self.issue_in(store, &rec.user, role, epoch, Some(rec.family), batch)
            .map(RefreshOutcome::Issued)
    }

    /// Ends a session: its refresh tokens and access tokens stop working.
    pub fn revoke(&self, store: &HotStore, session: &str) -> Result<()> {
        let now = now_millis();
        let mut b = WriteBatch::new();
        b.put(&Partition::system(), family_key(session), now.to_be_bytes().to_vec());
        store.write(b)?;
        self.revoked.write().insert(session.to_string(), now);
        Ok(())
    }

    pub fn is_revoked(&self, session: &str) -> bool {
        self.revoked.read().contains_key(session)
    }

    /// Deletes refresh tokens past their expiry, and forgets revoked sessions once no
    /// token of theirs can be valid (every refresh token and access token of a session
    /// was issued before it was revoked, so all have expired a lifetime later).
    /// Returns how many of each went.
    pub fn purge_expired(&self, store: &HotStore) -> Result<(usize, usize)> {
        let sys = Partition::system();
        let now = now_millis();
        let mut b = WriteBatch::new();
        let mut tokens = 0;
        {
            let upper = prefix_successor(REFRESH_PREFIX.as_bytes());
            let mut it = store.scan(&sys, REFRESH_PREFIX.as_bytes(), upper.as_deref())?;
            while let Some((k, v)) = it.next_entry()? {
                let expired = serde_json::from_slice::<RefreshRecord>(v).map_or(true, |r| r.expires_at_ms < now);
                if expired {
                    b.delete(&sys, k.to_vec());
                    tokens += 1;
                }
            }
        }
        let lifetime = self.refresh_ttl_ms.max(self.keys.ttl_secs() * 1000) + 120_000;
        let gone: Vec<String> = self
            .revoked
            .read()
            .iter()
            .filter(|(_, at)| now.saturating_sub(**at) > lifetime)
            .map(|(f, _)| f.clone())
            .collect();
        for f in &gone {
            b.delete(&sys, family_key(f));
        }
        if !b.is_empty() {
            store.write(b)?;
        }
        let mut revoked = self.revoked.write();
        for f in &gone {
            revoked.remove(f);
        }
        Ok((tokens, gone.len()))
    }

    /// The session of a refresh token, if the token is ours.
    pub fn session_of_refresh(&self, store: &HotStore, token: &str) -> Result<Option<(UserId, String)>> {
        Ok(match store.get(&Partition::system(), &refresh_key(token))? {
            Some(v) => {
                let rec: RefreshRecord = serde_json::from_slice(&v).map_err(internal)?;
                Some((rec.user, rec.family))
            }
            None => None,
        })
    }

    /// Verifies an access token's signature, issuer and expiry (not revocation: the
    /// engine checks that against the session and the user).
    pub fn verify(&self, token: &str) -> Result<AccessToken> {
        let digest = TokenMemory::<AccessToken>::digest(token);
        let now_secs = now_millis() / 1000;
        if let Some(hit) = self.verified.recall(&digest, now_secs) {
            return Ok(hit);
        }
        let t = Self::access(self.keys.verify(token))?;
        // the verification takes a token up to and including its `exp` second
        self.verified.remember(digest, t.clone(), t.expires_at, now_secs);
        Ok(t)
    }

    /// As [`Self::verify`], but an expired token passes (for logout).
    pub fn verify_allow_expired(&self, token: &str) -> Result<AccessToken> {
        Self::access(self.keys.verify_any_age(token))
    }

    fn access(verified: std::result::Result<Claims, AuthError>) -> Result<AccessToken> {
        let claims = verified.map_err(|e| match e {
            AuthError::ExpiredToken => EngineError::TokenExpired,
            _ => EngineError::InvalidToken("invalid token".into()),
        })?;
        let user = UserId::parse(&claims.sub).map_err(|_| EngineError::InvalidToken("invalid token".into()))?;
        Ok(AccessToken {
            user,
            role: claims.role,
            expires_at: claims.exp,
            session: claims.sid,
            epoch: claims.sep,
        })
    }
}

#[cfg(test)]
mod tests {
    use kalamdb_storage::hot_store::StoreOptions;

    use super::*;
    use crate::accounts::audit::{AuditAction, AuditEvent, AuditLog};

    /// Housekeeping deletes expired refresh tokens and forgets revoked sessions once
    /// none of their tokens can be valid, and keeps the rest; old audit events go, and
    /// reads show the newest events in order.
    #[test]
    fn expired_tokens_dead_sessions_and_old_events_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = HotStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let user = UserId::parse("ann").unwrap();
        // refresh tokens that expire at once, and ones that live a day
        let short = Sessions::open(&store, 60, 0).unwrap();
        let dead = short.issue(&store, &user, Role::User, 0).unwrap();
        let long = Sessions::open(&store, 60, 86_400).unwrap();
        let live = long.issue(&store, &user, Role::User, 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        long.revoke(&store, "recent-session").unwrap();
        long.revoked.write().insert("old-session".into(), 1);
        assert_eq!(long.purge_expired(&store).unwrap(), (1, 1));
        assert!(long.session_of_refresh(&store, &dead.refresh_token).unwrap().is_none());
        assert!(long.session_of_refresh(&store, &live.refresh_token).unwrap().is_some());
        assert!(long.is_revoked("recent-session") && !long.is_revoked("old-session"));
        // the forgotten session is gone from storage too
        let reopened = Sessions::open(&store, 60, 86_400).unwrap();
        assert!(reopened.is_revoked("recent-session"));
        assert_eq!(reopened.revoked.read().len(), 1);

        let log = AuditLog::default();
        let event = |target: &str| AuditEvent {
            action: AuditAction::Ddl,
            actor: "root".into(),
            subject: None,
            target: target.into(),
            source: None,
            detail: String::new(),
        };
        for t in ["a", "b", "c"] {
            log.record(&store, event(t)).unwrap();
        }
        let targets = |n| -> Vec<String> {
            AuditLog::read_recent(&store, n)
                .unwrap()
                .into_iter()
                .map(|r| r.target)
                .collect()
        };
        assert_eq!(targets(2), ["b", "c"], "the newest, oldest first");
        AuditLog::purge_before(&store, now_millis() + 1).unwrap();
        assert!(targets(10).is_empty());
    }
}
