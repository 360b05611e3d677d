//! Evidence for auditors over the admin API: sessions and replay, audit search and
//! downloads, signed bundle export, the overview, and the chain status with a background
//! verifier. Every query runs on a blocking thread against the store's indexed, bounded
//! console queries (`warden_store::console`).
// Helpers return `Err(Response)` to short-circuit a handler with a ready answer; the size
// of `Response` does not matter on this path.
#![allow(clippy::result_large_err)]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use warden_core::{EvidenceRecord, Principal, RecordKind};
use warden_store::console::{RecentSessions, RecordSearch};
use warden_store::{ExportFilter, PublicKey, RecordFilter, Signer, Store};

use crate::console::is_auditor;
use crate::{AppState, Authenticator, error};

/// What the evidence endpoints read from.
pub struct EvidenceSource {
    pub store: Arc<Store>,
    /// Signs export bundles (and the checkpoint they need); export answers 503 without.
    pub signer: Option<Arc<Signer>>,
    /// Trusted keys for the background verification (checkpoint signatures).
    pub public_keys: Vec<PublicKey>,
    /// `{"connections": [...], "rules": [...]}` as the overview shows them (the binary
    /// builds it from the config; never credentials).
    pub config: Value,
}

pub(crate) struct Evidence {
    src: EvidenceSource,
    verify: Mutex<VerifyState>,
    kick: tokio::sync::Notify,
    every: Mutex<Duration>,
}

#[derive(Default)]
struct VerifyState {
    last: Option<Value>,
    running: bool,
}

/// The background verifier sleeps this many times as long as each chunk of records took:
/// at most a quarter of one core, however large the store.
const VERIFY_PAUSE_FACTOR: u32 = 3;

/// After a pass, the background verifier rests at least this many times as long as the
/// pass took ([`next_pass_after`]).
const VERIFY_REST_FACTOR: u32 = 4;

/// Most records a replay returns.
pub const MAX_REPLAY: u64 = 10_000;

impl Evidence {
    /// Start the background verifier (once now, then every `verify_every` and on demand).
    pub(crate) fn start(
        src: EvidenceSource,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Evidence> {
        let ev = Arc::new(Evidence {
            src,
            verify: Mutex::new(VerifyState::default()),
            kick: tokio::sync::Notify::new(),
            every: Mutex::new(Duration::from_secs(600)),
        });
        let me = Arc::downgrade(&ev);
        tokio::spawn(async move {
            loop {
                let Some(ev) = me.upgrade() else { return };
                let took = ev.run_verify().await.unwrap_or_default();
                let every = *ev.every.lock().unwrap_or_else(|p| p.into_inner());
                let every = next_pass_after(every, took);
                let kicked = async { ev.kick.notified().await };
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = kicked => {}
                    _ = crate::stopped(stopping.clone()) => return,
                }
            }
        });
        ev
    }

