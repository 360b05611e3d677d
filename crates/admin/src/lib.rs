//! The admin listener (PRODUCT.md: `127.0.0.1:8081`): the JSON admin API under
//! `/api/v1`, the embedded web console at `/`, and `/healthz` (axum, HTTP/1.1).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `200 ok` (no credential needed) |
//! | GET | `/`, `/console.js`, `/console.css` | the web console (embedded; [`console`]) |
//! | GET | `/api/v1/openapi.json` | the OpenAPI 3.1 document of everything below (no credential) |
//! | POST | `/api/v1/login` | body `{"credential": "<Warden key or JWT>"}` → console session cookie + CSRF token |
//! | POST | `/api/v1/logout` | ends the console session |
//! | GET | `/api/v1/me` | who is calling, what they may do, the CSRF token of a console session |
//! | GET | `/api/v1/approvals[?pending=true]` | `{"approvals": [ApprovalView + may_decide, ...]}`, oldest first |
//! | GET | `/api/v1/approvals/events` | server-sent events: the same list on every change |
//! | GET | `/api/v1/approvals/{id}` | `ApprovalView` or 404 |
//! | POST | `/api/v1/approvals/{id}/approve` | body `{"comment": "..."}` (optional) → `ApprovalView` |
//! | POST | `/api/v1/approvals/{id}/deny` | same |
//! | GET | `/api/v1/sessions` | sessions that started in a window, newest first, with filters |
//! | GET | `/api/v1/sessions/{id}` | one session and its records, in order (replay) |
//! | GET | `/api/v1/records` | audit search (json page, or csv / ndjson download) |
//! | POST | `/api/v1/evidence/export` | a signed evidence bundle of the selected records |
//! | GET | `/api/v1/overview` | connections, rules, records per day, active sessions |
//! | GET | `/api/v1/chain` | chain head, last signed checkpoint, last verification |
//! | POST | `/api/v1/chain/verify` | start a full verification now |
//!
//! Every other `/api/v1/...` call needs a caller: `Authorization: Bearer <Warden key or
//! JWT>` (scripts, the CLI) or the console's session cookie. A cookie-authenticated
//! request that changes anything (any method but GET/HEAD) must also carry the session's
//! CSRF token in `X-CSRF-Token`, and its `Origin`, when sent, must be this listener's.
//! Without a valid caller the answer is 401 (and a presented-but-invalid credential is
//! recorded as `auth.failed`). Approvals: the caller is the approver; the broker refuses
//! self-approval and non-approvers (403), unknown ids (404), decided holds and second
//! votes (409), and answers 503 when the decision cannot be recorded. Evidence (sessions,
//! records, export, overview, chain) is for auditors: by default every `user:` principal,
//! never an agent ([`ConsoleSettings::auditors`]); others get 403. Errors are
//! `{"error": "<sentence>", "code": "<code>"}`.
#![forbid(unsafe_code)]

pub mod console;
mod events;
pub mod evidence;
pub mod openapi;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use warden_approvals::{ApprovalView, Broker, DecideError};
use warden_core::Principal;
use warden_pipeline::Pipeline;

pub use console::ConsoleSettings;
pub use evidence::EvidenceSource;

/// Who is calling: checks a bearer credential.
pub trait Authenticator: Send + Sync + 'static {
    /// The principal behind `token` (a Warden key or a JWT), or why not. `client` is the
    /// caller's address, for the evidence of a failure.
    fn authenticate(
        &self,
        token: &str,
        client: &str,
    ) -> impl Future<Output = Result<Principal, String>> + Send;
}

impl Authenticator for Pipeline {
    async fn authenticate(&self, token: &str, client: &str) -> Result<Principal, String> {
        match self.authenticate_secret(None, token).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.record_auth_failed("(bearer token)", None, "admin", client, &e.reason)
                    .await;
                Err(e.reason)
            }
        }
    }
}

/// Everything the admin listener serves from.
pub struct AdminParts<A> {
    pub broker: Arc<Broker>,
    pub auth: Arc<A>,
    /// The evidence store and what goes with it; without it the evidence endpoints
    /// answer 503 (the approvals API still works).
    pub evidence: Option<EvidenceSource>,
    pub console: ConsoleSettings,
}

