//! The HTTP adapter: a reverse proxy on `127.0.0.1:8080` that routes
//! `/<connection>/<path>` to the connection's upstream, authenticates the caller's
//! `Authorization: Bearer` credential, swaps in the connection's own headers, decides by
//! policy (allow / deny / hold for approval), records the request durably before
//! forwarding it, masks the response, and records the outcome.
//!
//! - [`target`]: routing and path normalization (what policy sees = what is forwarded).
//! - [`headers`]: hop-by-hop removal, Warden's own headers, redacted evidence copy.
//! - [`body`]: streaming request/response taps (bounded memory, masked excerpts).
//! - [`sessions`]: evidence sessions: `Warden-Session` keyed ones with idle expiry, else one
//!   per client connection.
//! - [`upstream`]: pooled hyper clients (HTTP and verified HTTPS).
//! - [`tunnel`]: upgraded connections (WebSocket frames followed for evidence).
//! - [`guard`]: a framing check in front of hyper's parser (request smuggling).
//! - `proxy`: the request phases.
#![forbid(unsafe_code)]

pub mod body;
pub mod guard;
pub mod headers;
mod proxy;
pub mod sessions;
pub mod target;
pub mod tunnel;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use warden_pipeline::{ConnectionSpec, Pipeline};

/// Another front door served on this listener for the paths it claims (the binary wires
/// the MCP server here: `/mcp` and `/.well-known/oauth-protected-resource…`). Keeps this
/// crate free of MCP: it only routes. Claimed paths are never treated as connections.
pub trait FrontDoor: Send + Sync {
    /// Does this front door serve `path`?
    fn claims(&self, path: &str) -> bool;
    /// Answer one request (framing already checked by [`guard`]).
    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<body::ProxyBody>> + Send>>;
}

/// Limits and settings of the HTTP listener.
#[derive(Clone)]
pub struct HttpConfig {
    /// Paths served by another front door (MCP) instead of `/<connection>/...` routing.
    pub front_door: Option<Arc<dyn FrontDoor>>,
    /// Also accept TLS on the same port (a ClientHello is recognised by its first byte).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Most concurrent client connections; further ones get `503`.
    pub max_connections: usize,
    /// Time allowed for a request's header section (slow-loris guard).
    pub header_read_timeout: Duration,
    /// Largest request header section (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Time allowed to connect to an upstream.
    pub upstream_connect_timeout: Duration,
    /// A `Warden-Session` session ends after this long without requests.
    pub session_idle: Duration,
    /// Most open `Warden-Session` sessions.
    pub max_sessions: usize,
    /// JSON responses up to this size are parsed, masked field by field and re-serialized;
    /// larger ones are masked as streaming text.
    pub json_mask_limit: usize,
    /// How much of each request body the evidence keeps (masked).
    pub request_excerpt: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            front_door: None,
            tls: None,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            upstream_connect_timeout: Duration::from_secs(10),
            session_idle: Duration::from_secs(600),
            max_sessions: 100_000,
            json_mask_limit: 8 * 1024 * 1024,
            request_excerpt: 16 * 1024,
        }
    }
}

/// The running HTTP gateway.
pub struct HttpGateway {
    pipeline: Arc<Pipeline>,
    upstreams: upstream::Upstreams,
    inject: HashMap<String, Vec<(HeaderName, HeaderValue)>>,
    sessions: Arc<sessions::Sessions>,
    config: HttpConfig,
    /// Approval ids already spent by a `Warden-Approval` retry (each approves one request).
    used_approvals: Mutex<HashSet<String>>,
    /// Set once the listener stops accepting: connections closing now end their
    /// sessions as `gateway shutting down`.
    stopping: std::sync::atomic::AtomicBool,
}

