//! Evidence ledger figures for docs/benchmarks.md.
//!
//! cargo run --release -p warden-store --example ledger_bench [-- SECONDS_PER_CASE]
//!     [--append-only] [--durability process|fsync]... [--writers N]...
//!
//! `--append-only` skips the verification and bundle sections; `--durability` and
//! `--writers` (repeatable) pick the append cases (default: both levels × 1, 8, 64).
//! bench/run.sh runs one case per invocation to interleave them with the other targets.
//!
//! - append throughput (records/s) with 1, 8 and 64 concurrent writers, each awaiting
//!   its own commit (as the gateway does before forwarding a statement), per durability;
//! - full verification throughput (chain + Merkle roots + signatures) in records/s;
//! - checkpoint signing time and evidence bundle size per 10 000 records.
use std::time::{Duration, Instant};

use warden_core::{
    ActionInfo, AuthInfo, AuthMethod, DecisionInfo, Effect, EvidenceRecord, Principal, RecordKind,
    ResponseInfo,
};
use warden_store::{Durability, ExportFilter, Signer, Store};

fn record(i: u64) -> EvidenceRecord {
    let request = i.is_multiple_of(2);
    let mut r = EvidenceRecord::new(if request {
        RecordKind::ActionRequest
    } else {
        RecordKind::ActionResponse
    });
    r.session_id = Some(format!("{:032x}", i / 20));
    r.principal = Some(std::sync::Arc::new(Principal {
        id: "agent:reporter".into(),
        groups: vec!["agents".into()],
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k7f3a9c2e".into()),
        },
        on_behalf_of: None,
    }));
    r.connection = Some("orders".into());
    r.protocol = Some("postgres".into());
    r.client = Some("127.0.0.1:51234".into());
    if request {
        r.action = Some(ActionInfo {
            kind: "sql".into(),
            text: format!(
                "SELECT id, customer_id, status, total FROM orders WHERE customer_id = {} ORDER BY id LIMIT 50",
                i % 1000
            ),
            sql_kinds: vec!["select".into()],
            tables: vec!["orders".into()],
            ..Default::default()
        });
        r.decision = Some(DecisionInfo {
            effect: Effect::Allow,
            rules: vec!["agents-read-orders".into()],
            reason: None,
        });
    } else {
        r.request_id = Some(format!("{:032x}", i - 1));
        r.response = Some(ResponseInfo {
            status: "ok".into(),
            tag: Some("SELECT 50".into()),
            rows: 50,
            bytes: 4210,
            duration_us: Some(830),
            ..Default::default()
        });
    }
    r
}

fn append_case(durability: Durability, writers: u64, budget: Duration) -> (u64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://evidence.db", dir.path(), durability).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ledger = store.ledger();
    let (n, secs) = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + budget;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let l = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    l.append(record(w * 1_000_000 + n)).await.unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        (total, start.elapsed().as_secs_f64())
    });
    (n, n as f64 / secs)
}

struct Args {
    secs: f64,
    append_only: bool,
    durabilities: Vec<(&'static str, Durability)>,
    writers: Vec<u64>,
}

fn args() -> Args {
    let usage = "usage: ledger_bench [SECONDS] [--append-only] [--durability process|fsync]... [--writers N]...";
    let mut a = Args {
        secs: 5.0,
        append_only: false,
        durabilities: Vec::new(),
        writers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--append-only" => a.append_only = true,
            "--durability" => match it.next().as_deref() {
                Some("process") => a.durabilities.push(("process", Durability::Process)),
                Some("fsync") => a.durabilities.push(("fsync", Durability::Fsync)),
                _ => panic!("{usage}"),
            },
            "--writers" => a
                .writers
                .push(it.next().and_then(|s| s.parse().ok()).expect(usage)),
            s => a.secs = s.parse().expect(usage),
        }
    }
    if a.durabilities.is_empty() {
        a.durabilities = vec![
            ("process", Durability::Process),
            ("fsync", Durability::Fsync),
        ];
    }
    if a.writers.is_empty() {
        a.writers = vec![1, 8, 64];
    }
    a
}

