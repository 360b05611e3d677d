//! Just-in-time approval of single actions (issue 4).
//!
//! The pipeline asks the [`Broker`] to hold an action whose decision is `approve`; the
//! broker records `approval.requested`, notifies (webhooks, Slack), and resolves the hold
//! when enough eligible approvers decide, when one denies, on timeout, or when the
//! requester withdraws (cancel / disconnect). Every outcome is an `approval.decided`
//! record. Approver ≠ requester; approvers must match the rule's `approvers`.
//!
//! # Evidence written
//! - [`Broker::hold`]: one `approval.requested` record, committed **before** `hold`
//!   returns (an error means nothing is held: refuse the action). `principal` is the
//!   requester; `session_id`, `connection`, `protocol`, `purpose`, `action` and
//!   `decision {effect: "approve", rules}` describe what waits; `approval {id}`;
//!   `detail` says who must decide (`waiting for 1 approval(s) from group:dba`).
//! - Every vote and every end of a hold is one `approval.decided` record with the same
//!   requester/session/connection/action fields, `request_id` = the id of the
//!   `approval.requested` record, and `approval {id, approver, decision, decided_at,
//!   comment}`. `approval.decision` is exactly one of:
//!   - `approved` — the hold is approved; `approver` lists every approving principal,
//!     comma-joined (`user:dana,user:erin`), in voting order;
//!   - `denied` — one eligible approver denied; `approver` is that principal;
//!   - `timeout` — nobody decided in time (`approver` absent);
//!   - `withdrawn` — the requester gave up (cancel, disconnect) or the approval could
//!     not be made durable (`approver` absent, `detail` says why);
//!   - `approved (K of N)` — an intermediate vote when `min_approvals` = N > 1 and only
//!     K < N distinct approvers have approved so far; the hold is still pending.
//!
//!   So "how did hold X end" is the one `approval.decided` record of X whose decision is
//!   one of the four plain words; intermediate votes are there for the audit trail.
//!
//! # Who may decide
//! [`Broker::decide`] refuses, in this order: an unknown id (404), a hold that is no
//! longer pending (409), **self-approval** (403: the approver is the requester, the human
//! the requesting agent acts for (`on_behalf_of`), or an agent acting for the requester —
//! any overlap between `{approver.id, approver.on_behalf_of}` and `{requester.id,
//! requester.on_behalf_of}`), an approver matching none of the hold's `approvers`
//! (`group:X` ∈ approver.groups, or `user:X` / `agent:X` = approver.id) (403), and a
//! second vote by the same person (409). A deny by any eligible approver ends the hold.
//!
//! # Grants
//! When a hold with `grant: Some(d)` is approved, each of its rules is granted to the
//! same requester (id and `on_behalf_of`) on the same connection for `d`.
//! [`Broker::granted`] returns the granting approval id only when **every** rule of the
//! new action is covered by an unexpired grant (a grant for one rule never lets another
//! `approve` rule through).
#![forbid(unsafe_code)]

pub mod http;
mod notify;

pub use notify::{MAX_IN_FLIGHT, sign, verify_signature};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use warden_core::time_fmt::format_ts;
use warden_core::{
    ActionInfo, ApprovalInfo, DecisionInfo, Effect, EvidenceRecord, Principal, RecordKind,
};
use warden_store::Ledger;

use notify::{EventKind, Notifier};

/// What the pipeline asks to hold.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub requester: Principal,
    pub session_id: String,
    pub connection: String,
    pub protocol: String,
    pub purpose: Option<String>,
    pub action: ActionInfo,
    /// Ids of the rules whose effect was `approve`.
    pub rules: Vec<String>,
    /// `group:NAME` / `user:NAME` / `agent:NAME` allowed to decide.
    pub approvers: Vec<String>,
    /// Distinct approvals needed (max over the rules; at least 1).
    pub min_approvals: u32,
    /// If set, an approval grants the same principal × connection × rule for this long.
    pub grant: Option<Duration>,
}

/// Final state of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved {
        approvers: Vec<String>,
        comment: Option<String>,
    },
    Denied {
        approver: String,
        comment: Option<String>,
    },
    TimedOut,
    Withdrawn {
        reason: String,
    },
}

