//! Header rewriting: hop-by-hop removal (RFC 9110 §7.6.1), the credential swap, Warden's
//! own headers, `X-Forwarded-*`, and the redacted copy kept as evidence.
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const WARDEN_PURPOSE: &str = "warden-purpose";
pub const WARDEN_SESSION: &str = "warden-session";
pub const WARDEN_APPROVAL: &str = "warden-approval";

/// Headers that only describe one hop and are never forwarded. Names, not strings: a
/// lookup by `&str` parses the name again on every request.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including every header named in `Connection`. Returns the
/// `Upgrade` value when the message asked for an upgrade (`Connection: upgrade`), so the
/// caller can pass it on deliberately.
pub fn strip_hop_by_hop(h: &mut HeaderMap) -> Option<HeaderValue> {
    let mut named: Vec<HeaderName> = Vec::new();
    let mut upgrade_requested = false;
    for v in h.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            for tok in s.split(',') {
                let tok = tok.trim();
                if tok.eq_ignore_ascii_case("upgrade") {
                    upgrade_requested = true;
                }
                if let Ok(n) = HeaderName::from_bytes(tok.as_bytes()) {
                    named.push(n);
                }
            }
        }
    }
    let upgrade = if upgrade_requested {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for n in named {
        h.remove(n);
    }
    // One pass over the (few) names present instead of nine lookups: most messages carry
    // none of these once `Connection` and what it names are gone.
    if h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        for n in &HOP_BY_HOP {
            h.remove(n);
        }
    }
    upgrade
}

/// Take Warden's own headers out of a request (they are never forwarded).
pub struct WardenHeaders {
    pub purpose: Option<HeaderValue>,
    pub session: Option<HeaderValue>,
    pub approval: Option<HeaderValue>,
}

pub fn take_warden_headers(h: &mut HeaderMap) -> WardenHeaders {
    // Any `warden-*` header is Warden's namespace; most requests carry none.
    let ours: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("warden-"))
        .cloned()
        .collect();
    let mut w = WardenHeaders {
        purpose: None,
        session: None,
        approval: None,
    };
    for k in ours {
        let v = h.remove(&k);
        match k.as_str() {
            WARDEN_PURPOSE => w.purpose = v,
            WARDEN_SESSION => w.session = v,
            WARDEN_APPROVAL => w.approval = v,
            _ => {}
        }
    }
    w
}

/// Header names whose values are credentials or session secrets: recorded as
/// `<redacted>`, never quoted.
pub fn is_sensitive(name: &str) -> bool {
    // Header names from `http` are lowercase already: copy only when they are not.
    let n: std::borrow::Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    };
    matches!(
        &*n,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-csrf-token"
    ) || [
        "token",
        "secret",
        "password",
        "api-key",
        "apikey",
        "api_key",
        "auth",
        "session",
        "signature",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The request's headers as evidence: `name: value` strings, credentials redacted,
/// values capped at 512 characters.
pub fn evidence_headers(h: &HeaderMap, secret: &str) -> Vec<Option<String>> {
    h.iter()
        .map(|(k, v)| {
            let value = if is_sensitive(k.as_str()) || holds_secret(v.as_bytes(), secret) {
                "<redacted>".to_string()
            } else {
                let s = String::from_utf8_lossy(v.as_bytes());
                let mut s: String = s.chars().filter(|c| !c.is_control()).take(512).collect();
                if v.len() > 512 {
                    s.push('…');
                }
                s
            };
            Some(format!("{}: {value}", k.as_str()))
        })
        .collect()
}

/// Does `value` contain the caller's credential (or something shaped like a Warden key)?
pub fn holds_secret(value: &[u8], secret: &str) -> bool {
    (!secret.is_empty() && memchr::memmem::find(value, secret.as_bytes()).is_some())
        || memchr::memmem::find_iter(value, b"wk_").any(|i| {
            value[i + 3..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                .count()
                >= 16
        })
}

/// `text` with the caller's credential (and Warden-key-shaped tokens) cut out.
pub fn scrub(text: &str, secret: &str) -> String {
    if !holds_secret(text.as_bytes(), secret) {
        return text.to_string();
    }
    let mut out = if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "<redacted>")
    };
    while let Some(i) = out.find("wk_") {
        let tail = &out[i + 3..];
        let n = tail
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count();
        if n < 16 {
            // Not key-shaped: keep it, look further.
            let (a, b) = out.split_at(i + 3);
            return format!("{a}{}", scrub(b, ""));
        }
        out.replace_range(i..i + 3 + n, "<redacted>");
    }
    out
}