struct AppState<A> {
    broker: Arc<Broker>,
    auth: Arc<A>,
    console: Arc<console::Sessions>,
    evidence: Option<Arc<evidence::Evidence>>,
    /// Becomes true on shutdown: live event streams end so the server can stop.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl<A> Clone for AppState<A> {
    fn clone(&self) -> Self {
        AppState {
            broker: self.broker.clone(),
            auth: self.auth.clone(),
            console: self.console.clone(),
            evidence: self.evidence.clone(),
            stopping: self.stopping.clone(),
        }
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into(), "code": code });
    (status, axum::Json(body)).into_response()
}

fn decide_error(e: &DecideError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.code(), e.to_string())
}

/// The approvals API alone (no store, default console settings), for embedding or tests.
pub fn router<A: Authenticator>(broker: Arc<Broker>, auth: Arc<A>) -> Router {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    build(
        AdminParts {
            broker,
            auth,
            evidence: None,
            console: ConsoleSettings::default(),
        },
        rx,
    )
}

/// Everything (approvals, evidence, console) as a router, for embedding or tests; event
/// streams end only when their clients go away.
pub fn router_with<A: Authenticator>(parts: AdminParts<A>) -> Router {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    build(parts, rx)
}

/// Resolves when `rx` says the server is stopping (never, once its sender is gone).
pub(crate) async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Every route of the admin listener, as (method, path) — the OpenAPI document must
/// describe each (a unit test checks it, and that each is really routed).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/login"),
    ("post", "/api/v1/logout"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/approvals"),
    ("get", "/api/v1/approvals/events"),
    ("get", "/api/v1/approvals/{id}"),
    ("post", "/api/v1/approvals/{id}/approve"),
    ("post", "/api/v1/approvals/{id}/deny"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{id}"),
    ("get", "/api/v1/records"),
    ("post", "/api/v1/evidence/export"),
    ("get", "/api/v1/overview"),
    ("get", "/api/v1/chain"),
    ("post", "/api/v1/chain/verify"),
];

fn build<A: Authenticator>(
    parts: AdminParts<A>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let evidence = parts.evidence.map(|e| {
        let ev = evidence::Evidence::start(e, stopping.clone());
        ev.set_every(parts.console.verify_every);
        ev
    });
    let state = AppState {
        broker: parts.broker,
        auth: parts.auth,
        console: Arc::new(console::Sessions::new(parts.console)),
        evidence,
        stopping,
    };
    let api = Router::new()
        .route("/me", get(console::me::<A>))
        .route("/logout", post(console::logout::<A>))
        .route("/approvals", get(list::<A>))
        .route("/approvals/events", get(events::stream::<A>))
        .route("/approvals/{id}", get(show::<A>))
        .route("/approvals/{id}/approve", post(approve::<A>))
        .route("/approvals/{id}/deny", post(deny::<A>))
        .route("/sessions", get(evidence::sessions::<A>))
        .route("/sessions/{id}", get(evidence::session::<A>))
        .route("/records", get(evidence::records::<A>))
        .route("/evidence/export", post(evidence::export::<A>))
        .route("/overview", get(evidence::overview::<A>))
        .route("/chain", get(evidence::chain::<A>))
        .route("/chain/verify", post(evidence::verify_now::<A>))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_auth::<A>,
        ))
        .with_state(state.clone());
    let open = Router::new()
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/login", post(console::login::<A>))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(console::assets())
        .merge(open)
        .nest("/api/v1", api)
        .layer(axum::middleware::from_fn(console::security_headers))
}

/// Serve the approvals API on `listener` until `shutdown` resolves.
pub async fn serve<A: Authenticator>(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    auth: Arc<A>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_all(
        listener,
        AdminParts {
            broker,
            auth,
            evidence: None,
            console: ConsoleSettings::default(),
        },
        shutdown,
    )
    .await
}

/// Serve the admin API and the console on `listener` until `shutdown` resolves.
pub async fn serve_all<A: Authenticator>(
    listener: tokio::net::TcpListener,
    parts: AdminParts<A>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = build(parts, rx);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(true);
    })
    .await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(crate) fn client_of(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn unauthenticated(message: String) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
    r
}