/// Returned by [`Broker::hold`].
pub struct Hold {
    /// Public approval id (shown to the client, used by `warden approvals approve ID`).
    pub id: String,
    /// Resolves once the hold is decided.
    pub outcome: tokio::sync::oneshot::Receiver<Outcome>,
}

/// How the broker behaves (from `[approvals]` in the config).
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// How long a hold waits for a decision (default 10 min).
    pub timeout: Duration,
    /// Generic webhook URLs (http:// or https://).
    pub webhooks: Vec<String>,
    /// HMAC-SHA-256 key for `Warden-Signature`; unsigned when `None`.
    pub webhook_secret: Option<String>,
    /// Slack incoming-webhook URL.
    pub slack_webhook: Option<String>,
    /// Base URL for links in notifications (the web console or the admin API),
    /// e.g. `http://127.0.0.1:8081`; default `http://127.0.0.1:8081`.
    pub console_url: Option<String>,
    /// How many decided holds stay listable (default 10 000).
    pub history: usize,
    /// Waits between notification attempts (default 1 s, 4 s, 16 s: four attempts).
    pub retry_delays: Vec<Duration>,
    /// Notification queue capacity; events beyond it are dropped and logged.
    pub notify_queue: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            timeout: Duration::from_secs(600),
            webhooks: Vec::new(),
            webhook_secret: None,
            slack_webhook: None,
            console_url: None,
            history: 10_000,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(4),
                Duration::from_secs(16),
            ],
            notify_queue: 1024,
        }
    }
}

impl BrokerSettings {
    /// Base of approve links, without a trailing `/`.
    pub fn link_base(&self) -> String {
        self.console_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:8081")
            .trim_end_matches('/')
            .to_string()
    }
}

/// State of a hold, as shown by the API (`pending`, `approved`, `denied`, `timeout`,
/// `withdrawn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
    #[serde(rename = "timeout")]
    TimedOut,
    Withdrawn,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::TimedOut => "timeout",
            State::Withdrawn => "withdrawn",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// `approve` or `deny`.
    pub decision: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A hold as the admin API, the CLI and notifications show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: String,
    pub state: State,
    /// `agent:NAME` / `user:NAME`.
    pub requester: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub session_id: String,
    pub connection: String,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `sql`, `http`, ...
    pub action_kind: String,
    /// The exact statement or request line.
    pub statement: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Option<String>>,
    pub rules: Vec<String>,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    /// Grant length in seconds, when approving also grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_secs: Option<u64>,
    pub votes: Vec<Vote>,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: String,
    /// Seconds until timeout (pending holds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_left: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// Who ended the hold (approvers for `approved`, the denier for `denied`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decided_by: Vec<String>,
    /// Why it ended that way (deny comment, withdraw reason, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What [`Broker::decide`] returns: the hold after the vote.
pub type DecisionView = ApprovalView;

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideError {
    NotFound(String),
    AlreadyDecided {
        id: String,
        state: State,
    },
    SelfApproval(String),
    NotAnApprover(String),
    DuplicateApprover(String),
    /// The decision could not be recorded durably.
    Ledger(String),
}

impl DecideError {
    /// The HTTP status the admin API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DecideError::NotFound(_) => 404,
            DecideError::AlreadyDecided { .. } | DecideError::DuplicateApprover(_) => 409,
            DecideError::SelfApproval(_) | DecideError::NotAnApprover(_) => 403,
            DecideError::Ledger(_) => 503,
        }
    }
    /// Short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DecideError::NotFound(_) => "not_found",
            DecideError::AlreadyDecided { .. } => "already_decided",
            DecideError::SelfApproval(_) => "self_approval",
            DecideError::NotAnApprover(_) => "not_an_approver",
            DecideError::DuplicateApprover(_) => "duplicate_approver",
            DecideError::Ledger(_) => "evidence_unavailable",
        }
    }
}

