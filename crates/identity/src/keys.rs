//! Warden keys. STUB: to be implemented.
use warden_core::KeyRecord;

/// Iterations for the SCRAM verifier. Keys carry 256 bits of entropy, so the iteration
/// count protects nothing extra; 4096 is what libpq and PostgreSQL expect as a minimum.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A freshly generated key: `presented` is shown once and never stored.
pub struct GeneratedKey {
    /// `wk_<id>_<secret>`: id = 12 lowercase hex chars, secret = 43 chars base64url (256 bits).
    pub presented: String,
    pub record: KeyRecord,
}

/// Generate a key for `principal` (already validated) with `groups`, expiring at
/// `expires_at` (RFC 3339) if given.
pub fn generate_key(_principal: &str, _groups: &[String], _expires_at: Option<String>) -> GeneratedKey {
    todo!()
}

/// The id part of a presented key, if it has the `wk_<id>_<secret>` shape.
pub fn key_id_of(_presented: &str) -> Option<&str> {
    todo!()
}

/// Constant-time check of a presented key against a stored record (hash only; the
/// caller checks `is_active`).
pub fn verify_bearer(_presented: &str, _record: &KeyRecord) -> bool {
    todo!()
}

/// The SCRAM salt of a principal: derived from its id so every key of one principal
/// shares it (the server must send the salt before it knows which key the client holds)
/// and unknown principals get a plausible salt too (no user enumeration).
pub fn scram_salt_for(_principal: &str) -> [u8; 16] {
    todo!()
}
