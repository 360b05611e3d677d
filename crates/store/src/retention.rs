//! Retention: old records leave the store only by being **sealed** first.
//!
//! [`Store::prune`] exports the oldest records (a contiguous run `from_seq..=up_to_seq`,
//! never past the newest signed checkpoint) into an ordinary signed evidence bundle
//! ([`crate::bundle`]), writes it to disk, reads it back and verifies it, and only then,
//! in ONE transaction: deletes the records, stores a signed [`Seal`] (table `seals`) and
//! appends a `retention.sealed` evidence record that says what was sealed and where it
//! went. The seal carries what verification needs to go on without the removed records:
//! the hash of the last sealed record (the next record's `prev_hash`) and the Merkle
//! frontier at `up_to_seq` (the roots of the perfect subtrees over records
//! `1..=up_to_seq`, O(log n) hashes), from which every later Merkle root and inclusion
//! proof is computed. Format: `docs/evidence-format.md` §8.
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use warden_core::{EvidenceRecord, RecordKind};

use crate::bundle::{ExportFilter, bundle_bytes, verify_bundle};
use crate::checkpoint::{Checkpoint, PublicKey, Signer};
use crate::merkle::{self, Frontier, Hash, Tree};
use crate::{Store, StoreError};

pub const SEAL_HEADER: &str = "warden-seal/v1";

/// A signed statement that records `from_seq..=up_to_seq` were sealed into a bundle and
/// removed (a row of the `seals` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// First sealed record (1, or the previous seal's `up_to_seq + 1`).
    pub from_seq: u64,
    /// Last sealed record: the chain in the store continues at `up_to_seq + 1`.
    pub up_to_seq: u64,
    /// `hash` of record `up_to_seq`: the `prev_hash` of the first remaining record.
    pub last_hash: String,
    /// Merkle root over records `1..=up_to_seq` (lowercase hex).
    pub root: String,
    /// Merkle frontier at `up_to_seq`: the roots of its perfect subtrees, left to right
    /// (one per set bit of `up_to_seq`), lowercase hex.
    pub frontier: Vec<String>,
    /// SHA-256 (hex) of the bundle file's bytes.
    pub bundle_sha256: String,
    /// The bundle's file name.
    pub bundle_name: String,
    /// Records with `ts` before this were due (normalized record `ts` form).
    pub cutoff: String,
    /// Seq of the `retention.sealed` record appended in the same transaction.
    pub record_seq: u64,
    /// When the seal was made.
    pub ts: String,
    pub key_fingerprint: String,
    /// Ed25519 over [`Seal::signed_text`], lowercase hex.
    pub signature: String,
}

impl Seal {
    /// The exact text that is signed (each line ends in `\n`).
    pub fn signed_text(&self) -> String {
        format!(
            "{SEAL_HEADER}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.from_seq,
            self.up_to_seq,
            self.last_hash,
            self.root,
            self.frontier.join(","),
            self.bundle_sha256,
            self.bundle_name,
            self.cutoff,
            self.record_seq,
            self.ts
        )
    }

    /// The `detail` of the `retention.sealed` record for this seal.
    pub fn record_detail(&self) -> String {
        format!(
            "retention sealed records {}..{} ({} record(s) with ts before {}) into bundle {} (sha256 {}); \
             the chain continues from hash {}; Merkle root over 1..{} is {}",
            self.from_seq,
            self.up_to_seq,
            self.up_to_seq + 1 - self.from_seq,
            self.cutoff,
            self.bundle_name,
            self.bundle_sha256,
            self.last_hash,
            self.up_to_seq,
            self.root
        )
    }

