//! Store and ledger tests against real SQLite files.
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use warden_core::{AuthInfo, AuthMethod, EvidenceRecord, KeyRecord, Principal, RecordKind};

use crate::chain::{GENESIS_HASH, record_hash};
use crate::{Durability, RecordFilter, Store, StoreError, StoreOptions};

fn open(dir: &Path) -> Store {
    Store::open("sqlite://data/evidence.db", dir, Durability::Process).unwrap()
}

/// A store at `dir` whose indexer may fall at most 8 records behind, and whose lock
/// waits last 100 ms.
fn open_with_backlog_of_8(dir: &Path, durability: Durability) -> Store {
    let opts = StoreOptions {
        durability,
        busy_timeout: Duration::from_millis(100),
        index_backlog: 8,
        indexer_nice: 0,
    };
    Store::open_with("sqlite://data/evidence.db", dir, opts).unwrap()
}

/// A store at `dir` with one `action.request` written (not waited for): its seq.
fn store_with_one_written(dir: &Path, durability: Durability) -> (Store, u64) {
    let store = Store::open("sqlite://data/evidence.db", dir, durability).unwrap();
    let last = store
        .ledger()
        .submit_written([rec(0, "agent:bot", "orders", RecordKind::ActionRequest)])
        .unwrap()
        .expect("one record placed");
    (store, last)
}

/// A store at `dir` whose ledger has acknowledged one `action.request` (record 0).
async fn store_with_one_request(dir: &Path) -> (Store, crate::Ledger) {
    let store = open(dir);
    let ledger = store.ledger();
    ledger
        .append(rec(0, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    (store, ledger)
}

/// A principal authenticated by a Warden key, without groups or issuer (test records).
pub(crate) fn key_principal(id: &str) -> std::sync::Arc<Principal> {
    std::sync::Arc::new(Principal {
        id: id.into(),
        groups: vec![],
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: None,
            subject: None,
        },
        on_behalf_of: None,
    })
}

fn rec(i: u64, principal: &str, connection: &str, kind: RecordKind) -> EvidenceRecord {
    let mut r = EvidenceRecord::new(kind);
    r.ts = format!("2026-11-27T10:00:{:02}.{:09}Z", i / 1000 % 60, i % 1000);
    r.session_id = Some(format!("s{}", i % 3));
    r.principal = Some(std::sync::Arc::new(Principal {
        id: principal.into(),
        groups: vec!["agents".into()],
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k1".into()),
        },
        on_behalf_of: None,
    }));
    r.connection = Some(connection.into());
    r.detail = Some(format!("record {i}"));
    r
}

async fn fill(store: &Store, n: u64) {
    let ledger = store.ledger();
    for i in 0..n {
        ledger
            .append(rec(i, "agent:bot", "orders", RecordKind::ActionRequest))
            .await
            .unwrap();
    }
    // Visible to other handles (the CLI's) once indexed.
    ledger.flush().await.unwrap();
}

fn all(store: &Store) -> Vec<EvidenceRecord> {
    let mut out = Vec::new();
    store
        .query(&RecordFilter::default(), &mut |r| {
            out.push(r);
            true
        })
        .unwrap();
    out
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join("data/evidence.db")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_contiguous_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let ledger = store.ledger();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..125u64 {
                let a = ledger
                    .append(rec(
                        t * 1000 + i,
                        &format!("agent:a{t}"),
                        "orders",
                        RecordKind::ActionRequest,
                    ))
                    .await
                    .unwrap();
                seqs.push(a.seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        let s = t.await.unwrap();
        // Each task's own appends come back in increasing order.
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        seqs.extend(s);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());

    let mut calls = Vec::new();
    let report = store
        .verify(&mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 1000);
    assert_eq!(report.head_seq, 1000);
    assert_eq!(calls.last(), Some(&(1000, 1000)));
    assert_eq!(store.head().unwrap(), (1000, report.head_hash.clone()));

    let records = all(&store);
    assert_eq!(records.len(), 1000);
    let mut prev = GENESIS_HASH.to_string();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.hash, record_hash(r));
        prev = r.hash.clone();
    }
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, 5).await;
        store.ledger().flush().await.unwrap();
    }
    let store = open(dir.path());
    let (seq, hash) = store.head().unwrap();
    assert_eq!(seq, 5);
    let a = store
        .ledger()
        .append(rec(99, "agent:bot", "orders", RecordKind::SessionEnd))
        .await
        .unwrap();
    assert_eq!(a.seq, 6);
    let last = all(&store).pop().unwrap();
    assert_eq!(last.prev_hash, hash);
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!((report.records, report.head_seq), (6, 6));
}

