//! Policy: what a principal may do on a connection.
//!
//! - [`sql`]: splits a query string into statements and classifies each with a real SQL
//!   parser (sqlparser), walking nested statements (data-modifying CTEs, EXPLAIN ANALYZE,
//!   COPY (query) TO, ...). Unparseable text gets the kind [`SqlKind::Unparsed`].
//! - [`rules`]: `[[rules]]` compiled into a matcher; default deny; most restrictive wins.
#![forbid(unsafe_code)]

pub mod rules;
pub mod shadow;
pub mod shape;
pub mod sql;

pub use rules::{
    ActionClass, Explanation, MatchedRule, Policy, PrincipalPattern, Refinement, Rule, glob_match,
    http_pattern_matches, validate_http_pattern,
};
pub use shadow::{Shadowed, shadowed_rules};
pub use shape::{Shape, literal_shape};
pub use sql::{
    Dialect, SqlKind, StatementInfo, classify, classify_one, split_statements,
    split_statements_dialect,
};
