//! Full verification of a store: the hash chain, the Merkle root at every checkpoint and
//! every checkpoint's signature, streaming (O(log n) memory besides the checkpoint list).
use serde::Serialize;

use crate::checkpoint::{Checkpoint, PublicKey, read_checkpoints};
use crate::merkle::{self, Frontier};
use crate::retention::{Seal, read_seals};
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
    /// A retention seal that does not verify (signature, key, frontier, or its
    /// `retention.sealed` record does not match it).
    ForgedSeal,
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
            ProblemKind::ForgedSeal => "forged_seal",
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
    /// Retention seals found (records `1..=sealed_up_to` were removed by policy).
    pub seals: u64,
    pub sealed_up_to: u64,
    /// The newest seal (its bundle holds the last removed records).
    pub latest_seal: Option<Seal>,
    /// Checkpoints over sealed records only: signatures checked, roots vouched for by
    /// the seal (and the seal's bundle) instead of recomputed.
    pub checkpoints_covered_by_seal: u64,
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
        let seals = read_seals(&tx)?;
        match check_seals(&seals, &checkpoints, keys) {
            Err(p) => {
                report.problem = Some(p);
                tx.finish()?;
                return Ok(report);
            }
            Ok(None) => {}
            Ok(Some(start)) => {
                // The chain continues from the newest seal: its last hash and frontier.
                report.head_seq = start.seal.up_to_seq;
                report.head_hash = start.seal.last_hash.clone();
                report.seals = seals.len() as u64;
                report.sealed_up_to = start.seal.up_to_seq;
                report.latest_seal = Some(start.seal.clone());
                report.checkpoints_covered_by_seal = start.covered;
                if let Some(cp) = start.exact {
                    report.checkpoints_verified += 1;
                    report.latest_checkpoint = Some(cp);
                }
                frontier = start.frontier;
                next_cp = start.covered as usize + usize::from(report.latest_checkpoint.is_some());
                vouched = start.seal.up_to_seq;
            }
        }
        let seal_record = report.latest_seal.clone();
        {
            let mut stmt = tx.prepare(crate::sqlite::ALL_ROWS_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let stored = StoredRow::read(row)?;
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
                if let Some(seal) = &seal_record
                    && seal.record_seq == seq
                    && let Err(what) = check_seal_record(&stored.kind, &stored.body, seal)
                {
                    report.problem = Some(EvidenceProblem {
                        seq,
                        kind: ProblemKind::ForgedSeal,
                        what,
                    });
                    break;
                }
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
        if report.problem.is_none()
            && let Some(seal) = &seal_record
            && report.head_seq < seal.record_seq
        {
            report.problem = Some(EvidenceProblem {
                seq: report.head_seq + 1,
                kind: ProblemKind::Truncated,
                what: format!(
                    "records after seq {} were removed: the seal of records {}..{} was recorded as record {}, which is gone",
                    report.head_seq, seal.from_seq, seal.up_to_seq, seal.record_seq
                ),
            });
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

/// Where verification starts after retention: the newest seal's head and frontier.
struct SealStart {
    seal: Seal,
    frontier: Frontier,
    /// Checkpoints with `tree_size < seal.up_to_seq` (signatures checked, roots not).
    covered: u64,
    /// A checkpoint at exactly `up_to_seq`, checked against the seal's root and head.
    exact: Option<Checkpoint>,
}

/// Check the seals: one contiguous run from seq 1, each signed by a trusted key (when
/// keys are given), the newest one's frontier producing its root; checkpoints over the
/// sealed prefix are signature-checked and, at exactly the seal, root-checked.
fn check_seals(
    seals: &[Seal],
    checkpoints: &[Checkpoint],
    keys: &[PublicKey],
) -> Result<Option<SealStart>, EvidenceProblem> {
    let Some(last) = seals.last() else {
        return Ok(None);
    };
    let mut expect_from = 1u64;
    for s in seals {
        let problem = |kind, what: String| EvidenceProblem {
            seq: s.from_seq.min(expect_from),
            kind,
            what,
        };
        if s.from_seq != expect_from || s.up_to_seq < s.from_seq {
            return Err(problem(
                ProblemKind::Missing,
                format!(
                    "records {expect_from}..{} are missing: no retention seal covers them (a seal covers {}..{})",
                    s.from_seq.max(expect_from + 1) - 1,
                    s.from_seq,
                    s.up_to_seq
                ),
            ));
        }
        if !keys.is_empty()
            && let Err(why) = s.check_with_any(keys)
        {
            return Err(problem(
                ProblemKind::ForgedSeal,
                format!("forged seal: {why}"),
            ));
        }
        expect_from = s.up_to_seq + 1;
    }
    let frontier = last.merkle_frontier().map_err(|why| EvidenceProblem {
        seq: last.from_seq,
        kind: ProblemKind::ForgedSeal,
        what: format!("forged seal: {why}"),
    })?;
    let mut covered = 0u64;
    let mut exact = None;
    for cp in checkpoints {
        if cp.tree_size > last.up_to_seq {
            break;
        }
        if let Some(p) = check_checkpoint(cp, keys, 0) {
            return Err(p);
        }
        if cp.tree_size < last.up_to_seq {
            covered += 1;
            continue;
        }
        if cp.root != last.root || cp.head_hash != last.last_hash {
            return Err(EvidenceProblem {
                seq: last.from_seq,
                kind: ProblemKind::ForgedSeal,
                what: format!(
                    "the seal of records {}..{} does not match checkpoint {} ({}): its Merkle root or last hash differs",
                    last.from_seq, last.up_to_seq, cp.tree_size, cp.ts
                ),
            });
        }
        exact = Some(cp.clone());
    }
    Ok(Some(SealStart {
        seal: last.clone(),
        frontier,
        covered,
        exact,
    }))
}

/// The record a seal names must be its `retention.sealed` record, saying what the seal says.
fn check_seal_record(kind: &str, body: &str, seal: &Seal) -> Result<(), String> {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string));
    if kind != "retention.sealed" || detail.as_deref() != Some(seal.record_detail().as_str()) {
        return Err(format!(
            "forged seal: record {} is not the retention.sealed record of the seal of records {}..{}",
            seal.record_seq, seal.from_seq, seal.up_to_seq
        ));
    }
    Ok(())
}