#[tokio::test]
async fn background_appends_keep_order_and_flush_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ledger = store.ledger();
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = rec(i, "agent:bot", "orders", RecordKind::ActionResponse);
        ids.push(r.id.clone());
        ledger.append_background(r);
    }
    let a = ledger
        .append(rec(50, "agent:bot", "orders", RecordKind::SessionEnd))
        .await
        .unwrap();
    assert_eq!(a.seq, 51);
    for i in 51..60 {
        let r = rec(i, "agent:bot", "orders", RecordKind::ActionResponse);
        ids.push(r.id.clone());
        ledger.append_background(r);
    }
    ledger.flush().await.unwrap();
    let got: Vec<String> = all(&store)
        .into_iter()
        .filter(|r| r.kind == RecordKind::ActionResponse)
        .map(|r| r.id)
        .collect();
    assert_eq!(got, ids);
    assert_eq!(ledger.background_failures(), 0);
    assert_eq!(store.verify(&mut |_, _| {}).unwrap().records, 60);
}

#[tokio::test]
async fn duplicate_id_is_rejected_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ledger = store.ledger();
    let first = rec(1, "agent:bot", "orders", RecordKind::ActionRequest);
    let dup = first.clone();
    ledger.append(first).await.unwrap();
    let err = ledger.append(dup).await.unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    let a = ledger
        .append(rec(2, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    assert_eq!(a.seq, 2);
    assert_eq!(store.verify(&mut |_, _| {}).unwrap().problem, None);
}

/// What a PostgreSQL session does with a batch of request records: write, then wait.
async fn commit(
    ledger: &crate::Ledger,
    recs: Vec<EvidenceRecord>,
) -> Result<(), crate::LedgerError> {
    if let Some(last) = ledger.submit_written(recs)? {
        ledger.synced(last).await?;
    }
    Ok(())
}

#[tokio::test]
async fn submit_written_places_in_order_and_stops_at_the_first_refused_record() {
    for durability in [Durability::Process, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://data/evidence.db", dir.path(), durability).unwrap();
        let ledger = store.ledger();
        let batch: Vec<_> = (0..5)
            .map(|i| rec(i, "agent:bot", "orders", RecordKind::ActionRequest))
            .collect();
        let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        commit(&ledger, batch).await.unwrap();
        // An empty batch is durable at once.
        commit(&ledger, Vec::new()).await.unwrap();

        // The third record repeats an id: the first two are placed, the rest are not,
        // and the caller is told the batch failed.
        let a = rec(10, "agent:bot", "orders", RecordKind::ActionRequest);
        let b = rec(11, "agent:bot", "orders", RecordKind::ActionRequest);
        let mut dup = rec(12, "agent:bot", "orders", RecordKind::ActionRequest);
        dup.id = ids[1].clone();
        let after = rec(13, "agent:bot", "orders", RecordKind::ActionRequest);
        let (a_id, b_id, after_id) = (a.id.clone(), b.id.clone(), after.id.clone());
        let err = commit(&ledger, vec![a, b, dup, after]).await.unwrap_err();
        assert!(
            err.to_string().contains("rejected"),
            "{durability:?}: {err}"
        );

        ledger.flush().await.unwrap();
        let got: Vec<String> = all(&store).into_iter().map(|r| r.id).collect();
        let mut want = ids.clone();
        want.extend([a_id, b_id]);
        assert_eq!(got, want, "{durability:?}");
        assert!(!got.contains(&after_id));
        let report = store.verify(&mut |_, _| {}).unwrap();
        assert_eq!(
            (report.records, report.problem),
            (7, None),
            "{durability:?}"
        );
    }
}

#[tokio::test]
async fn a_batch_whose_log_write_failed_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, ledger) = store_with_one_request(dir.path()).await;
    // A background record waits in memory; the batch's write carries it too and fails.
    ledger.append_background(rec(1, "agent:bot", "orders", RecordKind::ActionResponse));
    ledger.fail_next_writes(1);
    let batch: Vec<_> = (2..5)
        .map(|i| rec(i, "agent:bot", "orders", RecordKind::ActionRequest))
        .collect();
    let err = commit(&ledger, batch).await.unwrap_err();
    assert!(err.to_string().contains("injected by a test"), "{err}");
    // A single record whose own write failed is refused the same way.
    ledger.fail_next_writes(1);
    let err = ledger
        .append(rec(5, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected by a test"), "{err}");
    // The log works again: the next batch is acknowledged.
    let batch: Vec<_> = (6..8)
        .map(|i| rec(i, "agent:bot", "orders", RecordKind::ActionRequest))
        .collect();
    commit(&ledger, batch).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_appends_from_many_sessions_each_wait_for_a_sync_after_their_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
    let ledger = store.ledger();
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    // A background record (a response) rides on the next awaited one.
                    ledger.append_background(rec(
                        t * 100 + i,
                        "agent:bot",
                        "orders",
                        RecordKind::ActionResponse,
                    ));
                    let before = ledger.syncs(false);
                    ledger
                        .append(rec(
                            t * 100 + 50 + i,
                            "agent:bot",
                            "orders",
                            RecordKind::ActionRequest,
                        ))
                        .await
                        .unwrap();
                    // Acknowledged only once a sync that ran after the write completed.
                    assert!(ledger.syncs(false) > before);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let syncs = ledger.syncs(false);
    assert!(
        (1..=320).contains(&syncs),
        "{syncs} syncs for 320 awaited appends"
    );
    ledger.flush().await.unwrap();
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!((report.records, report.problem), (640, None));
}

#[tokio::test]
async fn one_fsync_covers_every_record_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
    let ledger = store.ledger();
    // Ten sessions' records placed, none awaited yet: nothing is written or synced.
    let before = ledger.syncs(false);
    let pending: Vec<_> = (0..10)
        .map(|i| ledger.submit(rec(i, "agent:bot", "orders", RecordKind::ActionRequest)))
        .collect();
    assert_eq!(ledger.syncs(false), before);
    // The first one awaited writes all ten lines and leads one sync; it covers the others.
    let mut pending = pending.into_iter();
    pending.next().unwrap().await.unwrap();
    assert_eq!(ledger.syncs(false), before + 1);
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(ledger.syncs(false), before + 1, "one sync for ten records");
    // A record written after that sync waits for a new one.
    ledger
        .append(rec(10, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    assert_eq!(ledger.syncs(false), before + 2);
}

#[tokio::test]
async fn a_failed_sync_refuses_that_append_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
    let ledger = store.ledger();
    ledger
        .append(rec(0, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    ledger.syncs(true);
    let err = ledger
        .append(rec(1, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected by a test"), "{err}");
    // What reached the disk is unknown now: nothing more is acknowledged.
    let err = ledger
        .append(rec(2, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot sync"), "{err}");
}

#[tokio::test]
async fn written_now_synced_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
    let ledger = store.ledger();
    let log = dir.path().join("data/evidence.db.appendlog");
    let before = ledger.syncs(false);
    let batch: Vec<_> = (0..3)
        .map(|i| rec(i, "agent:bot", "orders", RecordKind::ActionRequest))
        .collect();
    let last = ledger
        .submit_written(batch)
        .unwrap()
        .expect("three records placed");
    // In the log when the call returns (a crash of the process no longer loses them), not
    // yet synced.
    let text = std::fs::read(&log).unwrap();
    let lines = text
        .split(|&b| b == b'\n')
        .filter(|l| l.first().is_some_and(|&b| b != 0));
    assert_eq!(lines.count(), 3);
    assert_eq!(ledger.syncs(false), before);
    ledger.synced(last).await.unwrap();
    assert_eq!(ledger.syncs(false), before + 1);
    // Synced already: no second sync.
    ledger.synced(last).await.unwrap();
    assert_eq!(ledger.syncs(false), before + 1);
    assert_eq!(ledger.submit_written(Vec::new()).unwrap(), None);
    // A failed sync is reported to whoever waits for it, and refuses what follows.
    let last = ledger
        .submit_written([rec(3, "agent:bot", "orders", RecordKind::ActionRequest)])
        .unwrap()
        .unwrap();
    ledger.syncs(true);
    let err = ledger.synced(last).await.unwrap_err();
    assert!(err.to_string().contains("injected by a test"), "{err}");
    let err =
        match ledger.submit_written([rec(4, "agent:bot", "orders", RecordKind::ActionRequest)]) {
            Err(e) => e,
            Ok(l) => ledger.synced(l.unwrap()).await.unwrap_err(),
        };
    assert!(err.to_string().contains("cannot sync"), "{err}");
}

/// The sync runs on the ledger's own thread: a task waiting for a slow sync holds up no
/// other task, even on a current-thread runtime (where the worker *is* the only thread).
#[tokio::test(flavor = "current_thread")]
async fn a_slow_sync_blocks_no_other_task() {
    let dir = tempfile::tempdir().unwrap();
    let (store, last) = store_with_one_written(dir.path(), Durability::Fsync);
    let ledger = store.ledger();
    // Debug builds: while this file exists every sync takes 800 ms, then fails.
    std::fs::write(dir.path().join("data/evidence.db.appendlog.fail-sync"), b"").unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let _ = tx.send(());
    });
    let synced = ledger.synced(last);
    tokio::pin!(synced);
    // Polled first: a sync run inside this poll would block the thread until it failed.
    tokio::select! {
        biased;
        r = &mut synced => panic!("the sync finished first: {:?}", r.err()),
        _ = rx => {}
    }
    let err = synced.await.unwrap_err();
    assert!(err.to_string().contains("injected by a test"), "{err}");
}

/// Waiting for a sync after the ledger stopped is answered (refused), never left hanging.
#[tokio::test]
async fn a_sync_awaited_after_the_ledger_stopped_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, last) = store_with_one_written(dir.path(), Durability::Fsync);
    let ledger = store.ledger();
    let synced = ledger.synced(last);
    drop(ledger);
    drop(store);
    // The bound only turns a hang into a failure.
    let err = tokio::time::timeout(std::time::Duration::from_secs(60), synced)
        .await
        .expect("left waiting after the ledger stopped")
        .unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
}

#[tokio::test]
async fn process_durability_has_nothing_to_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, last) = store_with_one_written(dir.path(), Durability::Process);
    let ledger = store.ledger();
    assert!(!ledger.needs_sync());
    ledger.synced(last).await.unwrap();
    ledger.flush().await.unwrap();
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!((report.records, report.problem), (1, None));
}

