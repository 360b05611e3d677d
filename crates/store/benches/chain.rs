//! Evidence serialization and hashing: what the ledger writer does per record.
//! `cargo bench -p warden-store --bench chain -- --warm-up-time 1 --measurement-time 2`
//!
//! - `to_value`: `serde_json::to_value(record)` (the struct → JSON tree step);
//! - `canonical_json`: struct → canonical JSON text (sorted keys, no whitespace);
//! - `record_hash`: canonical JSON + SHA-256 + hex, the chain hash of one record;
//! - `value_hash`: canonical JSON + SHA-256 of an already-built `Value` (verify path);
//! - `ledger_value_path`: what the ledger did per append until issue 7's second pass
//!   (`to_value`, then hash and stored body through `chain::hash_and_body`);
//! - `ledger_direct`: what it does now (`record_json::prepare` + `Prepared::seal`, the same
//!   bytes without building a `Value`).
//!
//! On a typical `action.request` (pgbench-like SELECT, principal, decision; ≈ 600 bytes of
//! canonical JSON) and a typical `action.response` with a masked 3-row excerpt.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use warden_core::{
    ActionInfo, AuthInfo, AuthMethod, DecisionInfo, Effect, EvidenceRecord, Principal, RecordKind,
    ResponseInfo,
};
use warden_store::chain::{GENESIS_HASH, canonical_json, hash_and_body, record_hash, value_hash};
use warden_store::record_json;

fn base(kind: RecordKind) -> EvidenceRecord {
    let mut r = EvidenceRecord::new(kind);
    r.seq = 48_213;
    r.prev_hash = GENESIS_HASH.replace('0', "7");
    r.session_id = Some(format!("{:032x}", 0x5eed_u64));
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
    r.purpose = Some("weekly revenue report".into());
    r.client = Some("127.0.0.1:51234".into());
    r
}

fn request() -> EvidenceRecord {
    let mut r = base(RecordKind::ActionRequest);
    r.action = Some(ActionInfo {
        kind: "sql".into(),
        text: "SELECT id, customer_id, status, total FROM orders WHERE customer_id = $1 ORDER BY id LIMIT 50".into(),
        params: vec![Some("4821".into())],
        sql_kinds: vec!["select".into()],
        tables: vec!["orders".into()],
    });
    r.decision = Some(DecisionInfo {
        effect: Effect::Allow,
        rules: vec!["agents-read-orders".into()],
        reason: None,
    });
    r
}

fn response() -> EvidenceRecord {
    let mut r = base(RecordKind::ActionResponse);
    r.request_id = Some(format!("{:032x}", 0xfeed_u64));
    let rows: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            serde_json::json!([
                format!("{}", 1000 + i),
                "4821",
                "paid",
                format!("{}.50", 10 * i + 7),
                format!("u***{i}@example.com")
            ])
        })
        .collect();
    r.response = Some(ResponseInfo {
        status: "ok".into(),
        tag: Some("SELECT 50".into()),
        rows: 50,
        bytes: 4210,
        duration_us: Some(830),
        masked: Some(serde_json::json!({
            "columns": ["id", "customer_id", "status", "total", "email"],
            "rows": rows,
            "truncated": true
        })),
        masked_values: [("email".to_string(), 50u64)].into_iter().collect(),
        ..Default::default()
    });
    r
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("evidence");
    for (name, rec) in [("request", request()), ("response", response())] {
        let value = serde_json::to_value(&rec).unwrap();
        g.throughput(Throughput::Bytes(canonical_json(&rec).len() as u64));
        g.bench_function(format!("{name}/to_value"), |b| {
            b.iter(|| black_box(serde_json::to_value(black_box(&rec)).unwrap()))
        });
        g.bench_function(format!("{name}/canonical_json"), |b| {
            b.iter(|| black_box(canonical_json(black_box(&rec))))
        });
        g.bench_function(format!("{name}/record_hash"), |b| {
            b.iter(|| black_box(record_hash(black_box(&rec))))
        });
        g.bench_function(format!("{name}/value_hash"), |b| {
            b.iter(|| black_box(value_hash(black_box(&value))))
        });
        g.bench_function(format!("{name}/ledger_value_path"), |b| {
            b.iter(|| {
                let mut v = serde_json::to_value(black_box(&rec)).unwrap();
                let m = v.as_object_mut().unwrap();
                m.remove("hash");
                m.insert("seq".into(), rec.seq.into());
                m.insert("prev_hash".into(), rec.prev_hash.clone().into());
                black_box(hash_and_body(&v))
            })
        });
        g.bench_function(format!("{name}/ledger_direct"), |b| {
            b.iter(|| {
                let p = record_json::prepare(black_box(&rec));
                black_box(p.seal(rec.seq, &rec.prev_hash))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
