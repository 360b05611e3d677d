//! SQL splitting and classification.
//!
//! Two layers:
//! 1. [`split_statements`]: a small hand-written lexer that cuts a query string at
//!    top-level `;`, respecting quotes, dollar quotes and comments. It never panics; an
//!    unterminated quote or comment runs to the end of the input.
//! 2. [`classify_one`]: parses one statement with sqlparser and walks the whole AST so that
//!    nested statements (data-modifying CTEs, `EXPLAIN ANALYZE`, `COPY (query) TO`, ...)
//!    contribute their kinds too. Text the parser cannot read is [`SqlKind::Unparsed`].
//!
//! Safety notes:
//! - Splitting happens *before* parsing, and every piece is parsed on its own, so text
//!   that Warden and the server would cut differently ends up unparsable (denied) rather
//!   than hidden.
//! - The parser runs with a recursion limit; left-deep chains (`a OR b OR ...`,
//!   `SELECT .. UNION SELECT ..`) which sqlparser builds in a loop are bounded by a token
//!   count check so walking / dropping the AST cannot overflow the stack.
use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, ObjectName, ObjectType, Query, Select, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// Statement kinds, as rules name them (`sql = ["select", ...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SqlKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Copy,
    Ddl,
    Dcl,
    Transaction,
    Set,
    Call,
    Explain,
    Other,
    /// The parser could not read it. Never allowed unless a rule names `unparsed`.
    Unparsed,
}

impl SqlKind {
    pub const ALL: [SqlKind; 14] = [
        SqlKind::Select,
        SqlKind::Insert,
        SqlKind::Update,
        SqlKind::Delete,
        SqlKind::Merge,
        SqlKind::Copy,
        SqlKind::Ddl,
        SqlKind::Dcl,
        SqlKind::Transaction,
        SqlKind::Set,
        SqlKind::Call,
        SqlKind::Explain,
        SqlKind::Other,
        SqlKind::Unparsed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            SqlKind::Select => "select",
            SqlKind::Insert => "insert",
            SqlKind::Update => "update",
            SqlKind::Delete => "delete",
            SqlKind::Merge => "merge",
            SqlKind::Copy => "copy",
            SqlKind::Ddl => "ddl",
            SqlKind::Dcl => "dcl",
            SqlKind::Transaction => "transaction",
            SqlKind::Set => "set",
            SqlKind::Call => "call",
            SqlKind::Explain => "explain",
            SqlKind::Other => "other",
            SqlKind::Unparsed => "unparsed",
        }
    }
    pub fn parse(s: &str) -> Option<SqlKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for SqlKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the classifier learned about one statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementInfo {
    /// The exact text of this statement as sent (without the separating `;`, trimmed).
    pub text: String,
    /// Every kind found, nested ones included (`WITH d AS (DELETE ...) SELECT` = {select, delete}).
    pub kinds: BTreeSet<SqlKind>,
    /// Tables touched, as written (`schema.table` or `table`), deduplicated, in order seen.
    pub tables: Vec<String>,
    /// Functions called, lower-cased, deduplicated.
    pub functions: Vec<String>,
    /// An UPDATE or DELETE with no WHERE clause somewhere in the statement.
    pub unfiltered_write: bool,
    /// `SET [SESSION|LOCAL] name = value` / `SET name TO value`: (lower-cased name, value unquoted).
    pub set_var: Option<(String, String)>,
    /// Why the parser refused it (then `kinds = {Unparsed}`).
    pub parse_error: Option<String>,
}

impl StatementInfo {
    /// A query that reads and nothing else, as far as the statement's text shows: only
    /// `select` kinds (so no `SELECT ... INTO`, no data-modifying `WITH`), parsed, and no
    /// function call at all (`nextval`, `pg_terminate_backend`, `dblink_exec` and any
    /// user function may write). What the text cannot show — a view or an operator whose
    /// function has side effects — it cannot rule out either.
    pub fn is_pure_read(&self) -> bool {
        self.parse_error.is_none()
            && self.functions.is_empty()
            && self.set_var.is_none()
            && !self.kinds.is_empty()
            && self.kinds.iter().all(|k| *k == SqlKind::Select)
    }
}

/// Longest statement text the classifier parses; longer text is `Unparsed`.
pub const MAX_PARSE_BYTES: usize = 1024 * 1024;
/// sqlparser recursion limit (nesting of subqueries, parentheses, ...).
pub const PARSER_RECURSION_LIMIT: usize = 50;
/// Most operator-like tokens (each may add one level to a left-deep AST chain) a statement
/// may hold before it is refused as too complex to classify safely.
pub const MAX_CHAIN_TOKENS: usize = 4_000;

// ---------------------------------------------------------------------------------------
// Splitting
// ---------------------------------------------------------------------------------------

/// Lexical rules for the splitter.
#[derive(Debug, Clone, Copy)]
struct LexRules {
    /// `'...'` strings take backslash escapes (MySQL).
    backslash_in_strings: bool,
    /// `"..."` is a string with backslash escapes (MySQL) rather than an identifier.
    double_quote_backslash: bool,
    /// `$tag$...$tag$` (PostgreSQL).
    dollar_quotes: bool,
    /// `/* /* */ */` nest (PostgreSQL).
    nested_comments: bool,
    /// `#` line comments and `` `ident` `` (MySQL).
    mysql: bool,
}

impl LexRules {
    fn for_dialect(d: Dialect) -> LexRules {
        match d {
            Dialect::Postgres => LexRules {
                backslash_in_strings: false,
                double_quote_backslash: false,
                dollar_quotes: true,
                nested_comments: true,
                mysql: false,
            },
            Dialect::MySql => LexRules {
                backslash_in_strings: true,
                double_quote_backslash: true,
                dollar_quotes: false,
                nested_comments: false,
                mysql: true,
            },
        }
    }
}

