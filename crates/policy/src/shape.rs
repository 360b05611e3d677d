//! The literal-free shape of a simple SQL statement: the key under which texts that differ
//! only in numeric literals share one classification.
//!
//! Simple-protocol clients (psql scripts, psycopg2, `pgbench -M simple`, ORMs that inline
//! values) send a new text for every execution — `... WHERE aid = 7`, then `= 8` — so a
//! cache keyed by the whole text never hits, and each statement pays a full sqlparser
//! parse. What the classifier reports for a `SELECT`, `INSERT`, `UPDATE`, `DELETE` or
//! `WITH` statement (kinds, tables, functions, an unfiltered write) comes from its
//! structure, never from a number's value; the literal-dependent cases (`SET` values,
//! `EXPLAIN (ANALYZE 'off')`) start with other keywords and are never shaped. String
//! literals are not shaped at all: sqlparser accepts `'x'` where PostgreSQL wants a name
//! (`DELETE FROM 'x'`, `JOIN 'u'`, `s.'t'`, a CTE named `'w'`), so a string's content can
//! reach the classification (found by the random-statement property test below).
//!
//! Soundness rests on one property: two texts with the same key have the same sqlparser
//! token stream except for the values of numbers, and sqlparser never reads a number as
//! a name. So the lexer accepts only a small ASCII subset whose token boundaries it knows
//! exactly, and gives up (the text is then parsed on its own, as before) on anything
//! else: string literals, comments, backslashes anywhere, `$` (dollar quotes,
//! parameters), numbers touching a letter or a dot (`1e5`, `.5`, `1.`, `t.1`), non-ASCII
//! outside quoted identifiers, control characters, and a `;` anywhere but at the end.

/// A statement's shape key and its text as [`crate::classify`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape<'a> {
    /// The text with each number replaced by `\0` and each run of whitespace by one
    /// space. Quoted identifiers stay as written.
    pub key: String,
    /// The statement without its trailing `;`, trimmed: the `text` of its classification.
    pub text: &'a str,
}

/// Leading keywords of statements whose classification does not depend on literal values.
const SHAPED: [&str; 5] = ["select", "insert", "update", "delete", "with"];

