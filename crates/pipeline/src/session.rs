//! One evidence session: a client connection (PG/MySQL) or a logical agent run (HTTP/MCP).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use warden_approvals::{ApprovalRequest, Outcome};
use warden_core::{
    ActionInfo, ApprovalInfo, Decision, EvidenceRecord, Principal, RecordKind, ResponseInfo,
};
use warden_policy::{ActionClass, Dialect, StatementInfo};
use warden_store::LedgerError;

use crate::sql_cache::ShapeCache;
use crate::{ConnectionSpec, Pipeline, Protocol};

/// The id of an `action.request` record; responses point back at it.
pub type RequestId = Arc<str>;

/// How a held action ended, from the adapter's point of view.
pub type HoldOutcome = Outcome;

/// Why a session ended, recorded in `session.end`.
#[derive(Debug, Clone)]
pub enum SessionEnd {
    ClientTerminated,
    ClientVanished(String),
    UpstreamClosed(String),
    ProtocolError(String),
    LedgerFailed(String),
    /// The sync of a read's records failed after the read was forwarded (`fsync`
    /// durability, pure reads only): its results were withheld.
    ResultsWithheld(String),
    Shutdown,
    /// A logical (HTTP/MCP) session saw no request for this long.
    Idle(String),
}

impl SessionEnd {
    fn describe(&self) -> String {
        match self {
            SessionEnd::ClientTerminated => "client terminated the session".into(),
            SessionEnd::ClientVanished(e) => format!("client connection lost: {e}"),
            SessionEnd::UpstreamClosed(e) => format!("upstream closed the connection: {e}"),
            SessionEnd::ProtocolError(e) => format!("protocol error: {e}"),
            SessionEnd::LedgerFailed(e) => format!("evidence ledger failed: {e}"),
            SessionEnd::ResultsWithheld(e) => {
                format!(
                    "evidence ledger failed after a read was forwarded: {e}; its results were withheld"
                )
            }
            SessionEnd::Shutdown => "gateway shutting down".into(),
            SessionEnd::Idle(d) => format!("no request for {d}"),
        }
    }
}

pub struct Session {
    pub id: String,
    pub principal: std::sync::Arc<Principal>,
    pub connection: Arc<ConnectionSpec>,
    pub client: String,
    /// Masking for this connection (`None`: no `[[masking]]` rule covers it).
    pub masker: Option<warden_masking::ConnectionMasker>,
    /// How much of each (masked) response the evidence keeps.
    pub limits: crate::EvidenceLimits,
    purpose: Mutex<Option<String>>,
    /// The protocol the client speaks to Warden (the connection's own for wire adapters,
    /// `mcp` for MCP tool calls): `protocol` in every record of this session.
    via: Protocol,
    pipeline: Arc<Pipeline>,
    actions: AtomicU64,
    denied: AtomicU64,
}

impl Session {
    /// Open a session: checks access, then records `session.start` durably.
    pub async fn open(
        pipeline: Arc<Pipeline>,
        principal: Principal,
        connection: Arc<ConnectionSpec>,
        client: String,
        purpose: Option<String>,
    ) -> Result<Arc<Session>, LedgerError> {
        let (s, started) = Self::open_submitted(pipeline, principal, connection, client, purpose);
        started.await?;
        Ok(s)
    }

    /// Like [`Session::open`] without waiting: `session.start` is queued and the returned
    /// future resolves once it is durable. The adapter must await it before forwarding
    /// anything; awaiting the session's first `action.request` commit first (the ledger
    /// commits in order) makes both durable in one group commit instead of two.
    pub fn open_submitted(
        pipeline: Arc<Pipeline>,
        principal: Principal,
        connection: Arc<ConnectionSpec>,
        client: String,
        purpose: Option<String>,
    ) -> (
        Arc<Session>,
        impl std::future::Future<Output = Result<(), LedgerError>> + Send + 'static,
    ) {
        let via = connection.protocol;
        Self::submit_start(
            pipeline,
            principal,
            connection,
            client,
            purpose,
            warden_core::evidence::new_id(),
            via,
        )
    }

    /// Open a session with a given id, reached through front door `via` (e.g. one
    /// evidence session per connection an MCP session uses, all under the MCP session's
    /// id, recorded with `protocol = "mcp"`). Records `session.start` durably.
    pub async fn open_as(
        pipeline: Arc<Pipeline>,
        principal: Principal,
        connection: Arc<ConnectionSpec>,
        client: String,
        id: String,
        via: Protocol,
    ) -> Result<Arc<Session>, LedgerError> {
        let (s, started) =
            Self::submit_start(pipeline, principal, connection, client, None, id, via);
        started.await?;
        Ok(s)
    }