async fn tampered(n: u64, sql: &str) -> (u64, String) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, n).await;
        assert_eq!(store.verify(&mut |_, _| {}).unwrap().problem, None);
    }
    raw(dir.path()).execute_batch(sql).unwrap();
    let store = open(dir.path());
    let report = store.verify(&mut |_, _| {}).unwrap();
    let p = report.problem.expect("tampering must be detected");
    (p.seq, p.what)
}

#[tokio::test]
async fn verify_detects_an_edited_body() {
    let (seq, what) = tampered(
        10,
        "UPDATE records SET body = json_set(body, '$.detail', 'nothing to see') WHERE seq = 4",
    )
    .await;
    assert_eq!(seq, 4);
    assert_eq!(
        what,
        "record 4 was altered: hash does not match its content"
    );
}

#[tokio::test]
async fn verify_detects_an_added_body_field() {
    let (seq, what) = tampered(
        10,
        "UPDATE records SET body = json_set(body, '$.extra', 1) WHERE seq = 3",
    )
    .await;
    assert_eq!(
        (seq, what.as_str()),
        (3, "record 3 was altered: hash does not match its content")
    );
}

#[tokio::test]
async fn verify_detects_a_deleted_row() {
    let (seq, what) = tampered(10, "DELETE FROM records WHERE seq = 5").await;
    assert_eq!(seq, 6);
    assert_eq!(what, "missing record(s) before seq 6");
}

