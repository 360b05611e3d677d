//! The append path: one writer thread, group commit, fail closed.
//!
//! Every [`Ledger`] handle feeds one queue drained by a single OS thread that owns the
//! SQLite write connection. The writer blocks for the first queued command, then takes
//! everything else already queued (up to [`MAX_BATCH`] records), places each record in
//! the chain (seq, prev_hash, hash), inserts the whole batch in ONE `BEGIN IMMEDIATE`
//! transaction and commits — and only then answers the callers. If the transaction
//! cannot be committed every caller in the batch gets [`LedgerError::Unavailable`]; the
//! chain head is read from the database inside each transaction, so the writer never
//! runs ahead of what is stored. An `Ok` is never sent before the commit.
//!
//! If the writer thread is gone, appends fail immediately instead of waiting.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};
use tokio::sync::oneshot;
use warden_core::EvidenceRecord;

use crate::chain::{self, GENESIS_HASH};

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 4096;
/// Most records waiting for the writer before [`Ledger::append`] refuses new ones
/// (background appends are never refused: they are queued regardless).
pub const QUEUE_CAPACITY: usize = 65_536;

/// How durable an acknowledged append is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `PRAGMA journal_mode=WAL` + `PRAGMA synchronous=FULL`: the WAL is fsynced on every
    /// group commit, so an acknowledged record survives power loss or an OS crash.
    Fsync,
    /// `PRAGMA journal_mode=WAL` + `PRAGMA synchronous=NORMAL`: a committed transaction is
    /// written to the OS (the WAL file) before the append is acknowledged, so it survives a
    /// crash of the gateway process; the last commits before a power loss or OS crash may
    /// be lost (the database stays consistent).
    #[default]
    Process,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum LedgerError {
    #[error("evidence ledger unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub seq: u64,
    pub id: String,
    pub hash: String,
}

type AppendReply = oneshot::Sender<Result<Appended, LedgerError>>;
type FlushReply = oneshot::Sender<Result<(), LedgerError>>;

enum Cmd {
    Append {
        rec: Box<EvidenceRecord>,
        reply: Option<AppendReply>,
    },
    Flush {
        reply: FlushReply,
    },
    #[cfg(test)]
    Crash,
}

/// Where and how the writer opens its connection.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub path: PathBuf,
    pub durability: Durability,
    pub busy_timeout: Duration,
}

struct Shared {
    /// Records sent but not yet taken by the writer.
    queued: AtomicUsize,
    /// Background records that could not be committed (or queued).
    background_failures: AtomicU64,
}

/// Cloneable handle to the single writer.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

