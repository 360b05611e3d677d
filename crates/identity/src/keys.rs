//! Warden keys: `wk_<id>_<secret>`, generated here, stored only as a SHA-256 and a
//! SCRAM-SHA-256 verifier, checked in constant time.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warden_core::KeyRecord;

/// Iterations for the SCRAM verifier. Keys carry 256 bits of entropy, so the iteration
/// count protects nothing extra; 4096 is what libpq and PostgreSQL expect as a minimum.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Length of the id part (lowercase hex).
const ID_LEN: usize = 12;
/// Length of the secret part: 32 bytes base64url without padding.
const SECRET_LEN: usize = 43;

/// A freshly generated key: `presented` is shown once and never stored.
pub struct GeneratedKey {
    /// `wk_<id>_<secret>`: id = 12 lowercase hex chars, secret = 43 chars base64url (256 bits).
    pub presented: String,
    pub record: KeyRecord,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, even in debug output.
        f.debug_struct("GeneratedKey")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

/// Generate a key for `principal` (already validated) with `groups`, expiring at
/// `expires_at` (RFC 3339) if given.
pub fn generate_key(
    principal: &str,
    groups: &[String],
    expires_at: Option<String>,
) -> GeneratedKey {
    let mut rng = rand::rng();
    let mut id_bytes = [0u8; ID_LEN / 2];
    rng.fill_bytes(&mut id_bytes);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id_bytes);
    let presented = format!("wk_{id}_{}", URL_SAFE_NO_PAD.encode(secret));

    let salt = scram_salt_for(principal);
    let (stored_key, server_key) = scram_verifier(presented.as_bytes(), &salt, SCRAM_ITERATIONS);
    let record = KeyRecord {
        id,
        principal: principal.to_string(),
        groups: groups.to_vec(),
        created_at: warden_core::time_fmt::now_rfc3339(),
        expires_at,
        revoked_at: None,
        secret_hash: sha256(presented.as_bytes()),
        scram_salt: salt.to_vec(),
        scram_iterations: SCRAM_ITERATIONS,
        scram_stored_key: stored_key,
        scram_server_key: server_key,
    };
    GeneratedKey { presented, record }
}

/// The id part of a presented key, if it has the `wk_<id>_<secret>` shape.
pub fn key_id_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix("wk_")?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN || !rest.is_ascii() {
        return None;
    }
    // All ASCII, so byte indices are char boundaries.
    let (id, tail) = rest.split_at(ID_LEN);
    let secret = tail.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let secret_ok = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// Constant-time check of a presented key against a stored record (hash only; the
/// caller checks `is_active`).
pub fn verify_bearer(presented: &str, record: &KeyRecord) -> bool {
    let h = sha256(presented.as_bytes());
    h.ct_eq(&record.secret_hash).into()
}

/// The SCRAM salt of a principal: derived from its id so every key of one principal
/// shares it (the server must send the salt before it knows which key the client holds)
/// and unknown principals get a plausible salt too (no user enumeration).
pub fn scram_salt_for(principal: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"warden-scram-salt:v1:");
    h.update(principal.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// SCRAM-SHA-256 verifier (RFC 5802/7677) of `password`: (StoredKey, ServerKey).
pub fn scram_verifier(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = hi(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = sha256(&client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    (stored_key, server_key)
}

/// Hi(str, salt, i) of RFC 5802: PBKDF2 with HMAC-SHA-256 and one output block.
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations.max(1) {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_shape_and_record() {
        let g = generate_key("agent:bot", &["agents".to_string()], None);
        assert_eq!(g.presented.len(), 3 + 12 + 1 + 43);
        let id = key_id_of(&g.presented).expect("well-formed");
        assert_eq!(id, g.record.id);
        assert_eq!(g.record.principal, "agent:bot");
        assert_eq!(g.record.groups, vec!["agents".to_string()]);
        assert_eq!(g.record.scram_iterations, SCRAM_ITERATIONS);
        assert_eq!(g.record.scram_salt, scram_salt_for("agent:bot").to_vec());
        assert!(verify_bearer(&g.presented, &g.record));
        assert!(g.record.is_active(time::OffsetDateTime::now_utc()));
        assert!(!format!("{g:?}").contains(&g.presented));
        // Verifier matches the RFC formulas.
        let (sk, svk) = scram_verifier(
            g.presented.as_bytes(),
            &g.record.scram_salt,
            SCRAM_ITERATIONS,
        );
        assert_eq!(sk, g.record.scram_stored_key);
        assert_eq!(svk, g.record.scram_server_key);
    }

    #[test]
    fn keys_are_unique() {
        let a = generate_key("user:a", &[], None);
        let b = generate_key("user:a", &[], None);
        assert_ne!(a.presented, b.presented);
        assert_ne!(a.record.id, b.record.id);
        assert!(!verify_bearer(&a.presented, &b.record));
    }

    #[test]
    fn wrong_key_rejected() {
        let g = generate_key("user:a", &[], None);
        let mut wrong = g.presented.clone();
        wrong.pop();
        wrong.push(if g.presented.ends_with('A') { 'B' } else { 'A' });
        assert!(!verify_bearer(&wrong, &g.record));
        assert!(!verify_bearer("", &g.record));
    }

    #[test]
    fn key_id_parsing() {
        let secret = "A".repeat(43);
        assert_eq!(
            key_id_of(&format!("wk_0123456789ab_{secret}")),
            Some("0123456789ab")
        );
        assert_eq!(key_id_of(&format!("wk_0123456789AB_{secret}")), None);
        assert_eq!(key_id_of(&format!("wk_0123456789a_{secret}A")), None);
        assert_eq!(
            key_id_of(&format!("wk_0123456789ab_{}", "A".repeat(42))),
            None
        );
        assert_eq!(
            key_id_of(&format!("wk_0123456789ab_{}+", "A".repeat(42))),
            None
        );
        assert_eq!(key_id_of(&format!("xk_0123456789ab_{secret}")), None);
        assert_eq!(key_id_of(&format!("wk_0123456789ab-{secret}")), None);
        assert_eq!(key_id_of(""), None);
        assert_eq!(key_id_of("wk_"), None);
        // Multi-byte characters must not panic on slicing.
        let odd = format!("wk_0123456789é_{}", "A".repeat(42));
        assert_eq!(key_id_of(&odd), None);
    }

    #[test]
    fn salt_is_deterministic_per_principal() {
        assert_eq!(scram_salt_for("agent:x"), scram_salt_for("agent:x"));
        assert_ne!(scram_salt_for("agent:x"), scram_salt_for("agent:y"));
        let mut h = Sha256::new();
        h.update(b"warden-scram-salt:v1:agent:x");
        assert_eq!(&scram_salt_for("agent:x")[..], &h.finalize()[..16]);
    }

    #[test]
    fn pbkdf2_known_answer() {
        // RFC 7677 example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
        use base64::engine::general_purpose::STANDARD;
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = hi(b"pencil", &salt, 4096);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_key = hmac_sha256(&salted, b"Server Key");
        let server_sig = hmac_sha256(&server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }
}
