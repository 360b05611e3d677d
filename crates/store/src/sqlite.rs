//! SQLite backend: the embedded default store (WAL mode).
//!
//! Schema (version 5, kept in `PRAGMA user_version`; version 1 lacked `checkpoints`,
//! version 2 lacked `seals`, version 3 lacked `merkle_frontier`, version 4 indexed
//! principal, connection, kind and session_id per record instead of by block; older
//! stores are upgraded in place when opened):
//! - `records`: one row per evidence record; `body` is the full record JSON (including
//!   `hash`), the other columns are indexes derived from it and checked by [`Store::verify`].
//!   Indexed by `seq` (the key), `id` (unique) and `ts`.
//! - `record_postings`: which blocks of 64 records hold a principal, connection, kind or
//!   session id, and how many of their records do ([`crate::postings`]).
//! - `keys`: Warden key verifiers (never the secret).
//! - `checkpoints`: signed Merkle checkpoints ([`crate::checkpoint`]).
//! - `seals`: signed retention seals ([`crate::retention`]): records `from_seq..=up_to_seq`
//!   were exported into a bundle and removed; the chain continues from `last_hash`.
//! - `merkle_frontier`: the Merkle frontier of the newest checkpoint this store signed, so
//!   a restarted gateway's next checkpoint reads only the records after it (a cache: it is
//!   checked against that checkpoint's root before use, and verification never reads it).
//!
//! Every connection uses a busy timeout (5 s by default) so the CLI and a running gateway
//! can share the file. Appends go through the single writer thread behind
//! [`Store::ledger`]; reads and key operations use the store's own connection.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::Value;
use warden_core::{EvidenceRecord, KeyRecord};

use crate::chain;
use crate::checkpoint::MerkleCache;
use crate::keys::{INSERT_KEY_SQL, KEY_COLUMNS, key_from_row};
use crate::ledger::{WriterConfig, genesis};
use crate::query::VerifyProblem;
use crate::{Durability, Ledger, RecordFilter, VerifyReport};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 5;
/// Page size of a new store (SQLite's default is 4 KiB).
const PAGE_SIZE: u32 = 16384;
/// Records a background reader (paced verification, checkpoints) reads per read
/// transaction, so that no snapshot is held long (7 in unit tests, so that a small store
/// spans several).
pub(crate) const READ_CHUNK: i64 = if cfg!(test) { 7 } else { 4096 };
/// Default time a connection waits for a lock held by another connection or process.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    session_id TEXT,
    principal TEXT,
    connection TEXT,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    groups TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    secret_hash BLOB NOT NULL,
    scram_salt BLOB NOT NULL,
    scram_iterations INTEGER NOT NULL,
    scram_stored_key BLOB NOT NULL,
    scram_server_key BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_principal ON keys(principal);
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    head_hash TEXT NOT NULL,
    ts TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS merkle_frontier (
    tree_size INTEGER PRIMARY KEY,
    frontier TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seals (
    up_to_seq INTEGER PRIMARY KEY,
    from_seq INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    root TEXT NOT NULL,
    frontier TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    bundle_name TEXT NOT NULL,
    cutoff TEXT NOT NULL,
    record_seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    signature TEXT NOT NULL
);
";

/// How to open a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    /// How long a connection waits for a lock before failing (default 5 s).
    pub busy_timeout: Duration,
    /// Most acknowledged records waiting to be indexed before appends are refused.
    pub index_backlog: usize,
    /// Nice value of the evidence indexer thread (0 to 19; 0: the process's own).
    pub indexer_nice: i32,
}

impl StoreOptions {
    pub fn new(durability: Durability) -> Self {
        StoreOptions {
            durability,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            index_backlog: crate::ledger::QUEUE_CAPACITY,
            indexer_nice: 0,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions::new(Durability::default())
    }
}

pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    /// Reads and key operations.
    conn: Mutex<Connection>,
    /// Started on the first call to [`Store::ledger`].
    ledger: OnceLock<Ledger>,
    /// Merkle state of the last checkpoint this handle signed.
    merkle: Mutex<MerkleCache>,
    /// Key records found by [`Store::key_by_id`] (see [`crate::keycache`]).
    keys: crate::keycache::KeyCache,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(String),
    #[error("store URL `{0}` not supported (use sqlite://PATH)")]
    Url(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// The file a `sqlite://PATH` URL names; relative paths resolve against `base_dir`.
pub fn sqlite_path(url: &str, base_dir: &Path) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| StoreError::Url(url.to_string()))?;
    if rest.is_empty() {
        return Err(StoreError::Url(url.to_string()));
    }
    let p = Path::new(rest);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    })
}

