//! The TOML config (PRODUCT.md "Config"): parsing, `${ENV}` expansion, validation.
//!
//! Every mistake is collected (not just the first) and reported with its key path and
//! line, so `warden config check` can be used as a CI gate for a policy repository.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use warden_core::Effect;
use warden_pipeline::{ConnectionSpec, Protocol, UpstreamTls};
use warden_policy::{PrincipalPattern, Rule, SqlKind};

pub const DEFAULT_POSTGRES_LISTEN: &str = "127.0.0.1:15432";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

type S = Spanned<String>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    listeners: RawListeners,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    connections: Vec<RawConnection>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    masking: Vec<crate::masking_cfg::RawMasking>,
    #[serde(default)]
    detectors: Vec<crate::masking_cfg::RawDetector>,
    #[serde(default)]
    evidence: crate::masking_cfg::RawEvidence,
    #[serde(default)]
    approvals: Option<RawApprovals>,
    #[serde(default)]
    mcp: Option<RawMcp>,
    #[serde(default)]
    console: Option<RawConsole>,
}

/// `[console]`: the web console on the admin listener (docs/console.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    /// Who may read evidence in the console and the admin API.
    #[serde(default)]
    auditors: Vec<S>,
    session_idle: Option<S>,
    session_lifetime: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    data_dir: Option<S>,
    store: Option<S>,
    durability: Option<S>,
    checkpoint_interval: Option<S>,
    signing_key: Option<S>,
    /// Seal and remove evidence older than this (`"365d"`); absent: keep everything.
    retention: Option<S>,
    retention_dir: Option<S>,
    /// Key for the `hash` masking operator (HMAC-SHA-256); keep it in the environment.
    masking_key: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListeners {
    postgres: Option<S>,
    mysql: Option<S>,
    http: Option<S>,
    admin: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: S,
    key_file: S,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    oidc: Option<RawOidc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: S,
    audience: S,
    jwks_url: Option<S>,
    jwks_file: Option<S>,
    groups_claim: Option<S>,
    algorithms: Option<Vec<S>>,
    client_id: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    name: S,
    protocol: S,
    upstream: S,
    database: Option<S>,
    user: Option<S>,
    password: Option<S>,
    tls: Option<S>,
    ca_file: Option<S>,
    server_name: Option<S>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, S>,
    description: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: S,
    #[serde(default)]
    principals: Vec<S>,
    #[serde(default)]
    connections: Vec<S>,
    sql: Option<Vec<S>>,
    http: Option<Vec<S>>,
    effect: S,
    #[serde(default)]
    approvers: Vec<S>,
    min_approvals: Option<Spanned<u32>>,
    grant: Option<S>,
    require_purpose: Option<bool>,
    /// Only statements touching one of these tables (globs).
    tables: Option<Vec<S>>,
    /// Only statements calling one of these functions (globs).
    functions: Option<Vec<S>>,
    /// Only UPDATE/DELETE without WHERE.
    without_where: Option<bool>,
    description: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    timeout: Option<S>,
    #[serde(default)]
    webhooks: Vec<S>,
    webhook_secret: Option<S>,
    slack_webhook: Option<S>,
    console_url: Option<S>,
}

/// `[mcp]`: the MCP server at `/mcp` on the HTTP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    enabled: Option<bool>,
    max_rows: Option<Spanned<i64>>,
    approval_wait: Option<S>,
    call_timeout: Option<S>,
    session_idle: Option<S>,
}

/// `[mcp]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSettings {
    /// Most rows a `query` returns (default 200).
    pub max_rows: usize,
    /// How long a held call waits before answering "pending" (default 0s: at once).
    pub approval_wait: std::time::Duration,
    /// Time allowed for one statement / HTTP request on the target (default 60s).
    pub call_timeout: std::time::Duration,
    /// An MCP session ends after this long without requests (default 30m).
    pub session_idle: std::time::Duration,
}

impl Default for McpSettings {
    fn default() -> Self {
        McpSettings {
            max_rows: 200,
            approval_wait: std::time::Duration::ZERO,
            call_timeout: std::time::Duration::from_secs(60),
            session_idle: std::time::Duration::from_secs(1800),
        }
    }
}

/// One mistake in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

/// Durability of acknowledged evidence.
pub use warden_store::Durability;

/// A validated config, ready to run.
pub struct Config {
    pub path: PathBuf,
    /// Directory relative paths resolve against: the config file's directory.
    pub base_dir: PathBuf,
    pub data_dir: PathBuf,
    pub store_url: String,
    pub durability: Durability,
    /// How often `serve` signs a checkpoint (when new records exist); default 60 s.
    pub checkpoint_interval: std::time::Duration,
    /// Ed25519 signing key (32-byte seed, hex); default `<data_dir>/signing.key`.
    pub signing_key: PathBuf,
    /// `serve` seals and removes records older than this, hourly (None: keep all).
    pub retention: Option<std::time::Duration>,
    /// Where sealed bundles go; default `<data_dir>/sealed`.
    pub retention_dir: PathBuf,
    pub postgres_listen: Option<String>,
    pub mysql_listen: Option<String>,
    pub http_listen: Option<String>,
    pub admin_listen: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub oidc: Option<warden_identity::OidcSettings>,
    pub connections: Vec<ConnectionSpec>,
    pub rules: Vec<Rule>,
    /// `[approvals]`: broker settings (timeout, webhooks, Slack, link base).
    pub approvals: warden_approvals::BrokerSettings,
    /// Per `approve` rule id: `min_approvals` (default 1) and `grant`.
    pub rule_approvals: std::collections::HashMap<String, warden_pipeline::RuleApproval>,
    pub masking: warden_masking::MaskingConfig,
    pub evidence_limits: crate::masking_cfg::EvidenceLimits,
    /// `[mcp]` (served at `/mcp` on the HTTP listener); `None` when `enabled = false`.
    pub mcp: Option<McpSettings>,
    /// `[console]`: auditors and console session lengths.
    pub console: warden_admin::ConsoleSettings,
}

