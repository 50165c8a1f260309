//! `system.audit_log`: security-relevant events (logins and failed logins, refresh
//! token reuse, logout, user management, DDL, acting as another user, forbidden
//! attempts), each with actor, subject, action, target, time and source address. Rows
//! live in the system partition under `audit/<time><counter>`; nothing secret (no
//! password, no token) is ever part of one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use kalamdb_storage::hot_store::{HotStore, Partition, WriteBatch};
use kalamdb_storage::keys::prefix_successor;
use kalamdb_storage::seq::now_millis;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

const PREFIX: &str = "audit/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Refusals (forbidden attempts, failed logins) of one origin recorded one by one per
/// window; past that they are counted, and the count goes into the origin's next
/// recorded refusal. A client sending refusals in a loop writes a few rows a minute,
/// not one per request.
const REFUSALS_PER_WINDOW: u32 = 20;
const REFUSAL_WINDOW_MS: u64 = 60_000;
/// Origins tracked at once; older windows are forgotten past it.
const MAX_ORIGINS: usize = 10_000;
/// The newest events `system.audit_log` shows.
pub const MAX_READ: usize = 100_000;

struct Burst {
    started_ms: u64,
    written: u32,
    suppressed: u64,
}

#[derive(Default)]
pub struct AuditLog {
    counter: AtomicU32,
    /// Refusal windows by action and origin (the user for forbidden attempts, the
    /// address for failed logins, whose claimed username is the attacker's choice).
    bursts: Mutex<HashMap<(AuditAction, String), Burst>>,
}

fn audit_key(at_ms: u64) -> Vec<u8> {
    let mut key = PREFIX.as_bytes().to_vec();
    key.extend_from_slice(&at_ms.to_be_bytes());
    key
}

impl AuditLog {
    /// Whether a refusal is recorded now; the note of refusals counted instead since
    /// the origin's last recorded one, if any.
    fn admit(&self, e: &AuditEvent, now: u64) -> Option<Option<u64>> {
        let origin = match e.action {
            AuditAction::Forbidden => e.actor.clone(),
            AuditAction::LoginFailed => e.source.map(|ip| ip.to_string()).unwrap_or_default(),
            _ => return Some(None),
        };
        let mut bursts = self.bursts.lock();
        if bursts.len() >= MAX_ORIGINS {
            bursts.retain(|_, b| now.saturating_sub(b.started_ms) < REFUSAL_WINDOW_MS);
        }
        let b = bursts.entry((e.action, origin)).or_insert(Burst {
            started_ms: now,
            written: 0,
            suppressed: 0,
        });
        let mut carried = None;
        if now.saturating_sub(b.started_ms) >= REFUSAL_WINDOW_MS {
            carried = (b.suppressed > 0).then_some(b.suppressed);
            *b = Burst {
                started_ms: now,
                written: 0,
                suppressed: 0,
            };
        }
        if b.written >= REFUSALS_PER_WINDOW {
            b.suppressed += 1;
            return None;
        }
        b.written += 1;
        Some(carried)
    }

    /// Writes one event; it is durable when this returns, as any write. Refusals past
    /// the per-origin rate are counted instead of written.
    pub fn record(&self, store: &HotStore, mut e: AuditEvent) -> Result<()> {
        let at_ms = now_millis();
        match self.admit(&e, at_ms) {
            None => return Ok(()),
            Some(Some(n)) => {
                e.detail = format!("{} ({n} more like it before this were counted, not recorded)", e.detail)
                    .trim_start()
                    .to_string();
            }
            Some(None) => {}
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut key = audit_key(at_ms);
        key.extend_from_slice(&n.to_be_bytes());
        // client-chosen text (a claimed username, a table name) is written escaped
        // (Debug), so that no line break in it can forge a log line
        tracing::info!(
            target: "kalamdb::audit",
            action = e.action.as_str(),
            actor = ?e.actor,
            subject = ?e.subject,
            target_ = ?e.target,
            source = ?e.source,
            detail = ?e.detail,
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

    /// The newest `max` recorded events, oldest first.
    pub fn read_recent(store: &HotStore, max: usize) -> Result<Vec<AuditRecord>> {
        let upper = prefix_successor(PREFIX.as_bytes()).unwrap_or_default();
        let mut it = store.scan_rev(&Partition::system(), PREFIX.as_bytes(), &upper)?;
        let mut out = Vec::new();
        while out.len() < max
            && let Some((_, v)) = it.next_entry()?
        {
            out.push(serde_json::from_slice(v).map_err(|e| EngineError::Internal(format!("audit: {e}")))?);
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes the events recorded before `cutoff_ms`.
    pub fn purge_before(store: &HotStore, cutoff_ms: u64) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete_range(&Partition::system(), PREFIX.as_bytes().to_vec(), audit_key(cutoff_ms));
        Ok(store.write(b)?)
    }
}
