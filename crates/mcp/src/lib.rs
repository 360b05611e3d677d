//! The MCP front door: Warden as the MCP server an agent is given (`/mcp` on the HTTP
//! listener, streamable HTTP transport, JSON responses).
//!
//! Every tool call goes through the same pipeline as the wire protocols: the bearer
//! credential (Warden key or JWT) is checked on every POST (`Pipeline::authenticate_secret`),
//! statements are classified and decided (`Session::decide_sql` / `decide_http`), held
//! for approval when a rule says so, and the `action.request` record is **committed
//! before** anything reaches the target (fail closed); results are masked with the
//! connection's masker before the agent (or the evidence) sees them.
//!
//! - [`jsonrpc`]: JSON-RPC 2.0 parsing of untrusted POST bodies (errors, never panics).
//! - [`tools`]: the tool list and argument parsing.
//! - `calls`: the tools themselves (`list_connections`, `describe_connection`, `query`,
//!   `http_request`, `approval_status`).
//!
//! Sessions: `initialize` creates an MCP session bound to the caller's principal and
//! answers its id in `Mcp-Session-Id`. That id is also the evidence `session_id`: the
//! first call touching a connection opens an evidence session with that id on that
//! connection (`Session::open_as`, `protocol = "mcp"`); `DELETE /mcp`, idle expiry or
//! shutdown end them (`session.end`). A request whose credential names another principal
//! than the session's is treated as an unknown session (404).
#![forbid(unsafe_code)]

mod calls;
pub mod jsonrpc;
pub mod tools;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use warden_core::Principal;
use warden_http::body::{ProxyBody, full};
use warden_pipeline::{ConnectionSpec, Pipeline, Protocol, Session, SessionEnd};

use jsonrpc::{Body, Message, RpcError};

const PROTO: &str = "mcp";
/// Protocol versions this server speaks (newest first).
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Settings (`[mcp]` in the config).
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Most rows a `query` returns to the agent (more are counted, flagged `truncated`).
    pub max_rows: usize,
    /// How long a held call waits for the decision before answering "pending" with the
    /// approval id (0 = answer at once).
    pub approval_wait: Duration,
    /// Time allowed for one statement or HTTP request on the target.
    pub call_timeout: Duration,
    /// An MCP session ends after this long without requests.
    pub session_idle: Duration,
    /// Most open MCP sessions.
    pub max_sessions: usize,
    /// Largest POST body accepted.
    pub max_body: usize,
    /// Most bytes of an `http_request` response body returned (masked) to the agent.
    pub max_response_body: usize,
    /// Authorization servers named in the protected-resource metadata (OIDC issuer).
    pub authorization_servers: Vec<String>,
    pub upstream_connect_timeout: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            max_rows: 200,
            approval_wait: Duration::ZERO,
            call_timeout: Duration::from_secs(60),
            session_idle: Duration::from_secs(1800),
            max_sessions: 10_000,
            max_body: 4 * 1024 * 1024,
            max_response_body: 1024 * 1024,
            authorization_servers: Vec::new(),
            upstream_connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One connection's evidence session inside an MCP session.
struct Slot {
    session: Arc<Session>,
    /// Serializes "set purpose → decide → record" of concurrent calls on one slot.
    gate: tokio::sync::Mutex<()>,
}

struct McpSession {
    id: String,
    principal: Principal,
    client: String,
    last_used: Mutex<Instant>,
    in_flight: Arc<AtomicUsize>,
    slots: tokio::sync::Mutex<HashMap<String, Arc<Slot>>>,
}

impl McpSession {
    async fn slot(
        &self,
        pipeline: &Arc<Pipeline>,
        spec: &Arc<ConnectionSpec>,
    ) -> Result<Arc<Slot>, String> {
        let mut slots = self.slots.lock().await;
        if let Some(s) = slots.get(&spec.name) {
            return Ok(s.clone());
        }
        let session = Session::open_as(
            pipeline.clone(),
            self.principal.clone(),
            spec.clone(),
            self.client.clone(),
            self.id.clone(),
            Protocol::Mcp,
        )
        .await
        .map_err(|e| e.to_string())?;
        let slot = Arc::new(Slot {
            session,
            gate: tokio::sync::Mutex::new(()),
        });
        slots.insert(spec.name.clone(), slot.clone());
        Ok(slot)
    }

