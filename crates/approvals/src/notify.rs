//! Notifiers: generic signed webhooks and Slack incoming webhooks.
//!
//! Events are put on a bounded queue (never awaited by the data path: when the queue is
//! full the event is dropped and logged). One dispatcher task delivers them, at most
//! [`MAX_IN_FLIGHT`] deliveries at a time, each retried with backoff
//! ([`crate::BrokerSettings::retry_delays`], default 1 s, 4 s, 16 s).
//!
//! Generic webhook: `POST <url>` with `Content-Type: application/json`, body
//! `{"event": "approval.requested" | "approval.decided", "approval": <ApprovalView>,
//! "link": "<console>/api/v1/approvals/<id>"}`, and headers
//! `Warden-Timestamp: <unix seconds>` and (when `webhook_secret` is set)
//! `Warden-Signature: v1=<hex HMAC-SHA-256(secret, "<timestamp>.<body>")>`.
//! Receivers should recompute the signature and reject stale timestamps (see
//! [`verify_signature`]).
//!
//! Slack: `POST <slack_webhook>` with `{"text": ...}` naming the statement, the
//! requester, the purpose and an approve link.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};

use crate::{ApprovalView, BrokerSettings};

/// Deliveries running at once.
pub const MAX_IN_FLIGHT: usize = 8;
/// Per-attempt timeout of one delivery.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `v1=<hex HMAC-SHA-256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Check a `Warden-Signature` header (constant time) and that `timestamp` is within
/// `tolerance` of `now` (unix seconds).
pub fn verify_signature(
    secret: &str,
    timestamp: u64,
    body: &[u8],
    header: &str,
    now: u64,
    tolerance: Duration,
) -> bool {
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    let Some(hex_sig) = header.trim().strip_prefix("v1=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Requested,
    Decided,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Requested => "approval.requested",
            EventKind::Decided => "approval.decided",
        }
    }
}

struct Event {
    kind: EventKind,
    view: ApprovalView,
}

struct Targets {
    webhooks: Vec<String>,
    secret: Option<String>,
    slack: Option<String>,
    link_base: String,
    retry_delays: Vec<Duration>,
}

pub(crate) struct Notifier {
    targets: Arc<Targets>,
    capacity: usize,
    tx: OnceLock<mpsc::Sender<Event>>,
}

impl Notifier {
    pub(crate) fn new(s: &BrokerSettings) -> Notifier {
        Notifier {
            targets: Arc::new(Targets {
                webhooks: s.webhooks.clone(),
                secret: s.webhook_secret.clone(),
                slack: s.slack_webhook.clone(),
                link_base: s.link_base(),
                retry_delays: s.retry_delays.clone(),
            }),
            capacity: s.notify_queue.max(1),
            tx: OnceLock::new(),
        }
    }

    fn enabled(&self) -> bool {
        !self.targets.webhooks.is_empty() || self.targets.slack.is_some()
    }

    /// Queue an event; never waits. Dropped (and logged) when the queue is full or no
    /// tokio runtime is running.
    pub(crate) fn send(&self, kind: EventKind, view: ApprovalView) {
        if !self.enabled() {
            return;
        }
        if self.tx.get().is_none() {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                tracing::error!(approval = %view.id, "approval notification dropped: no async runtime");
                return;
            };
            let (tx, rx) = mpsc::channel(self.capacity);
            if self.tx.set(tx).is_ok() {
                handle.spawn(dispatch(rx, self.targets.clone()));
            }
        }
        let Some(tx) = self.tx.get() else { return };
        let id = view.id.clone();
        if let Err(e) = tx.try_send(Event { kind, view }) {
            tracing::error!(approval = %id, event = kind.as_str(), "approval notification dropped: {e}");
        }
    }
}

async fn dispatch(mut rx: mpsc::Receiver<Event>, targets: Arc<Targets>) {
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(ev) = rx.recv().await {
        let link = format!("{}/api/v1/approvals/{}", targets.link_base, ev.view.id);
        let mut deliveries: Vec<(String, Vec<u8>, bool)> = Vec::new();
        if !targets.webhooks.is_empty() {
            let body = serde_json::to_vec(&serde_json::json!({
                "event": ev.kind.as_str(),
                "approval": &ev.view,
                "link": &link,
            }))
            .unwrap_or_default();
            for url in &targets.webhooks {
                deliveries.push((url.clone(), body.clone(), true));
            }
        }
        if let Some(url) = &targets.slack {
            let text = slack_text(ev.kind, &ev.view, &link);
            let body = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default();
            deliveries.push((url.clone(), body, false));
        }
        for (url, body, signed) in deliveries {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let targets = targets.clone();
            let id = ev.view.id.clone();
            let kind = ev.kind;
            tokio::spawn(async move {
                deliver(&targets, &url, &body, signed, &id, kind).await;
                drop(permit);
            });
        }
    }
}