    pub(crate) fn set_every(&self, d: Duration) {
        *self.every.lock().unwrap_or_else(|p| p.into_inner()) = d.max(Duration::from_secs(1));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, VerifyState> {
        self.verify.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One verification pass; how long it took (`None`: one was already running).
    async fn run_verify(&self) -> Option<Duration> {
        {
            let mut s = self.state();
            if s.running {
                return None;
            }
            s.running = true;
        }
        let store = self.src.store.clone();
        let keys = self.src.public_keys.clone();
        let started = std::time::Instant::now();
        let at = warden_core::time_fmt::now_rfc3339();
        // Paced: a full pass over a large store must not take a core away from the data
        // path (nor hold one read snapshot that keeps the WAL from being checkpointed).
        let r = tokio::task::spawn_blocking(move || {
            store.verify_evidence_paced(&keys, &mut |_, _| {}, &mut |busy| {
                std::thread::sleep(busy * VERIFY_PAUSE_FACTOR)
            })
        })
        .await;
        let took_ms = started.elapsed().as_millis() as u64;
        let v = match r {
            Ok(Ok(rep)) => {
                if let Some(p) = &rep.problem {
                    tracing::error!(
                        seq = p.seq,
                        kind = p.kind.as_str(),
                        "evidence verification failed: {}",
                        p.what
                    );
                }
                json!({
                    "at": at, "ok": rep.problem.is_none(), "records": rep.records,
                    "head_seq": rep.head_seq, "checkpoints_verified": rep.checkpoints_verified,
                    "signatures_checked": rep.signatures_checked, "unsigned_tail": rep.unsigned_tail,
                    "problem": rep.problem.as_ref().map(|p| json!({"seq": p.seq, "kind": p.kind.as_str(), "what": p.what})),
                    "took_ms": took_ms,
                })
            }
            Ok(Err(e)) => {
                json!({"at": at, "ok": false, "error": e.to_string(), "took_ms": took_ms})
            }
            Err(e) => json!({"at": at, "ok": false, "error": e.to_string(), "took_ms": took_ms}),
        };
        let mut s = self.state();
        s.last = Some(v);
        s.running = false;
        Some(started.elapsed())
    }
}

/// When the next scheduled pass starts after one that took `took`: `every`, but never
/// sooner than 4× the pass's own duration. With the pacing (a quarter of a core while it
/// runs) that bounds the verifier to 5 % of one core on average, however large the store
/// grows; *Verify now* still starts a pass at once.
fn next_pass_after(every: Duration, took: Duration) -> Duration {
    every.max(took.saturating_mul(VERIFY_REST_FACTOR))
}

/// The evidence source, if the caller may read it.
fn auditor<A>(st: &AppState<A>, p: &Principal) -> Result<Arc<Evidence>, Response> {
    if !is_auditor(p, &st.console.settings.auditors) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not_an_auditor",
            format!(
                "{} may not read evidence (auditors: {})",
                p.id,
                if st.console.settings.auditors.is_empty() {
                    "every user: principal".to_string()
                } else {
                    st.console.settings.auditors.join(", ")
                }
            ),
        ));
    }
    st.evidence.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_store",
            "this admin listener has no evidence store",
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, warden_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
    }
}

fn store_error(e: warden_store::StoreError) -> Response {
    let msg = e.to_string();
    // Bad time bounds come back from the store as errors naming the value.
    if msg.contains("is not a time") {
        error(StatusCode::BAD_REQUEST, "bad_request", msg)
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "store", msg)
    }
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[derive(Deserialize, Default)]
pub(crate) struct SessionsQuery {
    since: Option<String>,
    until: Option<String>,
    principal: Option<String>,
    connection: Option<String>,
    has_denials: Option<String>,
    has_approvals: Option<String>,
    limit: Option<u64>,
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | "on" | "yes"))
}

