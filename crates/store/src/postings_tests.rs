//! The index by block (`postings.rs`): after appends, a prune and a schema upgrade it
//! equals what the records say, and every query it drives returns exactly what a full
//! scan of the records returns, over stores of many blocks.
use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use warden_core::{EvidenceRecord, RecordKind};

use crate::console::{RecentSessions, RecordSearch};
use crate::postings::{BLOCK, Col, Scan};
use crate::{Durability, RecordFilter, Signer, Store};

fn open(dir: &Path) -> Store {
    Store::open("sqlite://data/evidence.db", dir, Durability::Process).unwrap()
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join("data/evidence.db")).unwrap()
}

const KINDS: [RecordKind; 6] = [
    RecordKind::SessionStart,
    RecordKind::ActionRequest,
    RecordKind::ActionResponse,
    RecordKind::PolicyDenied,
    RecordKind::ApprovalRequested,
    RecordKind::AuthFailed,
];

/// Record `i`: a deterministic mix of principals, connections, kinds and sessions (some
/// fields absent), stamped at minute `i` from 2026-01-01 (so the store spans days).
fn rec(i: u64) -> EvidenceRecord {
    // A small LCG: runs of the same values, as sessions make, and rare ones.
    let h = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    let kind = if h.is_multiple_of(11) {
        KINDS[(h / 11 % 6) as usize]
    } else {
        KINDS[1 + (i % 2) as usize]
    };
    let mut r = EvidenceRecord::new(kind);
    r.ts = format!(
        "2026-01-{:02}T{:02}:{:02}:00.000000000Z",
        1 + i / 1440,
        i / 60 % 24,
        i % 60
    );
    if !h.is_multiple_of(13) {
        r.session_id = Some(format!("s{:02}", (i / 7 + h % 3) % 23));
    }
    if !h.is_multiple_of(17) {
        r.principal = Some(crate::tests::key_principal(&format!("agent:{}", h % 4)));
    }
    if !h.is_multiple_of(19) {
        r.connection = Some(["orders", "billing", "hr"][(h % 3) as usize].into());
    }
    r
}

async fn fill(store: &Store, from: u64, n: u64) {
    let l = store.ledger();
    for i in from..from + n {
        l.append(rec(i)).await.unwrap();
    }
    l.flush().await.unwrap();
}

/// The postings table as stored, and as the records say it should be.
type PostingMap = BTreeMap<(i64, String, i64), i64>;