impl std::fmt::Display for DecideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecideError::NotFound(id) => write!(f, "no approval request `{id}`"),
            DecideError::AlreadyDecided { id, state } => {
                write!(f, "approval {id} is already decided ({state})")
            }
            DecideError::SelfApproval(m)
            | DecideError::NotAnApprover(m)
            | DecideError::DuplicateApprover(m) => f.write_str(m),
            DecideError::Ledger(m) => write!(f, "the decision could not be recorded: {m}"),
        }
    }
}

impl std::error::Error for DecideError {}

struct Entry {
    req: ApprovalRequest,
    state: State,
    votes: Vec<Vote>,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    deadline: Instant,
    decided_at: Option<OffsetDateTime>,
    decided_by: Vec<String>,
    reason: Option<String>,
    /// Id of the `approval.requested` record.
    request_record: String,
    tx: Option<tokio::sync::oneshot::Sender<Outcome>>,
}

struct Grant {
    requester: String,
    on_behalf_of: Option<String>,
    connection: String,
    rule: String,
    approval_id: String,
    until: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Decided ids, oldest first (for the history cap).
    decided: VecDeque<String>,
    grants: Vec<Grant>,
}

/// The approval broker. Cheap to share (`Arc`); all methods take `&self`.
pub struct Broker {
    ledger: Ledger,
    settings: BrokerSettings,
    inner: Mutex<Inner>,
    notifier: Notifier,
    /// Bumped on every change of a hold (see [`Broker::subscribe`]).
    changes: tokio::sync::watch::Sender<u64>,
    me: Weak<Broker>,
}

/// `apr_` + 10 characters of lowercase RFC 4648 base32 (50 random bits).
fn new_approval_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bits: u64 = rand::random();
    let mut id = String::from("apr_");
    for _ in 0..10 {
        id.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    id
}

fn identities(p: &Principal) -> Vec<&str> {
    let mut v = vec![p.id.as_str()];
    if let Some(h) = &p.on_behalf_of {
        v.push(h.as_str());
    }
    v
}

/// Does `approver` match one of `approvers` (`group:X`, `user:X`, `agent:X`)?
pub fn is_eligible(approver: &Principal, approvers: &[String]) -> bool {
    approvers.iter().any(|a| match a.strip_prefix("group:") {
        Some(g) => approver.in_group(g),
        None => a == &approver.id,
    })
}

impl Entry {
    fn view(&self, id: &str) -> ApprovalView {
        let seconds_left = (self.state == State::Pending).then(|| {
            self.deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
        });
        ApprovalView {
            id: id.to_string(),
            state: self.state,
            requester: self.req.requester.id.clone(),
            on_behalf_of: self.req.requester.on_behalf_of.clone(),
            session_id: self.req.session_id.clone(),
            connection: self.req.connection.clone(),
            protocol: self.req.protocol.clone(),
            purpose: self.req.purpose.clone(),
            action_kind: self.req.action.kind.clone(),
            statement: self.req.action.text.clone(),
            params: self.req.action.params.clone(),
            rules: self.req.rules.clone(),
            approvers: self.req.approvers.clone(),
            min_approvals: self.req.min_approvals,
            grant_secs: self.req.grant.map(|d| d.as_secs()),
            votes: self.votes.clone(),
            created_at: format_ts(self.created_at),
            expires_at: format_ts(self.expires_at),
            seconds_left,
            decided_at: self.decided_at.map(format_ts),
            decided_by: self.decided_by.clone(),
            reason: self.reason.clone(),
        }
    }

    /// An `approval.*` record describing this hold.
    fn record(&self, kind: RecordKind, id: &str) -> EvidenceRecord {
        let mut r = EvidenceRecord::new(kind);
        r.session_id = Some(self.req.session_id.clone());
        r.principal = Some(self.req.requester.clone().into());
        r.connection = Some(self.req.connection.clone());
        r.protocol = Some(self.req.protocol.clone());
        r.purpose = self.req.purpose.clone();
        r.action = Some(self.req.action.clone());
        r.decision = Some(DecisionInfo {
            effect: Effect::Approve,
            rules: self.req.rules.clone(),
            reason: None,
        });
        r.approval = Some(ApprovalInfo {
            id: id.to_string(),
            ..Default::default()
        });
        if kind == RecordKind::ApprovalDecided {
            r.request_id = Some(self.request_record.clone());
        }
        r
    }

