//! The shared pipeline: authenticate → decide → record → (adapter forwards) → record.
//!
//! Protocol adapters call this crate with protocol-neutral values (a claimed user name,
//! a secret, a statement text) and never touch the store, the policy engine or the
//! identity provider directly. Invariants enforced here:
//! - an action is forwarded only after its `action.request` record is committed
//!   ([`Session::record_request`] returns an error otherwise — the adapter must refuse);
//! - credentials never reach a record: failures are described, not quoted;
//! - no rule ⇒ deny (delegated to `warden_policy`).
#![forbid(unsafe_code)]

mod auth;
mod session;
pub mod spec;
mod sql_cache;

pub use auth::{AuthFailure, AuthPlan};
pub use session::{HoldOutcome, RequestId, Session, SessionEnd};
pub use spec::{ConnectionSpec, Protocol, UpstreamTls};
pub use warden_masking;

use std::collections::HashMap;
use std::sync::Arc;

use warden_core::{EvidenceRecord, Principal, RecordKind};
use warden_identity::JwtValidator;
use warden_policy::Policy;
use warden_store::{Ledger, Store};

/// Per-rule approval settings (`min_approvals`, `grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleApproval {
    pub min_approvals: u32,
    pub grant: Option<std::time::Duration>,
}

/// The approval broker and the rule settings it needs. Without it, `approve` decisions
/// are refused (fail closed).
pub struct Approvals {
    pub broker: Arc<warden_approvals::Broker>,
    pub rules: HashMap<String, RuleApproval>,
    /// The hold timeout, shown to the waiting client.
    pub timeout: std::time::Duration,
}

/// Everything a running gateway decides with. Cheap to share (`Arc`).
pub struct Pipeline {
    connections: HashMap<String, Arc<ConnectionSpec>>,
    policy: Policy,
    store: Arc<Store>,
    ledger: Ledger,
    jwt: Option<JwtValidator>,
    approvals: Option<Approvals>,
    masker: Option<warden_masking::Masker>,
    limits: EvidenceLimits,
    /// Classified statement texts (`classify` / `classify_one`), see `sql_cache`.
    sql_cache: sql_cache::SqlCache<Arc<[warden_policy::StatementInfo]>>,
    one_cache: sql_cache::SqlCache<Arc<warden_policy::StatementInfo>>,
    /// Simple-protocol texts that differ only in literals share a parse, see `sql_cache`.
    shape_cache: sql_cache::ShapeCache,
}

/// How much of each response the evidence keeps (after masking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceLimits {
    pub response_rows: usize,
    pub response_bytes: usize,
}

impl Default for EvidenceLimits {
    fn default() -> Self {
        EvidenceLimits {
            response_rows: 20,
            response_bytes: 16 * 1024,
        }
    }
}

/// Everything [`Pipeline::build`] needs.
pub struct PipelineParts {
    pub connections: Vec<ConnectionSpec>,
    pub policy: Policy,
    pub store: Arc<Store>,
    pub jwt: Option<JwtValidator>,
    pub approvals: Option<Approvals>,
    pub masker: Option<warden_masking::Masker>,
    pub limits: EvidenceLimits,
}

impl Pipeline {
    pub fn new(
        connections: Vec<ConnectionSpec>,
        policy: Policy,
        store: Arc<Store>,
        jwt: Option<JwtValidator>,
        approvals: Option<Approvals>,
    ) -> Arc<Pipeline> {
        Self::build(PipelineParts {
            connections,
            policy,
            store,
            jwt,
            approvals,
            masker: None,
            limits: EvidenceLimits::default(),
        })
    }

    pub fn build(p: PipelineParts) -> Arc<Pipeline> {
        let ledger = p.store.ledger();
        Arc::new(Pipeline {
            connections: p
                .connections
                .into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
            policy: p.policy,
            store: p.store,
            ledger,
            jwt: p.jwt,
            approvals: p.approvals,
            masker: p.masker,
            limits: p.limits,
            sql_cache: Default::default(),
            one_cache: Default::default(),
            shape_cache: Default::default(),
        })
    }

    /// The masking that applies to `connection`, if any rule covers it.
    pub fn masker_for(&self, connection: &str) -> Option<warden_masking::ConnectionMasker> {
        self.masker.as_ref()?.for_connection(connection)
    }

    pub fn evidence_limits(&self) -> EvidenceLimits {
        self.limits
    }

    pub fn approvals(&self) -> Option<&Approvals> {
        self.approvals.as_ref()
    }

    pub fn connection(&self, name: &str) -> Option<Arc<ConnectionSpec>> {
        self.connections.get(name).cloned()
    }

    /// Every configured connection (unordered).
    pub fn connections(&self) -> impl Iterator<Item = &Arc<ConnectionSpec>> {
        self.connections.values()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// May this principal use this connection at all?
    pub fn may_connect(&self, p: &Principal, connection: &str) -> bool {
        self.policy.may_connect(p, connection)
    }

    /// Record a failed authentication (durably; the caller then refuses the client).
    pub async fn record_auth_failed(
        &self,
        claimed: &str,
        connection: Option<&str>,
        protocol: &str,
        client: &str,
        reason: &str,
    ) {
        let mut r = EvidenceRecord::new(RecordKind::AuthFailed);
        r.connection = connection.map(str::to_string);
        r.protocol = Some(protocol.to_string());
        r.client = Some(client.to_string());
        r.detail = Some(format!("claimed `{}`: {reason}", sanitize_claim(claimed)));
        if let Err(e) = self.ledger.append(r).await {
            tracing::error!(error = %e, "could not record auth.failed");
        }
    }

    /// Record a session refused after authentication (no access, unknown connection,
    /// upstream down).
    pub async fn record_session_refused(
        &self,
        principal: Option<&Principal>,
        connection: &str,
        protocol: &str,
        client: &str,
        reason: &str,
    ) {
        let mut r = EvidenceRecord::new(RecordKind::SessionRefused);
        r.principal = principal.map(|p| Arc::new(p.clone()));
        r.connection = Some(connection.to_string());
        r.protocol = Some(protocol.to_string());
        r.client = Some(client.to_string());
        r.detail = Some(reason.to_string());
        if let Err(e) = self.ledger.append(r).await {
            tracing::error!(error = %e, "could not record session.refused");
        }
    }

    /// Record malformed input from a client (background: the connection is closing anyway).
    pub fn record_protocol_error(
        &self,
        session_id: Option<&str>,
        connection: Option<&str>,
        protocol: &str,
        client: &str,
        what: &str,
    ) {
        let mut r = EvidenceRecord::new(RecordKind::ProtocolError);
        r.session_id = session_id.map(str::to_string);
        r.connection = connection.map(str::to_string);
        r.protocol = Some(protocol.to_string());
        r.client = Some(client.to_string());
        r.detail = Some(what.to_string());
        self.ledger.append_background(r);
    }
}

/// A claimed user name goes into evidence, but a client may put anything there (even a
/// pasted secret): keep it short and printable, and never echo something key-shaped.
fn sanitize_claim(s: &str) -> String {
    if s.starts_with("wk_") || JwtValidator::looks_like_jwt(s) {
        return "<credential-like value withheld>".into();
    }
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(128).collect();
    if s.chars().count() > 128 {
        out.push('…');
    }
    out
}