#[tokio::test]
async fn verify_detects_a_deleted_first_row() {
    let (seq, what) = tampered(3, "DELETE FROM records WHERE seq = 1").await;
    assert_eq!((seq, what.as_str()), (2, "missing record(s) before seq 2"));
}

#[tokio::test]
async fn verify_detects_swapped_rows() {
    let (seq, what) = tampered(
        10,
        "UPDATE records SET seq = -1 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = 6; \
         UPDATE records SET seq = 6 WHERE seq = -1;",
    )
    .await;
    assert_eq!(seq, 5);
    assert!(what.contains("reordered"), "{what}");
}

#[tokio::test]
async fn verify_detects_a_changed_hash() {
    let (seq, what) = tampered(
        10,
        &format!(
            "UPDATE records SET hash = '{}' WHERE seq = 7",
            "ab".repeat(32)
        ),
    )
    .await;
    assert_eq!(
        (seq, what.as_str()),
        (7, "record 7 was altered: hash does not match its content")
    );
}

#[tokio::test]
async fn verify_detects_a_rehashed_record_as_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, 10).await;
    }
    // Rewrite record 4 consistently with itself: only the chain gives it away.
    let conn = raw(dir.path());
    let body: String = conn
        .query_row("SELECT body FROM records WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    let mut r: EvidenceRecord = serde_json::from_str(&body).unwrap();
    r.detail = Some("forged".into());
    r.hash = record_hash(&r);
    conn.execute(
        "UPDATE records SET body = ?1, hash = ?2 WHERE seq = 4",
        rusqlite::params![serde_json::to_string(&r).unwrap(), r.hash],
    )
    .unwrap();
    drop(conn);
    let report = open(dir.path()).verify(&mut |_, _| {}).unwrap();
    let p = report.problem.unwrap();
    assert_eq!(p.seq, 5);
    assert!(p.what.starts_with("chain broken at 5"), "{}", p.what);
    assert_eq!((report.records, report.head_seq), (4, 4));
}

