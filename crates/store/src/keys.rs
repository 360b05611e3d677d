//! Key records in the store (methods live on [`Store`](crate::Store) in `sqlite.rs`).
//!
//! Only what verifies a key is stored: a SHA-256 of the full key and a SCRAM-SHA-256
//! verifier; never the secret.
use rusqlite::Row;
use warden_core::KeyRecord;

pub(crate) const KEY_COLUMNS: &str = "id, principal, groups, created_at, expires_at, revoked_at, secret_hash, \
     scram_salt, scram_iterations, scram_stored_key, scram_server_key";

pub(crate) const INSERT_KEY_SQL: &str = "INSERT INTO keys (id, principal, groups, created_at, expires_at, revoked_at, \
     secret_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Read a row selected with [`KEY_COLUMNS`].
pub(crate) fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let id: String = row.get(0)?;
    let groups_json: String = row.get(2)?;
    let groups: Vec<String> =
        serde_json::from_str(&groups_json).map_err(|e| bad(2, &id, "groups", e.to_string()))?;
    let iterations: i64 = row.get(8)?;
    Ok(KeyRecord {
        principal: row.get(1)?,
        groups,
        created_at: row.get(3)?,
        expires_at: row.get(4)?,
        revoked_at: row.get(5)?,
        secret_hash: fixed32(row, 6, &id, "secret_hash")?,
        scram_salt: row.get(7)?,
        scram_iterations: u32::try_from(iterations).map_err(|_| {
            bad(
                8,
                &id,
                "scram_iterations",
                format!("{iterations} out of range"),
            )
        })?,
        scram_stored_key: fixed32(row, 9, &id, "scram_stored_key")?,
        scram_server_key: fixed32(row, 10, &id, "scram_server_key")?,
        id,
    })
}

fn fixed32(row: &Row<'_>, idx: usize, id: &str, col: &str) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = row.get(idx)?;
    v.as_slice()
        .try_into()
        .map_err(|_| bad(idx, id, col, format!("{} bytes, expected 32", v.len())))
}

fn bad(idx: usize, id: &str, col: &str, why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Blob,
        format!("key {id}: column {col} is malformed: {why}").into(),
    )
}
