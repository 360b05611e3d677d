//! PostgreSQL wire codec: frame splitting and message parsing on the relay's hot path.
//! `cargo bench -p warden-pg --bench codec -- --warm-up-time 1 --measurement-time 2`
//!
//! - `query`: one simple-protocol Query (pgbench -S's statement): split + parse_query;
//! - `extended_batch`: Parse/Bind/Describe/Execute/Sync as libpq sends it for
//!   `pgbench -M extended`: split every frame, parse Parse, Bind (+ render the parameter
//!   as evidence shows it) and Execute;
//! - `datarow_stream_1000`: RowDescription + 1 000 DataRows (4 text columns, like the
//!   large-SELECT benchmark) + CommandComplete + ReadyForQuery: split every frame and
//!   read the column values of each DataRow (what masking and the evidence excerpt do);
//! - `datarow_stream_1000_masked`: the same stream through `rows::mask_data_row` with a
//!   column plan from the six built-in detectors (`partial`): every email is masked.

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use warden_masking::{DetectorName, MaskRule, MaskStats, Masker, MaskingConfig, Operator};
use warden_pg::codec::{
    MAX_FRAME, parse_bind, parse_execute, parse_parse, parse_query, split_frame, write_parse,
    write_query,
};
use warden_pg::rows::{mask_data_row, parse_row_description, plan_for, row_values};

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";

/// A tagged frame: tag, length (including itself), body.
fn frame(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(body);
}

fn extended_batch() -> BytesMut {
    let mut buf = BytesMut::new();
    write_parse(
        &mut buf,
        "",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    );
    // Bind: unnamed portal and statement, 0 format codes (text), 1 parameter, 0 result formats.
    let mut b = Vec::new();
    b.extend_from_slice(b"\0\0");
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&5i32.to_be_bytes());
    b.extend_from_slice(b"48213");
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(&mut buf, b'B', &b);
    frame(&mut buf, b'D', b"P\0");
    let mut e = b"\0".to_vec();
    e.extend_from_slice(&0i32.to_be_bytes());
    frame(&mut buf, b'E', &e);
    frame(&mut buf, b'S', b"");
    buf
}

fn row_description(names: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(names.len() as i16).to_be_bytes());
    for n in names {
        b.extend_from_slice(n.as_bytes());
        b.push(0);
        b.extend_from_slice(&0i32.to_be_bytes()); // table oid
        b.extend_from_slice(&0i16.to_be_bytes()); // column number
        b.extend_from_slice(&25i32.to_be_bytes()); // type oid (text)
        b.extend_from_slice(&(-1i16).to_be_bytes()); // type size
        b.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
        b.extend_from_slice(&0i16.to_be_bytes()); // text format
    }
    b
}

fn datarow_stream(rows: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    frame(
        &mut buf,
        b'T',
        &row_description(&["id", "name", "email", "note"]),
    );
    for i in 0..rows {
        let vals = [
            i.to_string(),
            format!("customer {i}"),
            format!("user{i}@example.com"),
            format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        ];
        let mut b = Vec::new();
        b.extend_from_slice(&(vals.len() as i16).to_be_bytes());
        for v in &vals {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        frame(&mut buf, b'D', &b);
    }
    frame(&mut buf, b'C', format!("SELECT {rows}\0").as_bytes());
    frame(&mut buf, b'Z', b"I");
    buf
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pg_codec");

    let mut query = BytesMut::new();
    write_query(&mut query, PGBENCH_SELECT);
    g.throughput(Throughput::Elements(1));
    g.bench_function("query", |b| {
        b.iter(|| {
            let f = split_frame(black_box(&query), MAX_FRAME).unwrap().unwrap();
            black_box(parse_query(f.body).unwrap());
        })
    });

    let batch = extended_batch();
    g.bench_function("extended_batch", |b| {
        b.iter(|| {
            let mut rest: &[u8] = black_box(&batch);
            let mut n = 0usize;
            while let Some(f) = split_frame(rest, MAX_FRAME).unwrap() {
                match f.tag {
                    b'P' => n += parse_parse(f.body).unwrap().query.len(),
                    b'B' => {
                        let bind = parse_bind(f.body).unwrap();
                        n += bind.render_params(&[23]).len();
                    }
                    b'E' => n += parse_execute(f.body).unwrap().0.len(),
                    _ => n += 1,
                }
                rest = &rest[f.len..];
            }
            black_box(n)
        })
    });

    let stream = datarow_stream(1000);
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("datarow_stream_1000", |b| {
        b.iter(|| {
            let mut rest: &[u8] = black_box(&stream);
            let mut bytes = 0usize;
            while let Some(f) = split_frame(rest, MAX_FRAME).unwrap() {
                match f.tag {
                    b'T' => bytes += parse_row_description(f.body).unwrap().len(),
                    b'D' => {
                        for v in row_values(f.body).unwrap().into_iter().flatten() {
                            bytes += v.len();
                        }
                    }
                    _ => {}
                }
                rest = &rest[f.len..];
            }
            black_box(bytes)
        })
    });

    let masker = Masker::new(&MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: DetectorName::BUILTIN.to_vec(),
            operator: Operator::Partial,
            fields: Vec::new(),
        }],
        ..Default::default()
    })
    .unwrap()
    .for_connection("bench")
    .unwrap();
    g.bench_function("datarow_stream_1000_masked", |b| {
        b.iter(|| {
            let mut rest: &[u8] = black_box(&stream);
            let mut plan = None;
            let mut stats = MaskStats::default();
            let mut out = 0usize;
            while let Some(f) = split_frame(rest, MAX_FRAME).unwrap() {
                match f.tag {
                    b'T' => plan = Some(plan_for(&masker, &parse_row_description(f.body).unwrap())),
                    b'D' => {
                        let plan = plan.as_ref().unwrap();
                        out += match mask_data_row(f.body, plan, &mut stats).unwrap() {
                            Some(masked) => masked.len(),
                            None => f.len,
                        };
                    }
                    _ => out += f.len,
                }
                rest = &rest[f.len..];
            }
            black_box((out, stats))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
