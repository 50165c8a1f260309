//! Login sessions: our HS256 access tokens and rotating refresh tokens. Refresh tokens
//! are random, stored only as SHA-256 hashes, used once each; presenting a used one
//! again revokes its whole family (the chain of tokens from one login).

use kalamdb_auth::identity::{Role, UserId};
use kalamdb_auth::jwt::TokenKeys;
use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use kalamdb_storage::seq::now_millis;
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

const SECRET_KEY: &[u8] = b"meta/jwt_secret";
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
}

pub struct Sessions {
    keys: TokenKeys,
    refresh_ttl_ms: u64,
    /// Serializes refresh so that one token cannot be exchanged twice concurrently.
    refresh_lock: Mutex<()>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn refresh_key(token: &str) -> Vec<u8> {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|x| format!("{x:02x}")).collect();
    format!("refresh/{hex}").into_bytes()
}

fn family_key(family: &str) -> Vec<u8> {
    format!("refresh_family_revoked/{family}").into_bytes()
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
        Ok(Self {
            keys: TokenKeys::new(&secret, ISSUER, access_ttl_secs),
            refresh_ttl_ms: refresh_ttl_secs * 1000,
            refresh_lock: Mutex::new(()),
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

    /// Issues an access token and a refresh token of `family` (a new one when `None`).
    fn issue_in(
        &self,
        store: &HotStore,
        user: &UserId,
        role: Role,
        family: Option<String>,
        mut batch: WriteBatch,
    ) -> Result<TokenPair> {
        let access_token = self.keys.issue(user, role, now_millis() / 1000).map_err(internal)?;
        let refresh_token = random_hex(32);
        let rec = RefreshRecord {
            user: user.clone(),
            family: family.unwrap_or_else(|| random_hex(16)),
            expires_at_ms: now_millis() + self.refresh_ttl_ms,
            used: false,
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

    pub fn issue(&self, store: &HotStore, user: &UserId, role: Role) -> Result<TokenPair> {
        self.issue_in(store, user, role, None, WriteBatch::new())
    }

    /// Exchanges a refresh token for a new pair. `role_of` gives the user's current role
    /// if the user is still active.
    pub fn refresh(
        &self,
        store: &HotStore,
        token: &str,
        role_of: impl Fn(&UserId) -> Option<Role>,
    ) -> Result<TokenPair> {
        let _guard = self.refresh_lock.lock();
        let sys = Partition::system();
        let key = refresh_key(token);
        let rec: RefreshRecord = match store.get(&sys, &key)? {
            Some(v) => serde_json::from_slice(&v).map_err(internal)?,
            None => return Err(EngineError::InvalidToken("invalid refresh token".into())),
        };
        if store.get(&sys, &family_key(&rec.family))?.is_some() {
            return Err(EngineError::InvalidToken("invalid refresh token".into()));
        }
        if rec.used {
            // a used token came back: someone holds a copy. End the whole session.
            let mut b = WriteBatch::new();
            b.put(&sys, family_key(&rec.family), b"1".to_vec());
            store.write(b)?;
            tracing::warn!(user = %rec.user, "refresh token reuse; session family revoked");
            return Err(EngineError::InvalidToken("invalid refresh token".into()));
        }
        if rec.expires_at_ms < now_millis() {
            return Err(EngineError::TokenExpired);
        }
        let role = role_of(&rec.user).ok_or_else(|| EngineError::InvalidToken("invalid refresh token".into()))?;
        let mut batch = WriteBatch::new();
        self.put_refresh(
            &mut batch,
            token,
            &RefreshRecord {
                used: true,
                ..rec.clone()
            },
        )?;
        self.issue_in(store, &rec.user, role, Some(rec.family), batch)
    }

    /// Verifies an access token: `(user, role in the token, expiry in Unix seconds)`.
    pub fn verify(&self, token: &str) -> Result<(UserId, Role, u64)> {
        let claims = self.keys.verify(token).map_err(|e| match e {
            kalamdb_auth::error::AuthError::ExpiredToken => EngineError::TokenExpired,
            _ => EngineError::InvalidToken("invalid token".into()),
        })?;
        let user = UserId::parse(&claims.sub).map_err(|_| EngineError::InvalidToken("invalid token".into()))?;
        Ok((user, claims.role, claims.exp))
    }
}
