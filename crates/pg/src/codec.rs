//! PostgreSQL protocol v3 framing and the few message bodies the proxy reads or writes.
//!
//! The proxy forwards frames as raw bytes and parses only what it needs, so this module
//! works on borrowed slices: [`split_frame`] finds one complete `tag + len + body` frame
//! in a buffer (check, then parse — nothing is consumed until a whole frame is there), and
//! the `parse_*` functions read bodies without copying. Every read is bounds-checked:
//! a malformed body yields [`CodecError`], never a panic.
use bytes::{BufMut, BytesMut};

/// Largest regular message accepted from either side. PostgreSQL itself allows 1 GiB;
/// Warden caps frames so one client cannot make it buffer unbounded memory.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Largest startup packet (PostgreSQL's own MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP: usize = 10_000;

pub const PROTOCOL_V3: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Declared length below 4 or above the cap.
    BadLength { tag: u8, len: i64 },
    /// A body ended before a field it must contain.
    Truncated(&'static str),
    /// A string field is not NUL-terminated or not UTF-8.
    BadString(&'static str),
    /// A field has a value outside its domain.
    Invalid(&'static str),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::BadLength { tag, len } => {
                write!(f, "message {:?} has invalid length {len}", *tag as char)
            }
            CodecError::Truncated(what) => write!(f, "message truncated reading {what}"),
            CodecError::BadString(what) => write!(f, "invalid string in {what}"),
            CodecError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}
impl std::error::Error for CodecError {}

/// One complete regular frame inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    pub body: &'a [u8],
    /// Total bytes including tag and length.
    pub len: usize,
}

/// Find the first complete frame in `buf`. `Ok(None)` means "need more bytes".
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<Frame<'_>>, CodecError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > max {
        return Err(CodecError::BadLength {
            tag,
            len: len as i64,
        });
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame {
        tag,
        body: &buf[5..total],
        len: total,
    }))
}

/// Length-prefixed packet without a tag (startup, SSLRequest, CancelRequest).
pub fn split_untagged(buf: &[u8]) -> Result<Option<&[u8]>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        return Err(CodecError::BadLength {
            tag: 0,
            len: len as i64,
        });
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    Ok(Some(&buf[4..len as usize]))
}

/// A cursor over a message body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn i16(&mut self, what: &'static str) -> Result<i16, CodecError> {
        let s = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    pub fn i32(&mut self, what: &'static str) -> Result<i32, CodecError> {
        let s = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(CodecError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::BadString(what))?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| CodecError::BadString(what))?;
        self.pos += nul + 1;
        Ok(s)
    }
    /// A count that must be non-negative and plausible for the bytes left.
    pub fn count(
        &mut self,
        what: &'static str,
        min_bytes_each: usize,
    ) -> Result<usize, CodecError> {
        let n = self.i16(what)?;
        if n < 0 {
            return Err(CodecError::Invalid(what));
        }
        let n = n as usize;
        if n.saturating_mul(min_bytes_each) > self.remaining() {
            return Err(CodecError::Truncated(what));
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Frontend messages the proxy reads.

/// StartupMessage parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Startup {
    pub protocol: i32,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the first packet of a connection asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(Startup),
}

/// Parse the body (after the length word) of an untagged first packet.
pub fn parse_first_packet(body: &[u8]) -> Result<FirstPacket, CodecError> {
    let mut r = Reader::new(body);
    let code = r.i32("protocol version")?;
    match code {
        SSL_REQUEST => Ok(FirstPacket::Ssl),
        GSSENC_REQUEST => Ok(FirstPacket::GssEnc),
        CANCEL_REQUEST => {
            let pid = r.i32("cancel pid")?;
            // Protocol 3.2 allows longer secrets; keep whatever is there (up to 256 bytes).
            let secret = r.rest();
            if secret.len() < 4 || secret.len() > 256 {
                return Err(CodecError::Invalid("cancel key length"));
            }
            Ok(FirstPacket::Cancel {
                pid,
                secret: secret.to_vec(),
            })
        }
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let k = r.cstr("startup parameter name")?;
                if k.is_empty() {
                    break;
                }
                let v = r.cstr("startup parameter value")?;
                if params.len() >= 64 {
                    return Err(CodecError::Invalid("startup packet: too many parameters"));
                }
                params.push((k.to_string(), v.to_string()));
            }
            Ok(FirstPacket::Startup(Startup {
                protocol: v,
                params,
            }))
        }
        _ => Err(CodecError::Invalid(
            "protocol version (Warden speaks protocol 3)",
        )),
    }
}

/// Parse (`P`): statement name, query text, declared parameter type oids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a str,
    pub query: &'a str,
    pub param_types: Vec<u32>,
}

pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, CodecError> {
    let mut r = Reader::new(body);
    let name = r.cstr("Parse statement name")?;
    let query = r.cstr("Parse query")?;
    let n = r.count("Parse parameter count", 4)?;
    let mut param_types = Vec::with_capacity(n);
    for _ in 0..n {
        param_types.push(r.i32("Parse parameter type")? as u32);
    }
    Ok(Parse {
        name,
        query,
        param_types,
    })
}

/// Bind (`B`): portal, statement, and the raw parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    /// Each parameter: `None` for NULL, else (binary format?, bytes).
    pub raw: Vec<Option<(bool, &'a [u8])>>,
}

/// Parameters longer than this are cut in evidence (with a marker saying how long they were).
pub const PARAM_EVIDENCE_CAP: usize = 4096;

pub fn parse_bind(body: &[u8]) -> Result<Bind<'_>, CodecError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("Bind portal name")?;
    let statement = r.cstr("Bind statement name")?;
    let nfmt = r.count("Bind format count", 2)?;
    let mut formats = Vec::with_capacity(nfmt);
    for _ in 0..nfmt {
        formats.push(r.i16("Bind format code")?);
    }
    let nparams = r.count("Bind parameter count", 4)?;
    if nfmt > 1 && nfmt != nparams {
        return Err(CodecError::Invalid(
            "Bind format count (must be 0, 1 or one per parameter)",
        ));
    }
    let mut raw = Vec::with_capacity(nparams);
    for i in 0..nparams {
        let len = r.i32("Bind parameter length")?;
        if len == -1 {
            raw.push(None);
            continue;
        }
        if len < 0 {
            return Err(CodecError::Invalid("Bind parameter length"));
        }
        let v = r.bytes(len as usize, "Bind parameter value")?;
        let binary = match nfmt {
            0 => false,
            1 => formats[0] == 1,
            _ => formats[i] == 1,
        };
        raw.push(Some((binary, v)));
    }
    // result format codes follow; not needed.
    Ok(Bind {
        portal,
        statement,
        raw,
    })
}

impl Bind<'_> {
    /// Parameters as evidence shows them: text values as text; binary values decoded
    /// for common types (by the oids the Parse declared), else `\x<hex>`.
    pub fn render_params(&self, types: &[u32]) -> Vec<Option<String>> {
        self.raw
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.map(|(binary, v)| render_param(v, binary, types.get(i).copied().unwrap_or(0)))
            })
            .collect()
    }
}

fn render_param(v: &[u8], binary: bool, oid: u32) -> String {
    if binary && let Some(s) = decode_binary(v, oid) {
        return s;
    }
    let cut = v.len() > PARAM_EVIDENCE_CAP;
    let shown = &v[..v.len().min(PARAM_EVIDENCE_CAP)];
    let mut s = if binary {
        let mut s = String::with_capacity(2 + shown.len() * 2);
        s.push_str("\\x");
        for b in shown {
            s.push_str(&format!("{b:02x}"));
        }
        s
    } else {
        String::from_utf8_lossy(shown).into_owned()
    };
    if cut {
        s.push_str(&format!("…[{} bytes]", v.len()));
    }
    s
}

/// Binary wire format of common types (PostgreSQL `*send` functions).
fn decode_binary(v: &[u8], oid: u32) -> Option<String> {
    Some(match (oid, v.len()) {
        (16, 1) => (if v[0] != 0 { "true" } else { "false" }).to_string(),
        (21, 2) => i16::from_be_bytes([v[0], v[1]]).to_string(),
        (23, 4) => i32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        (26, 4) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        (20, 8) => i64::from_be_bytes(v.try_into().ok()?).to_string(),
        (700, 4) => f32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        (701, 8) => f64::from_be_bytes(v.try_into().ok()?).to_string(),
        (25 | 1043 | 1042 | 19 | 114 | 142, n) if n <= PARAM_EVIDENCE_CAP => {
            std::str::from_utf8(v).ok()?.to_string()
        }
        (3802, n) if (1..=PARAM_EVIDENCE_CAP).contains(&n) && v[0] == 1 => {
            std::str::from_utf8(&v[1..]).ok()?.to_string()
        }
        (2950, 16) => {
            let h: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        _ => return None,
    })
}

/// Execute (`E`): portal and row limit.
pub fn parse_execute(body: &[u8]) -> Result<(&str, i32), CodecError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("Execute portal name")?;
    let max_rows = r.i32("Execute row limit")?;
    Ok((portal, max_rows))
}

/// Close (`C`) / Describe (`D`): `S` or `P` plus a name.
pub fn parse_target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a str), CodecError> {
    let mut r = Reader::new(body);
    let kind = r.u8(what)?;
    if kind != b'S' && kind != b'P' {
        return Err(CodecError::Invalid(what));
    }
    let name = r.cstr(what)?;
    Ok((kind, name))
}

