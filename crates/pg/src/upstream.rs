//! Connecting to the target database with Warden's own credential.
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_pipeline::{ConnectionSpec, UpstreamTls};

use crate::codec::{self, ErrorFields};
use crate::stream::Stream;

/// An authenticated upstream connection, ready for queries.
pub struct Upstream {
    pub stream: Stream,
    /// ParameterStatus messages the upstream sent during startup, raw frames in order.
    pub startup_frames: BytesMut,
    pub pid: i32,
    pub secret: Vec<u8>,
    pub addr: String,
    /// Bytes already read past ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

#[derive(Debug)]
pub enum UpstreamError {
    /// Could not reach the target (network, TLS).
    Connect(String),
    /// The target refused Warden's credential or the startup (its own error).
    Refused(ErrorFields),
    /// The target spoke something Warden did not expect.
    Protocol(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot reach the database: {e}"),
            UpstreamError::Refused(e) => write!(
                f,
                "the database refused the session: {} ({})",
                e.message, e.code
            ),
            UpstreamError::Protocol(e) => write!(f, "unexpected reply from the database: {e}"),
        }
    }
}

fn io(e: std::io::Error) -> UpstreamError {
    UpstreamError::Connect(e.to_string())
}

/// Read one complete frame, buffering in `buf`.
async fn read_frame(s: &mut Stream, buf: &mut BytesMut) -> Result<(u8, BytesMut), UpstreamError> {
    loop {
        if let Some(f) = codec::split_frame(buf, codec::MAX_FRAME)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            let (tag, len) = (f.tag, f.len);
            let mut frame = buf.split_to(len);
            frame.advance(5);
            return Ok((tag, frame));
        }
        if s.read_buf(buf).await.map_err(io)? == 0 {
            return Err(UpstreamError::Connect(
                "connection closed during startup".into(),
            ));
        }
    }
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca) = ca_file else {
        return Err(UpstreamError::Connect(
            "upstream TLS needs `ca_file` naming the CA that signed the server certificate".into(),
        ));
    };
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| UpstreamError::Connect(format!("reading ca_file {}: {e}", ca.display())))?;
    for c in certs {
        let c = c.map_err(|e| {
            UpstreamError::Connect(format!("reading ca_file {}: {e}", ca.display()))
        })?;
        roots
            .add(c)
            .map_err(|e| UpstreamError::Connect(format!("ca_file {}: {e}", ca.display())))?;
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Connect, negotiate TLS if configured, start up and authenticate.
pub async fn connect(
    spec: &ConnectionSpec,
    client_params: &[(String, String)],
) -> Result<Upstream, UpstreamError> {
    let addr = spec.upstream.clone();
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| UpstreamError::Connect(format!("{addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = match &spec.tls {
        UpstreamTls::Disable => Stream::Plain(tcp),
        UpstreamTls::VerifyFull {
            ca_file,
            server_name,
        } => {
            let mut tcp = tcp;
            let mut b = BytesMut::new();
            codec::write_ssl_request(&mut b);
            tcp.write_all(&b).await.map_err(io)?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await.map_err(io)?;
            if answer[0] != b'S' {
                return Err(UpstreamError::Connect(
                    "the database does not accept TLS but the connection requires it".into(),
                ));
            }
            let connector = tls_connector(ca_file.as_deref())?;
            let host = server_name.clone().unwrap_or_else(|| {
                addr.rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or(addr.clone())
            });
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| UpstreamError::Connect(format!("server name {host}: {e}")))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| UpstreamError::Connect(format!("TLS: {e}")))?;
            Stream::ClientTls(Box::new(tls))
        }
    };

    let user = spec.user.clone().unwrap_or_else(|| "postgres".into());
    let mut params = vec![
        ("user".to_string(), user.clone()),
        (
            "database".to_string(),
            spec.database.clone().unwrap_or_else(|| spec.name.clone()),
        ),
    ];
    params.extend(client_params.iter().cloned());
    let mut out = BytesMut::new();
    codec::write_startup(&mut out, &params);
    stream.write_all(&out).await.map_err(io)?;

    let password = spec.password.clone().unwrap_or_default();
    let mut buf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramSha256> = None;
    let mut startup_frames = BytesMut::new();
    let mut key: Option<(i32, Vec<u8>)> = None;
    loop {
        let (tag, body) = read_frame(&mut stream, &mut buf).await?;
        match tag {
            b'R' => {
                let mut r = codec::Reader::new(&body);
                let code = r
                    .i32("auth code")
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                out.clear();
                match code {
                    0 => {}
                    3 => {
                        let mut pw = password.clone().into_bytes();
                        pw.push(0);
                        codec::write_password(&mut out, &pw);
                    }
                    5 => {
                        let salt = r
                            .bytes(4, "md5 salt")
                            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            password.as_bytes(),
                            [salt[0], salt[1], salt[2], salt[3]],
                        );
                        let mut pw = hash.into_bytes();
                        pw.push(0);
                        codec::write_password(&mut out, &pw);
                    }
                    10 => {
                        let mut mechs = Vec::new();
                        while let Ok(m) = r.cstr("SASL mechanism") {
                            if m.is_empty() {
                                break;
                            }
                            mechs.push(m.to_string());
                        }
                        if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                            return Err(UpstreamError::Protocol(format!(
                                "no supported SASL mechanism in {mechs:?}"
                            )));
                        }
                        let s =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        codec::write_sasl_initial(&mut out, "SCRAM-SHA-256", s.message());
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            UpstreamError::Protocol("SASL continue without start".into())
                        })?;
                        s.update(r.rest())
                            .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                        codec::write_password(&mut out, s.message());
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            UpstreamError::Protocol("SASL final without start".into())
                        })?;
                        s.finish(r.rest()).map_err(|e| {
                            UpstreamError::Protocol(format!("SCRAM server signature: {e}"))
                        })?;
                    }
                    other => {
                        return Err(UpstreamError::Protocol(format!(
                            "authentication method {other} is not supported"
                        )));
                    }
                }
                if !out.is_empty() {
                    stream.write_all(&out).await.map_err(io)?;
                }
            }
            b'E' => {
                let f = codec::parse_error_fields(&body).unwrap_or_default();
                return Err(UpstreamError::Refused(f));
            }
            b'S' => {
                let mut r = codec::Reader::new(&body);
                let k = r
                    .cstr("parameter")
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                let v = r
                    .cstr("parameter")
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                codec::write_parameter_status(&mut startup_frames, k, v);
            }
            b'K' => {
                let mut r = codec::Reader::new(&body);
                let pid = r
                    .i32("backend pid")
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                key = Some((pid, r.rest().to_vec()));
            }
            b'Z' => {
                let (pid, secret) = key.unwrap_or((0, Vec::new()));
                return Ok(Upstream {
                    stream,
                    startup_frames,
                    pid,
                    secret,
                    addr,
                    leftover: buf,
                });
            }
            b'N' | b'v' => {}
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message {:?} during startup",
                    other as char
                )));
            }
        }
    }
}
