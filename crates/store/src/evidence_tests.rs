//! Checkpoints, full verification (each tamper case named), bundles, sessions.
use std::path::Path;

use rusqlite::Connection;
use warden_core::{ActionInfo, AuthInfo, AuthMethod, EvidenceRecord, Principal, RecordKind};

use crate::bundle::{bundle_bytes, verify_bundle};
use crate::chain::record_hash;
use crate::{Durability, ExportFilter, ProblemKind, PublicKey, SessionFilter, Signer, Store};

fn open(dir: &Path) -> Store {
    Store::open("sqlite://data/evidence.db", dir, Durability::Process).unwrap()
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join("data/evidence.db")).unwrap()
}

fn signer() -> Signer {
    Signer::from_seed(&[7u8; 32])
}

fn rec(i: u64) -> EvidenceRecord {
    let kind = if i.is_multiple_of(2) {
        RecordKind::ActionRequest
    } else {
        RecordKind::ActionResponse
    };
    let mut r = EvidenceRecord::new(kind);
    r.ts = format!("2026-11-27T10:{:02}:{:02}.000000000Z", i / 60 % 60, i % 60);
    r.session_id = Some(format!("s{}", i % 3));
    let who = if i.is_multiple_of(3) {
        "agent:x"
    } else {
        "agent:y"
    };
    r.principal = Some(std::sync::Arc::new(Principal {
        id: who.into(),
        groups: vec!["agents".into()],
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: None,
            subject: None,
        },
        on_behalf_of: None,
    }));
    r.connection = Some("orders".into());
    r.action = Some(ActionInfo {
        kind: "sql".into(),
        text: format!("select {i} from items"),
        ..Default::default()
    });
    r
}

async fn fill(store: &Store, from: u64, n: u64) {
    let l = store.ledger();
    for i in from..from + n {
        l.append(rec(i)).await.unwrap();
    }
    // Visible to other handles (the CLI's) once indexed.
    l.flush().await.unwrap();
}

/// A store with 20 records and checkpoints at 10 and 20.
async fn setup(dir: &Path) {
    let store = open(dir);
    fill(&store, 0, 10).await;
    let c1 = store.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(c1.tree_size, 10);
    assert!(
        store.checkpoint(&signer()).unwrap().is_none(),
        "nothing new"
    );
    fill(&store, 10, 10).await;
    let c2 = store.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(c2.tree_size, 20);
    let r = store
        .verify_evidence(&[signer().public().clone()], &mut |_, _| {})
        .unwrap();
    assert_eq!(r.problem, None);
    assert_eq!(
        (r.records, r.checkpoints_verified, r.unsigned_tail),
        (20, 2, 0)
    );
}

async fn tamper(sql: &str) -> crate::EvidenceProblem {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path()).await;
    raw(dir.path()).execute_batch(sql).unwrap();
    let store = open(dir.path());
    let r = store
        .verify_evidence(&[signer().public().clone()], &mut |_, _| {})
        .unwrap();
    r.problem.expect("tampering must be detected")
}

#[tokio::test]
async fn checkpoint_root_matches_merkle_module_and_signature_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 7).await;
    let cp = store.checkpoint(&signer()).unwrap().unwrap();
    let leaves = store.leaves(7).unwrap();
    assert_eq!(cp.root, hex::encode(crate::merkle::root(&leaves)));
    assert_eq!(cp.head_hash, store.head().unwrap().1);
    cp.check_signature(signer().public()).unwrap();
    assert!(
        cp.signed_text()
            .starts_with(&format!("warden-checkpoint/v1\n7\n{}\n", cp.root))
    );
    // A reopened store (no cache) computes the same next checkpoint as a warm one.
    fill(&store, 7, 5).await;
    let warm = store.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(
        warm.root,
        hex::encode(crate::merkle::root(&store.leaves(12).unwrap()))
    );
    assert_eq!(store.checkpoints().unwrap().len(), 2);
    assert_eq!(store.latest_checkpoint().unwrap().unwrap().tree_size, 12);
}

#[tokio::test]
async fn edited_field_is_named() {
    let p = tamper(
        "UPDATE records SET body = json_set(body, '$.action.text', 'select 1') WHERE seq = 4",
    )
    .await;
    assert_eq!((p.seq, p.kind), (4, ProblemKind::Edited), "{p:?}");
    assert!(p.what.contains("altered"), "{}", p.what);
}

