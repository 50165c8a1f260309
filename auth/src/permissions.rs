//! The role matrix (DESIGN section 7) as pure functions. The engine calls these before
//! it touches any data; nothing else decides who may do what.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identity::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TableType {
    /// Rows belong to one user each.
    User,
    /// One global set of rows, guarded by an [`AccessLevel`].
    Shared,
    /// Per-user rows that expire after a TTL.
    Stream,
    /// Read-only tables the engine maintains.
    System,
}

impl TableType {
    pub fn as_str(self) -> &'static str {
        match self {
            TableType::User => "USER",
            TableType::Shared => "SHARED",
            TableType::Stream => "STREAM",
            TableType::System => "SYSTEM",
        }
    }

    /// Whether rows are partitioned by user.
    pub fn is_per_user(self) -> bool {
        matches!(self, TableType::User | TableType::Stream)
    }
}

impl fmt::Display for TableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TableType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "USER" => Ok(TableType::User),
            "SHARED" => Ok(TableType::Shared),
            "STREAM" => Ok(TableType::Stream),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccessLevel {
    /// Any signed-in user reads; service and above write.
    #[default]
    Public,
    /// Service and above.
    Private,
    /// Dba and above.
    Restricted,
}

impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Public => "PUBLIC",
            AccessLevel::Private => "PRIVATE",
            AccessLevel::Restricted => "RESTRICTED",
        }
    }
}

impl FromStr for AccessLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "PUBLIC" => Ok(AccessLevel::Public),
            "PRIVATE" => Ok(AccessLevel::Private),
            "RESTRICTED" => Ok(AccessLevel::Restricted),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableOp {
    Read,
    Write,
}

/// May `role` perform `op` on a table of this type and access level? For per-user
/// tables this answers for the caller's own rows (or the rows of the user it acts as).
pub fn can_access_table(role: Role, table_type: TableType, level: AccessLevel, op: TableOp) -> bool {
    match table_type {
        TableType::User | TableType::Stream => true,
        TableType::System => op == TableOp::Read && role >= Role::Dba,
        TableType::Shared => match (level, op) {
            (AccessLevel::Public, TableOp::Read) => true,
            (AccessLevel::Public, TableOp::Write) => role >= Role::Service,
            (AccessLevel::Private, _) => role >= Role::Service,
            (AccessLevel::Restricted, _) => role >= Role::Dba,
        },
    }
}

/// CREATE/ALTER/DROP of namespaces and tables.
pub fn can_run_ddl(role: Role) -> bool {
    role >= Role::Dba
}

/// Flush, compaction and other maintenance commands.
pub fn can_run_maintenance(role: Role) -> bool {
    role >= Role::Dba
}

/// Creating, altering or dropping a user with role `target`. A dba manages users up to
/// dba; only system manages system users.
pub fn can_manage_user(role: Role, target: Role) -> bool {
    role >= Role::Dba && role >= target
}

/// Acting as another user (`X-KalamDB-User-Id`).
pub fn can_act_as_user(role: Role) -> bool {
    role >= Role::Service
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_levels() {
        use AccessLevel::*;
        use TableOp::*;
        let t = TableType::Shared;
        assert!(can_access_table(Role::User, t, Public, Read));
        assert!(!can_access_table(Role::User, t, Public, Write));
        assert!(can_access_table(Role::Service, t, Public, Write));
        assert!(!can_access_table(Role::User, t, Private, Read));
        assert!(can_access_table(Role::Service, t, Private, Read));
        assert!(!can_access_table(Role::Service, t, Restricted, Read));
        assert!(can_access_table(Role::Dba, t, Restricted, Write));
        assert!(!can_access_table(Role::System, TableType::System, Public, Write));
    }

    #[test]
    fn user_management_is_bounded_by_own_role() {
        assert!(!can_manage_user(Role::Service, Role::User));
        assert!(can_manage_user(Role::Dba, Role::Dba));
        assert!(!can_manage_user(Role::Dba, Role::System));
        assert!(can_manage_user(Role::System, Role::System));
    }
}
