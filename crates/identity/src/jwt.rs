//! OIDC JWT validation. STUB: to be implemented.
use std::path::PathBuf;
use warden_core::Principal;

/// `[identity.oidc]` after config validation.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    /// Claim holding groups (array of strings, or a space-separated string). Default `groups`.
    pub groups_claim: String,
    /// Allowed algorithms, e.g. ["RS256", "ES256", "EdDSA"]. Never `none`, never HS* with a JWKS.
    pub algorithms: Vec<String>,
    /// Minimum seconds between JWKS refreshes triggered by an unknown `kid`.
    pub refresh_floor_secs: u64,
    /// Allowed clock skew for exp/nbf, seconds.
    pub leeway_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("token algorithm `{0}` is not allowed")]
    Algorithm(String),
    #[error("no key with kid `{0}` in the issuer's JWKS")]
    UnknownKid(String),
    #[error("token signature is invalid")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issuer or audience does not match")]
    Claims,
    #[error("token has no usable subject")]
    Subject,
    #[error("JWKS unavailable: {0}")]
    Jwks(String),
}

pub struct JwtValidator {
    _private: (),
}

impl JwtValidator {
    pub fn new(_settings: OidcSettings) -> Result<JwtValidator, JwtError> {
        todo!()
    }
    /// Does `s` look like a JWT at all (three base64url parts)? Cheap, no validation.
    pub fn looks_like_jwt(s: &str) -> bool {
        s.split('.').count() == 3 && s.len() > 20
    }
    /// Validate and map to a principal.
    pub async fn validate(&self, _token: &str) -> Result<Principal, JwtError> {
        todo!()
    }
}