struct Ctx<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
    /// Offline commands (keys, audit) do not need connection secrets: a missing
    /// environment variable expands to "" instead of being an error.
    lenient_env: bool,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }
    fn err(
        &mut self,
        key: impl Into<String>,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.errors.push(ConfigError {
            key: key.into(),
            line,
            message: message.into(),
        });
    }
    /// Expand `${NAME}` (or `${NAME:-default}`) from the environment; `$${` is a literal `${`.
    fn expand(&mut self, key: &str, v: &S) -> String {
        let raw = v.get_ref();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(literal) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = literal;
            } else if let Some(body) = after.strip_prefix("${") {
                match body.find('}') {
                    Some(end) => {
                        let inner = &body[..end];
                        let (name, default) = match inner.split_once(":-") {
                            Some((n, d)) => (n, Some(d)),
                            None => (inner, None),
                        };
                        match ((self.env)(name), default) {
                            (Some(val), _) => out.push_str(&val),
                            (None, Some(d)) => out.push_str(d),
                            (None, None) if self.lenient_env => {}
                            (None, None) => {
                                self.err(
                                    key,
                                    Some(v.span()),
                                    format!("environment variable `{name}` is not set (or write ${{{name}:-default}})"),
                                );
                            }
                        }
                        rest = &body[end + 1..];
                    }
                    None => {
                        self.err(
                            key,
                            Some(v.span()),
                            "unterminated `${` (write `$${` for a literal)",
                        );
                        out.push_str(after);
                        rest = "";
                    }
                }
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        out
    }
}

