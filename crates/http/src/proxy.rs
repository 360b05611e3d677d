//! One request through the gateway, as explicit phases:
//! route → authenticate → connection → session → decide (→ hold) → record (durable) →
//! forward → stream back (masked) → record the outcome.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use warden_core::{ActionInfo, ApprovalInfo, Decision, Effect, ResponseInfo};
use warden_masking::{ConnectionMasker, MaskStats};
use warden_pipeline::{HoldOutcome, Protocol, Session, SessionEnd};

use crate::HttpGateway;
use crate::body::{Capture, Masking, ProxyBody, RequestTap, ResponseTap, TapOutcome, empty, full};
use crate::guard::Poison;
use crate::headers::{
    evidence_headers, scrub, set_forwarded, strip_hop_by_hop, take_warden_headers,
};
use crate::sessions::{ConnSessions, Lease, OpenError};
use crate::target::{TargetError, route};

const PROTO: &str = "http";

/// A JSON error answer. Every refusal says what happened in `message`.
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

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<ProxyBody> {
    json_response(status, json!({"error": code, "message": message.into()}))
}

fn unauthorized(message: &str, bad_token: bool) -> Response<ProxyBody> {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", message);
    let challenge = if bad_token {
        r#"Bearer realm="warden", error="invalid_token""#
    } else {
        r#"Bearer realm="warden""#
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// Printable, short: safe to put a client-chosen name into evidence and answers.
fn clean(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The whole error chain of an upstream failure, for the 502 body and the evidence.
fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

pub(crate) async fn handle(
    gw: Arc<HttpGateway>,
    peer: SocketAddr,
    scheme: &'static str,
    poison: Poison,
    scope: Arc<ConnSessions>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(why) = poison.get() {
        gw.pipeline.record_protocol_error(
            None,
            None,
            PROTO,
            &peer.to_string(),
            &format!("malformed request: {why}"),
        );
        let mut r = error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Warden: malformed request ({why}); nothing was forwarded"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    if let Some(fd) = &gw.config.front_door
        && fd.claims(req.uri().path())
    {
        return Ok(fd.handle(req, peer, scheme).await);
    }
    Ok(handle_inner(&gw, peer, scheme, &scope, req).await)
}

fn bearer(h: &http::HeaderMap) -> Result<&str, &'static str> {
    let Some(v) = h.get(header::AUTHORIZATION) else {
        return Err("send `Authorization: Bearer <Warden key or JWT>`");
    };
    let Ok(v) = v.to_str() else {
        return Err("the Authorization header is not text");
    };
    let v = v.trim();
    match v.split_once(' ') {
        Some((scheme, tok)) if scheme.eq_ignore_ascii_case("bearer") && !tok.trim().is_empty() => {
            Ok(tok.trim())
        }
        _ => Err("only `Authorization: Bearer <credential>` is accepted"),
    }
}

async fn handle_inner(
    gw: &Arc<HttpGateway>,
    peer: SocketAddr,
    scheme: &'static str,
    scope: &ConnSessions,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let client = peer.to_string();

    // 1. Route.
    let target = match route(req.uri().path()) {
        Ok(t) => t,
        Err(TargetError::NoConnection) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_connection",
                "Warden routes /<connection>/<path>; name a connection",
            );
        }
        Err(TargetError::BadPath(why)) => {
            gw.pipeline.record_protocol_error(
                None,
                None,
                PROTO,
                &client,
                &format!("path refused: {why}"),
            );
            return error(
                StatusCode::BAD_REQUEST,
                "bad_path",
                format!("Warden: {why}; nothing was forwarded"),
            );
        }
    };
    let conn_name = clean(&target.connection, 64);

    // 2. Authenticate.
    let secret = bearer(req.headers()).unwrap_or_default().to_string();
    let principal = match bearer(req.headers()) {
        Err(why) => {
            gw.pipeline
                .record_auth_failed("", Some(&conn_name), PROTO, &client, why)
                .await;
            return unauthorized(&format!("Warden: {why}"), false);
        }
        Ok(secret) => match gw.pipeline.authenticate_secret(None, secret).await {
            Ok(p) => p,
            Err(f) => {
                gw.pipeline
                    .record_auth_failed("", Some(&conn_name), PROTO, &client, &f.reason)
                    .await;
                return unauthorized("Warden: the credential was not accepted", true);
            }
        },
    };

    // 3. Connection.
    let spec = gw
        .pipeline
        .connection(&target.connection)
        .filter(|c| c.protocol == Protocol::Http);
    let (Some(spec), Some(upstream)) = (spec, gw.upstreams.get(&target.connection)) else {
        gw.pipeline
            .record_session_refused(
                Some(&principal),
                &conn_name,
                PROTO,
                &client,
                "unknown HTTP connection",
            )
            .await;
        return error(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            format!("Warden: there is no HTTP connection named `{conn_name}`"),
        );
    };
    if !gw.pipeline.may_connect(&principal, &spec.name) {
        let why = format!(
            "no rule gives {} access to connection `{}`",
            principal.id, spec.name
        );
        gw.pipeline
            .record_session_refused(Some(&principal), &spec.name, PROTO, &client, &why)
            .await;
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "forbidden", "message": format!("Warden: {why}"), "rule": null, "rules": []}),
        );
    }

    // 4. Warden's headers, then the session.
    let wh = take_warden_headers(req.headers_mut());
    let purpose = match wh.purpose.as_ref().map(|v| v.to_str()) {
        None => None,
        Some(Ok(p)) if p.len() <= 1024 => Some(scrub(p.trim(), &secret)).filter(|p| !p.is_empty()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_purpose",
                "Warden-Purpose must be printable text of at most 1024 bytes",
            );
        }
    };
    let session_key = match wh.session.as_ref().map(|v| v.to_str()) {
        None => None,
        Some(Ok(s)) if !s.trim().is_empty() && s.len() <= 128 => Some(s.trim().to_string()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_session",
                "Warden-Session must be printable text of 1 to 128 bytes",
            );
        }
    };
    let mut lease = match gw
        .sessions
        .lease(
            &gw.pipeline,
            &principal,
            &spec,
            &client,
            session_key.as_deref(),
            purpose,
            Some(scope),
        )
        .await
    {
        Ok(l) => l,
        Err(OpenError::TooMany) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "Warden: too many open Warden-Session sessions; retry later or omit the header",
            );
        }
        Err(OpenError::Ledger(e)) => {
            tracing::error!(error = %e, "could not record session.start");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "evidence_unavailable",
                "Warden: the evidence ledger is unavailable; nothing was forwarded",
            );
        }
    };
    let session = lease.session.clone();

    // 5. Decide.
    let method = req.method().clone();
    let version = req.version();
    let query = req.uri().query().map(str::to_string);
    let target_text = match &query {
        Some(q) => format!("{}?{q}", target.path),
        None => target.path.clone(),
    };
    let text = scrub(
        &format!("{method} {target_text} {}", version_str(version)),
        &secret,
    );
    let action = ActionInfo {
        kind: "http".into(),
        text,
        params: evidence_headers(req.headers(), &secret),
        ..Default::default()
    };
    let decision = session.decide_http(method.as_str(), &target.policy_path);
    let mut approval = None;
    match decision.effect {
        Effect::Deny => {
            let rule = decision.rules.first().cloned();
            session
                .record_denied(action, &decision, Some(decision.reason.clone()))
                .await;
            lease.release(SessionEnd::ClientTerminated);
            let message = match &rule {
                Some(r) => format!(
                    "Warden: {method} {} on `{}` is denied by rule `{r}`",
                    target.path, spec.name
                ),
                None => format!(
                    "Warden: no rule allows {method} {} on `{}` (default deny)",
                    target.path, spec.name
                ),
            };
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "denied", "message": message, "rule": rule,
                       "rules": decision.rules, "reason": decision.reason}),
            );
        }
        Effect::Approve => {
            let wanted = wh
                .approval
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let prefer_async = req
                .headers()
                .get_all("prefer")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("respond-async"))
                });
            match approval_gate(
                gw,
                &session,
                &action,
                &decision,
                wanted,
                prefer_async,
                &target_text,
                &method,
            )
            .await
            {
                Ok(info) => approval = Some(info),
                Err(resp) => {
                    lease.release(SessionEnd::ClientTerminated);
                    return resp;
                }
            }
        }
        Effect::Allow => {}
    }

    // 6. Record, durably, before anything reaches the upstream.
    let mut rec = session.request_record(action, &decision);
    if let Some(a) = approval {
        rec = Session::with_approval(rec, a);
    }
    let committed = match session.commit_request(rec).await {
        Ok(id) => match lease.confirm_start().await {
            Ok(()) => Ok(id),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.to_string()),
    };
    let request_id = match committed {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, session = %session.id, "could not record action.request");
            lease.release(SessionEnd::LedgerFailed(e));
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "evidence_unavailable",
                "Warden: the request could not be recorded, so it was not forwarded",
            );
        }
    };

    // 7. Build the upstream request: credential swap, hop-by-hop, forwarding headers.
    let masker = session.masker.clone();
    let client_upgrade = if version == Version::HTTP_11 && is_upgrade(req.headers()) {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    let orig_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let upgrade = strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::EXPECT);
    if let Some(inject) = gw.inject.get(&spec.name) {
        for (k, v) in inject {
            parts.headers.insert(k.clone(), v.clone());
        }
    }
    set_forwarded(
        &mut parts.headers,
        &peer.ip().to_string(),
        scheme,
        orig_host.as_ref(),
    );
    if masker.is_some() {
        // Compressed WebSocket messages could not be masked: negotiate none.
        parts.headers.remove("sec-websocket-extensions");
    }
    if let (Some(u), Some(_)) = (&upgrade, &client_upgrade) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    if masker.is_some() {
        // Compressed text cannot be masked: ask for it plain.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let req_text_like = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| is_text(&ct.to_ascii_lowercase()) || is_json(&ct.to_ascii_lowercase()))
        .unwrap_or(true);
    let uri = match upstream.uri(&target.path, query.as_deref()) {
        Ok(u) => u,
        Err(e) => {
            let msg = format!("cannot build the upstream URL: {e}");
            record_failure(&session, &request_id, started, &msg);
            lease.release(SessionEnd::ClientTerminated);
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("Warden: {msg}"),
            );
        }
    };
    let req_capture = Arc::new(Mutex::new(Capture::new(
        gw.config.request_excerpt.min(session.limits.response_bytes),
    )));
    let mut up_req = Request::new(RequestTap::new(body, req_capture.clone()).boxed_unsync());
    *up_req.method_mut() = method.clone();
    *up_req.uri_mut() = uri;
    *up_req.version_mut() = Version::HTTP_11;
    *up_req.headers_mut() = parts.headers;

    // 8. Forward.
    let mut resp = match upstream.client.request(up_req).await {
        Ok(r) => r,
        Err(e) => {
            let detail = describe_error(&e);
            let msg = if e.is_connect() {
                format!(
                    "Warden could not reach the upstream of connection `{}` ({}): {detail}",
                    spec.name,
                    upstream.describe()
                )
            } else {
                format!(
                    "the upstream of connection `{}` ({}) failed: {detail}",
                    spec.name,
                    upstream.describe()
                )
            };
            record_failure(&session, &request_id, started, &msg);
            lease.release(SessionEnd::UpstreamClosed(detail));
            return json_response(
                StatusCode::BAD_GATEWAY,
                json!({"error": "upstream_unavailable", "message": msg, "connection": spec.name,
                       "request_id": request_id.to_string()}),
            );
        }
    };
    let status = resp.status();

    // 8b. Protocol switch (WebSocket and friends): splice both sides, record the bytes.
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_up) = client_upgrade
    {
        let upstream_up = hyper::upgrade::on(&mut resp);
        let (mut rparts, _) = resp.into_parts();
        let up_value = strip_hop_by_hop(&mut rparts.headers);
        rparts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(v) = up_value.or(upgrade) {
            rparts.headers.insert(header::UPGRADE, v);
        }
        let websocket = rparts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
        tokio::spawn(tunnel(
            client_up,
            upstream_up,
            websocket,
            session.clone(),
            request_id.clone(),
            started,
            lease,
        ));
        return Response::from_parts(rparts, empty());
    }

    // 9. Stream the response back, masked.
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        rparts
            .headers
            .insert(HeaderName::from_static("warden-request-id"), v);
    }
    let ct = rparts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase());
    let encoded = rparts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let no_body = method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let text_like = match &ct {
        None => true,
        Some(ct) => is_json(ct) || is_text(ct),
    };
    let mode = match &masker {
        Some(_) if no_body => Mode::Pass,
        Some(_) if text_like && encoded => {
            let msg = format!(
                "the upstream sent a compressed {} body that Warden cannot mask; it was not passed on",
                ct.as_deref().unwrap_or("untyped")
            );
            record_failure(&session, &request_id, started, &msg);
            lease.release(SessionEnd::ClientTerminated);
            return error(
                StatusCode::BAD_GATEWAY,
                "unmaskable_response",
                format!("Warden: {msg}"),
            );
        }
        Some(_) if ct.as_deref().is_some_and(is_json) => Mode::Json,
        Some(_)
            if ct
                .as_deref()
                .is_some_and(|c| c.starts_with("text/event-stream")) =>
        {
            Mode::Events
        }
        Some(_) if text_like => Mode::Text,
        _ => Mode::Pass,
    };

    let done = finalizer(FinalizeCtx {
        session: session.clone(),
        request_id: request_id.clone(),
        started,
        status,
        content_type: ct.clone(),
        text_like: text_like && !encoded,
        req_capture,
        req_text_like,
        masker: masker.clone(),
        lease,
        secret,
    });
    let excerpt_cap = session.limits.response_bytes;
    let body = match (mode, &masker) {
        (Mode::Json, Some(m)) => {
            let declared = rparts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<u64>().ok());
            let limit = gw.config.json_mask_limit;
            let mut rbody = rbody.map_err(Into::into).boxed_unsync();
            if declared.is_some_and(|n| n > limit as u64) {
                rparts.headers.remove(header::CONTENT_LENGTH);
                ResponseTap::new(
                    rbody,
                    None,
                    Some(Masking::Stream(m.stream())),
                    MaskStats::default(),
                    0,
                    excerpt_cap,
                    done,
                )
            } else {
                match collect_up_to(&mut rbody, limit).await {
                    Ok((buf, true)) => {
                        let mut stats = MaskStats::default();
                        let out = mask_json_body(m, &buf, &mut stats);
                        rparts
                            .headers
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
                        // The masked document goes out as the prefix of an empty body:
                        // only what came from the upstream counts as `upstream_body_bytes`.
                        ResponseTap::new(
                            empty(),
                            Some(out),
                            None,
                            stats,
                            buf.len() as u64,
                            excerpt_cap,
                            done,
                        )
                    }
                    Ok((buf, false)) => {
                        rparts.headers.remove(header::CONTENT_LENGTH);
                        let n = buf.len() as u64;
                        ResponseTap::new(
                            rbody,
                            Some(buf),
                            Some(Masking::Stream(m.stream())),
                            MaskStats::default(),
                            n,
                            excerpt_cap,
                            done,
                        )
                    }
                    Err(e) => {
                        // `done` reports the failure when the tap is dropped.
                        let msg =
                            format!("the upstream body failed: {}", describe_error(e.as_ref()));
                        ResponseTap::new(empty(), None, None, MaskStats::default(), 0, 0, done)
                            .abort(msg.clone());
                        return error(
                            StatusCode::BAD_GATEWAY,
                            "upstream_failed",
                            format!("Warden: {msg}"),
                        );
                    }
                }
            }
        }
        (Mode::Events, Some(m)) => {
            rparts.headers.remove(header::CONTENT_LENGTH);
            ResponseTap::new(
                rbody.map_err(Into::into).boxed_unsync(),
                None,
                Some(Masking::events(m.clone())),
                MaskStats::default(),
                0,
                excerpt_cap,
                done,
            )
        }
        (Mode::Text, Some(m)) => {
            rparts.headers.remove(header::CONTENT_LENGTH);
            ResponseTap::new(
                rbody.map_err(Into::into).boxed_unsync(),
                None,
                Some(Masking::Stream(m.stream())),
                MaskStats::default(),
                0,
                excerpt_cap,
                done,
            )
        }
        _ => ResponseTap::new(
            rbody.map_err(Into::into).boxed_unsync(),
            None,
            None,
            MaskStats::default(),
            0,
            if text_like && !encoded {
                excerpt_cap
            } else {
                0
            },
            done,
        ),
    };
    Response::from_parts(rparts, body.boxed_unsync())
}

