//! Rules and the matcher.
//!
//! Default deny; of several matching rules the most restrictive effect wins
//! (deny > approve > allow). A statement with several kinds (`WITH d AS (DELETE ...)
//! SELECT ...` = {select, delete}) needs every kind covered; the overall effect is the most
//! restrictive over its kinds.
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
    pub fn parse(s: &str) -> Result<PrincipalPattern, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(PrincipalPattern::Any);
        }
        let Some((kind, name)) = s.split_once(':') else {
            return Err(format!(
                "principal pattern `{s}` must be `*`, `agent:NAME`, `user:NAME` or `group:NAME`"
            ));
        };
        if name.is_empty() {
            return Err(format!(
                "principal pattern `{s}`: the name after `{kind}:` is empty"
            ));
        }
        if let Err(e) = warden_core::principal::validate_name(name) {
            return Err(format!("principal pattern `{s}`: {e}"));
        }
        match kind {
            "group" => Ok(PrincipalPattern::Group(name.to_string())),
            "agent" | "user" => Ok(PrincipalPattern::Id(s.to_string())),
            other => Err(format!(
                "principal pattern `{s}`: unknown kind `{other}` (use `agent:`, `user:`, `group:` or `*`)"
            )),
        }
    }

    /// Does this pattern name `p`?
    pub fn matches(&self, p: &Principal) -> bool {
        match self {
            PrincipalPattern::Any => true,
            PrincipalPattern::Id(id) => *id == p.id,
            PrincipalPattern::Group(g) => p.in_group(g),
        }
    }
}

impl std::fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrincipalPattern::Any => f.write_str("*"),
            PrincipalPattern::Id(id) => f.write_str(id),
            PrincipalPattern::Group(g) => write!(f, "group:{g}"),
        }
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
    /// Narrower SQL matching and the purpose requirement.
    pub refine: Refinement,
}

/// Optional narrowing of a rule beyond statement kinds (all must hold when set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refinement {
    /// The statement touches one of these tables (globs, `schema.table` or `table`).
    pub tables: Option<Vec<String>>,
    /// The statement calls one of these functions (globs).
    pub functions: Option<Vec<String>>,
    /// Only UPDATE/DELETE (or TRUNCATE) without a WHERE clause.
    pub without_where: bool,
    /// When this rule would allow or hold the action, a purpose must have been declared;
    /// without one the action is denied.
    pub require_purpose: bool,
}

/// `*` matches any run of characters, `?` one; ASCII case-insensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Match a possibly qualified name against a possibly qualified glob. When one side has
/// no schema, compare the last segments: an unqualified `payments` may be
/// `public.payments`, and deny rules must not be dodged by leaving the schema out.
fn name_match(pattern: &str, name: &str) -> bool {
    let name = name.replace('"', "");
    if glob_match(pattern, &name) {
        return true;
    }
    let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
    match (pattern.contains('.'), name.contains('.')) {
        (true, false) => glob_match(&last(pattern), &name),
        (false, true) => glob_match(pattern, &last(&name)),
        _ => false,
    }
}

impl Refinement {
    pub fn is_empty(&self) -> bool {
        self.tables.is_none() && self.functions.is_none() && !self.without_where
    }
    fn matches(&self, info: &StatementInfo) -> bool {
        if let Some(globs) = &self.tables
            && !info
                .tables
                .iter()
                .any(|t| globs.iter().any(|g| name_match(g, t)))
        {
            return false;
        }
        if let Some(globs) = &self.functions
            && !info
                .functions
                .iter()
                .any(|f| globs.iter().any(|g| name_match(g, f)))
        {
            return false;
        }
        !self.without_where || info.unfiltered_write
    }
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
    pub fn may_connect(&self, p: &Principal, connection: &str) -> bool {
        self.rules.iter().any(|r| {
            matches!(r.effect, Effect::Allow | Effect::Approve)
                && r.principal_match(p).is_some()
                && r.connection_match(connection).is_some()
        })
    }
    pub fn decide(&self, p: &Principal, connection: &str, action: &ActionClass<'_>) -> Decision {
        self.explain_inner(p, connection, action, false).decision
    }
    /// Decide knowing the session's declared purpose (rules with `require_purpose`).
    pub fn decide_with_purpose(
        &self,
        p: &Principal,
        connection: &str,
        action: &ActionClass<'_>,
        purpose: Option<&str>,
    ) -> Decision {
        self.purpose_check(self.explain_inner(p, connection, action, false), purpose)
            .decision
    }
    /// `explain`, then: an allow/approve that rests on a rule with `require_purpose`
    /// becomes a deny when no purpose was declared.
    pub fn explain_with_purpose(
        &self,
        p: &Principal,
        connection: &str,
        action: &ActionClass<'_>,
        purpose: Option<&str>,
    ) -> Explanation {
        self.purpose_check(self.explain(p, connection, action), purpose)
    }

    fn purpose_check(&self, mut ex: Explanation, purpose: Option<&str>) -> Explanation {
        let has_purpose = purpose.is_some_and(|s| !s.trim().is_empty());
        if ex.decision.effect != Effect::Deny && !has_purpose {
            let needs: Vec<String> = ex
                .decision
                .rules
                .iter()
                .filter(|id| {
                    self.rules
                        .iter()
                        .any(|r| &r.id == *id && r.refine.require_purpose)
                })
                .cloned()
                .collect();
            if !needs.is_empty() {
                ex.decision = Decision {
                    effect: Effect::Deny,
                    reason: format!(
                        "{} requires a declared purpose (PGOPTIONS=\"-c warden.purpose=...\", SET warden.purpose = '...', or the Warden-Purpose header)",
                        rules_phrase(&needs)
                    ),
                    rules: needs,
                    approvers: Vec::new(),
                };
            }
        }
        ex
    }
    pub fn explain(
        &self,
        p: &Principal,
        connection: &str,
        action: &ActionClass<'_>,
    ) -> Explanation {
        self.explain_inner(p, connection, action, true)
    }

