//! Where evidence and keys live.
//!
//! - [`chain`]: canonical serialization and the SHA-256 hash chain.
//! - [`ledger`]: the append path — one writer thread, group commit, fail closed.
//! - [`sqlite`]: the embedded default backend (WAL).
//! - [`keys`]: key records (hashed; never the secret).
//!
//! The `Store` is the handle the gateway and CLI use.
#![forbid(unsafe_code)]

pub mod chain;
pub mod keys;
pub mod ledger;
pub mod query;
pub mod sqlite;

pub use ledger::{Appended, Durability, Ledger, LedgerError};
pub use query::{RecordFilter, VerifyProblem, VerifyReport};
pub use sqlite::{Store, StoreError, StoreOptions};

#[cfg(test)]
mod tests;