#[derive(Clone, Copy)]
enum Mode {
    Pass,
    Json,
    Text,
    Events,
}

fn is_json(ct: &str) -> bool {
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime == "application/json" || mime.ends_with("+json")
}

fn is_text(ct: &str) -> bool {
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.starts_with("text/")
        || mime.ends_with("+xml")
        || mime.ends_with("json")
        || matches!(
            mime,
            "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/yaml"
                | "application/x-yaml"
                | "application/csv"
                | "application/x-ndjson"
        )
}

fn is_upgrade(h: &http::HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Read a body until it ends (`true`) or exceeds `limit` (`false`, the bytes so far).
async fn collect_up_to(
    body: &mut ProxyBody,
    limit: usize,
) -> Result<(Bytes, bool), crate::body::BoxError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
            if buf.len() > limit {
                return Ok((buf.freeze(), false));
            }
        }
    }
    Ok((buf.freeze(), true))
}

/// Mask a complete JSON body: field rules and detectors on the parsed document (stays valid
/// JSON); a body that does not parse is masked as text.
fn mask_json_body(m: &ConnectionMasker, buf: &[u8], stats: &mut MaskStats) -> Bytes {
    match serde_json::from_slice::<Value>(buf) {
        Ok(mut v) => {
            let before: u64 = stats.per_detector.values().sum();
            m.mask_json(&mut v, stats);
            if stats.per_detector.values().sum::<u64>() == before {
                // Nothing masked: the caller gets the upstream's exact bytes (key order,
                // spacing, number spelling), not a re-serialization.
                return Bytes::copy_from_slice(buf);
            }
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => Bytes::from(m.mask_bytes(buf, stats).into_owned()),
    }
}

fn record_failure(
    session: &Session,
    request_id: &warden_pipeline::RequestId,
    started: Instant,
    msg: &str,
) {
    session.record_response(
        request_id,
        ResponseInfo {
            status: "error".into(),
            error_message: Some(msg.to_string()),
            duration_us: Some(started.elapsed().as_micros() as u64),
            ..Default::default()
        },
    );
}

struct FinalizeCtx {
    session: Arc<Session>,
    request_id: warden_pipeline::RequestId,
    started: Instant,
    status: StatusCode,
    content_type: Option<String>,
    text_like: bool,
    req_capture: Arc<Mutex<Capture>>,
    req_text_like: bool,
    masker: Option<ConnectionMasker>,
    lease: Lease,
    /// The caller's credential, to cut out of the recorded request body.
    secret: String,
}

fn excerpt_value(bytes: &[u8], json_ok: bool) -> Value {
    if json_ok && let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// Builds the closure that records `action.response` once the body is delivered (or
/// abandoned) and releases the session.
fn finalizer(ctx: FinalizeCtx) -> crate::body::Finalizer {
    Box::new(move |out: TapOutcome| {
        let FinalizeCtx {
            session,
            request_id,
            started,
            status,
            content_type,
            text_like,
            req_capture,
            req_text_like,
            masker,
            lease,
            secret,
        } = ctx;
        let code = status.as_u16();
        let mut stats = out.stats;
        let req = req_capture
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let mut masked = json!({
            "status": code,
            "content_type": content_type,
            "body_bytes": out.bytes_out,
            "upstream_body_bytes": out.bytes_in,
            "request_body_bytes": req.bytes,
        });
        if text_like && !out.excerpt.head.is_empty() {
            let json_ok = !out.excerpt.truncated() && content_type.as_deref().is_some_and(is_json);
            masked["body"] = excerpt_value(&out.excerpt.head, json_ok);
            masked["body_truncated"] = Value::Bool(out.excerpt.truncated());
        }
        if req_text_like && !req.head.is_empty() {
            let head = match &masker {
                Some(m) => m.mask_bytes(&req.head, &mut stats).into_owned(),
                None => req.head.clone(),
            };
            masked["request_body"] = Value::String(scrub(&String::from_utf8_lossy(&head), &secret));
            masked["request_body_truncated"] = Value::Bool(req.truncated());
        }
        let failed = out.status != "ok";
        let info = ResponseInfo {
            status: if failed {
                out.status.to_string()
            } else if code >= 400 {
                "error".into()
            } else {
                "ok".into()
            },
            tag: Some(code.to_string()),
            error_code: (code >= 400).then(|| code.to_string()),
            error_message: out.error,
            rows: 0,
            bytes: out.bytes_out,
            duration_us: Some(started.elapsed().as_micros() as u64),
            masked: Some(masked),
            masked_values: stats.per_detector,
        };
        session.record_response(&request_id, info);
        lease.release(if failed {
            SessionEnd::ClientVanished("the response was not delivered completely".into())
        } else {
            SessionEnd::ClientTerminated
        });
    })
}

/// After `101 Switching Protocols`: copy bytes both ways until both sides have closed;
/// WebSocket frames are followed for the evidence (see [`crate::tunnel`]).
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    websocket: bool,
    session: Arc<Session>,
    request_id: warden_pipeline::RequestId,
    started: Instant,
    lease: Lease,
) {
    let (c, u) = tokio::join!(client, upstream);
    let info = match (c, u) {
        (Ok(c), Ok(u)) => {
            let (cr, cw) = tokio::io::split(hyper_util::rt::TokioIo::new(c));
            let (ur, uw) = tokio::io::split(hyper_util::rt::TokioIo::new(u));
            let cap = session.limits.response_bytes;
            let ws = || websocket.then(|| crate::tunnel::WsFrames::new(cap));
            // What the upstream sends the agent is masked (WebSocket text messages).
            let mut rewriter = session
                .masker
                .clone()
                .filter(|_| websocket)
                .map(crate::tunnel::WsMasker::new);
            let ((up, e1), (down, e2)) = tokio::join!(
                crate::tunnel::pump(cr, uw, ws(), None),
                crate::tunnel::pump(ur, cw, ws(), rewriter.as_mut())
            );
            let mut stats = rewriter.map(|r| r.stats).unwrap_or_default();
            let masker = session.masker.as_ref();
            let masked = json!({
                "status": 101,
                "upgraded": if websocket { "websocket" } else { "other" },
                "to_upstream": up.to_json(masker, &mut stats),
                "to_client": down.to_json(masker, &mut stats),
            });
            let error = e1.or(e2);
            ResponseInfo {
                status: if error.is_some() { "interrupted" } else { "ok" }.into(),
                tag: Some("101".into()),
                error_message: error.map(|e| format!("tunnel ended: {e}")),
                bytes: down.bytes,
                duration_us: Some(started.elapsed().as_micros() as u64),
                masked: Some(masked),
                masked_values: stats.per_detector,
                ..Default::default()
            }
        }
        (c, u) => ResponseInfo {
            status: "error".into(),
            tag: Some("101".into()),
            error_message: Some(format!(
                "upgrade failed (client: {}, upstream: {})",
                c.err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "ok".into()),
                u.err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "ok".into())
            )),
            ..Default::default()
        },
    };
    session.record_response(&request_id, info);
    lease.release(SessionEnd::ClientTerminated);
}