fn check_listen(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Option<S>,
    default: Option<&str>,
) -> Option<String> {
    match v {
        None => default.map(str::to_string),
        Some(s) => {
            let addr = ctx.expand(key, s);
            if addr.is_empty() || addr == "off" {
                return None;
            }
            if addr.parse::<std::net::SocketAddr>().is_err() {
                ctx.err(
                    key,
                    Some(s.span()),
                    format!("`{addr}` is not an address like 127.0.0.1:15432 (or \"off\")"),
                );
            }
            Some(addr)
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        Self::load_with(path, false)
    }

    /// For commands that only touch the store: connection secrets may be unset.
    pub fn load_offline(path: &Path) -> Result<Config, Vec<ConfigError>> {
        Self::load_with(path, true)
    }

    fn load_with(path: &Path, lenient_env: bool) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                key: path.display().to_string(),
                line: None,
                message: format!("cannot read config: {e} (create one with `warden init`)"),
            }]
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        // Absolute, so paths derived from it (data_dir, store, keys) mean the same thing
        // to every component whatever the working directory.
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Self::parse_with(&text, path, &base, lenient_env, &|n| std::env::var(n).ok())
    }

    /// Parse with an explicit environment (tests).
    #[cfg(test)]
    pub fn parse_env(
        text: &str,
        path: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        Self::parse_with(text, path, base_dir, false, env)
    }

    #[cfg(test)]
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
        Self::parse_with(text, path, base_dir, false, &|n| std::env::var(n).ok())
    }

    fn parse_with(
        text: &str,
        path: &Path,
        base_dir: &Path,
        lenient_env: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                text[..s.start.min(text.len())]
                    .bytes()
                    .filter(|&b| b == b'\n')
                    .count()
                    + 1
            });
            vec![ConfigError {
                key: "toml".into(),
                line,
                message: e.message().to_string(),
            }]
        })?;
        let mut ctx = Ctx {
            text,
            errors: Vec::new(),
            lenient_env,
            env,
        };
        let resolve = |p: &str| -> PathBuf {
            let p = PathBuf::from(p);
            let joined = if p.is_absolute() { p } else { base_dir.join(p) };
            // `./a/./b` → `a/b`: paths are shown to people in messages.
            let clean: PathBuf = joined
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            if clean.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                clean
            }
        };

        // [gateway]
        let data_dir = match &raw.gateway.data_dir {
            Some(s) => ctx.expand("gateway.data_dir", s),
            None => "./warden-data".into(),
        };
        let data_dir = resolve(&data_dir);
        let store_url = match &raw.gateway.store {
            Some(s) => {
                let u = ctx.expand("gateway.store", s);
                if !u.starts_with("sqlite://") {
                    ctx.err(
                        "gateway.store",
                        Some(s.span()),
                        format!("`{u}`: only sqlite://PATH stores are supported in this version"),
                    );
                }
                match u.strip_prefix("sqlite://") {
                    // Relative to the config file, shown without `./` noise.
                    Some(path) if !path.is_empty() => {
                        format!("sqlite://{}", resolve(path).display())
                    }
                    _ => u,
                }
            }
            None => format!("sqlite://{}", data_dir.join("evidence.db").display()),
        };
        let durability = match raw.gateway.durability.as_ref() {
            None => Durability::Process,
            Some(s) => match s.get_ref().as_str() {
                "process" => Durability::Process,
                "fsync" => Durability::Fsync,
                other => {
                    ctx.err(
                        "gateway.durability",
                        Some(s.span()),
                        format!("`{other}`: use \"process\" or \"fsync\""),
                    );
                    Durability::Process
                }
            },
        };

        let checkpoint_interval = match &raw.gateway.checkpoint_interval {
            None => std::time::Duration::from_secs(60),
            Some(s) => match warden_core::time_fmt::parse_duration(
                &ctx.expand("gateway.checkpoint_interval", s),
            ) {
                Ok(d) if d.is_positive() => {
                    std::time::Duration::from_secs(d.whole_seconds() as u64)
                }
                _ => {
                    ctx.err(
                        "gateway.checkpoint_interval",
                        Some(s.span()),
                        "use a positive duration like \"60s\", \"5m\"",
                    );
                    std::time::Duration::from_secs(60)
                }
            },
        };
        let signing_key = match &raw.gateway.signing_key {
            Some(s) => resolve(&ctx.expand("gateway.signing_key", s)),
            None => data_dir.join("signing.key"),
        };
        let retention =
            raw.gateway.retention.as_ref().and_then(
                |s| match warden_core::time_fmt::parse_duration(&ctx.expand("gateway.retention", s))
                {
                    Ok(d) if d.is_positive() => {
                        Some(std::time::Duration::from_secs(d.whole_seconds() as u64))
                    }
                    _ => {
                        ctx.err(
                            "gateway.retention",
                            Some(s.span()),
                            "use a positive duration like \"365d\", \"26w\"",
                        );
                        None
                    }
                },
            );
        let retention_dir = match &raw.gateway.retention_dir {
            Some(s) => resolve(&ctx.expand("gateway.retention_dir", s)),
            None => data_dir.join("sealed"),
        };

        // [listeners]
        let postgres_listen = check_listen(
            &mut ctx,
            "listeners.postgres",
            &raw.listeners.postgres,
            Some(DEFAULT_POSTGRES_LISTEN),
        );
        let mysql_listen = check_listen(&mut ctx, "listeners.mysql", &raw.listeners.mysql, None);
        let http_listen = check_listen(&mut ctx, "listeners.http", &raw.listeners.http, None);
        let admin_listen = check_listen(
            &mut ctx,
            "listeners.admin",
            &raw.listeners.admin,
            Some(DEFAULT_ADMIN_LISTEN),
        );

        // [tls]
        let tls = raw.tls.as_ref().map(|t| {
            let cert = resolve(&ctx.expand("tls.cert_file", &t.cert_file));
            let key = resolve(&ctx.expand("tls.key_file", &t.key_file));
            for (k, p, s) in [
                ("tls.cert_file", &cert, &t.cert_file),
                ("tls.key_file", &key, &t.key_file),
            ] {
                if !p.exists() {
                    ctx.err(
                        k,
                        Some(s.span()),
                        format!("file {} does not exist", p.display()),
                    );
                }
            }
            (cert, key)
        });

        // [identity.oidc]
        let oidc = raw.identity.oidc.as_ref().map(|o| {
            let jwks_url = o.jwks_url.as_ref().map(|s| ctx.expand("identity.oidc.jwks_url", s));
            let jwks_file = o.jwks_file.as_ref().map(|s| resolve(&ctx.expand("identity.oidc.jwks_file", s)));
            if jwks_url.is_none() && jwks_file.is_none() {
                ctx.err("identity.oidc", Some(o.issuer.span()), "set `jwks_url` or `jwks_file`");
            }
            let algorithms: Vec<String> = match &o.algorithms {
                None => vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
                Some(list) => list
                    .iter()
                    .map(|a| {
                        let v = a.get_ref().clone();
                        if v.eq_ignore_ascii_case("none") || v.to_ascii_uppercase().starts_with("HS") {
                            ctx.err(
                                "identity.oidc.algorithms",
                                Some(a.span()),
                                format!("`{v}` is not allowed: only asymmetric algorithms verify against a JWKS"),
                            );
                        }
                        v
                    })
                    .collect(),
            };
            let _ = &o.client_id;
            warden_identity::OidcSettings {
                issuer: ctx.expand("identity.oidc.issuer", &o.issuer),
                audience: ctx.expand("identity.oidc.audience", &o.audience),
                jwks_url,
                jwks_file,
                groups_claim: o.groups_claim.as_ref().map(|g| g.get_ref().clone()).unwrap_or_else(|| "groups".into()),
                algorithms,
                refresh_floor_secs: 30,
                leeway_secs: 60,
            }
        });

        // [[connections]]
        let mut names = HashSet::new();
        let mut connections = Vec::new();
        for (i, c) in raw.connections.iter().enumerate() {
            let key = |f: &str| format!("connections[{i}].{f}");
            let name = c.name.get_ref().clone();
            if let Err(e) = warden_core::principal::validate_name(&name) {
                ctx.err(key("name"), Some(c.name.span()), e);
            }
            if name == "*" {
                ctx.err(
                    key("name"),
                    Some(c.name.span()),
                    "`*` is reserved for rules",
                );
            }
            if !names.insert(name.clone()) {
                ctx.err(
                    key("name"),
                    Some(c.name.span()),
                    format!("connection `{name}` is defined twice"),
                );
            }
            let protocol = match Protocol::parse(c.protocol.get_ref()) {
                Some(p) => p,
                None => {
                    ctx.err(
                        key("protocol"),
                        Some(c.protocol.span()),
                        format!(
                            "`{}`: use postgres, mysql, http or kubernetes",
                            c.protocol.get_ref()
                        ),
                    );
                    Protocol::Postgres
                }
            };
            let upstream = ctx.expand(&key("upstream"), &c.upstream);
            match protocol {
                Protocol::Postgres | Protocol::Mysql => {
                    let ok = upstream
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        ctx.err(
                            key("upstream"),
                            Some(c.upstream.span()),
                            format!("`{upstream}` must be host:port"),
                        );
                    }
                }
                // `parse` never yields `Mcp` (a front door, not a target).
                Protocol::Http | Protocol::Kubernetes | Protocol::Mcp => {
                    if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
                        ctx.err(
                            key("upstream"),
                            Some(c.upstream.span()),
                            format!("`{upstream}` must be an http:// or https:// URL"),
                        );
                    }
                }
            }
            // HTTP(S) upstreams: a `ca_file` / `server_name` alone means "verify with it".
            let implied = (protocol == Protocol::Http
                && (c.ca_file.is_some() || c.server_name.is_some()))
            .then_some("verify-full");
            let tls = match c.tls.as_ref().map(|t| t.get_ref().as_str()).or(implied) {
                None | Some("disable") => UpstreamTls::Disable,
                Some("verify-full") | Some("require") => UpstreamTls::VerifyFull {
                    ca_file: c
                        .ca_file
                        .as_ref()
                        .map(|s| resolve(&ctx.expand(&key("ca_file"), s))),
                    server_name: c.server_name.as_ref().map(|s| s.get_ref().clone()),
                },
                Some(other) => {
                    if let Some(t) = &c.tls {
                        ctx.err(
                            key("tls"),
                            Some(t.span()),
                            format!("`{other}`: use \"disable\" or \"verify-full\""),
                        );
                    }
                    UpstreamTls::Disable
                }
            };
            let headers = c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), ctx.expand(&key(&format!("headers.{k}")), v)))
                .collect();
            connections.push(ConnectionSpec {
                name,
                protocol,
                upstream,
                database: c.database.as_ref().map(|s| ctx.expand(&key("database"), s)),
                user: c.user.as_ref().map(|s| ctx.expand(&key("user"), s)),
                password: c.password.as_ref().map(|s| ctx.expand(&key("password"), s)),
                tls,
                headers,
                description: c
                    .description
                    .as_ref()
                    .map(|d| d.get_ref().trim().to_string())
                    .filter(|d| !d.is_empty()),
            });
        }

        // [[rules]]
        let mut ids = HashSet::new();
        let mut rules = Vec::new();
        let mut rule_approvals = std::collections::HashMap::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let key = |f: &str| format!("rules[{i}].{f}");
            let id = r.id.get_ref().clone();
            if id.is_empty() {
                ctx.err(key("id"), Some(r.id.span()), "rule id must not be empty");
            }
            if !ids.insert(id.clone()) {
                ctx.err(
                    key("id"),
                    Some(r.id.span()),
                    format!("rule id `{id}` is used twice"),
                );
            }
            if r.principals.is_empty() {
                ctx.err(
                    key("principals"),
                    Some(r.id.span()),
                    "list who the rule applies to (e.g. [\"group:agents\"] or [\"*\"])",
                );
            }
            let principals = r
                .principals
                .iter()
                .enumerate()
                .filter_map(|(j, p)| match PrincipalPattern::parse(p.get_ref()) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        ctx.err(format!("rules[{i}].principals[{j}]"), Some(p.span()), e);
                        None
                    }
                })
                .collect();
            if r.connections.is_empty() {
                ctx.err(
                    key("connections"),
                    Some(r.id.span()),
                    "list the connections the rule covers (or [\"*\"])",
                );
            }
            let conns: Vec<String> = r
                .connections
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let name = c.get_ref().clone();
                    if name != "*" && !names.contains(&name) {
                        ctx.err(
                            format!("rules[{i}].connections[{j}]"),
                            Some(c.span()),
                            format!("unknown connection `{name}`"),
                        );
                    }
                    name
                })
                .collect();
            let sql = r.sql.as_ref().map(|list| {
                let mut kinds = Vec::new();
                for (j, k) in list.iter().enumerate() {
                    let v = k.get_ref().to_ascii_lowercase();
                    if v == "*" {
                        kinds.extend(SqlKind::ALL.into_iter().filter(|k| *k != SqlKind::Unparsed));
                    } else if let Some(kind) = SqlKind::parse(&v) {
                        kinds.push(kind);
                    } else {
                        let all: Vec<&str> = SqlKind::ALL.iter().map(|k| k.as_str()).collect();
                        ctx.err(
                            format!("rules[{i}].sql[{j}]"),
                            Some(k.span()),
                            format!(
                                "unknown statement kind `{v}`; known: {}, or \"*\"",
                                all.join(", ")
                            ),
                        );
                    }
                }
                kinds
            });
            let http = r.http.as_ref().map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(j, h)| {
                        let v = h.get_ref().clone();
                        let ok = v
                            .split_once(' ')
                            .is_some_and(|(m, p)| !m.is_empty() && p.starts_with('/'));
                        if !ok {
                            ctx.err(
                                format!("rules[{i}].http[{j}]"),
                                Some(h.span()),
                                format!("`{v}` must look like \"GET /path/**\""),
                            );
                        }
                        v
                    })
                    .collect::<Vec<_>>()
            });
            let effect = match r.effect.get_ref().as_str() {
                "allow" => Effect::Allow,
                "deny" => Effect::Deny,
                "approve" => Effect::Approve,
                other => {
                    ctx.err(
                        key("effect"),
                        Some(r.effect.span()),
                        format!("`{other}`: use allow, deny or approve"),
                    );
                    Effect::Deny
                }
            };
            let approvers: Vec<String> = r.approvers.iter().map(|a| a.get_ref().clone()).collect();
            if effect == Effect::Approve && approvers.is_empty() {
                ctx.err(
                    key("approvers"),
                    Some(r.effect.span()),
                    "an `approve` rule needs `approvers` (e.g. [\"group:dba\"])",
                );
            }
            for (j, a) in r.approvers.iter().enumerate() {
                let v = a.get_ref();
                if !(v.starts_with("group:") || v.starts_with("user:") || v.starts_with("agent:")) {
                    ctx.err(
                        format!("rules[{i}].approvers[{j}]"),
                        Some(a.span()),
                        format!("`{v}` must be group:NAME or user:NAME"),
                    );
                }
            }
            if effect != Effect::Approve && !approvers.is_empty() {
                ctx.err(
                    key("approvers"),
                    Some(r.approvers[0].span()),
                    "`approvers` only applies to effect = \"approve\"",
                );
            }
            if effect == Effect::Approve {
                let ra = rule_approval(&mut ctx, i, r, &approvers);
                rule_approvals.insert(id.clone(), ra);
            } else if let Some(m) = &r.min_approvals {
                ctx.err(
                    key("min_approvals"),
                    Some(m.span()),
                    "`min_approvals` only applies to effect = \"approve\"",
                );
            } else if let Some(g) = &r.grant {
                ctx.err(
                    key("grant"),
                    Some(g.span()),
                    "`grant` only applies to effect = \"approve\"",
                );
            }
            let _ = &r.description;
            let globs =
                |ctx: &mut Ctx<'_>, field: &str, list: &Option<Vec<S>>| -> Option<Vec<String>> {
                    list.as_ref().map(|l| {
                        if l.is_empty() {
                            ctx.err(
                                key(field),
                                Some(r.id.span()),
                                format!("`{field}` must name at least one pattern"),
                            );
                        }
                        l.iter().map(|g| g.get_ref().clone()).collect()
                    })
                };
            let refine = warden_policy::Refinement {
                tables: globs(&mut ctx, "tables", &r.tables),
                functions: globs(&mut ctx, "functions", &r.functions),
                without_where: r.without_where.unwrap_or(false),
                require_purpose: r.require_purpose.unwrap_or(false),
            };
            if !refine.is_empty() && http.is_some() {
                ctx.err(
                    key("http"),
                    Some(r.id.span()),
                    "`tables`, `functions` and `without_where` refine SQL rules; they cannot be combined with `http`",
                );
            }
            if refine.require_purpose && effect == Effect::Deny {
                ctx.err(
                    key("require_purpose"),
                    Some(r.effect.span()),
                    "`require_purpose` applies to allow and approve rules",
                );
            }
            rules.push(Rule {
                id,
                principals,
                connections: conns,
                sql,
                http,
                effect,
                approvers,
                refine,
            });
        }

        // [[masking]], [[detectors]], [evidence]
        let masking_key = raw
            .gateway
            .masking_key
            .as_ref()
            .map(|k| ctx.expand("gateway.masking_key", k));
        let (masking, evidence_limits, problems) = crate::masking_cfg::build(
            &raw.masking,
            &raw.detectors,
            &raw.evidence,
            masking_key,
            &names,
        );
        for (key, span, message) in problems {
            ctx.err(key, span, message);
        }
        let _ = &raw.approvals;

        let approvals =
            approvals_settings(&mut ctx, raw.approvals.as_ref(), admin_listen.as_deref());
        let mcp = mcp_settings(&mut ctx, raw.mcp.as_ref());
        let console = console_settings(&mut ctx, raw.console.as_ref());
        if mcp.is_some() {
            for (i, c) in raw.connections.iter().enumerate() {
                if c.name.get_ref() == "mcp" {
                    ctx.err(
                        format!("connections[{i}].name"),
                        Some(c.name.span()),
                        "`mcp` is the MCP server's path on the HTTP listener (/mcp); rename the connection or set [mcp] enabled = false",
                    );
                }
            }
        }

        if ctx.errors.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                base_dir: base_dir.to_path_buf(),
                data_dir,
                store_url,
                durability,
                checkpoint_interval,
                signing_key,
                retention,
                retention_dir,
                postgres_listen,
                mysql_listen,
                http_listen,
                admin_listen,
                tls,
                oidc,
                connections,
                rules,
                approvals,
                rule_approvals,
                masking,
                evidence_limits,
                mcp,
                console,
            })
        } else {
            Err(ctx.errors)
        }
    }
}

