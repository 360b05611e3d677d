//! Field globs: `*` any run of characters (dots included), `?` one character, ASCII
//! case-insensitive (globs are lower-cased when compiled).

/// Matches `glob` (lower case) against `text`, ignoring ASCII case. Linear-ish two-pointer
/// wildcard matching (no recursion, no backtracking explosion).
pub(crate) fn glob_match(glob: &str, text: &str) -> bool {
    let p = glob.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti].to_ascii_lowercase()) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A field rule `glob` against a column/key `name` and its qualified form (`table.column`
/// or the dotted JSON path). `*.x` also matches a bare `x`. When the qualifier is unknown
/// (`table_unknown`, e.g. a computed column), a dotted glob matches on its last segment, so
/// `users.email` still masks an `email` column whose table could not be resolved.
pub(crate) fn field_matches(
    glob: &str,
    name: &str,
    qualified: Option<&str>,
    table_unknown: bool,
) -> bool {
    if glob_match(glob, name) || qualified.is_some_and(|q| glob_match(glob, q)) {
        return true;
    }
    if let Some(rest) = glob.strip_prefix("*.")
        && glob_match(rest, name)
    {
        return true;
    }
    if table_unknown && let Some((_, last)) = glob.rsplit_once('.') {
        return glob_match(last, name);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("ssn", "SSN"));
        assert!(glob_match("*email*", "contact_email_addr"));
        assert!(glob_match("*.card_number", "orders.card_number"));
        assert!(!glob_match("*.card_number", "card_number"));
        assert!(field_matches("*.card_number", "card_number", None, false));
        assert!(field_matches(
            "users.email",
            "email",
            Some("users.email"),
            false
        ));
        assert!(!field_matches(
            "users.email",
            "email",
            Some("orders.email"),
            false
        ));
        assert!(field_matches("users.email", "email", None, true));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
    }
}
