//! Where evidence and keys live.
//!
//! - [`chain`]: canonical serialization and the SHA-256 hash chain.
//! - [`ledger`]: the append path — chain placed and logged in the caller, SQLite indexed
//!   behind, fail closed.
//! - `journal`: the append log that makes an acknowledged record durable (and its recovery).
//! - [`sqlite`]: the embedded default backend (WAL).
//! - `postings`: the index by block of principal, connection, kind and session id.
//! - [`keys`]: key records (hashed; never the secret).
//! - [`merkle`]: RFC 6962 Merkle tree, inclusion and consistency proofs.
//! - [`checkpoint`]: Ed25519-signed checkpoints over the Merkle root and chain head.
//! - [`verify`]: full verification (chain, roots, signatures) naming the first problem.
//! - [`bundle`]: offline evidence bundles (export, verify).
//! - [`retention`]: pruning old records only after sealing them into a verified bundle.
//! - [`sessions`]: session summaries.
//! - [`console`]: bounded, indexed read queries for the web console and admin API.
//!
//! The `Store` is the handle the gateway and CLI use.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod console;
mod journal;
mod keycache;
pub mod keys;
pub mod ledger;
pub mod merkle;
mod postings;
pub mod query;
mod recent_ids;
pub mod record_json;
pub mod retention;
pub mod sessions;
pub mod sqlite;
pub mod verify;

pub use bundle::{BundleReport, ExportFilter, ExportSummary, verify_bundle};
pub use checkpoint::{Checkpoint, PublicKey, Signer};
pub use ledger::{
    Appended, Durability, Ledger, LedgerError, QUEUE_CAPACITY as DEFAULT_INDEX_BACKLOG,
};
pub use query::{RecordFilter, VerifyProblem, VerifyReport};
pub use retention::{PruneSummary, Seal};
pub use sessions::{SessionFilter, SessionSummary};
pub use sqlite::{Store, StoreError, StoreOptions};
pub use verify::{EvidenceProblem, EvidenceReport, ProblemKind};

#[cfg(test)]
mod evidence_tests;
#[cfg(test)]
mod postings_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
