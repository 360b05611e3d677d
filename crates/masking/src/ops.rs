//! Operators: what replaces a detected or field-matched value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Operator;
use crate::detect::Kind;

/// Whole-value placeholder for field rules with `redact` (SQL column values, JSON fields).
/// It is also what `partial` leaves of a password.
pub const FIELD_PLACEHOLDER: &str = "****";

/// Prefix of `hash` output: `h:` + 16 lowercase hex chars of HMAC-SHA-256(key, value).
pub const HASH_PREFIX: &str = "h:";

/// The placeholder `redact` writes for a detector match inside text: `[REDACTED:<detector>]`.
pub fn text_placeholder(detector: &str) -> String {
    format!("[REDACTED:{detector}]")
}

/// `h:` + first 16 hex chars of HMAC-SHA-256(key, canonical value).
pub(crate) fn hash_value(key: &[u8], value: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value);
    let out = mac.finalize().into_bytes();
    format!("{HASH_PREFIX}{}", &hex::encode(out)[..16])
}

/// Canonical form hashed for a detector kind, so `4111 1111 ...` and `4111111...` (or
/// `John@X.com` and `john@x.com`) hash the same and joins still work.
fn canonical(kind: Option<Kind>, raw: &[u8]) -> Vec<u8> {
    match kind {
        Some(Kind::Card | Kind::Ssn | Kind::PhoneIntl | Kind::PhoneNanp) => {
            raw.iter().copied().filter(u8::is_ascii_digit).collect()
        }
        Some(Kind::Iban) => raw.iter().copied().filter(|b| *b != b' ').collect(),
        Some(Kind::Email) => raw.to_ascii_lowercase(),
        _ => raw.to_vec(),
    }
}

/// Renders a detector match (inside text) with `op`.
pub(crate) fn render_match(
    kind: Kind,
    detector: &str,
    op: Operator,
    raw: &[u8],
    key: &[u8],
    out: &mut Vec<u8>,
) {
    match op {
        Operator::Null => {}
        Operator::Redact => out.extend_from_slice(text_placeholder(detector).as_bytes()),
        Operator::Hash => {
            out.extend_from_slice(hash_value(key, &canonical(Some(kind), raw)).as_bytes())
        }
        Operator::Partial => partial(kind, raw, out),
    }
}

fn star_digits_keep_last(raw: &[u8], keep: usize, out: &mut Vec<u8>) {
    let total = raw.iter().filter(|b| b.is_ascii_digit()).count();
    let mut seen = 0;
    for b in raw {
        if b.is_ascii_digit() {
            seen += 1;
            out.push(if seen + keep > total { *b } else { b'*' });
        } else {
            out.push(*b);
        }
    }
}

fn partial(kind: Kind, raw: &[u8], out: &mut Vec<u8>) {
    match kind {
        Kind::Card | Kind::Ssn => star_digits_keep_last(raw, 4, out),
        Kind::PhoneIntl | Kind::PhoneNanp => star_digits_keep_last(raw, 2, out),
        Kind::Iban => {
            let total = raw.iter().filter(|b| b.is_ascii_alphanumeric()).count();
            let mut seen = 0;
            for b in raw {
                if b.is_ascii_alphanumeric() {
                    seen += 1;
                    out.push(if seen <= 2 || seen + 4 > total {
                        *b
                    } else {
                        b'*'
                    });
                } else {
                    out.push(*b);
                }
            }
        }
        Kind::Email => {
            let at = raw.iter().position(|b| *b == b'@').unwrap_or(0);
            if let Some(first) = raw.first().filter(|b| b.is_ascii_alphanumeric() && at > 0) {
                out.push(*first);
            }
            out.extend_from_slice(b"***");
            out.extend_from_slice(&raw[at..]);
        }
        Kind::Ipv4 | Kind::Ipv6 => {
            let sep = raw
                .iter()
                .position(|b| *b == b'.' || *b == b':')
                .unwrap_or(raw.len());
            out.extend_from_slice(&raw[..sep]);
            for b in &raw[sep..] {
                out.push(if b.is_ascii_hexdigit() { b'*' } else { *b });
            }
        }
        Kind::KvPassword | Kind::UrlPassword => out.extend_from_slice(FIELD_PLACEHOLDER.as_bytes()),
        Kind::Pem | Kind::Jwt | Kind::Aws | Kind::GitHub | Kind::Slack | Kind::OpenAi => {
            let keep = raw.iter().take(4).count();
            out.extend_from_slice(&raw[..keep]);
            out.extend_from_slice("…".as_bytes());
        }
        Kind::Custom => generic_partial(raw, out),
    }
}

/// `partial` for values of unknown shape (custom detectors, whole fields): ASCII letters and
/// digits become `*` except the last four when the value has at least eight of them;
/// everything else (separators, `@domain` of an e-mail-looking value) is kept.
pub(crate) fn generic_partial(raw: &[u8], out: &mut Vec<u8>) {
    if let Some(at) = raw.iter().position(|b| *b == b'@')
        && at > 0
        && raw[at + 1..].contains(&b'.')
    {
        return partial(Kind::Email, raw, out);
    }
    let total = raw.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    let keep = if total >= 8 { 4 } else { 0 };
    let mut seen = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b.is_ascii_alphanumeric() {
            seen += 1;
            out.push(if seen + keep > total { b } else { b'*' });
        } else if b >= 0x80 {
            // A non-ASCII character: one star for the whole UTF-8 sequence.
            out.push(b'*');
            i += 1;
            while i < raw.len() && (raw[i] & 0xC0) == 0x80 {
                i += 1;
            }
            continue;
        } else {
            out.push(b);
        }
        i += 1;
    }
}

/// Renders a whole field value (text-like) with `op`; `None` means SQL NULL / JSON null.
pub(crate) fn render_field(op: Operator, raw: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    match op {
        Operator::Null => None,
        Operator::Redact => Some(FIELD_PLACEHOLDER.as_bytes().to_vec()),
        Operator::Hash => Some(hash_value(key, raw).into_bytes()),
        Operator::Partial => {
            let mut out = Vec::with_capacity(raw.len());
            generic_partial(raw, &mut out);
            Some(out)
        }
    }
}
