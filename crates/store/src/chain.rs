//! Canonical serialization and the hash chain. STUB.
use warden_core::EvidenceRecord;

/// prev_hash of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Canonical JSON of `rec` without its `hash` field: object keys sorted by byte order,
/// no insignificant whitespace, absent optionals omitted, UTF-8.
pub fn canonical_json(_rec: &EvidenceRecord) -> String {
    todo!()
}

/// Lowercase hex SHA-256 of `canonical_json(rec)`.
pub fn record_hash(_rec: &EvidenceRecord) -> String {
    todo!()
}
