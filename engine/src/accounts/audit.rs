//! `system.audit_log`: security-relevant events (logins and failed logins, refresh
//! token reuse, logout, user management, DDL, acting as another user, forbidden
//! attempts), each with actor, subject, action, target, time and source address. Rows
//! live in the system partition under `audit/<time><counter>`; nothing secret (no
//! password, no token) is ever part of one.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use kalamdb_storage::keys::prefix_successor;
use kalamdb_storage::seq::now_millis;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

const PREFIX: &str = "audit/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Login,
    LoginFailed,
    RefreshReuse,
    Logout,
    CreateUser,
    AlterUser,
    DropUser,
    Ddl,
    ActAs,
    Forbidden,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::LoginFailed => "login_failed",
            Self::RefreshReuse => "refresh_reuse",
            Self::Logout => "logout",
            Self::CreateUser => "create_user",
            Self::AlterUser => "alter_user",
            Self::DropUser => "drop_user",
            Self::Ddl => "ddl",
            Self::ActAs => "act_as",
            Self::Forbidden => "forbidden",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: AuditAction,
    /// Who acted: the authenticated user, or the username a failed login claimed.
    pub actor: String,
    /// The user acted for, when the actor acts as another user.
    pub subject: Option<String>,
    /// What was acted on: a table, namespace, user, session or endpoint.
    pub target: String,
    pub source: Option<IpAddr>,
    /// A short note for the operator (why a login failed, which statement); never a secret.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: u64,
    pub action: AuditAction,
    pub actor: String,
    pub subject: Option<String>,
    pub target: String,
    pub source: Option<String>,
    pub detail: String,
}

#[derive(Default)]
pub struct AuditLog {
    counter: AtomicU32,
}

impl AuditLog {
    /// Writes one event; it is durable when this returns, as any write.
    pub fn record(&self, store: &HotStore, e: AuditEvent) -> Result<()> {
        let at_ms = now_millis();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut key = PREFIX.as_bytes().to_vec();
        key.extend_from_slice(&at_ms.to_be_bytes());
        key.extend_from_slice(&n.to_be_bytes());
        tracing::info!(
            target: "kalamdb::audit",
            action = e.action.as_str(),
            actor = %e.actor,
            subject = e.subject.as_deref().unwrap_or(""),
            target_ = %e.target,
            source = ?e.source,
            detail = %e.detail,
            "audit"
        );
        let rec = AuditRecord {
            id: ((at_ms as i64) << 16) | i64::from(n & 0xffff),
            at_ms,
            action: e.action,
            actor: e.actor,
            subject: e.subject,
            target: e.target,
            source: e.source.map(|ip| ip.to_string()),
            detail: e.detail,
        };
        let mut b = WriteBatch::new();
        b.put(
            &Partition::system(),
            key,
            serde_json::to_vec(&rec).map_err(|e| EngineError::Internal(e.to_string()))?,
        );
        Ok(store.write(b)?)
    }

    /// Every recorded event, oldest first.
    pub fn read_all(store: &HotStore) -> Result<Vec<AuditRecord>> {
        let upper = prefix_successor(PREFIX.as_bytes());
        let mut it = store.scan(&Partition::system(), PREFIX.as_bytes(), upper.as_deref())?;
        let mut out = Vec::new();
        while let Some((_, v)) = it.next_entry()? {
            out.push(serde_json::from_slice(v).map_err(|e| EngineError::Internal(format!("audit: {e}")))?);
        }
        Ok(out)
    }
}
