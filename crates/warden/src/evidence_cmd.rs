//! Verifiable evidence from the command line and in `serve`: `audit verify`,
//! `audit checkpoint`, `evidence export|verify`, `sessions list|replay`, and the
//! gateway's periodic checkpointer. Formats: `docs/evidence-format.md`.
//!
//! Exit codes of `audit verify` and `evidence verify`: 0 intact, 1 tampering or damage
//! found (the first problem is named), 2 usage or I/O error.
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use warden_core::EvidenceRecord;
use warden_store::{
    ExportFilter, PublicKey, RecordFilter, SessionFilter, SessionSummary, Signer, Store,
};

use crate::cli::{ConfigArg, load_offline};
use crate::config::Config;

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Trusted Ed25519 public key(s) (hex file, as `warden init` writes signing.pub);
    /// repeat for rotated keys. Default: signing.pub beside the configured signing key.
    #[arg(long = "public-key")]
    public_keys: Vec<PathBuf>,
    /// text (for people) or json (the full report).
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

#[derive(Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Signing key (hex seed). Default: `[gateway] signing_key`.
    #[arg(long)]
    signing_key: Option<PathBuf>,
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Seal and remove records with ts before this: RFC 3339, a date, or a span ago (90d).
    #[arg(long)]
    before: String,
    /// Where to write the sealed bundle (verified before anything is removed).
    #[arg(long)]
    out: PathBuf,
    /// Signing key (hex seed). Default: `[gateway] signing_key`.
    #[arg(long)]
    signing_key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum EvidenceCmd {
    /// Write a self-contained, signed bundle of the selected records that an auditor
    /// can verify offline with only the bundle and the public key.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        select: crate::cli::Selection,
        /// Where to write the bundle.
        #[arg(long)]
        out: PathBuf,
        /// Signing key (hex seed). Default: `[gateway] signing_key`.
        #[arg(long)]
        signing_key: Option<PathBuf>,
    },
    /// Verify a bundle with only the bundle and the trusted public key. Exit 0 intact,
    /// 1 tampered (the problem is named), 2 usage or I/O error.
    Verify {
        /// The bundle file.
        file: PathBuf,
        /// The trusted Ed25519 public key: a file with 64 hex digits, or the digits.
        #[arg(long = "public-key")]
        public_key: String,
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
    },
}

#[derive(Subcommand)]
pub enum SessionsCmd {
    /// List sessions (from the evidence store), oldest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Sessions active at or after this time (RFC 3339, date, or span ago).
        #[arg(long)]
        since: Option<String>,
        /// Sessions that started before this time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long)]
        limit: Option<u64>,
        /// Only sessions with a denied statement.
        #[arg(long)]
        has_denials: bool,
        /// Only sessions with a statement held for approval.
        #[arg(long)]
        has_approvals: bool,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Ask a running gateway's admin API instead of reading the store (credential in
        /// WARDEN_TOKEN). Through the API, --since/--until select sessions that *started*
        /// in the window, and at most 1000 (the newest) are listed.
        #[arg(long, env = "WARDEN_ADMIN_URL")]
        admin_url: Option<String>,
    },
    /// Replay one session in order: statements, decisions, denials, responses, timing.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Session id (as `sessions list` shows it; a unique prefix is enough).
        id: String,
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
        /// Ask a running gateway's admin API instead of reading the store (credential in
        /// WARDEN_TOKEN).
        #[arg(long, env = "WARDEN_ADMIN_URL")]
        admin_url: Option<String>,
    },
}

fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.store_url, &cfg.base_dir, cfg.durability)
        .with_context(|| format!("opening the store {}", cfg.store_url))
}

fn pub_path_for(key: &Path) -> PathBuf {
    key.with_extension("pub")
}

// ------------------------------------------------------------------------- signing keys