    /// The frontier, checked against `up_to_seq` and `root`.
    pub fn merkle_frontier(&self) -> Result<Frontier, String> {
        let nodes: Vec<Hash> = self
            .frontier
            .iter()
            .map(|h| merkle::decode32(h))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("seal {}: a frontier hash is malformed", self.up_to_seq))?;
        let f = Frontier::from_nodes(self.up_to_seq, &nodes).ok_or_else(|| {
            format!(
                "seal {}: the frontier has {} node(s), a tree of {} leaves has {}",
                self.up_to_seq,
                nodes.len(),
                self.up_to_seq,
                self.up_to_seq.count_ones()
            )
        })?;
        if hex::encode(f.root()) != self.root {
            return Err(format!(
                "seal {}: the frontier does not produce the sealed Merkle root",
                self.up_to_seq
            ));
        }
        Ok(f)
    }

    /// Check the signature with whichever of `keys` the seal names.
    pub fn check_with_any(&self, keys: &[PublicKey]) -> Result<(), String> {
        let Some(k) = keys
            .iter()
            .find(|k| k.fingerprint() == self.key_fingerprint)
        else {
            return Err(format!(
                "seal of records {}..{} is signed by key {}, which is not a trusted key",
                self.from_seq,
                self.up_to_seq,
                short(&self.key_fingerprint)
            ));
        };
        if !k.verify(self.signed_text().as_bytes(), &self.signature) {
            return Err(format!(
                "seal of records {}..{}: the signature does not verify with key {}",
                self.from_seq,
                self.up_to_seq,
                short(&self.key_fingerprint)
            ));
        }
        Ok(())
    }

    fn sign(&mut self, signer: &Signer) {
        self.key_fingerprint = signer.public().fingerprint();
        self.signature = signer.sign(self.signed_text().as_bytes());
    }
}

fn short(fp: &str) -> String {
    fp.chars().take(16).collect()
}

/// What [`Store::prune`] did.
#[derive(Debug, Clone)]
pub struct PruneSummary {
    pub seal: Seal,
    /// Records removed (`up_to_seq - from_seq + 1`).
    pub records: u64,
    pub bundle_path: PathBuf,
    pub bundle_bytes: u64,
    /// The checkpoint the bundle's inclusion proofs are against.
    pub checkpoint: Checkpoint,
    /// Seq of the appended `retention.sealed` record.
    pub record_seq: u64,
}

const SEAL_COLUMNS: &str = "from_seq, up_to_seq, last_hash, root, frontier, bundle_sha256, \
     bundle_name, cutoff, record_seq, ts, key_fingerprint, signature";

fn seal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Seal> {
    let frontier: String = r.get(4)?;
    Ok(Seal {
        from_seq: r.get::<_, i64>(0)? as u64,
        up_to_seq: r.get::<_, i64>(1)? as u64,
        last_hash: r.get(2)?,
        root: r.get(3)?,
        frontier: frontier
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        bundle_sha256: r.get(5)?,
        bundle_name: r.get(6)?,
        cutoff: r.get(7)?,
        record_seq: r.get::<_, i64>(8)? as u64,
        ts: r.get(9)?,
        key_fingerprint: r.get(10)?,
        signature: r.get(11)?,
    })
}

/// Every seal, oldest first.
pub(crate) fn read_seals(conn: &Connection) -> rusqlite::Result<Vec<Seal>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SEAL_COLUMNS} FROM seals ORDER BY up_to_seq"
    ))?;
    let rows = stmt.query_map([], seal_from_row)?;
    rows.collect()
}

fn err(s: impl Into<String>) -> StoreError {
    StoreError::Sqlite(s.into())
}

const INSERT_RECORD_SQL: &str = "INSERT INTO records (seq, id, ts, kind, session_id, principal, connection, body, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

impl Store {
    /// Every seal, oldest first.
    pub fn seals(&self) -> Result<Vec<Seal>, StoreError> {
        Ok(read_seals(&self.reader()?)?)
    }

    /// The newest seal (the store's records start after its `up_to_seq`).
    pub fn latest_seal(&self) -> Result<Option<Seal>, StoreError> {
        Ok(read_seals(&self.reader()?)?.pop())
    }