impl Ledger {
    /// Start the writer thread for the database at `cfg.path`.
    pub(crate) fn spawn(cfg: WriterConfig) -> Ledger {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            background_failures: AtomicU64::new(0),
        });
        let writer = Writer {
            cfg,
            conn: None,
            shared: shared.clone(),
            background_failed_since_flush: 0,
        };
        let spawned = std::thread::Builder::new()
            .name("warden-ledger".into())
            .spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            // The receiver is gone with the closure: every append fails closed.
            tracing::error!("cannot start the evidence ledger writer thread: {e}");
        }
        Ledger { tx, shared }
    }

    /// Append; resolves once the record is committed at the configured durability.
    ///
    /// The ledger assigns `seq`, `prev_hash` and `hash` (whatever the record carries in
    /// those fields is replaced). Errors when the writer is gone, the queue is full, or the
    /// commit fails: the caller must then not perform the action (fail closed).
    pub async fn append(&self, rec: EvidenceRecord) -> Result<Appended, LedgerError> {
        let waiting = self.shared.queued.load(Ordering::Relaxed);
        if waiting >= QUEUE_CAPACITY {
            return Err(LedgerError::Unavailable(format!(
                "append queue is full ({waiting} records waiting for the writer)"
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Append {
            rec: Box::new(rec),
            reply: Some(reply),
        })?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(LedgerError::Unavailable(
                "the ledger writer stopped before committing the record".into(),
            )),
        }
    }

    /// Queue now, wait later: the record takes its place in the chain when this is
    /// called (not when the future is first polled), so a caller can submit several
    /// records in order and then await them together — one group commit for all.
    pub fn submit(
        &self,
        rec: EvidenceRecord,
    ) -> impl std::future::Future<Output = Result<Appended, LedgerError>> + Send + 'static + use<>
    {
        let waiting = self.shared.queued.load(Ordering::Relaxed);
        let queued = if waiting >= QUEUE_CAPACITY {
            Err(LedgerError::Unavailable(format!(
                "append queue is full ({waiting} records waiting for the writer)"
            )))
        } else {
            let (reply, rx) = oneshot::channel();
            self.send(Cmd::Append {
                rec: Box::new(rec),
                reply: Some(reply),
            })
            .map(|()| rx)
        };
        async move {
            match queued?.await {
                Ok(r) => r,
                Err(_) => Err(LedgerError::Unavailable(
                    "the ledger writer stopped before committing the record".into(),
                )),
            }
        }
    }

    /// Queue without waiting (response records, session.end). Ordering relative to other
    /// appends from the same task is preserved.
    ///
    /// Never dropped silently: a record that cannot be queued or committed is logged at
    /// error level, counted in [`Ledger::background_failures`], and reported by the next
    /// [`Ledger::flush`].
    pub fn append_background(&self, rec: EvidenceRecord) {
        let id = rec.id.clone();
        if let Err(e) = self.send(Cmd::Append {
            rec: Box::new(rec),
            reply: None,
        }) {
            self.shared
                .background_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(record = %id, "evidence record lost: {e}");
        }
    }

    /// Wait until everything queued so far is committed.
    ///
    /// Errors when the writer is gone, or when a background record queued since the previous
    /// flush could not be committed.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Flush { reply })?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(LedgerError::Unavailable(
                "the ledger writer stopped before the flush completed".into(),
            )),
        }
    }

    /// How many background records could not be committed since the writer started.
    pub fn background_failures(&self) -> u64 {
        self.shared.background_failures.load(Ordering::Relaxed)
    }

    /// Records queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    fn send(&self, cmd: Cmd) -> Result<(), LedgerError> {
        let is_append = matches!(cmd, Cmd::Append { .. });
        if is_append {
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
        }
        self.tx.send(cmd).map_err(|_| {
            if is_append {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            }
            LedgerError::Unavailable("the ledger writer is not running".into())
        })
    }

    /// Test hook: make the writer thread panic.
    #[cfg(test)]
    pub(crate) fn crash_writer(&self) {
        let _ = self.tx.send(Cmd::Crash);
    }
}

struct Writer {
    cfg: WriterConfig,
    conn: Option<Connection>,
    shared: Arc<Shared>,
    background_failed_since_flush: u64,
}

struct Pending {
    rec: Box<EvidenceRecord>,
    reply: Option<AppendReply>,
}

const INSERT_SQL: &str = "INSERT INTO records (seq, id, ts, kind, session_id, principal, connection, body, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// How long a batch of background-only records waits for company (see `Writer::run`).
const BACKGROUND_LINGER: Duration = Duration::from_millis(2);

