//! Full verification of a store: the hash chain, the Merkle root at every checkpoint and
//! every checkpoint's signature, streaming (O(log n) memory besides the checkpoint list).
use std::time::{Duration, Instant};

use rusqlite::params;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, PublicKey, read_checkpoints};
use crate::merkle::{self, Frontier};
use crate::retention::{Seal, read_seals};
use crate::sqlite::{READ_CHUNK, StoredRow, check_row};
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
    ///
    /// Reads the whole store in one read transaction at full speed (the CLI's
    /// `warden audit verify`); a running gateway uses [`Store::verify_evidence_paced`].
    pub fn verify_evidence(
        &self,
        keys: &[PublicKey],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EvidenceReport, StoreError> {
        self.verify_walk(keys, progress, None)
    }

    /// [`Store::verify_evidence`] for a gateway that is serving traffic: the records are
    /// read in chunks of 4 096, each in its own short read transaction (so the WAL can
    /// still be checkpointed and appends never wait on the verifier), and `pause(busy)` is
    /// called after each chunk with the time it took — the caller sleeps there to bound
    /// the verifier's share of a core. Verifies the records that existed when it started.
    ///
    /// Chunks are separate snapshots, so retention removing a prefix between two of them
    /// would look like deleted records: a problem found this way is confirmed by a full
    /// single-snapshot [`Store::verify_evidence`] before it is reported.
    pub fn verify_evidence_paced(
        &self,
        keys: &[PublicKey],
        progress: &mut dyn FnMut(u64, u64),
        pause: &mut dyn FnMut(Duration),
    ) -> Result<EvidenceReport, StoreError> {
        let report = self.verify_walk(keys, progress, Some(pause))?;
        if report.problem.is_some() {
            return self.verify_evidence(keys, progress);
        }
        Ok(report)
    }

    fn verify_walk(
        &self,
        keys: &[PublicKey],
        progress: &mut dyn FnMut(u64, u64),
        pause: Option<&mut dyn FnMut(Duration)>,
    ) -> Result<EvidenceReport, StoreError> {
        let mut conn = self.reader()?;
        let tx = conn.transaction()?;
        let checkpoints: Vec<Checkpoint> = read_checkpoints(&tx)?
            .into_iter()
            .filter(|c| c.tree_size > 0)
            .collect();
        let seals = read_seals(&tx)?;
        let mut walk = Walk {
            keys,
            checkpoints: &checkpoints,
            report: EvidenceReport {
                head_hash: crate::chain::GENESIS_HASH.to_string(),
                signatures_checked: !keys.is_empty(),
                ..Default::default()
            },
            frontier: Frontier::new(),
            next_cp: 0,
            vouched: 0,
            seal_record: None,
        };
        match check_seals(&seals, &checkpoints, keys) {
            Err(p) => {
                walk.report.problem = Some(p);
                tx.finish()?;
                return Ok(walk.report);
            }
            Ok(None) => {}
            Ok(Some(start)) => walk.start_after_seal(start, seals.len() as u64),
        }
        walk.seal_record = walk.report.latest_seal.clone();
        let total = match pause {
            None => {
                // One snapshot for everything.
                let total: i64 = tx.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
                let total = total as u64;
                {
                    let mut stmt = tx.prepare(crate::sqlite::ALL_ROWS_SQL)?;
                    let mut rows = stmt.query([])?;
                    while let Some(row) = rows.next()? {
                        if !walk.row(StoredRow::read(row)?) {
                            break;
                        }
                        if walk.report.records.is_multiple_of(10_000) {
                            progress(walk.report.records, total);
                        }
                    }
                }
                tx.finish()?;
                total
            }
            Some(pause) => {
                // The records that exist now (checkpoints and seals were read with them).
                let (head, _) = crate::sqlite::read_head(&tx)?;
                tx.finish()?;
                let total = head.saturating_sub(walk.report.head_seq);
                // From the very first row, as the single-snapshot pass reads them: a row
                // that should not be there (below a seal, a negative seq) is found too.
                let mut after = i64::MIN;
                loop {
                    let started = Instant::now();
                    let tx = conn.transaction()?;
                    let (mut n, mut stop) = (0i64, false);
                    {
                        let mut stmt = tx.prepare_cached(CHUNK_SQL)?;
                        let mut rows = stmt.query(params![after, head as i64, READ_CHUNK])?;
                        while let Some(row) = rows.next()? {
                            let stored = StoredRow::read(row)?;
                            n += 1;
                            after = stored.seq;
                            if !walk.row(stored) {
                                stop = true;
                                break;
                            }
                        }
                    }
                    tx.finish()?;
                    if stop || n < READ_CHUNK {
                        break;
                    }
                    progress(walk.report.records, total);
                    pause(started.elapsed());
                }
                total
            }
        };
        let report = walk.finish();
        progress(report.records, total);
        Ok(report)
    }
}

