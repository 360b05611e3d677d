//! Full verification of a store: the hash chain, the Merkle root at every checkpoint and
//! every checkpoint's signature, streaming (O(log n) memory besides the checkpoint list).
use serde::Serialize;

use crate::checkpoint::{Checkpoint, PublicKey, read_checkpoints};
use crate::merkle::{self, Frontier};
use crate::sqlite::{StoredRow, check_row};
use crate::{Store, StoreError};

/// What kind of tampering (or damage) was found. The names are stable (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A record's content does not match its hash (or its index columns).
    Edited,
    /// A sequence number is absent: a record was deleted.
    Missing,
    /// Records are out of order.
    Reordered,
    /// A record's `prev_hash` is not the hash of its predecessor (a record was replaced by
    /// a self-consistent one).
    ChainBroken,
    /// A signed checkpoint covers more records than the store holds: the tail was removed.
    Truncated,
    /// The records up to a checkpoint recompute to another root/head than it signed: they
    /// were rewritten (re-hashed) after it was signed.
    Rewritten,
    /// A checkpoint whose signature does not verify, or that is signed by an untrusted key.
    ForgedCheckpoint,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Missing => "missing",
            ProblemKind::Reordered => "reordered",
            ProblemKind::ChainBroken => "chain_broken",
            ProblemKind::Truncated => "truncated",
            ProblemKind::Rewritten => "rewritten",
            ProblemKind::ForgedCheckpoint => "forged_checkpoint",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceProblem {
    /// The first bad record (for checkpoint problems: the first record the checkpoint
    /// cannot vouch for).
    pub seq: u64,
    pub kind: ProblemKind,
    pub what: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EvidenceReport {
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// Checkpoints whose root and head matched (and signature, when keys were given).
    pub checkpoints_verified: u64,
    /// Whether signatures were checked (a trusted public key was given).
    pub signatures_checked: bool,
    /// The latest checkpoint that verified.
    pub latest_checkpoint: Option<Checkpoint>,
    /// Records after the latest verified checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    pub problem: Option<EvidenceProblem>,
}

impl Store {
    /// Recompute everything: chain, Merkle roots at each checkpoint, and (with `keys`)
    /// checkpoint signatures. Reports the first problem in sequence order.
    /// `progress(done, total)` is called every 10 000 records and at the end.
    pub fn verify_evidence(
        &self,
        keys: &[PublicKey],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EvidenceReport, StoreError> {
        let mut conn = self.reader()?;
        let tx = conn.transaction()?;
        let total: i64 = tx.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
        let total = total as u64;
        let checkpoints: Vec<Checkpoint> = read_checkpoints(&tx)?
            .into_iter()
            .filter(|c| c.tree_size > 0)
            .collect();
        let mut report = EvidenceReport {
            head_hash: crate::chain::GENESIS_HASH.to_string(),
            signatures_checked: !keys.is_empty(),
            ..Default::default()
        };
        let mut frontier = Frontier::new();
        let mut next_cp = 0usize;
        // Last verified checkpoint's size: a rewrite is somewhere after it.
        let mut vouched = 0u64;
        {
            let mut stmt = tx.prepare(
                "SELECT seq, id, ts, kind, session_id, principal, connection, body, prev_hash, hash \
                 FROM records ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let stored = StoredRow {
                    seq: row.get(0)?,
                    id: row.get(1)?,
                    ts: row.get(2)?,
                    kind: row.get(3)?,
                    session_id: row.get(4)?,
                    principal: row.get(5)?,
                    connection: row.get(6)?,
                    body: row.get(7)?,
                    prev_hash: row.get(8)?,
                    hash: row.get(9)?,
                };
                let expected = report.head_seq + 1;
                if stored.seq > expected as i64 {
                    let last = stored.seq - 1;
                    let range = if last as u64 == expected {
                        format!("record {expected} is missing")
                    } else {
                        format!("records {expected}..{last} are missing")
                    };
                    report.problem = Some(EvidenceProblem {
                        seq: expected,
                        kind: ProblemKind::Missing,
                        what: format!(
                            "{range} (deleted): the chain jumps from seq {} to {}",
                            report.head_seq, stored.seq
                        ),
                    });
                    break;
                }
                if let Err(what) = check_row(&stored, report.head_seq, &report.head_hash) {
                    let kind = if what.contains("reordered") {
                        ProblemKind::Reordered
                    } else if what.starts_with("chain broken") {
                        ProblemKind::ChainBroken
                    } else {
                        ProblemKind::Edited
                    };
                    let seq = if stored.seq < expected as i64 {
                        expected
                    } else {
                        stored.seq as u64
                    };
                    report.problem = Some(EvidenceProblem { seq, kind, what });
                    break;
                }
                let seq = stored.seq as u64;
                let Some(leaf) = merkle::record_leaf(&stored.hash) else {
                    report.problem = Some(EvidenceProblem {
                        seq,
                        kind: ProblemKind::Edited,
                        what: format!("record {seq} was altered: its hash is not 64 hex digits"),
                    });
                    break;
                };
                frontier.push(leaf);
                report.records += 1;
                report.head_seq = seq;
                report.head_hash = stored.hash;
                while next_cp < checkpoints.len() && checkpoints[next_cp].tree_size == seq {
                    let cp = &checkpoints[next_cp];
                    next_cp += 1;
                    if let Some(p) = check_checkpoint(cp, keys, vouched) {
                        report.problem = Some(p);
                        break;
                    }
                    let root = hex::encode(frontier.root());
                    if root != cp.root || report.head_hash != cp.head_hash {
                        let what = if report.head_hash != cp.head_hash {
                            format!(
                                "records {}..{seq} were rewritten after checkpoint {} ({}) was signed: the chain head and Merkle root no longer match it",
                                vouched + 1,
                                cp.tree_size,
                                cp.ts
                            )
                        } else {
                            format!(
                                "checkpoint {} ({}) signs a Merkle root that records 1..{seq} do not produce",
                                cp.tree_size, cp.ts
                            )
                        };
                        report.problem = Some(EvidenceProblem {
                            seq: vouched + 1,
                            kind: ProblemKind::Rewritten,
                            what,
                        });
                        break;
                    }
                    vouched = seq;
                    report.checkpoints_verified += 1;
                    report.latest_checkpoint = Some(cp.clone());
                }
                if report.problem.is_some() {
                    break;
                }
                if report.records.is_multiple_of(10_000) {
                    progress(report.records, total);
                }
            }
        }
        tx.finish()?;
        if report.problem.is_none() {
            // Checkpoints beyond the last record: the tail was cut (unless forged).
            if let Some(cp) = checkpoints.get(next_cp) {
                report.problem = Some(check_checkpoint(cp, keys, vouched).unwrap_or_else(|| {
                    let n = report.head_seq;
                    EvidenceProblem {
                        seq: n + 1,
                        kind: ProblemKind::Truncated,
                        what: format!(
                            "records after seq {n} were removed: checkpoint {} (signed {}) covers {} records, the store holds {}",
                            cp.tree_size, cp.ts, cp.tree_size, report.records
                        ),
                    }
                }));
            }
        }
        report.unsigned_tail = report.head_seq - vouched;
        progress(report.records, total);
        Ok(report)
    }
}

fn check_checkpoint(cp: &Checkpoint, keys: &[PublicKey], vouched: u64) -> Option<EvidenceProblem> {
    if keys.is_empty() {
        return None;
    }
    cp.check_with_any(keys).err().map(|why| EvidenceProblem {
        seq: vouched + 1,
        kind: ProblemKind::ForgedCheckpoint,
        what: format!("forged checkpoint: {why}"),
    })
}
