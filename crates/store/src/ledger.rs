//! The append path: the chain is placed and made durable in the caller, SQLite indexes
//! behind.
//!
//! [`Ledger::submit`] runs in the caller's thread, under one mutex held for a few
//! microseconds: it assigns `seq` and `prev_hash`, computes `hash` over the canonical
//! JSON, and writes the body as one line to the append log ([`crate::journal`]). Under
//! `process` durability that `write(2)` is the acknowledgement: the record survives a
//! crash of the gateway. Under `fsync` durability the caller also waits for an
//! `fdatasync` that started after its line was written, run by the ledger's sync thread:
//! one sync covers every line written before it, any session's (group commit). Nothing
//! crosses a thread on the `process` path.
//!
//! The indexer thread inserts the same rows into SQLite in batches (one transaction per
//! batch, after a short linger), so queries, checkpoints and verification see a record
//! a millisecond or so after it was acknowledged; [`Ledger::flush`] waits for that.
//! The log is truncated once everything in it is indexed.
//!
//! Fail closed: an append is refused (and the action must not run) when the log cannot
//! be written or synced, when the indexer is gone, or when it is more than
//! `index_backlog` records behind (the database is locked or failing). Evidence that
//! was acknowledged is never lost by an indexing failure: it stays in the log and is
//! indexed by the retrying indexer, or on the next start ([`crate::journal`] recovery).
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};
use tokio::sync::{oneshot, watch};
use warden_core::EvidenceRecord;

use crate::chain::GENESIS_HASH;
use crate::journal::Journal;
use crate::recent_ids::RecentIds;

/// Most records indexed in one transaction.
pub const MAX_BATCH: usize = 4096;
/// Most acknowledged records waiting to be indexed before appends are refused.
pub const QUEUE_CAPACITY: usize = 65_536;
/// How long the indexer lets records gather before a transaction (nobody waits on it:
/// acknowledgement came from the log). Longer batches cost fewer page writes per record
/// (every index's last leaf is rewritten once per transaction, not once per record); a
/// reader in this process that needs the index ([`Ledger::flush`], read-your-writes)
/// cuts the linger short.
pub(crate) const INDEX_LINGER: Duration = Duration::from_millis(20);
/// The log is emptied once it is at least this long and fully indexed.
const TRUNCATE_AT: u64 = 1 << 20;
/// Ids of this many recent records are remembered to refuse a record appended twice.
const RECENT_IDS: usize = 4096;
/// Background records (nobody waits on them) are written to the log with the next
/// awaited record, by the indexer before it indexes them, or once this many bytes wait.
const PENDING_MAX: usize = 64 * 1024;

/// How durable an acknowledged append is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The record is in the append log and `fdatasync`ed before the append is
    /// acknowledged (group commit: one sync covers every session's records written
    /// before it), so it survives power loss or an OS crash. SQLite commits with
    /// `synchronous=FULL`.
    Fsync,
    /// The record is written to the append log (in the OS) before the append is
    /// acknowledged: it survives a crash of the gateway process; the last records
    /// before a power loss or OS crash may be lost (the chain stays consistent).
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

type FlushReply = oneshot::Sender<Result<(), LedgerError>>;

/// One record as the `records` table holds it.
///
/// Built in the appending thread and dropped by the indexer: its small columns share one
/// allocation (`cols`) instead of six strings, because every allocation that crosses
/// threads is freed where it was not made — the indexer paid a `free` per string and the
/// appending threads' allocator caches ran dry (perf: `_int_malloc`, `tcache_get`).
#[derive(Debug)]
pub(crate) struct IndexRow {
    pub seq: u64,
    kind: &'static str,
    /// Shared with the session that built the record (only its id is stored).
    principal: Option<std::sync::Arc<warden_core::Principal>>,
    body: String,
    /// `id`, `ts`, `session_id`, `connection`, `prev_hash`, `hash`, back to back.
    cols: String,
    /// Where each of them ends in `cols`.
    ends: [usize; COLS],
    /// Whether `session_id` and `connection` are present (bits 0 and 1).
    some: u8,
}

const COLS: usize = 6;
const ID: usize = 0;
const TS: usize = 1;
const SESSION: usize = 2;
const CONNECTION: usize = 3;
const PREV: usize = 4;
const HASH: usize = 5;

impl IndexRow {
    /// `rec` must carry its final `seq`, `prev_hash` and `hash`; `body` is its stored JSON.
    pub(crate) fn new(rec: &EvidenceRecord, body: String) -> IndexRow {
        let parts = [
            rec.id.as_str(),
            &rec.ts,
            rec.session_id.as_deref().unwrap_or(""),
            rec.connection.as_deref().unwrap_or(""),
            &rec.prev_hash,
            &rec.hash,
        ];
        let mut cols = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; COLS];
        for (end, part) in ends.iter_mut().zip(parts) {
            cols.push_str(part);
            *end = cols.len();
        }
        IndexRow {
            seq: rec.seq,
            kind: rec.kind.as_str(),
            principal: rec.principal.clone(),
            body,
            cols,
            ends,
            some: u8::from(rec.session_id.is_some()) | (u8::from(rec.connection.is_some()) << 1),
        }
    }

    fn col(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        // Always in range and on char boundaries: `ends` are the lengths `new` pushed.
        self.cols.get(start..self.ends[i]).unwrap_or("")
    }

    fn id(&self) -> &str {
        self.col(ID)
    }
    fn ts(&self) -> &str {
        self.col(TS)
    }
    fn session_id(&self) -> Option<&str> {
        (self.some & 1 != 0).then(|| self.col(SESSION))
    }
    fn connection(&self) -> Option<&str> {
        (self.some & 2 != 0).then(|| self.col(CONNECTION))
    }
    pub(crate) fn prev_hash(&self) -> &str {
        self.col(PREV)
    }
    fn hash(&self) -> &str {
        self.col(HASH)
    }
}

