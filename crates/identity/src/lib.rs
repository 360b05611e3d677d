//! Identity: who is calling.
//!
//! - [`keys`]: Warden keys `wk_<id>_<secret>` — generated, shown once, stored only as a
//!   SHA-256 and a SCRAM-SHA-256 verifier; checked in constant time.
//! - [`scram`]: the server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it.
//! - [`jwt`]: OIDC JWTs validated against a JWKS (file or URL), cached by `kid`.
#![forbid(unsafe_code)]

pub mod jwt;
pub mod keys;
pub mod scram;

pub use jwt::{JwtError, JwtValidator, OidcSettings};
pub use keys::{GeneratedKey, generate_key, key_id_of, scram_salt_for, verify_bearer};
pub use scram::{ScramError, ScramServer};
