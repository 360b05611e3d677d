//! Index by block: for `principal`, `connection`, `kind` and `session_id`, which blocks of
//! [`BLOCK`] consecutive records hold a value, and how many of the block's records do.
//!
//! Why not one SQLite index per column: the indexer wrote four index entries per record
//! for these columns, ~8 µs of a pgbench transaction's ~57 µs (docs/benchmarks.md, "Eighth
//! pass"). A session's records share their principal and connection and come in runs of
//! a few kinds, so a batch of records collapses to a few postings per block: `(column,
//! value, block) -> n`, one row in a `WITHOUT ROWID` table keyed in that order.
//!
//! A query on one of these columns walks the value's postings (in block order, so
//! newest-first pages stay bounded) and, for each, the block's rows by primary key, keeping
//! the rows whose column equals the value: it reads at most [`BLOCK`] rows per posting and
//! never misses one, as long as every record has its postings — which the only writers
//! ([`insert`] in the indexer's transaction, [`rebuild`] after retention's prune and its
//! seal record, and at the schema upgrade) maintain. `n` counts a kind's records in
//! whole blocks without reading them (the console's counts per day).
use rusqlite::types::Value;
use rusqlite::{Connection, Transaction, params};

use crate::sqlite::normalize_ts;
use crate::{RecordFilter, StoreError};

/// Records per block (a power of two: `block = seq >> BLOCK_SHIFT`).
pub(crate) const BLOCK_SHIFT: u32 = 6;
pub(crate) const BLOCK: i64 = 1 << BLOCK_SHIFT;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS record_postings (
    col INTEGER NOT NULL,
    value TEXT NOT NULL,
    block INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (col, value, block)
) WITHOUT ROWID;";

/// The indexed columns (the number is `record_postings.col`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    Principal = 1,
    Connection = 2,
    Kind = 3,
    Session = 4,
}

impl Col {
    pub(crate) const ALL: [Col; 4] = [Col::Principal, Col::Connection, Col::Kind, Col::Session];

    /// Its column in `records`.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Col::Principal => "principal",
            Col::Connection => "connection",
            Col::Kind => "kind",
            Col::Session => "session_id",
        }
    }
}

/// What a row contributes: its seq and the four indexed values (in [`Col::ALL`] order).
pub(crate) trait Keys {
    fn seq(&self) -> u64;
    fn keys(&self) -> [Option<&str>; 4];
}

const UPSERT_SQL: &str = "INSERT INTO record_postings (col, value, block, n) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (col, value, block) DO UPDATE SET n = n + excluded.n";

/// Add the postings of `rows` (in seq order, not yet posted) in `tx`.
pub(crate) fn insert<'a, K: Keys + 'a>(
    tx: &Transaction<'_>,
    rows: impl IntoIterator<Item = &'a K>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(UPSERT_SQL)?;
    // One block at a time: its distinct (column, value) pairs are few, so a linear
    // search beats hashing, and nothing is copied.
    let mut block = None;
    let mut pending: Vec<(Col, &str, i64)> = Vec::with_capacity(16);
    let mut flush = |block: i64, pending: &mut Vec<(Col, &str, i64)>| -> rusqlite::Result<()> {
        for (col, value, n) in pending.drain(..) {
            stmt.execute(params![col as i64, value, block, n])?;
        }
        Ok(())
    };
    for r in rows {
        let b = (r.seq() >> BLOCK_SHIFT) as i64;
        if let Some(prev) = block
            && prev != b
        {
            flush(prev, &mut pending)?;
        }
        block = Some(b);
        for (col, value) in Col::ALL.into_iter().zip(r.keys()) {
            let Some(value) = value else { continue };
            match pending
                .iter_mut()
                .find(|(c, v, _)| *c == col && *v == value)
            {
                Some((_, _, n)) => *n += 1,
                None => pending.push((col, value, 1)),
            }
        }
    }
    if let Some(b) = block {
        flush(b, &mut pending)?;
    }
    Ok(())
}

