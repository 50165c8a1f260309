//! Our own access tokens: short-lived HS256 JWTs with `sub`, `role`, `iat`, `exp`, `iss`.
//! Only HS256 is accepted, so `alg: none` and algorithm-confusion tokens fail.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::identity::{Role, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, ttl_secs: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_string(),
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    pub fn issue(&self, user: &UserId, role: Role, now_secs: u64) -> Result<String, AuthError> {
        let claims = Claims {
            sub: user.to_string(),
            role,
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
            iss: self.issuer.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::InvalidToken)
    }

    /// Verifies signature, algorithm, issuer and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        v.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
                _ => AuthError::InvalidToken,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64_helpers::b64;

    mod base64_helpers {
        pub fn b64(s: &str) -> String {
            const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let b = s.as_bytes();
            let mut out = String::new();
            for c in b.chunks(3) {
                let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
                for i in 0..=c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn issue_verify_and_reject() {
        let k = TokenKeys::new(b"0123456789abcdef0123456789abcdef", "kalamdb", 60);
        let u = UserId::parse("alice").unwrap();
        let t = k.issue(&u, Role::Dba, now()).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.role), ("alice", Role::Dba));

        // expired
        let old = k.issue(&u, Role::User, now() - 120).unwrap();
        assert!(matches!(k.verify(&old), Err(AuthError::ExpiredToken)));
        // tampered payload
        let parts: Vec<&str> = t.split('.').collect();
        let forged = b64(&format!(
            r#"{{"sub":"alice","role":"system","iat":{0},"exp":{1},"iss":"kalamdb"}}"#,
            now(),
            now() + 60
        ));
        assert!(k.verify(&format!("{}.{}.{}", parts[0], forged, parts[2])).is_err());
        // alg none
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), forged);
        assert!(k.verify(&none).is_err());
        // another secret, another issuer
        let other = TokenKeys::new(b"another-secret-another-secret!!!", "kalamdb", 60);
        assert!(other.verify(&t).is_err());
        let other_iss = TokenKeys::new(b"0123456789abcdef0123456789abcdef", "someone-else", 60);
        assert!(other_iss.verify(&t).is_err());
    }
}
