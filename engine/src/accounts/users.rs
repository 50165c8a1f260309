//! `system.users`: local accounts with bcrypt password hashes, persisted in the
//! system partition and cached in memory. Deletion is soft.

use std::collections::BTreeMap;

use kalamdb_auth::{identity::Role, identity::UserId};
use kalamdb_storage::{hot_store::HotStore, hot_store::Partition, hot_store::WriteBatch, keys::prefix_successor};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

const USER_PREFIX: &str = "users/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    pub role: Role,
    /// bcrypt hash; `None` means password login is impossible (root before a password
    /// is set).
    pub password_hash: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub deleted_at_ms: Option<u64>,
    /// Raised by a password change, role change or deletion; tokens and refresh tokens
    /// issued at an older epoch no longer work.
    #[serde(default)]
    pub session_epoch: u64,
}

impl UserRecord {
    pub fn is_active(&self) -> bool {
        self.deleted_at_ms.is_none()
    }
}

pub struct UserStore {
    users: RwLock<BTreeMap<UserId, UserRecord>>,
}

fn key(id: &UserId) -> Vec<u8> {
    format!("{USER_PREFIX}{id}").into_bytes()
}

impl UserStore {
    pub fn load(store: &HotStore) -> Result<Self> {
        let mut users = BTreeMap::new();
        let upper = prefix_successor(USER_PREFIX.as_bytes());
        let mut it = store.scan(&Partition::system(), USER_PREFIX.as_bytes(), upper.as_deref())?;
        while let Some((_, v)) = it.next_entry()? {
            let u: UserRecord = serde_json::from_slice(v).map_err(|e| EngineError::Internal(format!("users: {e}")))?;
            users.insert(u.id.clone(), u);
        }
        Ok(Self {
            users: RwLock::new(users),
        })
    }

    /// The record, deleted ones included.
    pub fn get(&self, id: &UserId) -> Option<UserRecord> {
        self.users.read().get(id).cloned()
    }

    /// Whether `id` is an active (not deleted) user, without copying its record.
    pub fn is_active(&self, id: &UserId) -> bool {
        self.users.read().get(id).is_some_and(UserRecord::is_active)
    }

    /// The record of an active (not deleted) user.
    pub fn active(&self, id: &UserId) -> Option<UserRecord> {
        self.get(id).filter(UserRecord::is_active)
    }

    pub fn all(&self) -> Vec<UserRecord> {
        self.users.read().values().cloned().collect()
    }

    pub fn put(&self, store: &HotStore, user: UserRecord) -> Result<()> {
        self.put_with(store, user, WriteBatch::new())
    }

    /// Writes the record in one atomic batch with the writes already in `b`.
    pub fn put_with(&self, store: &HotStore, user: UserRecord, mut b: WriteBatch) -> Result<()> {
        let bytes = serde_json::to_vec(&user).map_err(|e| EngineError::Internal(e.to_string()))?;
        b.put(&Partition::system(), key(&user.id), bytes);
        store.write(b)?;
        self.users.write().insert(user.id.clone(), user);
        Ok(())
    }
}
