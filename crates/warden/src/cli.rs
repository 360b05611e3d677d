//! Command-line interface (PRODUCT.md "Binary and CLI").
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use warden_core::{AuthInfo, AuthMethod, EvidenceRecord, Principal, RecordKind};
use warden_policy::{ActionClass, Policy};
use warden_store::{RecordFilter, Store};

use crate::config::{Config, ConfigError};

const ABOUT: &str = "Warden stands between AI agents (and people) and your databases and APIs. \
It authenticates every caller, decides every statement by policy, records it as tamper-evident \
evidence before it runs, and relays the answer.";

const AFTER_HELP: &str = "Getting started:
  warden init ./warden                 # starter config, signing keys, data dir
  warden config check --config ./warden/warden.toml
  warden keys create --config ./warden/warden.toml --principal agent:reporter --group agents
  warden serve --config ./warden/warden.toml
  PGPASSWORD=<key> psql \"host=127.0.0.1 port=15432 dbname=orders user=agent:reporter\"
  warden audit query --config ./warden/warden.toml --since 1h";

#[derive(Parser)]
#[command(name = "warden", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct ConfigArg {
    /// The Warden config file (TOML).
    #[arg(
        long,
        short = 'c',
        env = "WARDEN_CONFIG",
        default_value = "warden.toml"
    )]
    pub(crate) config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: every configured listener, until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a starter config, an Ed25519 signing key pair and a data dir into DIR.
    Init {
        /// Where to write (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite an existing warden.toml.
        #[arg(long)]
        force: bool,
    },
    /// Validate a config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage Warden keys (credentials for agents and people).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Query and verify the evidence ledger.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Ask the policy engine what it would decide, without touching anything.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Export signed evidence bundles and verify them offline.
    #[command(subcommand)]
    Evidence(crate::evidence_cmd::EvidenceCmd),
    /// List sessions and replay one (from the evidence store).
    #[command(subcommand)]
    Sessions(crate::evidence_cmd::SessionsCmd),
    /// List, approve and deny held actions on a running gateway (admin API; WARDEN_TOKEN).
    #[command(subcommand)]
    Approvals(crate::approvals_cmd::ApprovalsCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check the config; every mistake is printed with its key and line. Exit 1 if any.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key. Prints the key, and only the key, on stdout; it is shown once and
    /// stored hashed.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// Who the key authenticates: agent:NAME or user:NAME.
        #[arg(long)]
        principal: String,
        /// Group membership carried by the key (repeatable), e.g. --group agents.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. 30d, 12h. Default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys (ids, principals, groups, state; never secrets).
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke a key by id; effective for new sessions immediately.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// Key id (the part after `wk_`, as `keys list` shows it).
        id: String,
    },
}

/// Which evidence records: shared by `audit query` and `evidence export`.
#[derive(Args, Clone, Debug, Default)]
pub struct Selection {
    /// Start of the window (inclusive): RFC 3339, a date, or a span ago (30m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// End of the window (exclusive), same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// Only records of this principal (agent:NAME / user:NAME).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records on this connection.
    #[arg(long)]
    pub connection: Option<String>,
    /// Only records of this kind (action.request, policy.denied, auth.failed, ...).
    #[arg(long)]
    pub kind: Option<String>,
}

