//! A Warden-issued key as stored: never the secret itself, only what verifies it.
use serde::{Deserialize, Serialize};

/// Stored form of a Warden key. The presented key looks like `wk_<id>_<secret>`; the store
/// keeps a SHA-256 of the whole key (for bearer checks) and a SCRAM-SHA-256 verifier
/// (for the PostgreSQL listener, so the key never crosses the wire in clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public key id (the `<id>` in `wk_<id>_<secret>`); safe to log.
    pub id: String,
    /// `agent:NAME` or `user:NAME`.
    pub principal: String,
    pub groups: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// SHA-256 of the full presented key.
    pub secret_hash: [u8; 32],
    /// SCRAM-SHA-256 verifier: salt (shared by all keys of one principal), iterations,
    /// StoredKey and ServerKey (RFC 5802).
    pub scram_salt: Vec<u8>,
    pub scram_iterations: u32,
    pub scram_stored_key: [u8; 32],
    pub scram_server_key: [u8; 32],
}

impl KeyRecord {
    /// Not revoked and not expired at `now` (RFC 3339 strings compare correctly only when
    /// both are UTC with the same precision, so parse).
    pub fn is_active(&self, now: time::OffsetDateTime) -> bool {
        if self.revoked_at.is_some() {
            return false;
        }
        match &self.expires_at {
            None => true,
            Some(e) => {
                match time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                {
                    Ok(t) => now < t,
                    Err(_) => false, // unreadable expiry: fail closed
                }
            }
        }
    }
}