    /// `with_matches`: also say why each rule matched (`Explanation::matched`). The data
    /// path decides once per statement and never reads it, so it skips building it.
    fn explain_inner(
        &self,
        p: &Principal,
        connection: &str,
        action: &ActionClass<'_>,
        with_matches: bool,
    ) -> Explanation {
        // Rules naming this principal and connection, with what matched.
        let candidates: Vec<Candidate<'_>> = self
            .rules
            .iter()
            .filter_map(|r| Some((r, r.principal_match(p)?, r.connection_match(connection)?)))
            .collect();
        match action {
            ActionClass::Sql(info) => {
                self.explain_sql(p, connection, info, &candidates, with_matches)
            }
            ActionClass::Http { method, path } => {
                explain_http(p, connection, method, path, &candidates, with_matches)
            }
        }
    }

    fn explain_sql(
        &self,
        p: &Principal,
        connection: &str,
        info: &StatementInfo,
        candidates: &[Candidate<'_>],
        with_matches: bool,
    ) -> Explanation {
        // Every rule that covers at least one kind, for the explanation.
        let mut matched = Vec::new();
        for (r, pp, conn) in candidates.iter().filter(|_| with_matches) {
            let kinds: Vec<&str> = info
                .kinds
                .iter()
                .filter(|k| r.covers_statement(info, **k))
                .map(|k| k.as_str())
                .collect();
            if !kinds.is_empty() {
                matched.push(MatchedRule {
                    id: r.id.clone(),
                    effect: r.effect,
                    why: format!(
                        "principal {pp}, connection {conn}, kind {}",
                        kinds.join(", ")
                    ),
                });
            }
        }
        if info.kinds.is_empty() {
            return Explanation {
                decision: Decision {
                    effect: Effect::Allow,
                    rules: Vec::new(),
                    reason: "empty statement".into(),
                    approvers: Vec::new(),
                },
                matched,
            };
        }

        let outcomes: Vec<(SqlKind, Outcome<'_>)> = info
            .kinds
            .iter()
            .map(|&k| {
                let covering: Vec<&Rule> = candidates
                    .iter()
                    .map(|(r, _, _)| *r)
                    .filter(|r| r.covers_statement(info, k))
                    .collect();
                let outcome = match covering.iter().map(|r| r.effect).max() {
                    Some(eff) => Outcome::Rules(
                        eff,
                        covering.into_iter().filter(|r| r.effect == eff).collect(),
                    ),
                    None if matches!(k, SqlKind::Transaction | SqlKind::Set)
                        && self.may_connect(p, connection) =>
                    {
                        Outcome::Session
                    }
                    None => Outcome::DefaultDeny,
                };
                (k, outcome)
            })
            .collect();
        let effect = outcomes
            .iter()
            .map(|(_, o)| o.effect())
            .max()
            .unwrap_or(Effect::Deny);
        let winners: Vec<&(SqlKind, Outcome<'_>)> = outcomes
            .iter()
            .filter(|(_, o)| o.effect() == effect)
            .collect();
        let winning_rules: Vec<&Rule> = winners
            .iter()
            .flat_map(|(_, o)| match o {
                Outcome::Rules(_, rs) => rs.clone(),
                _ => Vec::new(),
            })
            .collect();
        let (rule_ids, approvers) = ids_and_approvers(&winning_rules, effect);
        let default_denied = winners
            .iter()
            .find(|(_, o)| matches!(o, Outcome::DefaultDeny))
            .map(|(k, _)| *k);
        let reason = match effect {
            Effect::Deny => match default_denied {
                Some(SqlKind::Unparsed) => format!(
                    "statement could not be parsed ({}); Warden does not forward statements it cannot classify",
                    info.parse_error.as_deref().unwrap_or("unknown error")
                ),
                Some(k) => format!(
                    "no rule allows `{k}` on connection `{connection}` for {}",
                    p.id
                ),
                None => format!("denied by {}", rules_phrase(&rule_ids)),
            },
            Effect::Approve => approval_reason(&approvers, &rule_ids),
            Effect::Allow if rule_ids.is_empty() => {
                "session control statements are allowed to principals with access to the connection"
                    .to_string()
            }
            Effect::Allow => format!("allowed by {}", rules_phrase(&rule_ids)),
        };
        Explanation {
            decision: Decision {
                effect,
                rules: rule_ids,
                reason,
                approvers,
            },
            matched,
        }
    }
}

/// A rule naming the principal and connection, with the pattern and connection entry that matched.
type Candidate<'r> = (&'r Rule, &'r PrincipalPattern, &'r str);

/// How one SQL kind fared.
enum Outcome<'r> {
    /// Covered by rules; the most restrictive effect and the rules that have it.
    Rules(Effect, Vec<&'r Rule>),
    /// Uncovered session control (`transaction`/`set`) by a principal that may connect.
    Session,
    /// Nothing covers it.
    DefaultDeny,
}

impl Outcome<'_> {
    fn effect(&self) -> Effect {
        match self {
            Outcome::Rules(e, _) => *e,
            Outcome::Session => Effect::Allow,
            Outcome::DefaultDeny => Effect::Deny,
        }
    }
}

fn ids_and_approvers(rules: &[&Rule], effect: Effect) -> (Vec<String>, Vec<String>) {
    let mut ids: Vec<String> = Vec::new();
    let mut approvers: Vec<String> = Vec::new();
    for r in rules {
        if !ids.contains(&r.id) {
            ids.push(r.id.clone());
        }
        if effect == Effect::Approve {
            for a in &r.approvers {
                if !approvers.contains(a) {
                    approvers.push(a.clone());
                }
            }
        }
    }
    (ids, approvers)
}

fn approval_reason(approvers: &[String], ids: &[String]) -> String {
    let who = if approvers.is_empty() {
        "an approver".to_string()
    } else {
        approvers.join(", ")
    };
    format!("requires approval by {who} ({})", rules_phrase(ids))
}

fn rules_phrase(ids: &[String]) -> String {
    match ids {
        [one] => format!("rule {one}"),
        many => format!("rules {}", many.join(", ")),
    }
}

fn explain_http(
    p: &Principal,
    connection: &str,
    method: &str,
    path: &str,
    candidates: &[Candidate<'_>],
    with_matches: bool,
) -> Explanation {
    let mut matched = Vec::new();
    let mut covering: Vec<&Rule> = Vec::new();
    for (r, pp, conn) in candidates {
        let pattern = match &r.http {
            Some(pats) => match pats
                .iter()
                .find(|pat| http_pattern_matches(pat, method, path))
            {
                Some(pat) => Some(pat),
                None => continue,
            },
            None if r.sql.is_none() => None,
            None => continue,
        };
        covering.push(r);
        if with_matches {
            let why = match pattern {
                Some(pat) => format!("principal {pp}, connection {conn}, request {pat}"),
                None => format!("principal {pp}, connection {conn}, any action"),
            };
            matched.push(MatchedRule {
                id: r.id.clone(),
                effect: r.effect,
                why,
            });
        }
    }
    let decision = match covering.iter().map(|r| r.effect).max() {
        None => Decision::deny(format!(
            "no rule allows `{} {}` on connection `{connection}` for {}",
            method.to_ascii_uppercase(),
            strip_query(path),
            p.id
        )),
        Some(effect) => {
            let winners: Vec<&Rule> = covering
                .into_iter()
                .filter(|r| r.effect == effect)
                .collect();
            let (rules, approvers) = ids_and_approvers(&winners, effect);
            let reason = match effect {
                Effect::Allow => format!("allowed by {}", rules_phrase(&rules)),
                Effect::Deny => format!("denied by {}", rules_phrase(&rules)),
                Effect::Approve => approval_reason(&approvers, &rules),
            };
            Decision {
                effect,
                rules,
                reason,
                approvers,
            }
        }
    };
    Explanation { decision, matched }
}

fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Check an `http` pattern (`"METHOD /path/glob"`) for `warden config check`.
pub fn validate_http_pattern(pattern: &str) -> Result<(), String> {
    let Some((m, glob)) = pattern.trim().split_once(' ') else {
        return Err(format!(
            "http pattern `{pattern}` must look like `GET /path/**` (METHOD, space, path)"
        ));
    };
    let m = m.trim();
    if m != "*" && (m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic())) {
        return Err(format!(
            "http pattern `{pattern}`: method `{m}` must be a word like GET, or `*`"
        ));
    }
    if !glob.trim().starts_with('/') {
        return Err(format!(
            "http pattern `{pattern}`: the path must start with `/`"
        ));
    }
    Ok(())
}

/// Does `"METHOD /glob"` match the request? `*` matches within one path segment, `**` any
/// number of segments (including none); the query string is ignored; empty segments are
/// ignored. Paths with dot segments (`.`/`..`), backslashes or percent-encoded `/`, `\` or
/// `.` never match a pattern: the upstream may resolve them to somewhere the glob did not mean.
pub fn http_pattern_matches(pattern: &str, method: &str, path: &str) -> bool {
    let Some((pm, glob)) = pattern.trim().split_once(' ') else {
        return false;
    };
    let pm = pm.trim();
    if pm != "*" && !pm.eq_ignore_ascii_case(method.trim()) {
        return false;
    }
    let path = strip_query(path);
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%2e") {
        return false;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return false;
    }
    let pats: Vec<&str> = glob.trim().split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pats, &segs)
}

