//! kalamdb-auth: identities, password hashing, and the permission matrix as pure
//! functions. It knows nothing of storage or the engine.

pub mod error;
pub mod external;
pub mod identity;
pub mod jwt;
pub mod memory;
pub mod password;
pub mod permissions;
