//! Server time of the console's API calls on a store of 100 000 records
//! (docs/benchmarks.md, "Console").
//!
//! cargo run -p warden-admin --example console_bench [-- RECORDS]
//!
//! Fills a fresh store with sessions spread over the last 14 days (session.start,
//! SELECT request/response pairs with a masked result excerpt, some denials, some held
//! statements with their approval records, session.end), then calls every endpoint the
//! console pages use through the real router (auth, query, JSON) and prints the median
//! and worst of 15 calls each, plus SQLite's plan for each console query.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use tower::ServiceExt;
use warden_admin::{AdminParts, Authenticator, ConsoleSettings, EvidenceSource};
use warden_approvals::{Broker, BrokerSettings};
use warden_core::{
    ActionInfo, ApprovalInfo, AuthInfo, AuthMethod, DecisionInfo, Effect, EvidenceRecord,
    Principal, RecordKind, ResponseInfo,
};
use warden_store::{Durability, Signer, Store};

struct Tokens(HashMap<String, Principal>);

impl Authenticator for Tokens {
    async fn authenticate(&self, token: &str, _: &str) -> Result<Principal, String> {
        self.0.get(token).cloned().ok_or_else(|| "no".into())
    }
}

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k7f3a9c2e".into()),
        },
        on_behalf_of: None,
    }
}

/// Records of session `s` (about 12), starting at `t0`.
fn session(s: u64, t0: time::OffsetDateTime) -> Vec<EvidenceRecord> {
    let agent = format!("agent:bot{}", s % 25);
    let conn = ["orders", "billing", "crm"][(s % 3) as usize];
    let sid = format!("{s:032x}");
    let mut out = Vec::new();
    let mut t = t0;
    let mut rec = |kind: RecordKind| {
        t += Duration::from_millis(40);
        let mut r = EvidenceRecord::new(kind);
        r.ts = warden_core::time_fmt::format_ts(t);
        r.session_id = Some(sid.clone());
        r.principal = Some(principal(&agent, &["agents"]).into());
        r.connection = Some(conn.into());
        r.protocol = Some("postgres".into());
        r.client = Some("127.0.0.1:51234".into());
        r.purpose = Some("nightly report".into());
        r
    };
    out.push(rec(RecordKind::SessionStart));
    for i in 0..5u64 {
        let mut r = rec(RecordKind::ActionRequest);
        r.action = Some(ActionInfo {
            kind: "sql".into(),
            text: format!(
                "SELECT id, customer_id, email, total FROM orders WHERE customer_id = {} ORDER BY id LIMIT 20",
                (s * 7 + i) % 5000
            ),
            sql_kinds: vec!["select".into()],
            tables: vec!["orders".into()],
            ..Default::default()
        });
        r.decision = Some(DecisionInfo {
            effect: Effect::Allow,
            rules: vec!["agents-read".into()],
            reason: None,
        });
        let req_id = r.id.clone();
        out.push(r);
        let mut r = rec(RecordKind::ActionResponse);
        r.request_id = Some(req_id);
        let rows: Vec<serde_json::Value> = (0..5)
            .map(|k| serde_json::json!([k.to_string(), "42", "j***@example.com", "19.90"]))
            .collect();
        r.response = Some(ResponseInfo {
            status: "ok".into(),
            tag: Some("SELECT 20".into()),
            rows: 20,
            bytes: 1800,
            duration_us: Some(850),
            masked: Some(
                serde_json::json!({"columns": ["id", "customer_id", "email", "total"],
                "rows": rows, "rows_kept": 5, "rows_total": 20, "truncated": true}),
            ),
            masked_values: [("email".to_string(), 20u64)].into_iter().collect(),
            ..Default::default()
        });
        out.push(r);
    }
    if s.is_multiple_of(10) {
        let mut r = rec(RecordKind::PolicyDenied);
        r.action = Some(ActionInfo {
            kind: "sql".into(),
            text: "DROP TABLE orders".into(),
            ..Default::default()
        });
        r.decision = Some(DecisionInfo {
            effect: Effect::Deny,
            rules: vec![],
            reason: Some("no rule allows ddl".into()),
        });
        out.push(r);
    }
    if s.is_multiple_of(7) {
        for (kind, decision) in [
            (RecordKind::ApprovalRequested, None),
            (RecordKind::ApprovalDecided, Some("approved")),
        ] {
            let mut r = rec(kind);
            r.action = Some(ActionInfo {
                kind: "sql".into(),
                text: format!("DELETE FROM orders WHERE id = {s}"),
                ..Default::default()
            });
            r.approval = Some(ApprovalInfo {
                id: format!("apr_{s:010}"),
                decision: decision.map(str::to_string),
                approver: decision.map(|_| "user:dana".to_string()),
                ..Default::default()
            });
            out.push(r);
        }
    }
    if !s.is_multiple_of(50) {
        out.push(rec(RecordKind::SessionEnd));
    }
    out
}

