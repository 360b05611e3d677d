//! What `serve` hands the admin listener for the web console: the read-only overview of
//! connections and rules (never credentials), and the console settings.
use serde_json::{Value, json};

use crate::config::Config;

/// `upstream` without any `user:password@` part.
fn without_userinfo(upstream: &str) -> String {
    match upstream.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => upstream
            .rsplit_once('@')
            .map_or(upstream, |(_, h)| h)
            .to_string(),
    }
}

/// `{"connections": [...], "rules": [...]}` for `GET /api/v1/overview`.
pub fn overview(cfg: &Config) -> Value {
    let connections: Vec<Value> = cfg
        .connections
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "protocol": c.protocol.as_str(),
                "upstream": without_userinfo(&c.upstream),
                "database": c.database,
                "description": c.description,
            })
        })
        .collect();
    let rules: Vec<Value> = cfg
        .rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "effect": r.effect.as_str(),
                "principals": r.principals.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "connections": r.connections,
                "sql": r.sql.as_ref().map(|k| k.iter().map(|k| k.as_str()).collect::<Vec<_>>()),
                "http": r.http,
                "approvers": r.approvers,
            })
        })
        .collect();
    json!({ "connections": connections, "rules": rules })
}

/// Console settings: `Secure` cookies when the console's public URL
/// (`[approvals] console_url`) is https.
pub fn settings(cfg: &Config) -> warden_admin::ConsoleSettings {
    warden_admin::ConsoleSettings {
        secure_cookies: cfg
            .approvals
            .console_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn userinfo_is_removed() {
        use super::without_userinfo as w;
        assert_eq!(w("http://u:p@api.example/x"), "http://api.example/x");
        assert_eq!(w("http://api.example"), "http://api.example");
        assert_eq!(w("127.0.0.1:5432"), "127.0.0.1:5432");
    }
}
