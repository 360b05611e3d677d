//! From TCP accept to a ready session: TLS negotiation, StartupMessage, caller
//! authentication, access check, upstream connection, `session.start`.
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_pipeline::{AuthPlan, Pipeline, Protocol, Session};

use crate::PgListenerConfig;
use crate::cancel::{CancelRegistry, send_cancel};
use crate::codec::{self, FirstPacket, Startup};
use crate::stream::Stream;

/// Buffered frame reader over a stream.
pub struct FrameReader {
    pub stream: Stream,
    pub buf: BytesMut,
}

impl FrameReader {
    pub async fn next_frame(&mut self) -> std::io::Result<Option<(u8, BytesMut)>> {
        loop {
            match codec::split_frame(&self.buf, codec::MAX_FRAME) {
                Ok(Some(f)) => {
                    let (tag, len) = (f.tag, f.len);
                    let mut frame = self.buf.split_to(len);
                    frame.advance(5);
                    return Ok(Some((tag, frame)));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ));
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

async fn send_fatal(stream: &mut Stream, code: &str, message: &str, hint: Option<&str>) {
    let mut b = BytesMut::new();
    codec::write_error(&mut b, b'E', "FATAL", code, message, hint);
    let _ = stream.write_all(&b).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

pub async fn refuse_too_many(socket: TcpStream) {
    let mut s = Stream::Plain(socket);
    // Read the startup packet first so the client sees the error instead of a reset.
    let mut buf = BytesMut::with_capacity(512);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read_buf(&mut buf)).await;
    send_fatal(
        &mut s,
        "53300",
        "sorry, too many clients already (Warden max_connections)",
        None,
    )
    .await;
}

async fn read_untagged(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<BytesMut>, String> {
    loop {
        match codec::split_untagged(buf) {
            Ok(Some(body)) => {
                let n = body.len() + 4;
                let mut pkt = buf.split_to(n);
                pkt.advance(4);
                return Ok(Some(pkt));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Session settings Warden reads from the startup packet and keeps from the upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WardenOptions {
    pub purpose: Option<String>,
    /// `warden.auth=password`: ask for a cleartext password (to present a JWT).
    pub prefer_password: bool,
}

/// Split a libpq `options` string into arguments (backslash escapes the next character).
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn escape_option(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c.is_whitespace() {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

fn take_warden_setting(name: &str, value: &str, w: &mut WardenOptions) -> bool {
    match name.to_ascii_lowercase().as_str() {
        "warden.purpose" => {
            w.purpose = Some(value.to_string()).filter(|v| !v.is_empty());
            true
        }
        "warden.auth" => {
            w.prefer_password = matches!(value, "password" | "jwt");
            true
        }
        n if n.starts_with("warden.") => true,
        _ => false,
    }
}

/// Pull `warden.*` settings out of the startup parameters (both `-c warden.x=...` inside
/// `options` and a bare `warden.x` parameter), returning what to forward upstream.
pub fn extract_warden_options(
    params: &[(String, String)],
) -> (Vec<(String, String)>, WardenOptions) {
    let mut w = WardenOptions::default();
    let mut forward = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "user" | "database" | "replication" => continue,
            k if k.starts_with("_pq_.") => continue,
            k if take_warden_setting(k, v, &mut w) => continue,
            "options" => {
                let args = split_options(v);
                let mut kept: Vec<String> = Vec::new();
                let mut i = 0;
                while i < args.len() {
                    let a = &args[i];
                    let setting = if a == "-c" {
                        i += 1;
                        args.get(i).map(|s| s.as_str())
                    } else if let Some(rest) = a.strip_prefix("-c") {
                        Some(rest)
                    } else {
                        a.strip_prefix("--")
                    };
                    match setting.and_then(|s| s.split_once('=')) {
                        Some((name, value)) if take_warden_setting(name, value, &mut w) => {}
                        Some((name, value)) => {
                            kept.push("-c".into());
                            kept.push(escape_option(&format!("{name}={value}")));
                        }
                        None => kept.push(escape_option(a)),
                    }
                    i += 1;
                }
                if !kept.is_empty() {
                    forward.push(("options".to_string(), kept.join(" ")));
                }
            }
            _ => forward.push((k.clone(), v.clone())),
        }
    }
    (forward, w)
}

pub async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    pipeline: Arc<Pipeline>,
    registry: CancelRegistry,
    config: Arc<PgListenerConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = peer.to_string();
    let loopback = peer.ip().is_loopback();
    let negotiated = tokio::time::timeout(
        config.startup_timeout,
        negotiate(
            Stream::Plain(socket),
            &client,
            &pipeline,
            &registry,
            &config,
        ),
    );
    // Before the StartupMessage there is no session to end: a shutdown just closes.
    let negotiated = tokio::select! {
        r = negotiated => r,
        _ = stop.wait_for(|s| *s) => return,
    };
    let (stream, buf, startup) = match negotiated {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(_) => {
            tracing::info!(client = %client, "startup timed out");
            return;
        }
    };
    let secure = stream.is_tls() || loopback;
    let mut reader = FrameReader { stream, buf };
    let ready = tokio::time::timeout(
        config.startup_timeout,
        establish(&mut reader, startup, secure, &client, &pipeline, &config),
    )
    .await;
    let (session, upstream) = match ready {
        Ok(Some(x)) => x,
        Ok(None) => return,
        Err(_) => {
            send_fatal(
                &mut reader.stream,
                "08006",
                "Warden: session setup timed out",
                None,
            )
            .await;
            return;
        }
    };
    let (pid, secret) =
        registry.register(upstream.addr.clone(), upstream.pid, upstream.secret.clone());
    let mut out = BytesMut::with_capacity(512);
    codec::write_auth_ok(&mut out);
    out.extend_from_slice(&upstream.startup_frames);
    codec::write_backend_key(&mut out, pid, i32::from_be_bytes(secret));
    codec::write_ready(&mut out, b'I');
    if reader.stream.write_all(&out).await.is_err() {
        registry.unregister(pid);
        session
            .end(warden_pipeline::SessionEnd::ClientVanished(
                "closed during startup".into(),
            ))
            .await;
        return;
    }
    let cancel_target = registry.lookup(pid, &secret);
    crate::relay::run(reader, upstream, session, cancel_target, stop).await;
    registry.unregister(pid);
}

/// A malformed first packet: recorded as `protocol.error`, answered `08P01`.
async fn refuse_startup(stream: &mut Stream, pipeline: &Pipeline, client: &str, what: &str) {
    pipeline.record_protocol_error(
        None,
        None,
        "postgres",
        client,
        &format!("bad startup packet: {what}"),
    );
    send_fatal(
        stream,
        "08P01",
        &format!("invalid startup packet: {what}"),
        None,
    )
    .await;
}

/// SSLRequest / GSSENCRequest / CancelRequest handling up to the StartupMessage.
async fn negotiate(
    mut stream: Stream,
    client: &str,
    pipeline: &Pipeline,
    registry: &CancelRegistry,
    config: &PgListenerConfig,
) -> Option<(Stream, BytesMut, Startup)> {
    let mut buf = BytesMut::with_capacity(1024);
    // SSLRequest / GSSENCRequest may precede the StartupMessage.
    for _ in 0..3 {
        let pkt = match read_untagged(&mut stream, &mut buf).await {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                refuse_startup(&mut stream, pipeline, client, &e.to_string()).await;
                return None;
            }
        };
        match codec::parse_first_packet(&pkt) {
            Ok(FirstPacket::Ssl) => {
                if !buf.is_empty() {
                    // Bytes after SSLRequest before our answer would be read as if they had
                    // come through TLS (the CVE-2021-23214 class): refuse.
                    pipeline.record_protocol_error(
                        None,
                        None,
                        "postgres",
                        client,
                        "data sent after SSLRequest before the answer",
                    );
                    return None;
                }
                match (&config.tls, stream) {
                    (Some(acceptor), Stream::Plain(mut tcp)) => {
                        if tcp.write_all(b"S").await.is_err() {
                            return None;
                        }
                        match acceptor.accept(tcp).await {
                            Ok(tls) => stream = Stream::ServerTls(Box::new(tls)),
                            Err(e) => {
                                tracing::info!(client = %client, error = %e, "TLS handshake failed");
                                return None;
                            }
                        }
                    }
                    (_, s) => {
                        stream = s;
                        if stream.write_all(b"N").await.is_err() {
                            return None;
                        }
                    }
                }
            }
            Ok(FirstPacket::GssEnc) => {
                if stream.write_all(b"N").await.is_err() {
                    return None;
                }
            }
            Ok(FirstPacket::Cancel { pid, secret }) => {
                if let Some(target) = registry.lookup(pid, &secret) {
                    // A held statement is withdrawn; a running one is cancelled upstream.
                    target.hold_cancel.notify_one();
                    send_cancel(&target).await;
                }
                return None;
            }
            Ok(FirstPacket::Startup(s)) => return Some((stream, buf, s)),
            Err(e) => {
                refuse_startup(&mut stream, pipeline, client, &e.to_string()).await;
                return None;
            }
        }
    }
    send_fatal(
        &mut stream,
        "08P01",
        "too many negotiation requests before the startup message",
        None,
    )
    .await;
    None
}

/// Authenticate, check access, connect upstream, open the evidence session.
async fn establish(
    reader: &mut FrameReader,
    startup: Startup,
    secure: bool,
    client: &str,
    pipeline: &Arc<Pipeline>,
    config: &PgListenerConfig,
) -> Option<(Arc<Session>, crate::upstream::Upstream)> {
    let minor = startup.protocol & 0xffff;
    let unknown: Vec<&str> = startup
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unknown.is_empty() {
        let mut b = BytesMut::new();
        codec::write_negotiate_protocol(&mut b, 0, &unknown);
        if reader.stream.write_all(&b).await.is_err() {
            return None;
        }
    }
    if startup
        .get("replication")
        .is_some_and(|v| v != "false" && v != "0" && v != "off")
    {
        send_fatal(
            &mut reader.stream,
            "0A000",
            "Warden does not proxy replication connections",
            None,
        )
        .await;
        return None;
    }
    let Some(user) = startup.get("user").map(str::to_string) else {
        send_fatal(
            &mut reader.stream,
            "28000",
            "no PostgreSQL user name specified in startup packet",
            None,
        )
        .await;
        return None;
    };
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_string();
    let (forward_params, wopts) = extract_warden_options(&startup.params);

    // --- caller authentication ---
    let principal = match authenticate(reader, &user, secure, wopts.prefer_password, pipeline).await
    {
        Ok(p) => p,
        Err(AuthOutcome::Failed(reason)) => {
            pipeline
                .record_auth_failed(&user, Some(&database), "postgres", client, &reason)
                .await;
            send_fatal(
                &mut reader.stream,
                "28P01",
                &format!("password authentication failed for user \"{}\"", user.chars().take(64).collect::<String>()),
                Some("Use a Warden key (warden keys create) or a JWT from the configured issuer as the password."),
            )
            .await;
            return None;
        }
        Err(AuthOutcome::Malformed(what)) => {
            pipeline.record_protocol_error(
                None,
                Some(&database),
                "postgres",
                client,
                &format!("during authentication: {what}"),
            );
            send_fatal(
                &mut reader.stream,
                "08P01",
                &format!("invalid message during authentication: {what}"),
                None,
            )
            .await;
            return None;
        }
        Err(AuthOutcome::Gone) => return None,
    };

    // --- which connection, and may this principal use it? ---
    let connection = match pipeline.connection(&database) {
        Some(c) if c.protocol == Protocol::Postgres => c,
        Some(_) => {
            let why = format!("connection \"{database}\" is not a PostgreSQL connection");
            pipeline
                .record_session_refused(Some(&principal), &database, "postgres", client, &why)
                .await;
            send_fatal(&mut reader.stream, "3D000", &why, None).await;
            return None;
        }
        None => {
            let why = format!("connection \"{database}\" is not configured in Warden");
            pipeline
                .record_session_refused(Some(&principal), &database, "postgres", client, &why)
                .await;
            send_fatal(
                &mut reader.stream,
                "3D000",
                &why,
                Some("The database name selects a Warden connection ([[connections]] name)."),
            )
            .await;
            return None;
        }
    };
    if !pipeline.may_connect(&principal, &connection.name) {
        let why = format!(
            "{} has no access to connection \"{}\"",
            principal.id, connection.name
        );
        pipeline
            .record_session_refused(Some(&principal), &connection.name, "postgres", client, &why)
            .await;
        send_fatal(
            &mut reader.stream,
            "42501",
            &why,
            Some("No [[rules]] entry allows this principal on this connection."),
        )
        .await;
        return None;
    }

    // --- upstream, with Warden's credential ---
    let upstream = match tokio::time::timeout(
        config.upstream_timeout,
        crate::upstream::connect(&connection, &forward_params),
    )
    .await
    {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            let why = format!(
                "Warden could not open connection \"{}\": {e}",
                connection.name
            );
            pipeline
                .record_session_refused(
                    Some(&principal),
                    &connection.name,
                    "postgres",
                    client,
                    &why,
                )
                .await;
            let code = match &e {
                crate::upstream::UpstreamError::Refused(f)
                    if !f.code.is_empty() && !f.code.starts_with("28") =>
                {
                    f.code.clone()
                }
                _ => "08006".into(),
            };
            send_fatal(&mut reader.stream, &code, &why, None).await;
            return None;
        }
        Err(_) => {
            let why = format!(
                "Warden could not open connection \"{}\": the database did not answer in time",
                connection.name
            );
            pipeline
                .record_session_refused(
                    Some(&principal),
                    &connection.name,
                    "postgres",
                    client,
                    &why,
                )
                .await;
            send_fatal(&mut reader.stream, "08006", &why, None).await;
            return None;
        }
    };

    // --- evidence session (fail closed) ---
    match Session::open(
        pipeline.clone(),
        principal,
        connection,
        client.to_string(),
        wopts.purpose,
    )
    .await
    {
        Ok(s) => Some((s, upstream)),
        Err(e) => {
            send_fatal(
                &mut reader.stream,
                "58000",
                &format!("Warden refuses the session: {e}"),
                Some("The evidence ledger cannot record; nothing is forwarded until it can."),
            )
            .await;
            None
        }
    }
}

enum AuthOutcome {
    Failed(String),
    /// Malformed or oversized message: answered `08P01` and recorded as protocol.error.
    Malformed(String),
    Gone,
}

/// Next frame during authentication: a bad frame is a protocol error, EOF is "gone".
async fn auth_frame(reader: &mut FrameReader) -> Result<(u8, BytesMut), AuthOutcome> {
    match reader.next_frame().await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(AuthOutcome::Gone),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(AuthOutcome::Malformed(e.to_string()))
        }
        Err(_) => Err(AuthOutcome::Gone),
    }
}

/// Send `out` (an authentication request) and read the client's `p` answer to it.
async fn ask(
    reader: &mut FrameReader,
    out: &[u8],
    expected: &str,
) -> Result<BytesMut, AuthOutcome> {
    reader
        .stream
        .write_all(out)
        .await
        .map_err(|_| AuthOutcome::Gone)?;
    let (tag, body) = auth_frame(reader).await?;
    if tag != b'p' {
        return Err(AuthOutcome::Failed(format!(
            "expected {expected}, got {:?}",
            tag as char
        )));
    }
    Ok(body)
}

fn failed(e: impl std::fmt::Display) -> AuthOutcome {
    AuthOutcome::Failed(e.to_string())
}

async fn authenticate(
    reader: &mut FrameReader,
    user: &str,
    secure: bool,
    prefer_password: bool,
    pipeline: &Arc<Pipeline>,
) -> Result<warden_core::Principal, AuthOutcome> {
    let mut out = BytesMut::new();
    match pipeline.auth_plan(user, secure, prefer_password) {
        AuthPlan::Scram { mut server } => {
            codec::write_auth_sasl(&mut out, &["SCRAM-SHA-256"]);
            let body = ask(reader, &out, "SASLInitialResponse").await?;
            let mut r = codec::Reader::new(&body);
            let mech = r.cstr("SASL mechanism").map_err(failed)?;
            if mech != "SCRAM-SHA-256" {
                return Err(failed(format!(
                    "client chose unsupported SASL mechanism {mech}"
                )));
            }
            // -1 means "no initial response", which SCRAM cannot do without.
            let len = r.i32("SASL data length").map_err(failed)?;
            let data = if len < 0 {
                &[][..]
            } else {
                r.bytes(len as usize, "SASL data").map_err(failed)?
            };
            let first = server.client_first(data).map_err(failed)?;
            out.clear();
            codec::write_auth_sasl_continue(&mut out, &first);
            let body = ask(reader, &out, "SASLResponse").await?;
            let (key_id, last) = server
                .client_final(&body)
                .map_err(|e| failed(format!("SCRAM: {e}")))?;
            let principal = pipeline
                .principal_for_key(&key_id)
                .map_err(|f| AuthOutcome::Failed(f.reason))?;
            out.clear();
            codec::write_auth_sasl_final(&mut out, &last);
            reader
                .stream
                .write_all(&out)
                .await
                .map_err(|_| AuthOutcome::Gone)?;
            Ok(principal)
        }
        AuthPlan::Cleartext => {
            codec::write_auth_cleartext(&mut out);
            let body = ask(reader, &out, "PasswordMessage").await?;
            let pw = codec::Reader::new(&body).cstr("password").map_err(failed)?;
            pipeline
                .authenticate_secret(Some(user), pw)
                .await
                .map_err(|f| AuthOutcome::Failed(f.reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn purpose_from_options() {
        let (fwd, w) = extract_warden_options(&[
            p("user", "agent:x"),
            p("database", "orders"),
            p("application_name", "psql"),
            p(
                "options",
                "-c warden.purpose=ticket\\ 42 -c search_path=public --statement_timeout=5s",
            ),
        ]);
        assert_eq!(w.purpose.as_deref(), Some("ticket 42"));
        assert_eq!(
            fwd,
            vec![
                p("application_name", "psql"),
                p("options", "-c search_path=public -c statement_timeout=5s")
            ]
        );
    }

    #[test]
    fn bare_parameter_and_auth_preference() {
        let (fwd, w) = extract_warden_options(&[
            p("warden.purpose", "audit"),
            p("options", "-cwarden.auth=jwt"),
        ]);
        assert_eq!(w.purpose.as_deref(), Some("audit"));
        assert!(w.prefer_password);
        assert!(fwd.is_empty());
    }
}
