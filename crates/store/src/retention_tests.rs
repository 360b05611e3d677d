//! Retention: prune seals first, verification passes on what remains, and every way of
//! removing records without a valid seal is still detected.
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use warden_core::{EvidenceRecord, RecordKind};

use crate::bundle::verify_bundle;
use crate::{Durability, ExportFilter, ProblemKind, Signer, Store};

fn open(dir: &Path) -> Store {
    Store::open("sqlite://data/evidence.db", dir, Durability::Process).unwrap()
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join("data/evidence.db")).unwrap()
}

fn signer() -> Signer {
    Signer::from_seed(&[7u8; 32])
}

/// Record `i` is stamped at minute `i` of 2026-01-01.
fn rec(i: u64) -> EvidenceRecord {
    let mut r = EvidenceRecord::new(RecordKind::ActionRequest);
    r.ts = format!("2026-01-01T{:02}:{:02}:00.000000000Z", i / 60, i % 60);
    r.session_id = Some(format!("s{}", i % 3));
    r.connection = Some("orders".into());
    r.detail = Some(format!("statement {i}"));
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

/// Minute `m` of 2026-01-01: records 0..m (seq 1..=m) are older.
fn at(m: u64) -> String {
    format!("2026-01-01T{:02}:{:02}:00Z", m / 60, m % 60)
}

fn verify(store: &Store) -> crate::EvidenceReport {
    store
        .verify_evidence(&[signer().public().clone()], &mut |_, _| {})
        .unwrap()
}

fn prune(store: &Store, dir: &Path, before: &str) -> Option<crate::PruneSummary> {
    let out = dir.join("sealed");
    store
        .prune(before, &signer(), "test", &mut |a, b| {
            out.join(format!("sealed-{a}-{b}.json"))
        })
        .unwrap()
}

#[tokio::test]
async fn prune_then_verify_passes_and_the_bundle_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 30).await;
    store.checkpoint(&signer()).unwrap().unwrap(); // 30
    fill(&store, 30, 20).await; // 50 records, the head is not checkpointed yet
    let s = prune(&store, dir.path(), &at(25)).expect("records were due");
    assert_eq!((s.seal.from_seq, s.seal.up_to_seq, s.records), (1, 25, 25));
    assert_eq!(s.record_seq, 51);
    assert!(
        s.checkpoint.tree_size >= 50,
        "a checkpoint over the head was signed first"
    );
    // The store: records 26..=51, the last one saying what was sealed.
    let mut kinds = Vec::new();
    store
        .query(&Default::default(), &mut |r| {
            kinds.push((r.seq, r.kind));
            true
        })
        .unwrap();
    assert_eq!(kinds.first().unwrap().0, 26);
    assert_eq!(*kinds.last().unwrap(), (51, RecordKind::RetentionSealed));
    let r = verify(&store);
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!(
        (r.records, r.head_seq, r.sealed_up_to, r.seals),
        (26, 51, 25, 1)
    );
    assert_eq!(
        (r.checkpoints_verified, r.checkpoints_covered_by_seal),
        (2, 0),
        "the checkpoints at 30 and 50 recompute through the seal's frontier"
    );
    assert_eq!(
        store.verify(&mut |_, _| {}).unwrap().problem,
        None,
        "the plain chain check starts after the seal too"
    );
    // The sealed bundle verifies alone: records 1..25, contiguous, with the public key.
    let bytes = std::fs::read(&s.bundle_path).unwrap();
    assert_eq!(s.bundle_path, dir.path().join("sealed/sealed-1-25.json"));
    let b = verify_bundle(&bytes, signer().public()).unwrap();
    assert_eq!(
        (b.records, b.first_seq, b.last_seq, b.contiguous),
        (25, Some(1), Some(25), true)
    );
    use sha2::Digest;
    assert_eq!(
        s.seal.bundle_sha256,
        hex::encode(sha2::Sha256::digest(&bytes))
    );

    // Later: checkpoints and exports of what remains still work (fresh handle, no cache).
    fill(&store, 50, 10).await;
    // The CLI may prune only while no gateway holds the store's append log.
    let cli = open(dir.path());
    let err = cli
        .prune(&at(40), &signer(), "test", &mut |a, b| {
            dir.path().join(format!("x-{a}-{b}.json"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("running gateway"), "{err}");
    drop((store, cli));
    let fresh = open(dir.path());
    let cp = fresh.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(cp.root, hex::encode(fresh.tree(61).unwrap().root()));
    assert_eq!(verify(&fresh).problem, None);
    let (bundle, sum) = fresh
        .export_bundle(&ExportFilter::default(), &signer(), "test")
        .unwrap();
    assert_eq!((sum.first_seq, sum.last_seq), (Some(26), Some(61)));
    let b = verify_bundle(&crate::bundle::bundle_bytes(&bundle), signer().public()).unwrap();
    assert!(b.contiguous);

    // A second prune continues the first; nothing due → None.
    let s2 = prune(&fresh, dir.path(), &at(40)).unwrap();
    assert_eq!((s2.seal.from_seq, s2.seal.up_to_seq), (26, 40));
    assert!(prune(&fresh, dir.path(), &at(40)).is_none());
    let r = verify(&fresh);
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!((r.sealed_up_to, r.seals), (40, 2));
    let b2 = verify_bundle(&std::fs::read(&s2.bundle_path).unwrap(), signer().public()).unwrap();
    assert_eq!((b2.first_seq, b2.last_seq), (Some(26), Some(40)));
    // Everything can be sealed, up to the newest checkpoint (the retention record of the
    // previous seal included).
    let s3 = prune(&fresh, dir.path(), "2030-01-01").unwrap();
    assert_eq!(
        s3.seal.up_to_seq, 62,
        "head 62 was checkpointed first, then sealed"
    );
    let r = verify(&fresh);
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!((r.records, r.head_seq), (1, 63));
}

#[tokio::test]
async fn a_seal_between_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 20).await;
    store.checkpoint(&signer()).unwrap().unwrap(); // 20
    fill(&store, 20, 10).await;
    // prune signs a checkpoint over the head (30) first, so it never seals past the newest
    // checkpoint; the bound is then the cutoff.
    let s = prune(&store, dir.path(), &at(25)).unwrap();
    assert_eq!((s.seal.up_to_seq, s.checkpoint.tree_size), (25, 30));
    let r = verify(&store);
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!(
        r.checkpoints_covered_by_seal, 1,
        "checkpoint 20 is inside the sealed prefix"
    );
}

