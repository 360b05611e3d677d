//! Read-only queries behind the web console and the admin API (issue 9): recent sessions
//! with filters, audit search newest-first with free text, counts per day, who is active
//! now. Every query is bounded (a `LIMIT`, a time window, or both) and driven by the
//! `records` primary key, its `ts` index, or the postings of `kind`, `session_id`,
//! `principal` or `connection` (`crate::postings`), so a page costs milliseconds on a
//! store of 100 000 records (docs/benchmarks.md, "Console").
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};
use serde::{Deserialize, Serialize};

use crate::postings::{Col, driven_from};
use crate::sessions::SessionSummary;
use crate::sqlite::normalize_ts;
use crate::{RecordFilter, Store, StoreError};

/// Most rows one console query returns.
pub const MAX_PAGE: u64 = 1000;
/// Most records one free-text search looks at (newest first); see
/// [`Store::search_records`].
pub const TEXT_SCAN: u64 = 25_000;

/// Which sessions: those that **started** in `[since, until)`, newest first.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecentSessions {
    pub since: Option<String>,
    pub until: Option<String>,
    pub principal: Option<String>,
    pub connection: Option<String>,
    /// Only sessions with at least one `policy.denied` record.
    #[serde(default)]
    pub has_denials: bool,
    /// Only sessions with at least one `approval.requested` record.
    #[serde(default)]
    pub has_approvals: bool,
    /// At most this many (default 100, at most [`MAX_PAGE`]).
    pub limit: Option<u64>,
}

/// A search over records, newest first, one page at a time.
#[derive(Debug, Clone, Default)]
pub struct RecordSearch {
    pub filter: RecordFilter,
    /// Case-insensitive substring of the statement / request line (`action.text`).
    pub text: Option<String>,
    /// Only records with `seq` below this (the next page).
    pub before_seq: Option<u64>,
}

/// Records per UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub records: u64,
    pub requests: u64,
    pub denied: u64,
    pub approvals: u64,
    pub auth_failed: u64,
}

/// A session with recent activity and no `session.end`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveSession {
    pub session_id: String,
    pub principal: Option<String>,
    pub connection: Option<String>,
    pub last_activity: String,
    /// Records in the window.
    pub records: u64,
}

fn limit_of(l: Option<u64>, default: u64) -> i64 {
    l.unwrap_or(default).clamp(1, MAX_PAGE) as i64
}