#[tokio::test]
async fn verify_detects_an_edited_index_column() {
    let (seq, what) = tampered(
        10,
        "UPDATE records SET principal = 'agent:someone-else' WHERE seq = 2",
    )
    .await;
    assert_eq!(seq, 2);
    assert!(what.contains("column `principal`"), "{what}");
}

#[tokio::test]
async fn empty_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let report = open(dir.path()).verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(
        (report.records, report.head_seq, report.head_hash.as_str()),
        (0, 0, GENESIS_HASH)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_delays_indexing_and_a_long_backlog_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_backlog_of_8(dir.path(), Durability::Fsync);
    let ledger = store.ledger();
    ledger
        .append(rec(0, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    ledger.flush().await.unwrap();

    let blocker = raw(dir.path());
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // Durable in the append log (and synced): acknowledged although SQLite is locked.
    for i in 1..=8 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            ledger.append(rec(i, "agent:bot", "orders", RecordKind::ActionRequest)),
        )
        .await
        .expect("append must not hang");
        r.unwrap();
    }
    // The index is 8 behind: the next append is refused (fail closed), awaited or not.
    let err = ledger
        .append(rec(9, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("records behind"), "{err}");
    ledger.append_background(rec(10, "agent:bot", "orders", RecordKind::ActionResponse));
    assert_eq!(ledger.background_failures(), 1);
    let err = ledger.flush().await.unwrap_err();
    assert!(err.to_string().contains("not yet indexed"), "{err}");
    blocker.execute_batch("COMMIT").unwrap();

    // Everything acknowledged gets indexed once the lock is gone; the chain is whole.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ledger.queued() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "indexer did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = ledger
        .append(rec(11, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    assert_eq!(a.seq, 10);
    // The flush reports the background record lost earlier, once.
    assert!(ledger.flush().await.is_err());
    ledger.flush().await.unwrap();
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_paces_while_the_indexer_is_far_behind_even_without_syncs() {
    // Under `process` there is no sync to wait for, but a session committing its requests
    // (write, then `synced`) must still be held back while the index is more than half its
    // backlog behind — the PostgreSQL path once lost that when the wait was split off.
    use std::future::Future;
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_backlog_of_8(dir.path(), Durability::Process);
    let ledger = store.ledger();
    commit(
        &ledger,
        vec![rec(0, "agent:bot", "orders", RecordKind::ActionRequest)],
    )
    .await
    .unwrap();
    ledger.flush().await.unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let ready_at_once = |last: u64, cx: &mut std::task::Context<'_>| {
        let mut fut = std::pin::pin!(ledger.synced(last));
        fut.as_mut().poll(cx).is_ready()
    };

    let blocker = raw(dir.path());
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let batch: Vec<_> = (1..=6)
        .map(|i| rec(i, "agent:bot", "orders", RecordKind::ActionRequest))
        .collect();
    let last = ledger.submit_written(batch).unwrap().unwrap();
    assert!(ledger.queued() > 4, "{} queued", ledger.queued());
    assert!(
        !ready_at_once(last, &mut cx),
        "not paced while the index is 6 of 8 behind"
    );
    blocker.execute_batch("COMMIT").unwrap();
    ledger.flush().await.unwrap();
    assert!(ready_at_once(last, &mut cx), "paced with nothing behind");
}

#[tokio::test]
async fn a_zero_filled_fsync_log_is_recovered_up_to_its_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/evidence.db");
    let log = crate::journal::path_for(&db);
    let n = {
        let store =
            Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
        let ledger = store.ledger();
        ledger.stall_indexer();
        // Past one zero-filled stretch into the next.
        let mut n = 0;
        while std::fs::metadata(&log).unwrap().len() <= crate::journal::PREALLOC {
            ledger
                .append(rec(n, "agent:bot", "orders", RecordKind::ActionRequest))
                .await
                .unwrap();
            n += 1;
        }
        let bytes = std::fs::read(&log).unwrap();
        assert_eq!(bytes.len() as u64 % crate::journal::PREALLOC, 0);
        let end = bytes.iter().position(|&b| b == 0).unwrap();
        assert!(
            bytes[end..].iter().all(|&b| b == 0),
            "zeros only after the lines"
        );
        assert_eq!(bytes[end - 1], b'\n');
        assert_eq!(
            bytes[..end].iter().filter(|&&b| b == b'\n').count() as u64,
            n
        );
        // A reader in another process finds the last line behind the zeros.
        assert_eq!(crate::journal::last_seq(&db), Some(n));
        n
    };
    // A reader opening the store after the crash indexes every line and empties the log.
    let store = open(dir.path());
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!((report.records, report.problem), (n, None));
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    drop(store);
    let store = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
    let a = store
        .ledger()
        .append(rec(n, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    assert_eq!(a.seq, n + 1);
}

#[tokio::test]
async fn acknowledged_records_survive_a_crash_before_indexing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, 3).await;
        store.ledger().flush().await.unwrap();
        let ledger = store.ledger();
        ledger.stall_indexer();
        // Background records reach the log with the next awaited one (the last is awaited).
        for i in 3..8 {
            let r = rec(i, "agent:bot", "orders", RecordKind::ActionRequest);
            if i % 2 == 0 {
                ledger.append_background(r);
            } else {
                ledger.append(r).await.unwrap();
            }
        }
        assert_eq!(store.verify(&mut |_, _| {}).unwrap().records, 3);
    }
    // A reader (the CLI) opening the store indexes what the log holds.
    let store = open(dir.path());
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 8);
    // And the chain goes on from there.
    let a = store
        .ledger()
        .append(rec(8, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    assert_eq!(a.seq, 9);
}

/// The nice value in a `/proc/.../stat` line (field 19; the command before it is in
/// parentheses and may hold spaces).
#[cfg(target_os = "linux")]
fn nice_in_stat(stat: &str) -> Option<i32> {
    stat[stat.rfind(')')? + 2..]
        .split(' ')
        .nth(16)?
        .parse()
        .ok()
}

/// The nice values of this process's threads named `name` (tests running in parallel
/// have indexers of their own).
#[cfg(target_os = "linux")]
fn thread_nices(name: &str) -> Vec<i32> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| nice_in_stat(&std::fs::read_to_string(t.path().join("stat")).ok()?))
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_indexer_runs_at_the_configured_nice_value_and_still_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        indexer_nice: 7,
        ..StoreOptions::default()
    };
    let store = Store::open_with("sqlite://data/evidence.db", dir.path(), opts).unwrap();
    let ledger = store.ledger();
    let a = ledger
        .append(rec(0, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    ledger.flush().await.unwrap();
    // No other test asks for 7: if one indexer runs at 7, it is this store's.
    let nices = thread_nices("warden-indexer");
    assert!(nices.contains(&7), "{nices:?}");
    assert_eq!(all(&store).len(), 1);
    assert_eq!(a.seq, 1);
    // Only the indexer: the thread that appended keeps the process's priority.
    let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    assert_eq!(nice_in_stat(&own), Some(0));
}

#[tokio::test]
async fn a_second_ledger_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    first.ledger().status().unwrap();
    let opts = StoreOptions {
        busy_timeout: Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let second = Store::open_with("sqlite://data/evidence.db", dir.path(), opts).unwrap();
    let err = second.ledger().status().unwrap_err();
    assert!(err.to_string().contains("another Warden process"), "{err}");
    assert!(
        second
            .ledger()
            .append(rec(0, "agent:bot", "orders", RecordKind::ActionRequest))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn append_fails_promptly_when_the_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ledger) = store_with_one_request(dir.path()).await;
    ledger.flush().await.unwrap();
    ledger.crash_writer();
    // Whatever was acknowledged before the crash is in the append log; once the indexer
    // is known dead, nothing more is acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ledger.status().is_ok() {
        assert!(std::time::Instant::now() < deadline, "crash not noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 1..4 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            ledger.append(rec(i, "agent:bot", "orders", RecordKind::ActionRequest)),
        )
        .await
        .expect("append must not hang");
        assert!(r.is_err());
    }
    assert!(ledger.flush().await.is_err());
    ledger.append_background(rec(9, "agent:bot", "orders", RecordKind::ActionResponse));
    assert!(ledger.background_failures() >= 1);
    assert_eq!(store.verify(&mut |_, _| {}).unwrap().records, 1);
}

