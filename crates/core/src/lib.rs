//! The protocol-neutral vocabulary every part of Warden speaks.
//!
//! Protocol adapters (PostgreSQL, later MySQL/HTTP/MCP) translate wire traffic into
//! [`Action`]s for a [`Principal`] on a [`Connection`](ConnectionRef); the policy engine turns
//! those into a [`Decision`]; the ledger stores [`EvidenceRecord`]s. Nothing here knows
//! about a wire format, SQLite or a rule file.
#![forbid(unsafe_code)]

pub mod evidence;
pub mod keys;
pub mod principal;
pub mod time_fmt;

pub use evidence::{
    ActionInfo, ApprovalInfo, DecisionInfo, EvidenceRecord, NewRecord, RecordKind, ResponseInfo,
};
pub use keys::KeyRecord;
pub use principal::{AuthInfo, AuthMethod, Principal, PrincipalKind};

/// Effect of a policy decision, ordered from least to most restrictive so that
/// `max()` over matching rules yields the most restrictive one (deny > approve > allow).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Approve,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Approve => "approve",
            Effect::Deny => "deny",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of evaluating policy for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// Ids of the rules that produced `effect` (empty when the default deny applied).
    pub rules: Vec<String>,
    /// One human-readable sentence saying why; shown to the caller on denial.
    pub reason: String,
    /// For `approve`: who may approve (`group:dba`, `user:alice`).
    pub approvers: Vec<String>,
}

impl Decision {
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision {
            effect: Effect::Deny,
            rules: Vec::new(),
            reason: reason.into(),
            approvers: Vec::new(),
        }
    }
    pub fn info(&self) -> DecisionInfo {
        DecisionInfo {
            effect: self.effect,
            rules: self.rules.clone(),
            reason: Some(self.reason.clone()),
        }
    }
}