impl Store {
    /// Sessions that started in the window, newest first, with the same summary as
    /// [`Store::sessions`]. Driven by the postings of kind `session.start` (walked newest
    /// first) and those of each session id for the filters and the summaries.
    pub fn recent_sessions(&self, f: &RecentSessions) -> Result<Vec<SessionSummary>, StoreError> {
        let mut args: Vec<Value> = Vec::new();
        let mut cond = String::from("r.session_id IS NOT NULL");
        // `clause` with `?` where the argument goes.
        let mut add = |clause: &str, v: String| {
            args.push(v.into());
            let n = format!("?{}", args.len());
            cond.push_str(" AND ");
            cond.push_str(&clause.replace('?', &n));
        };
        if let Some(s) = &f.since {
            add("ts >= ?", normalize_ts(s)?);
        }
        if let Some(u) = &f.until {
            add("ts < ?", normalize_ts(u)?);
        }
        if let Some(p) = &f.principal {
            add("principal = ?", p.clone());
        }
        if let Some(c) = &f.connection {
            add("connection = ?", c.clone());
        }
        // A record of `kind` in the session `r` started: only the session's blocks that
        // also hold that kind are read (a point lookup in the kind's postings each).
        let has_kind = |kind: &str| {
            format!(
                " AND EXISTS (SELECT 1 FROM record_postings q CROSS JOIN record_postings k \
                 CROSS JOIN records d \
                 WHERE q.col = {session} AND q.value = r.session_id \
                 AND k.col = {kind_col} AND k.value = '{kind}' AND k.block = q.block \
                 AND d.seq >= q.block * {block} AND d.seq < q.block * {block} + {block} \
                 AND d.session_id = r.session_id AND d.kind = '{kind}')",
                session = Col::Session as i64,
                kind_col = Col::Kind as i64,
                block = crate::postings::BLOCK,
            )
        };
        if f.has_denials {
            cond.push_str(&has_kind("policy.denied"));
        }
        if f.has_approvals {
            cond.push_str(&has_kind("approval.requested"));
        }
        args.push(Value::Integer(limit_of(f.limit, 100)));
        let sql = format!(
            "WITH c AS (SELECT r.session_id {starts} AND {cond} \
             ORDER BY p.block DESC, r.seq DESC LIMIT ?{n}) \
             {summaries} ORDER BY MIN(r.seq) DESC",
            starts = driven_from(Col::Kind, "= 'session.start'"),
            summaries = summaries("IN (SELECT session_id FROM c)"),
            n = args.len()
        );
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), crate::sessions::summary_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One session's summary by exact id, or by a unique prefix of it.
    /// `Ok(Err(n))` when the prefix matches `n` != 1 sessions.
    pub fn find_session(&self, id: &str) -> Result<Result<SessionSummary, usize>, StoreError> {
        let conn = self.reader()?;
        let exact: Option<String> = conn
            .query_row(
                "SELECT value FROM record_postings WHERE col = ?1 AND value = ?2 LIMIT 1",
                params![Col::Session as i64, id],
                |r| r.get(0),
            )
            .optional()?;
        let sid = match exact {
            Some(s) => s,
            None => {
                // Prefix: a range on the postings' key (ids are ASCII).
                let mut stmt = conn.prepare(
                    "SELECT DISTINCT value FROM record_postings WHERE col = ?1 AND value >= ?2 AND value < ?3 LIMIT 2",
                )?;
                let upper = format!("{id}\u{10FFFF}");
                let ids: Vec<String> = stmt
                    .query_map(params![Col::Session as i64, id, upper], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                match ids.as_slice() {
                    [one] => one.clone(),
                    other => return Ok(Err(other.len())),
                }
            }
        };
        let sql = summaries("= ?1");
        let s = conn.query_row(&sql, [sid], crate::sessions::summary_from_row)?;
        Ok(Ok(s))
    }

    /// Records matching `search`, newest first, at most `filter.limit` (default 100,
    /// at most [`MAX_PAGE`]); each is passed to `each` as (seq, stored JSON body).
    /// Returns where the next page starts (`before_seq` for it), or `None` at the end.
    ///
    /// Structured filters ride an index (or the primary key, newest first). Free text
    /// has no index, so one call looks at no more than [`TEXT_SCAN`] records (newest
    /// first): when the page is not full by then, the answer says where to go on.
    pub fn search_records(
        &self,
        search: &RecordSearch,
        each: &mut dyn FnMut(u64, String),
    ) -> Result<Option<u64>, StoreError> {
        let f = &search.filter;
        let conn = self.reader()?;
        let mut scan = crate::postings::Scan::new(&conn, "seq, body", f)?;
        if let Some(b) = search.before_seq {
            scan.seq_below(i64::try_from(b).unwrap_or(i64::MAX));
        }
        let mut scan_floor = None;
        if let Some(t) = search.text.as_deref().filter(|t| !t.is_empty()) {
            let top: i64 = match search.before_seq {
                Some(b) => i64::try_from(b).unwrap_or(i64::MAX),
                None => {
                    conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM records", [], |r| {
                        r.get(0)
                    })?
                }
            };
            let floor = (top - TEXT_SCAN as i64).max(1);
            scan_floor = Some(floor as u64);
            scan.seq_from(floor);
            let t = t.to_lowercase();
            // A cheap substring test on the stored body first (LIKE: no JSON parse, no
            // copy; ASCII case-insensitive like lower()), then the exact one on the
            // statement. Skipped when JSON would escape the needle in the body.
            if !t.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                let pattern = format!(
                    "%{}%",
                    t.replace('!', "!!").replace('%', "!%").replace('_', "!_")
                );
                scan.and("body LIKE ? ESCAPE '!'", pattern.into());
            }
            scan.and(
                "instr(lower(json_extract(body, '$.action.text')), ?) > 0",
                t.into(),
            );
        }
        let page = limit_of(f.limit, 100);
        scan.order_by(true);
        scan.limit(page);
        let mut stmt = conn.prepare(&scan.sql)?;
        let mut rows = stmt.query(params_from_iter(scan.args))?;
        let mut n = 0;
        let mut last = None;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            each(seq, row.get(1)?);
            last = Some(seq);
            n += 1;
        }
        Ok(if n == page {
            last
        } else {
            scan_floor.filter(|&f| f > 1)
        })
    }

    /// Records per UTC day from `since` on (oldest day first), with requests, denials,
    /// approval requests and failed logins. Each day is turned into the range of `seq`
    /// whose `ts` falls in it (two lookups on the `ts` index; records are appended in
    /// time order); a kind's count is the sum of its postings' counts over the whole
    /// blocks in that range plus the rows of the two blocks at its edges.
    pub fn counts_per_day(&self, since: &str) -> Result<Vec<DayCount>, StoreError> {
        let since = warden_core::time_fmt::parse_time_arg(since).map_err(StoreError::Sqlite)?;
        let conn = self.reader()?;
        let first_seq = |conn: &rusqlite::Connection, ts: &str| -> rusqlite::Result<i64> {
            conn.prepare_cached(
                "SELECT COALESCE((SELECT seq FROM records WHERE ts >= ?1 ORDER BY ts LIMIT 1), \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM records))",
            )?
            .query_row([ts], |r| r.get(0))
        };
        let mut out = Vec::new();
        let today = time::OffsetDateTime::now_utc().date();
        let mut day = since.date();
        while day <= today {
            let start = day.midnight().assume_utc();
            let next = start + time::Duration::days(1);
            let lo = first_seq(&conn, &warden_core::time_fmt::format_ts(start.max(since)))?;
            let hi = first_seq(&conn, &warden_core::time_fmt::format_ts(next))?;
            let count = |kind: Option<&str>| -> rusqlite::Result<u64> {
                let n: i64 = match kind {
                    None => conn
                        .prepare_cached(
                            "SELECT COUNT(*) FROM records WHERE seq >= ?1 AND seq < ?2",
                        )?
                        .query_row([lo, hi], |r| r.get(0))?,
                    Some(k) => return crate::postings::count_kind(&conn, k, lo, hi),
                };
                Ok(n as u64)
            };
            let records = count(None)?;
            if records > 0 {
                out.push(DayCount {
                    day: day.to_string(),
                    records,
                    requests: count(Some("action.request"))?,
                    denied: count(Some("policy.denied"))?,
                    approvals: count(Some("approval.requested"))?,
                    auth_failed: count(Some("auth.failed"))?,
                });
            }
            match day.next_day() {
                Some(d) => day = d,
                None => break,
            }
        }
        Ok(out)
    }

    /// Sessions with a record at or after `since` and no `session.end`, most recently
    /// active first (the `ts` index bounds the scan to the window).
    pub fn active_sessions(&self, since: &str) -> Result<Vec<ActiveSession>, StoreError> {
        let since = normalize_ts(since)?;
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT session_id, MAX(principal), MAX(connection), MAX(ts), COUNT(*) \
             FROM records INDEXED BY records_ts WHERE ts >= ?1 AND session_id IS NOT NULL \
             GROUP BY session_id HAVING SUM(kind = 'session.end') = 0 \
             ORDER BY MAX(ts) DESC LIMIT 200",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(ActiveSession {
                session_id: r.get(0)?,
                principal: r.get(1)?,
                connection: r.get(2)?,
                last_activity: r.get(3)?,
                records: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// [`SUMMARY_SELECT`] of the sessions whose id satisfies `value` (`= ?1`, `IN (…)`, or
/// `IS NOT NULL` for all), one row each, walking each session's blocks. Grouped by the
/// postings' value, which SQLite reads in order: no sorter, which would otherwise hold a
/// copy of every record body it aggregates (`body` is an aggregate's argument).
pub(crate) fn summaries(value: &str) -> String {
    format!(
        "{SUMMARY_SELECT} {} GROUP BY p.value",
        driven_from(Col::Session, value)
    )
}

/// The summary columns of a session (one `GROUP BY session_id` row);
/// see [`crate::sessions::summary_from_row`].
pub(crate) const SUMMARY_SELECT: &str = "SELECT session_id, MAX(principal), MAX(connection), MIN(ts), MAX(ts), MIN(seq), MAX(seq), COUNT(*), \
     SUM(kind = 'action.request'), SUM(kind = 'policy.denied'), \
     SUM(kind = 'action.response' AND json_extract(body, '$.response.status') = 'error'), \
     MAX(CASE WHEN kind = 'session.end' THEN ts END), \
     MAX(json_extract(body, '$.protocol')), MAX(json_extract(body, '$.client')), \
     MAX(json_extract(body, '$.purpose')), SUM(kind = 'approval.requested')";

#[cfg(test)]
mod tests {
    use std::path::Path;

    use warden_core::{ActionInfo, EvidenceRecord, RecordKind};

    use super::*;
    use crate::Durability;

    fn open(dir: &Path) -> Store {
        Store::open("sqlite://data/evidence.db", dir, Durability::Process).unwrap()
    }

    fn rec(ts: &str, session: &str, who: &str, kind: RecordKind, text: &str) -> EvidenceRecord {
        let mut r = EvidenceRecord::new(kind);
        r.ts = ts.into();
        r.session_id = Some(session.into());
        r.principal = Some(crate::tests::key_principal(who));
        r.connection = Some("orders".into());
        if !text.is_empty() {
            r.action = Some(ActionInfo {
                kind: "sql".into(),
                text: text.into(),
                ..Default::default()
            });
        }
        r
    }

    #[tokio::test]
    async fn sessions_search_counts_and_active() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let l = store.ledger();
        use RecordKind::*;
        for r in [
            rec(
                "2026-11-25T10:00:00.000000000Z",
                "a",
                "agent:x",
                SessionStart,
                "",
            ),
            rec(
                "2026-11-25T10:00:01.000000000Z",
                "a",
                "agent:x",
                ActionRequest,
                "SELECT 1",
            ),
            rec(
                "2026-11-25T10:00:02.000000000Z",
                "a",
                "agent:x",
                SessionEnd,
                "",
            ),
            rec(
                "2026-11-26T10:00:00.000000000Z",
                "b",
                "agent:y",
                SessionStart,
                "",
            ),
            rec(
                "2026-11-26T10:00:01.000000000Z",
                "b",
                "agent:y",
                PolicyDenied,
                "DELETE FROM items",
            ),
            rec(
                "2026-11-26T10:00:02.000000000Z",
                "b",
                "agent:y",
                ApprovalRequested,
                "UPDATE items SET x = 1",
            ),
            rec(
                "2026-11-26T10:00:03.000000000Z",
                "c",
                "agent:x",
                SessionStart,
                "",
            ),
        ] {
            l.append(r).await.unwrap();
        }
        let all = store.recent_sessions(&RecentSessions::default()).unwrap();
        let ids: Vec<&str> = all.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"], "newest first");
        assert_eq!(all[1].denied, 1);
        assert_eq!(all[1].approvals, 1);
        let f = |m: fn(&mut RecentSessions)| {
            let mut q = RecentSessions::default();
            m(&mut q);
            store
                .recent_sessions(&q)
                .unwrap()
                .into_iter()
                .map(|s| s.session_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(f(|q| q.has_denials = true), ["b"]);
        assert_eq!(f(|q| q.has_approvals = true), ["b"]);
        assert_eq!(f(|q| q.principal = Some("agent:x".into())), ["c", "a"]);
        assert_eq!(f(|q| q.since = Some("2026-11-26".into())), ["c", "b"]);
        assert_eq!(f(|q| q.until = Some("2026-11-26".into())), ["a"]);
        assert_eq!(f(|q| q.limit = Some(1)), ["c"]);

        assert_eq!(store.find_session("b").unwrap().unwrap().records, 3);
        assert!(store.find_session("zz").unwrap().is_err());

        let mut seen = Vec::new();
        let search = RecordSearch {
            text: Some("items".into()),
            ..Default::default()
        };
        store
            .search_records(&search, &mut |seq, _| seen.push(seq))
            .unwrap();
        assert_eq!(seen, [6, 5], "newest first, statement text only");
        seen.clear();
        let search = RecordSearch {
            text: Some("delete".into()),
            before_seq: Some(6),
            ..Default::default()
        };
        store
            .search_records(&search, &mut |seq, _| seen.push(seq))
            .unwrap();
        assert_eq!(seen, [5], "case-insensitive, paged by seq");
        seen.clear();
        let search = RecordSearch {
            text: Some("orders".into()), // in the body (connection) but not in a statement
            ..Default::default()
        };
        store
            .search_records(&search, &mut |seq, _| seen.push(seq))
            .unwrap();
        assert!(seen.is_empty());

        let days = store.counts_per_day("2026-11-20").unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].records, days[0].requests), (3, 1));
        assert_eq!(
            (days[1].records, days[1].denied, days[1].approvals),
            (4, 1, 1)
        );

        let active = store.active_sessions("2026-11-20").unwrap();
        let ids: Vec<&str> = active.iter().map(|s| s.session_id.as_str()).collect();
        assert_eq!(ids, ["c", "b"], "a ended");
    }
}
