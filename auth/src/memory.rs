//! A bounded memory of verified bearer tokens. A token presented again skips its
//! signature check until it expires. Entries are keyed by the SHA-256 of the token, so
//! the memory holds no token text; a hit needs the exact bytes that were verified.

use std::collections::HashMap;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The SHA-256 of a token: the key under which it is remembered.
pub type TokenDigest = [u8; 32];

pub struct TokenMemory<T> {
    /// What a verification gave, and the last Unix second it holds for.
    entries: Mutex<HashMap<TokenDigest, (T, u64)>>,
    capacity: usize,
}

impl<T: Clone> TokenMemory<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        Sha256::digest(token.as_bytes()).into()
    }

    /// What the token's verification gave, if it is remembered and still valid at
    /// `now_secs`.
    pub fn recall(&self, digest: &TokenDigest, now_secs: u64) -> Option<T> {
        match self.entries.lock().get(digest) {
            Some((value, valid_through)) if *valid_through >= now_secs => Some(value.clone()),
            _ => None,
        }
    }

    /// Remembers a verified token until `valid_through` (Unix seconds, inclusive).
    /// When full, expired entries go first, and everything if none has expired.
    pub fn remember(&self, digest: TokenDigest, value: T, valid_through: u64, now_secs: u64) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, through)| *through >= now_secs);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, (value, valid_through));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_recalled_until_it_expires_and_only_by_its_exact_bytes() {
        let m = TokenMemory::new(2);
        let d = TokenMemory::<u32>::digest("token-a");
        m.remember(d, 7, 100, 50);
        assert_eq!(m.recall(&d, 100), Some(7));
        assert_eq!(m.recall(&d, 101), None);
        assert_eq!(m.recall(&TokenMemory::<u32>::digest("token-b"), 50), None);
    }

    #[test]
    fn a_full_memory_drops_expired_entries_first() {
        let m = TokenMemory::new(2);
        let (a, b, c) = (
            TokenMemory::<u32>::digest("a"),
            TokenMemory::<u32>::digest("b"),
            TokenMemory::<u32>::digest("c"),
        );
        m.remember(a, 1, 10, 0);
        m.remember(b, 2, 1000, 0);
        m.remember(c, 3, 1000, 500);
        assert_eq!(m.recall(&a, 5), None, "expired entry evicted");
        assert_eq!(m.recall(&b, 500), Some(2));
        assert_eq!(m.recall(&c, 500), Some(3));
    }
}