impl Selection {
    /// Refuse an unknown `--kind` with the list of known ones.
    pub fn check_kind(&self) -> anyhow::Result<()> {
        if let Some(k) = &self.kind
            && RecordKind::parse(k).is_none()
        {
            let all: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
            bail!("unknown kind `{k}`; known: {}", all.join(", "));
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Print evidence records, oldest first.
    Query {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        select: Selection,
        /// Only records of this session.
        #[arg(long)]
        session: Option<String>,
        /// At most this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// table (for people), json (one record per line), csv.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Recompute the hash chain, the Merkle root at every checkpoint and every checkpoint
    /// signature. Exit 0 intact; 1 naming the first bad record and what is wrong; 2 usage
    /// or I/O error.
    Verify(crate::evidence_cmd::VerifyArgs),
    /// Sign a checkpoint over every record now (the gateway also does it periodically).
    Checkpoint(crate::evidence_cmd::CheckpointArgs),
    /// Retention: seal records older than --before into a signed, verified bundle
    /// (--out), then remove them; `audit verify` goes on passing on what remains.
    Prune(crate::evidence_cmd::PruneArgs),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the decision for one action and every rule that matched. Exit 0 allow,
    /// 3 approve, 4 deny — usable in CI of a policy repository.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// agent:NAME or user:NAME.
        #[arg(long)]
        principal: String,
        /// Groups of the principal (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Connection name.
        #[arg(long)]
        connection: String,
        /// A SQL string (each statement is decided).
        #[arg(long, conflicts_with = "http", required_unless_present = "http")]
        sql: Option<String>,
        /// An HTTP request line, e.g. "GET /invoices/42".
        #[arg(long)]
        http: Option<String>,
        /// The declared purpose, for rules with `require_purpose` (omit to check without one).
        #[arg(long)]
        purpose: Option<String>,
    },
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    report(arg, Config::load(&arg.config))
}

/// For keys/audit: the store is all they need, so unset connection secrets are fine.
pub(crate) fn load_offline(arg: &ConfigArg) -> anyhow::Result<Config> {
    report(arg, Config::load_offline(&arg.config))
}

fn report(arg: &ConfigArg, r: Result<Config, Vec<ConfigError>>) -> anyhow::Result<Config> {
    r.map_err(|errs| {
        let mut msg = format!("{} has {} problem(s):", arg.config.display(), errs.len());
        for e in &errs {
            msg.push_str(&format!("\n  {e}"));
        }
        anyhow::anyhow!(msg)
    })
}

fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.store_url, &cfg.base_dir, cfg.durability)
        .with_context(|| format!("opening the store {}", cfg.store_url))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = load_config(&config)?;
            crate::serve::serve(cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir, force } => {
            crate::init::init(&dir, force)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCmd::Check { config }) => match Config::load(&config.config) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} connection(s), {} rule(s))",
                    config.config.display(),
                    cfg.connections.len(),
                    cfg.rules.len()
                );
                let shadowed = warden_policy::shadowed_rules(&cfg.rules);
                for s in &shadowed {
                    println!(
                        "  warning: rule `{}` never decides anything: {}",
                        s.shadowed, s.why
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errs) => {
                print_config_errors(&config.config, &errs);
                Ok(ExitCode::from(1))
            }
        },
        Command::Keys(cmd) => keys(cmd),
        Command::Audit(cmd) => audit(cmd),
        Command::Evidence(cmd) => crate::evidence_cmd::evidence(cmd),
        Command::Sessions(cmd) => crate::evidence_cmd::sessions(cmd),
        Command::Approvals(cmd) => crate::approvals_cmd::approvals(cmd),
        Command::Policy(PolicyCmd::Check {
            config,
            principal,
            groups,
            connection,
            sql,
            http,
            purpose,
        }) => {
            let cfg = load_offline(&config)?;
            policy_check(
                &cfg,
                &principal,
                groups,
                &connection,
                sql.as_deref(),
                http.as_deref(),
                purpose.as_deref(),
            )
        }
    }
}

fn print_config_errors(path: &std::path::Path, errs: &[ConfigError]) {
    println!("{}: {} problem(s)", path.display(), errs.len());
    for e in errs {
        println!("  {e}");
    }
}