/// `GET /api/v1/sessions`.
pub(crate) async fn sessions<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    Query(q): Query<SessionsQuery>,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let f = RecentSessions {
        since: nonempty(q.since),
        until: nonempty(q.until),
        principal: nonempty(q.principal),
        connection: nonempty(q.connection),
        has_denials: flag(&q.has_denials),
        has_approvals: flag(&q.has_approvals),
        limit: q.limit,
    };
    match blocking(move || ev.src.store.recent_sessions(&f)).await {
        Ok(list) => axum::Json(json!({ "sessions": list })).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/sessions/{id}`: the summary and the records in order (a unique id
/// prefix is enough).
pub(crate) async fn session<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let wanted = id.clone();
    let r = blocking(move || {
        let s = match ev.src.store.find_session(&wanted)? {
            Ok(s) => s,
            Err(n) => return Ok(Err(n)),
        };
        let mut records: Vec<Value> = Vec::new();
        ev.src.store.query_bodies(
            &RecordFilter {
                session_id: Some(s.session_id.clone()),
                limit: Some(MAX_REPLAY),
                ..Default::default()
            },
            &mut |_, body| {
                records.push(serde_json::from_str(&body).unwrap_or(Value::Null));
                true
            },
        )?;
        Ok(Ok((s, records)))
    })
    .await;
    match r {
        Ok(Ok((s, records))) => {
            let truncated = s.records > records.len() as u64;
            axum::Json(json!({ "session": s, "records": records, "truncated": truncated }))
                .into_response()
        }
        Ok(Err(0)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session `{id}`"),
        ),
        Ok(Err(_)) => error(
            StatusCode::CONFLICT,
            "ambiguous",
            format!("`{id}` matches several sessions; give more of the id"),
        ),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct RecordsQuery {
    since: Option<String>,
    until: Option<String>,
    principal: Option<String>,
    connection: Option<String>,
    kind: Option<String>,
    session: Option<String>,
    /// Free text on the statement / request line.
    q: Option<String>,
    /// Next page: records with seq below this.
    before: Option<u64>,
    limit: Option<u64>,
    /// `json` (a page, newest first), `csv` or `ndjson` (a download of every match,
    /// oldest first).
    format: Option<String>,
}

fn check_kind(kind: &Option<String>) -> Result<(), Response> {
    if let Some(k) = kind
        && RecordKind::parse(k).is_none()
    {
        let all: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown kind `{k}`; known: {}", all.join(", ")),
        ));
    }
    Ok(())
}

/// `GET /api/v1/records`.
pub(crate) async fn records<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    Query(q): Query<RecordsQuery>,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let kind = nonempty(q.kind);
    if let Err(r) = check_kind(&kind) {
        return r;
    }
    let filter = RecordFilter {
        since: nonempty(q.since),
        until: nonempty(q.until),
        principal: nonempty(q.principal),
        connection: nonempty(q.connection),
        kind,
        session_id: nonempty(q.session),
        limit: q.limit,
    };
    let text = nonempty(q.q);
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let search = RecordSearch {
                filter,
                text,
                before_seq: q.before,
            };
            let r = blocking(move || {
                let mut out: Vec<Value> = Vec::new();
                let next = ev.src.store.search_records(&search, &mut |_, body| {
                    out.push(serde_json::from_str(&body).unwrap_or(Value::Null));
                })?;
                Ok(json!({ "records": out, "next_before": next }))
            })
            .await;
            match r {
                Ok(v) => axum::Json(v).into_response(),
                Err(r) => r,
            }
        }
        f @ ("csv" | "ndjson") => download(ev, filter, text, f == "csv"),
        other => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("format=`{other}`: use json, csv or ndjson"),
        ),
    }
}

/// The CSV header of downloads (the same columns as `warden audit query --format csv`).
pub const CSV_HEADER: &str = "seq,id,ts,kind,session_id,principal,on_behalf_of,connection,protocol,purpose,client,action,params,effect,rules,status,rows,bytes,detail,hash";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One record as a CSV line (columns of [`CSV_HEADER`]).
pub fn csv_row(r: &EvidenceRecord) -> String {
    let p = r.principal.as_ref();
    let a = r.action.as_ref();
    let d = r.decision.as_ref();
    let resp = r.response.as_ref();
    let fields: Vec<String> = vec![
        r.seq.to_string(),
        r.id.clone(),
        r.ts.clone(),
        r.kind.as_str().to_string(),
        r.session_id.clone().unwrap_or_default(),
        p.map(|p| p.id.clone()).unwrap_or_default(),
        p.and_then(|p| p.on_behalf_of.clone()).unwrap_or_default(),
        r.connection.clone().unwrap_or_default(),
        r.protocol.clone().unwrap_or_default(),
        r.purpose.clone().unwrap_or_default(),
        r.client.clone().unwrap_or_default(),
        a.map(|a| a.text.clone()).unwrap_or_default(),
        a.filter(|a| !a.params.is_empty())
            .map(|a| serde_json::to_string(&a.params).unwrap_or_default())
            .unwrap_or_default(),
        d.map(|d| d.effect.as_str().to_string()).unwrap_or_default(),
        d.map(|d| d.rules.join(" ")).unwrap_or_default(),
        resp.map(|r| r.status.clone()).unwrap_or_default(),
        resp.map(|r| r.rows.to_string()).unwrap_or_default(),
        resp.map(|r| r.bytes.to_string()).unwrap_or_default(),
        r.detail.clone().unwrap_or_default(),
        r.hash.clone(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every matching record, oldest first, streamed (bounded memory whatever the count).
fn download(ev: Arc<Evidence>, filter: RecordFilter, text: Option<String>, csv: bool) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let needle = text.map(|t| t.to_lowercase());
    tokio::task::spawn_blocking(move || {
        let mut buf = String::new();
        if csv {
            buf.push_str(CSV_HEADER);
            buf.push('\n');
        }
        let mut failed = false;
        let r = ev.src.store.query_bodies(&filter, &mut |_, body| {
            let rec: Option<EvidenceRecord> = serde_json::from_str(&body).ok();
            if let Some(n) = &needle {
                let hit = rec
                    .as_ref()
                    .and_then(|r| r.action.as_ref())
                    .is_some_and(|a| a.text.to_lowercase().contains(n.as_str()));
                if !hit {
                    return true;
                }
            }
            if csv {
                if let Some(r) = &rec {
                    buf.push_str(&csv_row(r));
                    buf.push('\n');
                }
            } else {
                buf.push_str(&body);
                buf.push('\n');
            }
            if buf.len() > 64 * 1024 {
                let chunk = Bytes::from(std::mem::take(&mut buf));
                if tx.blocking_send(Ok(chunk)).is_err() {
                    failed = true;
                    return false;
                }
            }
            true
        });
        if failed {
            return;
        }
        match r {
            Ok(_) => {
                if !buf.is_empty() {
                    let _ = tx.blocking_send(Ok(Bytes::from(buf)));
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let (ct, name) = if csv {
        ("text/csv; charset=utf-8", "warden-records.csv")
    } else {
        ("application/x-ndjson", "warden-records.ndjson")
    };
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")).expect("ascii"),
    );
    r
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportBody {
    since: Option<String>,
    until: Option<String>,
    principal: Option<String>,
    connection: Option<String>,
    kind: Option<String>,
}

/// `POST /api/v1/evidence/export`: a signed bundle (the same file as `warden evidence
/// export`), verifiable offline with `warden evidence verify FILE --public-key KEY`.
pub(crate) async fn export<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Bytes,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let b: ExportBody = if body.iter().all(u8::is_ascii_whitespace) {
        ExportBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "body must be JSON with since, until, principal, connection, kind: {e}"
                    ),
                );
            }
        }
    };
    let kind = nonempty(b.kind);
    if let Err(r) = check_kind(&kind) {
        return r;
    }
    let filter = ExportFilter {
        since: nonempty(b.since),
        until: nonempty(b.until),
        principal: nonempty(b.principal),
        connection: nonempty(b.connection),
        kind,
    };
    let Some(signer) = ev.src.signer.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_signing_key",
            "this gateway has no signing key to sign bundles with",
        );
    };
    let by = format!("warden {} console ({})", env!("CARGO_PKG_VERSION"), p.id);
    let who = p.id.clone();
    let r = blocking(move || ev.src.store.export_bundle(&filter, &signer, &by)).await;
    match r {
        Ok((bundle, summary)) => {
            tracing::info!(principal = %who, records = summary.records, "console: evidence bundle exported");
            let bytes = warden_store::bundle::bundle_bytes(&bundle);
            let name = match (summary.first_seq, summary.last_seq) {
                (Some(a), Some(b)) => format!("warden-evidence-{a}-{b}.json"),
                _ => "warden-evidence-empty.json".to_string(),
            };
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")).expect("ascii"),
            );
            h.insert(
                "x-warden-records",
                HeaderValue::from_str(&summary.records.to_string()).expect("digits"),
            );
            r
        }
        Err(r) => r,
    }
}

