//! The append log next to the database (`<db>.appendlog`): what makes an append durable.
//!
//! An append is acknowledged once its record is placed in the chain and written here —
//! one `write(2)` of one line (the stored body, canonical JSON with its `hash`, then
//! `\n`), plus `fdatasync` under `fsync` durability — not once SQLite has indexed it. The
//! SQLite table is the queryable index, filled behind by the indexer thread
//! ([`crate::ledger`]); lines it already holds are dropped when the log is truncated.
//!
//! Crash recovery ([`Journal::replay`]): every complete line whose `seq` is past the
//! database head, continuing its chain, is inserted. A torn last line (a crash during
//! the write) was never acknowledged and is ignored; a line that does not continue the
//! stored chain stops recovery with an error naming it (the operator decides: nothing is
//! silently dropped or re-chained).
//!
//! Under `fsync` durability the log is zero-filled ahead of the lines
//! ([`Journal::preallocate`], [`PREALLOC`] bytes at a time): an `fdatasync` of data written
//! over blocks that exist and lie inside the file's size has no metadata to write (no
//! block allocation, no new size), so it is one data write and a cache flush instead of
//! several writes — PostgreSQL zero-fills its WAL segments for the same reason. Lines
//! never contain a NUL byte (canonical JSON escapes control characters), so the data ends
//! at the first NUL; recovery reads up to there. After a power loss a block written
//! after an unsynced one may have reached the disk while the earlier one reads as zeros:
//! everything from the first NUL on was never synced, so never acknowledged.
//!
//! One process at a time owns a store's log: an exclusive `flock` on the file, held for
//! the life of the ledger. Anything else that writes the chain (retention seals) takes
//! the same lock or goes through the running ledger.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use warden_core::EvidenceRecord;

use crate::ledger::IndexRow;

/// The log of the database at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".appendlog");
    db.with_file_name(name)
}

/// How far ahead the log is zero-filled under `fsync` durability.
pub(crate) const PREALLOC: u64 = 256 * 1024;

pub(crate) struct Journal {
    file: File,
    /// Bytes of whole lines in the file (where the next line goes). Right after opening:
    /// the file's size, which may include zeros after the lines ([`Journal::replay`]
    /// reads up to the first NUL, then empties the file).
    len: u64,
    /// The file's size: zeros from `len` up to here.
    size: u64,
    /// Zero-fill ahead of the lines ([`Journal::preallocate`]).
    prealloc: bool,
    path: PathBuf,
}

impl Journal {
    /// Open (creating, mode 0600) and lock the log of `db`, waiting up to `wait` for
    /// another owner to let go. `Ok(None)`: someone else still holds it.
    pub(crate) fn open_locked(db: &Path, wait: Duration) -> std::io::Result<Option<Journal>> {
        let path = path_for(db);
        let mut o = OpenOptions::new();
        // Not O_APPEND: lines are written at `len`, which is short of the file's end when
        // the log is zero-filled ahead.
        o.read(true).write(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        let len = file.metadata()?.len();
        Ok(Some(Journal {
            file,
            len,
            size: len,
            prealloc: false,
            path,
        }))
    }

    /// Zero-fill the log ahead of the lines from now on (`fsync` durability: see the module
    /// docs). Costs a memory copy of zeros per [`PREALLOC`] bytes of lines, and writes
    /// them to the disk once more; without syncs there is nothing to gain.
    pub(crate) fn preallocate(&mut self) {
        self.prealloc = true;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Append whole lines. On failure the file is cut back to its previous length so
    /// that a partial line never precedes the next one; `Err(true)` if even that failed
    /// (the log can no longer be trusted: stop appending).
    pub(crate) fn append(&mut self, lines: &[u8]) -> Result<(), (std::io::Error, bool)> {
        let end = self.len + lines.len() as u64;
        if self.prealloc && end > self.size {
            // Failing to zero-fill only costs the next syncs their speed.
            let _ = self.zero_fill(end.div_ceil(PREALLOC) * PREALLOC);
        }
        match write_at(&self.file, lines, self.len) {
            Ok(()) => {
                self.len = end;
                self.size = self.size.max(end);
                Ok(())
            }
            Err(e) => {
                let broken = self.file.set_len(self.len).is_err();
                self.size = self.len;
                Err((e, broken))
            }
        }
    }

    /// Write zeros from the file's end up to `to`.
    fn zero_fill(&mut self, to: u64) -> std::io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while self.size < to {
            let n = (to - self.size).min(ZEROS.len() as u64) as usize;
            write_at(&self.file, &ZEROS[..n], self.size)?;
            self.size += n as u64;
        }
        Ok(())
    }

    /// A second handle on the same open file (the one `fsync` durability syncs).
    pub(crate) fn handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Drop every line (all of them are in the database).
    pub(crate) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.size = 0;
        Ok(())
    }