impl crate::postings::Keys for IndexRow {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn keys(&self) -> [Option<&str>; 4] {
        [
            self.principal.as_ref().map(|p| p.id.as_str()),
            self.connection(),
            Some(self.kind),
            self.session_id(),
        ]
    }
}

enum IndexCmd {
    Row(IndexRow),
    Flush(FlushReply),
    #[cfg(test)]
    Crash,
    /// Test hook: stop indexing as if the process died (the log keeps the records).
    #[cfg(test)]
    Stall,
}

/// Where and how the ledger opens its files.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub path: PathBuf,
    pub durability: Durability,
    pub busy_timeout: Duration,
    pub index_backlog: usize,
    /// Nice value of the indexer thread (0: the process's own).
    pub indexer_nice: i32,
}

/// The head of the chain and the log it is written to.
struct Chain {
    seq: u64,
    hash: String,
    journal: Journal,
    /// Set when the log can no longer be trusted (a failed write could not be undone).
    broken: Option<String>,
    /// Lines of records placed in the chain but not yet written (see [`Ledger::submit`]).
    pending: Vec<u8>,
    /// The seqs of the first and last line in `pending`.
    pending_first: u64,
    pending_last: u64,
    /// Every record up to this seq is in the log (or was lost, see `lost`).
    written: u64,
    /// Recent failed writes: (first seq, last seq, why). Their records are not durable.
    lost: VecDeque<(u64, u64, String)>,
    syncer: Option<Arc<Syncer>>,
    recent: RecentIds,
    /// Test hook: this many of the next log writes fail as if the disk refused them.
    #[cfg(test)]
    fail_writes: u32,
}

impl Chain {
    /// Write every pending line in one `write(2)`.
    fn write_pending(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (first, last) = (self.pending_first, self.pending_last);
        let buf = std::mem::take(&mut self.pending);
        #[cfg(test)]
        let result = if self.fail_writes > 0 {
            self.fail_writes -= 1;
            Err((std::io::Error::other("injected by a test"), false))
        } else {
            self.journal.append(&buf)
        };
        #[cfg(not(test))]
        let result = self.journal.append(&buf);
        self.pending = buf;
        self.pending.clear();
        if let Err((e, broken)) = result {
            let what = format!("cannot write {}: {e}", self.journal.path().display());
            if broken {
                self.broken = Some(format!("{what} (and cannot undo a partial write)"));
            }
            // These records are still indexed (the log only serves recovery), but whoever
            // waits on one of them is told it is not durable.
            if self.lost.len() >= 16 {
                self.lost.pop_front();
            }
            self.lost.push_back((first, last, what.clone()));
            self.written = last;
            return Err(what);
        }
        self.written = last;
        if let Some(s) = &self.syncer {
            // After the write: a sync that reads this runs on a file that holds the lines.
            s.written.store(last, Ordering::Release);
        }
        Ok(())
    }

    /// Make sure records `first..=last` are in the log, writing what is pending if needed.
    fn make_durable(&mut self, first: u64, last: u64) -> Result<(), String> {
        if self.written < last {
            let _ = self.write_pending();
        }
        if let Some((_, _, why)) = self.lost.iter().find(|(a, b, _)| *a <= last && first <= *b) {
            return Err(why.clone());
        }
        if self.written < last {
            return Err(format!("record {last} was not written to the append log"));
        }
        Ok(())
    }
}

/// Counters shared with the indexer.
struct Shared {
    /// Acknowledged records not yet indexed.
    backlog: AtomicUsize,
    /// Highest seq in SQLite (as far as this ledger knows).
    indexed: AtomicU64,
    /// Highest seq written to the log.
    placed: AtomicU64,
    alive: AtomicBool,
    background_failures: AtomicU64,
    /// Readers waiting for the index right now: the indexer skips its linger.
    hurry: AtomicUsize,
    /// The indexer thread, unparked by a reader in a hurry (it lingers parked).
    indexer: std::sync::OnceLock<std::thread::Thread>,
    /// Why the indexer stopped for good (the ledger refuses appends).
    fatal: Mutex<Option<String>>,
}

impl Shared {
    /// Why appends are refused once the indexer is gone.
    fn stopped(&self) -> LedgerError {
        unavailable(
            lock(&self.fatal)
                .clone()
                .unwrap_or_else(|| "the evidence indexer is not running".into()),
        )
    }
}

