//! `/<connection>/<rest>`: which connection, which path to forward, which path policy sees.
//!
//! The forwarded path is the client's path with dot-segments removed (also their
//! percent-encoded forms), so the upstream receives exactly the path policy decided on.
//! Policy sees that path percent-decoded once; a decoded path that still holds `.`/`..`
//! segments, a backslash or a control character is refused (400) rather than guessed at,
//! so `%2F`/`%2e` tricks cannot reach a path no rule allowed.

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub connection: String,
    /// Path to forward (relative to the upstream's base), starts with `/`.
    pub path: String,
    /// `path` percent-decoded once: what `http` rules match.
    pub policy_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// `/` or `//x`: no connection named.
    NoConnection,
    /// The path cannot be routed safely (message says why).
    BadPath(String),
}

pub fn route(path: &str) -> Result<Target, TargetError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(TargetError::BadPath("the path must start with `/`".into()));
    };
    let (conn, rest) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if conn.is_empty() {
        return Err(TargetError::NoConnection);
    }
    let path = remove_dot_segments(rest)?;
    let decoded = percent_decode(&path)
        .ok_or_else(|| TargetError::BadPath("the path has a malformed %-escape".into()))?;
    let policy_path = String::from_utf8(decoded)
        .map_err(|_| TargetError::BadPath("the decoded path is not UTF-8".into()))?;
    if policy_path.chars().any(|c| c.is_control()) {
        return Err(TargetError::BadPath(
            "the decoded path holds a control character".into(),
        ));
    }
    if policy_path.contains('\\') {
        return Err(TargetError::BadPath(
            "the decoded path holds a backslash".into(),
        ));
    }
    if policy_path.split('/').any(|s| s == "." || s == "..") {
        return Err(TargetError::BadPath(
            "the decoded path holds an encoded `.`/`..` segment".into(),
        ));
    }
    Ok(Target {
        connection: conn.to_string(),
        path,
        policy_path,
    })
}

fn dot_kind(seg: &str) -> Option<u8> {
    let lower = seg.to_ascii_lowercase();
    match lower.as_str() {
        "." | "%2e" => Some(1),
        ".." | ".%2e" | "%2e." | "%2e%2e" => Some(2),
        _ => None,
    }
}

/// RFC 3986 §5.2.4 on an absolute path, treating `%2e` as `.`; `..` above the root is an
/// error (it would leave the connection).
fn remove_dot_segments(path: &str) -> Result<String, TargetError> {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let n = segs.len();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == n;
        match dot_kind(seg) {
            Some(1) => {
                if last {
                    out.push("");
                }
            }
            Some(_) => {
                if out.pop().is_none() {
                    return Err(TargetError::BadPath(
                        "`..` would climb above the connection's root".into(),
                    ));
                }
                if last {
                    out.push("");
                }
            }
            None => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Ok(s)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> (String, String, String) {
        let t = route(p).unwrap();
        (t.connection, t.path, t.policy_path)
    }

    #[test]
    fn routes() {
        assert_eq!(
            ok("/billing/invoices/1"),
            ("billing".into(), "/invoices/1".into(), "/invoices/1".into())
        );
        assert_eq!(ok("/billing"), ("billing".into(), "/".into(), "/".into()));
        assert_eq!(ok("/billing/"), ("billing".into(), "/".into(), "/".into()));
        assert_eq!(
            ok("/b/a/./c/"),
            ("b".into(), "/a/c/".into(), "/a/c/".into())
        );
        assert_eq!(
            ok("/b/a/x/../c"),
            ("b".into(), "/a/c".into(), "/a/c".into())
        );
        assert_eq!(
            ok("/b/a/x/%2E%2e/c"),
            ("b".into(), "/a/c".into(), "/a/c".into())
        );
        assert_eq!(ok("/b/a/.."), ("b".into(), "/".into(), "/".into()));
        assert_eq!(ok("/b/a%20b"), ("b".into(), "/a%20b".into(), "/a b".into()));
        assert_eq!(route("/"), Err(TargetError::NoConnection));
        assert_eq!(route("//x"), Err(TargetError::NoConnection));
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for p in [
            "/b/..",
            "/b/a/../../etc",
            "/b/invoices/..%2Fadmin",
            "/b/invoices/%2e%2e%2fadmin",
            "/b/a%5c..%5cadmin",
            "/b/a%00",
            "/b/a%zz",
            "/b/%ff",
        ] {
            assert!(matches!(route(p), Err(TargetError::BadPath(_))), "{p}");
        }
    }
}