    fn decided_record(
        &self,
        id: &str,
        approver: Option<String>,
        decision: &str,
        at: OffsetDateTime,
        comment: Option<String>,
        detail: String,
    ) -> EvidenceRecord {
        let mut r = self.record(RecordKind::ApprovalDecided, id);
        r.approval = Some(ApprovalInfo {
            id: id.to_string(),
            approver,
            decision: Some(decision.to_string()),
            decided_at: Some(format_ts(at)),
            comment,
        });
        r.detail = Some(detail);
        r
    }
}

/// Why `approver` may not vote on hold `id` now, if they may not: not pending any more,
/// self-approval (four-eyes), not an approver, or a second vote — [`Broker::decide`]'s
/// checks, in its order. Shared with [`Broker::may_decide`] so the console shows a button
/// exactly when the vote would be accepted.
fn check_voter(e: &Entry, id: &str, approver: &Principal) -> Result<(), DecideError> {
    if e.state != State::Pending {
        return Err(DecideError::AlreadyDecided {
            id: id.to_string(),
            state: e.state,
        });
    }
    let req_ids = identities(&e.req.requester);
    let app_ids = identities(approver);
    if let Some(same) = app_ids.iter().find(|a| req_ids.contains(a)) {
        let msg = if approver.id == e.req.requester.id {
            format!(
                "{} requested {id} and cannot approve or deny it: the approver must be someone else",
                approver.id
            )
        } else if e.req.requester.on_behalf_of.as_deref() == Some(approver.id.as_str()) {
            format!(
                "{id} was requested by {} acting on behalf of {}: the human behind an agent cannot approve that agent's action (four-eyes rule)",
                e.req.requester.id, approver.id
            )
        } else {
            format!(
                "{} and the requester of {id} ({}) are the same person ({same}): the approver must be someone else",
                approver.id, e.req.requester.id
            )
        };
        return Err(DecideError::SelfApproval(msg));
    }
    if !is_eligible(approver, &e.req.approvers) {
        return Err(DecideError::NotAnApprover(format!(
            "{} may not decide {id}: approvers are {} (your groups: {})",
            approver.id,
            e.req.approvers.join(", "),
            if approver.groups.is_empty() {
                "none".to_string()
            } else {
                approver.groups.join(", ")
            }
        )));
    }
    let dup = e.votes.iter().any(|v| {
        app_ids.contains(&v.approver.as_str())
            || v.on_behalf_of
                .as_deref()
                .is_some_and(|h| app_ids.contains(&h))
    });
    if dup {
        return Err(DecideError::DuplicateApprover(format!(
            "{} already voted on {id}; it needs {} distinct approver(s)",
            approver.id, e.req.min_approvals
        )));
    }
    Ok(())
}

fn approver_auth(p: &Principal) -> String {
    let method = match p.auth.method {
        warden_core::AuthMethod::WardenKey => "warden key",
        warden_core::AuthMethod::Jwt => "JWT",
    };
    let mut s = format!("{} ({method}", p.id);
    if let Some(sub) = &p.auth.subject {
        s.push_str(&format!(" {sub}"));
    }
    if let Some(iss) = &p.auth.issuer
        && p.auth.method == warden_core::AuthMethod::Jwt
    {
        s.push_str(&format!(" from {iss}"));
    }
    s.push(')');
    if let Some(h) = &p.on_behalf_of {
        s.push_str(&format!(" on behalf of {h}"));
    }
    s
}

