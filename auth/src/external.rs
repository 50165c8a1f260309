//! Access tokens signed by a trusted external issuer (an OIDC provider), verified
//! against the issuer's published keys (JWKS). Only asymmetric algorithms are accepted
//! (RS256/384/512, PS256, ES256): `none` does not parse, and an HS256 token "signed"
//! with an issuer's public key finds no key, because HMAC is never accepted and an
//! RSA or EC key is never used as an HMAC secret. A key must fit the token's algorithm
//! (its type, its curve, its own `alg` when it names one) and not be an encryption key.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::AuthError;

pub const ACCEPTED_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
];

#[derive(Deserialize)]
struct ClaimedIssuer {
    iss: Option<String>,
}

/// The issuer a token names, read without trusting it: only to pick that issuer's
/// keys, which then decide.
pub fn claimed_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode_claims::<ClaimedIssuer>(token)
        .ok()?
        .iss
}

/// How a token says it was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedWith {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

pub fn signed_with(token: &str) -> Result<SignedWith, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(AuthError::InvalidToken);
    }
    Ok(SignedWith {
        alg: header.alg,
        kid: header.kid,
    })
}

fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let kind = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256) => {
            true
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        _ => false,
    };
    let named = jwk
        .common
        .key_algorithm
        .is_none_or(|k| Algorithm::from_str(&k.to_string()).ok() == Some(alg));
    let for_signing = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
    kind && named && for_signing
}

/// The key of `keys` that verifies a token signed as `signed`: the one with its `kid`,
/// or, for a token without one, the only key that fits its algorithm.
pub fn key_for<'a>(keys: &'a JwkSet, signed: &SignedWith) -> Option<&'a Jwk> {
    match &signed.kid {
        Some(kid) => keys.find(kid).filter(|k| fits(k, signed.alg)),
        None => {
            let mut fitting = keys.keys.iter().filter(|k| fits(k, signed.alg));
            let first = fitting.next();
            if fitting.next().is_some() { None } else { first }
        }
    }
}

/// What a token must be for.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Verifies signature, issuer, audience, expiry and not-before; returns the claims.
pub fn verify(
    token: &str,
    key: &Jwk,
    alg: Algorithm,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, AuthError> {
    if !fits(key, alg) {
        return Err(AuthError::InvalidToken);
    }
    let decoding = DecodingKey::from_jwk(key).map_err(|_| AuthError::InvalidToken)?;
    let mut v = Validation::new(alg);
    v.set_issuer(&[expected.issuer]);
    v.set_audience(&[expected.audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = expected.leeway_secs;
    jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
            _ => AuthError::InvalidToken,
        })
}
