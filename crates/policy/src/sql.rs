//! SQL splitting and classification. STUB: to be implemented.
use std::collections::BTreeSet;

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

/// Split a query string into statements at top-level `;`, respecting quotes, dollar quotes,
/// comments. Returns the non-empty pieces (trimmed), in order.
pub fn split_statements(_sql: &str) -> Vec<&str> {
    todo!()
}

/// Split, then classify each statement. An empty string (or only comments/`;`) gives an empty vec.
pub fn classify(_sql: &str, _dialect: Dialect) -> Vec<StatementInfo> {
    todo!()
}

/// Classify exactly one statement's text.
pub fn classify_one(_stmt: &str, _dialect: Dialect) -> StatementInfo {
    todo!()
}