    /// Index every logged record the database at `conn` does not hold yet, then empty the
    /// log. Returns how many records were recovered.
    pub(crate) fn replay(&mut self, conn: &mut Connection) -> Result<u64, String> {
        if self.len == 0 {
            return Ok(0);
        }
        let mut text = Vec::with_capacity(self.len as usize);
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_to_end(&mut text))
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let (head_seq, head_hash) = crate::sqlite::read_head(conn)
            .map_err(|e| format!("cannot read the chain head: {e}"))?;
        let rows = recoverable(&text, head_seq, &head_hash)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let n = rows.len() as u64;
        if !rows.is_empty() {
            crate::ledger::insert_rows(conn, &rows).map_err(|e| {
                format!(
                    "cannot index the {n} record(s) recovered from {}: {e}",
                    self.path.display()
                )
            })?;
            tracing::warn!(
                "recovered {n} evidence record(s) (seq {}..={}) from {} that were durable but not yet indexed",
                rows[0].seq,
                rows[rows.len() - 1].seq,
                self.path.display()
            );
        }
        self.truncate()
            .map_err(|e| format!("cannot truncate {}: {e}", self.path.display()))?;
        Ok(n)
    }
}

/// The seq of the last complete line in the log of `db`, if any: what a reader in
/// another process waits to see indexed. Reads only the file's tail.
pub(crate) fn last_seq(db: &Path) -> Option<u64> {
    // The lines' last 256 KiB, behind at most PREALLOC bytes of zeros.
    const TAIL: u64 = 256 * 1024 + PREALLOC;
    let mut f = File::open(path_for(db)).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(TAIL);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail).ok()?;
    let data = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    tail.truncate(data);
    let end = tail.iter().rposition(|&b| b == b'\n')?;
    let start = tail[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if start == 0 && from > 0 {
        return None; // a line longer than the window
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(&tail[start..end])
        .ok()
        .map(|s| s.seq)
}

/// The records of `text` (log lines) that continue the chain at `head_seq`/`head_hash`.
fn recoverable(text: &[u8], head_seq: u64, head_hash: &str) -> Result<Vec<IndexRow>, String> {
    // The lines end at the first NUL: zeros written ahead, or a block that never reached
    // the disk (see the module docs); nothing from there on was acknowledged.
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    let mut rows = Vec::new();
    let (mut seq, mut hash) = (head_seq, head_hash.to_string());
    let mut lines = text.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let Some(body) = line.strip_suffix(b"\n") else {
            // A torn tail: the write never completed, so it was never acknowledged.
            tracing::warn!("ignoring an incomplete last line in the evidence append log");
            break;
        };
        let parsed = std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|b| parse_line(b).map(|r| (b, r)));
        let (body, rec) = match parsed {
            Ok(x) => x,
            // Only the very last line can be damaged by a crash; anything else is not ours.
            Err(e) if last => {
                tracing::warn!("ignoring a damaged last line in the evidence append log: {e}");
                break;
            }
            Err(e) => return Err(format!("line {} is not a valid record: {e}", rows.len())),
        };
        if rec.seq <= seq {
            continue; // already indexed
        }
        if rec.seq != seq + 1 || rec.prev_hash != hash {
            return Err(format!(
                "record seq {} does not continue the stored chain (head seq {seq}, hash {hash}); \
                 move the file aside to start, and run `warden audit verify`",
                rec.seq
            ));
        }
        seq = rec.seq;
        hash.clone_from(&rec.hash);
        rows.push(IndexRow::new(&rec, body.to_string()));
    }
    Ok(rows)
}

/// `pwrite(2)` all of `buf` at `offset`.
#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::Write;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

