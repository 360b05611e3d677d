//! Keep-alive connections to one upstream, driven by the task of the request that uses
//! them.
//!
//! hyper-util's pooled client runs every upstream connection as a task of its own: a
//! request is handed to that task through a channel, the response comes back through
//! another, and each response chunk through a third — three cross-task wake-ups per
//! request, each of which may unpark the other runtime thread. Here the connection's
//! future is polled by whoever waits on it: the request's task while the head is awaited
//! ([`Pool::send`]), then the client connection's task through the response body
//! ([`UpstreamBody`]), like an event loop that owns both sockets. When the body has been
//! read to its end the connection goes back to the pool; a body dropped early closes it.
//!
//! Protocol upgrades (`101 Switching Protocols`) take a connection of their own, driven
//! by a spawned task, because the upgraded stream outlives the request.
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::body::{BoxError, ProxyBody};

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type Conn = http1::Connection<Io, ProxyBody>;

/// An idle connection is closed after this long unused (nginx's upstream keep-alive
/// default is 60 s, hyper-util's pool used 90 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections are kept per upstream; more are closed.
pub const MAX_IDLE: usize = 64;

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timeout, TLS handshake).
    Connect(BoxError),
    /// The connection failed while the request was sent or the head awaited.
    Request(hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("connect error"),
            UpstreamError::Request(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(e.as_ref()),
            UpstreamError::Request(e) => e.source(),
        }
    }
}

/// One upstream's connector and idle connections.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// What the connector dials: `scheme://authority`.
    target: Uri,
    idle: Mutex<VecDeque<Pooled>>,
}

/// A connection with its sender; the pair is polled together.
struct Pooled {
    send: http1::SendRequest<ProxyBody>,
    conn: Conn,
    since: Instant,
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, target: Uri) -> Arc<Pool> {
        Arc::new(Pool {
            connector,
            target,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Send `req` (origin-form URI, `Host` set) and await the response head, driving
    /// the connection from this task. A pooled connection that the upstream closed
    /// before the request was written gives the request back; it is then sent once on a
    /// new connection.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut fresh = false;
        let mut pooled = match self.checkout().await {
            Some(p) => p,
            None => {
                fresh = true;
                self.connect().await?
            }
        };
        loop {
            let Pooled { mut send, conn, .. } = pooled;
            let mut conn = Some(conn);
            let sent = send.try_send_request(req);
            match drive(&mut conn, sent).await {
                Ok(resp) => {
                    let driver = conn.map(|conn| Driver {
                        pooled: Pooled {
                            send,
                            conn,
                            since: Instant::now(),
                        },
                        pool: self.clone(),
                    });
                    return Ok(resp.map(|inner| UpstreamBody { inner, driver }));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        fresh = true;
                        pooled = self.connect().await?;
                    }
                    _ => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
    }

    /// Send a request that asks for a protocol upgrade, on a new connection driven by a
    /// task of its own (the upgraded stream outlives this request); never pooled.
    pub async fn send_upgrade(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let io = self.dial().await?;
        let (mut send, conn) = http1::handshake(io).await.map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended");
            }
        });
        let resp = send
            .send_request(req)
            .await
            .map_err(UpstreamError::Request)?;
        Ok(resp.map(|inner| UpstreamBody {
            inner,
            driver: None,
        }))
    }

    async fn dial(&self) -> Result<Io, UpstreamError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        connector
            .call(self.target.clone())
            .await
            .map_err(UpstreamError::Connect)
    }

    async fn connect(&self) -> Result<Pooled, UpstreamError> {
        let io = self.dial().await?;
        let (send, conn) = http1::handshake(io).await.map_err(UpstreamError::Request)?;
        Ok(Pooled {
            send,
            conn,
            since: Instant::now(),
        })
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Pooled> {
        loop {
            let mut p = self.lock().pop_back()?;
            if p.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // One poll: an upstream's close (or anything unexpected it sent while the
            // connection was idle) shows up here, before a request is put on it.
            let ready = poll_fn(|cx| {
                Poll::Ready(match Pin::new(&mut p.conn).poll(cx) {
                    Poll::Ready(_) => false,
                    Poll::Pending => matches!(p.send.poll_ready(cx), Poll::Ready(Ok(()))),
                })
            })
            .await;
            if ready {
                return Some(p);
            }
        }
    }

    fn checkin(&self, mut p: Pooled) {
        p.since = Instant::now();
        let mut stale = Vec::new();
        {
            let mut idle = self.lock();
            while idle
                .front()
                .is_some_and(|o| o.since.elapsed() > IDLE_TIMEOUT)
            {
                stale.extend(idle.pop_front());
            }
            if idle.len() < MAX_IDLE {
                idle.push_back(p);
            } else {
                stale.push(p);
            }
        }
        drop(stale); // closes their sockets outside the lock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pooled>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().len()
    }
}

