//! Signed checkpoints: an Ed25519 signature over the Merkle root and the chain head.
//!
//! A checkpoint commits to the first `tree_size` records (seq `1..=tree_size`):
//! `root` is the RFC 6962 Merkle root over their leaves ([`crate::merkle`]), `head_hash`
//! is the `hash` of record `tree_size`. The signed message is the UTF-8 text
//!
//! ```text
//! warden-checkpoint/v1\n<tree_size>\n<root hex>\n<head hash hex>\n<ts>\n
//! ```
//!
//! (decimal `tree_size`, lowercase hex, `ts` as records write it). Keys are Ed25519; a key's
//! fingerprint is the lowercase hex SHA-256 of its 32 raw public-key bytes.
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{self, Frontier, Hash};
use crate::{Store, StoreError};

pub const CHECKPOINT_HEADER: &str = "warden-checkpoint/v1";

/// One signed checkpoint (a row of the `checkpoints` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tree_size: u64,
    /// Merkle root over records `1..=tree_size`, lowercase hex.
    pub root: String,
    /// `hash` of record `tree_size`.
    pub head_hash: String,
    /// When it was signed (RFC 3339 UTC, 9 fractional digits).
    pub ts: String,
    /// SHA-256 (hex) of the signing public key.
    pub key_fingerprint: String,
    /// Ed25519 signature over [`Checkpoint::signed_text`], lowercase hex (64 bytes).
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn signed_text(&self) -> String {
        signed_text(self.tree_size, &self.root, &self.head_hash, &self.ts)
    }

    /// Check the signature with `key` (and that `key` is the one the checkpoint names).
    pub fn check_signature(&self, key: &PublicKey) -> Result<(), String> {
        if self.key_fingerprint != key.fingerprint() {
            return Err(format!(
                "checkpoint at tree_size {} names signing key {} but the trusted key is {}",
                self.tree_size,
                short(&self.key_fingerprint),
                short(&key.fingerprint())
            ));
        }
        if !key.verify(self.signed_text().as_bytes(), &self.signature) {
            return Err(format!(
                "checkpoint at tree_size {}: the signature does not verify with key {}",
                self.tree_size,
                short(&key.fingerprint())
            ));
        }
        Ok(())
    }

    /// Check with whichever of `keys` the checkpoint names.
    pub fn check_with_any(&self, keys: &[PublicKey]) -> Result<(), String> {
        match keys
            .iter()
            .find(|k| k.fingerprint() == self.key_fingerprint)
        {
            Some(k) => self.check_signature(k),
            None => Err(format!(
                "checkpoint at tree_size {} is signed by key {}, which is not a trusted key ({})",
                self.tree_size,
                short(&self.key_fingerprint),
                keys.iter()
                    .map(|k| short(&k.fingerprint()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

fn short(fp: &str) -> String {
    fp.chars().take(16).collect()
}

pub fn signed_text(tree_size: u64, root: &str, head_hash: &str, ts: &str) -> String {
    format!("{CHECKPOINT_HEADER}\n{tree_size}\n{root}\n{head_hash}\n{ts}\n")
}

/// An Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    pub fn from_bytes(b: &[u8; 32]) -> Result<Self, String> {
        VerifyingKey::from_bytes(b)
            .map(|key| PublicKey { key })
            .map_err(|e| format!("not an Ed25519 public key: {e}"))
    }
    /// 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let raw = merkle::decode32(s.trim())
            .ok_or_else(|| "an Ed25519 public key is 64 hex digits".to_string())?;
        Self::from_bytes(&raw)
    }
    /// Read a `signing.pub` file (64 hex digits).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read public key {}: {e}", path.display()))?;
        Self::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }
    /// Lowercase hex SHA-256 of the 32 raw key bytes.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.key.to_bytes()))
    }
    /// Verify an Ed25519 signature (hex) over `msg` (strict verification).
    pub fn verify(&self, msg: &[u8], signature_hex: &str) -> bool {
        let Ok(raw) = hex::decode(signature_hex) else {
            return false;
        };
        let Ok(raw): Result<[u8; 64], _> = raw.try_into() else {
            return false;
        };
        let sig = Signature::from_bytes(&raw);
        self.key.verify_strict(msg, &sig).is_ok() && self.key.verify(msg, &sig).is_ok()
    }
}

/// An Ed25519 signing key (from a 32-byte seed, as `warden init` writes it).
pub struct Signer {
    key: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public.fingerprint())
    }
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey {
            key: key.verifying_key(),
        };
        Signer { key, public }
    }
    /// 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let seed = merkle::decode32(s.trim()).ok_or_else(|| {
            "an Ed25519 signing key is a 32-byte seed in 64 hex digits".to_string()
        })?;
        Ok(Self::from_seed(&seed))
    }
    /// Read a `signing.key` file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read signing key {}: {e}", path.display()))?;
        Self::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
    /// Ed25519 signature over `msg`, lowercase hex.
    pub fn sign(&self, msg: &[u8]) -> String {
        hex::encode(self.key.sign(msg).to_bytes())
    }
    /// Sign a checkpoint for the given tree.
    pub fn checkpoint(&self, tree_size: u64, root: &Hash, head_hash: &str, ts: &str) -> Checkpoint {
        let root = hex::encode(root);
        let text = signed_text(tree_size, &root, head_hash, ts);
        Checkpoint {
            tree_size,
            root,
            head_hash: head_hash.to_string(),
            ts: ts.to_string(),
            key_fingerprint: self.public.fingerprint(),
            signature: self.sign(text.as_bytes()),
        }
    }
}

