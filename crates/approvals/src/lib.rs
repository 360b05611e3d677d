//! Just-in-time approval of single actions (issue 4).
//!
//! The pipeline asks the [`Broker`] to hold an action whose decision is `approve`; the
//! broker records `approval.requested`, notifies (webhooks, Slack), and resolves the hold
//! when enough eligible approvers decide, when one denies, on timeout, or when the
//! requester withdraws (cancel / disconnect). Every outcome is an `approval.decided`
//! record. Approver ≠ requester; approvers must match the rule's `approvers`.
#![forbid(unsafe_code)]

use std::time::Duration;

use warden_core::{ActionInfo, Principal};

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
    Approved { approvers: Vec<String>, comment: Option<String> },
    Denied { approver: String, comment: Option<String> },
    TimedOut,
    Withdrawn { reason: String },
}

/// Returned by [`Broker::hold`].
pub struct Hold {
    /// Public approval id (shown to the client, used by `warden approvals approve ID`).
    pub id: String,
    /// Resolves once the hold is decided.
    pub outcome: tokio::sync::oneshot::Receiver<Outcome>,
}

/// STUB: implemented by the approvals work.
pub struct Broker {
    _private: (),
}

impl Broker {
    /// Whether a standing grant (from an earlier `grant` approval) already covers this
    /// principal × connection × one of `rules`; if so the action proceeds without a hold.
    pub fn granted(&self, _requester: &Principal, _connection: &str, _rules: &[String]) -> Option<String> {
        todo!()
    }
    /// Record `approval.requested` (durably), notify, and start the timeout.
    pub async fn hold(&self, _req: ApprovalRequest) -> Result<Hold, String> {
        todo!()
    }
    /// The requester gave up (client cancel or disconnect): records `withdrawn`.
    pub fn withdraw(&self, _id: &str, _reason: &str) {
        todo!()
    }
}
