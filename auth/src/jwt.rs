//! Our own access tokens: short-lived HS256 JWTs with `sub`, `role`, `iat`, `exp`, `iss`,
//! the session they belong to (`sid`) and the user's session epoch when issued (`sep`),
//! by which the engine revokes them. Only HS256 is accepted, so `alg: none` and
//! algorithm-confusion tokens fail.

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
    /// The session (login) the token belongs to.
    pub sid: String,
    /// The user's session epoch when the token was issued.
    pub sep: u64,
}

/// What an access token is issued for.
pub struct Grant<'a> {
    pub user: &'a UserId,
    pub role: Role,
    pub session: &'a str,
    pub epoch: u64,
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

    pub fn issue(&self, grant: &Grant<'_>, now_secs: u64) -> Result<String, AuthError> {
        let claims = Claims {
            sub: grant.user.to_string(),
            role: grant.role,
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
            iss: self.issuer.clone(),
            sid: grant.session.to_string(),
            sep: grant.epoch,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::InvalidToken)
    }

    /// Verifies signature, algorithm, issuer and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.decode(token, true)
    }

    /// Verifies signature, algorithm and issuer but not expiry: an expired token still
    /// names the session that logout ends.
    pub fn verify_any_age(&self, token: &str) -> Result<Claims, AuthError> {
        self.decode(token, false)
    }

    fn decode(&self, token: &str, check_expiry: bool) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&self.issuer]);
        // `sid` and `sep` are required by the Claims type itself
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        v.leeway = 0;
        v.validate_exp = check_expiry;
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
        let grant = |role| Grant {
            user: &u,
            role,
            session: "s1",
            epoch: 3,
        };
        let t = k.issue(&grant(Role::Dba), now()).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.role, c.sid.as_str(), c.sep),
            ("alice", Role::Dba, "s1", 3)
        );

        // expired
        let old = k.issue(&grant(Role::User), now() - 120).unwrap();
        assert!(matches!(k.verify(&old), Err(AuthError::ExpiredToken)));
        assert_eq!(k.verify_any_age(&old).unwrap().sid, "s1");
        // tampered payload
        let parts: Vec<&str> = t.split('.').collect();
        let forged = b64(&format!(
            r#"{{"sub":"alice","role":"system","iat":{0},"exp":{1},"iss":"kalamdb","sid":"s1","sep":3}}"#,
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
