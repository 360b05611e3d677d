//! A minimal PostgreSQL client on Warden's own credential, for front doors that run a
//! statement on the agent's behalf (the MCP `query` and `describe_connection` tools).
//!
//! One statement per call, extended protocol with text-format parameters and results:
//! `Parse` (unnamed) → `Bind` → `Describe` portal → `Execute` (all rows) → `Sync`. Rows
//! beyond `max_rows` are counted but not kept, so memory stays bounded by the cap (one
//! frame at a time is read, each ≤ [`crate::relay::MAX_BACKEND_FRAME`]). The server's own
//! error comes back as [`ClientError::Server`]. Connecting reuses [`crate::upstream`]
//! (SCRAM/md5/cleartext, optional verified TLS).
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_pipeline::ConnectionSpec;

use crate::codec::{self, ErrorFields};
use crate::rows::{self, Column};
use crate::stream::Stream;
use crate::upstream::{self, UpstreamError};

/// A row as text values (`None` = NULL).
pub type Row = Vec<Option<Vec<u8>>>;

/// What one statement returned.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Empty for statements without a result set (plain INSERT/UPDATE/DELETE, DDL).
    pub columns: Vec<Column>,
    /// At most `max_rows` rows, in order.
    pub rows: Vec<Row>,
    /// Every row the server sent (kept or not).
    pub total_rows: u64,
    /// Bytes of row data the server sent.
    pub bytes: u64,
    /// The CommandComplete tag (`SELECT 3`, `DELETE 1`); empty for an empty query.
    pub tag: String,
}

impl QueryResult {
    pub fn truncated(&self) -> bool {
        self.total_rows > self.rows.len() as u64
    }
}

