//! Canonical serialization and the hash chain.
//!
//! `hash = lowercase hex SHA-256(canonical_json(record))`, where the canonical form is the
//! record's JSON without its top-level `hash` key, object keys sorted by byte order, no
//! insignificant whitespace, absent optionals omitted, strings escaped exactly as
//! serde_json escapes them and numbers written as serde_json writes them.
//!
//! Chain rule: record `n` has `seq = n` (starting at 1, contiguous) and
//! `prev_hash = hash(record n-1)`; the first record's `prev_hash` is [`GENESIS_HASH`].
//!
//! The writer here is our own (it does not rely on the iteration order of
//! `serde_json::Map`, which changes when any crate in the build enables `preserve_order`).
use serde_json::Value;
use sha2::{Digest, Sha256};
use warden_core::EvidenceRecord;

/// prev_hash of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Canonical JSON of `rec` without its `hash` field: object keys sorted by byte order,
/// no insignificant whitespace, absent optionals omitted, UTF-8.
pub fn canonical_json(rec: &EvidenceRecord) -> String {
    let value = serde_json::to_value(rec).expect("an evidence record always serializes to JSON");
    canonical_json_value(&value)
}

/// Canonical JSON of an already-parsed record body: like [`canonical_json`], for a
/// `serde_json::Value`. A top-level `hash` key is left out.
pub fn canonical_json_value(value: &Value) -> String {
    let mut out = String::with_capacity(768);
    match value {
        Value::Object(map) => write_object(&mut out, map, TopHash::Skip),
        other => write_value(&mut out, other),
    }
    out
}

/// Lowercase hex SHA-256 of `canonical_json(rec)`.
pub fn record_hash(rec: &EvidenceRecord) -> String {
    sha256_hex(canonical_json(rec).as_bytes())
}

/// Lowercase hex SHA-256 of `canonical_json_value(value)`.
pub fn value_hash(value: &Value) -> String {
    sha256_hex(canonical_json_value(value).as_bytes())
}

/// The hash of a record body (`value`, without `hash`) and the body as stored: the
/// canonical JSON with `"hash"` in its sorted place. Any key order would verify (readers
/// re-canonicalize); writing the canonical form saves a third serialization.
pub fn hash_and_body(value: &Value) -> (String, String) {
    if let Value::Object(map) = value
        && map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes())
    {
        // One canonical pass: hash it, then splice `"hash":"…"` in where it sorts.
        let mut c = String::with_capacity(832);
        c.push('{');
        let mut at = None;
        for (k, v) in map {
            if k == "hash" {
                continue;
            }
            if at.is_none() && "hash".as_bytes() < k.as_bytes() {
                at = Some(c.len());
            }
            if c.len() > 1 {
                c.push(',');
            }
            write_str(&mut c, k);
            c.push(':');
            write_value(&mut c, v);
        }
        c.push('}');
        let hash = sha256_hex(c.as_bytes());
        let mut body = String::with_capacity(c.len() + hash.len() + 10);
        let end = c.len() - 1;
        let (before, after) = c.split_at(at.unwrap_or(end));
        push_hash_member(&mut body, before, &hash, after);
        body.push_str(after);
        return (hash, body);
    }
    let hash = value_hash(value);
    let mut body = String::with_capacity(832);
    match value {
        Value::Object(map) => write_object(&mut body, map, TopHash::Insert(&hash)),
        other => write_value(&mut body, other),
    }
    (hash, body)
}

/// Write `before` (an object's text up to where `"hash"` sorts: `{` and the members that
/// sort before it), then the `"hash"` member, with the comma that `next` (the text that
/// will follow) needs.
pub(crate) fn push_hash_member(body: &mut String, before: &str, hash: &str, next: &str) {
    body.push_str(before);
    write_hash_member(body, before, hash, next);
}