impl Broker {
    /// A broker appending to `ledger`. Notifications start with the first event (needs a
    /// tokio runtime then).
    pub fn new(ledger: Ledger, settings: BrokerSettings) -> Arc<Broker> {
        Arc::new_cyclic(|me| Broker {
            ledger,
            notifier: Notifier::new(&settings),
            settings,
            inner: Mutex::new(Inner::default()),
            changes: tokio::sync::watch::Sender::new(0),
            me: me.clone(),
        })
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// The approve link for `id` (`<console_url>/api/v1/approvals/<id>`).
    pub fn link(&self, id: &str) -> String {
        format!("{}/api/v1/approvals/{id}", self.settings.link_base())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a standing grant (from an earlier `grant` approval) already covers this
    /// principal × connection × every one of `rules`; if so the action proceeds without
    /// a hold, and the returned approval id is the grant to cite in evidence.
    pub fn granted(
        &self,
        requester: &Principal,
        connection: &str,
        rules: &[String],
    ) -> Option<String> {
        if rules.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.grants.retain(|g| g.until > now);
        let mut found = None;
        for rule in rules {
            let g = inner.grants.iter().find(|g| {
                g.requester == requester.id
                    && g.on_behalf_of == requester.on_behalf_of
                    && g.connection == connection
                    && &g.rule == rule
            })?;
            found.get_or_insert_with(|| g.approval_id.clone());
        }
        found
    }

    /// Record `approval.requested` (durably), notify, and start the timeout.
    pub async fn hold(&self, req: ApprovalRequest) -> Result<Hold, String> {
        let mut req = req;
        if req.approvers.is_empty() {
            return Err("the rule names no approvers, so nobody could approve this".into());
        }
        req.min_approvals = req.min_approvals.max(1);
        let id = new_approval_id();
        let created_at = OffsetDateTime::now_utc();
        let timeout = self.settings.timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut entry = Entry {
            req,
            state: State::Pending,
            votes: Vec::new(),
            created_at,
            expires_at: created_at + timeout,
            deadline: Instant::now() + timeout,
            decided_at: None,
            decided_by: Vec::new(),
            reason: None,
            request_record: String::new(),
            tx: Some(tx),
        };
        let mut rec = entry.record(RecordKind::ApprovalRequested, &id);
        rec.detail = Some(format!(
            "waiting for {} approval(s) from {}",
            entry.req.min_approvals,
            entry.req.approvers.join(" or ")
        ));
        entry.request_record = rec.id.clone();
        self.ledger
            .append(rec)
            .await
            .map_err(|e| format!("cannot record approval.requested: {e}"))?;
        let view = entry.view(&id);
        self.lock().entries.insert(id.clone(), entry);
        let me = self.me.clone();
        let tid = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(b) = me.upgrade() {
                b.time_out(&tid).await;
            }
        });
        tracing::info!(approval = %id, requester = %view.requester, connection = %view.connection, "action held for approval");
        self.notifier.send(EventKind::Requested, view);
        self.changed();
        Ok(Hold { id, outcome: rx })
    }

    /// Mark `id` decided (must be pending); returns the record base + sender.
    fn finish_locked(inner: &mut Inner, id: &str, state: State, history: usize) {
        if let Some(e) = inner.entries.get_mut(id) {
            e.state = state;
            e.decided_at = Some(OffsetDateTime::now_utc());
        }
        inner.decided.push_back(id.to_string());
        while inner.decided.len() > history.max(1) {
            if let Some(old) = inner.decided.pop_front() {
                inner.entries.remove(&old);
            }
        }
    }

    async fn time_out(&self, id: &str) {
        let (rec, tx, view) = {
            let mut inner = self.lock();
            let Some(e) = inner.entries.get_mut(id) else {
                return;
            };
            if e.state != State::Pending {
                return;
            }
            let tx = e.tx.take();
            e.reason = Some(format!(
                "no decision within {}",
                humanize(self.settings.timeout)
            ));
            Self::finish_locked(&mut inner, id, State::TimedOut, self.settings.history);
            let e = &inner.entries[id];
            let rec = e.decided_record(
                id,
                None,
                "timeout",
                e.decided_at.unwrap_or_else(OffsetDateTime::now_utc),
                None,
                e.reason.clone().unwrap_or_default(),
            );
            (rec, tx, e.view(id))
        };
        if let Err(e) = self.ledger.append(rec).await {
            tracing::error!(approval = %id, error = %e, "could not record the approval timeout");
        }
        tracing::info!(approval = %id, "approval timed out");
        if let Some(tx) = tx {
            let _ = tx.send(Outcome::TimedOut);
        }
        self.notifier.send(EventKind::Decided, view);
        self.changed();
    }

