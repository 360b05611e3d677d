//! Throughput of the masking engine.
//! `cargo bench -p warden-masking --bench masking`

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use warden_masking::*;

fn conn() -> ConnectionMasker {
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: DetectorName::BUILTIN.to_vec(),
            operator: Operator::Partial,
            fields: vec![("ssn".into(), Operator::Redact)],
        }],
        ..Default::default()
    };
    Masker::new(&config)
        .unwrap()
        .for_connection("bench")
        .unwrap()
}

/// ~1 MiB of log-like text: timestamps, ids, prices, prose; one sensitive value per ~4 KiB.
fn mixed_text() -> String {
    let lines = [
        "2026-11-27T10:15:30.123Z INFO request_id=550e8400-e29b-41d4-a716-446655440000 GET /api/v1/orders?page=3 200 12.5ms\n",
        "Order ORD-2026-000123 shipped to the Berlin warehouse; total EUR 1.234,56 incl. VAT, 3 items, version v2.14.1\n",
        "The quick brown fox jumps over the lazy dog while the scheduler retries job 48213 after 30 seconds.\n",
        "2026-11-27 10:15:31 WARN cache miss ratio 0.37 for key user:48213:profile (ttl 3600s, size 2048 bytes)\n",
    ];
    let hits = [
        "customer jane.doe@example.com updated card 4111 1111 1111 1111\n",
        "call +44 20 7946 0958 re: IBAN DE89 3704 0044 0532 0130 00\n",
    ];
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 1 << 20 {
        s.push_str(lines[i % lines.len()]);
        if i % 40 == 39 {
            s.push_str(hits[(i / 40) % hits.len()]);
        }
        i += 1;
    }
    s
}

fn rows() -> (Vec<ColumnInfo>, Vec<Vec<Vec<u8>>>) {
    let col = |n: &str, oid| ColumnInfo {
        name: n.into(),
        table: Some("customers".into()),
        type_oid: oid,
        binary: false,
    };
    let cols = vec![
        col("id", 20),
        col("name", 25),
        col("email", 1043),
        col("city", 25),
        col("created_at", 1184),
        col("ssn", 25),
    ];
    let rows = (0..10_000)
        .map(|i| {
            vec![
                format!("{i}").into_bytes(),
                format!("Customer Number {i}").into_bytes(),
                format!("user{i}@example.com").into_bytes(),
                b"Amsterdam".to_vec(),
                b"2026-11-27 10:15:30.123+00".to_vec(),
                b"123-45-6789".to_vec(),
            ]
        })
        .collect();
    (cols, rows)
}

fn bench(c: &mut Criterion) {
    let m = conn();
    let text = mixed_text();
    let mut g = c.benchmark_group("masking");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("mixed_text_few_hits", |b| {
        b.iter(|| {
            let mut st = MaskStats::default();
            black_box(m.mask_text(black_box(&text), &mut st).len())
        })
    });
    g.bench_function("mixed_text_streamed_64k", |b| {
        b.iter(|| {
            let mut st = MaskStats::default();
            let mut s = m.stream();
            let mut out = Vec::with_capacity(text.len());
            for ch in text.as_bytes().chunks(64 * 1024) {
                s.push(ch, &mut out, &mut st);
            }
            s.finish(&mut out, &mut st);
            black_box(out.len())
        })
    });
    let (cols, rows) = rows();
    let bytes: usize = rows.iter().flatten().map(Vec::len).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("result_rows_10k", |b| {
        b.iter(|| {
            let plan = m.plan_columns(&cols);
            let mut st = MaskStats::default();
            let mut n = 0;
            for row in &rows {
                for (i, v) in row.iter().enumerate() {
                    if !matches!(plan.mask_value(i, v, &mut st), MaskResult::Unchanged) {
                        n += 1;
                    }
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
