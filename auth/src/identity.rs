use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// A user's stable id (its login name for local users).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const ROOT: &'static str = "root";

    /// Accepts 1-64 characters of `[A-Za-z0-9_.-]`, so ids are safe in keys, paths and logs.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(UserId(s.to_string()))
        } else {
            Err(AuthError::InvalidUserName(s.chars().take(80).collect()))
        }
    }

    pub fn root() -> Self {
        UserId(Self::ROOT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Roles, lowest to highest. `Ord` follows that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Service,
    Dba,
    System,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::User, Role::Service, Role::Dba, Role::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Dba => "dba",
            Role::System => "system",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| AuthError::UnknownRole(s.chars().take(40).collect()))
    }
}
