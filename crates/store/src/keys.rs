//! Key records in the store. STUB (methods live on Store in sqlite.rs).
