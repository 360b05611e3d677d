//! Rules and the matcher. STUB: to be implemented.
use warden_core::{Decision, Effect, Principal};

use crate::sql::{SqlKind, StatementInfo};

/// Who a rule applies to: `*`, `agent:NAME`, `user:NAME`, `group:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    Any,
    Id(String),
    Group(String),
}

impl PrincipalPattern {
    pub fn parse(_s: &str) -> Result<PrincipalPattern, String> {
        todo!()
    }
}

/// One compiled `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub principals: Vec<PrincipalPattern>,
    /// Connection names, or `*` for all.
    pub connections: Vec<String>,
    /// SQL kinds this rule covers. `None` = the rule has no `sql` key.
    pub sql: Option<Vec<SqlKind>>,
    /// HTTP patterns `"METHOD /path/glob/**"`. `None` = the rule has no `http` key.
    pub http: Option<Vec<String>>,
    pub effect: Effect,
    /// For `approve`: `group:NAME` / `user:NAME` / `agent:NAME`.
    pub approvers: Vec<String>,
}

/// A classified action, as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub enum ActionClass<'a> {
    Sql(&'a StatementInfo),
    Http { method: &'a str, path: &'a str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    pub id: String,
    pub effect: Effect,
    /// Why it matched, e.g. "principal group:agents, connection orders, kind select".
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    pub matched: Vec<MatchedRule>,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    /// May `p` open a session on `connection` at all (some allow/approve rule names both)?
    pub fn may_connect(&self, _p: &Principal, _connection: &str) -> bool {
        todo!()
    }
    pub fn decide(&self, p: &Principal, connection: &str, action: &ActionClass<'_>) -> Decision {
        self.explain(p, connection, action).decision
    }
    pub fn explain(
        &self,
        _p: &Principal,
        _connection: &str,
        _action: &ActionClass<'_>,
    ) -> Explanation {
        todo!()
    }
}