/// One pass over the records in seq order.
const CHUNK_SQL: &str = "SELECT seq, id, ts, kind, session_id, principal, connection, body, prev_hash, hash \
     FROM records WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3";

/// The state of one verification pass, fed the stored rows in seq order.
struct Walk<'a> {
    keys: &'a [PublicKey],
    checkpoints: &'a [Checkpoint],
    report: EvidenceReport,
    frontier: Frontier,
    next_cp: usize,
    /// Last verified checkpoint's size: a rewrite is somewhere after it.
    vouched: u64,
    /// The newest seal, whose `retention.sealed` record must say what it says.
    seal_record: Option<Seal>,
}

impl Walk<'_> {
    /// The chain continues from the newest seal: its last hash and frontier.
    fn start_after_seal(&mut self, start: SealStart, seals: u64) {
        let report = &mut self.report;
        report.head_seq = start.seal.up_to_seq;
        report.head_hash = start.seal.last_hash.clone();
        report.seals = seals;
        report.sealed_up_to = start.seal.up_to_seq;
        report.latest_seal = Some(start.seal.clone());
        report.checkpoints_covered_by_seal = start.covered;
        if let Some(cp) = start.exact {
            report.checkpoints_verified += 1;
            report.latest_checkpoint = Some(cp);
        }
        self.frontier = start.frontier;
        self.next_cp = start.covered as usize + usize::from(report.latest_checkpoint.is_some());
        self.vouched = start.seal.up_to_seq;
    }

    /// Check one stored row; `false` once a problem is found (it is in the report).
    fn row(&mut self, stored: StoredRow) -> bool {
        let report = &mut self.report;
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
            return false;
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
            return false;
        }
        let seq = stored.seq as u64;
        let Some(leaf) = merkle::record_leaf(&stored.hash) else {
            report.problem = Some(EvidenceProblem {
                seq,
                kind: ProblemKind::Edited,
                what: format!("record {seq} was altered: its hash is not 64 hex digits"),
            });
            return false;
        };
        if let Some(seal) = &self.seal_record
            && seal.record_seq == seq
            && let Err(what) = check_seal_record(&stored.kind, &stored.body, seal)
        {
            report.problem = Some(EvidenceProblem {
                seq,
                kind: ProblemKind::ForgedSeal,
                what,
            });
            return false;
        }
        self.frontier.push(leaf);
        report.records += 1;
        report.head_seq = seq;
        report.head_hash = stored.hash;
        while self.next_cp < self.checkpoints.len()
            && self.checkpoints[self.next_cp].tree_size == seq
        {
            let cp = &self.checkpoints[self.next_cp];
            self.next_cp += 1;
            if let Some(p) = check_checkpoint(cp, self.keys, self.vouched) {
                report.problem = Some(p);
                return false;
            }
            let root = hex::encode(self.frontier.root());
            if root != cp.root || report.head_hash != cp.head_hash {
                let what = if report.head_hash != cp.head_hash {
                    format!(
                        "records {}..{seq} were rewritten after checkpoint {} ({}) was signed: the chain head and Merkle root no longer match it",
                        self.vouched + 1,
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
                    seq: self.vouched + 1,
                    kind: ProblemKind::Rewritten,
                    what,
                });
                return false;
            }
            self.vouched = seq;
            report.checkpoints_verified += 1;
            report.latest_checkpoint = Some(cp.clone());
        }
        true
    }

    /// After the last row: checkpoints or a seal record the records do not reach.
    fn finish(self) -> EvidenceReport {
        let mut report = self.report;
        if report.problem.is_none() {
            // Checkpoints beyond the last record: the tail was cut (unless forged).
            if let Some(cp) = self.checkpoints.get(self.next_cp) {
                report.problem = Some(check_checkpoint(cp, self.keys, self.vouched).unwrap_or_else(|| {
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
            && let Some(seal) = &self.seal_record
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
        report.unsigned_tail = report.head_seq - self.vouched;
        report
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