impl HttpGateway {
    /// Build clients for every `protocol = "http"` connection in `connections`.
    pub fn new(
        pipeline: Arc<Pipeline>,
        connections: &[ConnectionSpec],
        config: HttpConfig,
    ) -> Result<Arc<HttpGateway>, String> {
        let upstreams =
            upstream::Upstreams::build(connections.iter(), config.upstream_connect_timeout)?;
        let mut inject = HashMap::new();
        for c in connections {
            if c.protocol == warden_pipeline::Protocol::Http {
                let h = headers::parse_inject(&c.headers)
                    .map_err(|e| format!("connection `{}`: {e}", c.name))?;
                inject.insert(c.name.clone(), h);
            }
        }
        let mut config = config;
        // Offer HTTP/2 over TLS too (ALPN); the auto builder picks the protocol from the
        // connection preface either way.
        config.tls = config.tls.take().map(|a| {
            let mut c = (**a.config()).clone();
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(c))
        });
        Ok(Arc::new(HttpGateway {
            pipeline,
            upstreams,
            inject,
            sessions: sessions::Sessions::new(config.session_idle, config.max_sessions),
            config,
            stopping: std::sync::atomic::AtomicBool::new(false),
            used_approvals: Mutex::new(HashSet::new()),
        }))
    }

    /// Accept connections until `shutdown` resolves; then finish in-flight requests
    /// (up to 10 s) and end every open session.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.config.max_header_bytes as u32)
            .max_concurrent_streams(256);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        // One permit per connection task, held until the task ends (also how shutdown
        // knows every task has finished).
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.max_connections));

        let sweeper = {
            let sessions = self.sessions.clone();
            let every = (self.config.session_idle / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(30));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    sessions.sweep(false).await;
                }
            })
        };

        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tokio::spawn(refuse_busy(socket));
                continue;
            };
            let gw = self.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                gw.serve_socket(socket, peer, builder, watcher).await;
            });
        }
        sweeper.abort();
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let drained = tokio::select! {
            _ = graceful.shutdown() => true,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                tracing::warn!("HTTP connections still open after 10 s; closing them");
                false
            }
        };
        // The connections are done; let each task record its sessions' `session.end`
        // (`ConnSessions::close`) before the caller flushes the ledger: every permit back.
        if drained {
            let all = u32::try_from(self.config.max_connections).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
        }
        self.sessions.sweep(true).await;
    }

    async fn serve_socket(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        builder: auto::Builder<TokioExecutor>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let mut first = [0u8; 1];
        let is_tls = self.config.tls.is_some()
            && matches!(
                tokio::time::timeout(self.config.header_read_timeout, socket.peek(&mut first))
                    .await,
                Ok(Ok(1))
            )
            && first[0] == 0x16;
        if is_tls {
            let Some(acceptor) = self.config.tls.clone() else {
                return;
            };
            let tls = match tokio::time::timeout(
                self.config.header_read_timeout,
                acceptor.accept(socket),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            self.serve_io(tls, peer, "https", builder, watcher).await;
        } else {
            self.serve_io(socket, peer, "http", builder, watcher).await;
        }
    }

    async fn serve_io<I>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        scheme: &'static str,
        builder: auto::Builder<TokioExecutor>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (io, flag) = guard::FramingGuard::new(io);
        let gw = self.clone();
        let scope = Arc::new(sessions::ConnSessions::default());
        let svc_scope = scope.clone();
        let svc = hyper::service::service_fn(move |req| {
            proxy::handle(
                gw.clone(),
                peer,
                scheme,
                flag.clone(),
                svc_scope.clone(),
                req,
            )
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
        let why = if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            warden_pipeline::SessionEnd::Shutdown
        } else {
            warden_pipeline::SessionEnd::ClientTerminated
        };
        scope.close(why).await;
    }

    /// Open `Warden-Session` sessions (for tests and metrics).
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }
}

async fn refuse_busy(mut socket: TcpStream) {
    let body = br#"{"error":"busy","message":"Warden: too many connections; retry later"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body).await;
    let _ = socket.shutdown().await;
}