    async fn end(&self, why: SessionEnd) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().await.drain().map(|(_, s)| s).collect();
        for s in slots {
            s.session.end(why.clone()).await;
        }
    }
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The MCP server. Cheap to share (`Arc`).
pub struct McpServer {
    pipeline: Arc<Pipeline>,
    config: McpConfig,
    sessions: Mutex<HashMap<String, Arc<McpSession>>>,
    /// Approval ids already spent by a retry (each approves one call).
    used_approvals: Mutex<HashSet<String>>,
    upstreams: warden_http::upstream::Upstreams,
    inject: HashMap<String, Vec<(HeaderName, HeaderValue)>>,
}

impl McpServer {
    pub fn new(pipeline: Arc<Pipeline>, config: McpConfig) -> Result<Arc<McpServer>, String> {
        let specs: Vec<ConnectionSpec> = pipeline.connections().map(|c| (**c).clone()).collect();
        let upstreams =
            warden_http::upstream::Upstreams::build(specs.iter(), config.upstream_connect_timeout)?;
        let mut inject = HashMap::new();
        for c in &specs {
            if c.protocol == Protocol::Http {
                let h = warden_http::headers::parse_inject(&c.headers)
                    .map_err(|e| format!("connection `{}`: {e}", c.name))?;
                inject.insert(c.name.clone(), h);
            }
        }
        Ok(Arc::new(McpServer {
            pipeline,
            config,
            sessions: Mutex::new(HashMap::new()),
            used_approvals: Mutex::new(HashSet::new()),
            upstreams,
            inject,
        }))
    }

