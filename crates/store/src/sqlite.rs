//! SQLite backend. STUB.
use std::path::Path;
use warden_core::{EvidenceRecord, KeyRecord};

use crate::{Durability, Ledger, RecordFilter, VerifyReport};

pub struct Store {
    _private: (),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(String),
    #[error("store URL `{0}` not supported (use sqlite://PATH)")]
    Url(String),
}

impl Store {
    /// Open (creating if needed) `sqlite://PATH`; relative paths resolve against `base_dir`.
    pub fn open(_url: &str, _base_dir: &Path, _durability: Durability) -> Result<Store, StoreError> {
        todo!()
    }
    /// Handle to the writer (starts the writer thread on first call).
    pub fn ledger(&self) -> Ledger {
        todo!()
    }
    pub fn query(&self, _filter: &RecordFilter, _each: &mut dyn FnMut(EvidenceRecord) -> bool) -> Result<u64, StoreError> {
        todo!()
    }
    pub fn verify(&self, _progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, StoreError> {
        todo!()
    }
    pub fn insert_key(&self, _rec: &KeyRecord) -> Result<(), StoreError> {
        todo!()
    }
    pub fn key_by_id(&self, _id: &str) -> Result<Option<KeyRecord>, StoreError> {
        todo!()
    }
    pub fn keys_for_principal(&self, _principal: &str) -> Result<Vec<KeyRecord>, StoreError> {
        todo!()
    }
    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        todo!()
    }
    pub fn revoke_key(&self, _id: &str, _at: &str) -> Result<bool, StoreError> {
        todo!()
    }
}