const NUMBER: char = '\0';

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Index just past the `"..."` opened at `open` (the quote doubled inside); `None` when
/// unterminated or holding a backslash or NUL.
fn past_quoted(b: &[u8], open: usize) -> Option<usize> {
    let q = b[open];
    let mut i = open + 1;
    loop {
        match *b.get(i)? {
            b'\\' | 0 => return None,
            c if c == q && b.get(i + 1) == Some(&q) => i += 2,
            c if c == q => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The shape of `sql` (PostgreSQL lexical rules), or `None` when it is not one statement
/// of a shaped kind in the subset the lexer reads with certainty.
pub fn literal_shape(sql: &str) -> Option<Shape<'_>> {
    let b = sql.as_bytes();
    let mut key = String::with_capacity(b.len());
    let mut i = 0;
    let mut space = false;
    let mut end = b.len();
    while i < b.len() {
        let c = b[i];
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            space = true;
            i += 1;
            continue;
        }
        if space && !key.is_empty() {
            key.push(' ');
        }
        space = false;
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let s = i;
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                // `E'..'`, `X'..'`, `N'..'`, `U&"..."` and friends change how the literal
                // reads; a word glued to a quote is not in the subset.
                if matches!(b.get(i), Some(b'\'' | b'"' | b'$')) {
                    return None;
                }
                key.push_str(&sql[s..i]);
            }
            b'0'..=b'9' => {
                if i > 0 && b[i - 1] == b'.' {
                    return None;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                if b.get(i)
                    .is_some_and(|&n| is_word_byte(n) || n == b'.' || n == b'$')
                {
                    return None;
                }
                key.push(NUMBER);
            }
            // String literals are not shaped: sqlparser reads `'x'` as a table name
            // (`DELETE FROM 'x'`, `JOIN 'u'`, `s.'t'`: errors in PostgreSQL, but
            // classified), so a string's content can reach the classification.
            b'\'' => return None,
            b'"' => {
                if i > 0 && (is_word_byte(b[i - 1]) || b[i - 1] == b'&') {
                    return None;
                }
                let s = i;
                i = past_quoted(b, i)?;
                key.push_str(&sql[s..i]);
            }
            b';' => {
                if !b[i + 1..]
                    .iter()
                    .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
                {
                    return None;
                }
                end = i;
                break;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
            b'+' | b'-' | b'*' | b'/' | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'#' | b'%'
            | b'^' | b'&' | b'|' | b'?' | b',' | b'.' | b'(' | b')' | b':' | b'[' | b']' => {
                key.push(c as char);
                i += 1;
            }
            _ => return None,
        }
    }
    let first = key
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()?;
    if !SHAPED.iter().any(|k| first.eq_ignore_ascii_case(k)) {
        return None;
    }
    Some(Shape {
        key,
        text: sql[..end].trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dialect, StatementInfo, classify};
    use proptest::prelude::*;

    fn key(sql: &str) -> Option<String> {
        literal_shape(sql).map(|s| s.key)
    }

    #[test]
    fn literals_are_replaced_and_the_rest_kept() {
        let a = literal_shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").unwrap();
        assert_eq!(
            a.key,
            "SELECT abalance FROM pgbench_accounts WHERE aid = \0"
        );
        assert_eq!(
            a.text,
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345"
        );
        assert_eq!(
            key("select  \"Odd \"\"Name\"\"\"\n from t where n = 3 and x=1.5"),
            Some("select \"Odd \"\"Name\"\"\" from t where n = \0 and x=\0".into())
        );
        assert_eq!(
            key("  insert into t values (1, 2.5)  "),
            key("insert into t values (22, 7)")
        );
        assert_ne!(key("SELECT 1 FROM a"), key("SELECT 1 FROM b"));
        assert_ne!(key("SELECT 1"), key("SELECT '1'"));
        assert!(key("UPDATE t SET a = 1 WHERE id = 2").is_some());
        assert!(key("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").is_some());
    }

    #[test]
    fn anything_outside_the_subset_is_not_shaped() {
        for sql in [
            "SET warden.purpose = 'x'",
            "EXPLAIN (ANALYZE 'off') DELETE FROM t",
            "SHOW search_path",
            "SELECT E'\\'; DROP TABLE t; --'",
            "SELECT 'a\\'; DROP TABLE t; --'",
            "SELECT 1 -- comment",
            "SELECT /* c */ 1",
            "SELECT $1",
            "SELECT $$x$$",
            "SELECT 'a'\n'b'",
            "SELECT 'a' 'b'",
            "SELECT U&'d\\0061t'",
            "SELECT U&\"x\"",
            "SELECT x'1f'",
            "SELECT 1e5",
            "SELECT .5",
            "SELECT 1.",
            "SELECT 1..2",
            "SELECT 1; SELECT 2",
            "SELECT 1;;",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT café FROM t",
            "SELECT 1\x0b",
            "SELECT '\0'",
            "",
            ";",
            "select_x FROM t",
        ] {
            assert_eq!(key(sql), None, "{sql:?}");
        }
        assert!(key("SELECT 1;  \n").is_some());
        assert!(
            key("SELECT \"café\" FROM t").is_some(),
            "non-ASCII in a quoted name"
        );
        for sql in [
            "SELECT 'a'",
            "DELETE FROM 'x'",
            "SELECT * FROM t JOIN 'u' ON 1 = 1",
            "WITH 'w' AS (SELECT 1) SELECT * FROM 'w'",
        ] {
            assert_eq!(key(sql), None, "string literals are not shaped: {sql:?}");
        }
    }

    /// The classification a shared hit returns for `sql`: `cached` with `sql`'s text.
    fn shared(cached: &StatementInfo, sql: &str) -> StatementInfo {
        StatementInfo {
            text: literal_shape(sql).unwrap().text.to_string(),
            ..cached.clone()
        }
    }

    const TEMPLATES: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
        "select * from t where a = {} and b = {} or c in ({}, {})",
        "INSERT INTO audit.log (id, note) VALUES ({}, {}) RETURNING id",
        "UPDATE accounts SET balance = balance - {} WHERE id = {}",
        "DELETE FROM sessions WHERE expires < {}::timestamptz",
        "WITH x AS (SELECT {} AS v) SELECT v FROM x, lateral generate_series(1, {}) g",
        "SELECT \"Mixed\".\"Col\" FROM \"Mixed\" WHERE \"Col\" LIKE {} LIMIT {}",
        "SELECT count(*) FILTER (WHERE a > {}) FROM t GROUP BY b HAVING sum(c) < {}",
        "UPDATE t SET a = {}",
        "SELECT {} FROM nowhere WHERE",
    ];

    /// Pieces of statements, with spacing, for the random-statement property.
    const FRAGMENTS: &[&str] = &[
        " * ",
        " a",
        " t",
        " s.t",
        " \"Q x\"",
        " FROM ",
        " WHERE ",
        " AND ",
        " OR ",
        " = ",
        " < ",
        " IN (",
        ")",
        "(",
        ", ",
        " JOIN u ON ",
        " GROUP BY ",
        " ORDER BY ",
        " LIMIT ",
        " UNION SELECT ",
        " VALUES (",
        " SET a = ",
        " INTO ",
        " RETURNING ",
        " count(",
        " pg_sleep(",
        " AS x ",
        "::int",
        " IS NULL",
        " NOT ",
        " - ",
        " + ",
        " || ",
        "[1]",
        " E",
        " U&",
        " $1",
        " -- c\n",
        " /* c */ ",
        " \\",
        ".",
        ";",
        " ;",
        " DELETE FROM t",
        "\n",
        " x",
        "'",
        "1",
        "e5",
        " (SELECT ",
        " WITH w AS (",
    ];

    fn literal() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1_000_000_000).prop_map(|n| n.to_string()),
            (0u32..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
            "[ -~é\n]{0,12}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        ]
    }

    fn fill(t: &str, lits: &[String]) -> String {
        let mut out = String::new();
        let mut it = lits.iter();
        for (i, part) in t.split("{}").enumerate() {
            if i > 0 {
                out.push_str(it.next().map_or("0", String::as_str));
            }
            out.push_str(part);
        }
        out
    }

    proptest! {
        /// Two texts with one key classify alike: a shared hit is what a parse returns.
        #[test]
        fn texts_with_one_key_classify_alike(
            t in 0..TEMPLATES.len(),
            a in proptest::collection::vec(literal(), 4),
            b in proptest::collection::vec(literal(), 4),
        ) {
            let (sa, sb) = (fill(TEMPLATES[t], &a), fill(TEMPLATES[t], &b));
            let (Some(ka), Some(kb)) = (literal_shape(&sa), literal_shape(&sb)) else {
                // Out of the subset (a backslash in a literal): parsed on its own.
                return Ok(());
            };
            if ka.key == kb.key {
                let ca = classify(&sa, Dialect::Postgres);
                let cb = classify(&sb, Dialect::Postgres);
                prop_assert_eq!(ca.len(), 1);
                prop_assert_eq!(cb.len(), 1);
                if ca[0].parse_error.is_some() {
                    // Never shared (its message names positions), but refused alike.
                    prop_assert!(cb[0].parse_error.is_some());
                } else {
                    prop_assert_eq!(&cb, &vec![shared(&ca[0], &sb)]);
                    // `classify_one` (a Parse) differs only in keeping a trailing `;`.
                    prop_assert_eq!(
                        crate::classify_one(&sb, Dialect::Postgres),
                        StatementInfo { text: sb.trim().to_string(), ..ca[0].clone() }
                    );
                }
            }
        }
    }

    /// Whatever the input, a shaped text is one statement whose text is `Shape::text`;
    /// and enough random texts get a shape for that to say something.
    #[test]
    fn a_shaped_text_is_one_statement_with_that_text() {
        use proptest::strategy::ValueTree;
        let texts = prop_oneof![
            // Mostly the subset (so that many texts get a shape), sometimes anything.
            3 => "(SELECT|select|WITH|update|INSERT|delete) [a-z0-9_ ,.;=()*<>+\n\"-]{0,60}",
            1 => "(SELECT|select|WITH|update|INSERT|delete) [ -~\n]{0,60}",
        ];
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (cases, mut shaped) = (4000, 0);
        for _ in 0..cases {
            let sql = texts.new_tree(&mut runner).unwrap().current();
            if let Some(s) = literal_shape(&sql) {
                shaped += 1;
                let c = classify(&sql, Dialect::Postgres);
                assert_eq!(c.len(), 1, "{sql:?}");
                assert_eq!(c[0].text, s.text, "{sql:?}");
            }
        }
        assert!(
            shaped > cases / 10,
            "only {shaped} of {cases} random texts got a shape"
        );
    }

    proptest! {
        // Most random statements are cut short by the lexer or the parser: run enough
        // cases that a few hundred pairs reach the comparison.
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Random statements built from SQL fragments (tricky ones included: `E`, `U&`,
        /// `$1`, `--`, `/*`, `\\`, `.`, `;`), each rendered with two literal fillings:
        /// when both shape to one key, sqlparser classifies them alike.
        #[test]
        fn random_statements_with_one_key_classify_alike(
            head in 0..SHAPED.len(),
            parts in proptest::collection::vec(
                prop_oneof![
                    4 => proptest::sample::select(FRAGMENTS.to_vec()).prop_map(Some),
                    1 => Just(None),
                ],
                0..14,
            ),
            a in proptest::collection::vec(literal(), 14),
            b in proptest::collection::vec(literal(), 14),
        ) {
            let render = |lits: &[String]| {
                let mut out = SHAPED[head].to_string();
                for (i, p) in parts.iter().enumerate() {
                    match p {
                        Some(f) => out.push_str(f),
                        None => {
                            out.push(' ');
                            out.push_str(&lits[i]);
                        }
                    }
                }
                out
            };
            let (sa, sb) = (render(&a), render(&b));
            if let (Some(ka), Some(kb)) = (literal_shape(&sa), literal_shape(&sb))
                && ka.key == kb.key
            {
                let ca = classify(&sa, Dialect::Postgres);
                let cb = classify(&sb, Dialect::Postgres);
                prop_assert_eq!(ca.len(), 1);
                prop_assert_eq!(cb.len(), 1);
                prop_assert_eq!(ca[0].parse_error.is_some(), cb[0].parse_error.is_some());
                if ca[0].parse_error.is_none() {
                    prop_assert_eq!(&cb, &vec![shared(&ca[0], &sb)], "{:?} / {:?}", sa, sb);
                }
            }
        }
    }
}