impl Store {
    /// Open (creating if needed) `sqlite://PATH`; relative paths resolve against `base_dir`.
    pub fn open(url: &str, base_dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_with(url, base_dir, StoreOptions::new(durability))
    }

    /// [`Store::open`] with every option.
    pub fn open_with(
        url: &str,
        base_dir: &Path,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let path = sqlite_path(url, base_dir)?;
        create_private(&path)?;
        let mut conn = open_connection(&path, options.durability, options.busy_timeout, true)
            .map_err(|e| StoreError::Sqlite(format!("cannot open {}: {e}", path.display())))?;
        init_schema(&mut conn, &path)?;
        recover_journal(&path, &mut conn);
        Ok(Store {
            keys: crate::keycache::KeyCache::new(&path),
            path,
            options,
            conn: Mutex::new(conn),
            ledger: OnceLock::new(),
            merkle: Mutex::new(MerkleCache::default()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Handle to the writer (starts the writer thread on first call).
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .get_or_init(|| {
                Ledger::spawn(WriterConfig {
                    path: self.path.clone(),
                    durability: self.options.durability,
                    busy_timeout: self.options.busy_timeout,
                    index_backlog: self.options.index_backlog,
                    indexer_nice: self.options.indexer_nice,
                })
            })
            .clone()
    }

    /// Run `f`, which writes the chain directly (retention seals) and returns the new
    /// head, with no append in between: through this process's ledger if it runs,
    /// otherwise holding the append log's lock (refused while a gateway owns it).
    pub(crate) fn exclusive_chain<T>(
        &self,
        f: impl FnOnce() -> Result<(T, (u64, String)), StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(ledger) = self.ledger.get() {
            return ledger.exclusive(self.options.busy_timeout, f);
        }
        let mut journal = self.lock_journal(self.options.busy_timeout)?;
        journal
            .replay(&mut self.reader()?)
            .map_err(StoreError::Sqlite)?;
        let (out, _) = f()?;
        drop(journal);
        Ok(out)
    }

    /// `Err` when another process (a running gateway) owns the chain, so that a command
    /// that would write it can refuse before doing anything.
    pub(crate) fn may_write_chain(&self) -> Result<(), StoreError> {
        if self.ledger.get().is_some() {
            return Ok(());
        }
        self.lock_journal(Duration::ZERO).map(drop)
    }

    fn lock_journal(&self, wait: Duration) -> Result<crate::journal::Journal, StoreError> {
        crate::journal::Journal::open_locked(&self.path, wait)
            .map_err(|e| StoreError::Sqlite(format!("cannot open the evidence append log: {e}")))?
            .ok_or_else(|| {
                StoreError::Sqlite(
                    "a running gateway writes this store's chain; stop it, or let it apply retention itself ([gateway] retention)".into(),
                )
            })
    }

    /// Last committed record: `(seq, hash)`; `(0, GENESIS_HASH)` when empty.
    pub fn head(&self) -> Result<(u64, String), StoreError> {
        self.catch_up();
        Ok(read_head(&self.lock())?)
    }

    /// Records matching `filter`, in seq order, each passed to `each` until it returns
    /// false. Returns how many were delivered.
    pub fn query(
        &self,
        filter: &RecordFilter,
        each: &mut dyn FnMut(EvidenceRecord) -> bool,
    ) -> Result<u64, StoreError> {
        let mut bad: Option<StoreError> = None;
        let delivered = self.query_bodies(
            filter,
            &mut |seq, body| match serde_json::from_str::<EvidenceRecord>(&body) {
                Ok(rec) => each(rec),
                Err(e) => {
                    bad = Some(StoreError::Sqlite(format!(
                        "record {seq} is not a valid evidence record: {e}"
                    )));
                    false
                }
            },
        )?;
        match bad {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Like [`Store::query`], with each record's stored body (JSON text, as hashed) and seq.
    pub fn query_bodies(
        &self,
        filter: &RecordFilter,
        each: &mut dyn FnMut(u64, String) -> bool,
    ) -> Result<u64, StoreError> {
        let conn = self.reader()?;
        let mut scan = crate::postings::Scan::new(&conn, "seq, body", filter)?;
        scan.order_by(false);
        if let Some(limit) = filter.limit {
            scan.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let mut stmt = conn.prepare(&scan.sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(scan.args))?;
        let mut delivered = 0u64;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let body: String = row.get(1)?;
            delivered += 1;
            if !each(seq as u64, body) {
                break;
            }
        }
        Ok(delivered)
    }

    /// Recompute the whole chain, streaming, and report the first problem.
    /// `progress(done, total)` is called every 10 000 records and at the end.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, StoreError> {
        let mut conn = self.reader()?;
        // One read transaction: a consistent snapshot even while the gateway appends.
        let tx = conn.transaction()?;
        let total: i64 = tx.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
        let total = total as u64;
        // Records sealed by retention are gone; the chain continues from the latest seal.
        let (start_seq, start_hash) = match crate::retention::read_seals(&tx)?.pop() {
            Some(seal) => (seal.up_to_seq, seal.last_hash),
            None => genesis(),
        };
        let mut report = VerifyReport {
            records: 0,
            head_seq: start_seq,
            head_hash: start_hash,
            problem: None,
        };
        {
            let mut stmt = tx.prepare(ALL_ROWS_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let stored = StoredRow::read(row)?;
                let seq = u64::try_from(stored.seq).unwrap_or(0);
                if let Err(what) = check_row(&stored, report.head_seq, &report.head_hash) {
                    report.problem = Some(VerifyProblem { seq, what });
                    break;
                }
                report.records += 1;
                report.head_seq = seq;
                report.head_hash = stored.hash;
                if report.records.is_multiple_of(10_000) {
                    progress(report.records, total);
                }
            }
        }
        tx.finish()?;
        progress(report.records, total);
        Ok(report)
    }

    pub fn insert_key(&self, rec: &KeyRecord) -> Result<(), StoreError> {
        let groups =
            serde_json::to_string(&rec.groups).map_err(|e| StoreError::Sqlite(e.to_string()))?;
        self.lock().execute(
            INSERT_KEY_SQL,
            params![
                rec.id,
                rec.principal,
                groups,
                rec.created_at,
                rec.expires_at,
                rec.revoked_at,
                &rec.secret_hash[..],
                rec.scram_salt,
                i64::from(rec.scram_iterations),
                &rec.scram_stored_key[..],
                &rec.scram_server_key[..],
            ],
        )?;
        Ok(())
    }

    /// The key record of `id`, from memory when it was read before and no key was
    /// revoked since (by any process: see [`crate::keycache`]).
    pub fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.keys.get_or_load(id, || {
            let conn = self.lock();
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))?;
            Ok(stmt.query_row([id], key_from_row).optional()?)
        })
    }

    pub fn keys_for_principal(&self, principal: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE principal = ?1 ORDER BY created_at, id"
        ))?;
        let keys = stmt
            .query_map([principal], key_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys ORDER BY principal, created_at, id"
        ))?;
        let keys = stmt
            .query_map([], key_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// Mark key `id` revoked at `at`; false when there is no such key or it already was.
    pub fn revoke_key(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        let n = self.lock().execute(
            "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )?;
        if n > 0 {
            // Running gateways cache key records: tell them (fail loudly if we cannot, the
            // revocation would otherwise not reach them).
            self.keys.announce_revocation().map_err(|e| {
                StoreError::Sqlite(format!(
                    "key {id} is revoked in the store, but running gateways could not be told \
                     (cannot write {}: {e}); restart them to make the revocation effective",
                    crate::keycache::stamp_path(&self.path).display()
                ))
            })?;
        }
        Ok(n > 0)
    }

    /// A fresh connection for a long read, so that no lock is held while callers'
    /// callbacks run (they may use the store) and reads run in parallel.
    pub(crate) fn reader(&self) -> Result<Connection, StoreError> {
        self.catch_up();
        Ok(open_connection(
            &self.path,
            self.options.durability,
            self.options.busy_timeout,
            false,
        )?)
    }

    /// Readers in the gateway's own process see every record it acknowledged (the
    /// indexer is at most a few milliseconds behind; a stuck one is not waited for long).
    fn catch_up(&self) {
        if let Some(ledger) = self.ledger.get() {
            ledger.wait_indexed(Duration::from_secs(1));
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this process's indexer has records waiting to be indexed.
    pub(crate) fn indexing(&self) -> bool {
        self.ledger.get().is_some_and(|l| l.queued() > 0)
    }

    pub(crate) fn merkle_cache(&self) -> MutexGuard<'_, MerkleCache> {
        self.merkle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every stored column of a record, in seq order, as `verify` reads them.
pub(crate) const ALL_ROWS_SQL: &str = "SELECT seq, id, ts, kind, session_id, principal, connection, body, prev_hash, hash \
     FROM records ORDER BY seq";

pub(crate) struct StoredRow {
    pub seq: i64,
    pub id: String,
    pub ts: String,
    pub kind: String,
    pub session_id: Option<String>,
    pub principal: Option<String>,
    pub connection: Option<String>,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredRow {
    /// A row of [`ALL_ROWS_SQL`].
    pub(crate) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
        Ok(StoredRow {
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
        })
    }
}

/// Check one stored row against its predecessor (`prev_seq`, `prev_hash`).
pub(crate) fn check_row(row: &StoredRow, prev_seq: u64, prev_hash: &str) -> Result<(), String> {
    let seq = row.seq;
    let expected = prev_seq as i64 + 1;
    if seq > expected {
        return Err(format!("missing record(s) before seq {seq}"));
    }
    if seq < expected {
        return Err(format!(
            "record {seq} is reordered: expected seq {expected}"
        ));
    }
    let value: Value = serde_json::from_str(&row.body)
        .map_err(|e| format!("record {seq} was altered: its body is not valid JSON: {e}"))?;
    let rec: EvidenceRecord = serde_json::from_value(value.clone()).map_err(|e| {
        format!("record {seq} was altered: its body is not a valid evidence record: {e}")
    })?;
    if rec.seq as i64 != seq {
        return Err(format!(
            "record {seq} is reordered: its content says seq {}",
            rec.seq
        ));
    }
    let recomputed = chain::value_hash(&value);
    if recomputed != rec.hash || recomputed != row.hash {
        return Err(format!(
            "record {seq} was altered: hash does not match its content"
        ));
    }
    if rec.prev_hash != prev_hash {
        return Err(format!(
            "chain broken at {seq}: prev_hash does not match the hash of record {}",
            seq - 1
        ));
    }
    let columns: [(&str, Option<&str>, Option<&str>); 7] = [
        ("id", Some(&row.id), Some(&rec.id)),
        ("ts", Some(&row.ts), Some(&rec.ts)),
        ("kind", Some(&row.kind), Some(rec.kind.as_str())),
        (
            "session_id",
            row.session_id.as_deref(),
            rec.session_id.as_deref(),
        ),
        (
            "principal",
            row.principal.as_deref(),
            rec.principal.as_ref().map(|p| p.id.as_str()),
        ),
        (
            "connection",
            row.connection.as_deref(),
            rec.connection.as_deref(),
        ),
        ("prev_hash", Some(&row.prev_hash), Some(&rec.prev_hash)),
    ];
    for (name, stored, content) in columns {
        if stored != content {
            return Err(format!(
                "record {seq} was altered: column `{name}` does not match its content"
            ));
        }
    }
    Ok(())
}

/// Parse a time bound (RFC 3339; also a date or a span ago, as the CLI accepts) and write
/// it the way records store `ts`, so that string comparison orders correctly.
pub(crate) fn normalize_ts(s: &str) -> Result<String, StoreError> {
    let t = warden_core::time_fmt::parse_time_arg(s).map_err(StoreError::Sqlite)?;
    Ok(warden_core::time_fmt::format_ts(t))
}

/// Last committed record: `(seq, hash)`; `(0, GENESIS_HASH)` when the chain is empty.
pub(crate) fn read_head(conn: &Connection) -> rusqlite::Result<(u64, String)> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
        )
        .optional()?;
    Ok(head.unwrap_or_else(genesis))
}

/// Index what a gateway that stopped abruptly left in the append log — unless a running
/// gateway holds it (it does that itself). Problems are reported, not fatal: readers must
/// still be able to open the store to investigate.
fn recover_journal(path: &Path, conn: &mut Connection) {
    let log = crate::journal::path_for(path);
    if std::fs::metadata(&log).map_or(true, |m| m.len() == 0) {
        return;
    }
    match crate::journal::Journal::open_locked(path, Duration::ZERO) {
        Ok(Some(mut j)) => {
            if let Err(e) = j.replay(conn) {
                tracing::error!("evidence append log not recovered: {e}");
            }
        }
        // A running gateway owns it: what it acknowledged before this process opened the
        // store is visible here once its indexer (milliseconds behind) has caught up.
        Ok(None) => {
            if let Some(last) = crate::journal::last_seq(path) {
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while read_head(conn).is_ok_and(|(seq, _)| seq < last)
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Err(e) => tracing::error!("cannot open {}: {e}", log.display()),
    }
}

/// Open a connection with the busy timeout and the durability pragmas.
pub(crate) fn open_connection(
    path: &Path,
    durability: Durability,
    busy_timeout: Duration,
    create: bool,
) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    if create {
        // Only a database without pages takes it (and only before WAL mode is set).
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "cannot switch {} to WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Process => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A bounded page cache and no memory map: the gateway's resident memory must stay
    // small whatever the store's size (every mapped page it touched would count). The
    // indexer's commits are off the statement path, so their latency matters less than
    // the footprint (the 64 MiB cache + 256 MiB map used before cost ~300 MiB of RSS on a
    // busy store).
    conn.execute_batch(
        "PRAGMA cache_size = -8192; PRAGMA mmap_size = 0; PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

fn init_schema(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Sqlite(format!(
            "the store's schema version is {version}; this Warden understands up to {SCHEMA_VERSION} (upgrade Warden)"
        )));
    }
    // Held until the upgrade commits: a running gateway of an older Warden owns the
    // append log's lock, and would go on indexing without postings.
    let mut _log_lock = None;
    if version < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(crate::postings::SCHEMA)?;
        if version > 0 && version < 5 {
            // Version 4 and older indexed principal, connection, kind and session_id
            // per record; version 5 indexes them by block (`crate::postings`).
            _log_lock = match crate::journal::Journal::open_locked(path, Duration::ZERO) {
                Ok(Some(j)) => Some(j),
                Ok(None) => {
                    return Err(StoreError::Sqlite(format!(
                        "the evidence store {} has schema version {version} and a running gateway (an older Warden) writes it; \
                         this Warden must re-index it (schema {SCHEMA_VERSION}) first: stop that gateway, then run this again \
                         (or start the new gateway, which upgrades the store itself)",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(StoreError::Sqlite(format!(
                        "cannot open the evidence append log to upgrade the store: {e}"
                    )));
                }
            };
            let (records, last): (i64, Option<i64>) =
                tx.query_row("SELECT COUNT(*), MAX(seq) FROM records", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            tracing::info!(
                "upgrading the evidence store to schema {SCHEMA_VERSION}: indexing {records} records by block"
            );
            tx.execute_batch(
                "DROP INDEX IF EXISTS records_principal; DROP INDEX IF EXISTS records_connection; \
                 DROP INDEX IF EXISTS records_kind; DROP INDEX IF EXISTS records_session_id;",
            )?;
            // In chunks of READ_CHUNK whole blocks (262 144 records), so that no GROUP BY
            // sorts the whole store in memory (`temp_store = MEMORY`).
            let last = last.map_or(0, |l| l.max(0) as u64);
            let mut from = 0;
            while from <= last {
                let to = from + (READ_CHUNK * crate::postings::BLOCK) as u64 - 1;
                crate::postings::rebuild(&tx, from, to.min(last))?;
                from = to + 1;
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// Create the database's directory (0700) and an empty database file (0600) if missing.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Sqlite(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(|e| io("create directory", dir, e))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", path, e)),
    }
}