#[tokio::test]
async fn query_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ledger = store.ledger();
    for i in 0..30u64 {
        let principal = if i % 2 == 0 {
            "agent:even"
        } else {
            "agent:odd"
        };
        let connection = if i % 3 == 0 { "billing" } else { "orders" };
        let kind = if i % 5 == 0 {
            RecordKind::SessionStart
        } else {
            RecordKind::ActionRequest
        };
        let mut r = rec(i, principal, connection, kind);
        r.ts = format!("2026-11-27T10:00:{i:02}.000000000Z");
        ledger.append(r).await.unwrap();
    }
    let count = |f: RecordFilter| {
        let mut seqs = Vec::new();
        let n = store
            .query(&f, &mut |r| {
                seqs.push(r.seq);
                true
            })
            .unwrap();
        assert_eq!(n as usize, seqs.len());
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        seqs
    };
    assert_eq!(count(RecordFilter::default()).len(), 30);
    assert_eq!(
        count(RecordFilter {
            principal: Some("agent:even".into()),
            ..Default::default()
        })
        .len(),
        15
    );
    assert_eq!(
        count(RecordFilter {
            connection: Some("billing".into()),
            ..Default::default()
        })
        .len(),
        10
    );
    assert_eq!(
        count(RecordFilter {
            kind: Some("session.start".into()),
            ..Default::default()
        }),
        vec![1, 6, 11, 16, 21, 26]
    );
    assert_eq!(
        count(RecordFilter {
            session_id: Some("s0".into()),
            ..Default::default()
        })
        .len(),
        10
    );
    // Bounds in other RFC 3339 spellings are normalized: since inclusive, until exclusive.
    let seqs = count(RecordFilter {
        since: Some("2026-11-27T11:00:10+01:00".into()),
        until: Some("2026-11-27T10:00:20Z".into()),
        ..Default::default()
    });
    assert_eq!(seqs, (11..=20).collect::<Vec<u64>>());
    let seqs = count(RecordFilter {
        since: Some("2026-11-27T10:00:10.5Z".into()),
        ..Default::default()
    });
    assert_eq!(seqs.first(), Some(&12));
    assert_eq!(
        count(RecordFilter {
            principal: Some("agent:odd".into()),
            limit: Some(3),
            ..Default::default()
        }),
        vec![2, 4, 6]
    );
    // Early stop.
    let mut seen = 0;
    let n = store
        .query(&RecordFilter::default(), &mut |_| {
            seen += 1;
            seen < 4
        })
        .unwrap();
    assert_eq!((n, seen), (4, 4));
    assert!(
        store
            .query(
                &RecordFilter {
                    since: Some("yesterday-ish".into()),
                    ..Default::default()
                },
                &mut |_| true
            )
            .is_err()
    );
}