/// One piece found by the splitter.
struct Piece<'a> {
    text: &'a str,
    /// MySQL `/*! ... */` executable comment seen (the server runs its content).
    executable_comment: bool,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Index just past a quoted section opened at `start` (the opening quote). Handles the
/// doubled-quote escape and, when `backslash`, backslash escapes. Unterminated => `len`.
fn skip_quoted(b: &[u8], start: usize, quote: u8, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if backslash && c == b'\\' {
            i += 2;
            continue;
        }
        if c == quote {
            if i + 1 < b.len() && b[i + 1] == quote {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// If a dollar-quote opener `$tag$` starts at `i`, return the length of the opener.
fn dollar_opener(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'$') {
        return None;
    }
    if i > 0 && is_ident_byte(b[i - 1]) {
        return None; // `a$b$` is an identifier in PostgreSQL
    }
    let mut j = i + 1;
    if j < b.len() && (b[j].is_ascii_digit()) {
        return None; // `$1` is a parameter
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    if j < b.len() && b[j] == b'$' {
        Some(j + 1 - i)
    } else {
        None
    }
}

fn find_sub(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Index just past a block comment opened at `start` (`/*`).
fn skip_block_comment(b: &[u8], start: usize, nested: bool) -> usize {
    let mut depth = 1usize;
    let mut i = start + 2;
    while i < b.len() {
        if b[i] == b'*' && i + 1 < b.len() && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
            continue;
        }
        if nested && b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
            continue;
        }
        i += 1;
    }
    b.len()
}

fn split_with<'a>(sql: &'a str, rules: LexRules) -> Vec<Piece<'a>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut has_content = false;
    let mut exec_comment = false;
    let mut i = 0usize;
    let push = |out: &mut Vec<Piece<'a>>, s: usize, e: usize, content: bool, exec: bool| {
        if content || exec {
            let text = sql[s..e].trim();
            if !text.is_empty() {
                out.push(Piece {
                    text,
                    executable_comment: exec,
                });
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b';' => {
                push(&mut out, start, i, has_content, exec_comment);
                i += 1;
                start = i;
                has_content = false;
                exec_comment = false;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && (!rules.mysql || b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace())) =>
            {
                i = find_sub(b, i, b"\n").map(|p| p + 1).unwrap_or(b.len());
            }
            b'#' if rules.mysql => {
                i = find_sub(b, i, b"\n").map(|p| p + 1).unwrap_or(b.len());
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if rules.mysql && b.get(i + 2) == Some(&b'!') {
                    exec_comment = true;
                }
                i = skip_block_comment(b, i, rules.nested_comments);
            }
            b'\'' => {
                has_content = true;
                // E'...' / e'...' (PostgreSQL escape string): backslash escapes.
                let escape_string = rules.backslash_in_strings
                    || (i > 0
                        && (b[i - 1] == b'E' || b[i - 1] == b'e')
                        && (i < 2 || !is_ident_byte(b[i - 2])));
                i = skip_quoted(b, i, b'\'', escape_string);
            }
            b'"' => {
                has_content = true;
                i = skip_quoted(b, i, b'"', rules.double_quote_backslash);
            }
            b'`' if rules.mysql => {
                has_content = true;
                i = skip_quoted(b, i, b'`', false);
            }
            b'$' if rules.dollar_quotes => {
                has_content = true;
                if let Some(n) = dollar_opener(b, i) {
                    let tag = &b[i..i + n];
                    i = match find_sub(b, i + n, tag) {
                        Some(p) => p + n,
                        None => b.len(),
                    };
                } else {
                    i += 1;
                }
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    has_content = true;
                }
                i += 1;
            }
        }
    }
    push(&mut out, start, b.len(), has_content, exec_comment);
    out
}

/// Split a query string into statements at top-level `;`, respecting quotes, dollar quotes,
/// comments (PostgreSQL lexical rules). Returns the non-empty pieces (trimmed), in order.
pub fn split_statements(sql: &str) -> Vec<&str> {
    split_statements_dialect(sql, Dialect::Postgres)
}