    /// The requester gave up (client cancel or disconnect): records `withdrawn`.
    pub fn withdraw(&self, id: &str, reason: &str) {
        let (rec, tx, view) = {
            let mut inner = self.lock();
            let Some(e) = inner.entries.get_mut(id) else {
                return;
            };
            if e.state != State::Pending {
                return;
            }
            let tx = e.tx.take();
            e.reason = Some(reason.to_string());
            Self::finish_locked(&mut inner, id, State::Withdrawn, self.settings.history);
            let e = &inner.entries[id];
            let rec = e.decided_record(
                id,
                None,
                "withdrawn",
                e.decided_at.unwrap_or_else(OffsetDateTime::now_utc),
                None,
                format!("withdrawn by the requester: {reason}"),
            );
            (rec, tx, e.view(id))
        };
        // Background, never lost silently: the action does not run either way.
        self.ledger.append_background(rec);
        tracing::info!(approval = %id, %reason, "approval withdrawn");
        if let Some(tx) = tx {
            let _ = tx.send(Outcome::Withdrawn {
                reason: reason.to_string(),
            });
        }
        self.notifier.send(EventKind::Decided, view);
        self.changed();
    }

    /// An approver approves (`approve = true`) or denies. See the module docs for the
    /// checks and the evidence written. The vote is durable before the hold is released.
    pub async fn decide(
        &self,
        id: &str,
        approver: &Principal,
        approve: bool,
        comment: Option<String>,
    ) -> Result<DecisionView, DecideError> {
        let comment = comment
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let now = OffsetDateTime::now_utc();
        let vote = Vote {
            approver: approver.id.clone(),
            on_behalf_of: approver.on_behalf_of.clone(),
            decision: if approve { "approve" } else { "deny" }.into(),
            at: format_ts(now),
            comment: comment.clone(),
        };
        // Validate and transition under the lock, so two racing votes cannot both end it.
        let (rec, tx, outcome, final_state) = {
            let mut inner = self.lock();
            let Some(e) = inner.entries.get_mut(id) else {
                return Err(DecideError::NotFound(id.to_string()));
            };
            check_voter(e, id, approver)?;
            e.votes.push(vote);
            let auth = approver_auth(approver);
            if !approve {
                let tx = e.tx.take();
                e.decided_by = vec![approver.id.clone()];
                e.reason = Some(match &comment {
                    Some(c) => format!("denied by {}: {c}", approver.id),
                    None => format!("denied by {}", approver.id),
                });
                Self::finish_locked(&mut inner, id, State::Denied, self.settings.history);
                let e = &inner.entries[id];
                let rec = e.decided_record(
                    id,
                    Some(approver.id.clone()),
                    "denied",
                    now,
                    comment.clone(),
                    format!("denied by {auth}"),
                );
                let outcome = Outcome::Denied {
                    approver: approver.id.clone(),
                    comment: comment.clone(),
                };
                (rec, tx, Some(outcome), State::Denied)
            } else {
                let approvals: Vec<String> = e
                    .votes
                    .iter()
                    .filter(|v| v.decision == "approve")
                    .map(|v| v.approver.clone())
                    .collect();
                let n = e.req.min_approvals as usize;
                if approvals.len() >= n {
                    let tx = e.tx.take();
                    e.decided_by = approvals.clone();
                    e.reason = comment.clone();
                    Self::finish_locked(&mut inner, id, State::Approved, self.settings.history);
                    let e = &inner.entries[id];
                    let rec = e.decided_record(
                        id,
                        Some(approvals.join(",")),
                        "approved",
                        now,
                        comment.clone(),
                        format!(
                            "approved by {} ({} of {} needed; last vote by {auth})",
                            approvals.join(", "),
                            approvals.len(),
                            n
                        ),
                    );
                    let outcome = Outcome::Approved {
                        approvers: approvals,
                        comment: comment.clone(),
                    };
                    (rec, tx, Some(outcome), State::Approved)
                } else {
                    let rec = e.decided_record(
                        id,
                        Some(approver.id.clone()),
                        &format!("approved ({} of {n})", approvals.len()),
                        now,
                        comment.clone(),
                        format!(
                            "vote by {auth}; {} more approval(s) needed",
                            n - approvals.len()
                        ),
                    );
                    (rec, None, None, State::Pending)
                }
            }
        };

        if let Err(err) = self.ledger.append(rec).await {
            let msg = err.to_string();
            tracing::error!(approval = %id, error = %msg, "could not record the approval decision");
            match final_state {
                State::Pending => {
                    // Take the unrecorded vote back.
                    let mut inner = self.lock();
                    if let Some(e) = inner.entries.get_mut(id) {
                        e.votes.retain(|v| v.approver != approver.id);
                    }
                }
                State::Approved => {
                    // Fail closed: an approval that is not evidence releases nothing.
                    let reason = format!("the approval could not be recorded ({msg})");
                    {
                        let mut inner = self.lock();
                        if let Some(e) = inner.entries.get_mut(id) {
                            e.state = State::Withdrawn;
                            e.reason = Some(reason.clone());
                        }
                    }
                    self.ledger.append_background({
                        let inner = self.lock();
                        match inner.entries.get(id) {
                            Some(e) => {
                                e.decided_record(id, None, "withdrawn", now, None, reason.clone())
                            }
                            None => EvidenceRecord::new(RecordKind::ApprovalDecided),
                        }
                    });
                    if let Some(tx) = tx {
                        let _ = tx.send(Outcome::Withdrawn { reason });
                    }
                }
                _ => {
                    if let (Some(tx), Some(o)) = (tx, outcome) {
                        let _ = tx.send(o);
                    }
                }
            }
            self.changed();
            return Err(DecideError::Ledger(msg));
        }

        if final_state == State::Approved {
            let inner = &mut *self.lock();
            if let Some(e) = inner.entries.get(id)
                && let Some(d) = e.req.grant
            {
                let until = Instant::now() + d;
                for rule in &e.req.rules {
                    inner.grants.push(Grant {
                        requester: e.req.requester.id.clone(),
                        on_behalf_of: e.req.requester.on_behalf_of.clone(),
                        connection: e.req.connection.clone(),
                        rule: rule.clone(),
                        approval_id: id.to_string(),
                        until,
                    });
                }
            }
        }
        if let (Some(tx), Some(o)) = (tx, outcome) {
            let _ = tx.send(o);
        }
        let view = self
            .get(id)
            .ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        tracing::info!(approval = %id, approver = %approver.id, state = %view.state, "approval vote");
        if final_state != State::Pending {
            self.notifier.send(EventKind::Decided, view.clone());
        }
        self.changed();
        Ok(view)
    }