fn main() {
    let target: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(target));
}

async fn run(target: u64) {
    let dir = tempfile::tempdir().unwrap();
    // CONSOLE_BENCH_DIR=path keeps the store there (to look at query plans).
    let path = std::env::var_os("CONSOLE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    let store = Arc::new(Store::open("sqlite://e.db", &path, Durability::Process).unwrap());
    let ledger = store.ledger();
    let started = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let span = Duration::from_secs(14 * 86_400);
    // About 12.5 records per session: spread the sessions evenly over 14 days.
    let sessions = target * 2 / 25;
    let mut n = 0u64;
    let mut s = 0u64;
    while n < target {
        let t0 = now - span + span.mul_f64(s as f64 / sessions.max(1) as f64);
        let batch = session(s, t0);
        let mut waits = Vec::with_capacity(batch.len());
        for r in batch {
            if n >= target {
                break;
            }
            n += 1;
            let l = ledger.clone();
            waits.push(tokio::spawn(async move { l.append(r).await }));
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
        s += 1;
    }
    ledger.flush().await.unwrap();
    eprintln!(
        "filled {n} records ({s} sessions) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let signer = Arc::new(Signer::from_seed(&[7u8; 32]));
    store.checkpoint(&signer).unwrap();

    let broker = Broker::new(store.ledger(), BrokerSettings::default());
    let tokens = Tokens(HashMap::from([(
        "dana".to_string(),
        principal("user:dana", &["dba"]),
    )]));
    let app = warden_admin::router_with(AdminParts {
        broker,
        auth: Arc::new(tokens),
        evidence: Some(EvidenceSource {
            store: store.clone(),
            public_keys: vec![signer.public().clone()],
            signer: Some(signer),
            config: serde_json::json!({"connections": [], "rules": []}),
        }),
        console: ConsoleSettings {
            verify_every: Duration::from_secs(3600),
            ..Default::default()
        },
    });
    // Let the start-up verification finish so it does not share the CPU with the timing.
    let wait = Instant::now();
    loop {
        let v = call(&app, "/api/v1/chain").await.1;
        if v["verify"].is_object() || wait.elapsed() > Duration::from_secs(120) {
            eprintln!("background verification: {}", v["verify"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let some_session = format!("{:032x}", s / 2);
    let cases: Vec<(&str, String)> = vec![
        ("inbox: approvals list", "/api/v1/approvals".into()),
        ("sessions (last 24 h)", "/api/v1/sessions?since=24h".into()),
        ("sessions (14 days)", "/api/v1/sessions?since=14d".into()),
        (
            "sessions, principal + has denials",
            "/api/v1/sessions?since=14d&principal=agent:bot10&has_denials=true".into(),
        ),
        (
            "sessions, has approvals",
            "/api/v1/sessions?since=14d&has_approvals=true".into(),
        ),
        (
            "replay one session",
            format!("/api/v1/sessions/{some_session}"),
        ),
        ("audit: last 24 h", "/api/v1/records?since=24h".into()),
        (
            "audit: kind + connection, 14 d",
            "/api/v1/records?since=14d&kind=policy.denied&connection=orders".into(),
        ),
        (
            "audit: text, common (page fills fast)",
            "/api/v1/records?since=14d&q=customer_id".into(),
        ),
        (
            "audit: text, rare (scans the window)",
            "/api/v1/records?since=14d&q=delete%20from%20orders%20where%20id%20%3D%207".into(),
        ),
        (
            "audit: text, absent (worst case: 14 d)",
            "/api/v1/records?since=14d&q=no-such-statement".into(),
        ),
        ("overview", "/api/v1/overview".into()),
        ("chain status", "/api/v1/chain".into()),
    ];
    println!("| call | median | worst | rows |");
    println!("|---|---:|---:|---:|");
    for (name, path) in &cases {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..15 {
            let t = Instant::now();
            let (status, v) = call(&app, path).await;
            times.push(t.elapsed());
            assert_eq!(status, 200, "{path}: {v}");
            rows = ["sessions", "records", "approvals", "days"]
                .iter()
                .find_map(|k| v[*k].as_array().map(|a| a.len()))
                .unwrap_or(0);
        }
        times.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {rows} |",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        );
    }
}

async fn call(app: &axum::Router, path: &str) -> (u16, serde_json::Value) {
    let req = axum::http::Request::builder()
        .uri(path)
        .header("authorization", "Bearer dana")
        .body(Body::empty())
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let body = axum::body::to_bytes(r.into_body(), 64 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}