/// [`split_statements`] with the lexical rules of `dialect` (MySQL: backslash escapes,
/// `#` comments, backtick identifiers, no dollar quotes).
pub fn split_statements_dialect(sql: &str, dialect: Dialect) -> Vec<&str> {
    split_with(sql, LexRules::for_dialect(dialect))
        .into_iter()
        .map(|p| p.text)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

/// Split, then classify each statement. An empty string (or only comments/`;`) gives an empty vec.
pub fn classify(sql: &str, dialect: Dialect) -> Vec<StatementInfo> {
    split_with(sql, LexRules::for_dialect(dialect))
        .into_iter()
        .map(|p| {
            if p.executable_comment {
                unparsed(
                    p.text,
                    "MySQL executable comments (/*! ... */) are not supported".into(),
                )
            } else {
                classify_single(p.text, dialect)
            }
        })
        .collect()
}

/// Classify exactly one statement's text. If the text holds several statements, the result
/// is their union (kinds, tables, functions; the first parse error and `SET`): an
/// unparsable piece adds `unparsed` without hiding the kinds of the others.
pub fn classify_one(stmt: &str, dialect: Dialect) -> StatementInfo {
    let pieces = classify(stmt, dialect);
    let mut info = StatementInfo {
        text: stmt.trim().to_string(),
        ..Default::default()
    };
    for p in pieces {
        info.kinds.extend(p.kinds);
        for t in p.tables {
            push_unique(&mut info.tables, t);
        }
        for f in p.functions {
            push_unique(&mut info.functions, f);
        }
        info.unfiltered_write |= p.unfiltered_write;
        if info.set_var.is_none() {
            info.set_var = p.set_var;
        }
        if info.parse_error.is_none() {
            info.parse_error = p.parse_error;
        }
    }
    info
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

fn unparsed(text: &str, msg: String) -> StatementInfo {
    StatementInfo {
        text: text.to_string(),
        kinds: BTreeSet::from([SqlKind::Unparsed]),
        parse_error: Some(msg),
        ..Default::default()
    }
}

/// Classify one piece produced by the splitter.
fn classify_single(text: &str, dialect: Dialect) -> StatementInfo {
    if text.len() > MAX_PARSE_BYTES {
        return unparsed(
            text,
            format!(
                "statement is {} bytes, longer than the {} bytes Warden classifies",
                text.len(),
                MAX_PARSE_BYTES
            ),
        );
    }
    let parsed = match dialect {
        Dialect::Postgres => parse_with(&PostgreSqlDialect {}, text),
        Dialect::MySql => parse_with(&MySqlDialect {}, text),
    };
    let stmts = match parsed {
        Ok(s) => s,
        Err(e) => {
            if let Some(info) = fallback(text) {
                return info;
            }
            return unparsed(text, e);
        }
    };
    let mut w = Walker::default();
    for s in &stmts {
        let _ = s.visit(&mut w);
    }
    let mut tables = Vec::new();
    for t in w.tables {
        let is_cte = w.cte_names.iter().any(|c| c == &t);
        if !is_cte {
            push_unique(&mut tables, t);
        }
    }
    StatementInfo {
        text: text.to_string(),
        kinds: w.kinds,
        tables,
        functions: w.functions,
        unfiltered_write: w.unfiltered,
        set_var: w.set_var,
        parse_error: None,
    }
}

fn parse_with(
    dialect: &dyn sqlparser::dialect::Dialect,
    text: &str,
) -> Result<Vec<Statement>, String> {
    // Bound left-deep chains, which the parser builds iteratively (not limited by the
    // recursion limit) but which the visitor and Drop walk recursively.
    let tokens = Tokenizer::new(dialect, text)
        .tokenize()
        .map_err(|e| e.to_string())?;
    let chain = tokens.iter().filter(|t| is_chain_token(t)).count();
    if chain > MAX_CHAIN_TOKENS {
        return Err(format!(
            "statement has {chain} operators/set operations, more than the {MAX_CHAIN_TOKENS} Warden classifies"
        ));
    }
    Parser::new(dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .with_tokens(tokens)
        .parse_statements()
        .map_err(|e| e.to_string())
}

/// Tokens that may extend a left-deep chain in the AST: every operator, and keywords that
/// act as infix/postfix operators or set operations.
fn is_chain_token(t: &Token) -> bool {
    match t {
        Token::Word(w) => {
            use sqlparser::keywords::Keyword as K;
            matches!(
                w.keyword,
                K::AND
                    | K::OR
                    | K::XOR
                    | K::NOT
                    | K::IS
                    | K::IN
                    | K::LIKE
                    | K::ILIKE
                    | K::SIMILAR
                    | K::BETWEEN
                    | K::COLLATE
                    | K::AT
                    | K::UNION
                    | K::EXCEPT
                    | K::INTERSECT
                    | K::MINUS
                    | K::DIV
                    | K::REGEXP
                    | K::RLIKE
                    | K::OVERLAPS
                    | K::OPERATOR
            )
        }
        Token::Whitespace(_)
        | Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::Period
        | Token::SemiColon
        | Token::Placeholder(_)
        | Token::EOF => false,
        _ => true,
    }
}

/// Hand parser for statements sqlparser refuses but that Warden must understand:
/// `SET [SESSION|LOCAL] name[.name] (=|TO) value` (custom GUCs), `MOVE ... cursor`,
/// `PREPARE TRANSACTION 'x'`, `COMMIT PREPARED 'x'`, `ROLLBACK PREPARED 'x'`.
fn fallback(text: &str) -> Option<StatementInfo> {
    if let Some(info) = keyword_fallback(text) {
        return Some(info);
    }
    let words = simple_words(text)?;
    let lw: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let kw = |i: usize| lw.get(i).map(String::as_str);
    let mk = |kind: SqlKind| StatementInfo {
        text: text.to_string(),
        kinds: BTreeSet::from([kind]),
        ..Default::default()
    };
    match (kw(0), kw(1)) {
        (Some("prepare"), Some("transaction")) if lw.len() == 3 && is_quoted(words[2]) => {
            Some(mk(SqlKind::Transaction))
        }
        (Some("commit" | "rollback"), Some("prepared")) if lw.len() == 3 && is_quoted(words[2]) => {
            Some(mk(SqlKind::Transaction))
        }
        (Some("table"), Some(_)) if lw.len() == 2 && valid_dotted_name(words[1]) => {
            let mut info = mk(SqlKind::Select);
            info.tables.push(words[1].to_string());
            Some(info)
        }
        (Some("move"), Some(_)) if lw.len() <= 5 && !words.iter().any(|w| is_quoted(w)) => {
            Some(mk(SqlKind::Select))
        }
        (Some("set"), _) => {
            let mut i = 1;
            if matches!(kw(i), Some("session" | "local")) {
                i += 1;
            }
            let name = words.get(i)?;
            let op = kw(i + 1)?;
            let value = words.get(i + 2)?;
            if lw.len() != i + 3 || !(op == "=" || op == "to") || !valid_dotted_name(name) {
                return None;
            }
            let name = name.to_ascii_lowercase();
            let value = unquote(value);
            let kind = if is_identity_var(&name) {
                SqlKind::Dcl
            } else {
                SqlKind::Set
            };
            let mut info = mk(kind);
            info.set_var = Some((name, value));
            Some(info)
        }
        _ => None,
    }
}

/// Statements whose leading keywords alone fix the kind, for grammar sqlparser lacks
/// (`CREATE USER ... PASSWORD`, `VACUUM ANALYZE t`, `REINDEX`, ...). Only used when the
/// text holds no `;` and no `$` at all, so it cannot hide a second statement or a
/// dollar-quoted body.
fn keyword_fallback(text: &str) -> Option<StatementInfo> {
    if text.contains(';') || text.contains('$') {
        return None;
    }
    let lw: Vec<String> = text
        .split_ascii_whitespace()
        .take(2)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let first = lw.first().map(|w| w.trim_end_matches('(')).unwrap_or("");
    let second = lw.get(1).map(String::as_str).unwrap_or("");
    let kind = match (first, second) {
        ("create" | "alter" | "drop", "user" | "role" | "group") => SqlKind::Dcl,
        ("vacuum" | "analyze" | "analyse" | "reindex" | "cluster" | "checkpoint", _) => {
            SqlKind::Other
        }
        _ => return None,
    };
    Some(StatementInfo {
        text: text.to_string(),
        kinds: BTreeSet::from([kind]),
        ..Default::default()
    })
}

fn is_identity_var(name: &str) -> bool {
    matches!(
        name,
        "role" | "session_authorization" | "session authorization"
    )
}

fn is_quoted(w: &str) -> bool {
    w.starts_with('\'')
}

fn valid_dotted_name(n: &str) -> bool {
    n.split('.').all(|p| {
        let mut cs = p.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    })
}

fn unquote(w: &str) -> String {
    if w.len() >= 2 && w.starts_with('\'') && w.ends_with('\'') {
        w[1..w.len() - 1].replace("''", "'")
    } else {
        w.to_string()
    }
}

/// Split into words: bare words of `[A-Za-z0-9_.$+-]`, `=`, and complete `'...'` strings.
/// Anything else (comments, other punctuation, unterminated quotes) => None.
fn simple_words(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'=' {
            out.push(&text[i..i + 1]);
            i += 1;
        } else if c == b'\'' {
            let mut j = i + 1;
            let mut closed = false;
            while j < b.len() {
                if b[j] == b'\'' {
                    if b.get(j + 1) == Some(&b'\'') {
                        j += 2;
                        continue;
                    }
                    closed = true;
                    j += 1;
                    break;
                }
                j += 1;
            }
            if !closed {
                return None;
            }
            let end = j;
            out.push(&text[i..end]);
            i = end;
        } else if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'$' | b'+' | b'-') {
            if c == b'-' && b.get(i + 1) == Some(&b'-') {
                return None; // comment
            }
            let s = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || matches!(b[i], b'_' | b'.' | b'$' | b'+' | b'-'))
            {
                i += 1;
            }
            out.push(&text[s..i]);
        } else {
            return None;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// AST walk
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Walker {
    kinds: BTreeSet<SqlKind>,
    tables: Vec<String>,
    functions: Vec<String>,
    cte_names: Vec<String>,
    unfiltered: bool,
    set_var: Option<(String, String)>,
    /// Non-zero while inside a statement whose children do not execute (plain
    /// `EXPLAIN`, `CREATE VIEW` / `FUNCTION` / `RULE` / `TRIGGER` bodies).
    suppress: usize,
    /// A table-valued function name that the relation visitor must not count as a table.
    skip_relation: Option<ObjectName>,
}

impl Walker {
    fn add(&mut self, k: SqlKind) {
        if self.suppress == 0 {
            self.kinds.insert(k);
        }
    }
    fn add_table(&mut self, name: &ObjectName) {
        push_unique(&mut self.tables, name.to_string());
    }
    fn add_function(&mut self, name: &ObjectName) {
        push_unique(&mut self.functions, lower_name(name));
    }
}

fn lower_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.to_lowercase(),
            None => p.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether the children of `s` are definitions that do not run now.
fn suppresses_children(s: &Statement) -> bool {
    match s {
        Statement::Explain {
            analyze, options, ..
        } => !explain_analyzes(*analyze, options.as_deref()),
        Statement::CreateView(v) => !v.materialized,
        Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateRule(_)
        | Statement::CreateMacro { .. } => true,
        _ => false,
    }
}

fn explain_analyzes(analyze: bool, options: Option<&[sqlparser::ast::UtilityOption]>) -> bool {
    if analyze {
        return true;
    }
    options.unwrap_or_default().iter().any(|o| {
        o.name.value.eq_ignore_ascii_case("analyze")
            && match &o.arg {
                None => true,
                Some(e) => {
                    let v = e.to_string().trim_matches('\'').to_ascii_lowercase();
                    !matches!(v.as_str(), "false" | "off" | "0" | "no")
                }
            }
    })
}

fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match v.value.clone().into_string() {
            Some(s) => s,
            None => v.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// Whether a query body reads with `TABLE t` (`SELECT` is caught by `pre_visit_select`).
fn body_has(body: &SetExpr, values: bool) -> bool {
    match body {
        SetExpr::Table(_) => true,
        SetExpr::Values(_) => values,
        SetExpr::SetOperation { left, right, .. } => {
            body_has(left, values) || body_has(right, values)
        }
        _ => false,
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        use SqlKind as K;
        use sqlparser::ast::Set;
        let mut own: Vec<SqlKind> = Vec::new();
        match s {
            Statement::Query(q) => {
                if body_has(&q.body, true) {
                    own.push(K::Select);
                }
            }
            Statement::Insert(_) => own.push(K::Insert),
            Statement::Update(u) => {
                own.push(K::Update);
                if u.selection.is_none() && self.suppress == 0 {
                    self.unfiltered = true;
                }
            }
            Statement::Delete(d) => {
                own.push(K::Delete);
                if d.selection.is_none() && self.suppress == 0 {
                    self.unfiltered = true;
                }
            }
            Statement::Merge(_) => own.push(K::Merge),
            Statement::Call(f) => {
                own.push(K::Call);
                self.add_function(&f.name);
            }
            Statement::Copy { source, .. } => {
                own.push(K::Copy);
                if let sqlparser::ast::CopySource::Table { table_name, .. } = source {
                    self.add_table(table_name);
                }
            }
            Statement::CopyIntoSnowflake { .. }
            | Statement::LoadData { .. }
            | Statement::Unload { .. } => own.push(K::Copy),
            Statement::Truncate(t) => {
                own.push(K::Ddl);
                own.push(K::Delete);
                if self.suppress == 0 {
                    self.unfiltered = true;
                }
                for n in &t.table_names {
                    self.add_table(&n.name);
                }
            }
            Statement::Drop {
                object_type, names, ..
            } => match object_type {
                ObjectType::Role | ObjectType::User | ObjectType::Group => own.push(K::Dcl),
                ObjectType::Table
                | ObjectType::View
                | ObjectType::MaterializedView
                | ObjectType::ForeignTable => {
                    own.push(K::Ddl);
                    for n in names {
                        self.add_table(n);
                    }
                }
                _ => own.push(K::Ddl),
            },
            Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::GrantRole(_)
            | Statement::RevokeRole(_)
            | Statement::Deny(_)
            | Statement::AlterDefaultPrivileges(_) => own.push(K::Dcl),
            Statement::CreateView(_)
            | Statement::CreateTable(_)
            | Statement::CreateVirtualTable { .. }
            | Statement::CreateIndex(_)
            | Statement::CreateSecret { .. }
            | Statement::CreateServer(_)
            | Statement::CreateForeignTable(_)
            | Statement::CreateForeignDataWrapper(_)
            | Statement::CreateUserMapping(_)
            | Statement::CreatePolicy(_)
            | Statement::CreateRule(_)
            | Statement::CreateConnector(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::CreateAggregate(_)
            | Statement::AlterTable(_)
            | Statement::AlterSchema(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView(_)
            | Statement::AlterFunction(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterPolicy(_)
            | Statement::AlterTrigger(_)
            | Statement::AlterConnector { .. }
            | Statement::DropFunction(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. }
            | Statement::DropSecret { .. }
            | Statement::DropPolicy(_)
            | Statement::DropRule(_)
            | Statement::DropConnector { .. }
            | Statement::CreateExtension(_)
            | Statement::CreateCollation(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_)
            | Statement::Comment { .. }
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateFunction(_)
            | Statement::CreateTrigger(_)
            | Statement::DropTrigger(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateMacro { .. }
            | Statement::CreateStage { .. }
            | Statement::CreateFileFormat { .. }
            | Statement::CreateWarehouse(_)
            | Statement::CreateSequence { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateType { .. }
            | Statement::RenameTable(_) => own.push(K::Ddl),
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => own.push(K::Transaction),
            Statement::Set(set) => match set {
                Set::SetTransaction { .. } => own.push(K::Transaction),
                // Changing the effective role changes privileges: access control, not plumbing.
                Set::SetRole { .. } | Set::SetSessionAuthorization(_) => own.push(K::Dcl),
                Set::SingleAssignment {
                    variable, values, ..
                } => {
                    let name = lower_name(variable);
                    let value = values.iter().map(expr_text).collect::<Vec<_>>().join(", ");
                    own.push(if is_identity_var(&name) {
                        K::Dcl
                    } else {
                        K::Set
                    });
                    if self.set_var.is_none() {
                        self.set_var = Some((name, value));
                    }
                }
                Set::MultipleAssignments { assignments } => {
                    own.push(K::Set);
                    for a in assignments {
                        let name = lower_name(&a.name);
                        if is_identity_var(&name) {
                            own.push(K::Dcl);
                        }
                        if self.set_var.is_none() {
                            self.set_var = Some((name, expr_text(&a.value)));
                        }
                    }
                }
                Set::SetTimeZone { value, .. } => {
                    own.push(K::Set);
                    if self.set_var.is_none() {
                        self.set_var = Some(("timezone".into(), expr_text(value)));
                    }
                }
                _ => own.push(K::Set),
            },
            Statement::Reset(_)
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
            | Statement::Use(_)
            | Statement::ShowFunctions { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowCreate { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowProcessList { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowObjects(_)
            | Statement::ShowTables { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowCollation { .. } => own.push(K::Set),
            Statement::Explain { .. } | Statement::ExplainTable { .. } => own.push(K::Explain),
            // Reading from an already declared cursor.
            Statement::Fetch { .. } | Statement::Close { .. } => own.push(K::Select),
            Statement::Declare { stmts, .. } => {
                // DECLARE c CURSOR FOR <query>: the query's kinds come from the walk.
                if stmts.iter().all(|d| d.for_query.is_none()) {
                    own.push(K::Other);
                }
            }
            // PREPARE name AS <stmt>: the inner statement's kinds come from the walk.
            Statement::Prepare { .. } => {}
            _ => own.push(K::Other),
        }
        for k in own {
            self.add(k);
        }
        if suppresses_children(s) {
            self.suppress += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if suppresses_children(s) {
            self.suppress = self.suppress.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                push_unique(&mut self.cte_names, cte.alias.name.to_string());
            }
        }
        if body_has(&q.body, false) {
            self.add(SqlKind::Select);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        self.add(SqlKind::Select);
        if s.into.is_some() {
            // SELECT ... INTO new_table creates a table.
            self.add(SqlKind::Ddl);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.add_function(name);
                self.skip_relation = Some(name.clone());
            }
            TableFactor::Function { name, .. } => self.add_function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        if self.skip_relation.as_ref() == Some(r) {
            self.skip_relation = None;
        } else {
            self.add_table(r);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.add_function(&f.name);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SqlKind::*;
    use proptest::prelude::*;

    fn kinds(sql: &str) -> Vec<SqlKind> {
        classify_one(sql, Dialect::Postgres)
            .kinds
            .into_iter()
            .collect()
    }

    #[test]
    fn pure_reads_are_selects_without_function_calls() {
        let pure = |q: &str| classify_one(q, Dialect::Postgres).is_pure_read();
        assert!(pure("SELECT abalance FROM pgbench_accounts WHERE aid = $1"));
        assert!(pure(
            "SELECT a, b FROM t JOIN u ON t.id = u.id WHERE a > 1 ORDER BY b"
        ));
        assert!(pure("WITH x AS (SELECT 1 AS a) SELECT a FROM x"));
        assert!(pure("SELECT * FROM t FOR UPDATE"));
        for q in [
            "SELECT nextval('s')",
            "SELECT pg_terminate_backend(42)",
            "SELECT * FROM t WHERE f(a)",
            "SELECT count(*) FROM t",
            "SELECT * INTO x FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "INSERT INTO t SELECT * FROM u",
            "UPDATE t SET a = 1 WHERE b = 2",
            "SET search_path = x",
            "COPY t TO STDOUT",
            "CALL p()",
            "EXPLAIN ANALYZE DELETE FROM t",
            "SELEC oops",
            "",
        ] {
            assert!(!pure(q), "{q:?} must not count as a pure read");
        }
    }

    #[test]
    fn split_basic() {
        assert_eq!(
            split_statements("SELECT 1; SELECT 2;"),
            vec!["SELECT 1", "SELECT 2"]
        );
        assert_eq!(split_statements("  ;; ; "), Vec::<&str>::new());
        assert_eq!(split_statements(""), Vec::<&str>::new());
        assert_eq!(split_statements("-- c\n; /* x; */ ;"), Vec::<&str>::new());
        assert_eq!(
            split_statements("SELECT ';' ; SELECT 'it''s;'"),
            vec!["SELECT ';'", "SELECT 'it''s;'"]
        );
        assert_eq!(
            split_statements("SELECT E'\\';'; SELECT 2"),
            vec!["SELECT E'\\';'", "SELECT 2"]
        );
        // Without E, a backslash does not escape (standard_conforming_strings).
        assert_eq!(
            split_statements("SELECT 'a\\'; SELECT 2"),
            vec!["SELECT 'a\\'", "SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT \"a;b\"; SELECT 2"),
            vec!["SELECT \"a;b\"", "SELECT 2"]
        );
        assert_eq!(
            split_statements("DO $$ BEGIN x; y; END $$; SELECT $tag$ ; $$ ; $tag$"),
            vec!["DO $$ BEGIN x; y; END $$", "SELECT $tag$ ; $$ ; $tag$"]
        );
        assert_eq!(
            split_statements("SELECT $1; SELECT a$b$c"),
            vec!["SELECT $1", "SELECT a$b$c"]
        );
        assert_eq!(
            split_statements("SELECT 1 -- x; y\n; SELECT 2"),
            vec!["SELECT 1 -- x; y", "SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT /* a /* b; */ c; */ 1; SELECT 2"),
            vec!["SELECT /* a /* b; */ c; */ 1", "SELECT 2"]
        );
        // Unterminated constructs run to the end.
        assert_eq!(
            split_statements("SELECT 'abc; DELETE FROM t"),
            vec!["SELECT 'abc; DELETE FROM t"]
        );
        assert_eq!(
            split_statements("SELECT $x$ abc; DELETE"),
            vec!["SELECT $x$ abc; DELETE"]
        );
        assert_eq!(
            split_statements("SELECT 1 /* ; DELETE"),
            vec!["SELECT 1 /* ; DELETE"]
        );
        assert_eq!(
            split_statements("SELECT 'é;ü'; SELECT 'ß'"),
            vec!["SELECT 'é;ü'", "SELECT 'ß'"]
        );
    }

    #[test]
    fn split_mysql() {
        let s = |q| split_statements_dialect(q, Dialect::MySql);
        assert_eq!(
            s("SELECT 'a\\'; b'; SELECT 2"),
            vec!["SELECT 'a\\'; b'", "SELECT 2"]
        );
        assert_eq!(
            s("SELECT `a;b` # c; d\n; SELECT 2"),
            vec!["SELECT `a;b` # c; d", "SELECT 2"]
        );
        assert_eq!(s("SELECT $$; SELECT 2"), vec!["SELECT $$", "SELECT 2"]);
        // A MySQL executable comment is never silently dropped.
        let infos = classify("/*!50000 DELETE FROM t */", Dialect::MySql);
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].kinds, BTreeSet::from([Unparsed]));
    }

    #[test]
    fn classification_table() {
        let rows: &[(&str, &[SqlKind])] = &[
            ("SELECT 1", &[Select]),
            ("select * from t where a = 1", &[Select]),
            ("VALUES (1), (2)", &[Select]),
            ("TABLE t", &[Select]),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                &[Select, Delete],
            ),
            (
                "WITH u AS (UPDATE t SET a = 1 WHERE b RETURNING *) SELECT 1",
                &[Select, Update],
            ),
            (
                "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i",
                &[Select, Insert],
            ),
            ("EXPLAIN ANALYZE DELETE FROM t", &[Delete, Explain]),
            (
                "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1",
                &[Update, Explain],
            ),
            ("EXPLAIN (ANALYZE off) UPDATE t SET a = 1", &[Explain]),
            ("EXPLAIN DELETE FROM t", &[Explain]),
            ("COPY t FROM STDIN", &[Copy]),
            ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", &[Copy]),
            ("COPY (SELECT * FROM t) TO STDOUT", &[Select, Copy]),
            ("CREATE TABLE x AS SELECT * FROM t", &[Select, Ddl]),
            ("SELECT * INTO x FROM t", &[Select, Ddl]),
            ("INSERT INTO t SELECT * FROM u", &[Select, Insert]),
            ("INSERT INTO t VALUES (1)", &[Insert]),
            (
                "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2",
                &[Insert],
            ),
            ("UPDATE t SET a = 1 WHERE id = 2", &[Update]),
            ("DELETE FROM t WHERE id = 2", &[Delete]),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                &[Merge],
            ),
            ("CALL p(1)", &[Call]),
            ("TRUNCATE t", &[Delete, Ddl]),
            ("CREATE TABLE t (a int)", &[Ddl]),
            ("CREATE VIEW v AS SELECT * FROM t", &[Ddl]),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT * FROM t",
                &[Select, Ddl],
            ),
            ("ALTER TABLE t ADD COLUMN b int", &[Ddl]),
            ("DROP TABLE t", &[Ddl]),
            ("CREATE INDEX i ON t (a)", &[Ddl]),
            ("COMMENT ON TABLE t IS 'x'", &[Ddl]),
            (
                "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
                &[Ddl],
            ),
            ("GRANT SELECT ON t TO bob", &[Dcl]),
            ("REVOKE SELECT ON t FROM bob", &[Dcl]),
            ("CREATE ROLE bob", &[Dcl]),
            ("CREATE USER bob WITH PASSWORD 'x'", &[Dcl]),
            ("ALTER ROLE bob WITH SUPERUSER", &[Dcl]),
            ("DROP ROLE bob", &[Dcl]),
            ("SET ROLE admin", &[Dcl]),
            ("SET SESSION AUTHORIZATION admin", &[Dcl]),
            ("BEGIN", &[Transaction]),
            (
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                &[Transaction],
            ),
            ("COMMIT", &[Transaction]),
            ("ROLLBACK", &[Transaction]),
            ("SAVEPOINT s", &[Transaction]),
            ("RELEASE SAVEPOINT s", &[Transaction]),
            ("ROLLBACK TO SAVEPOINT s", &[Transaction]),
            ("SET TRANSACTION READ ONLY", &[Transaction]),
            ("PREPARE TRANSACTION 'x'", &[Transaction]),
            ("COMMIT PREPARED 'x'", &[Transaction]),
            ("SET search_path TO public", &[Set]),
            ("SET warden.purpose = 'x'", &[Set]),
            ("SHOW search_path", &[Set]),
            ("RESET ALL", &[Set]),
            ("DISCARD ALL", &[Set]),
            ("DEALLOCATE ALL", &[Set]),
            ("LISTEN ch", &[Other]),
            ("NOTIFY ch", &[Other]),
            ("VACUUM t", &[Other]),
            ("VACUUM ANALYZE t", &[Other]),
            ("ANALYZE t", &[Other]),
            ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", &[Other]),
            ("EXECUTE p(1)", &[Other]),
            ("PREPARE p AS DELETE FROM t WHERE id = $1", &[Delete]),
            (
                "DECLARE \"c\" CURSOR WITHOUT HOLD FOR SELECT * FROM t",
                &[Select],
            ),
            ("FETCH FORWARD 100 FROM \"c\"", &[Select]),
            ("CLOSE c", &[Select]),
            ("MOVE FORWARD 5 IN c", &[Select]),
            ("DO $$ BEGIN DELETE FROM t; END $$", &[Unparsed]),
            ("SELEKT 1", &[Unparsed]),
            ("SELECT 'unterminated", &[Unparsed]),
            ("SELECT 1; DELETE FROM t", &[Select, Delete]),
            ("DELETE FROM t; DO $$ BEGIN END $$", &[Delete, Unparsed]),
            ("", &[]),
            ("/* only a comment */", &[]),
        ];
        for (sql, want) in rows {
            assert_eq!(kinds(sql), want.to_vec(), "{sql}");
        }
    }

    #[test]
    fn details() {
        let i = classify_one("SET warden.purpose = 'ticket 42'", Dialect::Postgres);
        assert_eq!(
            i.set_var,
            Some(("warden.purpose".into(), "ticket 42".into()))
        );
        let i = classify_one("SET SESSION Warden.Purpose TO 'it''s'", Dialect::Postgres);
        assert_eq!(i.set_var, Some(("warden.purpose".into(), "it's".into())));
        let i = classify_one("SET LOCAL statement_timeout = 5000", Dialect::Postgres);
        assert_eq!(i.set_var, Some(("statement_timeout".into(), "5000".into())));
        assert_eq!(i.kinds, BTreeSet::from([Set]));

        let i = classify_one(
            "SELECT pg_sleep(1), PG_TERMINATE_BACKEND(2) FROM s.t JOIN u ON true",
            Dialect::Postgres,
        );
        assert_eq!(i.functions, vec!["pg_sleep", "pg_terminate_backend"]);
        assert_eq!(i.tables, vec!["s.t", "u"]);
        assert_eq!(i.kinds, BTreeSet::from([Select]));

        let i = classify_one(
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d, t",
            Dialect::Postgres,
        );
        assert_eq!(i.tables, vec!["t"], "CTE names are not tables");
        assert!(i.unfiltered_write);

        assert!(classify_one("UPDATE t SET a = 1", Dialect::Postgres).unfiltered_write);
        assert!(classify_one("DELETE FROM t USING u", Dialect::Postgres).unfiltered_write);
        assert!(
            !classify_one("DELETE FROM t USING u WHERE t.id = u.id", Dialect::Postgres)
                .unfiltered_write
        );
        assert!(!classify_one("EXPLAIN DELETE FROM t", Dialect::Postgres).unfiltered_write);
        assert!(classify_one("SELECT 1; UPDATE t SET a = 2", Dialect::Postgres).unfiltered_write);

        let i = classify_one("SELECT * FROM generate_series(1, 3)", Dialect::Postgres);
        assert_eq!(i.functions, vec!["generate_series"]);
        assert!(i.tables.is_empty());

        let i = classify_one("DO $$ BEGIN END $$", Dialect::Postgres);
        assert!(i.parse_error.is_some());
        assert!(i.tables.is_empty() && i.functions.is_empty());
    }

    #[test]
    fn classify_keeps_exact_text() {
        let infos = classify(
            "  SELECT 1 ;\n  delete FROM t WHERE x = ';'  ; -- bye",
            Dialect::Postgres,
        );
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].text, "SELECT 1");
        assert_eq!(infos[1].text, "delete FROM t WHERE x = ';'");
        assert_eq!(infos[1].kinds, BTreeSet::from([Delete]));
        assert!(classify(" ; -- nothing", Dialect::Postgres).is_empty());
    }

    #[test]
    fn backslash_string_cannot_hide_a_statement() {
        // PostgreSQL (standard_conforming_strings = on) runs the DELETE here.
        let infos = classify("SELECT 'a\\'; DELETE FROM t; --'", Dialect::Postgres);
        assert!(infos.iter().any(|i| i.kinds.contains(&Delete)), "{infos:?}");
    }

    #[test]
    fn mysql_dialect() {
        let k = |s| {
            classify_one(s, Dialect::MySql)
                .kinds
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(k("SELECT * FROM `t`"), vec![Select]);
        assert_eq!(k("SHOW TABLES"), vec![Set]);
        assert_eq!(k("USE db"), vec![Set]);
        assert_eq!(k("DELETE FROM t"), vec![Delete]);
    }

    #[test]
    fn too_long_or_too_deep_is_unparsed_not_a_crash() {
        let long = format!("SELECT '{}'", "x".repeat(MAX_PARSE_BYTES));
        let i = classify_one(&long, Dialect::Postgres);
        assert_eq!(i.kinds, BTreeSet::from([Unparsed]));
        assert!(i.parse_error.unwrap().contains("longer than"));

        let nested = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(kinds(&nested), vec![Unparsed]);
        let sub = format!(
            "SELECT * FROM {}t{}",
            "(SELECT * FROM ".repeat(1000),
            ")".repeat(1000)
        );
        assert_eq!(kinds(&sub), vec![Unparsed]);
        let chain = format!("SELECT {}1", "1+".repeat(100_000));
        assert_eq!(kinds(&chain), vec![Unparsed]);
        let unions = format!("SELECT 1{}", " UNION SELECT 1".repeat(50_000));
        assert_eq!(kinds(&unions), vec![Unparsed]);
    }

    #[test]
    fn chains_below_the_limit_fit_a_small_stack() {
        // Tokio worker threads have 2 MiB; leave half for the caller.
        let n = MAX_CHAIN_TOKENS - 1;
        let shapes = vec![
            format!("SELECT {}1", "1+".repeat(n)),
            format!("SELECT 1{}", " UNION SELECT 1".repeat(n)),
            format!("SELECT x{}", "::int".repeat(n)),
            format!("SELECT x{}", " IS NULL".repeat(n)),
            format!("SELECT a{}", "->'a'".repeat(n)),
        ];
        for s in shapes {
            let h = std::thread::Builder::new()
                .stack_size(1024 * 1024)
                .spawn(move || classify_one(&s, Dialect::Postgres).kinds)
                .unwrap();
            assert_eq!(h.join().unwrap(), BTreeSet::from([Select]));
        }
    }

    proptest! {
        #[test]
        fn split_never_panics(s in any::<String>()) {
            let pieces = split_statements(&s);
            for p in &pieces {
                prop_assert!(!p.is_empty());
                prop_assert_eq!(p.trim(), *p);
            }
            let _ = split_statements_dialect(&s, Dialect::MySql);
        }

        #[test]
        fn split_never_panics_on_sqlish(s in "([a-z ;'\"$\\\\/*E\\-\n]|\\$\\$|\\$t\\$|--|/\\*|\\*/|E')*") {
            let _ = split_statements(&s);
            let _ = classify(&s, Dialect::Postgres);
            let _ = classify(&s, Dialect::MySql);
        }

        #[test]
        fn split_covers_all_content_without_quotes(s in "[a-z0-9 ;,()=\n\t]*") {
            let pieces = split_statements(&s);
            let joined: String = pieces.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let expected: String = s.chars().filter(|c| !c.is_whitespace() && *c != ';').collect();
            prop_assert_eq!(joined, expected);
            for p in pieces {
                prop_assert!(!p.contains(';'));
            }
        }

        #[test]
        fn classify_never_panics(s in any::<String>()) {
            let _ = classify(&s, Dialect::Postgres);
            let _ = classify_one(&s, Dialect::MySql);
        }
    }
}