#[tokio::test]
async fn deleted_record_is_named() {
    let p = tamper("DELETE FROM records WHERE seq = 5").await;
    assert_eq!((p.seq, p.kind), (5, ProblemKind::Missing), "{p:?}");
    assert!(p.what.contains("record 5 is missing"), "{}", p.what);
}

#[tokio::test]
async fn reordered_records_are_named() {
    let p = tamper(
        "UPDATE records SET seq = -1 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = 6; \
         UPDATE records SET seq = 6 WHERE seq = -1;",
    )
    .await;
    assert_eq!((p.seq, p.kind), (5, ProblemKind::Reordered), "{p:?}");
}

#[tokio::test]
async fn truncated_tail_after_a_checkpoint_is_named() {
    let p = tamper("DELETE FROM records WHERE seq > 15").await;
    assert_eq!((p.seq, p.kind), (16, ProblemKind::Truncated), "{p:?}");
    assert!(
        p.what.contains("records after seq 15 were removed"),
        "{}",
        p.what
    );
}

#[tokio::test]
async fn forged_checkpoint_with_another_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path()).await;
    let store = open(dir.path());
    fill(&store, 20, 5).await;
    let mallory = Signer::from_seed(&[9u8; 32]);
    let forged = store.checkpoint(&mallory).unwrap().unwrap();
    assert_eq!(forged.tree_size, 25);
    let r = store
        .verify_evidence(&[signer().public().clone()], &mut |_, _| {})
        .unwrap();
    let p = r.problem.unwrap();
    assert_eq!(
        (p.seq, p.kind),
        (21, ProblemKind::ForgedCheckpoint),
        "{p:?}"
    );
    assert!(p.what.contains("not a trusted key"), "{}", p.what);
    // Same, but claiming the trusted key's fingerprint.
    raw(dir.path())
        .execute(
            "UPDATE checkpoints SET key_fingerprint = ?1 WHERE tree_size = 25",
            [signer().public().fingerprint()],
        )
        .unwrap();
    let p = store
        .verify_evidence(&[signer().public().clone()], &mut |_, _| {})
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(p.kind, ProblemKind::ForgedCheckpoint);
    assert!(p.what.contains("does not verify"), "{}", p.what);
    // Without a key only the roots are checked: the (self-consistent) forgery passes.
    let r = store.verify_evidence(&[], &mut |_, _| {}).unwrap();
    assert_eq!(r.problem, None);
    assert!(!r.signatures_checked);
}

#[tokio::test]
async fn rewritten_and_rehashed_history_is_named() {
    // Rewrite record 12 and re-hash everything after it: the chain checks, the
    // checkpoint at 20 does not.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path()).await;
    let conn = raw(dir.path());
    let mut prev: String = conn
        .query_row("SELECT hash FROM records WHERE seq = 11", [], |r| r.get(0))
        .unwrap();
    for seq in 12..=20i64 {
        let body: String = conn
            .query_row("SELECT body FROM records WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap();
        let mut r: EvidenceRecord = serde_json::from_str(&body).unwrap();
        if seq == 12 {
            r.action.as_mut().unwrap().text = "select 'nothing happened'".into();
        }
        r.prev_hash = prev.clone();
        r.hash = record_hash(&r);
        conn.execute(
            "UPDATE records SET body = ?1, hash = ?2, prev_hash = ?3 WHERE seq = ?4",
            rusqlite::params![serde_json::to_string(&r).unwrap(), r.hash, r.prev_hash, seq],
        )
        .unwrap();
        prev = r.hash;
    }
    drop(conn);
    let store = open(dir.path());
    let p = store
        .verify_evidence(&[signer().public().clone()], &mut |_, _| {})
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((p.seq, p.kind), (11, ProblemKind::Rewritten), "{p:?}");
    assert!(
        p.what.contains("records 11..20 were rewritten"),
        "{}",
        p.what
    );
    // The plain chain check alone cannot see it.
    assert_eq!(store.verify(&mut |_, _| {}).unwrap().problem, None);
}

#[tokio::test]
async fn progress_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path()).await;
    let mut calls = Vec::new();
    open(dir.path())
        .verify_evidence(&[], &mut |d, t| calls.push((d, t)))
        .unwrap();
    assert_eq!(calls.last(), Some(&(20, 20)));
}