    /// Holds, oldest first: pending ones only, or pending and the decided history.
    pub fn list(&self, pending_only: bool) -> Vec<ApprovalView> {
        let inner = self.lock();
        let mut v: Vec<(OffsetDateTime, ApprovalView)> = inner
            .entries
            .iter()
            .filter(|(_, e)| !pending_only || e.state == State::Pending)
            .map(|(id, e)| (e.created_at, e.view(id)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        v.into_iter().map(|(_, v)| v).collect()
    }

    /// Whether `approver` may vote on `id` now (`Ok`), or why not — exactly the checks
    /// [`Broker::decide`] applies, without voting.
    pub fn may_decide(&self, id: &str, approver: &Principal) -> Result<(), DecideError> {
        let inner = self.lock();
        let e = inner
            .entries
            .get(id)
            .ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        check_voter(e, id, approver)
    }

    /// A receiver that changes whenever a hold is created, voted on or ends (for live
    /// views: the console's event stream). The value is a change counter.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// One hold (pending or in the history).
    pub fn get(&self, id: &str) -> Option<ApprovalView> {
        self.lock().entries.get(id).map(|e| e.view(id))
    }

    /// How many holds are pending.
    pub fn pending(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.state == State::Pending)
            .count()
    }
}

/// `600s` → `10m`, `90s` → `90s`.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests;