/// `pats` against `segs`, `**` spanning any number of segments (dynamic programming,
/// O(pats × segs), no backtracking blow-up).
fn match_segments(pats: &[&str], segs: &[&str]) -> bool {
    let (np, ns) = (pats.len(), segs.len());
    // dp[i][j]: pats[i..] matches segs[j..]
    let mut dp = vec![vec![false; ns + 1]; np + 1];
    dp[np][ns] = true;
    for i in (0..np).rev() {
        for j in (0..=ns).rev() {
            dp[i][j] = if pats[i] == "**" {
                dp[i + 1][j] || (j < ns && dp[i][j + 1])
            } else {
                j < ns && segment_matches(pats[i], segs[j]) && dp[i + 1][j + 1]
            };
        }
    }
    dp[0][0]
}

/// Glob within one segment: `*` matches any run of characters (greedy with one backtrack point).
fn segment_matches(pat: &str, seg: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = seg.chars().collect();
    let (mut pi, mut si) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl Rule {
    /// The first of this rule's principal patterns that names `p`.
    pub fn principal_match(&self, p: &Principal) -> Option<&PrincipalPattern> {
        self.principals.iter().find(|pp| pp.matches(p))
    }
    /// The connection entry (`name` or `*`) that names `connection`.
    pub fn connection_match(&self, connection: &str) -> Option<&str> {
        self.connections
            .iter()
            .find(|c| c.as_str() == connection || c.as_str() == "*")
            .map(String::as_str)
    }
    /// Does this rule speak about SQL kind `k`? A rule without `sql`/`http` keys covers
    /// every action on its connections, except `unparsed`, which must be named.
    pub fn covers_sql(&self, k: SqlKind) -> bool {
        match (&self.sql, &self.http) {
            (Some(kinds), _) => kinds.contains(&k),
            (None, None) => k != SqlKind::Unparsed,
            (None, Some(_)) => false,
        }
    }
    /// `covers_sql` plus the rule's refinements (tables, functions, without WHERE).
    pub fn covers_statement(&self, info: &StatementInfo, k: SqlKind) -> bool {
        self.covers_sql(k) && self.refine.matches(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Dialect, classify_one};
    use proptest::prelude::*;
    use warden_core::{AuthInfo, AuthMethod};

    fn principal(id: &str, groups: &[&str]) -> Principal {
        Principal {
            id: id.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            auth: AuthInfo {
                method: AuthMethod::WardenKey,
                issuer: None,
                subject: None,
            },
            on_behalf_of: None,
        }
    }

    fn rule(
        id: &str,
        principals: &[&str],
        conns: &[&str],
        sql: Option<&[&str]>,
        effect: Effect,
    ) -> Rule {
        Rule {
            id: id.into(),
            principals: principals
                .iter()
                .map(|p| PrincipalPattern::parse(p).unwrap())
                .collect(),
            connections: conns.iter().map(|c| c.to_string()).collect(),
            sql: sql.map(|ks| ks.iter().map(|k| SqlKind::parse(k).unwrap()).collect()),
            http: None,
            effect,
            approvers: if effect == Effect::Approve {
                vec!["group:dba".into()]
            } else {
                vec![]
            },
            refine: Default::default(),
        }
    }

    /// The PRODUCT.md example policy plus a few extra rules.
    fn policy() -> Policy {
        Policy::new(vec![
            rule(
                "agents-read-orders",
                &["group:agents"],
                &["orders"],
                Some(&["select"]),
                Effect::Allow,
            ),
            rule(
                "agent-writes-need-a-dba",
                &["group:agents"],
                &["orders"],
                Some(&["insert", "update", "delete", "ddl"]),
                Effect::Approve,
            ),
            rule(
                "no-ddl",
                &["agent:rogue"],
                &["*"],
                Some(&["ddl", "dcl"]),
                Effect::Deny,
            ),
            rule(
                "admin-all",
                &["user:admin"],
                &["orders"],
                None,
                Effect::Allow,
            ),
            rule(
                "etl-copy",
                &["agent:etl"],
                &["orders"],
                Some(&["copy", "select", "explain"]),
                Effect::Allow,
            ),
            rule(
                "raw",
                &["user:admin"],
                &["orders"],
                Some(&["unparsed"]),
                Effect::Approve,
            ),
            Rule {
                http: Some(vec![
                    "GET /invoices/**".into(),
                    "post /invoices/*/notes".into(),
                ]),
                ..rule(
                    "read-invoices",
                    &["group:agents"],
                    &["billing"],
                    None,
                    Effect::Allow,
                )
            },
        ])
    }

    fn decide_sql(p: &Principal, conn: &str, sql: &str) -> Decision {
        let info = classify_one(sql, Dialect::Postgres);
        policy().decide(p, conn, &ActionClass::Sql(&info))
    }

    #[test]
    fn deciding_without_the_match_list_decides_as_explain_does() {
        // `decide*` skips building `Explanation::matched`; the decision must not change.
        let mut pol = policy();
        pol.rules.push(Rule {
            refine: Refinement {
                require_purpose: true,
                ..Default::default()
            },
            ..rule(
                "etl-copy-with-purpose",
                &["agent:etl"],
                &["orders"],
                Some(&["copy"]),
                Effect::Allow,
            )
        });
        // A case where the purpose decides (else the check below could pass without it).
        let etl = principal("agent:etl", &[]);
        let copy = classify_one("copy orders to stdout", Dialect::Postgres);
        let copy = ActionClass::Sql(&copy);
        assert_eq!(
            pol.decide_with_purpose(&etl, "orders", &copy, None).effect,
            Effect::Deny
        );
        assert_eq!(
            pol.decide_with_purpose(&etl, "orders", &copy, Some("nightly export"))
                .effect,
            Effect::Allow
        );
        let same = |a: Decision, b: Decision, what: &str| {
            assert_eq!(
                (a.effect, a.rules, a.reason, a.approvers),
                (b.effect, b.rules, b.reason, b.approvers),
                "{what}"
            );
        };
        let principals = [
            principal("agent:bot", &["agents"]),
            principal("agent:etl", &[]),
            principal("user:admin", &["dba"]),
            principal("agent:nobody", &[]),
        ];
        let statements = [
            "select * from orders",
            "update orders set x = 1",
            "delete from orders where id = 1",
            "create table t (a int)",
            "copy orders to stdout",
            "select 1; drop table orders",
            "DO $$ BEGIN END $$",
            "",
        ];
        let requests = [
            ("GET", "/invoices/7"),
            ("POST", "/invoices/7/notes"),
            ("DELETE", "/x"),
        ];
        let both_ways = |p: &Principal, conn: &str, purpose: Option<&str>, a: &ActionClass<'_>| {
            let what = format!("{} {conn} {purpose:?} {a:?}", p.id);
            same(
                pol.decide(p, conn, a),
                pol.explain(p, conn, a).decision,
                &what,
            );
            same(
                pol.decide_with_purpose(p, conn, a, purpose),
                pol.explain_with_purpose(p, conn, a, purpose).decision,
                &what,
            );
        };
        for p in &principals {
            for conn in ["orders", "billing", "other"] {
                for purpose in [None, Some("ticket 42"), Some("  ")] {
                    for sql in statements {
                        let info = classify_one(sql, Dialect::Postgres);
                        both_ways(p, conn, purpose, &ActionClass::Sql(&info));
                    }
                    for (method, path) in requests {
                        both_ways(p, conn, purpose, &ActionClass::Http { method, path });
                    }
                }
            }
        }
        // And the explanation still lists why each rule matched.
        let info = classify_one("select * from orders", Dialect::Postgres);
        let ex = pol.explain(&principals[0], "orders", &ActionClass::Sql(&info));
        assert!(!ex.matched.is_empty());
    }

    #[test]
    fn principal_patterns() {
        assert_eq!(PrincipalPattern::parse("*"), Ok(PrincipalPattern::Any));
        assert_eq!(
            PrincipalPattern::parse("group:dba"),
            Ok(PrincipalPattern::Group("dba".into()))
        );
        assert_eq!(
            PrincipalPattern::parse("agent:x"),
            Ok(PrincipalPattern::Id("agent:x".into()))
        );
        assert_eq!(
            PrincipalPattern::parse("user:alice@corp"),
            Ok(PrincipalPattern::Id("user:alice@corp".into()))
        );
        for bad in ["", "dba", "team:x", "group:", "agent:a b", "**"] {
            let e = PrincipalPattern::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn decision_table() {
        let agent = principal("agent:bot", &["agents"]);
        let rogue = principal("agent:rogue", &["agents"]);
        let admin = principal("user:admin", &[]);
        let etl = principal("agent:etl", &[]);
        let nobody = principal("agent:nobody", &["other"]);
        use Effect::*;
        // (principal, connection, sql, effect, rule ids, reason fragment)
        type Row<'a> = (
            &'a Principal,
            &'a str,
            &'a str,
            Effect,
            &'a [&'a str],
            &'a str,
        );
        let rows: Vec<Row<'_>> = vec![
            (
                &agent,
                "orders",
                "SELECT * FROM orders",
                Allow,
                &["agents-read-orders"],
                "allowed by rule agents-read-orders",
            ),
            (
                &agent,
                "orders",
                "select 1",
                Allow,
                &["agents-read-orders"],
                "allowed by rule",
            ),
            (
                &agent,
                "orders",
                "DELETE FROM orders WHERE id = 1",
                Approve,
                &["agent-writes-need-a-dba"],
                "requires approval by group:dba (rule agent-writes-need-a-dba)",
            ),
            (
                &agent,
                "orders",
                "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
                Approve,
                &["agent-writes-need-a-dba"],
                "approval",
            ),
            (
                &agent,
                "orders",
                "EXPLAIN ANALYZE DELETE FROM orders",
                Deny,
                &[],
                "no rule allows `explain`",
            ),
            (
                &etl,
                "orders",
                "EXPLAIN ANALYZE DELETE FROM orders",
                Deny,
                &[],
                "no rule allows `delete`",
            ),
            (
                &etl,
                "orders",
                "EXPLAIN DELETE FROM orders",
                Allow,
                &["etl-copy"],
                "allowed by rule etl-copy",
            ),
            (
                &etl,
                "orders",
                "COPY orders FROM STDIN",
                Allow,
                &["etl-copy"],
                "allowed",
            ),
            (
                &agent,
                "orders",
                "COPY orders FROM STDIN",
                Deny,
                &[],
                "no rule allows `copy` on connection `orders` for agent:bot",
            ),
            (
                &etl,
                "orders",
                "COPY (DELETE FROM orders RETURNING *) TO STDOUT",
                Deny,
                &[],
                "`delete`",
            ),
            (
                &agent,
                "orders",
                "SET warden.purpose = 'ticket 1'",
                Allow,
                &[],
                "session control statements are allowed",
            ),
            (&agent, "orders", "BEGIN", Allow, &[], "session control"),
            (&agent, "orders", "COMMIT", Allow, &[], "session control"),
            (
                &agent,
                "orders",
                "SET ROLE postgres",
                Deny,
                &[],
                "no rule allows `dcl`",
            ),
            (
                &nobody,
                "orders",
                "BEGIN",
                Deny,
                &[],
                "no rule allows `transaction`",
            ),
            (&nobody, "orders", "SELECT 1", Deny, &[], "for agent:nobody"),
            (
                &agent,
                "billing",
                "SELECT 1",
                Deny,
                &[],
                "connection `billing`",
            ),
            (
                &agent,
                "orders",
                "DO $$ BEGIN DELETE FROM orders; END $$",
                Deny,
                &[],
                "could not be parsed",
            ),
            (
                &admin,
                "orders",
                "DO $$ BEGIN NULL; END $$",
                Approve,
                &["raw"],
                "requires approval",
            ),
            (
                &admin,
                "orders",
                "DROP TABLE orders",
                Allow,
                &["admin-all"],
                "allowed by rule admin-all",
            ),
            (
                &rogue,
                "orders",
                "SELECT 1",
                Allow,
                &["agents-read-orders"],
                "allowed",
            ),
            (
                &rogue,
                "orders",
                "CREATE TABLE x AS SELECT * FROM orders",
                Deny,
                &["no-ddl"],
                "denied by rule no-ddl",
            ),
            (
                &rogue,
                "orders",
                "SELECT * INTO x FROM orders",
                Deny,
                &["no-ddl"],
                "denied by rule no-ddl",
            ),
            (
                &rogue,
                "orders",
                "GRANT ALL ON orders TO public",
                Deny,
                &["no-ddl"],
                "denied by rule no-ddl",
            ),
            (
                &agent,
                "orders",
                "INSERT INTO orders SELECT * FROM orders",
                Approve,
                &["agent-writes-need-a-dba"],
                "approval",
            ),
            (
                &agent,
                "orders",
                "TRUNCATE orders",
                Approve,
                &["agent-writes-need-a-dba"],
                "approval",
            ),
            (
                &agent,
                "orders",
                "MERGE INTO orders o USING s ON o.id = s.id WHEN MATCHED THEN DELETE",
                Deny,
                &[],
                "`merge`",
            ),
            (&agent, "orders", "CALL refresh()", Deny, &[], "`call`"),
            (&agent, "orders", "LISTEN ch", Deny, &[], "`other`"),
            (&agent, "orders", "", Allow, &[], "empty statement"),
            (
                &agent,
                "orders",
                "-- just a comment",
                Allow,
                &[],
                "empty statement",
            ),
            (
                &agent,
                "orders",
                "SELECT 1; DROP TABLE orders",
                Approve,
                &["agent-writes-need-a-dba"],
                "approval",
            ),
            (
                &agent,
                "orders",
                "SELECT 1; GRANT ALL ON orders TO public",
                Deny,
                &[],
                "`dcl`",
            ),
            (
                &agent,
                "orders",
                "DECLARE \"c\" CURSOR WITHOUT HOLD FOR SELECT * FROM orders",
                Allow,
                &["agents-read-orders"],
                "allowed",
            ),
            (
                &agent,
                "orders",
                "FETCH FORWARD 10 FROM \"c\"",
                Allow,
                &["agents-read-orders"],
                "allowed",
            ),
            (
                &agent,
                "orders",
                "PREPARE p AS DELETE FROM orders",
                Approve,
                &["agent-writes-need-a-dba"],
                "approval",
            ),
            (
                &agent,
                "orders",
                "SELECT pg_sleep(10)",
                Allow,
                &["agents-read-orders"],
                "allowed",
            ),
        ];
        assert!(rows.len() >= 25);
        for (p, conn, sql, effect, ids, reason) in rows {
            let d = decide_sql(p, conn, sql);
            assert_eq!(d.effect, effect, "{sql} for {}: {d:?}", p.id);
            assert_eq!(
                d.rules,
                ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{sql}: {d:?}"
            );
            assert!(
                d.reason.contains(reason),
                "{sql}: reason {:?} lacks {reason:?}",
                d.reason
            );
            if effect == Approve {
                assert_eq!(d.approvers, vec!["group:dba".to_string()], "{sql}");
            } else {
                assert!(d.approvers.is_empty(), "{sql}");
            }
        }
    }

    #[test]
    fn unparsed_reason_names_the_error() {
        let d = decide_sql(
            &principal("agent:bot", &["agents"]),
            "orders",
            "DO $$ BEGIN END $$",
        );
        assert_eq!(d.effect, Effect::Deny);
        assert!(
            d.reason.starts_with("statement could not be parsed ("),
            "{}",
            d.reason
        );
        assert!(
            d.reason
                .ends_with("Warden does not forward statements it cannot classify")
        );
    }

    #[test]
    fn deny_rule_beats_allow_and_approve() {
        let p = principal("agent:x", &["a", "b"]);
        let pol = Policy::new(vec![
            rule(
                "allow",
                &["group:a"],
                &["db"],
                Some(&["select", "delete"]),
                Effect::Allow,
            ),
            rule(
                "approve",
                &["group:b"],
                &["db"],
                Some(&["delete"]),
                Effect::Approve,
            ),
            rule(
                "deny",
                &["agent:x"],
                &["*"],
                Some(&["delete"]),
                Effect::Deny,
            ),
        ]);
        let info = classify_one("DELETE FROM t WHERE a IN (SELECT 1)", Dialect::Postgres);
        let e = pol.explain(&p, "db", &ActionClass::Sql(&info));
        assert_eq!(e.decision.effect, Effect::Deny);
        assert_eq!(e.decision.rules, vec!["deny".to_string()]);
        assert_eq!(e.decision.reason, "denied by rule deny");
        assert_eq!(e.matched.len(), 3);
        assert_eq!(
            e.matched[0].why,
            "principal group:a, connection db, kind select, delete"
        );
        assert_eq!(
            e.matched[2].why,
            "principal agent:x, connection *, kind delete"
        );
        // Without the deny rule: approve wins over allow.
        let pol = Policy::new(pol.rules()[..2].to_vec());
        let d = pol.decide(&p, "db", &ActionClass::Sql(&info));
        assert_eq!(d.effect, Effect::Approve);
        assert_eq!(d.rules, vec!["approve".to_string()]);
    }

    #[test]
    fn explicit_session_rules_override_the_default() {
        let p = principal("agent:x", &[]);
        let pol = Policy::new(vec![
            rule(
                "read",
                &["agent:x"],
                &["db"],
                Some(&["select"]),
                Effect::Allow,
            ),
            rule("no-set", &["*"], &["db"], Some(&["set"]), Effect::Deny),
        ]);
        let set = classify_one("SET search_path = evil", Dialect::Postgres);
        assert_eq!(
            pol.decide(&p, "db", &ActionClass::Sql(&set)).effect,
            Effect::Deny
        );
        let begin = classify_one("BEGIN", Dialect::Postgres);
        assert_eq!(
            pol.decide(&p, "db", &ActionClass::Sql(&begin)).effect,
            Effect::Allow
        );
        // A deny-only policy gives no access to the connection, so no session control either.
        let pol = Policy::new(vec![rule(
            "deny",
            &["*"],
            &["db"],
            Some(&["select"]),
            Effect::Deny,
        )]);
        assert!(!pol.may_connect(&p, "db"));
        assert_eq!(
            pol.decide(&p, "db", &ActionClass::Sql(&begin)).effect,
            Effect::Deny
        );
    }

    #[test]
    fn may_connect() {
        let pol = policy();
        assert!(pol.may_connect(&principal("agent:a", &["agents"]), "orders"));
        assert!(pol.may_connect(&principal("agent:a", &["agents"]), "billing"));
        assert!(!pol.may_connect(&principal("agent:a", &["agents"]), "payroll"));
        assert!(!pol.may_connect(&principal("agent:a", &["nope"]), "orders"));
        assert!(
            !pol.may_connect(&principal("agent:rogue", &[]), "orders"),
            "deny rules grant nothing"
        );
        assert!(!Policy::default().may_connect(&principal("agent:a", &[]), "orders"));
    }

    #[test]
    fn http_rules() {
        let pol = policy();
        let a = principal("agent:a", &["agents"]);
        let http = |m: &'static str, path: &'static str| ActionClass::Http { method: m, path };
        let cases: &[(&str, &str, &str, Effect)] = &[
            ("billing", "GET", "/invoices", Effect::Allow),
            ("billing", "get", "/invoices/42", Effect::Allow),
            ("billing", "GET", "/invoices/42/lines?x=1", Effect::Allow),
            ("billing", "GET", "/invoices/", Effect::Allow),
            ("billing", "POST", "/invoices/42/notes", Effect::Allow),
            ("billing", "POST", "/invoices/42/lines", Effect::Deny),
            ("billing", "POST", "/invoices/42/x/notes", Effect::Deny),
            ("billing", "DELETE", "/invoices/42", Effect::Deny),
            ("billing", "GET", "/customers", Effect::Deny),
            ("billing", "GET", "/invoices/../admin", Effect::Deny),
            ("billing", "GET", "/invoices/%2e%2e/admin", Effect::Deny),
            ("billing", "GET", "/invoicesX", Effect::Deny),
            ("orders", "GET", "/invoices/1", Effect::Deny),
        ];
        for (conn, m, path, eff) in cases {
            let d = pol.decide(&a, conn, &http(m, path));
            assert_eq!(d.effect, *eff, "{m} {path} on {conn}: {d:?}");
            if *eff == Effect::Deny {
                assert!(d.reason.starts_with("no rule allows"), "{}", d.reason);
            } else {
                assert_eq!(d.reason, "allowed by rule read-invoices");
            }
        }
        // A rule without sql/http keys covers HTTP too; a sql-only rule does not.
        let admin = principal("user:admin", &[]);
        assert_eq!(
            pol.decide(&admin, "orders", &http("PUT", "/x")).effect,
            Effect::Allow
        );
        let etl = principal("agent:etl", &[]);
        assert_eq!(
            pol.decide(&etl, "orders", &http("GET", "/x")).effect,
            Effect::Deny
        );
    }

    #[test]
    fn http_globs() {
        assert!(http_pattern_matches("* /**", "PATCH", "/"));
        assert!(http_pattern_matches("GET /a/*/c", "GET", "/a/b/c"));
        assert!(http_pattern_matches("GET /a/**/c", "GET", "/a/c"));
        assert!(http_pattern_matches("GET /a/**/c", "GET", "/a/x/y/c"));
        assert!(http_pattern_matches("GET /a/v*.json", "GET", "/a/v1.json"));
        assert!(!http_pattern_matches("GET /a/*", "GET", "/a/b/c"));
        assert!(!http_pattern_matches("GET /a/*", "GET", "/a"));
        assert!(!http_pattern_matches("GET/a", "GET", "/a"));
        assert!(validate_http_pattern("GET /invoices/**").is_ok());
        assert!(validate_http_pattern("GET invoices").is_err());
        assert!(validate_http_pattern("/invoices").is_err());
    }

    fn arb_kind() -> impl Strategy<Value = SqlKind> {
        proptest::sample::select(SqlKind::ALL.to_vec())
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,6}"
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            arb_name(),
            proptest::collection::vec(
                prop_oneof![
                    arb_name().prop_map(|n| format!("agent:{n}")),
                    arb_name().prop_map(|n| format!("user:{n}")),
                    arb_name().prop_map(|n| format!("group:{n}")),
                ],
                1..3,
            ),
            proptest::collection::vec(prop_oneof![arb_name(), Just("*".to_string())], 1..3),
            proptest::option::of(proptest::collection::vec(arb_kind(), 0..5)),
            proptest::sample::select(vec![Effect::Allow, Effect::Approve, Effect::Deny]),
        )
            .prop_map(|(id, ps, cs, sql, effect)| Rule {
                id,
                principals: ps
                    .iter()
                    .map(|p| PrincipalPattern::parse(p).unwrap())
                    .collect(),
                connections: cs,
                sql,
                http: None,
                effect,
                approvers: vec!["group:dba".into()],
                refine: Default::default(),
            })
    }

    proptest! {
        #[test]
        fn empty_policy_denies(
            name in arb_name(),
            groups in proptest::collection::vec(arb_name(), 0..3),
            conn in arb_name(),
            kinds in proptest::collection::btree_set(arb_kind(), 1..5),
        ) {
            let p = principal(&format!("agent:{name}"), &groups.iter().map(String::as_str).collect::<Vec<_>>());
            let info = StatementInfo { kinds, ..Default::default() };
            let d = Policy::default().decide(&p, &conn, &ActionClass::Sql(&info));
            prop_assert_eq!(d.effect, Effect::Deny);
            prop_assert!(d.rules.is_empty());
            let d = Policy::default().decide(&p, &conn, &ActionClass::Http { method: "GET", path: "/" });
            prop_assert_eq!(d.effect, Effect::Deny);
        }

        #[test]
        fn rules_for_someone_else_deny(
            name in arb_name(),
            conn in arb_name(),
            kinds in proptest::collection::btree_set(arb_kind(), 0..5),
            rules in proptest::collection::vec(arb_rule(), 0..6),
        ) {
            // The principal's id and group use a prefix no generated rule names.
            let p = principal(&format!("agent:zz-{name}"), &["zz-group"]);
            let empty = kinds.is_empty();
            let info = StatementInfo { kinds, ..Default::default() };
            let pol = Policy::new(rules);
            let d = pol.decide(&p, &conn, &ActionClass::Sql(&info));
            if empty {
                prop_assert_eq!(d.effect, Effect::Allow);
                prop_assert_eq!(d.reason, "empty statement");
            } else {
                prop_assert_eq!(d.effect, Effect::Deny);
                prop_assert!(d.rules.is_empty());
            }
            prop_assert!(!pol.may_connect(&p, &conn));
        }

        #[test]
        fn effect_is_the_max_over_kinds(
            rules in proptest::collection::vec(arb_rule(), 0..6),
            kinds in proptest::collection::btree_set(arb_kind(), 1..5),
        ) {
            // Everyone matches via `*` principals: rebuild rules to name the principal.
            let p = principal("agent:me", &[]);
            let rules: Vec<Rule> = rules.into_iter().map(|mut r| {
                r.principals = vec![PrincipalPattern::Any];
                r.connections = vec!["db".into()];
                r
            }).collect();
            let pol = Policy::new(rules);
            let whole = pol.decide(&p, "db", &ActionClass::Sql(&StatementInfo { kinds: kinds.clone(), ..Default::default() }));
            let per_kind = kinds.iter().map(|k| {
                let one = StatementInfo { kinds: [*k].into(), ..Default::default() };
                pol.decide(&p, "db", &ActionClass::Sql(&one)).effect
            }).max().unwrap();
            prop_assert_eq!(whole.effect, per_kind);
        }
    }

    fn refined(id: &str, sql: &[&str], effect: Effect, refine: Refinement) -> Rule {
        let mut r = rule(id, &["group:agents"], &["orders"], Some(sql), effect);
        r.refine = refine;
        r
    }

    #[test]
    fn refinements_tables_functions_without_where_and_purpose() {
        let p = principal("agent:x", &["agents"]);
        let policy = Policy::new(vec![
            refined("read", &["select"], Effect::Allow, Refinement::default()),
            refined(
                "no-payments",
                &["select"],
                Effect::Deny,
                Refinement {
                    tables: Some(vec!["billing.payments".into()]),
                    ..Default::default()
                },
            ),
            refined(
                "no-kill",
                &["select"],
                Effect::Deny,
                Refinement {
                    functions: Some(vec!["pg_terminate_backend".into()]),
                    ..Default::default()
                },
            ),
            refined(
                "writes",
                &["update", "delete"],
                Effect::Allow,
                Refinement::default(),
            ),
            refined(
                "bulk-writes-need-a-human",
                &["update", "delete"],
                Effect::Approve,
                Refinement {
                    without_where: true,
                    ..Default::default()
                },
            ),
            refined(
                "ddl-with-purpose",
                &["ddl"],
                Effect::Allow,
                Refinement {
                    require_purpose: true,
                    ..Default::default()
                },
            ),
        ]);
        let d = |sql: &str, purpose: Option<&str>| {
            let info = classify_one(sql, Dialect::Postgres);
            policy.decide_with_purpose(&p, "orders", &ActionClass::Sql(&info), purpose)
        };
        assert_eq!(d("select * from orders", None).effect, Effect::Allow);
        // unqualified name of a denied qualified table: denied (fail closed)
        assert_eq!(d("select * from payments", None).effect, Effect::Deny);
        assert_eq!(
            d("select * from billing.payments", None).rules,
            vec!["no-payments".to_string()]
        );
        assert_eq!(
            d("select pg_terminate_backend(42)", None).effect,
            Effect::Deny
        );
        assert_eq!(
            d("update orders set x = 1 where id = 2", None).effect,
            Effect::Allow
        );
        let bulk = d("update orders set x = 1", None);
        assert_eq!(bulk.effect, Effect::Approve);
        assert_eq!(bulk.rules, vec!["bulk-writes-need-a-human".to_string()]);
        assert_eq!(d("delete from orders", None).effect, Effect::Approve);
        let no_purpose = d("create table t (id int)", None);
        assert_eq!(no_purpose.effect, Effect::Deny);
        assert!(
            no_purpose.reason.contains("purpose"),
            "{}",
            no_purpose.reason
        );
        assert_eq!(
            d("create table t (id int)", Some("ticket-42")).effect,
            Effect::Allow
        );
        assert_eq!(
            d("create table t (id int)", Some("  ")).effect,
            Effect::Deny
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("public.*", "public.orders"));
        assert!(glob_match("*secret*", "top_SECRET_table"));
        assert!(!glob_match("orders", "orders2"));
        assert!(name_match("billing.payments", "payments"));
        assert!(name_match("payments", "billing.payments"));
        assert!(!name_match("billing.payments", "other.payments"));
        assert!(name_match(
            "pg_terminate_backend",
            "pg_catalog.pg_terminate_backend"
        ));
    }
}