/// Load the signing key; when the file is missing, generate a key pair (the `.pub`
/// beside it) and say where.
pub fn load_or_create_signing_key(path: &Path) -> anyhow::Result<Signer> {
    if path.exists() {
        return Signer::load(path).map_err(anyhow::Error::msg);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seed: [u8; 32] = rand::random();
    let signer = Signer::from_seed(&seed);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())?;
    f.sync_all()?;
    let pub_path = pub_path_for(path);
    std::fs::write(&pub_path, format!("{}\n", signer.public().to_hex()))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    tracing::warn!(
        key = %path.display(),
        public_key = %pub_path.display(),
        fingerprint = %signer.public().fingerprint(),
        "no signing key found: generated a new Ed25519 key pair for checkpoints; publish the public key to auditors"
    );
    Ok(signer)
}

fn load_signing_key(cfg: &Config, explicit: Option<&Path>) -> anyhow::Result<Signer> {
    let path = explicit.unwrap_or(&cfg.signing_key);
    Signer::load(path)
        .map_err(anyhow::Error::msg)
        .context("the signing key is needed to sign checkpoints and bundles (`warden init` writes one; `warden serve` creates one)")
}

fn parse_public_key(arg: &str) -> anyhow::Result<PublicKey> {
    let p = Path::new(arg);
    if p.exists() {
        return PublicKey::load(p).map_err(anyhow::Error::msg);
    }
    let trimmed = arg.trim();
    if trimmed.len() == 64 && trimmed.chars().all(|c| c.is_ascii_hexdigit()) {
        return PublicKey::from_hex(trimmed).map_err(anyhow::Error::msg);
    }
    bail!("public key `{arg}`: no such file (and not 64 hex digits)")
}

// ------------------------------------------------------------------------- serve

/// The gateway's checkpointer: signs a checkpoint every interval when new records exist,
/// and once more on shutdown.
pub struct Checkpointer {
    store: Arc<Store>,
    signer: Arc<Signer>,
    task: tokio::task::JoinHandle<()>,
}

pub fn start_checkpointer(store: Arc<Store>, cfg: &Config) -> anyhow::Result<Checkpointer> {
    let signer = Arc::new(load_or_create_signing_key(&cfg.signing_key)?);
    tracing::info!(
        key = %cfg.signing_key.display(),
        fingerprint = %signer.public().fingerprint(),
        interval_s = cfg.checkpoint_interval.as_secs(),
        "signing checkpoints"
    );
    let interval = cfg.checkpoint_interval;
    let (s, k) = (store.clone(), signer.clone());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            sign_now(s.clone(), k.clone()).await;
        }
    });
    Ok(Checkpointer {
        store,
        signer,
        task,
    })
}

async fn sign_now(store: Arc<Store>, signer: Arc<Signer>) {
    match tokio::task::spawn_blocking(move || store.checkpoint(&signer)).await {
        Ok(Ok(Some(cp))) => {
            tracing::info!(tree_size = cp.tree_size, root = %cp.root, "signed checkpoint")
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot sign a checkpoint"),
        Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
    }
}

impl Checkpointer {
    /// Stop the timer and sign a final checkpoint (after the last evidence flush).
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
        sign_now(self.store, self.signer).await;
    }
}

// ------------------------------------------------------------------------- retention

/// `serve`'s retention job: once an hour (and once at start), seal and remove records
/// older than `[gateway] retention` into `retention_dir/sealed-<from>-<to>.json`.
pub fn start_retention(store: Arc<Store>, cfg: &Config) -> Option<tokio::task::JoinHandle<()>> {
    let keep = cfg.retention?;
    let dir = cfg.retention_dir.clone();
    let key = cfg.signing_key.clone();
    tracing::info!(
        retention_s = keep.as_secs(),
        dir = %dir.display(),
        "retention: records older than the retention are sealed into bundles, then removed"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (store, dir, key) = (store.clone(), dir.clone(), key.clone());
            let before = warden_core::time_fmt::format_ts(time::OffsetDateTime::now_utc() - keep);
            let done = tokio::task::spawn_blocking(move || {
                let signer = Signer::load(&key).map_err(anyhow::Error::msg)?;
                Ok::<_, anyhow::Error>(store.prune(
                    &before,
                    &signer,
                    &format!("warden {}", env!("CARGO_PKG_VERSION")),
                    &mut |a, b| dir.join(format!("sealed-{a}-{b}.json")),
                )?)
            })
            .await;
            match done {
                Ok(Ok(Some(s))) => tracing::info!(
                    from = s.seal.from_seq,
                    up_to = s.seal.up_to_seq,
                    bundle = %s.bundle_path.display(),
                    sha256 = %s.seal.bundle_sha256,
                    "retention: sealed and removed {} record(s)", s.records
                ),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "retention: nothing removed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
            }
        }
    }))
}