/// Cached Merkle state of the prefix already checkpointed by this process.
#[derive(Debug, Clone, Default)]
pub(crate) struct MerkleCache {
    pub frontier: Frontier,
    pub head_hash: String,
}

/// The stored frontier of the newest signed checkpoint, if it reproduces that
/// checkpoint's root (anything else — missing, malformed, altered — is ignored: the
/// caller then reads the records, as without it).
fn stored_frontier(conn: &rusqlite::Connection) -> rusqlite::Result<Option<MerkleCache>> {
    let row = conn
        .query_row(
            "SELECT f.tree_size, f.frontier, c.root, c.head_hash FROM merkle_frontier f \
             JOIN checkpoints c ON c.tree_size = f.tree_size ORDER BY f.tree_size DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((size, text, root, head_hash)) = row else {
        return Ok(None);
    };
    let nodes: Option<Vec<Hash>> = text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(crate::merkle::decode32)
        .collect();
    let frontier = nodes.and_then(|n| Frontier::from_nodes(size as u64, &n));
    Ok(frontier
        .filter(|f| hex::encode(f.root()) == root)
        .map(|frontier| MerkleCache {
            frontier,
            head_hash,
        }))
}

/// Push the hashes of the records after `cache` up to `up_to` onto it, at most `limit`
/// of them (`-1`: all); how many were read.
fn extend_from_rows(
    conn: &rusqlite::Connection,
    cache: &mut MerkleCache,
    up_to: u64,
    limit: i64,
) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, hash FROM records WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![cache.frontier.size() as i64, up_to as i64, limit])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        n += 1;
        let seq = row.get::<_, i64>(0)? as u64;
        let hash: String = row.get(1)?;
        let want = cache.frontier.size() + 1;
        if seq != want {
            return Err(StoreError::Sqlite(format!(
                "cannot checkpoint: record {want} is missing (run `warden audit verify`)"
            )));
        }
        let leaf = merkle::record_leaf(&hash).ok_or_else(|| {
            StoreError::Sqlite(format!(
                "cannot checkpoint: record {seq} has a malformed hash (run `warden audit verify`)"
            ))
        })?;
        cache.frontier.push(leaf);
        cache.head_hash = hash;
    }
    Ok(n)
}

fn cp_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        tree_size: r.get::<_, i64>(0)? as u64,
        root: r.get(1)?,
        head_hash: r.get(2)?,
        ts: r.get(3)?,
        key_fingerprint: r.get(4)?,
        signature: r.get(5)?,
    })
}

const CP_COLUMNS: &str = "tree_size, root, head_hash, ts, key_fingerprint, signature";

pub(crate) fn read_checkpoints(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<Checkpoint>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size"
    ))?;
    let rows = stmt.query_map([], cp_from_row)?;
    rows.collect()
}