/// `min_approvals` / `grant` of the `approve` rule `rules[i]`.
fn rule_approval(
    ctx: &mut Ctx<'_>,
    i: usize,
    r: &RawRule,
    approvers: &[String],
) -> warden_pipeline::RuleApproval {
    let min_approvals = match &r.min_approvals {
        None => 1,
        Some(m) => {
            let n = *m.get_ref();
            let named: Vec<&String> = approvers
                .iter()
                .filter(|a| !a.starts_with("group:"))
                .collect();
            if n == 0 {
                ctx.err(
                    format!("rules[{i}].min_approvals"),
                    Some(m.span()),
                    "must be at least 1",
                );
            } else if n > 100 {
                ctx.err(
                    format!("rules[{i}].min_approvals"),
                    Some(m.span()),
                    format!("{n} is not a sensible number of approvers (at most 100)"),
                );
            } else if named.len() == approvers.len() && (n as usize) > named.len() {
                ctx.err(
                    format!("rules[{i}].min_approvals"),
                    Some(m.span()),
                    format!(
                        "needs {n} distinct approvers but `approvers` names only {} people and no group, so it could never be approved",
                        named.len()
                    ),
                );
            }
            n.max(1)
        }
    };
    let grant = r.grant.as_ref().and_then(|g| {
        match warden_core::time_fmt::parse_duration(&ctx.expand(&format!("rules[{i}].grant"), g)) {
            Ok(d) if d.is_positive() => {
                Some(std::time::Duration::from_secs(d.whole_seconds() as u64))
            }
            _ => {
                ctx.err(
                    format!("rules[{i}].grant"),
                    Some(g.span()),
                    "use a positive duration like \"15m\", \"1h\", \"1d\"",
                );
                None
            }
        }
    });
    warden_pipeline::RuleApproval {
        min_approvals,
        grant,
    }
}