async fn deliver(
    targets: &Targets,
    url: &str,
    body: &[u8],
    signed: bool,
    id: &str,
    kind: EventKind,
) {
    let mut delays = targets.retry_delays.iter();
    let mut attempt = 1;
    loop {
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let ts_s = ts.to_string();
        let sig = match (&targets.secret, signed) {
            (Some(secret), true) => Some(sign(secret, ts, body)),
            _ => None,
        };
        let mut headers = vec![("Content-Type", "application/json")];
        if signed {
            headers.push(("Warden-Timestamp", ts_s.as_str()));
            headers.push(("Warden-Event", kind.as_str()));
        }
        if let Some(s) = &sig {
            headers.push(("Warden-Signature", s.as_str()));
        }
        let result = crate::http::request("POST", url, &headers, Some(body), ATTEMPT_TIMEOUT).await;
        let err = match result {
            Ok(r) if (200..300).contains(&r.status) => {
                tracing::debug!(approval = %id, %url, attempt, "approval notification delivered");
                return;
            }
            Ok(r) => format!("answered {}", r.status),
            Err(e) => e,
        };
        match delays.next() {
            Some(d) => {
                tracing::warn!(approval = %id, %url, attempt, "approval notification failed ({err}); retrying in {d:?}");
                tokio::time::sleep(*d).await;
                attempt += 1;
            }
            None => {
                tracing::error!(approval = %id, %url, attempt, "approval notification failed ({err}); giving up");
                return;
            }
        }
    }
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Slack message for an event.
pub(crate) fn slack_text(kind: EventKind, v: &ApprovalView, link: &str) -> String {
    let who = match &v.on_behalf_of {
        Some(h) => format!("{} (on behalf of {h})", v.requester),
        None => v.requester.clone(),
    };
    let mut statement: String = v.statement.chars().take(1500).collect();
    if statement.len() < v.statement.len() {
        statement.push('…');
    }
    let statement = slack_escape(&statement.replace("```", "'''"));
    let purpose = v.purpose.as_deref().unwrap_or("(none given)");
    match kind {
        EventKind::Requested => format!(
            ":warning: *Approval needed* `{id}`\n*{who}* wants to run on `{conn}`:\n```{statement}```\n*Purpose:* {purpose}\n*Rules:* {rules} · *Approvers:* {approvers} ({n} needed) · expires {exp}\n<{link}|Review {id}> or run `warden approvals approve {id}` / `warden approvals deny {id}`",
            id = v.id,
            who = slack_escape(&who),
            conn = slack_escape(&v.connection),
            purpose = slack_escape(purpose),
            rules = slack_escape(&v.rules.join(", ")),
            approvers = slack_escape(&v.approvers.join(", ")),
            n = v.min_approvals,
            exp = v.expires_at,
        ),
        EventKind::Decided => {
            let by = if v.decided_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", slack_escape(&v.decided_by.join(", ")))
            };
            let why = v
                .reason
                .as_deref()
                .map(|r| format!(" — {}", slack_escape(r)))
                .unwrap_or_default();
            format!(
                "Approval `{id}` *{state}*{by}{why}\n*{who}* on `{conn}`:\n```{statement}```\n<{link}|Details>",
                id = v.id,
                state = v.state,
                who = slack_escape(&who),
                conn = slack_escape(&v.connection),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_roundtrip() {
        let s = sign("k", 1_700_000_000, b"{}");
        assert!(s.starts_with("v1="));
        let d = Duration::from_secs(300);
        assert!(verify_signature(
            "k",
            1_700_000_000,
            b"{}",
            &s,
            1_700_000_010,
            d
        ));
        assert!(!verify_signature(
            "k",
            1_700_000_000,
            b"{ }",
            &s,
            1_700_000_010,
            d
        ));
        assert!(!verify_signature(
            "other",
            1_700_000_000,
            b"{}",
            &s,
            1_700_000_010,
            d
        ));
        assert!(!verify_signature(
            "k",
            1_700_000_000,
            b"{}",
            &s,
            1_700_009_999,
            d
        ));
    }
}