/// Query (`Q`).
pub fn parse_query(body: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(body);
    let q = r.cstr("Query text")?;
    Ok(q)
}

// ---------------------------------------------------------------------------
// Backend messages the proxy reads.

/// Fields of an ErrorResponse / NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, CodecError> {
    let mut r = Reader::new(body);
    let mut f = ErrorFields::default();
    loop {
        let t = r.u8("error field type")?;
        if t == 0 {
            break;
        }
        let v = r.cstr("error field")?;
        match t {
            b'V' => f.severity = v.to_string(),
            b'S' if f.severity.is_empty() => f.severity = v.to_string(),
            b'C' => f.code = v.to_string(),
            b'M' => f.message = v.to_string(),
            _ => {}
        }
    }
    Ok(f)
}

/// Rows from a CommandComplete tag (`SELECT 5`, `INSERT 0 5`, `COPY 5`, `UPDATE 5`).
pub fn tag_rows(tag: &str) -> Option<u64> {
    let last = tag.rsplit(' ').next()?;
    if tag.contains(' ') {
        last.parse().ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Messages the proxy writes.

fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early; replace it so the frame stays well-formed.
    for b in s.bytes() {
        buf.put_u8(if b == 0 { b' ' } else { b });
    }
    buf.put_u8(0);
}

pub fn write_auth_ok(buf: &mut BytesMut) {
    let at = begin(buf, b'R');
    buf.put_i32(0);
    finish(buf, at);
}

pub fn write_auth_cleartext(buf: &mut BytesMut) {
    let at = begin(buf, b'R');
    buf.put_i32(3);
    finish(buf, at);
}

pub fn write_auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, b'R');
    buf.put_i32(10);
    for m in mechanisms {
        put_cstr(buf, m);
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn write_auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(11);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn write_auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(12);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn write_backend_key(buf: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    finish(buf, at);
}

pub fn write_parameter_status(buf: &mut BytesMut, k: &str, v: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, k);
    put_cstr(buf, v);
    finish(buf, at);
}