/// `[console]`: auditors (`group:NAME` / `user:NAME` / `agent:NAME` / `*`),
/// session_idle, session_lifetime.
fn console_settings(ctx: &mut Ctx<'_>, raw: Option<&RawConsole>) -> warden_admin::ConsoleSettings {
    let mut s = warden_admin::ConsoleSettings::default();
    let Some(raw) = raw else { return s };
    for (j, a) in raw.auditors.iter().enumerate() {
        let v = a.get_ref();
        if v == "*" || v.starts_with("group:") || v.starts_with("user:") || v.starts_with("agent:")
        {
            s.auditors.push(v.clone());
        } else {
            ctx.err(
                format!("console.auditors[{j}]"),
                Some(a.span()),
                format!("`{v}` must be group:NAME, user:NAME, agent:NAME or \"*\""),
            );
        }
    }
    for (key, v, out) in [
        ("console.session_idle", &raw.session_idle, &mut s.idle),
        (
            "console.session_lifetime",
            &raw.session_lifetime,
            &mut s.lifetime,
        ),
    ] {
        let Some(v) = v else { continue };
        match warden_core::time_fmt::parse_duration(&ctx.expand(key, v)) {
            Ok(d) if d.is_positive() => {
                *out = std::time::Duration::from_secs(d.whole_seconds() as u64)
            }
            _ => ctx.err(
                key,
                Some(v.span()),
                "use a positive duration like \"30m\", \"8h\"",
            ),
        }
    }
    s
}

