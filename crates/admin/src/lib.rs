//! The admin HTTP API (PRODUCT.md: `127.0.0.1:8081`), JSON over HTTP/1.1 (axum).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `200 ok` (no credential needed) |
//! | GET | `/api/v1/approvals[?pending=true]` | `{"approvals": [ApprovalView, ...]}`, oldest first |
//! | GET | `/api/v1/approvals/{id}` | `ApprovalView` or 404 |
//! | POST | `/api/v1/approvals/{id}/approve` | body `{"comment": "..."}` (optional) → `ApprovalView` |
//! | POST | `/api/v1/approvals/{id}/deny` | same |
//!
//! Every `/api/v1/...` call needs `Authorization: Bearer <Warden key or JWT>`; without a
//! valid one the answer is 401 (and a presented-but-invalid credential is recorded as
//! `auth.failed`). The caller is the approver: the broker refuses self-approval and
//! non-approvers (403), unknown ids (404), decided holds and second votes (409), and
//! answers 503 when the decision cannot be recorded. Errors are
//! `{"error": "<sentence>", "code": "<code>"}`.
#![forbid(unsafe_code)]

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
use warden_approvals::{Broker, DecideError};
use warden_core::Principal;
use warden_pipeline::Pipeline;

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

struct AppState<A> {
    broker: Arc<Broker>,
    auth: Arc<A>,
}

impl<A> Clone for AppState<A> {
    fn clone(&self) -> Self {
        AppState {
            broker: self.broker.clone(),
            auth: self.auth.clone(),
        }
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into(), "code": code });
    (status, axum::Json(body)).into_response()
}

fn decide_error(e: &DecideError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.code(), e.to_string())
}

/// The routes, for embedding or tests.
pub fn router<A: Authenticator>(broker: Arc<Broker>, auth: Arc<A>) -> Router {
    let state = AppState { broker, auth };
    let api = Router::new()
        .route("/approvals", get(list::<A>))
        .route("/approvals/{id}", get(show::<A>))
        .route("/approvals/{id}/approve", post(approve::<A>))
        .route("/approvals/{id}/deny", post(deny::<A>))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_auth::<A>,
        ))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .nest("/api/v1", api)
}

/// Serve the admin API on `listener` until `shutdown` resolves.
pub async fn serve<A: Authenticator>(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    auth: Arc<A>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(broker, auth);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
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

async fn require_auth<A: Authenticator>(
    State(st): State<AppState<A>>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let Some(token) = bearer(req.headers()) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <Warden key or JWT>`",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        return r;
    };
    match st.auth.authenticate(token, &client).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(reason) => {
            tracing::warn!(%client, %reason, "admin API: authentication failed");
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!("credential rejected: {reason}"),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            r
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    pending: Option<String>,
}

async fn list<A: Authenticator>(
    State(st): State<AppState<A>>,
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
    axum::Json(serde_json::json!({ "approvals": st.broker.list(pending) })).into_response()
}

async fn show<A: Authenticator>(State(st): State<AppState<A>>, Path(id): Path<String>) -> Response {
    match st.broker.get(&id) {
        Some(v) => axum::Json(v).into_response(),
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