/// Recompute the postings of the blocks holding `from_seq..=to_seq` from the records
/// there (retention's prune and seal record, the schema upgrade).
pub(crate) fn rebuild(tx: &Transaction<'_>, from_seq: u64, to_seq: u64) -> rusqlite::Result<()> {
    let lo = (from_seq >> BLOCK_SHIFT) as i64;
    let hi = (to_seq >> BLOCK_SHIFT) as i64;
    tx.execute(
        "DELETE FROM record_postings WHERE block >= ?1 AND block <= ?2",
        params![lo, hi],
    )?;
    for col in Col::ALL {
        let c = col.column();
        tx.execute(
            &format!(
                "INSERT INTO record_postings (col, value, block, n) \
                 SELECT ?1, {c}, seq >> {BLOCK_SHIFT}, COUNT(*) FROM records \
                 WHERE seq >= ?2 AND seq < ?3 AND {c} IS NOT NULL GROUP BY {c}, seq >> {BLOCK_SHIFT}"
            ),
            params![col as i64, lo << BLOCK_SHIFT, (hi + 1) << BLOCK_SHIFT],
        )?;
    }
    Ok(())
}

/// Drop the postings of blocks that hold no record at or below `up_to_seq` any more
/// (all pruned) and recompute the one it ends in.
pub(crate) fn after_prune(tx: &Transaction<'_>, up_to_seq: u64) -> rusqlite::Result<()> {
    let edge = (up_to_seq >> BLOCK_SHIFT) as i64;
    tx.execute("DELETE FROM record_postings WHERE block < ?1", [edge])?;
    rebuild(tx, up_to_seq, up_to_seq)
}

/// `FROM record_postings p CROSS JOIN records r WHERE …`: the rows of every block whose
/// postings of `col` satisfy `p.value {value}` (`= ?3`, `IN (SELECT …)`), with the value
/// checked on the row. `CROSS JOIN` keeps the postings as the outer loop; ordering by
/// `p.block` then `r.seq` needs no sort (both loops deliver in that order).
pub(crate) fn driven_from(col: Col, value: &str) -> String {
    format!(
        "FROM record_postings p CROSS JOIN records r \
         WHERE p.col = {} AND p.value {value} \
         AND r.seq >= p.block * {BLOCK} AND r.seq < p.block * {BLOCK} + {BLOCK} \
         AND r.{} = p.value",
        col as i64,
        col.column()
    )
}

/// Number of blocks holding `value` in `col` (a cheap selectivity estimate).
fn blocks_with(conn: &Connection, col: Col, value: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM record_postings WHERE col = ?1 AND value = ?2")?
        .query_row(params![col as i64, value], |r| r.get(0))
}

/// A read over `records` with structured filters, written as SQL: driven by the postings
/// of the filtered column with the fewest blocks, or by `records` itself (its primary key
/// or the `ts` index) when no indexed column is filtered. Clauses use unqualified column
/// names of `records` (the postings' `col`, `value`, `block`, `n` never clash).
pub(crate) struct Scan {
    pub sql: String,
    pub args: Vec<Value>,
    driven: bool,
}

