//! Who is asking: every engine call carries an [`ExecContext`].

use std::net::IpAddr;

use kalamdb_auth::{identity::Role, identity::UserId, permissions};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecContext {
    /// The authenticated caller.
    pub user: UserId,
    pub role: Role,
    /// The user a service (or higher) caller acts for, if any.
    acting_as: Option<UserId>,
    /// The client's address, for the audit log.
    pub source: Option<IpAddr>,
}

impl ExecContext {
    pub fn new(user: UserId, role: Role) -> Self {
        Self {
            user,
            role,
            acting_as: None,
            source: None,
        }
    }

    /// The same caller, seen from `source`.
    pub fn from_source(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Acts as `subject` for per-user tables; refused below `service`.
    pub fn acting_as(mut self, subject: UserId) -> Result<Self> {
        if subject == self.user {
            return Ok(self);
        }
        if !permissions::can_act_as_user(self.role) {
            return Err(EngineError::forbidden(format!(
                "role {} may not act as another user",
                self.role
            )));
        }
        self.acting_as = Some(subject);
        Ok(self)
    }

    /// Whose rows of USER and STREAM tables this call reads and writes.
    pub fn subject(&self) -> &UserId {
        self.acting_as.as_ref().unwrap_or(&self.user)
    }

    pub fn impersonating(&self) -> Option<&UserId> {
        self.acting_as.as_ref()
    }

    /// The built-in system context (bootstrap, background jobs).
    pub fn system() -> Self {
        Self::new(UserId::root(), Role::System)
    }
}