fn postings(conn: &Connection) -> (PostingMap, PostingMap) {
    let read = |sql: &str| -> PostingMap {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let stored = read("SELECT col, value, block, n FROM record_postings");
    let mut expected = PostingMap::new();
    for col in Col::ALL {
        let c = col.column();
        expected.extend(read(&format!(
            "SELECT {}, {c}, seq / {BLOCK}, COUNT(*) FROM records WHERE {c} IS NOT NULL \
             GROUP BY {c}, seq / {BLOCK}",
            col as i64
        )));
    }
    (stored, expected)
}

fn assert_postings_match(dir: &Path) {
    let (stored, expected) = postings(&raw(dir));
    assert!(!expected.is_empty());
    assert_eq!(stored, expected);
}

/// Every record's indexed columns, by seq: the oracle the queries are checked against.
struct Row {
    seq: u64,
    ts: String,
    cols: [Option<String>; 4],
}

fn rows(conn: &Connection) -> Vec<Row> {
    let mut stmt = conn
        .prepare(
            "SELECT seq, ts, principal, connection, kind, session_id FROM records ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            seq: r.get::<_, i64>(0)? as u64,
            ts: r.get(1)?,
            cols: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn matches(row: &Row, f: &RecordFilter) -> bool {
    let want = [&f.principal, &f.connection, &f.kind, &f.session_id];
    want.iter()
        .zip(&row.cols)
        .all(|(w, have)| w.as_ref().is_none_or(|w| have.as_ref() == Some(w)))
        && f.since
            .as_ref()
            .is_none_or(|s| row.ts.as_str() >= s.as_str())
        && f.until
            .as_ref()
            .is_none_or(|u| row.ts.as_str() < u.as_str())
}

/// Filters over every column, alone and combined, with and without a time window.
fn filters() -> Vec<RecordFilter> {
    let mut out = vec![RecordFilter::default()];
    for p in ["agent:0", "agent:3", "agent:none"] {
        out.push(RecordFilter {
            principal: Some(p.into()),
            ..Default::default()
        });
    }
    for c in ["orders", "hr"] {
        out.push(RecordFilter {
            connection: Some(c.into()),
            ..Default::default()
        });
    }
    for k in [
        "action.request",
        "policy.denied",
        "approval.requested",
        "session.start",
    ] {
        out.push(RecordFilter {
            kind: Some(k.into()),
            ..Default::default()
        });
        out.push(RecordFilter {
            kind: Some(k.into()),
            principal: Some("agent:1".into()),
            since: Some("2026-01-01T12:00:00.000000000Z".into()),
            ..Default::default()
        });
    }
    for s in ["s00", "s07", "s22"] {
        out.push(RecordFilter {
            session_id: Some(s.into()),
            ..Default::default()
        });
        out.push(RecordFilter {
            session_id: Some(s.into()),
            connection: Some("billing".into()),
            kind: Some("action.response".into()),
            until: Some("2026-01-02T06:00:00.000000000Z".into()),
            ..Default::default()
        });
    }
    out
}

#[tokio::test]
async fn postings_equal_the_records_after_appends_and_a_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Several batches, so blocks are continued across the indexer's transactions.
    fill(&store, 0, 300).await;
    fill(&store, 300, 1).await;
    fill(&store, 301, 500).await;
    assert_postings_match(dir.path());

    // Prune ends mid-block (record 100 of 64-record blocks), and the seal record lands
    // in the head's block.
    let out = dir.path().join("sealed");
    let pruned = store
        .prune(
            "2026-01-01T01:40:00Z",
            &Signer::from_seed(&[7u8; 32]),
            "test",
            &mut |a, b| out.join(format!("sealed-{a}-{b}.json")),
        )
        .unwrap()
        .expect("records older than the cutoff");
    let up_to = pruned.seal.up_to_seq;
    assert_eq!(up_to, 100);
    assert_ne!(up_to % BLOCK as u64, BLOCK as u64 - 1, "ends mid-block");
    assert_postings_match(dir.path());
    let (stored, _) = postings(&raw(dir.path()));
    assert!(
        stored.keys().all(|(_, _, b)| *b >= up_to as i64 / BLOCK),
        "no postings left for pruned blocks"
    );
    fill(&store, 801, 70).await;
    assert_postings_match(dir.path());
}

#[tokio::test]
async fn driven_queries_return_what_a_full_scan_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 3000).await;
    let all = rows(&raw(dir.path()));
    assert_eq!(all.len(), 3000);
    for f in filters() {
        let want: Vec<u64> = all
            .iter()
            .filter(|r| matches(r, &f))
            .map(|r| r.seq)
            .collect();
        let mut got = Vec::new();
        store
            .query_bodies(&f, &mut |seq, _| {
                got.push(seq);
                true
            })
            .unwrap();
        assert_eq!(got, want, "query_bodies {f:?}");

        // Newest first, page by page.
        let mut newest_first = Vec::new();
        let mut before = None;
        loop {
            let search = RecordSearch {
                filter: RecordFilter {
                    limit: Some(97),
                    ..f.clone()
                },
                text: None,
                before_seq: before,
            };
            let next = store
                .search_records(&search, &mut |seq, _| newest_first.push(seq))
                .unwrap();
            match next {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        let mut want_desc = want.clone();
        want_desc.reverse();
        assert_eq!(newest_first, want_desc, "search_records {f:?}");
    }
}

#[tokio::test]
async fn counts_sessions_and_lookups_match_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 3000).await;
    let all = rows(&raw(dir.path()));

    let days = store.counts_per_day("2026-01-01T00:00:00Z").unwrap();
    assert_eq!(days.len(), 3, "3000 minutes span three days");
    for d in &days {
        let on = |kind: &str| {
            all.iter()
                .filter(|r| r.ts.starts_with(&d.day) && r.cols[2].as_deref() == Some(kind))
                .count() as u64
        };
        assert_eq!(
            d.records,
            all.iter().filter(|r| r.ts.starts_with(&d.day)).count() as u64
        );
        assert_eq!(d.requests, on("action.request"), "{}", d.day);
        assert_eq!(d.denied, on("policy.denied"), "{}", d.day);
        assert_eq!(d.approvals, on("approval.requested"), "{}", d.day);
        assert_eq!(d.auth_failed, on("auth.failed"), "{}", d.day);
        assert!(d.requests > 0 && d.denied > 0);
    }
    // A window that starts and ends inside blocks.
    let mid = store.counts_per_day("2026-01-02T00:17:00Z").unwrap();
    let want = all
        .iter()
        .filter(|r| r.ts.as_str() >= "2026-01-02T00:17" && r.ts.starts_with("2026-01-02"))
        .filter(|r| r.cols[2].as_deref() == Some("action.request"))
        .count() as u64;
    assert_eq!(mid[0].requests, want);

    // Sessions with a denial, newest first: the oracle walks session.start records.
    let session_of = |r: &Row| r.cols[3].clone();
    let mut starts: Vec<String> = Vec::new();
    for r in all.iter().rev() {
        if r.cols[2].as_deref() == Some("session.start")
            && let Some(s) = session_of(r)
            && !starts.contains(&s)
            && all.iter().any(|d| {
                session_of(d).as_ref() == Some(&s) && d.cols[2].as_deref() == Some("policy.denied")
            })
        {
            starts.push(s);
        }
    }
    let got: Vec<String> = store
        .recent_sessions(&RecentSessions {
            has_denials: true,
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    // Newest first: by each session's first record, descending.
    let firsts: Vec<u64> = got
        .iter()
        .map(|id| {
            all.iter()
                .find(|r| r.cols[3].as_deref() == Some(id.as_str()))
                .map(|r| r.seq)
                .unwrap()
        })
        .collect();
    assert!(firsts.is_sorted_by(|a, b| a > b), "{got:?} {firsts:?}");
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want_sorted = starts.clone();
    want_sorted.sort();
    assert!(!want_sorted.is_empty());
    assert_eq!(got_sorted, want_sorted);

    let s07 = store.find_session("s07").unwrap().unwrap();
    let want = all.iter().filter(|r| r.cols[3].as_deref() == Some("s07"));
    assert_eq!(s07.records, want.clone().count() as u64);
    assert_eq!(s07.first_seq, want.clone().map(|r| r.seq).min().unwrap());
    assert_eq!(
        store.find_session("s1").unwrap(),
        Err(2),
        "s10..s19: more than one"
    );
    assert_eq!(store.find_session("nope").unwrap(), Err(0));
}

#[tokio::test]
async fn a_driven_scan_never_sorts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 200).await;
    let conn = raw(dir.path());
    for f in filters() {
        for desc in [false, true] {
            let mut scan = Scan::new(&conn, "seq, body", &f).unwrap();
            scan.seq_below(150);
            scan.order_by(desc);
            scan.limit(10);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", scan.sql))
                .unwrap()
                .query_map(rusqlite::params_from_iter(&scan.args), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                "{f:?}: {plan:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_version_4_store_is_indexed_by_block_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, 0, 500).await;
    }
    // Back to what version 4 wrote: per-record indexes, no postings.
    raw(dir.path())
        .execute_batch(
            "DROP TABLE record_postings; \
             CREATE INDEX records_principal ON records(principal); \
             CREATE INDEX records_connection ON records(connection); \
             CREATE INDEX records_kind ON records(kind); \
             CREATE INDEX records_session_id ON records(session_id); \
             PRAGMA user_version = 4;",
        )
        .unwrap();
    // Not while a gateway of the older Warden holds the append log: it would go on
    // indexing without postings.
    let db = dir.path().join("data/evidence.db");
    let gateway = crate::journal::Journal::open_locked(&db, std::time::Duration::ZERO)
        .unwrap()
        .expect("the log is free");
    let refused = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Process)
        .err()
        .expect("refused while the log is held")
        .to_string();
    assert!(refused.contains("stop that gateway"), "{refused}");
    let version: i64 = raw(dir.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4, "nothing changed");
    drop(gateway);

    let store = open(dir.path());
    assert_postings_match(dir.path());
    let conn = raw(dir.path());
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, crate::sqlite::SCHEMA_VERSION);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(indexes, ["records_ts"]);
    let mut n = 0;
    store
        .query_bodies(
            &RecordFilter {
                session_id: Some("s05".into()),
                ..Default::default()
            },
            &mut |_, _| {
                n += 1;
                true
            },
        )
        .unwrap();
    assert_eq!(
        n,
        rows(&conn)
            .iter()
            .filter(|r| r.cols[3].as_deref() == Some("s05"))
            .count()
    );
    assert!(n > 0);
}

