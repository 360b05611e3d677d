//! `warden approvals list|approve|deny`: talk to a running gateway's admin API.
//!
//! The caller's credential (a Warden key or a JWT) comes from `WARDEN_TOKEN`; the gateway
//! from `--admin-url` / `WARDEN_ADMIN_URL` (default `http://127.0.0.1:8081`).
//! Exit codes: 0 done; 1 refused by the gateway (not allowed, unknown id, already
//! decided, bad credential); 2 usage or connection problems.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use warden_approvals::{ApprovalView, State, http};

#[derive(Args, Clone)]
pub struct AdminArgs {
    /// The gateway's admin API.
    #[arg(
        long,
        env = "WARDEN_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub(crate) admin_url: String,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    /// One approval per line.
    Json,
}

#[derive(Subcommand)]
pub enum ApprovalsCmd {
    /// List approval requests: pending ones and recently decided ones, oldest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only requests still waiting for a decision.
        #[arg(long)]
        pending: bool,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Approve a held action (you must be one of its approvers, and not its requester).
    Approve {
        /// The approval id (apr_...), as shown to the client and by `approvals list`.
        id: String,
        /// Why (recorded as evidence).
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deny a held action: it fails and never runs.
    Deny {
        /// The approval id (apr_...).
        id: String,
        /// Why (recorded as evidence and shown to the requester).
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn token() -> anyhow::Result<String> {
    match std::env::var("WARDEN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "set WARDEN_TOKEN to your credential (a Warden key from `warden keys create`, or a JWT from your identity provider): the admin API acts as you"
        ),
    }
}

/// The admin API's answer: status and JSON body.
pub(crate) async fn call(
    admin: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let token = token()?;
    let url = format!("{}{path}", admin.admin_url.trim_end_matches('/'));
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/json"),
    ];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http::request(method, &url, &headers, body, TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway's admin API: {e} (is `warden serve` running? set --admin-url or WARDEN_ADMIN_URL)"))?;
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| serde_json::json!({ "error": r.text() }));
    Ok((r.status, v))
}

/// Explain a refusal on stderr; `Some(exit code)` when the status is not success.
pub(crate) fn refusal(status: u16, v: &serde_json::Value, id: Option<&str>) -> Option<ExitCode> {
    if (200..300).contains(&status) {
        return None;
    }
    let msg = v["error"].as_str().unwrap_or("(no details)");
    let what = match status {
        401 => "the admin API rejected the credential in WARDEN_TOKEN".to_string(),
        403 => "refused".to_string(),
        404 => match id {
            Some(id) => format!("no approval request `{id}` (see `warden approvals list`)"),
            None => "not found".to_string(),
        },
        409 => "too late".to_string(),
        s => format!("the admin API answered {s}"),
    };
    eprintln!("warden: {what}: {msg}");
    Some(ExitCode::from(if status >= 500 { 2 } else { 1 }))
}

pub fn approvals(cmd: ApprovalsCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cmd))
}

async fn run(cmd: ApprovalsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCmd::List {
            admin,
            pending,
            format,
        } => {
            let path = if pending {
                "/api/v1/approvals?pending=true"
            } else {
                "/api/v1/approvals"
            };
            let (status, v) = call(&admin, "GET", path, None).await?;
            if let Some(code) = refusal(status, &v, None) {
                return Ok(code);
            }
            let list: Vec<ApprovalView> = serde_json::from_value(v["approvals"].clone())
                .context("unexpected answer from the admin API")?;
            match format {
                ListFormat::Json => {
                    for a in &list {
                        println!("{}", serde_json::to_string(a)?);
                    }
                }
                ListFormat::Table => print_table(&list),
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Approve { id, comment, admin } => decide(&admin, &id, true, comment).await,
        ApprovalsCmd::Deny { id, comment, admin } => decide(&admin, &id, false, comment).await,
    }
}

async fn decide(
    admin: &AdminArgs,
    id: &str,
    approve: bool,
    comment: Option<String>,
) -> anyhow::Result<ExitCode> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("`{id}` is not an approval id (they look like apr_abcdefghij)");
    }
    let body = serde_json::to_vec(&serde_json::json!({ "comment": comment }))?;
    let verb = if approve { "approve" } else { "deny" };
    let (status, v) = call(
        admin,
        "POST",
        &format!("/api/v1/approvals/{id}/{verb}"),
        Some(&body),
    )
    .await?;
    if let Some(code) = refusal(status, &v, Some(id)) {
        return Ok(code);
    }
    let a: ApprovalView =
        serde_json::from_value(v).context("unexpected answer from the admin API")?;
    match a.state {
        State::Approved => println!(
            "approved {}: {} may now run `{}` on {} (approved by {})",
            a.id,
            a.requester,
            one_line(&a.statement, 80),
            a.connection,
            a.decided_by.join(", ")
        ),
        State::Denied => println!(
            "denied {}: `{}` by {} on {} will not run",
            a.id,
            one_line(&a.statement, 80),
            a.requester,
            a.connection
        ),
        State::Pending => {
            let approvals = a.votes.iter().filter(|v| v.decision == "approve").count();
            println!(
                "vote recorded on {}: {approvals} of {} approval(s); still waiting for {} more from {}",
                a.id,
                a.min_approvals,
                (a.min_approvals as usize).saturating_sub(approvals),
                a.approvers.join(", ")
            );
        }
        other => println!("{}: {other}", a.id),
    }
    Ok(ExitCode::SUCCESS)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let mut t: String = flat.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        flat
    }
}

fn print_table(list: &[ApprovalView]) {
    if list.is_empty() {
        println!("no approval requests");
        return;
    }
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|a| {
            let approvals = a.votes.iter().filter(|v| v.decision == "approve").count();
            let requester = match &a.on_behalf_of {
                Some(h) => format!("{} (for {h})", a.requester),
                None => a.requester.clone(),
            };
            let when = match (a.state, a.seconds_left) {
                (State::Pending, Some(s)) => format!("{}m{:02}s left", s / 60, s % 60),
                _ => a
                    .decided_at
                    .as_deref()
                    .map(|t| t.get(..19).unwrap_or(t).replace('T', " "))
                    .unwrap_or_default(),
            };
            [
                a.id.clone(),
                a.state.to_string(),
                requester,
                a.connection.clone(),
                format!("{approvals}/{}", a.min_approvals),
                when,
                one_line(&a.statement, 60),
            ]
        })
        .collect();
    let header = [
        "ID",
        "STATE",
        "REQUESTER",
        "CONNECTION",
        "VOTES",
        "WHEN",
        "STATEMENT",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