/// Backpressure: while the indexer is more than half its backlog behind, hold the caller
/// (its next action) back a little, so that a sustained burst slows sessions down instead
/// of reaching the hard limit, where appends are refused. The records themselves are
/// already written.
async fn pace(shared: &Shared, soft_limit: usize, pace_wait: Duration) {
    if shared.backlog.load(Ordering::Relaxed) > soft_limit {
        let until = Instant::now() + pace_wait;
        while shared.backlog.load(Ordering::Relaxed) > soft_limit
            && shared.alive.load(Ordering::Relaxed)
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Give the calling thread (the indexer) nice value `nice`, so that on a core it shares
/// with the runtime threads a statement's wake-up preempts it at once instead of waiting
/// out its slice (docs/benchmarks.md, sixteenth pass). Nothing waits on the index but
/// readers and the backlog's pacing, so the index trades latency for nothing a client
/// sees — unless other processes keep the CPU busy, when a low-priority index falls
/// behind and the ledger paces sessions (why it is not the default). A failure is
/// logged, not fatal: the index works at any priority.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    // On Linux, PRIO_PROCESS with a thread id sets that one thread's nice value.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!("[evidence] indexer_nice = {nice} not applied: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!("[evidence] indexer_nice = {nice} not applied: only supported on Linux");
}

/// `<path><suffix>`: where an end-to-end test puts a debug-build hook's flag file.
#[cfg(debug_assertions)]
fn hook_flag(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Fsync durability: what is written, what is synced, and the thread that syncs.
///
/// The sync runs on its own thread (`Syncer::run`), never on a runtime worker: a worker
/// in `fdatasync` polls no sockets, and tokio's `block_in_place` (which hands the worker's
/// duties to another thread first) cost more per sync than the two wake-ups of this
/// hand-off (docs/benchmarks.md, "Twelfth pass"). Group commit: a session asks for its
/// line (`want`), and one sync covers everything written when it starts.
struct Syncer {
    /// Written up to (set under the chain lock, after each write of the log).
    written: AtomicU64,
    /// Highest line a waiter asked to have synced.
    want: AtomicU64,
    /// Set when the ledger is dropped: the thread publishes "stopped" and exits (its
    /// handle shares the log's `flock`, which must go with the ledger).
    stop: AtomicBool,
    /// The sync thread, unparked when `want` moves past what is synced.
    thread: std::sync::OnceLock<std::thread::Thread>,
    synced: watch::Sender<Synced>,
    /// Test hooks: syncs run so far; the next sync fails as if the disk refused it.
    #[cfg(test)]
    count: AtomicU64,
    #[cfg(test)]
    fail_next: AtomicBool,
    /// End-to-end test hook, debug builds only (never in a release binary): while this
    /// file exists, every sync takes 800 ms and then fails — what waits on a sync can then
    /// be observed through real clients.
    #[cfg(debug_assertions)]
    fail_flag: std::path::PathBuf,
}

#[derive(Clone, Default)]
struct Synced {
    up_to: u64,
    failed: Option<String>,
}

impl Syncer {
    /// The sync thread: whenever a waiter wants more than is synced, one `fdatasync`
    /// covering everything written so far, then publish. Parked otherwise.
    fn run(&self, file: std::fs::File) {
        // However the thread ends (stopped, or a panic), every waiter is answered.
        struct Answer<'a>(&'a Syncer);
        impl Drop for Answer<'_> {
            fn drop(&mut self) {
                self.0.synced.send_modify(|v| {
                    v.failed
                        .get_or_insert_with(|| "the evidence ledger stopped".into());
                });
            }
        }
        let _answer = Answer(self);
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let (done, failed) = {
                let v = self.synced.borrow();
                (v.up_to, v.failed.is_some())
            };
            // `want` is read before `written`: a waiter's line is written before it asks.
            let want = self.want.load(Ordering::Acquire);
            let target = self.written.load(Ordering::Acquire);
            // (`target <= done` with `want` beyond it: nothing new to sync; never spin.)
            if failed || want <= done || target <= done {
                std::thread::park();
                continue;
            }
            match self.sync(&file) {
                Ok(()) => self.synced.send_modify(|v| v.up_to = v.up_to.max(target)),
                Err(e) => {
                    tracing::error!("evidence append log: {e}");
                    // The log's state on disk is unknown: stop acknowledging anything.
                    self.synced.send_modify(|v| v.failed = Some(e));
                }
            }
        }
    }

    fn sync(&self, file: &std::fs::File) -> Result<(), String> {
        #[cfg(debug_assertions)]
        if self.fail_flag.exists() {
            std::thread::sleep(Duration::from_millis(800));
            return Err(format!(
                "cannot sync the append log: injected by a test ({} exists; debug builds only)",
                self.fail_flag.display()
            ));
        }
        let result = file
            .sync_data()
            .map_err(|e| format!("cannot sync the append log: {e}"));
        #[cfg(test)]
        let result = {
            self.count.fetch_add(1, Ordering::SeqCst);
            match self.fail_next.swap(false, Ordering::SeqCst) {
                true => Err("cannot sync the append log: injected by a test".to_string()),
                false => result,
            }
        };
        result
    }

    /// Resolves once records up to `last` (written) are synced.
    async fn synced(&self, last: u64) -> Result<(), LedgerError> {
        let mut rx = self.synced.subscribe();
        loop {
            {
                let v = rx.borrow_and_update();
                if v.up_to >= last {
                    return Ok(());
                }
                if let Some(e) = &v.failed {
                    return Err(unavailable(e.clone()));
                }
            }
            self.want.fetch_max(last, Ordering::AcqRel);
            if let Some(t) = self.thread.get() {
                // No system call unless the thread is parked.
                t.unpark();
            }
            rx.changed()
                .await
                .map_err(|_| unavailable("the evidence ledger stopped"))?;
        }
    }

    /// Tell the thread to publish "stopped" and exit.
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