    /// The [`warden_http::FrontDoor`] that serves this server on the HTTP listener.
    pub fn front_door(self: &Arc<Self>) -> Arc<dyn warden_http::FrontDoor> {
        Arc::new(Door(self.clone()))
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<McpSession>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open MCP sessions.
    pub fn open_sessions(&self) -> usize {
        self.lock_sessions().len()
    }

    /// End sessions idle longer than `session_idle` (or all, on shutdown).
    pub async fn sweep(&self, all: bool) {
        let now = Instant::now();
        let expired: Vec<Arc<McpSession>> = {
            let mut map = self.lock_sessions();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| {
                    all || (s.in_flight.load(Ordering::Acquire) == 0
                        && now
                            .duration_since(*s.last_used.lock().unwrap_or_else(|p| p.into_inner()))
                            >= self.config.session_idle)
                })
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        let why = if all {
            SessionEnd::Shutdown
        } else {
            SessionEnd::Idle(warden_approvals::humanize(self.config.session_idle))
        };
        for s in expired {
            s.end(why.clone()).await;
        }
    }

    /// Sweep idle sessions in the background until the runtime stops.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let every =
            (self.config.session_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                me.sweep(false).await;
            }
        })
    }

    /// Serve one request on `/mcp` or the metadata path.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<ProxyBody> {
        let path = req.uri().path().to_string();
        if path.starts_with("/.well-known/oauth-protected-resource") {
            return if req.method() == Method::GET || req.method() == Method::HEAD {
                json_response(StatusCode::OK, self.resource_metadata(&req, scheme))
            } else {
                method_not_allowed("GET")
            };
        }
        if let Some(origin) = req.headers().get(header::ORIGIN)
            && !origin_ok(origin, req.headers().get(header::HOST))
        {
            return plain_error(
                StatusCode::FORBIDDEN,
                "Warden: cross-origin MCP requests are refused (Origin does not match Host)",
            );
        }
        match *req.method() {
            Method::POST => self.post(req, peer, scheme).await,
            Method::DELETE => self.delete(req, peer, scheme).await,
            _ => method_not_allowed("POST, DELETE"),
        }
    }

    fn resource_url(&self, req: &Request<Incoming>, scheme: &str) -> String {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            })
            .unwrap_or_else(|| "127.0.0.1".into());
        format!("{scheme}://{host}/mcp")
    }

    fn metadata_url(&self, req: &Request<Incoming>, scheme: &str) -> String {
        let r = self.resource_url(req, scheme);
        let base = r.trim_end_matches("/mcp");
        format!("{base}/.well-known/oauth-protected-resource/mcp")
    }

    /// RFC 9728 protected-resource metadata.
    fn resource_metadata(&self, req: &Request<Incoming>, scheme: &str) -> Value {
        json!({
            "resource": self.resource_url(req, scheme),
            "authorization_servers": self.config.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "Warden",
        })
    }

    fn unauthorized(
        &self,
        req: &Request<Incoming>,
        scheme: &str,
        msg: &str,
        bad: bool,
    ) -> Response<ProxyBody> {
        let meta = self.metadata_url(req, scheme);
        let challenge = if bad {
            format!(r#"Bearer realm="warden", error="invalid_token", resource_metadata="{meta}""#)
        } else {
            format!(r#"Bearer realm="warden", resource_metadata="{meta}""#)
        };
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthenticated", "message": msg}),
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }

    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
        scheme: &str,
    ) -> Result<Principal, Response<ProxyBody>> {
        let client = peer.to_string();
        let secret = match bearer(req.headers()) {
            Ok(s) => s,
            Err(why) => {
                self.pipeline
                    .record_auth_failed("", None, PROTO, &client, why)
                    .await;
                return Err(self.unauthorized(req, scheme, &format!("Warden: {why}"), false));
            }
        };
        match self.pipeline.authenticate_secret(None, secret).await {
            Ok(p) => Ok(p),
            Err(f) => {
                self.pipeline
                    .record_auth_failed("", None, PROTO, &client, &f.reason)
                    .await;
                Err(self.unauthorized(req, scheme, "Warden: the credential was not accepted", true))
            }
        }
    }

    /// The session named by `Mcp-Session-Id`, if it exists and belongs to `principal`.
    #[allow(clippy::result_large_err)] // the error is the answer itself, built once
    fn session_for(
        &self,
        h: &http::HeaderMap,
        principal: &Principal,
    ) -> Result<Arc<McpSession>, Response<ProxyBody>> {
        let Some(id) = h.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
            return Err(rpc_response(
                StatusCode::BAD_REQUEST,
                jsonrpc::err(
                    &Value::Null,
                    &RpcError::new(
                        jsonrpc::INVALID_REQUEST,
                        "invalid request: send the Mcp-Session-Id header from `initialize`",
                    ),
                ),
            ));
        };
        let s = self.lock_sessions().get(id.trim()).cloned();
        match s {
            Some(s)
                if s.principal.id == principal.id
                    && s.principal.on_behalf_of == principal.on_behalf_of =>
            {
                *s.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                Ok(s)
            }
            _ => Err(rpc_response(
                StatusCode::NOT_FOUND,
                jsonrpc::err(
                    &Value::Null,
                    &RpcError::new(
                        jsonrpc::INVALID_REQUEST,
                        "session not found (ended or expired): initialize a new one",
                    ),
                ),
            )),
        }
    }

    async fn delete(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &str,
    ) -> Response<ProxyBody> {
        let principal = match self.authenticate(&req, peer, scheme).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let s = match self.session_for(req.headers(), &principal) {
            Ok(s) => s,
            Err(r) => return r,
        };
        self.lock_sessions().remove(&s.id);
        s.end(SessionEnd::ClientTerminated).await;
        let mut r = Response::new(warden_http::body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    }

    async fn post(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &str,
    ) -> Response<ProxyBody> {
        let principal = match self.authenticate(&req, peer, scheme).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let header_purpose = req
            .headers()
            .get("warden-purpose")
            .and_then(|v| v.to_str().ok())
            .map(|p| {
                p.trim()
                    .chars()
                    .take(tools::MAX_PURPOSE)
                    .collect::<String>()
            })
            .filter(|p| !p.is_empty());
        let (parts, body) = req.into_parts();
        let bytes = match read_limited(body, self.config.max_body).await {
            Ok(b) => b,
            Err(too_big) => {
                let (status, msg) = if too_big {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "invalid request: body larger than {} bytes",
                            self.config.max_body
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "invalid request: the body could not be read".to_string(),
                    )
                };
                return rpc_response(
                    status,
                    jsonrpc::err(&Value::Null, &RpcError::new(jsonrpc::INVALID_REQUEST, msg)),
                );
            }
        };
        let body = match jsonrpc::parse_body(&bytes) {
            Ok(b) => b,
            Err(e) => {
                self.pipeline.record_protocol_error(
                    None,
                    None,
                    PROTO,
                    &peer.to_string(),
                    &format!("malformed JSON-RPC body: {}", e.message),
                );
                return rpc_response(StatusCode::BAD_REQUEST, jsonrpc::err(&Value::Null, &e));
            }
        };

        // `initialize` (alone) opens a session.
        if let Body::Single(Ok(Message::Request { id, method, params })) = &body
            && method == "initialize"
        {
            return self.initialize(id, params.clone(), principal, peer);
        }
        // Newer clients probe `server/discover` (stateless protocol) before falling back
        // to `initialize`: answer it plainly as unsupported.
        if let Body::Single(Ok(Message::Request { id, method, .. })) = &body
            && method == "server/discover"
            && !parts.headers.contains_key("mcp-session-id")
        {
            return rpc_response(
                StatusCode::OK,
                jsonrpc::err(
                    id,
                    &RpcError::new(
                        jsonrpc::METHOD_NOT_FOUND,
                        "method not found: `server/discover` (use `initialize`)",
                    ),
                ),
            );
        }
        let session = match self.session_for(&parts.headers, &principal) {
            Ok(s) => s,
            Err(r) => {
                // A body of only notifications/responses without a session: nothing to do.
                return r;
            }
        };
        session.in_flight.fetch_add(1, Ordering::AcqRel);
        let _guard = InFlight(session.in_flight.clone());
        let ctx = calls::Ctx {
            server: &self,
            session: &session,
            header_purpose,
        };
        match body {
            Body::Single(entry) => match self.dispatch(&ctx, entry).await {
                Some(v) => {
                    let status = if v.get("error").is_some() && v["id"].is_null() {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::OK
                    };
                    rpc_response(status, v)
                }
                None => accepted(),
            },
            Body::Batch(entries) => {
                let mut out = Vec::new();
                for e in entries {
                    if let Some(v) = self.dispatch(&ctx, e).await {
                        out.push(v);
                    }
                }
                if out.is_empty() {
                    accepted()
                } else {
                    rpc_response(StatusCode::OK, Value::Array(out))
                }
            }
        }
    }

    fn initialize(
        &self,
        id: &Value,
        params: Option<Value>,
        principal: Principal,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let params = match jsonrpc::params_object(params) {
            Ok(p) => p,
            Err(e) => return rpc_response(StatusCode::OK, jsonrpc::err(id, &e)),
        };
        let asked = params.get("protocolVersion").and_then(Value::as_str);
        let version = asked
            .and_then(|v| PROTOCOL_VERSIONS.iter().find(|s| **s == v))
            .copied()
            .unwrap_or(PROTOCOL_VERSIONS[0]);
        let sid = hex::encode(rand::random::<[u8; 16]>());
        {
            let mut map = self.lock_sessions();
            if map.len() >= self.config.max_sessions {
                return rpc_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    jsonrpc::err(
                        id,
                        &RpcError::new(
                            jsonrpc::INTERNAL_ERROR,
                            "too many open MCP sessions; retry later",
                        ),
                    ),
                );
            }
            map.insert(
                sid.clone(),
                Arc::new(McpSession {
                    id: sid.clone(),
                    principal: principal.clone(),
                    client: peer.to_string(),
                    last_used: Mutex::new(Instant::now()),
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    slots: tokio::sync::Mutex::new(HashMap::new()),
                }),
            );
        }
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "warden", "title": "Warden", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!(
                "You are connected to Warden as {}. Every tool call is checked by policy, recorded as evidence and its results are masked. Start with list_connections and describe_connection; give a `purpose` with each query. A held call returns an approval id: poll approval_status, then repeat the call with approval_id.",
                principal.id
            ),
        });
        let mut r = rpc_response(StatusCode::OK, jsonrpc::ok(id, result));
        if let Ok(v) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert("mcp-session-id", v);
        }
        r
    }

    /// One message → its response (`None` for notifications and responses).
    async fn dispatch(&self, ctx: &calls::Ctx<'_>, entry: jsonrpc::Entry) -> Option<Value> {
        let (id, method, params) = match entry {
            Err((id, e)) => return Some(jsonrpc::err(&id, &e)),
            Ok(Message::Notification { .. }) | Ok(Message::Response) => return None,
            Ok(Message::Request { id, method, params }) => (id, method, params),
        };
        let result = match method.as_str() {
            "ping" => Ok(json!({})),
            "initialize" => Err(RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "invalid request: this session is already initialized",
            )),
            "tools/list" => Ok(json!({"tools": tools::list()})),
            "tools/call" => match jsonrpc::params_object(params) {
                Err(e) => Err(e),
                Ok(p) => calls::call(ctx, p).await,
            },
            other => Err(RpcError::new(
                jsonrpc::METHOD_NOT_FOUND,
                format!(
                    "method not found: `{}`",
                    other
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>()
                ),
            )),
        };
        Some(match result {
            Ok(v) => jsonrpc::ok(&id, v),
            Err(e) => jsonrpc::err(&id, &e),
        })
    }
}