fn key(id: &str, principal: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        principal: principal.into(),
        groups: vec!["agents".into(), "readers".into()],
        created_at: "2026-11-27T10:00:00.000000000Z".into(),
        expires_at: Some("2027-01-01T00:00:00Z".into()),
        revoked_at: None,
        secret_hash: [1; 32],
        scram_salt: vec![9, 8, 7],
        scram_iterations: 4096,
        scram_stored_key: [2; 32],
        scram_server_key: [3; 32],
    }
}

#[test]
fn keys_round_trip_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let k1 = key("k1", "agent:bot");
    let k2 = key("k2", "agent:bot");
    let k3 = key("k3", "user:alice");
    for k in [&k1, &k2, &k3] {
        store.insert_key(k).unwrap();
    }
    assert!(store.insert_key(&k1).is_err(), "duplicate id");
    assert_eq!(store.key_by_id("k1").unwrap(), Some(k1.clone()));
    assert_eq!(store.key_by_id("nope").unwrap(), None);
    assert_eq!(
        store.keys_for_principal("agent:bot").unwrap(),
        vec![k1.clone(), k2.clone()]
    );
    assert_eq!(store.list_keys().unwrap().len(), 3);
    assert!(store.revoke_key("k1", "2026-11-28T00:00:00Z").unwrap());
    assert!(
        !store.revoke_key("k1", "2026-11-29T00:00:00Z").unwrap(),
        "already revoked"
    );
    assert!(!store.revoke_key("nope", "2026-11-29T00:00:00Z").unwrap());
    let revoked = store.key_by_id("k1").unwrap().unwrap();
    assert_eq!(revoked.revoked_at.as_deref(), Some("2026-11-28T00:00:00Z"));
    // Revoked keys are still listed for their principal.
    assert_eq!(store.keys_for_principal("agent:bot").unwrap().len(), 2);
    drop(store);
    assert_eq!(open(dir.path()).key_by_id("k3").unwrap(), Some(k3));
}