#[tokio::test]
async fn session_summaries_are_grouped_without_a_sorter() {
    // A sorter for GROUP BY would hold a copy of every body it aggregates (a long
    // session's, or the whole store's for `warden sessions`).
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 200).await;
    let conn = raw(dir.path());
    for value in ["= ?1", "IN (SELECT ?1)", "IS NOT NULL AND ?1 IS NOT NULL"] {
        let sql = format!(
            "EXPLAIN QUERY PLAN {} ORDER BY MIN(r.seq)",
            crate::console::summaries(value)
        );
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(["s01"], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            !plan.iter().any(|s| s.contains("GROUP BY")),
            "{value}: {plan:?}"
        );
    }
    // And they are what the records say.
    let all = rows(&conn);
    let listed = store.sessions(&crate::SessionFilter::default()).unwrap();
    let mut ids: Vec<&str> = all.iter().filter_map(|r| r.cols[3].as_deref()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(listed.len(), ids.len());
    for s in &listed {
        let mine: Vec<&Row> = all
            .iter()
            .filter(|r| r.cols[3].as_deref() == Some(s.session_id.as_str()))
            .collect();
        assert_eq!(s.records, mine.len() as u64, "{}", s.session_id);
        assert_eq!(s.first_seq, mine[0].seq);
        assert_eq!(s.last_seq, mine[mine.len() - 1].seq);
    }
    let firsts: Vec<u64> = listed.iter().map(|s| s.first_seq).collect();
    assert!(firsts.is_sorted(), "oldest first");
}
