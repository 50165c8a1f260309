use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("password must be between {min} and {max} bytes")]
    PasswordLength { min: usize, max: usize },
    #[error("password hashing failed")]
    Hash(#[from] bcrypt::BcryptError),
    #[error("unknown role '{0}'")]
    UnknownRole(String),
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    ExpiredToken,
    #[error("invalid user name '{0}': use 1-64 letters, digits, '_', '-' or '.'")]
    InvalidUserName(String),
}
