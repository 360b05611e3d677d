//! Sessions as the ledger saw them: one summary per `session_id`.
use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Sessions with activity at or after this time.
    pub since: Option<String>,
    /// Sessions that started before this time.
    pub until: Option<String>,
    pub principal: Option<String>,
    pub connection: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: String,
    pub principal: Option<String>,
    pub connection: Option<String>,
    pub protocol: Option<String>,
    pub client: Option<String>,
    pub purpose: Option<String>,
    pub started_at: String,
    /// Time of `session.end`; `None` while the session is open (or was cut by a crash).
    pub ended_at: Option<String>,
    pub last_activity: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub requests: u64,
    pub denied: u64,
    pub errors: u64,
    /// `approval.requested` records (statements held for a human).
    #[serde(default)]
    pub approvals: u64,
}

/// A row of [`crate::console::SUMMARY_SELECT`] as a summary.
pub(crate) fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionSummary> {
    Ok(SessionSummary {
        session_id: r.get(0)?,
        principal: r.get(1)?,
        connection: r.get(2)?,
        started_at: r.get(3)?,
        last_activity: r.get(4)?,
        first_seq: r.get::<_, i64>(5)? as u64,
        last_seq: r.get::<_, i64>(6)? as u64,
        records: r.get::<_, i64>(7)? as u64,
        requests: r.get::<_, i64>(8)? as u64,
        denied: r.get::<_, i64>(9)? as u64,
        errors: r.get::<_, Option<i64>>(10)?.unwrap_or(0) as u64,
        ended_at: r.get(11)?,
        protocol: r.get(12)?,
        client: r.get(13)?,
        purpose: r.get(14)?,
        approvals: r.get::<_, Option<i64>>(15)?.unwrap_or(0) as u64,
    })
}

impl Store {
    /// Sessions matching `filter`, oldest first.
    pub fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError> {
        let mut having: Vec<String> = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut add = |clause: &str, v: String| {
            args.push(v.into());
            having.push(clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(s) = &filter.since {
            add("MAX(ts) >= ?", crate::sqlite::normalize_ts(s)?);
        }
        if let Some(u) = &filter.until {
            add("MIN(ts) < ?", crate::sqlite::normalize_ts(u)?);
        }
        if let Some(p) = &filter.principal {
            add("SUM(principal = ?) > 0", p.clone());
        }
        if let Some(c) = &filter.connection {
            add("SUM(connection = ?) > 0", c.clone());
        }
        let mut sql = crate::console::summaries("IS NOT NULL");
        if !having.is_empty() {
            sql.push_str(" HAVING ");
            sql.push_str(&having.join(" AND "));
        }
        sql.push_str(" ORDER BY MIN(seq)");
        if let Some(l) = filter.limit {
            args.push(rusqlite::types::Value::Integer(
                i64::try_from(l).unwrap_or(i64::MAX),
            ));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), summary_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