/// `[mcp]`: enabled, max_rows, approval_wait, call_timeout, session_idle.
fn mcp_settings(ctx: &mut Ctx<'_>, raw: Option<&RawMcp>) -> Option<McpSettings> {
    let mut s = McpSettings::default();
    let Some(raw) = raw else { return Some(s) };
    if let Some(m) = &raw.max_rows {
        match usize::try_from(*m.get_ref()) {
            Ok(n) if (1..=100_000).contains(&n) => s.max_rows = n,
            _ => ctx.err(
                "mcp.max_rows",
                Some(m.span()),
                "use a number of rows from 1 to 100000",
            ),
        }
    }
    let dur = |ctx: &mut Ctx<'_>,
               key: &str,
               v: &Option<S>,
               zero_ok: bool,
               out: &mut std::time::Duration| {
        let Some(v) = v else { return };
        match warden_core::time_fmt::parse_duration(&ctx.expand(key, v)) {
            Ok(d) if d.is_positive() || (zero_ok && d.is_zero()) => {
                *out = std::time::Duration::from_secs(d.whole_seconds() as u64)
            }
            _ => ctx.err(
                key,
                Some(v.span()),
                if zero_ok {
                    "use a duration like \"0s\", \"30s\", \"2m\""
                } else {
                    "use a positive duration like \"30s\", \"10m\", \"1h\""
                },
            ),
        }
    };
    dur(
        ctx,
        "mcp.approval_wait",
        &raw.approval_wait,
        true,
        &mut s.approval_wait,
    );
    dur(
        ctx,
        "mcp.call_timeout",
        &raw.call_timeout,
        false,
        &mut s.call_timeout,
    );
    dur(
        ctx,
        "mcp.session_idle",
        &raw.session_idle,
        false,
        &mut s.session_idle,
    );
    if raw.enabled == Some(false) {
        return None;
    }
    Some(s)
}