async fn pruned(dir: &Path) -> PathBuf {
    let store = open(dir);
    fill(&store, 0, 30).await;
    let s = prune(&store, dir, &at(20)).unwrap();
    assert_eq!(s.seal.up_to_seq, 20);
    fill(&store, 30, 5).await;
    store.checkpoint(&signer()).unwrap().unwrap();
    assert_eq!(verify(&store).problem, None);
    s.bundle_path
}

async fn tampered(sql: &str) -> crate::EvidenceProblem {
    let dir = tempfile::tempdir().unwrap();
    pruned(dir.path()).await;
    raw(dir.path()).execute_batch(sql).unwrap();
    verify(&open(dir.path())).problem.expect("must be detected")
}

#[tokio::test]
async fn deleting_a_record_after_the_prune_without_a_seal_fails() {
    let p = tampered("DELETE FROM records WHERE seq = 21").await;
    assert_eq!((p.seq, p.kind), (21, ProblemKind::Missing), "{p:?}");
    let p = tampered("DELETE FROM records WHERE seq = 25").await;
    assert_eq!((p.seq, p.kind), (25, ProblemKind::Missing), "{p:?}");
    // Removing the seal itself leaves a gap from seq 1.
    let p = tampered("DELETE FROM seals").await;
    assert_eq!((p.seq, p.kind), (1, ProblemKind::Missing), "{p:?}");
    // Removing more records and moving the seal forward breaks its signature.
    let p = tampered("DELETE FROM records WHERE seq <= 22; UPDATE seals SET up_to_seq = 22").await;
    assert_eq!(p.kind, ProblemKind::ForgedSeal, "{p:?}");
    // The retention.sealed record is part of the chain like any other.
    let p = tampered("DELETE FROM records WHERE seq = 31").await;
    assert_eq!((p.seq, p.kind), (31, ProblemKind::Missing), "{p:?}");
}