struct Door(Arc<McpServer>);

impl warden_http::FrontDoor for Door {
    fn claims(&self, path: &str) -> bool {
        path == "/mcp"
            || path == "/mcp/"
            || path.starts_with("/.well-known/oauth-protected-resource")
    }

    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>> {
        Box::pin(self.0.clone().handle(req, peer, scheme))
    }
}

fn bearer(h: &http::HeaderMap) -> Result<&str, &'static str> {
    let Some(v) = h.get(header::AUTHORIZATION) else {
        return Err("send `Authorization: Bearer <Warden key or JWT>`");
    };
    let Ok(v) = v.to_str() else {
        return Err("the Authorization header is not text");
    };
    match v.trim().split_once(' ') {
        Some((scheme, tok)) if scheme.eq_ignore_ascii_case("bearer") && !tok.trim().is_empty() => {
            Ok(tok.trim())
        }
        _ => Err("only `Authorization: Bearer <credential>` is accepted"),
    }
}

/// A browser page may only call `/mcp` from the same host (DNS-rebinding guard); clients
/// that send no Origin (agents, SDKs) are not affected.
fn origin_ok(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let Ok(o) = origin.to_str() else { return false };
    let o_host = o
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    let bare = |h: &str| -> String {
        let h = h.trim();
        match h.rsplit_once(':') {
            Some((a, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !a.ends_with(':') => {
                a.to_string()
            }
            _ => h.to_string(),
        }
    };
    let oh = bare(o_host);
    if matches!(oh.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
        return true;
    }
    host.and_then(|h| h.to_str().ok())
        .is_some_and(|h| bare(h).eq_ignore_ascii_case(&oh))
}

/// Read a body up to `limit` bytes; `Err(true)` when larger, `Err(false)` on a read error.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, bool> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| false)?;
        if let Ok(d) = frame.into_data() {
            if buf.len() + d.len() > limit {
                return Err(true);
            }
            buf.extend_from_slice(&d);
        }
    }
    Ok(buf.freeze())
}

fn json_response(status: StatusCode, v: Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_response(status: StatusCode, v: Value) -> Response<ProxyBody> {
    json_response(status, v)
}

fn plain_error(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    json_response(status, json!({"error": "refused", "message": msg}))
}

fn accepted() -> Response<ProxyBody> {
    let mut r = Response::new(warden_http::body::empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

fn method_not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": "method_not_allowed", "message": format!("Warden: use {allow} on this path (no server-sent event stream is offered)")}),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(origin_ok(&h("http://localhost:3000"), None));
        assert!(origin_ok(&h("http://127.0.0.1"), None));
        assert!(origin_ok(
            &h("https://gw.example.com"),
            Some(&h("gw.example.com:8080"))
        ));
        assert!(!origin_ok(
            &h("https://evil.example"),
            Some(&h("gw.example.com"))
        ));
        assert!(!origin_ok(&h("null"), Some(&h("gw.example.com"))));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = http::HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  wk_x "),
        );
        assert_eq!(bearer(&h), Ok("wk_x"));
    }
}