/// Replace any `X-Forwarded-*` / `Forwarded` the client sent (it could claim anything)
/// with what Warden saw.
pub fn set_forwarded(h: &mut HeaderMap, client_ip: &str, proto: &str, host: Option<&HeaderValue>) {
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    // `insert` replaces every value the client sent under the same name.
    h.remove(header::FORWARDED);
    h.remove(X_REAL_IP);
    match HeaderValue::from_str(client_ip) {
        Ok(v) => h.insert(X_FORWARDED_FOR, v),
        Err(_) => h.remove(X_FORWARDED_FOR),
    };
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
    );
    match host {
        Some(host) => h.insert(X_FORWARDED_HOST, host.clone()),
        None => h.remove(X_FORWARDED_HOST),
    };
}

/// The connection's configured headers (the credential swap), parsed once.
pub fn parse_inject(
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name `{k}` is not a valid HTTP header name"))?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                format!("the value of header `{k}` is not a valid HTTP header value")
            })?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        assert!(h.is_empty());
    }

    #[test]
    fn evidence_redacts_credentials() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer wk_abc"));
        h.insert("cookie", HeaderValue::from_static("sid=1"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        h.insert(
            "x-note",
            HeaderValue::from_static("copy of wk_abcdefghijklmnopqrstu"),
        );
        h.insert(
            "x-echo",
            HeaderValue::from_static("my-own-secret-token-value"),
        );
        let e: Vec<String> = evidence_headers(&h, "my-own-secret-token-value")
            .into_iter()
            .flatten()
            .collect();
        assert!(e.contains(&"x-note: <redacted>".to_string()));
        assert!(e.contains(&"x-echo: <redacted>".to_string()));
        assert_eq!(
            scrub("GET /a?k=wk_abcdefghijklmnopqrstu&x=wk_no HTTP/1.1", ""),
            "GET /a?k=<redacted>&x=wk_no HTTP/1.1"
        );
        assert_eq!(scrub("/a?t=SeCrEt", "SeCrEt"), "/a?t=<redacted>");
        assert!(e.contains(&"authorization: <redacted>".to_string()));
        assert!(e.contains(&"cookie: <redacted>".to_string()));
        assert!(e.contains(&"x-api-key: <redacted>".to_string()));
        assert!(e.contains(&"accept: application/json".to_string()));
        assert!(!e.iter().any(|s| s.contains("wk_abc")));
    }

    #[test]
    fn warden_headers_are_consumed() {
        let mut h = HeaderMap::new();
        h.insert("warden-purpose", HeaderValue::from_static("INC-1"));
        h.insert("warden-session", HeaderValue::from_static("run-7"));
        h.insert("warden-approval", HeaderValue::from_static("ap_1"));
        h.insert("warden-other", HeaderValue::from_static("x"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let w = take_warden_headers(&mut h);
        assert_eq!(w.purpose.unwrap(), "INC-1");
        assert_eq!(w.session.unwrap(), "run-7");
        assert_eq!(w.approval.unwrap(), "ap_1");
        assert_eq!(h.len(), 1);
    }

    /// The definition `holds_secret` must keep: every window compared.
    fn holds_secret_naive(value: &[u8], secret: &str) -> bool {
        (!secret.is_empty() && value.windows(secret.len()).any(|w| w == secret.as_bytes()))
            || value.windows(3).enumerate().any(|(i, w)| {
                w == b"wk_"
                    && value[i + 3..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                        .count()
                        >= 16
            })
    }

    proptest::proptest! {
        #[test]
        fn holds_secret_matches_the_naive_search(
            value in proptest::collection::vec(
                proptest::sample::select(b"wk_aZ9-. s".to_vec()), 0..80),
            secret in "[wk_aZ9 ]{0,6}",
        ) {
            proptest::prop_assert_eq!(
                holds_secret(&value, &secret),
                holds_secret_naive(&value, &secret)
            );
        }
    }

    #[test]
    fn forwarded_headers_replace_what_the_client_claimed() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(&mut h, "127.0.0.1", "http", None);
        fn all(h: &HeaderMap, n: &str) -> Vec<String> {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        }
        assert_eq!(all(&h, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert!(all(&h, "x-forwarded-host").is_empty());
        assert!(all(&h, "x-real-ip").is_empty() && all(&h, "forwarded").is_empty());
        set_forwarded(
            &mut h,
            "::1",
            "https",
            Some(&HeaderValue::from_static("api.example")),
        );
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    }
}
