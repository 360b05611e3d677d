//! Load-time lint: rules that can never decide anything because an earlier or more
//! restrictive rule always wins over them ("shadowed"), and exact duplicates.
use crate::rules::{PrincipalPattern, Rule};
use crate::sql::SqlKind;

/// `shadowed` can never change a decision because `by` covers every action it covers and
/// is at least as restrictive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub shadowed: String,
    pub by: String,
    pub why: String,
}

fn principals_cover(by: &Rule, r: &Rule) -> bool {
    by.principals.contains(&PrincipalPattern::Any)
        || r.principals.iter().all(|p| by.principals.contains(p))
}

fn connections_cover(by: &Rule, r: &Rule) -> bool {
    by.connections.iter().any(|c| c == "*")
        || (!r.connections.iter().any(|c| c == "*")
            && r.connections.iter().all(|c| by.connections.contains(c)))
}

fn actions_cover(by: &Rule, r: &Rule) -> bool {
    // A refined rule (tables / functions / without WHERE) covers only part of its kinds:
    // it shadows another rule only when that rule is refined the same way.
    if !by.refine.is_empty()
        && (by.refine.tables != r.refine.tables
            || by.refine.functions != r.refine.functions
            || by.refine.without_where != r.refine.without_where)
    {
        return false;
    }
    let by_all = by.sql.is_none() && by.http.is_none();
    match (&r.sql, &r.http) {
        (None, None) => by_all,
        (sql, http) => {
            let sql_ok = match sql {
                None => true,
                Some(kinds) => {
                    // A rule without sql/http keys covers every parsed kind, never `unparsed`.
                    (by_all && !kinds.contains(&SqlKind::Unparsed))
                        || by
                            .sql
                            .as_ref()
                            .is_some_and(|b| kinds.iter().all(|k| b.contains(k)))
                }
            };
            let http_ok = match http {
                None => true,
                Some(pats) => {
                    by_all
                        || by.http.as_ref().is_some_and(|b| {
                            pats.iter()
                                .all(|p| b.contains(p) || b.iter().any(|x| x == "* /**"))
                        })
                }
            };
            sql_ok && http_ok
        }
    }
}

/// Find rules that never matter. `rules` in config order.
pub fn shadowed_rules(rules: &[Rule]) -> Vec<Shadowed> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        for (j, by) in rules.iter().enumerate() {
            if i == j
                || !(principals_cover(by, r) && connections_cover(by, r) && actions_cover(by, r))
            {
                continue;
            }
            let stricter = by.effect > r.effect;
            let duplicate = by.effect == r.effect && j < i;
            if stricter || duplicate {
                let why = if stricter {
                    format!(
                        "`{}` ({}) covers every action `{}` ({}) covers, and the most restrictive effect wins",
                        by.id, by.effect, r.id, r.effect
                    )
                } else {
                    format!(
                        "`{}` already covers every action of `{}` with the same effect",
                        by.id, r.id
                    )
                };
                out.push(Shadowed {
                    shadowed: r.id.clone(),
                    by: by.id.clone(),
                    why,
                });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::Effect;

    fn rule(
        id: &str,
        principals: &[&str],
        conns: &[&str],
        sql: Option<&[SqlKind]>,
        effect: Effect,
    ) -> Rule {
        Rule {
            id: id.into(),
            principals: principals
                .iter()
                .map(|p| PrincipalPattern::parse(p).unwrap())
                .collect(),
            connections: conns.iter().map(|c| c.to_string()).collect(),
            sql: sql.map(|k| k.to_vec()),
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

    #[test]
    fn deny_everything_shadows_narrower_allow() {
        let rules = vec![
            rule(
                "read",
                &["group:agents"],
                &["orders"],
                Some(&[SqlKind::Select]),
                Effect::Allow,
            ),
            rule("lockdown", &["*"], &["*"], None, Effect::Deny),
        ];
        let s = shadowed_rules(&rules);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].shadowed.as_str(), s[0].by.as_str()),
            ("read", "lockdown")
        );
    }

    #[test]
    fn partial_overlap_is_not_shadowing() {
        let rules = vec![
            rule(
                "read-write",
                &["group:agents"],
                &["orders"],
                Some(&[SqlKind::Select, SqlKind::Delete]),
                Effect::Allow,
            ),
            rule(
                "no-delete",
                &["*"],
                &["orders"],
                Some(&[SqlKind::Delete]),
                Effect::Deny,
            ),
            rule(
                "approve-other-conn",
                &["group:agents"],
                &["billing"],
                Some(&[SqlKind::Update]),
                Effect::Approve,
            ),
            rule(
                "deny-orders-update",
                &["group:agents"],
                &["orders"],
                Some(&[SqlKind::Update]),
                Effect::Deny,
            ),
        ];
        assert!(
            shadowed_rules(&rules).is_empty(),
            "{:?}",
            shadowed_rules(&rules)
        );
    }

    #[test]
    fn exact_duplicate_reported_once() {
        let rules = vec![
            rule(
                "a",
                &["group:agents"],
                &["orders"],
                Some(&[SqlKind::Select]),
                Effect::Allow,
            ),
            rule(
                "b",
                &["group:agents"],
                &["orders"],
                Some(&[SqlKind::Select]),
                Effect::Allow,
            ),
        ];
        let s = shadowed_rules(&rules);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].shadowed.as_str(), s[0].by.as_str()), ("b", "a"));
    }

    #[test]
    fn unparsed_is_not_covered_by_a_catch_all() {
        let rules = vec![
            rule(
                "allow-unparsed",
                &["group:dba"],
                &["orders"],
                Some(&[SqlKind::Unparsed]),
                Effect::Allow,
            ),
            rule("approve-all", &["*"], &["*"], None, Effect::Approve),
        ];
        assert!(shadowed_rules(&rules).is_empty());
    }
}