pub fn write_ready(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// NegotiateProtocolVersion: newest minor we speak plus options we did not recognise.
pub fn write_negotiate_protocol(buf: &mut BytesMut, minor: i32, unknown: &[&str]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    buf.put_i32(unknown.len() as i32);
    for o in unknown {
        put_cstr(buf, o);
    }
    finish(buf, at);
}

/// An ErrorResponse (or NoticeResponse with `tag = b'N'`).
pub fn write_error(
    buf: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, severity);
    buf.put_u8(b'V');
    put_cstr(buf, severity);
    buf.put_u8(b'C');
    put_cstr(buf, code);
    buf.put_u8(b'M');
    put_cstr(buf, message);
    if let Some(h) = hint {
        buf.put_u8(b'H');
        put_cstr(buf, h);
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn write_query(buf: &mut BytesMut, q: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, q);
    finish(buf, at);
}

pub fn write_parse(buf: &mut BytesMut, name: &str, q: &str) {
    let at = begin(buf, b'P');
    put_cstr(buf, name);
    put_cstr(buf, q);
    buf.put_i16(0);
    finish(buf, at);
}

/// A Bind that names a statement which cannot exist: used to make the upstream raise an
/// error at exactly this position of a pipeline (see `session` for why).
pub fn write_bind_missing(buf: &mut BytesMut, statement: &str) {
    let at = begin(buf, b'B');
    put_cstr(buf, "");
    put_cstr(buf, statement);
    buf.put_i16(0);
    buf.put_i16(0);
    buf.put_i16(0);
    finish(buf, at);
}

pub fn write_describe(buf: &mut BytesMut, kind: u8, name: &str) {
    let at = begin(buf, b'D');
    buf.put_u8(kind);
    put_cstr(buf, name);
    finish(buf, at);
}

pub fn write_password(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(data);
    finish(buf, at);
}

pub fn write_sasl_initial(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, b'p');
    put_cstr(buf, mechanism);
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn write_startup(buf: &mut BytesMut, params: &[(String, String)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_V3);
    for (k, v) in params {
        put_cstr(buf, k);
        put_cstr(buf, v);
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn write_ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST);
}

pub fn write_cancel(buf: &mut BytesMut, pid: i32, secret: &[u8]) {
    buf.put_i32(12 + secret.len() as i32);
    buf.put_i32(CANCEL_REQUEST);
    buf.put_i32(pid);
    buf.put_slice(secret);
}

pub fn write_terminate(buf: &mut BytesMut) {
    let at = begin(buf, b'X');
    finish(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_round_trip() {
        let mut b = BytesMut::new();
        write_query(&mut b, "select 1");
        let f = split_frame(&b, MAX_FRAME).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(parse_query(f.body).unwrap(), "select 1");
        assert_eq!(f.len, b.len());
        // partial frames wait for more bytes
        assert_eq!(split_frame(&b[..b.len() - 1], MAX_FRAME).unwrap(), None);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(split_frame(&[b'Q', 0, 0, 0, 3], MAX_FRAME).is_err());
        assert!(split_frame(&[b'Q', 0xff, 0xff, 0xff, 0xff], MAX_FRAME).is_err());
        assert!(split_frame(&[b'Q', 0x7f, 0xff, 0xff, 0xff], MAX_FRAME).is_err());
        assert!(split_untagged(&[0, 0, 0, 4]).is_err());
        assert!(split_untagged(&[0, 1, 0, 0]).is_err());
    }

    #[test]
    fn startup_parse() {
        let mut b = BytesMut::new();
        write_startup(
            &mut b,
            &[
                ("user".into(), "agent:x".into()),
                ("database".into(), "orders".into()),
            ],
        );
        let body = split_untagged(&b).unwrap().unwrap();
        match parse_first_packet(body).unwrap() {
            FirstPacket::Startup(s) => {
                assert_eq!(s.get("user"), Some("agent:x"));
                assert_eq!(s.get("database"), Some("orders"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut b = BytesMut::new();
        write_ssl_request(&mut b);
        assert_eq!(
            parse_first_packet(split_untagged(&b).unwrap().unwrap()).unwrap(),
            FirstPacket::Ssl
        );
        let mut b = BytesMut::new();
        write_cancel(&mut b, 42, &7i32.to_be_bytes());
        assert_eq!(
            parse_first_packet(split_untagged(&b).unwrap().unwrap()).unwrap(),
            FirstPacket::Cancel {
                pid: 42,
                secret: 7i32.to_be_bytes().to_vec()
            }
        );
    }

    #[test]
    fn bind_params_rendered() {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        let at = b.len();
        b.put_i32(0);
        put_cstr(&mut b, "p1");
        put_cstr(&mut b, "s1");
        b.put_i16(2);
        b.put_i16(0);
        b.put_i16(1);
        b.put_i16(2);
        b.put_i32(3);
        b.put_slice(b"abc");
        b.put_i32(-1);
        b.put_i16(0);
        finish(&mut b, at);
        let f = split_frame(&b, MAX_FRAME).unwrap().unwrap();
        let bind = parse_bind(f.body).unwrap();
        assert_eq!(bind.portal, "p1");
        assert_eq!(bind.statement, "s1");
        // first parameter is text format, second NULL
        assert_eq!(bind.render_params(&[]), vec![Some("abc".to_string()), None]);
    }

    #[test]
    fn binary_params_decoded_by_type() {
        assert_eq!(render_param(&41i16.to_be_bytes(), true, 21), "41");
        assert_eq!(render_param(&(-7i32).to_be_bytes(), true, 23), "-7");
        assert_eq!(render_param(&1i64.to_be_bytes(), true, 20), "1");
        assert_eq!(render_param(&1.5f64.to_be_bytes(), true, 701), "1.5");
        assert_eq!(render_param(&[1], true, 16), "true");
        assert_eq!(
            render_param(&[0; 16], true, 2950),
            "00000000-0000-0000-0000-000000000000"
        );
        // wrong length for the type falls back to hex
        assert_eq!(render_param(&[0, 1, 2], true, 23), "\\x000102");
        assert_eq!(render_param(b"41", false, 23), "41");
    }

    #[test]
    fn tag_row_counts() {
        assert_eq!(tag_rows("SELECT 5"), Some(5));
        assert_eq!(tag_rows("INSERT 0 7"), Some(7));
        assert_eq!(tag_rows("BEGIN"), None);
    }

    #[test]
    fn error_fields() {
        let mut b = BytesMut::new();
        write_error(&mut b, b'E', "ERROR", "42501", "no", Some("hint"));
        let f = split_frame(&b, MAX_FRAME).unwrap().unwrap();
        let e = parse_error_fields(f.body).unwrap();
        assert_eq!(
            (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
            ("ERROR", "42501", "no")
        );
    }

    proptest! {
        #[test]
        fn frontend_parsers_never_panic(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_parse(&body);
            let _ = parse_bind(&body);
            let _ = parse_execute(&body);
            let _ = parse_target(&body, "x");
            let _ = parse_query(&body);
            let _ = parse_error_fields(&body);
            let _ = parse_first_packet(&body);
            let mut framed = vec![tag];
            framed.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            framed.extend_from_slice(&body);
            let f = split_frame(&framed, MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(f.body, &body[..]);
        }

        #[test]
        fn split_frame_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = split_frame(&buf, MAX_FRAME);
            let _ = split_untagged(&buf);
        }
    }
}