/// `approve` decisions: a standing grant, an approved `Warden-Approval` retry, an async
/// hold (`Prefer: respond-async` → 202), or a synchronous hold until decided.
#[allow(clippy::too_many_arguments)]
async fn approval_gate(
    gw: &Arc<HttpGateway>,
    session: &Arc<Session>,
    action: &ActionInfo,
    decision: &Decision,
    wanted: Option<String>,
    prefer_async: bool,
    target_text: &str,
    method: &Method,
) -> Result<ApprovalInfo, Response<ProxyBody>> {
    let approvers = if decision.approvers.is_empty() {
        "an approver".to_string()
    } else {
        decision.approvers.join(", ")
    };
    let rules = decision.rules.join(", ");
    if let Some(grant) = session.granted(decision) {
        return Ok(ApprovalInfo {
            id: grant,
            decision: Some("granted".into()),
            comment: Some("covered by a standing time-boxed grant".into()),
            ..Default::default()
        });
    }
    let Some(approvals) = gw.pipeline.approvals() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "approval_unavailable",
            "Warden: this request needs approval, but approvals are not configured",
        ));
    };
    let pending = |id: &str, timeout: std::time::Duration| {
        let mut r = json_response(
            StatusCode::ACCEPTED,
            json!({
                "status": "pending",
                "approval_id": id,
                "message": format!("Warden: {method} {target_text} needs approval by {approvers} (rule {rules}); retry with header `Warden-Approval: {id}` once approved"),
                "approvers": decision.approvers,
                "rules": decision.rules,
                "expires_in_seconds": timeout.as_secs(),
                "link": approvals.broker.link(id),
            }),
        );
        if let Ok(v) = HeaderValue::from_str(id) {
            r.headers_mut().insert("warden-approval", v);
        }
        r.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
        r
    };

    // A retry naming an approval.
    if let Some(id) = wanted {
        let Some(view) = approvals.broker.get(&id) else {
            return Err(error(
                StatusCode::FORBIDDEN,
                "approval_unknown",
                format!(
                    "Warden: approval `{}` is unknown (or expired from memory)",
                    clean(&id, 64)
                ),
            ));
        };
        let strip_version = |t: &str| {
            t.rsplit_once(' ')
                .map(|(a, _)| a.to_string())
                .unwrap_or_default()
        };
        if view.requester != session.principal.id
            || view.connection != session.connection.name
            || strip_version(&view.statement) != strip_version(&action.text)
        {
            return Err(error(
                StatusCode::FORBIDDEN,
                "approval_mismatch",
                format!(
                    "Warden: approval `{id}` was given for another request, caller or connection"
                ),
            ));
        }
        return match view.state {
            warden_approvals::State::Pending => Err(pending(
                &id,
                std::time::Duration::from_secs(view.seconds_left.unwrap_or(0)),
            )),
            warden_approvals::State::Approved => {
                let fresh = gw
                    .used_approvals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone());
                if !fresh {
                    return Err(error(
                        StatusCode::CONFLICT,
                        "approval_used",
                        format!(
                            "Warden: approval `{id}` was already used; each approval lets one request through"
                        ),
                    ));
                }
                Ok(ApprovalInfo {
                    id,
                    approver: Some(view.decided_by.join(",")),
                    decision: Some("approved".into()),
                    decided_at: view.decided_at.clone(),
                    comment: None,
                })
            }
            other => Err(json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "approval_refused", "approval_id": id, "state": other.as_str(),
                       "message": format!("Warden: approval `{id}` is {other}{}; the request was not forwarded",
                                          view.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())}),
            )),
        };
    }

    let (id, outcome, timeout) = match session.request_approval(action.clone(), decision).await {
        Ok(x) => x,
        Err(e) => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "approval_unavailable",
                format!(
                    "Warden: this request needs approval by {approvers} and was not forwarded: {e}"
                ),
            ));
        }
    };
    if prefer_async {
        drop(outcome);
        return Err(pending(&id, timeout));
    }

    // Hold the request; withdraw if the client goes away meanwhile.
    struct Withdraw<'a> {
        session: &'a Session,
        id: Option<String>,
    }
    impl Drop for Withdraw<'_> {
        fn drop(&mut self) {
            if let Some(id) = self.id.take() {
                self.session
                    .withdraw_approval(&id, "client disconnected while the request was held");
            }
        }
    }
    let mut guard = Withdraw {
        session,
        id: Some(id.clone()),
    };
    let o = outcome.await;
    guard.id = None;
    match o {
        Ok(HoldOutcome::Approved { approvers, comment }) => Ok(ApprovalInfo {
            id,
            approver: Some(approvers.join(",")),
            decision: Some("approved".into()),
            decided_at: Some(warden_core::time_fmt::now_rfc3339()),
            comment,
        }),
        Ok(HoldOutcome::Denied { approver, comment }) => Err(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "approval_denied", "approval_id": id,
                   "message": format!("Warden: approval {id} was denied by {approver}{}; the request was not forwarded",
                                      comment.map(|c| format!(": {c}")).unwrap_or_default())}),
        )),
        Ok(HoldOutcome::TimedOut) => Err(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "approval_timeout", "approval_id": id,
                   "message": format!("Warden: approval {id} timed out after {}; the request was not forwarded",
                                      warden_approvals::humanize(timeout))}),
        )),
        Ok(HoldOutcome::Withdrawn { reason }) => Err(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "approval_withdrawn", "approval_id": id,
                   "message": format!("Warden: approval {id} was withdrawn ({reason}); the request was not forwarded")}),
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "approval_unavailable",
            format!("Warden: the approval broker stopped before approval {id} was decided"),
        )),
    }
}