/// One logged body, checked: it parses as a record and its hash is its content's.
fn parse_line(body: &str) -> Result<EvidenceRecord, String> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let rec: EvidenceRecord = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let want = crate::chain::value_hash(&value);
    if rec.hash != want {
        return Err(format!("record seq {} does not match its hash", rec.seq));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{GENESIS_HASH, hash_and_body};
    use warden_core::RecordKind;

    fn lines(n: u64) -> (Vec<u8>, Vec<String>) {
        let (mut prev, mut out, mut hashes) = (GENESIS_HASH.to_string(), Vec::new(), Vec::new());
        for seq in 1..=n {
            let mut r = EvidenceRecord::new(RecordKind::ActionRequest);
            r.ts = "2026-11-27T10:00:00.000000000Z".into();
            r.seq = seq;
            r.prev_hash = prev.clone();
            let (hash, body) = hash_and_body(&serde_json::to_value(&r).unwrap());
            out.extend_from_slice(body.as_bytes());
            out.push(b'\n');
            prev = hash.clone();
            hashes.push(hash);
        }
        (out, hashes)
    }

    #[test]
    fn last_seq_reads_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        assert_eq!(last_seq(&db), None);
        let (mut text, _) = lines(4);
        text.extend_from_slice(b"{\"seq\":5,");
        std::fs::write(path_for(&db), &text).unwrap();
        assert_eq!(last_seq(&db), Some(4));
    }

    #[test]
    fn recovers_what_continues_the_head_and_skips_the_rest() {
        let (text, hashes) = lines(5);
        let rows = recoverable(&text, 2, &hashes[1]).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(recoverable(&text, 5, &hashes[4]).unwrap().is_empty());
    }

    #[test]
    fn a_torn_or_damaged_last_line_is_ignored() {
        let (mut text, _) = lines(3);
        let full = text.clone();
        text.extend_from_slice(b"{\"seq\":4,\"id\"");
        assert_eq!(recoverable(&text, 0, GENESIS_HASH).unwrap().len(), 3);
        let mut damaged = full.clone();
        damaged.truncate(damaged.len() - 10);
        damaged.push(b'\n');
        assert_eq!(recoverable(&damaged, 0, GENESIS_HASH).unwrap().len(), 2);
    }

    #[test]
    fn the_lines_end_at_the_first_nul() {
        let (text, _) = lines(5);
        let cut = text
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .unwrap()
            .0
            + 1;
        // Zeros written ahead after the lines.
        let mut ahead = text.clone();
        ahead.extend_from_slice(&[0; 4096]);
        assert_eq!(recoverable(&ahead, 0, GENESIS_HASH).unwrap().len(), 5);
        // A block lost in a power loss (zeros) before lines that did reach the disk: none
        // of them was synced, so recovery stops at the zeros instead of refusing the log.
        let mut hole = text[..cut].to_vec();
        hole.extend_from_slice(&[0; 100]);
        hole.extend_from_slice(&text[cut + 100..]);
        assert_eq!(recoverable(&hole, 0, GENESIS_HASH).unwrap().len(), 2);
        // A torn line then zeros: the torn line is ignored.
        let mut torn = text[..cut + 20].to_vec();
        torn.extend_from_slice(&[0; 100]);
        assert_eq!(recoverable(&torn, 0, GENESIS_HASH).unwrap().len(), 2);
    }

    #[test]
    fn last_seq_skips_the_zeros_after_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let (mut text, _) = lines(3);
        text.resize(text.len() + PREALLOC as usize - 10, 0);
        std::fs::write(path_for(&db), &text).unwrap();
        assert_eq!(last_seq(&db), Some(3));
    }

    #[test]
    fn a_fork_or_a_damaged_middle_line_is_refused() {
        let (text, _) = lines(3);
        let err = recoverable(&text, 0, &"1".repeat(64)).unwrap_err();
        assert!(err.contains("does not continue"), "{err}");
        let mut bad = text.clone();
        let at = bad.iter().position(|&b| b == b'\n').unwrap() - 3;
        bad[at] = b'#';
        assert!(recoverable(&bad, 0, GENESIS_HASH).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = recoverable(&bytes, 0, GENESIS_HASH);
        }
    }
}