fn keys(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::Create {
            config,
            principal,
            groups,
            expires,
        } => {
            warden_core::principal::validate_principal_id(&principal)
                .map_err(anyhow::Error::msg)?;
            for g in &groups {
                warden_core::principal::validate_name(g)
                    .map_err(|e| anyhow::anyhow!("group `{g}`: {e}"))?;
            }
            let expires_at = match &expires {
                None => None,
                Some(e) => {
                    let d = warden_core::time_fmt::parse_duration(e).map_err(anyhow::Error::msg)?;
                    Some(warden_core::time_fmt::format_ts(
                        time::OffsetDateTime::now_utc() + d,
                    ))
                }
            };
            let cfg = load_offline(&config)?;
            let store = open_store(&cfg)?;
            let key = warden_identity::generate_key(&principal, &groups, expires_at.clone());
            store.insert_key(&key.record)?;
            eprintln!(
                "created key {} for {}{}{}; it is shown once — store it now",
                key.record.id,
                principal,
                if groups.is_empty() {
                    String::new()
                } else {
                    format!(" (groups: {})", groups.join(", "))
                },
                expires_at
                    .map(|e| format!(", expires {e}"))
                    .unwrap_or_default()
            );
            println!("{}", key.presented);
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::List { config, format } => {
            let cfg = load_offline(&config)?;
            let store = open_store(&cfg)?;
            let now = time::OffsetDateTime::now_utc();
            let keys = store.list_keys()?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    for k in keys {
                        let v = serde_json::json!({
                            "id": k.id, "principal": k.principal, "groups": k.groups,
                            "created_at": k.created_at, "expires_at": k.expires_at,
                            "revoked_at": k.revoked_at, "active": k.is_active(now),
                        });
                        writeln!(out, "{v}")?;
                    }
                }
                Format::Csv => {
                    writeln!(
                        out,
                        "id,principal,groups,created_at,expires_at,revoked_at,active"
                    )?;
                    for k in keys {
                        writeln!(
                            out,
                            "{},{},{},{},{},{},{}",
                            csv(&k.id),
                            csv(&k.principal),
                            csv(&k.groups.join(" ")),
                            csv(&k.created_at),
                            csv(k.expires_at.as_deref().unwrap_or("")),
                            csv(k.revoked_at.as_deref().unwrap_or("")),
                            k.is_active(now)
                        )?;
                    }
                }
                Format::Table => {
                    writeln!(
                        out,
                        "{:<14} {:<28} {:<20} {:<9} CREATED",
                        "ID", "PRINCIPAL", "GROUPS", "STATE"
                    )?;
                    for k in keys {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else if k.is_active(now) {
                            "active"
                        } else {
                            "expired"
                        };
                        writeln!(
                            out,
                            "{:<14} {:<28} {:<20} {:<9} {}",
                            k.id,
                            k.principal,
                            k.groups.join(","),
                            state,
                            k.created_at
                        )?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Revoke { config, id } => {
            let cfg = load_offline(&config)?;
            let store = open_store(&cfg)?;
            let id = id.trim_start_matches("wk_").to_string();
            if store.revoke_key(&id, &warden_core::time_fmt::now_rfc3339())? {
                eprintln!("revoked key {id}");
                Ok(ExitCode::SUCCESS)
            } else if store.key_by_id(&id)?.is_some() {
                eprintln!("key {id} was already revoked");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no key with id {id} (see `warden keys list`)")
            }
        }
    }
}

fn normalize_time(s: &Option<String>) -> anyhow::Result<Option<String>> {
    s.as_ref()
        .map(|t| {
            warden_core::time_fmt::parse_time_arg(t)
                .map(warden_core::time_fmt::format_ts)
                .map_err(anyhow::Error::msg)
        })
        .transpose()
}

fn audit(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Query {
            config,
            select,
            session,
            limit,
            format,
        } => {
            select.check_kind()?;
            let cfg = load_offline(&config)?;
            let store = open_store(&cfg)?;
            let filter = RecordFilter {
                since: normalize_time(&select.since)?,
                until: normalize_time(&select.until)?,
                principal: select.principal,
                connection: select.connection,
                kind: select.kind,
                session_id: session,
                limit,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut io_err: Option<std::io::Error> = None;
            if format == Format::Csv {
                // The same columns as the console's CSV download.
                writeln!(out, "{}", warden_admin::evidence::CSV_HEADER)?;
            } else if format == Format::Table {
                writeln!(
                    out,
                    "{:>6} {:<30} {:<16} {:<20} {:<10} WHAT",
                    "SEQ", "TIME", "KIND", "PRINCIPAL", "CONNECTION"
                )?;
            }
            store.query(&filter, &mut |r| {
                let res = match format {
                    Format::Json => serde_json::to_string(&r)
                        .map_err(std::io::Error::other)
                        .and_then(|s| writeln!(out, "{s}")),
                    Format::Csv => writeln!(out, "{}", warden_admin::evidence::csv_row(&r)),
                    Format::Table => writeln!(out, "{}", table_row(&r)),
                };
                match res {
                    Ok(()) => true,
                    Err(e) => {
                        io_err = Some(e);
                        false
                    }
                }
            })?;
            if let Some(e) = io_err
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e.into());
            }
            let _ = out.flush();
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify(args) => crate::evidence_cmd::audit_verify(args),
        AuditCmd::Checkpoint(args) => crate::evidence_cmd::audit_checkpoint(args),
        AuditCmd::Prune(args) => crate::evidence_cmd::audit_prune(args),
    }
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

fn table_row(r: &EvidenceRecord) -> String {
    let what = match (&r.action, &r.response, &r.detail) {
        (Some(a), _, _) => {
            let eff = r
                .decision
                .as_ref()
                .map(|d| format!("[{}] ", d.effect))
                .unwrap_or_default();
            format!("{eff}{}", one_line(&a.text, 80))
        }
        (None, Some(resp), _) => {
            let tag = resp
                .tag
                .clone()
                .or(resp.error_message.clone())
                .unwrap_or_default();
            format!(
                "{} {} rows={} bytes={}",
                resp.status,
                one_line(&tag, 40),
                resp.rows,
                resp.bytes
            )
        }
        (None, None, Some(d)) => one_line(d, 80),
        _ => String::new(),
    };
    format!(
        "{:>6} {:<30} {:<16} {:<20} {:<10} {}",
        r.seq,
        r.ts,
        r.kind.as_str(),
        r.principal.as_ref().map(|p| p.id.as_str()).unwrap_or("-"),
        r.connection.as_deref().unwrap_or("-"),
        what
    )
}

fn policy_check(
    cfg: &Config,
    principal: &str,
    groups: Vec<String>,
    connection: &str,
    sql: Option<&str>,
    http: Option<&str>,
    purpose: Option<&str>,
) -> anyhow::Result<ExitCode> {
    warden_core::principal::validate_principal_id(principal).map_err(anyhow::Error::msg)?;
    if !cfg.connections.iter().any(|c| c.name == connection) {
        bail!(
            "unknown connection `{connection}` (configured: {})",
            cfg.connections
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let policy = Arc::new(Policy::new(cfg.rules.clone()));
    let p = Principal {
        id: principal.to_string(),
        groups,
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: None,
            subject: None,
        },
        on_behalf_of: None,
    };
    let mut worst = warden_core::Effect::Allow;
    let mut print = |label: &str, action: ActionClass<'_>| {
        let ex = policy.explain_with_purpose(&p, connection, &action, purpose);
        worst = worst.max(ex.decision.effect);
        println!("{label}");
        println!("  decision: {}", ex.decision.effect.as_str().to_uppercase());
        println!("  reason:   {}", ex.decision.reason);
        if !ex.decision.approvers.is_empty() {
            println!("  approvers: {}", ex.decision.approvers.join(", "));
        }
        if ex.matched.is_empty() {
            println!("  matching rules: none");
        } else {
            println!("  matching rules:");
            for m in &ex.matched {
                println!("    - {} ({}): {}", m.id, m.effect, m.why);
            }
        }
    };
    if let Some(sql) = sql {
        let stmts = warden_policy::classify(sql, warden_policy::Dialect::Postgres);
        if stmts.is_empty() {
            bail!("--sql holds no statement");
        }
        for s in &stmts {
            let kinds: Vec<&str> = s.kinds.iter().map(|k| k.as_str()).collect();
            let label = format!(
                "statement: {}\n  kinds:    {}",
                one_line(&s.text, 100),
                kinds.join(", ")
            );
            print(&label, ActionClass::Sql(s));
        }
    } else if let Some(h) = http {
        let (method, path) = h
            .split_once(' ')
            .ok_or_else(|| anyhow::anyhow!("--http must look like \"GET /path\""))?;
        print(
            &format!("request: {method} {path}"),
            ActionClass::Http {
                method,
                path: path.trim(),
            },
        );
    }
    Ok(match worst {
        warden_core::Effect::Allow => ExitCode::SUCCESS,
        warden_core::Effect::Approve => ExitCode::from(3),
        warden_core::Effect::Deny => ExitCode::from(4),
    })
}