async fn exported(filter: ExportFilter) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path()).await;
    let store = open(dir.path());
    fill(&store, 20, 3).await;
    let (bundle, summary) = store.export_bundle(&filter, &signer(), "test").unwrap();
    assert!(
        summary.fresh_checkpoint,
        "23 > 20: a new checkpoint is needed"
    );
    assert_eq!(summary.checkpoint.tree_size, 23);
    (dir, bundle_bytes(&bundle))
}

#[tokio::test]
async fn export_then_verify_round_trip() {
    let (_dir, bytes) = exported(ExportFilter {
        principal: Some("agent:x".into()),
        ..Default::default()
    })
    .await;
    let report = verify_bundle(&bytes, signer().public()).unwrap();
    // agent:x is every third record of 0..23 → seqs 1, 4, 7, ..., 22.
    assert_eq!(report.records, 8);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(22)));
    assert!(!report.contiguous);
    assert_eq!(report.checkpoint.tree_size, 23);
    // Records before the first selected one have no earlier checkpoint.
    assert_eq!(report.prior_checkpoint, None);
    // Another key is refused.
    let other = Signer::from_seed(&[1u8; 32]);
    let e = verify_bundle(&bytes, other.public()).unwrap_err();
    assert!(e.contains("not the trusted key"), "{e}");
}

#[tokio::test]
async fn export_with_prior_checkpoint_and_contiguous_range() {
    let (_dir, bytes) = exported(ExportFilter {
        since: Some("2026-11-27T10:00:15Z".into()),
        ..Default::default()
    })
    .await;
    let report = verify_bundle(&bytes, signer().public()).unwrap();
    assert_eq!((report.first_seq, report.last_seq), (Some(16), Some(23)));
    assert!(report.contiguous);
    assert_eq!(report.prior_checkpoint, Some(10));
}

#[tokio::test]
async fn every_one_byte_edit_of_a_bundle_is_detected() {
    let (_dir, bytes) = exported(ExportFilter {
        since: Some("2026-11-27T10:00:18Z".into()),
        ..Default::default()
    })
    .await;
    verify_bundle(&bytes, signer().public()).unwrap();
    // Flip every byte position (a stride keeps the test fast) in a way that keeps UTF-8.
    let mut checked = 0;
    for i in (0..bytes.len()).step_by(3) {
        let mut b = bytes.clone();
        b[i] = match b[i] {
            b'0' => b'1',
            b'a' => b'b',
            b'"' => b'\'',
            b'\n' => b' ',
            c if c.is_ascii_alphanumeric() => b'0',
            _ => b'x',
        };
        assert!(
            verify_bundle(&b, signer().public()).is_err(),
            "edit at byte {i} ({:?}) was not detected",
            bytes[i] as char
        );
        checked += 1;
    }
    assert!(checked > 100);
    // A whitespace-only change (semantically equal JSON) is detected too.
    let mut spaced = bytes.clone();
    spaced.insert(1, b' ');
    assert!(verify_bundle(&spaced, signer().public()).is_err());
}

#[tokio::test]
async fn edited_record_in_bundle_is_named() {
    let (_dir, bytes) = exported(ExportFilter::default()).await;
    let text = String::from_utf8(bytes).unwrap();
    let edited = text.replacen("select 5 from items", "select 6 from items", 1);
    assert_ne!(edited, text);
    let e = verify_bundle(edited.as_bytes(), signer().public()).unwrap_err();
    assert!(e.contains("record 6 was edited"), "{e}");
}

#[tokio::test]
async fn sessions_are_summarized() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 12).await;
    let all = store.sessions(&SessionFilter::default()).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].session_id, "s0");
    assert_eq!(all[0].records, 4);
    assert_eq!(all[0].requests, 2);
    let x = store
        .sessions(&SessionFilter {
            principal: Some("agent:x".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].principal.as_deref(), Some("agent:x"));
}

#[test]
fn keys_round_trip_hex() {
    let s = signer();
    let pk = PublicKey::from_hex(&format!("{}\n", s.public().to_hex())).unwrap();
    assert_eq!(&pk, s.public());
    assert_eq!(pk.fingerprint().len(), 64);
    let sig = s.sign(b"hello");
    assert!(pk.verify(b"hello", &sig));
    assert!(!pk.verify(b"hellp", &sig));
    assert!(Signer::from_hex("zz").is_err());
}

fn same_outcome(a: &crate::EvidenceReport, b: &crate::EvidenceReport) {
    assert_eq!(
        (a.records, a.head_seq, &a.head_hash, a.checkpoints_verified),
        (b.records, b.head_seq, &b.head_hash, b.checkpoints_verified)
    );
    assert_eq!((a.unsigned_tail, &a.problem), (b.unsigned_tail, &b.problem));
}