#[test]
fn urls_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open("postgres://x/y", dir.path(), Durability::Process),
        Err(StoreError::Url(_))
    ));
    assert!(matches!(
        Store::open("sqlite://", dir.path(), Durability::Process),
        Err(StoreError::Url(_))
    ));
    let store = Store::open("sqlite://./a/b/ev.db", dir.path(), Durability::Fsync).unwrap();
    assert_eq!(store.path(), dir.path().join("./a/b/ev.db"));
    assert!(dir.path().join("a/b/ev.db").is_file());
    let abs = dir.path().join("abs.db");
    let store2 = Store::open(
        &format!("sqlite://{}", abs.display()),
        Path::new("/nonexistent"),
        Durability::Process,
    )
    .unwrap();
    assert_eq!(store2.path(), abs);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a/b/ev.db")), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    raw(dir.path())
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Process)
        .err()
        .unwrap();
    assert!(err.to_string().contains("schema version is 99"), "{err}");
}

#[tokio::test]
async fn a_version_3_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 4).await;
    drop(store);
    raw(dir.path())
        .execute_batch("DROP TABLE merkle_frontier; PRAGMA user_version = 3")
        .unwrap();
    let store = open(dir.path());
    let version: i64 = raw(dir.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, crate::sqlite::SCHEMA_VERSION);
    let cp = store
        .checkpoint(&crate::Signer::from_seed(&[3u8; 32]))
        .unwrap()
        .unwrap();
    assert_eq!(cp.tree_size, 4);
    let stored: i64 = raw(dir.path())
        .query_row("SELECT tree_size FROM merkle_frontier", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 4);
}

#[tokio::test]
async fn the_cli_and_the_gateway_share_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(dir.path());
    fill(&gateway, 3).await;
    let cli = open(dir.path());
    cli.insert_key(&key("k1", "agent:bot")).unwrap();
    assert_eq!(cli.verify(&mut |_, _| {}).unwrap().records, 3);
    fill(&gateway, 2).await;
    assert_eq!(all(&cli).len(), 5);
    assert!(gateway.key_by_id("k1").unwrap().is_some());
}

#[tokio::test]
async fn timestamps_are_normalized_and_missing_ids_filled() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ledger = store.ledger();
    let mut r = rec(0, "agent:bot", "orders", RecordKind::ActionRequest);
    r.ts = "2026-11-27T11:00:00.5+01:00".into();
    r.id = String::new();
    ledger.append(r).await.unwrap();
    let mut r = rec(1, "agent:bot", "orders", RecordKind::ActionRequest);
    r.ts = String::new();
    ledger.append(r).await.unwrap();
    let got = all(&store);
    assert_eq!(got[0].ts, "2026-11-27T10:00:00.500000000Z");
    assert!(!got[0].id.is_empty());
    assert_eq!(got[1].ts.len(), "2026-11-27T10:00:00.000000000Z".len());
    assert_eq!(store.verify(&mut |_, _| {}).unwrap().problem, None);
}

#[tokio::test]
async fn callbacks_may_use_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.insert_key(&key("k1", "agent:bot")).unwrap();
    fill(&store, 3).await;
    let mut found = 0;
    store
        .query(&RecordFilter::default(), &mut |_| {
            found += usize::from(store.key_by_id("k1").unwrap().is_some());
            true
        })
        .unwrap();
    assert_eq!(found, 3);
}

#[tokio::test]
async fn fsync_flush_of_background_records_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://data/evidence.db", dir.path(), Durability::Fsync).unwrap();
    let ledger = store.ledger();
    for i in 0..3 {
        ledger.append_background(rec(i, "agent:bot", "orders", RecordKind::ActionResponse));
    }
    tokio::time::timeout(Duration::from_secs(10), ledger.flush())
        .await
        .expect("flush must not hang")
        .unwrap();
    let a = ledger
        .append(rec(3, "agent:bot", "orders", RecordKind::ActionRequest))
        .await
        .unwrap();
    assert_eq!(a.seq, 4);
    ledger.flush().await.unwrap();
    assert_eq!(store.verify(&mut |_, _| {}).unwrap().records, 4);
}
