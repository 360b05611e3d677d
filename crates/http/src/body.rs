//! Bodies: the request tap (counts bytes, keeps the first few for evidence) and the
//! response tap (masks text chunk by chunk, keeps a masked excerpt, reports once the body
//! has been delivered or abandoned). Neither buffers a whole body.
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use warden_masking::{ConnectionMasker, MaskStats, StreamMasker};

/// How a response body is masked on its way out.
pub enum Masking {
    /// Text masked as it streams (bounded hold-back, exact across chunk boundaries).
    Stream(StreamMasker),
    /// `text/event-stream`: each event is masked whole and sent at once, so a stream of
    /// sparse events is never held back waiting for more bytes.
    Events {
        masker: ConnectionMasker,
        buf: Vec<u8>,
    },
}

/// Largest event held while waiting for its end; beyond it the bytes so far are masked
/// and sent.
const MAX_EVENT: usize = 1 << 20;

impl Masking {
    pub fn events(masker: ConnectionMasker) -> Masking {
        Masking::Events {
            masker,
            buf: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8], out: &mut Vec<u8>, stats: &mut MaskStats) {
        match self {
            Masking::Stream(m) => m.push(data, out, stats),
            Masking::Events { masker, buf } => {
                buf.extend_from_slice(data);
                let end = last_event_end(buf).or((buf.len() > MAX_EVENT).then_some(buf.len()));
                if let Some(end) = end {
                    out.extend_from_slice(&masker.mask_bytes(&buf[..end], stats));
                    buf.drain(..end);
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, stats: &mut MaskStats) {
        match self {
            Masking::Stream(m) => m.finish(out, stats),
            Masking::Events { masker, buf } => {
                out.extend_from_slice(&masker.mask_bytes(buf, stats));
                buf.clear();
            }
        }
    }
}

/// The end (exclusive) of the last complete event in `b`: just past a blank line.
fn last_event_end(b: &[u8]) -> Option<usize> {
    (1..b.len())
        .rev()
        .find(|&i| {
            b[i] == b'\n'
                && (b[i - 1] == b'\n' || (i >= 2 && b[i - 1] == b'\r' && b[i - 2] == b'\n'))
        })
        .map(|i| i + 1)
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body Warden sends (to the upstream or to the client).
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// Byte count plus the first `cap` bytes of a body.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    pub bytes: u64,
    pub head: Vec<u8>,
    pub cap: usize,
}

impl Capture {
    pub fn new(cap: usize) -> Capture {
        Capture {
            bytes: 0,
            head: Vec::new(),
            cap,
        }
    }
    pub fn push(&mut self, d: &[u8]) {
        self.bytes += d.len() as u64;
        let room = self.cap.saturating_sub(self.head.len());
        if room > 0 {
            self.head.extend_from_slice(&d[..d.len().min(room)]);
        }
    }
    pub fn truncated(&self) -> bool {
        self.bytes > self.head.len() as u64
    }
}

/// The client's request body on its way upstream.
pub struct RequestTap<B> {
    inner: B,
    capture: Arc<Mutex<Capture>>,
}

impl<B> RequestTap<B> {
    pub fn new(inner: B, capture: Arc<Mutex<Capture>>) -> Self {
        RequestTap { inner, capture }
    }
}

impl<B> Body for RequestTap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    self.capture
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(d);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a response body ended.
#[derive(Debug)]
pub struct TapOutcome {
    /// `ok` (delivered), `interrupted` (client went away), `error` (upstream failed).
    pub status: &'static str,
    pub error: Option<String>,
    /// Bytes delivered to the client (after masking).
    pub bytes_out: u64,
    /// Bytes read from the upstream.
    pub bytes_in: u64,
    /// The first bytes the client saw (masked).
    pub excerpt: Capture,
    pub stats: MaskStats,
}

pub type Finalizer = Box<dyn FnOnce(TapOutcome) + Send>;

/// The response body on its way to the client.
pub struct ResponseTap {
    inner: ProxyBody,
    prefix: Option<Bytes>,
    masker: Option<Masking>,
    stats: MaskStats,
    excerpt: Capture,
    bytes_in: u64,
    bytes_out: u64,
    trailers: Option<HeaderMap>,
    finished: bool,
    done: Option<Finalizer>,
}

impl ResponseTap {
    /// `prefix`: bytes to send before `inner`'s (read from the upstream already, or a
    /// body masked whole), counted in `bytes_in` by the caller; `masker`: mask text as
    /// it streams; `stats`: counts from masking already done (buffered JSON).
    pub fn new(
        inner: ProxyBody,
        prefix: Option<Bytes>,
        masker: Option<Masking>,
        stats: MaskStats,
        bytes_in: u64,
        excerpt_cap: usize,
        done: Finalizer,
    ) -> ResponseTap {
        ResponseTap {
            inner,
            prefix,
            masker,
            stats,
            excerpt: Capture::new(excerpt_cap),
            bytes_in,
            bytes_out: 0,
            trailers: None,
            finished: false,
            done: Some(done),
        }
    }

    /// The body failed before it was handed to hyper: report `error` now.
    pub fn abort(mut self, msg: String) {
        self.finished = true;
        self.finalize("error", Some(msg));
    }

    /// Mask `data` if text is being masked; otherwise pass the same buffer on (no copy:
    /// a large binary body moves through the gateway without being touched).
    fn process(&mut self, data: Bytes) -> Bytes {
        let out = match &mut self.masker {
            Some(m) => {
                let mut out = Vec::with_capacity(data.len() + 64);
                m.push(&data, &mut out, &mut self.stats);
                Bytes::from(out)
            }
            None => data,
        };
        self.emit(out)
    }

    fn emit(&mut self, out: Bytes) -> Bytes {
        self.excerpt.push(&out);
        self.bytes_out += out.len() as u64;
        out
    }

    fn finish_masker(&mut self) -> Bytes {
        let Some(m) = &mut self.masker else {
            return Bytes::new();
        };
        let mut out = Vec::new();
        m.finish(&mut out, &mut self.stats);
        let out = Bytes::from(out);
        self.emit(out)
    }

    fn finalize(&mut self, status: &'static str, error: Option<String>) {
        if let Some(done) = self.done.take() {
            done(TapOutcome {
                status,
                error,
                bytes_out: self.bytes_out,
                bytes_in: self.bytes_in,
                excerpt: std::mem::take(&mut self.excerpt),
                stats: std::mem::take(&mut self.stats),
            });
        }
    }
}

impl Drop for ResponseTap {
    fn drop(&mut self) {
        if self.finished || self.done.is_none() {
            return;
        }
        if self.prefix.is_none() && self.inner.is_end_stream() {
            // Nothing left to send (HEAD, 204, 304, or an empty body never polled).
            let _ = self.finish_masker();
            self.finalize("ok", None);
        } else {
            self.finalize(
                "interrupted",
                Some("the client stopped reading before the body ended".into()),
            );
        }
    }
}

impl Body for ResponseTap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(p) = this.prefix.take() {
                let out = this.process(p);
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                continue;
            }
            if this.finished {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => {
                        this.bytes_in += d.len() as u64;
                        let out = this.process(d);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.finished = true;
                        let out = this.finish_masker();
                        this.finalize("ok", None);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Some(Err(e)) => {
                    this.finished = true;
                    this.finalize("error", Some(format!("upstream body failed: {e}")));
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.finished = true;
                    let out = this.finish_masker();
                    this.finalize("ok", None);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.trailers.is_none() && self.prefix.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.masker.is_some() {
            SizeHint::default()
        } else {
            let inner = self.inner.size_hint();
            let n = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
            // A fresh hint: `set_lower` above the current upper bound would panic.
            let mut h = SizeHint::new();
            if let Some(u) = inner.upper() {
                h.set_upper(u.saturating_add(n));
            }
            h.set_lower(inner.lower().saturating_add(n));
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `body` to its end with a no-op waker (every body here is ready at once).
    fn drain(mut body: ResponseTap) -> Vec<Bytes> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => out.extend(f.into_data().ok()),
                Poll::Ready(Some(Err(e))) => panic!("body failed: {e}"),
                Poll::Ready(None) => return out,
                Poll::Pending => panic!("a ready body returned Pending"),
            }
        }
    }

    fn recording() -> (Finalizer, Arc<Mutex<Option<TapOutcome>>>) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        (Box::new(move |o| *s.lock().unwrap() = Some(o)), seen)
    }

    #[test]
    fn a_whole_masked_document_as_prefix_counts_only_upstream_bytes() {
        let (done, seen) = recording();
        let masked = Bytes::from_static(b"{\"e\":\"a***@example.com\"}");
        let tap = ResponseTap::new(
            empty(),
            Some(masked.clone()),
            None,
            MaskStats::default(),
            23,
            1024,
            done,
        );
        let hint = tap.size_hint();
        assert_eq!(hint.exact(), Some(masked.len() as u64));
        assert_eq!(drain(tap), vec![masked.clone()]);
        let o = seen.lock().unwrap().take().expect("finalized");
        assert_eq!(
            (o.status, o.bytes_in, o.bytes_out),
            ("ok", 23, masked.len() as u64)
        );
        assert_eq!(o.excerpt.head, masked.to_vec());
    }

    #[test]
    fn an_unmasked_body_is_passed_on_without_a_copy() {
        let (done, seen) = recording();
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        let tap = ResponseTap::new(
            full(chunk.clone()),
            None,
            None,
            MaskStats::default(),
            0,
            0,
            done,
        );
        assert_eq!(tap.size_hint().exact(), Some(chunk.len() as u64));
        let out = drain(tap);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].as_ptr(),
            chunk.as_ptr(),
            "the same buffer, not a copy"
        );
        let o = seen.lock().unwrap().take().expect("finalized");
        assert_eq!(
            (o.bytes_in, o.bytes_out),
            (chunk.len() as u64, chunk.len() as u64)
        );
    }

    /// A body whose size is not known up front (like a chunked upstream response).
    struct OpenEnded;

    impl Body for OpenEnded {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(None)
        }
    }

    #[test]
    fn size_hint_adds_the_prefix_to_an_open_ended_or_exact_body() {
        let (done, _) = recording();
        let tap = ResponseTap::new(
            OpenEnded.boxed_unsync(),
            Some(Bytes::from_static(b"abc")),
            None,
            MaskStats::default(),
            3,
            0,
            done,
        );
        let h = tap.size_hint();
        assert_eq!((h.lower(), h.upper()), (3, None));
        let (done, _) = recording();
        let tap = ResponseTap::new(
            full(Bytes::from_static(b"tail")),
            Some(Bytes::from_static(b"abc")),
            None,
            MaskStats::default(),
            3,
            0,
            done,
        );
        assert_eq!(tap.size_hint().exact(), Some(7));
    }
}
