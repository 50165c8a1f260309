//! Who a request is: password login, refresh and logout (`login`), sign-in with OAuth
//! 2.0 / OIDC providers (`oauth`), bearer tokens of trusted external issuers and their
//! cached JWKS (`external`), and the credentials of each request turned into an
//! execution context (`request`). The rules themselves (hashing, token claims,
//! permissions) are the `kalamdb-auth` crate's; accounts and sessions the engine's.

pub mod external;
pub mod login;
pub mod oauth;
pub mod request;