#[tokio::test]
async fn paced_verification_matches_the_single_snapshot_one() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path()).await;
    let store = open(dir.path());
    fill(&store, 20, 5).await;
    let keys = [signer().public().clone()];
    let full = store.verify_evidence(&keys, &mut |_, _| {}).unwrap();
    let mut pauses = Vec::new();
    let mut progress = Vec::new();
    let ledger = store.ledger();
    let paced = store
        .verify_evidence_paced(&keys, &mut |d, t| progress.push((d, t)), &mut |busy| {
            pauses.push(busy);
            // Appended while it runs: not part of this pass.
            ledger.append_background(rec(100 + pauses.len() as u64));
        })
        .unwrap();
    same_outcome(&paced, &full);
    assert_eq!((paced.records, paced.unsigned_tail), (25, 5));
    // 25 records in chunks of 7: a pause after each of the three full chunks.
    assert_eq!(pauses.len(), 3);
    assert_eq!(progress.last(), Some(&(25, 25)));
    ledger.flush().await.unwrap();
    assert_eq!(store.head().unwrap().0, 28, "the appends landed after it");
}

#[tokio::test]
async fn paced_verification_finds_what_the_full_one_finds() {
    for sql in [
        "UPDATE records SET body = json_set(body, '$.action.text', 'select 1') WHERE seq = 17",
        "DELETE FROM records WHERE seq = 9",
        "DELETE FROM records WHERE seq > 15",
        "UPDATE records SET seq = -1 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = 6; \
         UPDATE records SET seq = 6 WHERE seq = -1;",
        // A row that should not exist, before the first one.
        "INSERT INTO records (seq, id, ts, kind, body, prev_hash, hash) \
         SELECT -3, 'x', ts, kind, body, prev_hash, hash FROM records WHERE seq = 1",
    ] {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path()).await;
        raw(dir.path()).execute_batch(sql).unwrap();
        let store = open(dir.path());
        let keys = [signer().public().clone()];
        let full = store.verify_evidence(&keys, &mut |_, _| {}).unwrap();
        assert!(full.problem.is_some(), "{sql}");
        let paced = store
            .verify_evidence_paced(&keys, &mut |_, _| {}, &mut |_| {})
            .unwrap();
        same_outcome(&paced, &full);
    }
}

#[tokio::test]
async fn a_reopened_store_checkpoints_from_the_stored_frontier() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 12).await;
    store.checkpoint(&signer()).unwrap().unwrap();
    let first = store.leaves(12).unwrap();
    drop(store);
    // Alter an early record's stored hash: a checkpointer that read records 1..=12 again
    // would sign another root than one continuing from the frontier stored at 12.
    raw(dir.path())
        .execute(
            "UPDATE records SET hash = ?1 WHERE seq = 2",
            ["ab".repeat(32)],
        )
        .unwrap();
    let store = open(dir.path());
    fill(&store, 12, 5).await;
    let cp = store.checkpoint(&signer()).unwrap().unwrap();
    let rescanned = store.leaves(17).unwrap();
    let mut continued = first.clone();
    continued.extend_from_slice(&rescanned[12..]);
    assert_eq!(cp.root, hex::encode(crate::merkle::root(&continued)));
    assert_ne!(cp.root, hex::encode(crate::merkle::root(&rescanned)));
    drop(store);
    // A stored frontier that does not reproduce its checkpoint's root is not used.
    raw(dir.path())
        .execute(
            "UPDATE merkle_frontier SET frontier = ?1",
            ["cd".repeat(32)],
        )
        .unwrap();
    let store = open(dir.path());
    fill(&store, 17, 3).await;
    let cp = store.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(
        cp.root,
        hex::encode(crate::merkle::root(&store.leaves(20).unwrap()))
    );
}

#[tokio::test]
async fn a_checkpoint_over_several_read_chunks_matches_the_tree_and_names_a_missing_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 30).await; // 30 records: five chunks of 7 in unit tests
    let cp = store.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(
        cp.root,
        hex::encode(crate::merkle::root(&store.leaves(30).unwrap()))
    );
    fill(&store, 30, 10).await;
    raw(dir.path())
        .execute("DELETE FROM records WHERE seq = 35", [])
        .unwrap();
    let err = store.checkpoint(&signer()).unwrap_err().to_string();
    assert!(err.contains("record 35 is missing"), "{err}");
}
