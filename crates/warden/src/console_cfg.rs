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

/// Console settings: `[console]`, with `Secure` cookies when the console's public URL
/// (`[approvals] console_url`) is https.
pub fn settings(cfg: &Config) -> warden_admin::ConsoleSettings {
    warden_admin::ConsoleSettings {
        secure_cookies: cfg
            .approvals
            .console_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")),
        ..cfg.console.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn console_section() {
        let cfg = Config::parse("", Path::new("w.toml"), Path::new(".")).unwrap();
        assert!(cfg.console.auditors.is_empty());
        let text = "[approvals]\nconsole_url = \"https://warden.example\"\n\
                    [console]\nauditors = [\"group:audit\", \"user:ann\"]\nsession_idle = \"10m\"\n";
        let cfg = Config::parse(text, Path::new("w.toml"), Path::new(".")).unwrap();
        let s = super::settings(&cfg);
        assert_eq!(s.auditors, ["group:audit", "user:ann"]);
        assert_eq!(s.idle, Duration::from_secs(600));
        assert!(s.secure_cookies);
        let bad = "[console]\nauditors = [\"dba\"]\nsession_lifetime = \"soon\"\n";
        let errs = Config::parse(bad, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["console.auditors[0]", "console.session_lifetime"],
            "{errs:?}"
        );
    }

    #[test]
    fn userinfo_is_removed() {
        use super::without_userinfo as w;
        assert_eq!(w("http://u:p@api.example/x"), "http://api.example/x");
        assert_eq!(w("http://api.example"), "http://api.example");
        assert_eq!(w("127.0.0.1:5432"), "127.0.0.1:5432");
    }
}