fn is_background(cmd: &Cmd) -> bool {
    matches!(cmd, Cmd::Append { reply: None, .. })
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut batch: Vec<Cmd> = Vec::with_capacity(256);
        while let Ok(first) = rx.recv() {
            batch.clear();
            let mut appends = usize::from(matches!(first, Cmd::Append { .. }));
            batch.push(first);
            let mut urgent = !is_background(&batch[0]);
            let started = std::time::Instant::now();
            while appends < MAX_BATCH {
                let next = if urgent || started.elapsed() >= BACKGROUND_LINGER * 5 {
                    rx.try_recv().ok()
                } else {
                    // Only background records so far (responses, session ends): nobody waits
                    // on them, so linger briefly and let them share the commit of the next
                    // awaited record instead of costing a commit of their own on the path
                    // of the next statement.
                    rx.recv_timeout(BACKGROUND_LINGER).ok()
                };
                match next {
                    Some(cmd) => {
                        urgent |= !is_background(&cmd);
                        appends += usize::from(matches!(cmd, Cmd::Append { .. }));
                        batch.push(cmd);
                    }
                    None => break,
                }
            }
            self.shared.queued.fetch_sub(appends, Ordering::Relaxed);
            self.process(&mut batch);
        }
    }

    fn process(&mut self, batch: &mut Vec<Cmd>) {
        let mut records: Vec<Pending> = Vec::with_capacity(batch.len());
        let mut flushes: Vec<FlushReply> = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Append { rec, reply } => records.push(Pending { rec, reply }),
                Cmd::Flush { reply } => flushes.push(reply),
                #[cfg(test)]
                Cmd::Crash => panic!("ledger writer crash requested by a test"),
            }
        }
        if !records.is_empty() {
            let outcome = self.commit(&mut records);
            if let Err(e) = &outcome {
                tracing::error!(
                    "evidence batch of {} records not committed: {e}",
                    records.len()
                );
                // Start from a fresh connection next time.
                self.conn = None;
            }
            for (i, p) in records.into_iter().enumerate() {
                let result = match &outcome {
                    Ok(per_record) => per_record[i].clone(),
                    Err(e) => Err(e.clone()),
                };
                match p.reply {
                    Some(reply) => {
                        let _ = reply.send(result.map_err(LedgerError::Unavailable));
                    }
                    None => {
                        if let Err(e) = result {
                            self.background_failed_since_flush += 1;
                            self.shared
                                .background_failures
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(record = %p.rec.id, "evidence record not committed: {e}");
                        }
                    }
                }
            }
        }
        if !flushes.is_empty() {
            let result = match std::mem::take(&mut self.background_failed_since_flush) {
                0 => Ok(()),
                n => Err(LedgerError::Unavailable(format!(
                    "{n} background evidence record(s) queued before this flush were not committed"
                ))),
            };
            for reply in flushes {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// Insert the batch in one transaction. `Err` means nothing was committed; `Ok` holds
    /// the per-record outcome (a record can be rejected alone, e.g. a duplicate id).
    fn commit(&mut self, records: &mut [Pending]) -> Result<Vec<Result<Appended, String>>, String> {
        if self.conn.is_none() {
            let conn = crate::sqlite::open_connection(
                &self.cfg.path,
                self.cfg.durability,
                self.cfg.busy_timeout,
                false,
            )
            .map_err(|e| format!("cannot open the evidence database: {e}"))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connection opened above");
        insert_batch(conn, records).map_err(|e| format!("cannot commit evidence: {e}"))
    }
}

fn insert_batch(
    conn: &mut Connection,
    records: &mut [Pending],
) -> Result<Vec<Result<Appended, String>>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (mut seq, mut prev) = crate::sqlite::read_head(&tx)?;
    let mut outcomes = Vec::with_capacity(records.len());
    {
        let mut stmt = tx.prepare_cached(INSERT_SQL)?;
        for p in records.iter_mut() {
            let rec = &mut *p.rec;
            if rec.id.is_empty() {
                rec.id = warden_core::evidence::new_id();
            }
            normalize_ts(rec);
            rec.seq = seq + 1;
            rec.prev_hash.clone_from(&prev);
            let mut value = match serde_json::to_value(&*rec) {
                Ok(v) => v,
                Err(e) => {
                    outcomes.push(Err(format!("record {} cannot be serialized: {e}", rec.id)));
                    continue;
                }
            };
            let hash = chain::value_hash(&value);
            value["hash"] = serde_json::Value::String(hash.clone());
            let body = value.to_string();
            rec.hash = hash;
            let inserted = stmt.execute(params![
                rec.seq as i64,
                rec.id,
                rec.ts,
                rec.kind.as_str(),
                rec.session_id,
                rec.principal.as_ref().map(|p| p.id.as_str()),
                rec.connection,
                body,
                rec.prev_hash,
                rec.hash,
            ]);
            match inserted {
                Ok(_) => {
                    seq += 1;
                    prev.clone_from(&rec.hash);
                    outcomes.push(Ok(Appended {
                        seq: rec.seq,
                        id: rec.id.clone(),
                        hash: rec.hash.clone(),
                    }));
                }
                // The failed statement alone is undone; the rest of the batch goes on.
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    outcomes.push(Err(format!("record {} rejected: {e}", rec.id)));
                }
                Err(e) => return Err(e),
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Head of an empty chain.
pub(crate) fn genesis() -> (u64, String) {
    (0, GENESIS_HASH.to_string())
}

/// Records store `ts` as `2026-11-27T10:00:00.000000000Z` (UTC, 9 fractional digits) so
/// that time-range queries can compare strings. A missing `ts` becomes now; another
/// RFC 3339 spelling of an instant is rewritten in that form before hashing.
fn normalize_ts(rec: &mut EvidenceRecord) {
    if rec.ts.is_empty() {
        rec.ts = warden_core::time_fmt::now_rfc3339();
        return;
    }
    match time::OffsetDateTime::parse(&rec.ts, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let canonical = warden_core::time_fmt::format_ts(t);
            if canonical != rec.ts {
                rec.ts = canonical;
            }
        }
        Err(e) => {
            tracing::warn!(record = %rec.id, ts = %rec.ts, "evidence timestamp is not RFC 3339: {e}")
        }
    }
}