/// `GET /api/v1/overview`.
pub(crate) async fn overview<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let pending = st.broker.pending();
    let e2 = ev.clone();
    let r = blocking(move || {
        let days = e2.src.store.counts_per_day("14d")?;
        let active = e2.src.store.active_sessions("15m")?;
        Ok((days, active))
    })
    .await;
    match r {
        Ok((days, active)) => axum::Json(json!({
            "connections": ev.src.config.get("connections").cloned().unwrap_or(json!([])),
            "rules": ev.src.config.get("rules").cloned().unwrap_or(json!([])),
            "days": days,
            "active": active,
            "active_window": "15m",
            "pending_approvals": pending,
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/chain`.
pub(crate) async fn chain<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let e2 = ev.clone();
    let r = blocking(move || Ok((e2.src.store.head()?, e2.src.store.latest_checkpoint()?))).await;
    match r {
        Ok(((seq, hash), cp)) => {
            let s = ev.state();
            axum::Json(json!({
                "head_seq": seq, "head_hash": hash, "checkpoint": cp,
                "verify": s.last, "verifying": s.running,
            }))
            .into_response()
        }
        Err(r) => r,
    }
}

/// `POST /api/v1/chain/verify`: start a full verification now (202); `GET /chain` shows
/// the result when done.
pub(crate) async fn verify_now<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    let ev = match auditor(&st, &p) {
        Ok(e) => e,
        Err(r) => return r,
    };
    ev.kick.notify_one();
    (StatusCode::ACCEPTED, axum::Json(json!({"verifying": true}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_pass_pushes_the_next_one_back() {
        let every = Duration::from_secs(600);
        assert_eq!(next_pass_after(every, Duration::from_secs(2)), every);
        assert_eq!(
            next_pass_after(every, Duration::from_secs(300)),
            Duration::from_secs(1200)
        );
        assert_eq!(
            next_pass_after(every, Duration::MAX),
            Duration::MAX,
            "no overflow"
        );
    }
}