pub fn audit_prune(args: PruneArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_offline(&args.config)?;
    let signer = load_signing_key(&cfg, args.signing_key.as_deref())?;
    let store = open_store(&cfg)?;
    let out = args.out.clone();
    let done = store.prune(
        &args.before,
        &signer,
        &format!("warden {}", env!("CARGO_PKG_VERSION")),
        &mut |_, _| out.clone(),
    )?;
    match done {
        Some(s) => {
            println!(
                "sealed records {}..{} ({} record(s)) into {} ({} bytes, sha256 {}), verified; removed them",
                s.seal.from_seq,
                s.seal.up_to_seq,
                s.records,
                s.bundle_path.display(),
                s.bundle_bytes,
                s.seal.bundle_sha256
            );
            println!(
                "retention.sealed record {}; the chain continues from hash {}; bundle checkpoint tree_size {}",
                s.record_seq, s.seal.last_hash, s.checkpoint.tree_size
            );
        }
        None => println!(
            "nothing to prune: no unsealed record before {}",
            args.before
        ),
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------- audit

fn progress_printer() -> impl FnMut(u64, u64) {
    let tty = std::io::stderr().is_terminal();
    move |done, total| {
        if tty && total > 0 {
            let pct = done * 100 / total;
            let width = 30usize;
            let filled = (pct as usize * width) / 100;
            eprint!(
                "\rverifying [{}{}] {done}/{total} records ({pct}%)",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            if done >= total {
                eprintln!();
            }
        }
    }
}

pub fn audit_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_offline(&args.config)?;
    let mut keys = Vec::new();
    let mut key_note = String::new();
    if args.public_keys.is_empty() {
        let default_pub = pub_path_for(&cfg.signing_key);
        if default_pub.exists() {
            keys.push(PublicKey::load(&default_pub).map_err(anyhow::Error::msg)?);
            key_note = format!("key {}", default_pub.display());
        } else if cfg.signing_key.exists() {
            let s = Signer::load(&cfg.signing_key).map_err(anyhow::Error::msg)?;
            keys.push(s.public().clone());
            key_note = format!("the public half of {}", cfg.signing_key.display());
        }
    } else {
        for p in &args.public_keys {
            keys.push(PublicKey::load(p).map_err(anyhow::Error::msg)?);
        }
        key_note = format!("{} given key(s)", keys.len());
    }
    let store = open_store(&cfg)?;
    let mut progress = progress_printer();
    let report = store.verify_evidence(&keys, &mut progress)?;
    if args.format == OutFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(if report.problem.is_some() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    match &report.problem {
        None => {
            println!(
                "OK: {} record(s), chain intact; head seq {} hash {}",
                report.records, report.head_seq, report.head_hash
            );
            if let Some(seal) = &report.latest_seal {
                println!(
                    "retention: records 1..{} sealed by {} seal(s) ({}); the latest ({}..{}) is bundle {} sha256 {}, recorded as record {}; {} checkpoint(s) covered by seal {}",
                    report.sealed_up_to,
                    report.seals,
                    if report.signatures_checked {
                        "signatures checked"
                    } else {
                        "signatures NOT checked"
                    },
                    seal.from_seq,
                    seal.up_to_seq,
                    seal.bundle_name,
                    seal.bundle_sha256,
                    seal.record_seq,
                    report.checkpoints_covered_by_seal,
                    seal.up_to_seq
                );
            }
            match &report.latest_checkpoint {
                Some(cp) => println!(
                    "checkpoints: {} verified ({}); latest covers seq 1..{} signed {}; {} record(s) after it not yet checkpointed",
                    report.checkpoints_verified,
                    if report.signatures_checked {
                        format!("roots and signatures, with {key_note}")
                    } else {
                        "roots only: no public key, signatures NOT checked".into()
                    },
                    cp.tree_size,
                    cp.ts,
                    report.unsigned_tail
                ),
                None => println!(
                    "checkpoints: none yet ({} record(s) not covered by a signature)",
                    report.unsigned_tail
                ),
            }
            if !report.signatures_checked && report.checkpoints_verified > 0 {
                eprintln!(
                    "warning: no public key (pass --public-key FILE): checkpoint signatures were not checked"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            println!("FAILED at seq {} ({}): {}", p.seq, p.kind.as_str(), p.what);
            println!(
                "({} record(s) and {} checkpoint(s) verified before it)",
                report.records, report.checkpoints_verified
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub fn audit_checkpoint(args: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_offline(&args.config)?;
    let signer = load_signing_key(&cfg, args.signing_key.as_deref())?;
    let store = open_store(&cfg)?;
    match store.checkpoint(&signer)? {
        Some(cp) => println!(
            "signed checkpoint: tree_size {} root {} head {} at {} (key {})",
            cp.tree_size, cp.root, cp.head_hash, cp.ts, cp.key_fingerprint
        ),
        None => println!("no new records since the latest checkpoint; nothing to sign"),
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------- evidence

pub fn evidence(cmd: EvidenceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        EvidenceCmd::Export {
            config,
            select,
            out,
            signing_key,
        } => {
            select.check_kind()?;
            let cfg = load_offline(&config)?;
            let signer = load_signing_key(&cfg, signing_key.as_deref())?;
            let store = open_store(&cfg)?;
            let crate::cli::Selection {
                since,
                until,
                principal,
                connection,
                kind,
            } = select;
            let filter = ExportFilter {
                since,
                until,
                principal,
                connection,
                kind,
            };
            let (bundle, summary) = store.export_bundle(
                &filter,
                &signer,
                &format!("warden {}", env!("CARGO_PKG_VERSION")),
            )?;
            let bytes = warden_store::bundle::bundle_bytes(&bundle);
            write_atomically(&out, &bytes)?;
            eprintln!(
                "wrote {} ({} bytes): {} record(s){}, checkpoint tree_size {}{}, key {}",
                out.display(),
                bytes.len(),
                summary.records,
                match (summary.first_seq, summary.last_seq) {
                    (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
                    _ => String::new(),
                },
                summary.checkpoint.tree_size,
                if summary.fresh_checkpoint {
                    " (signed now)"
                } else {
                    ""
                },
                signer.public().fingerprint()
            );
            Ok(ExitCode::SUCCESS)
        }
        EvidenceCmd::Verify {
            file,
            public_key,
            format,
        } => {
            let key = parse_public_key(&public_key)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let result = warden_store::verify_bundle(&bytes, &key);
            if format == OutFormat::Json {
                let v = match &result {
                    Ok(r) => serde_json::json!({
                        "ok": true, "records": r.records, "first_seq": r.first_seq,
                        "last_seq": r.last_seq, "checkpoint": r.checkpoint,
                        "contiguous": r.contiguous, "prior_checkpoint": r.prior_checkpoint,
                        "manifest": r.manifest,
                    }),
                    Err(e) => serde_json::json!({"ok": false, "problem": e}),
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                match &result {
                    Ok(r) => {
                        println!(
                            "OK: {} record(s){} verified against checkpoint tree_size {} signed {} by key {}",
                            r.records,
                            match (r.first_seq, r.last_seq) {
                                (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
                                _ => String::new(),
                            },
                            r.checkpoint.tree_size,
                            r.checkpoint.ts,
                            key.fingerprint()
                        );
                        println!(
                            "records are {}{}",
                            if r.contiguous {
                                "one contiguous run of the chain (nothing between them is missing)"
                            } else {
                                "a filtered selection (each proven included; records between them not shown)"
                            },
                            r.prior_checkpoint
                                .map(|p| format!("; checkpoint extends prior checkpoint {p} (consistency proof OK)"))
                                .unwrap_or_default()
                        );
                    }
                    Err(e) => println!("FAILED: {e}"),
                }
            }
            Ok(if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

// ------------------------------------------------------------------------- sessions

pub fn sessions(cmd: SessionsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionsCmd::List {
            config,
            since,
            until,
            principal,
            connection,
            limit,
            has_denials,
            has_approvals,
            format,
            admin_url,
        } => {
            let list = match admin_url {
                Some(url) => {
                    let mut q = vec![];
                    for (k, v) in [
                        ("since", since),
                        ("until", until),
                        ("principal", principal),
                        ("connection", connection),
                        ("limit", limit.map(|l| l.to_string())),
                        ("has_denials", has_denials.then(|| "true".into())),
                        ("has_approvals", has_approvals.then(|| "true".into())),
                    ] {
                        if let Some(v) = v {
                            q.push(format!("{k}={}", query_escape(&v)));
                        }
                    }
                    let path = format!("/api/v1/sessions?{}", q.join("&"));
                    let v = match admin_get(url, &path)? {
                        Ok(v) => v,
                        Err(code) => return Ok(code),
                    };
                    let mut list: Vec<SessionSummary> =
                        serde_json::from_value(v["sessions"].clone())
                            .context("unexpected answer from the admin API")?;
                    list.reverse(); // the API answers newest first; print oldest first
                    list
                }
                None => {
                    let cfg = load_offline(&config)?;
                    let store = open_store(&cfg)?;
                    let mut list = store.sessions(&SessionFilter {
                        since,
                        until,
                        principal,
                        connection,
                        limit: if has_denials || has_approvals {
                            None
                        } else {
                            limit
                        },
                    })?;
                    list.retain(|s| {
                        (!has_denials || s.denied > 0) && (!has_approvals || s.approvals > 0)
                    });
                    if let Some(l) = limit {
                        list.truncate(usize::try_from(l).unwrap_or(usize::MAX));
                    }
                    list
                }
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match format {
                ListFormat::Json => {
                    for s in &list {
                        writeln!(out, "{}", serde_json::to_string(s)?)?;
                    }
                }
                ListFormat::Table => {
                    writeln!(
                        out,
                        "{:<32} {:<22} {:<12} {:<24} {:>9} {:>5} {:>6} {:>4} STATE",
                        "SESSION",
                        "PRINCIPAL",
                        "CONNECTION",
                        "STARTED",
                        "DURATION",
                        "REQS",
                        "DENIED",
                        "ERR"
                    )?;
                    for s in &list {
                        writeln!(
                            out,
                            "{:<32} {:<22} {:<12} {:<24} {:>9} {:>5} {:>6} {:>4} {}",
                            s.session_id,
                            s.principal.as_deref().unwrap_or("-"),
                            s.connection.as_deref().unwrap_or("-"),
                            short_ts(&s.started_at),
                            duration(
                                &s.started_at,
                                s.ended_at.as_deref().unwrap_or(&s.last_activity)
                            ),
                            s.requests,
                            s.denied,
                            s.errors,
                            if s.ended_at.is_some() {
                                "ended"
                            } else {
                                "open"
                            }
                        )?;
                    }
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        SessionsCmd::Replay {
            id,
            format,
            admin_url: Some(url),
            ..
        } => {
            let path = format!("/api/v1/sessions/{}", query_escape(&id));
            let v = match admin_get(url, &path)? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            let summary: SessionSummary = serde_json::from_value(v["session"].clone())
                .context("unexpected answer from the admin API")?;
            let records: Vec<EvidenceRecord> = serde_json::from_value(v["records"].clone())
                .context("unexpected answer from the admin API")?;
            print_replay(&summary, &records, format)
        }
        SessionsCmd::Replay {
            config,
            id,
            format,
            admin_url: None,
        } => {
            let cfg = load_offline(&config)?;
            let store = open_store(&cfg)?;
            let all = store.sessions(&SessionFilter::default())?;
            let matches: Vec<&SessionSummary> = all
                .iter()
                .filter(|s| s.session_id == id || s.session_id.starts_with(&id))
                .collect();
            let summary = match matches.as_slice() {
                [] => bail!("no session `{id}` (see `warden sessions list`)"),
                [one] => (*one).clone(),
                many => match many.iter().find(|s| s.session_id == id) {
                    Some(s) => (*s).clone(),
                    None => bail!(
                        "`{id}` matches {} sessions; give more of the id",
                        many.len()
                    ),
                },
            };
            let mut records = Vec::new();
            store.query(
                &RecordFilter {
                    session_id: Some(summary.session_id.clone()),
                    ..Default::default()
                },
                &mut |r| {
                    records.push(r);
                    true
                },
            )?;
            print_replay(&summary, &records, format)
        }
    }
}

fn print_replay(
    summary: &SessionSummary,
    records: &[EvidenceRecord],
    format: OutFormat,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if format == OutFormat::Json {
        let v = serde_json::json!({"session": summary, "records": records});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        render_replay(&mut out, summary, records)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Percent-encode a query or path value.
fn query_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// GET `path` from the admin API (the same client as `warden approvals`): the JSON
/// answer, or the exit code after explaining a refusal.
fn admin_get(url: String, path: &str) -> anyhow::Result<Result<serde_json::Value, ExitCode>> {
    let admin = crate::approvals_cmd::AdminArgs { admin_url: url };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, v) = rt.block_on(crate::approvals_cmd::call(&admin, "GET", path, None))?;
    Ok(match crate::approvals_cmd::refusal(status, &v, None) {
        Some(code) => Err(code),
        None => Ok(v),
    })
}

fn parse_ts(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn short_ts(s: &str) -> String {
    // 2026-11-27T10:00:00.123456789Z -> 2026-11-27 10:00:00
    s.get(..19)
        .map(|x| x.replace('T', " "))
        .unwrap_or_else(|| s.to_string())
}

fn duration(a: &str, b: &str) -> String {
    match (parse_ts(a), parse_ts(b)) {
        (Some(a), Some(b)) => human((b - a).as_seconds_f64()),
        _ => "-".into(),
    }
}

fn human(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1000.0)
    } else if secs < 120.0 {
        format!("{secs:.1}s")
    } else if secs < 7200.0 {
        format!("{:.1}m", secs / 60.0)
    } else {
        format!("{:.1}h", secs / 3600.0)
    }
}

fn flat(s: &str, max: usize) -> String {
    let f: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if f.chars().count() > max {
        format!("{}…", f.chars().take(max).collect::<String>())
    } else {
        f
    }
}

fn render_replay(
    out: &mut impl Write,
    s: &SessionSummary,
    records: &[EvidenceRecord],
) -> std::io::Result<()> {
    writeln!(out, "session {}", s.session_id)?;
    writeln!(
        out,
        "  {} on {}{}{}{}",
        s.principal.as_deref().unwrap_or("(unknown principal)"),
        s.connection.as_deref().unwrap_or("(no connection)"),
        s.protocol
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        s.client
            .as_deref()
            .map(|c| format!(" from {c}"))
            .unwrap_or_default(),
        s.purpose
            .as_deref()
            .map(|p| format!(", purpose: {p}"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "  started {}, {} ({}), {} statement(s), {} denied, {} error(s), records seq {}..{}",
        s.started_at,
        match &s.ended_at {
            Some(e) => format!("ended {e}"),
            None => "no session.end (open, or the gateway stopped)".into(),
        },
        duration(
            &s.started_at,
            s.ended_at.as_deref().unwrap_or(&s.last_activity)
        ),
        s.requests,
        s.denied,
        s.errors,
        s.first_seq,
        s.last_seq
    )?;
    writeln!(out)?;
    let t0 = parse_ts(&s.started_at);
    let mut request_seq: std::collections::HashMap<&str, u64> = Default::default();
    let mut last_request: Option<&str> = None;
    for r in records {
        let offset = match (t0, parse_ts(&r.ts)) {
            (Some(a), Some(b)) => format!("+{:>9.3}s", (b - a).as_seconds_f64()),
            _ => format!("{:>11}", "?"),
        };
        let head = format!("{offset} #{:<6}", r.seq);
        let decision = r.decision.as_ref().map(|d| {
            format!(
                "[{}{}{}]",
                d.effect.as_str(),
                if d.rules.is_empty() {
                    String::new()
                } else {
                    format!(": {}", d.rules.join(", "))
                },
                d.reason
                    .as_deref()
                    .map(|x| format!(" — {}", flat(x, 60)))
                    .unwrap_or_default()
            )
        });
        let line = match r.kind {
            warden_core::RecordKind::ActionRequest => {
                request_seq.insert(&r.id, r.seq);
                last_request = Some(&r.id);
                let a = r.action.as_ref();
                let params = a
                    .filter(|a| !a.params.is_empty())
                    .map(|a| {
                        let ps: Vec<String> = a
                            .params
                            .iter()
                            .map(|p| {
                                p.as_deref()
                                    .map(|v| format!("'{}'", flat(v, 30)))
                                    .unwrap_or("NULL".into())
                            })
                            .collect();
                        format!("  params ({})", ps.join(", "))
                    })
                    .unwrap_or_default();
                format!(
                    "-> {}{params}  {}",
                    a.map(|a| flat(&a.text, 100)).unwrap_or_default(),
                    decision.unwrap_or_default()
                )
            }
            warden_core::RecordKind::ActionResponse => {
                let resp = r.response.as_ref();
                let mut parts = Vec::new();
                if let Some(resp) = resp {
                    parts.push(resp.status.to_uppercase());
                    if let Some(t) = &resp.tag {
                        parts.push(t.clone());
                    }
                    if let (Some(c), Some(m)) = (&resp.error_code, &resp.error_message) {
                        parts.push(format!("{c} {}", flat(m, 80)));
                    }
                    parts.push(format!("{} row(s)", resp.rows));
                    parts.push(format!("{} B", resp.bytes));
                    if let Some(d) = resp.duration_us {
                        parts.push(format!("{:.3} ms", d as f64 / 1000.0));
                    }
                    if !resp.masked_values.is_empty() {
                        let m: Vec<String> = resp
                            .masked_values
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        parts.push(format!("masked {}", m.join(",")));
                    }
                }
                let answers = r.request_id.as_deref();
                let for_note = match answers {
                    Some(id) if Some(id) != last_request => request_seq
                        .get(id)
                        .map(|s| format!(" (answers #{s})"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let masked = resp
                    .and_then(|x| x.masked.as_ref())
                    .map(|m| format!("\n{:>19}masked result: {}", "", flat(&m.to_string(), 200)))
                    .unwrap_or_default();
                format!("   <- {}{for_note}{masked}", parts.join(" · "))
            }
            warden_core::RecordKind::PolicyDenied => format!(
                "xx DENIED {}  {}",
                r.action
                    .as_ref()
                    .map(|a| flat(&a.text, 100))
                    .unwrap_or_default(),
                decision.unwrap_or_default()
            ),
            warden_core::RecordKind::SessionStart => format!(
                "session.start{}",
                r.principal
                    .as_ref()
                    .map(|p| format!(
                        " auth {}{}",
                        serde_json::to_value(p.auth.method)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        if p.groups.is_empty() {
                            String::new()
                        } else {
                            format!(", groups {}", p.groups.join(","))
                        }
                    ))
                    .unwrap_or_default()
            ),
            other => {
                let mut x = other.as_str().to_string();
                if let Some(a) = &r.approval {
                    x.push_str(&format!(
                        " {} {}{}",
                        a.id,
                        a.decision.as_deref().unwrap_or(""),
                        a.approver
                            .as_deref()
                            .map(|p| format!(" by {p}"))
                            .unwrap_or_default()
                    ));
                }
                if let Some(d) = &decision {
                    x.push_str(&format!(" {d}"));
                }
                if let Some(d) = &r.detail {
                    x.push_str(&format!(" — {}", flat(d, 120)));
                }
                x
            }
        };
        writeln!(out, "{head} {line}")?;
    }
    Ok(())
}
