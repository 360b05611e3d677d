//! The append path. STUB.
use warden_core::EvidenceRecord;

/// How durable an acknowledged append is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every group commit: survives power loss.
    Fsync,
    /// written to the OS (WAL, synchronous=NORMAL): survives a crash of the gateway process.
    #[default]
    Process,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum LedgerError {
    #[error("evidence ledger unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub seq: u64,
    pub id: String,
    pub hash: String,
}

/// Cloneable handle to the single writer.
#[derive(Clone)]
pub struct Ledger {
    _private: (),
}

impl Ledger {
    /// Append; resolves once the record is committed at the configured durability.
    pub async fn append(&self, _rec: EvidenceRecord) -> Result<Appended, LedgerError> {
        todo!()
    }
    /// Queue without waiting (response records, session.end). Ordering relative to other
    /// appends from the same task is preserved.
    pub fn append_background(&self, _rec: EvidenceRecord) {
        todo!()
    }
    /// Wait until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        todo!()
    }
}
