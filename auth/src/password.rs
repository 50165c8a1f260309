//! Password rules and bcrypt hashing. Hashing is CPU-bound (~250 ms at cost 12):
//! async callers run it on a blocking thread.

use crate::error::AuthError;

pub const MIN_PASSWORD_BYTES: usize = 8;
/// bcrypt ignores bytes past 72; longer passwords are refused rather than truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
pub const DEFAULT_COST: u32 = 12;

pub fn check_rules(password: &str) -> Result<(), AuthError> {
    let n = password.len();
    if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&n) {
        return Err(AuthError::PasswordLength {
            min: MIN_PASSWORD_BYTES,
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

pub fn hash(password: &str, cost: u32) -> Result<String, AuthError> {
    check_rules(password)?;
    Ok(bcrypt::hash(password, cost)?)
}

/// Constant-time check of `password` against a bcrypt hash. A malformed hash is a
/// mismatch, not an error the caller could tell apart.
pub fn verify(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// A valid hash of a random password, verified against when the user is unknown so
/// that a failed login takes the same time whatever the reason.
pub fn dummy_hash(cost: u32) -> String {
    bcrypt::hash("kalamdb-no-such-user-password", cost).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse", 4).unwrap();
        assert!(h.starts_with("$2"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse!", &h));
        assert!(!verify("x", "not-a-hash"));
    }

    #[test]
    fn length_rules() {
        assert!(hash("short", 4).is_err());
        assert!(hash(&"x".repeat(73), 4).is_err());
        assert!(hash(&"x".repeat(72), 4).is_ok());
    }
}