impl Scan {
    /// `SELECT {select} FROM … WHERE …` for the records matching `f` (its limit is the
    /// caller's).
    pub(crate) fn new(
        conn: &Connection,
        select: &str,
        f: &RecordFilter,
    ) -> Result<Scan, StoreError> {
        let filtered: Vec<(Col, &str)> = Col::ALL
            .into_iter()
            .zip([&f.principal, &f.connection, &f.kind, &f.session_id])
            .filter_map(|(c, v)| v.as_deref().map(|v| (c, v)))
            .collect();
        let mut driver = None;
        let mut fewest = i64::MAX;
        for &(col, value) in &filtered {
            let n = blocks_with(conn, col, value)?;
            if n < fewest {
                fewest = n;
                driver = Some((col, value));
            }
        }
        let mut scan = Scan {
            sql: String::new(),
            args: Vec::new(),
            driven: driver.is_some(),
        };
        match driver {
            Some((col, value)) => {
                scan.args.push(value.to_string().into());
                scan.sql = format!("SELECT {select} {}", driven_from(col, "= ?1"));
            }
            None => scan.sql = format!("SELECT {select} FROM records WHERE 1=1"),
        }
        if let Some(s) = &f.since {
            scan.and("ts >= ?", normalize_ts(s)?.into());
        }
        if let Some(u) = &f.until {
            scan.and("ts < ?", normalize_ts(u)?.into());
        }
        for (col, value) in filtered {
            if driver != Some((col, value)) {
                scan.and(&format!("{} = ?", col.column()), value.to_string().into());
            }
        }
        Ok(scan)
    }

    /// ` AND {clause}` with its `?` bound to `v`.
    pub(crate) fn and(&mut self, clause: &str, v: Value) {
        self.args.push(v);
        let n = format!("?{}", self.args.len());
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause.replace('?', &n));
    }

    /// Only records with `seq < below` (and, when driven, only the blocks that can hold one).
    pub(crate) fn seq_below(&mut self, below: i64) {
        self.and("seq < ?", Value::Integer(below));
        if self.driven {
            self.and("p.block <= ?", Value::Integer(block_of(below - 1)));
        }
    }

    /// Only records with `seq >= from`.
    pub(crate) fn seq_from(&mut self, from: i64) {
        self.and("seq >= ?", Value::Integer(from));
        if self.driven {
            self.and("p.block >= ?", Value::Integer(block_of(from)));
        }
    }

    /// ` ORDER BY` seq (newest first when `desc`) in the way that needs no sort.
    pub(crate) fn order_by(&mut self, desc: bool) {
        let dir = if desc { "DESC" } else { "ASC" };
        if self.driven {
            self.sql
                .push_str(&format!(" ORDER BY p.block {dir}, r.seq {dir}"));
        } else {
            self.sql.push_str(&format!(" ORDER BY seq {dir}"));
        }
    }

    /// ` LIMIT ?` bound to `n`.
    pub(crate) fn limit(&mut self, n: i64) {
        self.args.push(Value::Integer(n));
        self.sql.push_str(&format!(" LIMIT ?{}", self.args.len()));
    }
}

/// Records of `kind` with `lo <= seq < hi`: the postings' counts for the whole blocks
/// inside the range, the rows themselves for the (at most two) blocks at its edges.
pub(crate) fn count_kind(conn: &Connection, kind: &str, lo: i64, hi: i64) -> rusqlite::Result<u64> {
    if hi <= lo {
        return Ok(0);
    }
    // Whole blocks: first_full..last_full (exclusive).
    let first_full = (lo + BLOCK - 1) >> BLOCK_SHIFT;
    let end_full = hi >> BLOCK_SHIFT;
    let rows = |a: i64, b: i64| -> rusqlite::Result<i64> {
        if b <= a {
            return Ok(0);
        }
        conn.prepare_cached(
            "SELECT COUNT(*) FROM records WHERE seq >= ?1 AND seq < ?2 AND kind = ?3",
        )?
        .query_row(params![a, b, kind], |r| r.get(0))
    };
    let n = if first_full >= end_full {
        rows(lo, hi)?
    } else {
        let whole: i64 = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(n), 0) FROM record_postings \
                 WHERE col = ?1 AND value = ?2 AND block >= ?3 AND block < ?4",
            )?
            .query_row(params![Col::Kind as i64, kind, first_full, end_full], |r| {
                r.get(0)
            })?;
        whole + rows(lo, first_full << BLOCK_SHIFT)? + rows(end_full << BLOCK_SHIFT, hi)?
    };
    Ok(n as u64)
}

/// The block holding `seq`.
pub(crate) fn block_of(seq: i64) -> i64 {
    seq >> BLOCK_SHIFT
}