    /// The Merkle tree over records `1..=tree_size`: sealed records through the latest
    /// seal's frontier, the rest from the store (checked contiguous).
    pub fn tree(&self, tree_size: u64) -> Result<Tree, StoreError> {
        let seal = self.latest_seal()?;
        let (prefix, from) = match &seal {
            Some(s) => (s.merkle_frontier().map_err(err)?, s.up_to_seq),
            None => (Frontier::new(), 0),
        };
        if tree_size < from {
            return Err(err(format!(
                "records 1..{tree_size} were sealed by retention (seal up to {from}): no tree of that size can be rebuilt"
            )));
        }
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare("SELECT seq, hash FROM records WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")?;
        let mut rows = stmt.query(params![from as i64, tree_size as i64])?;
        let mut rest = Vec::with_capacity((tree_size - from) as usize);
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let want = from + rest.len() as u64 + 1;
            if seq != want {
                return Err(err(format!(
                    "record {want} is missing (run `warden audit verify`)"
                )));
            }
            let hash: String = row.get(1)?;
            rest.push(merkle::record_leaf(&hash).ok_or_else(|| {
                err(format!(
                    "record {seq} has a malformed hash (run `warden audit verify`)"
                ))
            })?);
        }
        if from + (rest.len() as u64) < tree_size {
            return Err(err(format!(
                "the store holds records up to {}, fewer than {tree_size}",
                from + rest.len() as u64
            )));
        }
        Ok(Tree::with_prefix(&prefix, rest))
    }

    /// Seal and remove every record with `ts` before `before` (RFC 3339, a date or a span
    /// ago), never past the newest signed checkpoint (one is signed over the head first).
    /// The bundle goes to `out(from_seq, up_to_seq)`; it is written, read back and
    /// verified with the signer's public key before anything is deleted. `Ok(None)` when
    /// nothing is due.
    pub fn prune(
        &self,
        before: &str,
        signer: &Signer,
        created_by: &str,
        out: &mut dyn FnMut(u64, u64) -> PathBuf,
    ) -> Result<Option<PruneSummary>, StoreError> {
        let cutoff = crate::sqlite::normalize_ts(before)?;
        self.may_write_chain()?;
        // A checkpoint over the head, so the newest checkpoint bounds as little as possible.
        self.checkpoint(signer)?;
        let prev = self.latest_seal()?;
        let sealed = prev.as_ref().map_or(0, |s| s.up_to_seq);
        let newest_cp = self.latest_checkpoint()?.map_or(0, |c| c.tree_size);
        let (first_due_not, head) = {
            let conn = self.reader()?;
            let first: Option<i64> = conn.query_row(
                "SELECT MIN(seq) FROM records WHERE ts >= ?1",
                [&cutoff],
                |r| r.get(0),
            )?;
            (first, crate::sqlite::read_head(&conn)?.0)
        };
        // The prefix of records all older than the cutoff.
        let due_up_to = first_due_not.map_or(head, |s| (s as u64).saturating_sub(1));
        let up_to = due_up_to.min(newest_cp);
        if up_to <= sealed {
            return Ok(None);
        }
        let from = sealed + 1;
        let filter = ExportFilter {
            until: Some(cutoff.clone()),
            ..Default::default()
        };
        let (bundle, summary) =
            self.export_bundle_up_to(&filter, signer, created_by, Some(up_to))?;
        if summary.first_seq != Some(from)
            || summary.last_seq != Some(up_to)
            || summary.records != up_to - sealed
        {
            return Err(err(format!(
                "retention: the export of records {from}..{up_to} is not contiguous (got {} record(s), {:?}..{:?}); run `warden audit verify`",
                summary.records, summary.first_seq, summary.last_seq
            )));
        }
        // Write, read back, verify: only a bundle that verifies from disk allows deletion.
        let path = out(from, up_to);
        let bytes = bundle_bytes(&bundle);
        write_durably(&path, &bytes)?;
        let on_disk = std::fs::read(&path)
            .map_err(|e| err(format!("cannot read back {}: {e}", path.display())))?;
        let report = verify_bundle(&on_disk, signer.public()).map_err(|e| {
            err(format!(
                "retention: the sealed bundle {} does not verify ({e}); nothing was removed",
                path.display()
            ))
        })?;
        if !report.contiguous || report.first_seq != Some(from) || report.last_seq != Some(up_to) {
            return Err(err(format!(
                "retention: the sealed bundle {} does not hold exactly records {from}..{up_to}; nothing was removed",
                path.display()
            )));
        }
        // The Merkle frontier at up_to: the previous seal's, extended by the sealed leaves.
        let mut frontier = match &prev {
            Some(s) => s.merkle_frontier().map_err(err)?,
            None => Frontier::new(),
        };
        let mut last_hash = String::new();
        for r in bundle["records"].as_array().into_iter().flatten() {
            let h = r["hash"].as_str().unwrap_or_default();
            frontier.push(merkle::record_leaf(h).ok_or_else(|| err("malformed record hash"))?);
            last_hash = h.to_string();
        }
        let bundle_name = path
            .file_name()
            .map(|n| n.to_string_lossy().replace(['\n', '\r', ','], "_"))
            .unwrap_or_default();
        let mut seal = Seal {
            from_seq: from,
            up_to_seq: up_to,
            last_hash,
            root: hex::encode(frontier.root()),
            frontier: frontier.nodes().iter().map(hex::encode).collect(),
            bundle_sha256: hex::encode(Sha256::digest(&on_disk)),
            bundle_name,
            cutoff,
            record_seq: 0,
            ts: String::new(),
            key_fingerprint: String::new(),
            signature: String::new(),
        };
        let record_seq = self.commit_seal(&mut seal, signer, sealed)?;
        Ok(Some(PruneSummary {
            records: up_to - sealed,
            bundle_path: path,
            bundle_bytes: on_disk.len() as u64,
            checkpoint: summary.checkpoint,
            record_seq,
            seal,
        }))
    }

    /// Delete the sealed records, store the seal and append the `retention.sealed` record,
    /// all in one transaction. Returns the record's seq.
    fn commit_seal(
        &self,
        seal: &mut Seal,
        signer: &Signer,
        sealed: u64,
    ) -> Result<u64, StoreError> {
        self.exclusive_chain(|| self.commit_seal_now(seal, signer, sealed))
    }

    fn commit_seal_now(
        &self,
        seal: &mut Seal,
        signer: &Signer,
        sealed: u64,
    ) -> Result<(u64, (u64, String)), StoreError> {
        let mut conn = self.reader()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now_sealed = read_seals(&tx)?.pop().map_or(0, |s| s.up_to_seq);
        if now_sealed != sealed {
            return Err(err(
                "retention: another prune ran at the same time; nothing was removed",
            ));
        }
        let (count, min, last): (i64, Option<i64>, Option<String>) = tx.query_row(
            "SELECT COUNT(*), MIN(seq), (SELECT hash FROM records WHERE seq = ?1) FROM records WHERE seq <= ?1",
            [seal.up_to_seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if count as u64 != seal.up_to_seq - sealed
            || min.map(|m| m as u64) != Some(seal.from_seq)
            || last.as_deref() != Some(seal.last_hash.as_str())
        {
            return Err(err(format!(
                "retention: records {}..{} changed while they were sealed; nothing was removed (run `warden audit verify`)",
                seal.from_seq, seal.up_to_seq
            )));
        }
        let (head_seq, head_hash) = crate::sqlite::read_head(&tx)?;
        seal.record_seq = head_seq + 1;
        seal.ts = warden_core::time_fmt::now_rfc3339();
        seal.sign(signer);
        let mut rec = EvidenceRecord::new(RecordKind::RetentionSealed);
        rec.ts.clone_from(&seal.ts);
        rec.seq = seal.record_seq;
        rec.prev_hash = head_hash;
        rec.detail = Some(seal.record_detail());
        let mut value = serde_json::to_value(&rec).map_err(|e| err(e.to_string()))?;
        rec.hash = crate::chain::value_hash(&value);
        value["hash"] = Value::String(rec.hash.clone());
        tx.execute(
            "DELETE FROM records WHERE seq <= ?1",
            [seal.up_to_seq as i64],
        )?;
        crate::postings::after_prune(&tx, seal.up_to_seq)?;
        tx.execute(
            &format!(
                "INSERT INTO seals ({SEAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                seal.from_seq as i64,
                seal.up_to_seq as i64,
                seal.last_hash,
                seal.root,
                seal.frontier.join(","),
                seal.bundle_sha256,
                seal.bundle_name,
                seal.cutoff,
                seal.record_seq as i64,
                seal.ts,
                seal.key_fingerprint,
                seal.signature,
            ],
        )?;
        tx.execute(
            INSERT_RECORD_SQL,
            params![
                rec.seq as i64,
                rec.id,
                rec.ts,
                rec.kind.as_str(),
                rec.session_id,
                Option::<String>::None,
                rec.connection,
                value.to_string(),
                rec.prev_hash,
                rec.hash,
            ],
        )?;
        crate::postings::rebuild(&tx, rec.seq, rec.seq)?;
        tx.commit()?;
        Ok((rec.seq, (rec.seq, rec.hash)))
    }
}

/// Write `bytes` to `path` via a temporary file, fsync the file and its directory.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        err(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    }
    let tmp = path.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("sync", &tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("write", path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