impl Store {
    /// Sign and store a checkpoint over every committed record. `Ok(None)` when there is
    /// nothing new since the latest stored checkpoint (or no record at all).
    ///
    /// The Merkle state is cached in the store handle, so periodic checkpoints read only
    /// the records appended since the previous one.
    pub fn checkpoint(&self, signer: &Signer) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.reader()?;
        // Short read transactions first. A record found missing between two of them may be
        // retention's doing (it removes a sealed prefix), so that answer is only trusted
        // from one snapshot.
        let state = match self.merkle_state(&mut conn, true) {
            Ok(s) => s,
            Err(_) => self.merkle_state(&mut conn, false)?,
        };
        let Some((head_seq, head_hash, cache)) = state else {
            return Ok(None);
        };
        let cp = signer.checkpoint(
            head_seq,
            &cache.frontier.root(),
            &head_hash,
            &warden_core::time_fmt::now_rfc3339(),
        );
        self.insert_checkpoint(&cp)?;
        let nodes: Vec<String> = cache.frontier.nodes().iter().map(hex::encode).collect();
        {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM merkle_frontier", [])?;
            tx.execute(
                "INSERT INTO merkle_frontier (tree_size, frontier) VALUES (?1, ?2)",
                params![cp.tree_size as i64, nodes.join(",")],
            )?;
            tx.commit()?;
        }
        *self.merkle_cache() = cache;
        Ok(Some(cp))
    }

    /// The chain head and the Merkle state over every record up to it; `None` when there
    /// is nothing new to sign. `chunked`: read the records in chunks of 4 096, each in its
    /// own short read transaction — a checkpoint after a busy minute reads ~2 M of them,
    /// with a gap after each one in a gateway, as back-to-back reads would keep SQLite
    /// from starting its WAL over (it grew from ~20 to 157–308 MiB at the first checkpoint
    /// under `pgbench -c 8` when this was one snapshot).
    fn merkle_state(
        &self,
        conn: &mut rusqlite::Connection,
        chunked: bool,
    ) -> Result<Option<(u64, String, MerkleCache)>, StoreError> {
        let tx = conn.transaction()?;
        let (head_seq, head_hash) = crate::sqlite::read_head(&tx)?;
        if head_seq == 0 {
            return Ok(None);
        }
        let latest: Option<u64> = tx
            .query_row("SELECT MAX(tree_size) FROM checkpoints", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .map(|v| v as u64);
        if latest.is_some_and(|l| l >= head_seq) {
            return Ok(None);
        }
        let mut cache = self.merkle_cache().clone();
        if cache.frontier.size() > head_seq {
            cache = MerkleCache::default();
        }
        // A restarted gateway continues from the frontier its last checkpoint stored
        // instead of reading every record again.
        if let Some(stored) = stored_frontier(&tx)?
            && cache.frontier.size() < stored.frontier.size()
            && stored.frontier.size() <= head_seq
        {
            cache = stored;
        }
        // Records up to the latest retention seal are gone: start from its frontier.
        if let Some(seal) = crate::retention::read_seals(&tx)?.pop()
            && cache.frontier.size() < seal.up_to_seq
        {
            cache = MerkleCache {
                frontier: seal.merkle_frontier().map_err(StoreError::Sqlite)?,
                head_hash: seal.last_hash.clone(),
            };
        }
        if chunked {
            tx.finish()?;
            loop {
                let tx = conn.transaction()?;
                let n = extend_from_rows(&tx, &mut cache, head_seq, crate::sqlite::READ_CHUNK)?;
                tx.finish()?;
                if n < crate::sqlite::READ_CHUNK {
                    break;
                }
                // While this process is indexing records, leave a gap with no reader in
                // which the indexer commits: that is when SQLite can start its WAL over.
                // (Nothing waiting to be indexed — the CLI, a gateway shutting down — no gap.)
                if self.indexing() {
                    std::thread::sleep(crate::ledger::INDEX_LINGER + Duration::from_millis(5));
                }
            }
        } else {
            extend_from_rows(&tx, &mut cache, head_seq, -1)?;
            tx.finish()?;
        }
        if cache.frontier.size() != head_seq || cache.head_hash != head_hash {
            return Err(StoreError::Sqlite(format!(
                "cannot checkpoint: the chain head moved or is inconsistent at seq {head_seq}"
            )));
        }
        Ok(Some((head_seq, head_hash, cache)))
    }

    /// Store a checkpoint as given (no check). A checkpoint for an existing tree size is
    /// kept as it was (the first one wins).
    pub fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<bool, StoreError> {
        let n = self.lock().execute(
            &format!(
                "INSERT OR IGNORE INTO checkpoints ({CP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                cp.tree_size as i64,
                cp.root,
                cp.head_hash,
                cp.ts,
                cp.key_fingerprint,
                cp.signature
            ],
        )?;
        Ok(n > 0)
    }

    /// Every stored checkpoint, oldest (smallest) first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(read_checkpoints(&self.reader()?)?)
    }

    /// The checkpoint with the largest tree size.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                &format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1"),
                [],
                cp_from_row,
            )
            .optional()?)
    }

    /// Merkle leaves of records `1..=tree_size`, checking that they are contiguous (fails
    /// once retention sealed a prefix; [`Store::tree`] works either way).
    pub fn leaves(&self, tree_size: u64) -> Result<Vec<Hash>, StoreError> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare("SELECT seq, hash FROM records WHERE seq <= ?1 ORDER BY seq")?;
        let mut rows = stmt.query([tree_size as i64])?;
        let mut out = Vec::with_capacity(tree_size as usize);
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let want = out.len() as u64 + 1;
            if seq != want {
                return Err(StoreError::Sqlite(format!(
                    "record {want} is missing (run `warden audit verify`)"
                )));
            }
            let hash: String = row.get(1)?;
            out.push(merkle::record_leaf(&hash).ok_or_else(|| {
                StoreError::Sqlite(format!(
                    "record {seq} has a malformed hash (run `warden audit verify`)"
                ))
            })?);
        }
        if (out.len() as u64) < tree_size {
            return Err(StoreError::Sqlite(format!(
                "the store holds {} records, fewer than {tree_size}",
                out.len()
            )));
        }
        Ok(out)
    }
}