/// `[approvals]`: timeout, webhooks, webhook_secret, slack_webhook, console_url.
fn approvals_settings(
    ctx: &mut Ctx<'_>,
    raw: Option<&RawApprovals>,
    admin_listen: Option<&str>,
) -> warden_approvals::BrokerSettings {
    let mut s = warden_approvals::BrokerSettings {
        console_url: admin_listen.map(|a| format!("http://{a}")),
        ..Default::default()
    };
    let Some(raw) = raw else { return s };
    if let Some(t) = &raw.timeout {
        match warden_core::time_fmt::parse_duration(&ctx.expand("approvals.timeout", t)) {
            Ok(d) if d.is_positive() => {
                s.timeout = std::time::Duration::from_secs(d.whole_seconds() as u64)
            }
            _ => ctx.err(
                "approvals.timeout",
                Some(t.span()),
                "use a positive duration like \"10m\", \"30s\", \"1h\"",
            ),
        }
    }
    let check_url = |ctx: &mut Ctx<'_>, key: String, v: &S| -> String {
        let url = ctx.expand(&key, v);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            ctx.err(
                key,
                Some(v.span()),
                format!("`{url}` must be an http:// or https:// URL"),
            );
        } else if let Err(e) = warden_approvals::http::HttpUrl::parse(&url) {
            ctx.err(key, Some(v.span()), e);
        }
        url
    };
    s.webhooks = raw
        .webhooks
        .iter()
        .enumerate()
        .map(|(j, w)| check_url(ctx, format!("approvals.webhooks[{j}]"), w))
        .collect();
    s.slack_webhook = raw
        .slack_webhook
        .as_ref()
        .map(|w| check_url(ctx, "approvals.slack_webhook".into(), w));
    if let Some(c) = &raw.console_url {
        let url = ctx.expand("approvals.console_url", c);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            ctx.err(
                "approvals.console_url",
                Some(c.span()),
                format!("`{url}` must be an http:// or https:// URL"),
            );
        }
        s.console_url = Some(url);
    }
    s.webhook_secret = raw
        .webhook_secret
        .as_ref()
        .map(|w| ctx.expand("approvals.webhook_secret", w))
        .filter(|w| !w.is_empty());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCT_EXAMPLE: &str = include_str!("../../../examples/product-example.toml");

    #[test]
    fn accepts_the_product_example_as_written() {
        let env = |n: &str| match n {
            "ORDERS_DB_PASSWORD" => Some("s3cret".to_string()),
            "BILLING_TOKEN" => Some("tok".to_string()),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            Config::parse_env(PRODUCT_EXAMPLE, Path::new("warden.toml"), dir.path(), &env).unwrap();
        assert_eq!(cfg.connections.len(), 2);
        assert_eq!(cfg.connections[0].password.as_deref(), Some("s3cret"));
        assert_eq!(
            cfg.connections[1].headers,
            vec![("Authorization".to_string(), "Bearer tok".to_string())]
        );
        assert_eq!(cfg.rules.len(), 3);
        assert_eq!(cfg.postgres_listen.as_deref(), Some("127.0.0.1:15432"));
    }

    #[test]
    fn reports_every_mistake_with_line() {
        let text = r#"
[[connections]]
name = "orders"
protocol = "postgress"
upstream = "nohost"

[[rules]]
id = "r1"
principals = ["team:x"]
connections = ["ordrs"]
sql = ["selekt"]
effect = "maybe"
"#;
        let errs = Config::parse(text, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        let lines: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(
            lines.contains(&("connections[0].protocol", Some(4))),
            "{errs:?}"
        );
        assert!(
            lines.contains(&("rules[0].principals[0]", Some(9))),
            "{errs:?}"
        );
        assert!(
            lines.contains(&("rules[0].connections[0]", Some(10))),
            "{errs:?}"
        );
        assert!(lines.contains(&("rules[0].sql[0]", Some(11))), "{errs:?}");
        assert!(lines.contains(&("rules[0].effect", Some(12))), "{errs:?}");
    }

    #[test]
    fn approvals_settings_and_rule_keys() {
        let base = r#"
[listeners]
admin = "127.0.0.1:9181"

[[connections]]
name = "orders"
protocol = "postgres"
upstream = "127.0.0.1:5432"

[[rules]]
id = "w"
principals = ["group:agents"]
connections = ["orders"]
sql = ["delete"]
effect = "approve"
approvers = ["group:dba"]
min_approvals = 2
grant = "1h"
"#;
        let text = format!(
            "{base}\n[approvals]\ntimeout = \"90s\"\nwebhooks = [\"http://127.0.0.1:9999/warden\"]\nwebhook_secret = \"${{HOOK_SECRET}}\"\nslack_webhook = \"https://hooks.slack.com/services/x\"\n"
        );
        let env = |n: &str| (n == "HOOK_SECRET").then(|| "k".to_string());
        let cfg = Config::parse_env(&text, Path::new("w.toml"), Path::new("."), &env).unwrap();
        assert_eq!(cfg.approvals.timeout, std::time::Duration::from_secs(90));
        assert_eq!(cfg.approvals.webhooks, vec!["http://127.0.0.1:9999/warden"]);
        assert_eq!(cfg.approvals.webhook_secret.as_deref(), Some("k"));
        assert!(cfg.approvals.slack_webhook.is_some());
        assert_eq!(
            cfg.approvals.console_url.as_deref(),
            Some("http://127.0.0.1:9181")
        );
        let ra = cfg.rule_approvals["w"];
        assert_eq!(ra.min_approvals, 2);
        assert_eq!(ra.grant, Some(std::time::Duration::from_secs(3600)));

        // Defaults: admin on 127.0.0.1:8081, 10 minutes, one approver, no grant.
        let plain = base
            .replace("admin = \"127.0.0.1:9181\"", "")
            .replace("min_approvals = 2\n", "")
            .replace("grant = \"1h\"\n", "");
        let cfg = Config::parse(&plain, Path::new("w.toml"), Path::new(".")).unwrap();
        assert_eq!(cfg.admin_listen.as_deref(), Some(DEFAULT_ADMIN_LISTEN));
        assert_eq!(cfg.approvals.timeout, std::time::Duration::from_secs(600));
        assert_eq!(cfg.rule_approvals["w"].min_approvals, 1);
        assert_eq!(cfg.rule_approvals["w"].grant, None);

        // Mistakes are named with key and line.
        let bad = base
            .replace("min_approvals = 2", "min_approvals = 0")
            .replace("grant = \"1h\"", "grant = \"soon\"")
            + "\n[approvals]\ntimeout = \"-\"\nwebhooks = [\"ftp://x\"]\n";
        let errs = Config::parse(&bad, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(
            keys.contains(&("rules[0].min_approvals", Some(17))),
            "{errs:?}"
        );
        assert!(keys.contains(&("rules[0].grant", Some(18))), "{errs:?}");
        assert!(keys.contains(&("approvals.timeout", Some(21))), "{errs:?}");
        assert!(
            keys.contains(&("approvals.webhooks[0]", Some(22))),
            "{errs:?}"
        );
        let unknown = format!("{base}\n[approvals]\ntimeot = \"1m\"\n");
        let errs = Config::parse(&unknown, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        assert!(errs[0].message.contains("timeot"), "{errs:?}");
    }

    #[test]
    fn unknown_keys_and_missing_env_are_named() {
        let errs = Config::parse(
            "[gateway]\nstorre = 1\n",
            Path::new("w.toml"),
            Path::new("."),
        )
        .err()
        .unwrap();
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("storre"), "{errs:?}");
        let text = "[[connections]]\nname = \"a\"\nprotocol = \"postgres\"\nupstream = \"127.0.0.1:1\"\npassword = \"${WARDEN_TEST_SURELY_UNSET}\"\n";
        let errs = Config::parse(text, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        assert_eq!(errs[0].key, "connections[0].password");
        assert_eq!(errs[0].line, Some(5));
    }

    #[test]
    fn mcp_section() {
        let cfg = Config::parse("", Path::new("w.toml"), Path::new(".")).unwrap();
        assert_eq!(cfg.mcp, Some(McpSettings::default()));
        let text = "[mcp]\nmax_rows = 50\napproval_wait = \"20s\"\nsession_idle = \"1h\"\n";
        let cfg = Config::parse(text, Path::new("w.toml"), Path::new(".")).unwrap();
        let m = cfg.mcp.unwrap();
        assert_eq!(m.max_rows, 50);
        assert_eq!(m.approval_wait, std::time::Duration::from_secs(20));
        assert_eq!(m.session_idle, std::time::Duration::from_secs(3600));
        let off = Config::parse(
            "[mcp]\nenabled = false\n",
            Path::new("w.toml"),
            Path::new("."),
        );
        assert!(off.unwrap().mcp.is_none());
        let errs = Config::parse(
            "[mcp]\nmax_rows = 0\ncall_timeout = \"0s\"\n",
            Path::new("w.toml"),
            Path::new("."),
        )
        .err()
        .unwrap();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["mcp.max_rows", "mcp.call_timeout"], "{errs:?}");
        let clash = "[[connections]]\nname = \"mcp\"\nprotocol = \"http\"\nupstream = \"http://127.0.0.1:1\"\n";
        let errs = Config::parse(clash, Path::new("w.toml"), Path::new("."))
            .err()
            .unwrap();
        assert_eq!(errs[0].key, "connections[0].name", "{errs:?}");
        let text = format!("{clash}[mcp]\nenabled = false\n");
        assert!(Config::parse(&text, Path::new("w.toml"), Path::new(".")).is_ok());
    }
}
