//! The evidence record: one immutable ledger entry (PRODUCT.md, "Evidence record").
//!
//! The ledger assigns `seq`, `prev_hash` and `hash`; everything else is filled by the
//! pipeline. `hash = SHA-256(canonical JSON of the record without "hash")`, where canonical
//! JSON is serde_json's compact output of a `serde_json::Value` (object keys sorted,
//! absent optionals omitted). See `warden_store::chain`.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{Effect, Principal};

/// Record kinds. Strings are the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    SessionStart,
    SessionEnd,
    ActionRequest,
    ActionResponse,
    PolicyDenied,
    AuthFailed,
    ApprovalRequested,
    ApprovalDecided,
    ProtocolError,
    SessionRefused,
    /// Retention removed records after sealing them into a signed bundle.
    RetentionSealed,
}

impl RecordKind {
    pub const ALL: [RecordKind; 11] = [
        RecordKind::SessionStart,
        RecordKind::SessionEnd,
        RecordKind::ActionRequest,
        RecordKind::ActionResponse,
        RecordKind::PolicyDenied,
        RecordKind::AuthFailed,
        RecordKind::ApprovalRequested,
        RecordKind::ApprovalDecided,
        RecordKind::ProtocolError,
        RecordKind::SessionRefused,
        RecordKind::RetentionSealed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::SessionStart => "session.start",
            RecordKind::SessionEnd => "session.end",
            RecordKind::ActionRequest => "action.request",
            RecordKind::ActionResponse => "action.response",
            RecordKind::PolicyDenied => "policy.denied",
            RecordKind::AuthFailed => "auth.failed",
            RecordKind::ApprovalRequested => "approval.requested",
            RecordKind::ApprovalDecided => "approval.decided",
            RecordKind::ProtocolError => "protocol.error",
            RecordKind::SessionRefused => "session.refused",
            RecordKind::RetentionSealed => "retention.sealed",
        }
    }
    pub fn parse(s: &str) -> Option<RecordKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Serialize for RecordKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for RecordKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RecordKind::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown record kind `{s}`")))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionInfo {
    /// `sql`, `http`, `k8s`, `mcp`.
    pub kind: String,
    /// The exact statement or request line, as the client sent it.
    pub text: String,
    /// Bound parameters (extended protocol), rendered as text; `null` for SQL NULL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Option<String>>,
    /// Statement kinds found by the classifier (`select`, `delete`, `ddl`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sql_kinds: Vec<String>,
    /// Tables the statement touches, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInfo {
    pub effect: Effect,
    pub rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseInfo {
    /// `ok`, `error`, `not_executed` (skipped after an earlier error in the batch),
    /// `cancelled`, `interrupted` (connection lost before completion).
    pub status: String,
    /// Protocol completion tag, e.g. `SELECT 3`, `DELETE 1`, HTTP `200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Error code (SQLSTATE) and message when `status = error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// The masked payload, capped (masking issue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub masked_values: BTreeMap<String, u64>,
}

/// One evidence record. Optional fields are omitted from the canonical form when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub seq: u64,
    pub id: String,
    pub ts: String,
    pub kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<std::sync::Arc<Principal>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Client address (`ip:port`) the session came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionInfo>,
    /// For `action.response` / `approval.*`: the id of the `action.request` it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseInfo>,
    /// Free-text detail: why authentication failed, why a session ended, ...
    /// Never contains credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// A record before the ledger has placed it in the chain (no seq, no hashes).
pub type NewRecord = EvidenceRecord;

impl EvidenceRecord {
    /// A fresh record of `kind` with a new id and the current time; the ledger fills
    /// `seq`, `prev_hash` and `hash`.
    pub fn new(kind: RecordKind) -> Self {
        EvidenceRecord {
            seq: 0,
            id: new_id(),
            ts: crate::time_fmt::now_rfc3339(),
            kind,
            session_id: None,
            principal: None,
            connection: None,
            protocol: None,
            purpose: None,
            client: None,
            action: None,
            request_id: None,
            decision: None,
            approval: None,
            response: None,
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// A 128-bit random id, hex, time-ordered prefix so ids sort roughly by creation.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // getpid(2) is a real system call (glibc no longer caches it): read it once.
    static PID: std::sync::LazyLock<u32> = std::sync::LazyLock::new(std::process::id);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Mix in address-space entropy cheaply; uniqueness comes from time + counter + pid.
    let pid = *PID as u64;
    id_hex(nanos, (pid as u32) ^ (c >> 32) as u32, c as u32)
}

/// `{a:016x}{b:08x}{c:08x}` without `format!` (once per record).
fn id_hex(a: u64, b: u32, c: u32) -> String {
    let mut s = String::with_capacity(32);
    push_hex(&mut s, &a.to_be_bytes());
    push_hex(&mut s, &b.to_be_bytes());
    push_hex(&mut s, &c.to_be_bytes());
    s
}

/// Append the lowercase hex of `bytes` to `out` (ids and hashes: per record, so no
/// `format!` and no iterator collection).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hex_matches_the_format_macro() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let (a, b, c) = (x.rotate_left(17), (x >> 7) as u32, x as u32);
            assert_eq!(id_hex(a, b, c), format!("{a:016x}{b:08x}{c:08x}"));
        }
        assert_eq!(id_hex(0, 0, 0), "0".repeat(32));
        assert_eq!(id_hex(u64::MAX, u32::MAX, u32::MAX), "f".repeat(32));
    }

    #[test]
    fn new_ids_are_32_lowercase_hex_digits_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
    }
}