/// How the caller authenticated (a request extension beside the [`Principal`]).
#[derive(Clone)]
pub(crate) struct Caller {
    /// The console session's CSRF token, when the caller came with the cookie.
    pub csrf: Option<String>,
    /// The console session (SHA-256 of its cookie), to end live streams with it.
    pub session: Option<[u8; 32]>,
}

async fn require_auth<A: Authenticator>(
    State(st): State<AppState<A>>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = client_of(&req);
    if let Some(token) = bearer(req.headers()) {
        return match st.auth.authenticate(token, &client).await {
            Ok(p) => {
                req.extensions_mut().insert(p);
                req.extensions_mut().insert(Caller {
                    csrf: None,
                    session: None,
                });
                next.run(req).await
            }
            Err(reason) => {
                tracing::warn!(%client, %reason, "admin API: authentication failed");
                unauthenticated(format!("credential rejected: {reason}"))
            }
        };
    }
    match st.console.check(&req) {
        Ok((p, csrf, session)) => {
            req.extensions_mut().insert(p);
            req.extensions_mut().insert(Caller {
                csrf: Some(csrf),
                session: Some(session),
            });
            next.run(req).await
        }
        Err(console::Refused::NoSession) => {
            unauthenticated("send `Authorization: Bearer <Warden key or JWT>` or sign in".into())
        }
        Err(console::Refused::Csrf(why)) => {
            tracing::warn!(%client, method = %req.method(), path = %req.uri().path(), "console: request refused: {why}");
            error(StatusCode::FORBIDDEN, "csrf", why)
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    pending: Option<String>,
}

/// A hold as the caller sees it: the view, and whether they may vote on it (the same
/// checks the broker applies when they do).
pub(crate) fn view_for(broker: &Broker, v: ApprovalView, who: &Principal) -> serde_json::Value {
    let verdict = broker.may_decide(&v.id, who);
    let mut j = serde_json::to_value(&v).unwrap_or_default();
    if let Some(m) = j.as_object_mut() {
        m.insert("may_decide".into(), verdict.is_ok().into());
        if let Err(e) = verdict {
            m.insert("why_not".into(), e.to_string().into());
        }
    }
    j
}

pub(crate) fn list_for(broker: &Broker, pending: bool, who: &Principal) -> serde_json::Value {
    let list: Vec<serde_json::Value> = broker
        .list(pending)
        .into_iter()
        .map(|v| view_for(broker, v, who))
        .collect();
    serde_json::json!({ "approvals": list })
}

async fn list<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let pending = match q.pending.as_deref() {
        None | Some("false") | Some("0") | Some("no") => false,
        Some("true") | Some("1") | Some("yes") | Some("") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("pending=`{other}`: use true or false"),
            );
        }
    };
    axum::Json(list_for(&st.broker, pending, &p)).into_response()
}

async fn show<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match st.broker.get(&id) {
        Some(v) => axum::Json(view_for(&st.broker, v, &p)).into_response(),
        None => decide_error(&DecideError::NotFound(id)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    #[serde(default)]
    comment: Option<String>,
}

/// Longest comment kept (characters).
pub const MAX_COMMENT: usize = 2000;

async fn decide<A: Authenticator>(
    st: AppState<A>,
    id: String,
    approver: Principal,
    body: Bytes,
    approve: bool,
) -> Response {
    let body: DecideBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecideBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("body must be JSON like {{\"comment\": \"...\"}}: {e}"),
                );
            }
        }
    };
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("comment is longer than {MAX_COMMENT} characters"),
        );
    }
    match st
        .broker
        .decide(&id, &approver, approve, body.comment)
        .await
    {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => decide_error(&e),
    }
}

async fn approve<A: Authenticator>(
    State(st): State<AppState<A>>,
    Path(id): Path<String>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Bytes,
) -> Response {
    decide(st, id, p, body, true).await
}

async fn deny<A: Authenticator>(
    State(st): State<AppState<A>>,
    Path(id): Path<String>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Bytes,
) -> Response {
    decide(st, id, p, body, false).await
}