#[derive(Debug)]
pub enum ClientError {
    /// Could not connect or authenticate.
    Connect(UpstreamError),
    /// The database answered with an error (the statement failed).
    Server(ErrorFields),
    /// The connection broke or the server said something unexpected.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => e.fmt(f),
            ClientError::Server(e) => write!(f, "{} ({}): {}", e.severity, e.code, e.message),
            ClientError::Protocol(e) => write!(f, "database connection failed: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// An authenticated connection to the target, ready for one statement at a time.
pub struct Client {
    stream: Stream,
    buf: BytesMut,
    addr: String,
    pid: i32,
    secret: Vec<u8>,
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    for x in s.bytes() {
        b.put_u8(if x == 0 { b' ' } else { x });
    }
    b.put_u8(0);
}

fn frame(b: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    b.put_u8(tag);
    let at = b.len();
    b.put_i32(0);
    body(b);
    let len = (b.len() - at) as i32;
    b[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The frames that run `sql` once with text parameters (exposed for tests).
pub fn encode_statement(sql: &str, params: &[Option<String>]) -> Result<BytesMut, ClientError> {
    if params.len() > i16::MAX as usize {
        return Err(ClientError::Protocol(format!(
            "{} parameters: at most {} are possible",
            params.len(),
            i16::MAX
        )));
    }
    let mut b = BytesMut::with_capacity(sql.len() + 64);
    frame(&mut b, b'P', |b| {
        put_cstr(b, "");
        put_cstr(b, sql);
        b.put_i16(0);
    });
    let mut too_long = false;
    frame(&mut b, b'B', |b| {
        put_cstr(b, "");
        put_cstr(b, "");
        b.put_i16(0); // all parameters in text format
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                None => b.put_i32(-1),
                Some(v) => {
                    if v.len() > codec::MAX_FRAME {
                        too_long = true;
                    }
                    b.put_i32(v.len().min(i32::MAX as usize) as i32);
                    b.put_slice(v.as_bytes());
                }
            }
        }
        b.put_i16(0); // all results in text format
    });
    if too_long || b.len() > codec::MAX_FRAME {
        return Err(ClientError::Protocol("the statement is too large".into()));
    }
    frame(&mut b, b'D', |b| {
        b.put_u8(b'P');
        put_cstr(b, "");
    });
    frame(&mut b, b'E', |b| {
        put_cstr(b, "");
        b.put_i32(0);
    });
    frame(&mut b, b'S', |_| {});
    Ok(b)
}

impl Client {
    /// Connect and authenticate with the connection's credential.
    pub async fn connect(
        spec: &ConnectionSpec,
        application_name: &str,
    ) -> Result<Self, ClientError> {
        let up = upstream::connect(
            spec,
            &[("application_name".to_string(), application_name.to_string())],
        )
        .await
        .map_err(ClientError::Connect)?;
        Ok(Client {
            stream: up.stream,
            buf: up.leftover,
            addr: up.addr,
            pid: up.pid,
            secret: up.secret,
        })
    }

    async fn read_frame(&mut self) -> Result<(u8, BytesMut), ClientError> {
        loop {
            if let Some(f) = codec::split_frame(&self.buf, crate::relay::MAX_BACKEND_FRAME)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                let (tag, len) = (f.tag, f.len);
                let mut fr = self.buf.split_to(len);
                fr.advance(5);
                return Ok((tag, fr));
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "the database closed the connection".into(),
                ));
            }
        }
    }

    /// Run one statement; keep at most `max_rows` rows. The connection stays usable after
    /// a server error.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Option<String>],
        max_rows: usize,
    ) -> Result<QueryResult, ClientError> {
        let out = encode_statement(sql, params)?;
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut res = QueryResult::default();
        let mut error: Option<ErrorFields> = None;
        loop {
            let (tag, body) = self.read_frame().await?;
            match tag {
                b'1' | b'2' | b'n' | b'N' | b'S' | b'A' | b't' => {}
                b'T' => {
                    res.columns = rows::parse_row_description(&body)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                }
                b'D' => {
                    res.total_rows += 1;
                    res.bytes += body.len() as u64;
                    if res.rows.len() < max_rows {
                        let vals = rows::row_values(&body)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?;
                        res.rows
                            .push(vals.into_iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                    }
                }
                b'C' => {
                    res.tag = codec::Reader::new(&body)
                        .cstr("CommandComplete tag")
                        .map_err(|e| ClientError::Protocol(e.to_string()))?
                        .to_string();
                }
                b'I' | b's' => {}
                b'E' => {
                    error = Some(codec::parse_error_fields(&body).unwrap_or_default());
                }
                b'Z' => {
                    return match error {
                        Some(e) => Err(ClientError::Server(e)),
                        None => Ok(res),
                    };
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected message {:?} from the database",
                        other as char
                    )));
                }
            }
        }
    }

    /// Ask the server to cancel what this connection is running (e.g. after a timeout).
    pub async fn cancel(&self) {
        let Ok(mut s) = tokio::net::TcpStream::connect(&self.addr).await else {
            return;
        };
        let mut b = BytesMut::new();
        codec::write_cancel(&mut b, self.pid, &self.secret);
        let _ = s.write_all(&b).await;
    }

    /// Say goodbye (best effort).
    pub async fn close(mut self) {
        let mut b = BytesMut::new();
        codec::write_terminate(&mut b);
        let _ = self.stream.write_all(&b).await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_one_extended_round() {
        let b = encode_statement("select $1, $2", &[Some("a".into()), None]).unwrap();
        let mut tags = Vec::new();
        let mut rest = &b[..];
        while let Some(f) = codec::split_frame(rest, codec::MAX_FRAME).unwrap() {
            tags.push(f.tag);
            if f.tag == b'P' {
                let p = codec::parse_parse(f.body).unwrap();
                assert_eq!(p.query, "select $1, $2");
            }
            if f.tag == b'B' {
                let bind = codec::parse_bind(f.body).unwrap();
                assert_eq!(bind.raw, vec![Some((false, &b"a"[..])), None]);
            }
            rest = &rest[f.len..];
        }
        assert!(rest.is_empty());
        assert_eq!(tags, b"PBDES");
    }
}