/// Poll `conn` and `fut` together until `fut` is done. A connection that finishes is
/// dropped at once (`conn` becomes `None`): that fails whatever is still queued on it —
/// giving back a request it had not written — so `fut` cannot wait on it forever.
async fn drive<F: Future>(conn: &mut Option<Conn>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Some(c) = conn.as_mut()
            && Pin::new(c).poll(cx).is_ready()
        {
            *conn = None;
        }
        fut.as_mut().poll(cx)
    })
    .await
}

struct Driver {
    pooled: Pooled,
    pool: Arc<Pool>,
}

/// An upstream response body. Polling it also drives its connection, which returns to
/// the pool once the body has ended.
pub struct UpstreamBody {
    inner: Incoming,
    driver: Option<Driver>,
}

impl UpstreamBody {
    /// At the body's end: keep the connection if it is open and idle — the request
    /// written in full too (an upstream may answer before it has read an upload; such a
    /// connection, still holding the client's request body, is closed, not pooled).
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut d) = self.driver.take()
            && Pin::new(&mut d.pooled.conn).poll(cx).is_pending()
            && d.pooled.send.is_ready()
        {
            d.pool.checkin(d.pooled);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(d) = &mut this.driver
            && Pin::new(&mut d.pooled.conn).poll(cx).is_ready()
        {
            // Closed or failed: the body sees its end or the error.
            this.driver = None;
        }
        let out = Pin::new(&mut this.inner).poll_frame(cx);
        match &out {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(_))) => this.driver = None,
            _ => {}
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::full;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn pool_for(addr: std::net::SocketAddr) -> Arc<Pool> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        Pool::new(connector, format!("http://{addr}").parse().unwrap())
    }

    fn get(path: &str) -> Request<ProxyBody> {
        let mut r = Request::new(full(Bytes::new()));
        *r.uri_mut() = path.parse().unwrap();
        r.headers_mut()
            .insert(http::header::HOST, "upstream".parse().unwrap());
        r
    }

    /// Read one request head (no body) from `s`.
    async fn read_head(s: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await.ok()? == 0 {
                return None;
            }
            buf.push(b[0]);
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// An upstream that answers `n_per_conn` requests per connection (then closes),
    /// and reports each connection it accepted.
    async fn upstream(
        n_per_conn: usize,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<usize>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                n += 1;
                let _ = tx.send(n);
                tokio::spawn(async move {
                    for _ in 0..n_per_conn {
                        let Some(head) = read_head(&mut s).await else {
                            return;
                        };
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                            path.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn body_of(resp: Response<UpstreamBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_is_reused() {
        let (addr, mut conns) = upstream(100).await;
        let pool = pool_for(addr);
        for i in 0..5 {
            let resp = pool.send(get(&format!("/r{i}"))).await.unwrap();
            assert_eq!(body_of(resp).await, format!("/r{i}"));
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(conns.recv().await, Some(1));
        assert!(
            conns.try_recv().is_err(),
            "one connection for five requests"
        );
    }

    #[tokio::test]
    async fn a_body_dropped_early_closes_its_connection() {
        let (addr, mut conns) = upstream(100).await;
        let pool = pool_for(addr);
        let resp = pool.send(get("/a")).await.unwrap();
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(get("/b")).await.unwrap();
        assert_eq!(body_of(resp).await, "/b");
        assert_eq!(conns.recv().await, Some(1));
        assert_eq!(conns.recv().await, Some(2));
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced() {
        // The upstream answers one request per connection, then closes it.
        let (addr, mut conns) = upstream(1).await;
        let pool = pool_for(addr);
        for i in 0..3 {
            let resp = pool.send(get(&format!("/c{i}"))).await.unwrap();
            assert_eq!(body_of(resp).await, format!("/c{i}"));
            // Give the close time to arrive, as between two real requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for n in 1..=3 {
            assert_eq!(conns.recv().await, Some(n));
        }
    }

    /// An upload that has not ended (the client is still sending).
    struct Unfinished;

    impl Body for Unfinished {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(1 << 20)
        }
    }

    #[tokio::test]
    async fn a_connection_answered_before_its_upload_ended_is_not_pooled() {
        // The upstream answers from the head alone (as a 413 or a redirect may).
        let (addr, mut conns) = upstream(100).await;
        let pool = pool_for(addr);
        let mut req = get("/upload");
        *req.method_mut() = http::Method::PUT;
        *req.body_mut() = Unfinished.boxed_unsync();
        let resp = pool.send(req).await.unwrap();
        assert_eq!(body_of(resp).await, "/upload");
        assert_eq!(
            pool.idle_count(),
            0,
            "a connection still sending was pooled"
        );
        let resp = pool.send(get("/next")).await.unwrap();
        assert_eq!(body_of(resp).await, "/next");
        assert_eq!(conns.recv().await, Some(1));
        assert_eq!(conns.recv().await, Some(2));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let Err(err) = pool_for(addr).send(get("/")).await else {
            panic!("a refused connection gave a response");
        };
        assert!(err.is_connect(), "{err:?}");
    }
}