struct Inner {
    /// `Err`: the ledger could not start (every append is refused with this).
    chain: Result<Arc<Mutex<Chain>>, String>,
    backlog_limit: usize,
    /// Longest an awaited append is held back while the indexer is far behind.
    pace_wait: Duration,
    index_tx: Mutex<Option<mpsc::Sender<IndexCmd>>>,
    shared: Arc<Shared>,
    syncer: Option<Arc<Syncer>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the indexer drain and exit before the log's lock goes (with the syncer's
        // handle on the log: a future still waiting on it is answered "stopped").
        drop(lock(&self.index_tx).take());
        if let Some(s) = &self.syncer {
            s.stop();
        }
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
    }
}

/// Cloneable handle to the chain of one store.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unavailable(s: impl Into<String>) -> LedgerError {
    LedgerError::Unavailable(s.into())
}

impl Ledger {
    /// Take the store's append log, recover what it holds, and start the indexer (and
    /// the syncer's handle under `fsync`). A ledger that cannot start refuses every append.
    pub(crate) fn spawn(cfg: WriterConfig) -> Ledger {
        let shared = Arc::new(Shared {
            backlog: AtomicUsize::new(0),
            indexed: AtomicU64::new(0),
            placed: AtomicU64::new(0),
            alive: AtomicBool::new(false),
            background_failures: AtomicU64::new(0),
            hurry: AtomicUsize::new(0),
            indexer: std::sync::OnceLock::new(),
            fatal: Mutex::new(None),
        });
        let mut inner = Inner {
            chain: Err(String::new()),
            backlog_limit: cfg.index_backlog,
            pace_wait: cfg.busy_timeout,
            index_tx: Mutex::new(None),
            shared: shared.clone(),
            syncer: None,
            threads: Mutex::new(Vec::new()),
        };
        match start(&cfg, &shared) {
            Ok((mut chain, conn)) => {
                if cfg.durability == Durability::Fsync {
                    match start_syncer(&chain.journal) {
                        Ok((syncer, handle)) => {
                            chain.syncer = Some(syncer.clone());
                            inner.syncer = Some(syncer);
                            lock(&inner.threads).push(handle);
                        }
                        Err(e) => {
                            inner.chain = Err(e);
                            return Ledger {
                                inner: Arc::new(inner),
                            };
                        }
                    }
                }
                let chain = Arc::new(Mutex::new(chain));
                let (tx, rx) = mpsc::channel();
                let indexer = Indexer {
                    conn,
                    cfg: cfg.clone(),
                    shared: shared.clone(),
                    chain: Arc::downgrade(&chain),
                    background_failed_since_flush: 0,
                    #[cfg(debug_assertions)]
                    stall_flag: hook_flag(&cfg.path, ".stall-index"),
                };
                shared.alive.store(true, Ordering::SeqCst);
                let indexer_nice = cfg.indexer_nice;
                let spawned = std::thread::Builder::new()
                    .name("warden-indexer".into())
                    .spawn(move || {
                        lower_priority(indexer_nice);
                        indexer.run(rx)
                    });
                match spawned {
                    Ok(h) => {
                        let _ = shared.indexer.set(h.thread().clone());
                        lock(&inner.threads).push(h);
                        *lock(&inner.index_tx) = Some(tx);
                    }
                    Err(e) => {
                        shared.alive.store(false, Ordering::SeqCst);
                        inner.chain = Err(format!("cannot start the evidence indexer: {e}"));
                        return Ledger {
                            inner: Arc::new(inner),
                        };
                    }
                }
                inner.chain = Ok(chain);
            }
            Err(e) => {
                tracing::error!("evidence ledger not started: {e}");
                inner.chain = Err(e);
            }
        }
        Ledger {
            inner: Arc::new(inner),
        }
    }

    /// `Err` when this ledger cannot append at all (it did not start, or stopped).
    pub fn status(&self) -> Result<(), LedgerError> {
        let chain = self
            .inner
            .chain
            .as_ref()
            .map_err(|e| unavailable(e.clone()))?;
        if let Some(e) = &lock(chain).broken {
            return Err(unavailable(e.clone()));
        }
        if !self.inner.shared.alive.load(Ordering::SeqCst) {
            return Err(self.inner.shared.stopped());
        }
        Ok(())
    }

    /// Append; resolves once the record is durable at the configured level.
    ///
    /// The ledger assigns `seq`, `prev_hash` and `hash` (whatever the record carries in
    /// those fields is replaced). Errors when the record cannot be made durable: the
    /// caller must then not perform the action (fail closed).
    pub async fn append(&self, rec: EvidenceRecord) -> Result<Appended, LedgerError> {
        self.submit(rec).await
    }

    /// Place now, wait later: the record takes its place in the chain (and is written to
    /// the log) during this call, so a caller can submit several records in order and
    /// then await them together. Under `process` durability the future is already ready.
    pub fn submit(
        &self,
        rec: EvidenceRecord,
    ) -> impl std::future::Future<Output = Result<Appended, LedgerError>> + Send + 'static + use<>
    {
        let placed = self.place(rec);
        let durable = placed.as_ref().ok().map(|a| self.durable(a.seq, a.seq));
        async move {
            let a = placed?;
            if let Some(d) = durable {
                d.await?;
            }
            Ok(a)
        }
    }

