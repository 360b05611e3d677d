//! Single-writer commit latency of the ledger (the per-statement cost a session pays):
//! `cargo run --release -p warden-store --example commit_latency [N]`.
use std::time::Instant;

use warden_core::{ActionInfo, EvidenceRecord, RecordKind};
use warden_store::{Durability, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    for (name, d) in [
        ("process", Durability::Process),
        ("fsync", Durability::Fsync),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://evidence.db", dir.path(), d).unwrap();
        let ledger = store.ledger();
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let mut r = EvidenceRecord::new(RecordKind::ActionRequest);
            r.session_id = Some("s".into());
            r.connection = Some("orders".into());
            r.action = Some(ActionInfo {
                kind: "sql".into(),
                text: format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"),
                ..Default::default()
            });
            let t = Instant::now();
            ledger.append(r).await.unwrap();
            lat.push(t.elapsed().as_micros() as u64);
        }
        lat.sort_unstable();
        let mean = lat.iter().sum::<u64>() as f64 / n as f64;
        println!(
            "{name:<8} n={n} mean={mean:.0}us p50={}us p99={}us",
            lat[n / 2],
            lat[n * 99 / 100]
        );
        if d == Durability::Process && n > 1000 { /* fsync case is slow; keep it short */ }
    }
}