fn main() {
    let a = args();
    let secs = a.secs;
    let budget = Duration::from_secs_f64(secs);
    println!("## append throughput ({secs} s per case, each writer awaits its commit)\n");
    println!("| durability | writers | records | records/s |");
    println!("|---|---:|---:|---:|");
    for &(name, d) in &a.durabilities {
        for &writers in &a.writers {
            let (n, rate) = append_case(d, writers, budget);
            println!("| {name} | {writers} | {n} | {rate:.0} |");
        }
    }
    if a.append_only {
        return;
    }

    // Verification and bundles on a 200k-record store.
    let total = 200_000u64;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://evidence.db", dir.path(), Durability::Process).unwrap();
    let signer = Signer::from_seed(&[42u8; 32]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ledger = store.ledger();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..total {
            pending.push(ledger.submit(record(i)));
            if pending.len() == 4096 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
            if (i + 1).is_multiple_of(50_000) {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
                store.checkpoint(&signer).unwrap();
            }
        }
        for p in pending.drain(..) {
            p.await.unwrap();
        }
    });
    let t = Instant::now();
    let cp = store.checkpoint(&signer).unwrap();
    let cp_incremental = t.elapsed();
    assert!(cp.is_none(), "already checkpointed at {total}");
    // A new process's view: the first store must let go of the append log (one writer).
    drop(ledger);
    drop(store);
    let reopened = Store::open("sqlite://evidence.db", dir.path(), Durability::Process).unwrap();
    rt.block_on(async {
        reopened.ledger().append(record(total)).await.unwrap();
    });
    let t = Instant::now();
    reopened.checkpoint(&signer).unwrap().unwrap();
    let cp_cold = t.elapsed();
    let db_bytes = std::fs::metadata(dir.path().join("evidence.db"))
        .map(|m| m.len())
        .unwrap_or(0);

    let t = Instant::now();
    let report = reopened
        .verify_evidence(&[signer.public().clone()], &mut |_, _| {})
        .unwrap();
    let vsecs = t.elapsed().as_secs_f64();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    println!(
        "\n## verification ({} records, {} checkpoints)\n",
        report.records, report.checkpoints_verified
    );
    println!(
        "full verify (chain + Merkle roots + signatures): {:.2} s = {:.0} records/s",
        vsecs,
        report.records as f64 / vsecs
    );
    let t = Instant::now();
    reopened.verify(&mut |_, _| {}).unwrap();
    let csecs = t.elapsed().as_secs_f64();
    println!(
        "chain-only verify: {:.2} s = {:.0} records/s",
        csecs,
        report.records as f64 / csecs
    );
    println!(
        "checkpoint over {} records: cold (new process) {:.0} ms; store file {:.1} MiB",
        report.records,
        cp_cold.as_secs_f64() * 1000.0,
        db_bytes as f64 / (1024.0 * 1024.0)
    );
    let _ = cp_incremental;

    // A bundle of exactly 10 000 records (the whole of a 10k-record store).
    let dir2 = tempfile::tempdir().unwrap();
    let small = Store::open("sqlite://evidence.db", dir2.path(), Durability::Process).unwrap();
    rt.block_on(async {
        let l = small.ledger();
        let mut pending = Vec::new();
        for i in 0..10_000 {
            pending.push(l.submit(record(i)));
        }
        for p in pending {
            p.await.unwrap();
        }
    });
    let t = Instant::now();
    let (bundle, summary) = small
        .export_bundle(&ExportFilter::default(), &signer, "bench")
        .unwrap();
    let bytes = warden_store::bundle::bundle_bytes(&bundle);
    let esecs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    warden_store::verify_bundle(&bytes, signer.public()).unwrap();
    let bvsecs = t.elapsed().as_secs_f64();
    println!("\n## bundle of {} records\n", summary.records);
    println!(
        "size {:.2} MiB ({} bytes; {:.0} bytes/record); export {:.2} s, verify {:.2} s",
        bytes.len() as f64 / (1024.0 * 1024.0),
        bytes.len(),
        bytes.len() as f64 / summary.records as f64,
        esecs,
        bvsecs
    );
}