    fn submit_start(
        pipeline: Arc<Pipeline>,
        principal: Principal,
        connection: Arc<ConnectionSpec>,
        client: String,
        purpose: Option<String>,
        id: String,
        via: Protocol,
    ) -> (
        Arc<Session>,
        impl std::future::Future<Output = Result<(), LedgerError>> + Send + 'static,
    ) {
        let masker = pipeline.masker_for(&connection.name);
        let limits = pipeline.evidence_limits();
        let s = Arc::new(Session {
            id,
            principal: Arc::new(principal),
            connection,
            client,
            masker,
            limits,
            purpose: Mutex::new(purpose),
            via,
            pipeline,
            actions: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        });
        let rec = s.record(RecordKind::SessionStart);
        let wait = s.pipeline.ledger.submit(rec);
        (s, async move { wait.await.map(|_| ()) })
    }

    pub fn protocol(&self) -> Protocol {
        self.connection.protocol
    }

    pub fn purpose(&self) -> Option<String> {
        self.purpose
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Is the declared purpose `purpose`? (No copy of it, unlike [`Session::purpose`].)
    pub fn purpose_is(&self, purpose: Option<&str>) -> bool {
        self.purpose
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == purpose
    }

    pub fn set_purpose(&self, purpose: Option<String>) {
        *self.purpose.lock().unwrap_or_else(|p| p.into_inner()) = purpose;
    }

    /// A record of `kind` carrying this session's identity, connection and purpose.
    pub fn record(&self, kind: RecordKind) -> EvidenceRecord {
        let mut r = EvidenceRecord::new(kind);
        r.session_id = Some(self.id.clone());
        r.principal = Some(self.principal.clone());
        r.connection = Some(self.connection.name.clone());
        r.protocol = Some(self.via.as_str().to_string());
        r.purpose = self.purpose();
        r.client = Some(self.client.clone());
        r
    }

    fn dialect(&self) -> Dialect {
        match self.connection.protocol {
            Protocol::Mysql => Dialect::MySql,
            _ => Dialect::Postgres,
        }
    }

    /// Split and classify a query string (cached by text: see `sql_cache`).
    pub fn classify_sql(&self, sql: &str) -> Arc<[StatementInfo]> {
        let (p, dialect) = (&self.pipeline, self.dialect());
        if let Some(hit) = p.sql_cache.get(sql, dialect) {
            return hit;
        }
        // A new text of a known shape (the same statement with other numbers): its
        // parse is shared, and the exact-text cache is left to texts that repeat.
        let shape = ShapeCache::shape(sql, dialect);
        if let Some(info) = shape.as_ref().and_then(|s| p.shape_cache.get(s)) {
            return Arc::from([info]);
        }
        let stmts: Arc<[StatementInfo]> = warden_policy::classify(sql, dialect).into();
        if let Some(s) = &shape {
            p.shape_cache.put(s, &stmts);
        }
        p.sql_cache.put(sql, dialect, stmts.clone());
        stmts
    }

    /// Classify one statement (an extended-protocol Parse), cached by text.
    pub fn classify_one(&self, sql: &str) -> StatementInfo {
        let (p, dialect) = (&self.pipeline, self.dialect());
        if let Some(hit) = p.one_cache.get(sql, dialect) {
            return StatementInfo::clone(&hit);
        }
        // As in `classify_sql` (drivers that Parse every statement, JDBC's among them,
        // send new literals as new texts); `classify_one` keeps a trailing `;` in `text`.
        let shape = ShapeCache::shape(sql, dialect);
        if let Some(info) = shape.as_ref().and_then(|s| p.shape_cache.get(s)) {
            return StatementInfo {
                text: sql.trim().to_string(),
                ..info
            };
        }
        let info = warden_policy::classify_one(sql, dialect);
        if let Some(s) = &shape {
            p.shape_cache.put(s, std::slice::from_ref(&info));
        }
        p.one_cache.put(sql, dialect, Arc::new(info.clone()));
        info
    }

    pub fn decide_sql(&self, info: &StatementInfo) -> Decision {
        let purpose = self.purpose();
        self.pipeline.policy.decide_with_purpose(
            &self.principal,
            &self.connection.name,
            &ActionClass::Sql(info),
            purpose.as_deref(),
        )
    }

    /// Decide an HTTP request: `method` as sent, `path` relative to the connection
    /// (normalized, without the query).
    pub fn decide_http(&self, method: &str, path: &str) -> Decision {
        let purpose = self.purpose();
        self.pipeline.policy.decide_with_purpose(
            &self.principal,
            &self.connection.name,
            &ActionClass::Http { method, path },
            purpose.as_deref(),
        )
    }

    pub fn sql_action(info: &StatementInfo, params: Vec<Option<String>>) -> ActionInfo {
        ActionInfo {
            kind: "sql".into(),
            text: info.text.clone(),
            params,
            sql_kinds: info.kinds.iter().map(|k| k.as_str().to_string()).collect(),
            tables: info.tables.clone(),
        }
    }

    /// Build the `action.request` record; submit it with [`Session::commit_request`].
    pub fn request_record(&self, action: ActionInfo, decision: &Decision) -> EvidenceRecord {
        let mut r = self.record(RecordKind::ActionRequest);
        r.action = Some(action);
        r.decision = Some(decision.info());
        r
    }

    /// Commit one `action.request` record; returns its id once durable. The caller must
    /// not forward the action if this fails (fail closed).
    pub async fn commit_request(&self, rec: EvidenceRecord) -> Result<RequestId, LedgerError> {
        let id = RequestId::from(rec.id.as_str());
        self.pipeline.ledger.submit(rec).await?;
        self.actions.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Commit the `action.request` records in `recs` (emptied, its capacity kept for the
    /// next batch), in two steps: they are placed and written to the append log now (a
    /// crash of the gateway no longer loses them); the returned seq (`None`: no records)
    /// is what [`Session::requests_synced`] then waits for — the sync under `fsync`
    /// durability, and under either level the ledger's backpressure. The caller must not
    /// forward any of the actions if this fails, nor — short of the one exception
    /// `warden_pg::relay` makes for pure reads under `fsync` — before that wait (fail
    /// closed).
    pub fn write_requests(
        &self,
        recs: &mut Vec<EvidenceRecord>,
    ) -> Result<Option<u64>, LedgerError> {
        let n = recs.len() as u64;
        let last = self.pipeline.ledger.submit_written(recs.drain(..))?;
        self.actions.fetch_add(n, Ordering::Relaxed);
        Ok(last)
    }

    /// Resolves once the records written up to `last` are as durable as the ledger
    /// promises (see [`Session::write_requests`]).
    pub async fn requests_synced(&self, last: u64) -> Result<(), LedgerError> {
        self.pipeline.ledger.synced(last).await
    }

    /// Whether written records still wait for an `fdatasync` (`fsync` durability).
    pub fn evidence_needs_sync(&self) -> bool {
        self.pipeline.ledger.needs_sync()
    }

    /// Is there a standing grant for this `approve` decision? Returns the approval id
    /// that granted it.
    pub fn granted(&self, decision: &Decision) -> Option<String> {
        let a = self.pipeline.approvals.as_ref()?;
        a.broker
            .granted(&self.principal, &self.connection.name, &decision.rules)
    }

    /// Ask for approval of `action` (decision `approve`). On success the adapter tells
    /// the client the id and waits on [`HoldOutcome`]; on error it refuses the action.
    pub async fn request_approval(
        &self,
        action: ActionInfo,
        decision: &Decision,
    ) -> Result<
        (
            String,
            tokio::sync::oneshot::Receiver<Outcome>,
            std::time::Duration,
        ),
        String,
    > {
        let Some(a) = self.pipeline.approvals.as_ref() else {
            return Err("approvals are not configured on this gateway".into());
        };
        let mut min_approvals = 1;
        let mut grant = None;
        for r in &decision.rules {
            if let Some(ra) = a.rules.get(r) {
                min_approvals = min_approvals.max(ra.min_approvals);
                grant = grant.max(ra.grant);
            }
        }
        let req = ApprovalRequest {
            requester: Principal::clone(&self.principal),
            session_id: self.id.clone(),
            connection: self.connection.name.clone(),
            protocol: self.via.as_str().to_string(),
            purpose: self.purpose(),
            action,
            rules: decision.rules.clone(),
            approvers: decision.approvers.clone(),
            min_approvals,
            grant,
        };
        let hold = a.broker.hold(req).await?;
        Ok((hold.id, hold.outcome, a.timeout))
    }

    /// The client gave up waiting (cancel, disconnect).
    pub fn withdraw_approval(&self, id: &str, reason: &str) {
        if let Some(a) = self.pipeline.approvals.as_ref() {
            a.broker.withdraw(id, reason);
        }
    }

    /// Attach the approval that let an action through to its request record.
    pub fn with_approval(mut rec: EvidenceRecord, approval: ApprovalInfo) -> EvidenceRecord {
        rec.approval = Some(approval);
        rec
    }

    /// Record a denial durably (the caller then answers the client with an error).
    pub async fn record_denied(
        &self,
        action: ActionInfo,
        decision: &Decision,
        detail: Option<String>,
    ) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        let mut r = self.record(RecordKind::PolicyDenied);
        r.action = Some(action);
        r.decision = Some(decision.info());
        r.detail = detail;
        if let Err(e) = self.pipeline.ledger.append(r).await {
            tracing::error!(error = %e, session = %self.id, "could not record policy.denied");
        }
    }

    /// Record the outcome of a forwarded action (background; ordered after its request).
    pub fn record_response(&self, request: &RequestId, response: ResponseInfo) {
        let mut r = self.record(RecordKind::ActionResponse);
        r.request_id = Some(request.to_string());
        r.response = Some(response);
        self.pipeline.ledger.append_background(r);
    }

    pub fn record_protocol_error(&self, what: &str) {
        self.pipeline.record_protocol_error(
            Some(&self.id),
            Some(&self.connection.name),
            self.via.as_str(),
            &self.client,
            what,
        );
    }

    /// Record `session.end` and wait for it (and everything before it) to be committed.
    pub async fn end(&self, why: SessionEnd) {
        let mut r = self.record(RecordKind::SessionEnd);
        r.detail = Some(format!(
            "{}; {} action(s) forwarded, {} denied",
            why.describe(),
            self.actions.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed)
        ));
        if let Err(e) = self.pipeline.ledger.append(r).await {
            tracing::error!(error = %e, session = %self.id, "could not record session.end");
        }
    }
}