/// Only the `"hash"` member (and its commas) that [`push_hash_member`] puts after `before`.
pub(crate) fn write_hash_member(out: &mut String, before: &str, hash: &str, next: &str) {
    if before.len() > 1 {
        out.push(',');
    }
    out.push_str("\"hash\":\"");
    out.push_str(hash);
    out.push('"');
    if !next.starts_with(',') && !next.starts_with('}') {
        out.push(',');
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

pub(crate) fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, TopHash::Keep),
    }
}

/// What to do with a `hash` key of the object being written.
#[derive(Clone, Copy)]
enum TopHash<'a> {
    /// Nested objects: `hash` is an ordinary key.
    Keep,
    /// The record itself, for hashing: leave `hash` out.
    Skip,
    /// The record itself, for storing: `hash` is this value.
    Insert(&'a str),
}

fn write_object(out: &mut String, map: &serde_json::Map<String, Value>, top: TopHash<'_>) {
    let hash_value = match top {
        TopHash::Insert(h) => Some(Value::String(h.to_string())),
        _ => None,
    };
    // serde_json's default map iterates sorted: write it as it is, without collecting.
    // (With `preserve_order` enabled anywhere in the build it does not: then sort below.
    // A top-level `hash` to insert is the sorted case of `hash_and_body`, not here.)
    if !matches!(top, TopHash::Insert(_))
        && map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes())
    {
        let skip_hash = matches!(top, TopHash::Skip);
        out.push('{');
        let mut first = true;
        for (k, v) in map {
            if skip_hash && k == "hash" {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            write_str(out, k);
            out.push(':');
            write_value(out, v);
        }
        out.push('}');
        return;
    }
    let mut entries: Vec<(&str, &Value)> = map
        .iter()
        .filter(|(k, _)| matches!(top, TopHash::Keep) || k.as_str() != "hash")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    if let Some(h) = &hash_value {
        entries.push(("hash", h));
    }
    // `str` ordering is byte-wise ordering of the UTF-8 encoding.
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

/// A JSON string exactly as serde_json writes it: `"` and `\` escaped, the control
/// characters U+0000..U+001F as `\b \t \n \f \r` or `\u00xx` (lowercase hex), everything
/// else (including U+007F and non-ASCII) as is.
pub(crate) fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Most strings need no escape at all: skip eight plain bytes at a time.
        if let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes([
                word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
            ]);
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        // `i` is at an ASCII byte, so both slices end on char boundaries.
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any of the eight bytes of `w` is a control character (< 0x20), `"` or `\`.
/// The classic word tests: `(x - 0x0101..) & !x & 0x8080..` is non-zero exactly when some
/// byte of `x` is zero, and `(w - 0x2020..) & !w & 0x8080..` exactly when some byte of `w`
/// is below 0x20 (bytes >= 0x80, i.e. UTF-8, never match). Which byte does not matter:
/// the caller then looks at them one by one.
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

/// Lowercase hex of `bytes` (hashes: once or twice per record).
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    warden_core::evidence::push_hex(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::{ActionInfo, AuthInfo, AuthMethod, Principal, RecordKind, ResponseInfo};

    #[test]
    fn every_byte_at_every_offset_is_escaped_like_serde_json() {
        // The word test sees each position of an eight-byte word, and the tail after it.
        for b in 0u8..0x80 {
            for len in 0..20 {
                for at in 0..len {
                    let mut s = "é".repeat(len / 4) + &"a".repeat(len);
                    s.insert(s.len() - at, char::from(b));
                    let mut out = String::new();
                    write_str(&mut out, &s);
                    assert_eq!(
                        out,
                        serde_json::to_string(&s).unwrap(),
                        "byte {b:#x} in {s:?}"
                    );
                }
            }
        }
    }

    fn sample() -> EvidenceRecord {
        let mut r = EvidenceRecord::new(RecordKind::ActionRequest);
        r.id = "0001".into();
        r.ts = "2026-11-27T10:00:00.000000000Z".into();
        r.seq = 7;
        r.session_id = Some("s1".into());
        r.principal = Some(std::sync::Arc::new(Principal {
            id: "agent:bot".into(),
            groups: vec!["agents".into()],
            auth: AuthInfo {
                method: AuthMethod::WardenKey,
                issuer: Some("warden".into()),
                subject: Some("k1".into()),
            },
            on_behalf_of: None,
        }));
        r.connection = Some("orders".into());
        r.action = Some(ActionInfo {
            kind: "sql".into(),
            text: "select \"x\" from t where s = 'é\n'".into(),
            params: vec![Some("1".into()), None],
            ..Default::default()
        });
        r.prev_hash = GENESIS_HASH.into();
        r.hash = "whatever".into();
        r
    }

    #[test]
    fn canonical_is_sorted_compact_and_omits_hash() {
        let r = sample();
        let c = canonical_json(&r);
        assert!(!c.contains("\"hash\""), "{c}");
        assert!(c.contains("\"prev_hash\""));
        assert!(!c.contains(": ") && !c.contains(", "));
        // Top-level keys come out in byte order.
        let v: Value = serde_json::from_str(&c).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(
            c.starts_with("{\"action\":{\"kind\":\"sql\",\"params\":[\"1\",null],\"text\":"),
            "{c}"
        );
        assert!(c.contains("\"principal\":{\"auth\":{\"issuer\":\"warden\",\"method\":\"warden_key\",\"subject\":\"k1\"},\"groups\":[\"agents\"],\"id\":\"agent:bot\"}"), "{c}");
        // Absent optionals are omitted.
        assert!(!c.contains("\"purpose\"") && !c.contains("\"response\""));
    }

    #[test]
    fn hash_splices_into_any_position() {
        for keys in [
            &[][..],
            &["a"],
            &["z"],
            &["a", "z"],
            &["a", "b"],
            &["x", "y"],
        ] {
            let mut m = serde_json::Map::new();
            for k in keys {
                m.insert(k.to_string(), Value::from(1));
            }
            let v = Value::Object(m);
            let (hash, body) = hash_and_body(&v);
            let mut generic = String::new();
            write_object(&mut generic, v.as_object().unwrap(), TopHash::Insert(&hash));
            assert_eq!(body, generic, "{keys:?}");
            assert_eq!(hash, value_hash(&v));
        }
    }

    #[test]
    fn canonical_is_stable() {
        let r = sample();
        assert_eq!(canonical_json(&r), canonical_json(&r.clone()));
        // Re-parsing the stored body gives the same canonical form and hash.
        let body = serde_json::to_string(&r).unwrap();
        let back: EvidenceRecord = serde_json::from_str(&body).unwrap();
        assert_eq!(canonical_json(&back), canonical_json(&r));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(canonical_json_value(&v), canonical_json(&r));
        assert_eq!(value_hash(&v), record_hash(&r));
        // The hash field itself does not change the hash.
        let mut r2 = r.clone();
        r2.hash = "other".into();
        assert_eq!(record_hash(&r), record_hash(&r2));
        let h = record_hash(&r);
        assert_eq!(h.len(), 64);
        assert!(
            h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn nested_keys_sorted_and_numbers_like_serde() {
        let v: Value = serde_json::from_str(
            r#"{"b":{"z":1,"a":[1.5,-2,{"y":null,"x":true}]},"a":"\u0001\"","hash":"h"}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json_value(&v),
            r#"{"a":"\u0001\"","b":{"a":[1.5,-2,{"x":true,"y":null}],"z":1}}"#
        );
    }

    #[test]
    fn hash_changes_when_any_field_changes() {
        let base = sample();
        let h0 = record_hash(&base);
        let mut variants: Vec<EvidenceRecord> = Vec::new();
        let mut r = base.clone();
        r.seq = 8;
        variants.push(r);
        let mut r = base.clone();
        r.id.push('x');
        variants.push(r);
        let mut r = base.clone();
        r.ts = "2026-11-27T10:00:00.000000001Z".into();
        variants.push(r);
        let mut r = base.clone();
        r.kind = RecordKind::ActionResponse;
        variants.push(r);
        let mut r = base.clone();
        r.session_id = None;
        variants.push(r);
        let mut r = base.clone();
        std::sync::Arc::make_mut(r.principal.as_mut().unwrap())
            .groups
            .push("dba".into());
        variants.push(r);
        let mut r = base.clone();
        r.connection = Some("billing".into());
        variants.push(r);
        let mut r = base.clone();
        r.purpose = Some("debug".into());
        variants.push(r);
        let mut r = base.clone();
        r.action.as_mut().unwrap().text.push(' ');
        variants.push(r);
        let mut r = base.clone();
        r.action.as_mut().unwrap().params[1] = Some(String::new());
        variants.push(r);
        let mut r = base.clone();
        r.response = Some(ResponseInfo {
            status: "ok".into(),
            rows: 1,
            ..Default::default()
        });
        variants.push(r);
        let mut r = base.clone();
        r.detail = Some(String::new());
        variants.push(r);
        let mut r = base.clone();
        r.prev_hash = "1".repeat(64);
        variants.push(r);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(record_hash(v), h0, "variant {i} did not change the hash");
        }
    }

    proptest::proptest! {
        #[test]
        fn canonical_survives_a_store_round_trip(text in ".*", detail in proptest::option::of(".*"), n in proptest::num::f64::NORMAL, rows in 0u64..u64::MAX) {
            let mut r = sample();
            r.action.as_mut().unwrap().text = text;
            r.detail = detail;
            r.response = Some(ResponseInfo {
                status: "ok".into(),
                rows,
                masked: Some(serde_json::json!({"z": [n, -n, n / 3.0], "\u{7f}k\u{e9}": "v"})),
                ..Default::default()
            });
            let body = serde_json::to_string(&r).unwrap();
            let back: EvidenceRecord = serde_json::from_str(&body).unwrap();
            proptest::prop_assert_eq!(record_hash(&back), record_hash(&r));
            let v: Value = serde_json::from_str(&body).unwrap();
            let c = canonical_json_value(&v);
            proptest::prop_assert_eq!(&c, &canonical_json(&r));
            // The canonical form is itself JSON meaning the same thing.
            let mut expected = serde_json::to_value(&r).unwrap();
            expected.as_object_mut().unwrap().remove("hash");
            proptest::prop_assert_eq!(serde_json::from_str::<Value>(&c).unwrap(), expected);
        }

        #[test]
        fn the_word_test_finds_exactly_the_bytes_to_escape(w in proptest::num::u64::ANY) {
            let want = w.to_le_bytes().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(w), want);
        }

        #[test]
        fn hex_lower_is_hex_encode(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..70)) {
            proptest::prop_assert_eq!(hex_lower(&bytes), hex::encode(&bytes));
        }

        #[test]
        fn strings_are_escaped_exactly_like_serde_json(s in "(?s).*", ctl in 0u8..0x20) {
            let s = format!("{s}{}\u{7f}x\"\\", ctl as char);
            let mut out = String::new();
            write_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn stored_body_is_canonical_with_its_hash(text in ".*") {
            let mut r = sample();
            r.action.as_mut().unwrap().text = text;
            let value = serde_json::to_value(&r).unwrap();
            let (hash, body) = hash_and_body(&value);
            proptest::prop_assert_eq!(&hash, &value_hash(&value));
            let back: Value = serde_json::from_str(&body).unwrap();
            proptest::prop_assert_eq!(back["hash"].as_str(), Some(hash.as_str()));
            proptest::prop_assert_eq!(canonical_json_value(&back), canonical_json_value(&value));
            // The splice is exactly the canonical form with the hash in its sorted place.
            let mut generic = String::new();
            write_object(&mut generic, value.as_object().unwrap(), TopHash::Insert(&hash));
            proptest::prop_assert_eq!(&body, &generic);
        }
    }
}