    /// Several records, in order, for a caller that may act between the write and the
    /// wait: places `recs` and writes them (and any line placed before them) to the
    /// append log during this call — survived by a crash of the gateway from then on.
    /// Returns the last seq placed (`None` for no records), for [`Ledger::synced`], which
    /// they are durable after. Placing stops at the first record refused (its error is
    /// returned); records placed before it stay in the chain, but the caller must treat
    /// none of them as durable.
    pub fn submit_written<I>(&self, recs: I) -> Result<Option<u64>, LedgerError>
    where
        I: IntoIterator<Item = EvidenceRecord>,
    {
        let mut range: Option<(u64, u64)> = None;
        for rec in recs {
            let a = self.place(rec)?;
            range = Some((range.map_or(a.seq, |r| r.0), a.seq));
        }
        let Some((first, last)) = range else {
            return Ok(None);
        };
        if let Ok(chain) = &self.inner.chain {
            lock(chain).make_durable(first, last).map_err(unavailable)?;
        }
        Ok(Some(last))
    }

    /// Whether written records still wait for an `fdatasync` (`fsync` durability) before
    /// they are as durable as the ledger promises.
    pub fn needs_sync(&self) -> bool {
        self.inner.syncer.is_some()
    }

    /// Resolves once records up to `last`, already written ([`Ledger::submit_written`]),
    /// are as durable as [`Ledger::submit`]'s would be: synced under `fsync` (by the sync
    /// thread, `Syncer::run`), and at either level paced like
    /// it while the indexer is far behind.
    pub fn synced(
        &self,
        last: u64,
    ) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send + 'static + use<> {
        let syncer = self.inner.syncer.clone();
        let shared = self.inner.shared.clone();
        let (soft_limit, pace_wait) = (self.inner.backlog_limit / 2, self.inner.pace_wait);
        async move {
            pace(&shared, soft_limit, pace_wait).await;
            match syncer {
                Some(s) => s.synced(last).await,
                None => Ok(()),
            }
        }
    }

    /// Resolves once records `first..=last` (already placed) are as durable as the
    /// ledger's durability level promises.
    fn durable(
        &self,
        first: u64,
        last: u64,
    ) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send + 'static + use<> {
        let chain = self.inner.chain.as_ref().ok().cloned();
        let synced = self.synced(last);
        async move {
            // The first awaited future writes every line placed before it (its own and any
            // other session's): one write(2) for a batch of statements, a session.start and
            // its first request, or the responses that preceded it.
            if let Some(chain) = chain {
                lock(&chain)
                    .make_durable(first, last)
                    .map_err(unavailable)?;
            }
            synced.await
        }
    }

    /// Append without waiting (response records, session.end). Order relative to other
    /// appends from the same task is preserved.
    ///
    /// Never dropped silently: a record that cannot be written is logged at error level,
    /// counted in [`Ledger::background_failures`], and reported by the next
    /// [`Ledger::flush`].
    pub fn append_background(&self, rec: EvidenceRecord) {
        let id = rec.id.clone();
        if let Err(e) = self.place(rec) {
            self.inner
                .shared
                .background_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(record = %id, "evidence record lost: {e}");
        }
    }

    /// Wait until everything appended so far is indexed (visible to queries and, at
    /// either durability level, as durable as an acknowledged append).
    ///
    /// Errors when the ledger is not running, when indexing is failing, or when a
    /// background record since the previous flush could not be written.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.status()?;
        let (reply, rx) = oneshot::channel();
        let _hurry = Hurry::new(&self.inner.shared);
        self.send(IndexCmd::Flush(reply))?;
        // Indexed is durable at either level (SQLite commits with `synchronous=FULL` under
        // `fsync`), so there is nothing more to wait for.
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(unavailable(
                "the evidence indexer stopped before the flush completed",
            )),
        }
    }

    /// How many background records could not be written since the ledger started.
    pub fn background_failures(&self) -> u64 {
        self.inner
            .shared
            .background_failures
            .load(Ordering::Relaxed)
    }

    /// Acknowledged records not yet indexed.
    pub fn queued(&self) -> usize {
        self.inner.shared.backlog.load(Ordering::Relaxed)
    }

    /// Run `f` (which writes the chain directly in SQLite and returns the new head) with
    /// appends held back and everything acknowledged so far indexed first.
    pub(crate) fn exclusive<T>(
        &self,
        wait: Duration,
        f: impl FnOnce() -> Result<(T, (u64, String)), crate::StoreError>,
    ) -> Result<T, crate::StoreError> {
        let fail = |e: String| crate::StoreError::Sqlite(e);
        let chain = self.inner.chain.as_ref().map_err(|e| fail(e.clone()))?;
        let mut c = lock(chain);
        let deadline = Instant::now() + wait;
        while self.inner.shared.indexed.load(Ordering::SeqCst) < c.seq {
            self.status().map_err(|e| fail(e.to_string()))?;
            if Instant::now() > deadline {
                return Err(fail(
                    "the evidence index is behind the log (the database is busy); try again".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (out, (seq, hash)) = f()?;
        c.seq = seq;
        c.hash = hash;
        self.inner.shared.indexed.store(seq, Ordering::SeqCst);
        self.inner.shared.placed.store(seq, Ordering::SeqCst);
        Ok(out)
    }

    /// Block until every record acknowledged so far is indexed (read-your-writes for
    /// readers in this process), or `wait` passes, or indexing is stuck.
    pub(crate) fn wait_indexed(&self, wait: Duration) {
        let shared = &self.inner.shared;
        let target = shared.placed.load(Ordering::SeqCst);
        if shared.indexed.load(Ordering::SeqCst) >= target {
            return;
        }
        let _hurry = Hurry::new(shared);
        let deadline = Instant::now() + wait;
        while shared.indexed.load(Ordering::SeqCst) < target
            && shared.alive.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Place `rec` in the chain and write it to the log.
    /// The line waits in `pending` until a submitted future is awaited, the indexer takes
    /// it, or [`PENDING_MAX`] bytes wait.
    fn place(&self, mut rec: EvidenceRecord) -> Result<Appended, LedgerError> {
        let inner = &*self.inner;
        let chain = inner.chain.as_ref().map_err(|e| unavailable(e.clone()))?;
        if !inner.shared.alive.load(Ordering::Relaxed) {
            return Err(inner.shared.stopped());
        }
        let backlog = inner.shared.backlog.load(Ordering::Relaxed);
        if backlog >= inner.backlog_limit {
            return Err(unavailable(format!(
                "the evidence index is {backlog} records behind (is the database locked or failing?)"
            )));
        }
        if rec.id.is_empty() {
            rec.id = warden_core::evidence::new_id();
        }
        normalize_ts(&mut rec);
        // Laid out outside the lock; seq, prev_hash and the hash are spliced in under it.
        let prepared = crate::record_json::prepare(&rec);

        let mut c = lock(chain);
        if let Some(e) = &c.broken {
            return Err(unavailable(e.clone()));
        }
        if !c.recent.insert(&rec.id) {
            return Err(unavailable(format!(
                "record {} rejected: that id was already appended",
                rec.id
            )));
        }
        rec.seq = c.seq + 1;
        rec.prev_hash.clone_from(&c.hash);
        let (hash, line) = prepared.seal(rec.seq, &rec.prev_hash);
        if c.pending.is_empty() {
            c.pending_first = rec.seq;
        }
        c.pending.extend_from_slice(line.as_bytes());
        c.pending.push(b'\n');
        c.pending_last = rec.seq;
        rec.hash = hash;
        c.seq = rec.seq;
        c.hash.clone_from(&rec.hash);
        inner.shared.placed.store(rec.seq, Ordering::SeqCst);
        inner.shared.backlog.fetch_add(1, Ordering::Relaxed);
        if c.pending.len() >= PENDING_MAX
            && let Err(e) = c.write_pending()
        {
            tracing::error!("evidence append log: {e}");
        }
        let row = IndexRow::new(&rec, line);
        let appended = Appended {
            seq: rec.seq,
            id: rec.id,
            hash: rec.hash,
        };
        if self.send(IndexCmd::Row(row)).is_err() {
            // Written but never to be indexed by this process: recovery indexes it on the
            // next start; the caller is told it failed and must not act.
            return Err(unavailable("the evidence indexer is not running"));
        }
        drop(c);
        Ok(appended)
    }

    fn send(&self, cmd: IndexCmd) -> Result<(), LedgerError> {
        lock(&self.inner.index_tx)
            .as_ref()
            .ok_or_else(|| unavailable("the evidence indexer is not running"))?
            .send(cmd)
            .map_err(|_| unavailable("the evidence indexer is not running"))
    }

    /// Test hook: the next `n` writes to the append log fail (nothing is written).
    #[cfg(test)]
    pub(crate) fn fail_next_writes(&self, n: u32) {
        if let Ok(chain) = &self.inner.chain {
            lock(chain).fail_writes = n;
        }
    }

    /// Test hook (`fsync` durability): how many syncs ran; with `fail`, the next one fails.
    #[cfg(test)]
    pub(crate) fn syncs(&self, fail: bool) -> u64 {
        let s = self.inner.syncer.as_ref().expect("fsync durability");
        s.fail_next.store(fail, Ordering::SeqCst);
        s.count.load(Ordering::SeqCst)
    }

    /// Test hook: make the indexer thread panic.
    #[cfg(test)]
    pub(crate) fn crash_writer(&self) {
        let _ = self.send(IndexCmd::Crash);
    }

    /// Test hook: stop indexing silently, as if the process had died after writing.
    #[cfg(test)]
    pub(crate) fn stall_indexer(&self) {
        let _ = self.send(IndexCmd::Stall);
    }
}

/// Lock and recover the log, and read the head the chain continues from.
fn start(cfg: &WriterConfig, shared: &Shared) -> Result<(Chain, Connection), String> {
    let journal = Journal::open_locked(&cfg.path, cfg.busy_timeout)
        .map_err(|e| format!("cannot open the evidence append log: {e}"))?;
    let Some(mut journal) = journal else {
        return Err(format!(
            "another Warden process holds {} (is a second gateway running on this store?)",
            crate::journal::path_for(&cfg.path).display()
        ));
    };
    let mut conn =
        crate::sqlite::open_connection(&cfg.path, cfg.durability, cfg.busy_timeout, false)
            .map_err(|e| format!("cannot open the evidence database: {e}"))?;
    journal.replay(&mut conn)?;
    if cfg.durability == Durability::Fsync {
        journal.preallocate();
    }
    let (seq, hash) =
        crate::sqlite::read_head(&conn).map_err(|e| format!("cannot read the chain head: {e}"))?;
    shared.indexed.store(seq, Ordering::SeqCst);
    shared.placed.store(seq, Ordering::SeqCst);
    Ok((
        Chain {
            seq,
            hash,
            journal,
            broken: None,
            pending: Vec::with_capacity(PENDING_MAX),
            pending_first: 0,
            pending_last: 0,
            written: seq,
            lost: VecDeque::new(),
            syncer: None,
            recent: RecentIds::new(RECENT_IDS),
            #[cfg(test)]
            fail_writes: 0,
        },
        conn,
    ))
}

fn start_syncer(journal: &Journal) -> Result<(Arc<Syncer>, std::thread::JoinHandle<()>), String> {
    let file = journal
        .handle()
        .map_err(|e| format!("cannot open the append log for syncing: {e}"))?;
    let syncer = Arc::new(Syncer {
        written: AtomicU64::new(0),
        want: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        thread: std::sync::OnceLock::new(),
        synced: watch::channel(Synced::default()).0,
        #[cfg(test)]
        count: AtomicU64::new(0),
        #[cfg(test)]
        fail_next: AtomicBool::new(false),
        #[cfg(debug_assertions)]
        fail_flag: hook_flag(journal.path(), ".fail-sync"),
    });
    let s = syncer.clone();
    let handle = std::thread::Builder::new()
        .name("warden-sync".into())
        .spawn(move || s.run(file))
        .map_err(|e| format!("cannot start the evidence sync thread: {e}"))?;
    let _ = syncer.thread.set(handle.thread().clone());
    Ok((syncer, handle))
}

/// Counts a reader waiting for the index while it lives.
struct Hurry<'a>(&'a Shared);

impl<'a> Hurry<'a> {
    fn new(shared: &'a Shared) -> Hurry<'a> {
        shared.hurry.fetch_add(1, Ordering::SeqCst);
        // Cut a linger short (the unpark is kept if the indexer is not parked yet).
        if let Some(t) = shared.indexer.get() {
            t.unpark();
        }
        Hurry(shared)
    }
}

impl Drop for Hurry<'_> {
    fn drop(&mut self) {
        self.0.hurry.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks the ledger dead when the indexer thread ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

struct Indexer {
    conn: Connection,
    cfg: WriterConfig,
    shared: Arc<Shared>,
    chain: std::sync::Weak<Mutex<Chain>>,
    background_failed_since_flush: u64,
    /// End-to-end test hook, debug builds only (never in a release binary): while this
    /// file (`<database>.stall-index`) exists, at most a minute, the indexer takes no
    /// batch, so what a lagging index does to sessions (pacing, the backlog limit) can be
    /// observed through real clients.
    #[cfg(debug_assertions)]
    stall_flag: PathBuf,
}

/// Why a batch could not be indexed.
enum IndexError {
    /// Worth retrying (busy, I/O): the rows stay queued.
    Retry(String),
    /// The database no longer continues this ledger's chain: stop.
    Fatal(String),
}

impl Indexer {
    /// See `stall_flag`.
    #[cfg(debug_assertions)]
    fn stall_while_flagged(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.stall_flag.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn run(mut self, rx: mpsc::Receiver<IndexCmd>) {
        let _alive = AliveGuard(self.shared.clone());
        let mut rows: Vec<IndexRow> = Vec::with_capacity(256);
        let mut flushes: Vec<FlushReply> = Vec::new();
        while let Ok(first) = rx.recv() {
            let take = |cmd: IndexCmd, rows: &mut Vec<_>, flushes: &mut Vec<_>| match cmd {
                IndexCmd::Row(r) => {
                    rows.push(r);
                    true
                }
                IndexCmd::Flush(f) => {
                    flushes.push(f);
                    true
                }
                #[cfg(test)]
                IndexCmd::Crash => panic!("ledger indexer crash requested by a test"),
                #[cfg(test)]
                IndexCmd::Stall => {
                    while rx.recv().is_ok() {}
                    false
                }
            };
            if !take(first, &mut rows, &mut flushes) {
                std::mem::forget(_alive);
                return;
            }
            if flushes.is_empty() {
                // Parked (rather than waiting on the channel) lets records gather
                // without one wake-up per record; a reader in a hurry unparks it.
                let until = Instant::now() + INDEX_LINGER;
                while self.shared.hurry.load(Ordering::SeqCst) == 0 {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    std::thread::park_timeout(until - now);
                }
            }
            while rows.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if !take(cmd, &mut rows, &mut flushes) {
                            std::mem::forget(_alive);
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            #[cfg(debug_assertions)]
            self.stall_while_flagged();
            self.write_pending();
            let mut backoff = Duration::from_millis(10);
            let mut failures_after_close = 0;
            loop {
                if rows.is_empty() {
                    break;
                }
                match self.index(&rows) {
                    Ok(()) => {
                        self.shared.backlog.fetch_sub(rows.len(), Ordering::Relaxed);
                        let last = rows[rows.len() - 1].seq;
                        self.shared.indexed.store(last, Ordering::SeqCst);
                        rows.clear();
                        self.maybe_truncate(last);
                        break;
                    }
                    Err(IndexError::Fatal(e)) => {
                        tracing::error!("evidence indexing stopped: {e}");
                        *lock(&self.shared.fatal) = Some(e.clone());
                        for f in flushes.drain(..) {
                            let _ = f.send(Err(unavailable(e.clone())));
                        }
                        return;
                    }
                    Err(IndexError::Retry(e)) => {
                        tracing::warn!(
                            "evidence indexing failed ({} records wait; retrying): {e}",
                            rows.len()
                        );
                        for f in flushes.drain(..) {
                            let _ = f.send(Err(unavailable(format!(
                                "evidence is durable in the append log but not yet indexed: {e}"
                            ))));
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        // Keep taking what arrives (in order), answering flushes at once.
                        loop {
                            match rx.try_recv() {
                                Ok(cmd) => {
                                    if !take(cmd, &mut rows, &mut flushes) {
                                        std::mem::forget(_alive);
                                        return;
                                    }
                                }
                                Err(mpsc::TryRecvError::Empty) => break,
                                Err(mpsc::TryRecvError::Disconnected) => {
                                    // Shutting down: don't hold the process hostage; the
                                    // log keeps these for the next start.
                                    failures_after_close += 1;
                                    if failures_after_close > 10 {
                                        tracing::error!(
                                            "{} evidence record(s) left unindexed in the append log at shutdown; they are indexed on the next start",
                                            rows.len()
                                        );
                                        return;
                                    }
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if !flushes.is_empty() {
                let failed = self.shared.background_failures.load(Ordering::Relaxed);
                let result = if failed > self.background_failed_since_flush {
                    let n = failed - self.background_failed_since_flush;
                    self.background_failed_since_flush = failed;
                    Err(unavailable(format!(
                        "{n} background evidence record(s) appended before this flush were lost"
                    )))
                } else {
                    Ok(())
                };
                for f in flushes.drain(..) {
                    let _ = f.send(result.clone());
                }
            }
        }
        // A clean stop: everything logged is indexed, so recovery needs none of it.
        if let Some(chain) = self.chain.upgrade() {
            let mut c = lock(&chain);
            if c.seq == self.shared.indexed.load(Ordering::SeqCst)
                && let Err(e) = c.journal.truncate()
            {
                tracing::warn!("cannot truncate the evidence append log: {e}");
            }
        }
    }

    fn index(&mut self, rows: &[IndexRow]) -> Result<(), IndexError> {
        match insert_rows(&mut self.conn, rows) {
            Ok(()) => Ok(()),
            Err(e) => {
                let code = e.sqlite_error_code();
                let fatal = matches!(e, rusqlite::Error::InvalidQuery)
                    || code == Some(ErrorCode::ConstraintViolation);
                let msg = format!("cannot index evidence: {e}");
                if fatal {
                    return Err(IndexError::Fatal(msg));
                }
                if !matches!(
                    code,
                    Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
                ) && let Ok(c) = crate::sqlite::open_connection(
                    &self.cfg.path,
                    self.cfg.durability,
                    self.cfg.busy_timeout,
                    false,
                ) {
                    self.conn = c;
                }
                Err(IndexError::Retry(msg))
            }
        }
    }

    /// Put background lines in the log before indexing them (crash safety while the
    /// transaction runs). Skipped if the chain is busy: the next awaited append writes them.
    fn write_pending(&self) {
        let Some(chain) = self.chain.upgrade() else {
            return;
        };
        let Ok(mut c) = chain.try_lock() else {
            return;
        };
        if let Err(e) = c.write_pending() {
            tracing::error!("evidence append log: {e}");
        }
    }

    /// Empty the log once it is long and everything in it is indexed.
    fn maybe_truncate(&self, indexed: u64) {
        let Some(chain) = self.chain.upgrade() else {
            return;
        };
        // try_lock: `Ledger::exclusive` holds the chain while it waits for this thread.
        let Ok(mut c) = chain.try_lock() else {
            return;
        };
        if c.journal.len() >= TRUNCATE_AT
            && c.seq == indexed
            && let Err(e) = c.journal.truncate()
        {
            tracing::warn!("cannot truncate the evidence append log: {e}");
        }
    }
}

const INSERT_SQL: &str = "INSERT INTO records (seq, id, ts, kind, session_id, principal, connection, body, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Insert `rows` (contiguous, continuing the stored head) in one transaction.
/// `InvalidQuery` when they do not continue the stored chain.
pub(crate) fn insert_rows<R: std::borrow::Borrow<IndexRow>>(
    conn: &mut Connection,
    rows: &[R],
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(first) = rows.first() {
        let first = first.borrow();
        let (seq, hash) = crate::sqlite::read_head(&tx)?;
        if first.seq != seq + 1 || first.prev_hash() != hash {
            tracing::error!(
                "the stored chain (head {seq}) was changed behind the ledger's back; record {} does not continue it",
                first.seq
            );
            return Err(rusqlite::Error::InvalidQuery);
        }
    }
    {
        let mut stmt = tx.prepare_cached(INSERT_SQL)?;
        for r in rows {
            let r = r.borrow();
            stmt.execute(params![
                r.seq as i64,
                r.id(),
                r.ts(),
                r.kind,
                r.session_id(),
                r.principal.as_ref().map(|p| p.id.as_str()),
                r.connection(),
                r.body,
                r.prev_hash(),
                r.hash(),
            ])?;
        }
    }
    crate::postings::insert(&tx, rows.iter().map(|r| r.borrow()))?;
    tx.commit()
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
    // The common case (written by `now_rfc3339`) is already canonical.
    if rec.ts.len() == 30 && rec.ts.ends_with('Z') && rec.ts.as_bytes()[19] == b'.' {
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