#[tokio::test]
async fn a_forged_seal_signature_is_detected() {
    let p = tampered(&format!(
        "UPDATE seals SET signature = '{}'",
        "ab".repeat(64)
    ))
    .await;
    assert_eq!(p.kind, ProblemKind::ForgedSeal, "{p:?}");
    assert!(p.what.contains("signature does not verify"), "{p:?}");
    // A seal signed by another key: untrusted.
    let dir = tempfile::tempdir().unwrap();
    pruned(dir.path()).await;
    let conn = raw(dir.path());
    let mut seal = crate::retention::read_seals(&conn).unwrap().pop().unwrap();
    let other = Signer::from_seed(&[9u8; 32]);
    seal.key_fingerprint = other.public().fingerprint();
    seal.signature = other.sign(seal.signed_text().as_bytes());
    conn.execute(
        "UPDATE seals SET key_fingerprint = ?1, signature = ?2",
        [&seal.key_fingerprint, &seal.signature],
    )
    .unwrap();
    let p = verify(&open(dir.path())).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::ForgedSeal, "{p:?}");
    assert!(p.what.contains("not a trusted key"), "{p:?}");
    // An edited bundle hash in the seal: the signature no longer covers it.
    let p = tampered(&format!(
        "UPDATE seals SET bundle_sha256 = '{}'",
        "0".repeat(64)
    ))
    .await;
    assert_eq!(p.kind, ProblemKind::ForgedSeal, "{p:?}");
    // A wrong frontier (re-signed by the right key, as an insider could not): the next
    // checkpoint no longer recomputes.
    let dir = tempfile::tempdir().unwrap();
    pruned(dir.path()).await;
    let conn = raw(dir.path());
    let mut seal = crate::retention::read_seals(&conn).unwrap().pop().unwrap();
    seal.frontier[0] = "11".repeat(32);
    conn.execute("UPDATE seals SET frontier = ?1", [seal.frontier.join(",")])
        .unwrap();
    let p = verify(&open(dir.path())).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::ForgedSeal, "{p:?}");
}

#[tokio::test]
async fn the_sealed_bundle_detects_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = pruned(dir.path()).await;
    let mut bytes = std::fs::read(&path).unwrap();
    verify_bundle(&bytes, signer().public()).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 1;
    assert!(verify_bundle(&bytes, signer().public()).is_err());
}

#[tokio::test]
async fn an_empty_or_fresh_store_has_nothing_to_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(prune(&store, dir.path(), &at(10)).is_none());
    fill(&store, 30, 5).await;
    assert!(
        prune(&store, dir.path(), &at(10)).is_none(),
        "nothing older than the cutoff"
    );
    assert_eq!(verify(&store).problem, None);
}

#[tokio::test]
async fn retention_between_two_chunks_of_a_paced_verification_is_not_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 0, 40).await;
    store.checkpoint(&signer()).unwrap().unwrap();
    let mut pruned = None;
    let r = store
        .verify_evidence_paced(&[signer().public().clone()], &mut |_, _| {}, &mut |_| {
            // After the first chunk (records 1..=7): seal and remove 1..=25.
            if pruned.is_none() {
                pruned = prune(&store, dir.path(), &at(25));
            }
        })
        .unwrap();
    let s = pruned.expect("records were due");
    assert_eq!(s.seal.up_to_seq, 25);
    assert_eq!(
        r.problem, None,
        "the gap is the seal's, confirmed on one snapshot"
    );
    assert_eq!(r.sealed_up_to, 25);
}
