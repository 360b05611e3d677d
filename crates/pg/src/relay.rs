//! The live session: client frames become actions, upstream frames become evidence.
//!
//! Two directions run concurrently in one task (`select!` over two futures, so a blocked
//! write in one direction never stops the other from draining — the classic proxy
//! deadlock with pipelined queries and large results):
//!
//! - **client → upstream**: `Query` is split and classified statement by statement;
//!   `Parse` is classified once and remembered per statement name; `Execute` becomes the
//!   action, with the parameters of its `Bind`. Every allowed action's `action.request`
//!   record is committed *before* the frame that runs it is written upstream.
//! - **upstream → client**: frames pass through unchanged while the in-flight queue
//!   counts rows and bytes; `CommandComplete` / `ErrorResponse` / `ReadyForQuery` close
//!   actions and produce `action.response` records.
//!
//! **Denials keep exact protocol semantics.** A denied statement is not simply dropped:
//! the upstream would then not know the batch failed, and a pipeline or transaction block
//! would commit work a real server would have rolled back. Instead Warden sends, in its
//! place, a statement that is certain to fail at that exact position
//! (`warden_denied_<nonce>` — a syntax error — or a Bind to a statement of that name), so
//! the upstream aborts the implicit transaction / marks the block failed, skips to Sync
//! and answers ReadyForQuery with the true transaction status. The upstream's error is
//! then replaced, on its way back, by Warden's own `42501` naming the rule. A query
//! string with several statements is refused whole if any one of them is denied.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use warden_core::{ActionInfo, ApprovalInfo, Decision, Effect, EvidenceRecord, ResponseInfo};
use warden_pipeline::{HoldOutcome, RequestId, Session, SessionEnd};
use warden_policy::StatementInfo;

use crate::cancel::{CancelTarget, send_cancel};
use crate::codec::{self, Frame};
use crate::rows::{self, Capture};
use crate::startup::FrameReader;
use crate::stream::Stream;
use crate::upstream::Upstream;

/// Largest frame accepted from the upstream (DataRow of a big bytea, ...).
pub const MAX_BACKEND_FRAME: usize = 256 * 1024 * 1024;
/// Most prepared statements / portals Warden tracks per session.
pub const MAX_TRACKED: usize = 100_000;

struct InFlight {
    id: RequestId,
    started: Instant,
    rows: u64,
    bytes: u64,
    /// The (masked) rows kept for evidence, and masking counts.
    capture: Capture,
}

impl InFlight {
    fn new(id: RequestId) -> Self {
        InFlight {
            id,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            capture: Capture::default(),
        }
    }

    /// The response record for this action, with the masked excerpt.
    fn finish(self, mut resp: ResponseInfo) -> (RequestId, ResponseInfo) {
        resp.bytes = self.bytes;
        resp.duration_us = Some(self.started.elapsed().as_micros() as u64);
        let (masked, counts) = self.capture.into_evidence(resp.rows);
        resp.masked = masked;
        resp.masked_values = counts;
        (self.id, resp)
    }
}

enum Pending {
    Action(InFlight),
    /// A Sync or simple Query: the upstream answers it with ReadyForQuery.
    Boundary,
}

/// Denials whose error never came back (an earlier error made the database skip them)
/// are dropped oldest-first beyond this many.
const MAX_DENIALS: usize = 256;

struct Denial {
    nonce: String,
    /// SQLSTATE of Warden's error (42501, or 57014 for a withdrawn hold).
    code: &'static str,
    message: String,
    hint: String,
}

#[derive(Default)]
struct Shared {
    inflight: VecDeque<Pending>,
    denials: VecDeque<Denial>,
    /// Describe messages sent upstream and not yet answered: (sync group, sent by Warden
    /// itself). Warden's own Describes (to learn the columns to mask) are not forwarded.
    describes: VecDeque<(u64, bool)>,
    /// Boundaries (Sync / Query) sent so far: the sync group of the next message.
    boundaries: u64,
    /// The last request record forwarded before it was synced (reads under `fsync`
    /// durability, see `client_to_upstream`): nothing goes to the client until the
    /// ledger has synced up to here.
    must_sync: u64,
}

impl Shared {
    fn push_boundary(&mut self) {
        self.inflight.push_back(Pending::Boundary);
        self.boundaries += 1;
    }

    fn add_denial(&mut self, d: Denial) {
        if self.denials.len() >= MAX_DENIALS {
            self.denials.pop_front();
        }
        self.denials.push_back(d);
    }
}

/// What Warden remembers about a prepared statement.
struct Prepared {
    info: StatementInfo,
    decision: Decision,
    /// Parameter type oids declared by the Parse (0 = let the server infer).
    param_types: Vec<u32>,
}

struct Portal {
    stmt: Arc<Prepared>,
    params: Vec<Option<String>>,
}

#[derive(Default)]
struct ClientState {
    statements: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Portal>,
    /// The last Parse's outcome: a client that parses the same text again (an unnamed
    /// statement per query, as `pgbench -M extended` and most drivers do) reuses it
    /// instead of classifying and deciding again.
    last_parse: Option<ParseMemo>,
    /// The previous frame was the client's own Describe of the portal named
    /// `described_portal`: its RowDescription comes back just before that portal's rows, so
    /// an Execute of it right after needs no Describe of Warden's (libpq sends Parse, Bind,
    /// Describe portal, Execute, Sync for every parameterized query).
    just_described: bool,
    described_portal: String,
    /// How many of the request records of the batch being read are pure reads
    /// (`StatementInfo::is_pure_read`): when all are, under `fsync` durability, the batch
    /// is forwarded once its records are written and synced while the database works.
    batch_reads: usize,
}

/// What a Parse decided, and every input the decision depended on besides the policy
/// (fixed for the gateway's life) and the session's principal and connection (fixed for
/// the session's).
struct ParseMemo {
    query: String,
    purpose: Option<String>,
    prepared: Arc<Prepared>,
}

impl ClientState {
    fn memoized_parse(
        &self,
        query: &str,
        param_types: &[u32],
        session: &Session,
    ) -> Option<Arc<Prepared>> {
        let m = self.last_parse.as_ref()?;
        (m.query == query
            && m.prepared.param_types == param_types
            && session.purpose_is(m.purpose.as_deref()))
        .then(|| m.prepared.clone())
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn nonce() -> String {
    format!("warden_denied_{:016x}", rand::random::<u64>())
}

fn denial_text(d: &Decision) -> (String, String) {
    let rules = if d.rules.is_empty() {
        "default deny (no rule matched)".to_string()
    } else {
        d.rules.join(", ")
    };
    match d.effect {
        Effect::Approve => (
            format!(
                "Warden: this statement requires approval by {} ({}) and was not run",
                if d.approvers.is_empty() {
                    "an approver".to_string()
                } else {
                    d.approvers.join(", ")
                },
                d.reason
            ),
            format!("rules: {rules}"),
        ),
        _ => (
            format!("Warden denied this statement: {}", d.reason),
            format!("rules: {rules}; `warden policy check` explains the decision"),
        ),
    }
}

pub async fn run(
    client: FrameReader,
    upstream: Upstream,
    session: Arc<Session>,
    cancel: Option<CancelTarget>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let FrameReader {
        stream: cstream,
        buf: mut cbuf,
    } = client;
    let Upstream {
        stream: ustream,
        leftover: mut ubuf,
        ..
    } = upstream;
    let (mut cr, cw) = tokio::io::split(cstream);
    let (mut ur, mut uw) = tokio::io::split(ustream);
    let shared = Mutex::new(Shared::default());
    let mut state = ClientState::default();
    // Both directions write to the client: results (upstream → client) and notices about
    // held statements (client → upstream). Writes are whole frames, so they interleave safely.
    let cw = tokio::sync::Mutex::new(cw);
    let hold_cancel = cancel
        .as_ref()
        .map(|c| c.hold_cancel.clone())
        .unwrap_or_default();

    let end = {
        let mut io = ClientIo {
            cr: &mut cr,
            buf: &mut cbuf,
            cw: &cw,
            hold_cancel: &hold_cancel,
        };
        let c2u = client_to_upstream(&mut io, &mut uw, &mut state, &session, &shared);
        let u2c = upstream_to_client(&mut ur, &mut ubuf, &cw, &session, &shared);
        tokio::pin!(c2u, u2c);
        tokio::select! {
            e = &mut c2u => e,
            e = &mut u2c => e,
            // The gateway is stopping (or the listener is gone: the same).
            _ = stop.wait_for(|s| *s) => SessionEnd::Shutdown,
        }
    };

    let mut tail = BytesMut::new();
    match &end {
        SessionEnd::ProtocolError(what) => {
            session.record_protocol_error(what);
            codec::write_error(
                &mut tail,
                b'E',
                "FATAL",
                "08P01",
                &format!("Warden: protocol violation: {what}"),
                None,
            );
        }
        SessionEnd::LedgerFailed(e) | SessionEnd::ResultsWithheld(e) => {
            let (what, hint) = match &end {
                SessionEnd::LedgerFailed(_) => (
                    "the statement was not forwarded",
                    "Warden fails closed: nothing runs that it cannot record.",
                ),
                _ => (
                    "the results of the read in flight were withheld",
                    "Warden fails closed: no result leaves without its evidence made durable.",
                ),
            };
            codec::write_error(
                &mut tail,
                b'E',
                "FATAL",
                "58000",
                &format!("Warden: evidence ledger unavailable ({e}); {what}"),
                Some(hint),
            );
        }
        SessionEnd::UpstreamClosed(_) => {
            codec::write_error(
                &mut tail,
                b'E',
                "FATAL",
                "08006",
                "Warden: the database closed the connection",
                None,
            );
        }
        SessionEnd::Shutdown => {
            // What PostgreSQL itself sends on a fast shutdown.
            codec::write_error(
                &mut tail,
                b'E',
                "FATAL",
                "57P01",
                "Warden: terminating connection because the gateway is shutting down",
                Some("Reconnect once the gateway is back; statements in flight were cancelled."),
            );
        }
        _ => {}
    }
    let mut cw = cw.into_inner();
    if !tail.is_empty() {
        let _ = cw.write_all(&tail).await;
    }
    let _ = cw.shutdown().await;

    // Anything still running upstream for a client that is gone gets cancelled.
    let interrupted: Vec<InFlight> = lock(&shared)
        .inflight
        .drain(..)
        .filter_map(|p| match p {
            Pending::Action(a) => Some(a),
            Pending::Boundary => None,
        })
        .collect();
    if !interrupted.is_empty()
        && !matches!(end, SessionEnd::UpstreamClosed(_))
        && let Some(t) = &cancel
    {
        send_cancel(t).await;
    }
    for a in interrupted {
        session.record_response(
            &a.id,
            ResponseInfo {
                status: "interrupted".into(),
                rows: a.rows,
                bytes: a.bytes,
                duration_us: Some(a.started.elapsed().as_micros() as u64),
                ..Default::default()
            },
        );
    }
    if !matches!(
        end,
        SessionEnd::UpstreamClosed(_) | SessionEnd::ClientTerminated
    ) {
        let mut b = BytesMut::new();
        codec::write_terminate(&mut b);
        let _ = uw.write_all(&b).await;
    }
    let _ = uw.shutdown().await;
    session.end(end).await;
}

/// The client side as the client → upstream direction needs it: reading frames, and
/// (while a statement is held for approval) writing notices and watching for cancel.
struct ClientIo<'a> {
    cr: &'a mut ReadHalf<Stream>,
    buf: &'a mut BytesMut,
    cw: &'a tokio::sync::Mutex<WriteHalf<Stream>>,
    hold_cancel: &'a Arc<tokio::sync::Notify>,
}

async fn client_to_upstream(
    io: &mut ClientIo<'_>,
    uw: &mut WriteHalf<Stream>,
    st: &mut ClientState,
    session: &Session,
    shared: &Mutex<Shared>,
) -> SessionEnd {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut records: Vec<EvidenceRecord> = Vec::new();
    loop {
        let mut terminate = false;
        while !terminate {
            let (tag, len) = match codec::split_frame(io.buf, codec::MAX_FRAME) {
                Ok(Some(Frame { tag, len, .. })) => (tag, len),
                Ok(None) => break,
                Err(e) => return SessionEnd::ProtocolError(e.to_string()),
            };
            let frame = io.buf.split_to(len);
            match on_client_frame(tag, &frame, &mut out, &mut records, st, session, shared, io)
                .await
            {
                Ok(Step::Continue) => {}
                Ok(Step::Terminate) => terminate = true,
                Ok(Step::ClientGone(why)) => return SessionEnd::ClientVanished(why),
                Err(e) => return SessionEnd::ProtocolError(e),
            }
        }
        // Fail closed: nothing in `out` is written unless every request record is durable
        // — written to the append log, and under `fsync` durability synced. One exception,
        // where the guarantee allows it: a batch whose every action is a pure read is
        // forwarded once its records are written, and the sync runs while the database
        // works; no result reaches the client before it completed (`Shared::must_sync`,
        // checked by `upstream_to_client`), and if it fails the session ends there. A
        // power loss in between loses the records of reads whose results nobody got.
        let mut sync_after = None;
        if !records.is_empty() {
            let reads_only = std::mem::take(&mut st.batch_reads) == records.len();
            match session.write_requests(&mut records) {
                Err(e) => return SessionEnd::LedgerFailed(e.to_string()),
                Ok(None) => {}
                Ok(Some(last))
                    if reads_only && session.evidence_needs_sync() && !out.is_empty() =>
                {
                    let mut sh = lock(shared);
                    sh.must_sync = sh.must_sync.max(last);
                    sync_after = Some(last);
                }
                Ok(Some(last)) => {
                    if let Err(e) = session.requests_synced(last).await {
                        return SessionEnd::LedgerFailed(e.to_string());
                    }
                }
            }
        }
        if !out.is_empty() {
            if let Err(e) = uw.write_all(&out).await {
                return SessionEnd::UpstreamClosed(e.to_string());
            }
            out.clear();
        }
        if let Some(last) = sync_after
            && let Err(e) = session.requests_synced(last).await
        {
            return SessionEnd::ResultsWithheld(e.to_string());
        }
        if terminate {
            return SessionEnd::ClientTerminated;
        }
        match io.cr.read_buf(io.buf).await {
            Ok(0) => {
                return SessionEnd::ClientVanished("connection closed without Terminate".into());
            }
            Ok(_) => {}
            Err(e) => return SessionEnd::ClientVanished(e.to_string()),
        }
    }
}

enum Step {
    Continue,
    Terminate,
    ClientGone(String),
}

/// Handle one complete client frame (`frame` includes tag and length).
#[allow(clippy::too_many_arguments)] // the per-frame state of one direction, passed explicitly
async fn on_client_frame(
    tag: u8,
    frame: &[u8],
    out: &mut BytesMut,
    records: &mut Vec<EvidenceRecord>,
    st: &mut ClientState,
    session: &Session,
    shared: &Mutex<Shared>,
    io: &mut ClientIo<'_>,
) -> Result<Step, String> {
    let body = &frame[5..];
    let just_described = std::mem::take(&mut st.just_described);
    match tag {
        b'Q' => {
            let text = codec::parse_query(body).map_err(|e| e.to_string())?;
            let stmts = session.classify_sql(text);
            // Decide in order: a `SET warden.purpose` earlier in the string counts for the
            // statements after it (and is undone if the string is refused).
            let purpose_before = session.purpose();
            let decisions: Vec<Decision> = stmts
                .iter()
                .map(|s| {
                    let d = session.decide_sql(s);
                    apply_session_setting(session, s);
                    d
                })
                .collect();
            let refused = decisions.iter().any(|d| d.effect == Effect::Deny);
            session.set_purpose(purpose_before);
            if refused && let Some(i) = decisions.iter().position(|d| d.effect == Effect::Deny) {
                let detail = (stmts.len() > 1).then(|| {
                    format!(
                        "statement {} of {} in one query string; none of them was forwarded",
                        i + 1,
                        stmts.len()
                    )
                });
                session
                    .record_denied(
                        Session::sql_action(&stmts[i], Vec::new()),
                        &decisions[i],
                        detail,
                    )
                    .await;
                let n = nonce();
                let (message, hint) = denial_text(&decisions[i]);
                let mut sh = lock(shared);
                sh.add_denial(Denial {
                    nonce: n.clone(),
                    code: "42501",
                    message,
                    hint,
                });
                sh.push_boundary();
                drop(sh);
                codec::write_query(out, &n);
                return Ok(Step::Continue);
            }
            // Statements that need a human: the whole string waits for one approval.
            let mut approval: Option<ApprovalInfo> = None;
            if decisions.iter().any(|d| d.effect == Effect::Approve) {
                let merged =
                    merge_approvals(decisions.iter().filter(|d| d.effect == Effect::Approve));
                let held: Vec<&StatementInfo> = stmts
                    .iter()
                    .zip(&decisions)
                    .filter(|(_, d)| d.effect == Effect::Approve)
                    .map(|(s, _)| s)
                    .collect();
                let mut action = ActionInfo {
                    kind: "sql".into(),
                    text: text.to_string(),
                    ..Default::default()
                };
                for h in &held {
                    for k in &h.kinds {
                        if !action.sql_kinds.iter().any(|x| x == k.as_str()) {
                            action.sql_kinds.push(k.as_str().to_string());
                        }
                    }
                    action.tables.extend(h.tables.iter().cloned());
                }
                match hold_action(action, &merged, session, io).await {
                    HoldResult::Approved(info) => approval = Some(info),
                    HoldResult::Refused(d) => {
                        let n = d.nonce.clone();
                        let mut sh = lock(shared);
                        sh.add_denial(d);
                        sh.push_boundary();
                        drop(sh);
                        codec::write_query(out, &n);
                        return Ok(Step::Continue);
                    }
                    HoldResult::ClientGone(why) => return Ok(Step::ClientGone(why)),
                }
            }
            let mut sh = lock(shared);
            for (s, d) in stmts.iter().zip(&decisions) {
                apply_session_setting(session, s);
                let mut rec = session.request_record(Session::sql_action(s, Vec::new()), d);
                if d.effect == Effect::Approve {
                    rec.approval = approval.clone();
                }
                st.batch_reads += usize::from(s.is_pure_read());
                sh.inflight
                    .push_back(Pending::Action(InFlight::new(RequestId::from(
                        rec.id.as_str(),
                    ))));
                records.push(rec);
            }
            sh.push_boundary();
            drop(sh);
            out.extend_from_slice(frame);
        }
        b'P' => {
            let p = codec::parse_parse(body).map_err(|e| e.to_string())?;
            if st.statements.len() >= MAX_TRACKED && !st.statements.contains_key(p.name) {
                return Err(format!(
                    "more than {MAX_TRACKED} prepared statements in one session"
                ));
            }
            let prepared = match st.memoized_parse(p.query, &p.param_types, session) {
                Some(prepared) => prepared,
                None => {
                    let info = session.classify_one(p.query);
                    let decision = session.decide_sql(&info);
                    let prepared = Arc::new(Prepared {
                        info,
                        decision,
                        param_types: p.param_types.clone(),
                    });
                    // The purpose changes only on this path (client frames, in order),
                    // so it is still the one `decide_sql` just read.
                    st.last_parse = Some(ParseMemo {
                        query: p.query.to_string(),
                        purpose: session.purpose(),
                        prepared: prepared.clone(),
                    });
                    prepared
                }
            };
            let decision = &prepared.decision;
            if decision.effect == Effect::Deny {
                session
                    .record_denied(
                        Session::sql_action(&prepared.info, Vec::new()),
                        decision,
                        None,
                    )
                    .await;
                let n = nonce();
                let (message, hint) = denial_text(decision);
                lock(shared).add_denial(Denial {
                    nonce: n.clone(),
                    code: "42501",
                    message,
                    hint,
                });
                codec::write_parse(out, p.name, &n);
            } else {
                out.extend_from_slice(frame);
            }
            match st.statements.get_mut(p.name) {
                Some(slot) => *slot = prepared,
                None => {
                    st.statements.insert(p.name.to_string(), prepared);
                }
            }
        }
        b'B' => {
            let b = codec::parse_bind(body).map_err(|e| e.to_string())?;
            let stmt = st.statements.get(b.statement).cloned();
            if let Some(stmt) = &stmt
                && stmt.decision.effect == Effect::Deny
            {
                // The statement was refused at Parse; make this Bind fail in place too.
                let n = nonce();
                lock(shared).add_denial(Denial {
                    nonce: n.clone(),
                    code: "42501",
                    message: format!("Warden: prepared statement \"{}\" was denied by policy and cannot be bound", b.statement),
                    hint: denial_text(&stmt.decision).1,
                });
                codec::write_bind_missing(out, &n);
                st.portals.remove(b.portal);
                return Ok(Step::Continue);
            }
            let Some(stmt) = stmt else {
                // A statement Warden never saw parsed (e.g. created with SQL PREPARE, or
                // already closed): it cannot be classified here, so executing it through
                // Bind would escape policy and evidence. Refused in place (fail closed).
                let decision = Decision::deny(format!(
                    "prepared statement \"{}\" was not prepared with Parse in this session, so Warden cannot classify it",
                    b.statement
                ));
                let action = ActionInfo {
                    kind: "sql".into(),
                    text: format!("<bind of statement \"{}\">", b.statement),
                    params: b.render_params(&[]),
                    ..Default::default()
                };
                session.record_denied(action, &decision, None).await;
                let n = nonce();
                let (message, hint) = denial_text(&decision);
                lock(shared).add_denial(Denial {
                    nonce: n.clone(),
                    code: "42501",
                    message,
                    hint,
                });
                codec::write_bind_missing(out, &n);
                st.portals.remove(b.portal);
                return Ok(Step::Continue);
            };
            if st.portals.len() >= MAX_TRACKED && !st.portals.contains_key(b.portal) {
                return Err(format!("more than {MAX_TRACKED} portals in one session"));
            }
            st.portals.insert(
                b.portal.to_string(),
                Portal {
                    params: b.render_params(&stmt.param_types),
                    stmt,
                },
            );
            out.extend_from_slice(frame);
        }
        b'E' => {
            let (portal, _max_rows) = codec::parse_execute(body).map_err(|e| e.to_string())?;
            if let Some(p) = st.portals.get(portal) {
                let action = Session::sql_action(&p.stmt.info, p.params.clone());
                let mut approval = None;
                if p.stmt.decision.effect == Effect::Approve {
                    match hold_action(action.clone(), &p.stmt.decision, session, io).await {
                        HoldResult::Approved(info) => approval = Some(info),
                        HoldResult::Refused(d) => {
                            // Fail at exactly this position; the database skips to Sync.
                            let n = d.nonce.clone();
                            lock(shared).add_denial(d);
                            codec::write_bind_missing(out, &n);
                            return Ok(Step::Continue);
                        }
                        HoldResult::ClientGone(why) => return Ok(Step::ClientGone(why)),
                    }
                }
                apply_session_setting(session, &p.stmt.info);
                let mut rec = session.request_record(action, &p.stmt.decision);
                rec.approval = approval;
                let described = just_described && st.described_portal == portal;
                if session.masker.is_some() && !described {
                    // Learn the result columns (names, types, formats) to mask this
                    // portal's rows; the answer is consumed by Warden, not forwarded.
                    // (After the client's own Describe of this portal its answer, which
                    // the client gets, sets the plan: nothing answered comes between.)
                    codec::write_describe(out, b'P', portal);
                    let mut sh = lock(shared);
                    let group = sh.boundaries;
                    sh.describes.push_back((group, true));
                }
                lock(shared)
                    .inflight
                    .push_back(Pending::Action(InFlight::new(RequestId::from(
                        rec.id.as_str(),
                    ))));
                records.push(rec);
                st.batch_reads += usize::from(p.stmt.info.is_pure_read());
            }
            // An unknown portal is forwarded as is: the database answers with its own error.
            out.extend_from_slice(frame);
        }
        b'C' => {
            let (kind, name) =
                codec::parse_target(body, "Close target").map_err(|e| e.to_string())?;
            if kind == b'S' {
                st.statements.remove(name);
            } else {
                st.portals.remove(name);
            }
            out.extend_from_slice(frame);
        }
        b'D' => {
            let (kind, name) =
                codec::parse_target(body, "Describe target").map_err(|e| e.to_string())?;
            if kind == b'P' {
                st.just_described = true;
                st.described_portal.clear();
                st.described_portal.push_str(name);
            }
            let mut sh = lock(shared);
            let group = sh.boundaries;
            sh.describes.push_back((group, false));
            drop(sh);
            out.extend_from_slice(frame);
        }
        b'S' => {
            lock(shared).push_boundary();
            out.extend_from_slice(frame);
        }
        b'H' => out.extend_from_slice(frame),
        b'd' | b'c' | b'f' => {
            if let Some(Pending::Action(a)) = lock(shared).inflight.front_mut() {
                a.bytes += frame.len() as u64;
            }
            out.extend_from_slice(frame);
        }
        b'X' => {
            out.extend_from_slice(frame);
            return Ok(Step::Terminate);
        }
        b'F' => {
            // Fastpath function calls run arbitrary functions by oid, outside any SQL text
            // Warden could classify: refused, in place, like a denied statement.
            let decision = Decision::deny(
                "fastpath function calls cannot be classified and are not allowed through Warden",
            );
            let action = ActionInfo {
                kind: "sql".into(),
                text: "<fastpath function call>".into(),
                ..Default::default()
            };
            session.record_denied(action, &decision, None).await;
            let n = nonce();
            let (message, hint) = denial_text(&decision);
            let mut sh = lock(shared);
            sh.add_denial(Denial {
                nonce: n.clone(),
                code: "42501",
                message,
                hint,
            });
            sh.push_boundary();
            drop(sh);
            codec::write_query(out, &n);
        }
        other => {
            return Err(format!(
                "unexpected message type {:?} from client",
                other as char
            ));
        }
    }
    Ok(Step::Continue)
}

/// How waiting for a human ended.
enum HoldResult {
    Approved(ApprovalInfo),
    /// Refuse in place with this error (already recorded by the broker).
    Refused(Denial),
    ClientGone(String),
}

/// The decision the approvers see when several statements of one string need approval.
fn merge_approvals<'a>(ds: impl Iterator<Item = &'a Decision>) -> Decision {
    let mut m = Decision {
        effect: Effect::Approve,
        rules: Vec::new(),
        reason: String::new(),
        approvers: Vec::new(),
    };
    for d in ds {
        for r in &d.rules {
            if !m.rules.contains(r) {
                m.rules.push(r.clone());
            }
        }
        for a in &d.approvers {
            if !m.approvers.contains(a) {
                m.approvers.push(a.clone());
            }
        }
        if m.reason.is_empty() {
            m.reason = d.reason.clone();
        }
    }
    m
}

fn refused(code: &'static str, message: String, hint: String) -> HoldResult {
    HoldResult::Refused(Denial {
        nonce: nonce(),
        code,
        message,
        hint,
    })
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) && s >= 3600 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Hold one action for approval: tell the client (NoticeResponse) which approval it waits
/// for, then wait for the decision, a CancelRequest, or the client going away. The
/// upstream is untouched meanwhile; the session stays usable afterwards.
async fn hold_action(
    action: ActionInfo,
    decision: &Decision,
    session: &Session,
    io: &mut ClientIo<'_>,
) -> HoldResult {
    let approvers = if decision.approvers.is_empty() {
        "an approver".to_string()
    } else {
        decision.approvers.join(", ")
    };
    if let Some(grant) = session.granted(decision) {
        return HoldResult::Approved(ApprovalInfo {
            id: grant,
            decision: Some("granted".into()),
            comment: Some("covered by a standing time-boxed grant".into()),
            ..Default::default()
        });
    }
    let (id, mut outcome, timeout) = match session.request_approval(action, decision).await {
        Ok(x) => x,
        Err(e) => {
            return refused(
                "42501",
                format!(
                    "Warden: this statement requires approval by {approvers} and was not run: {e}"
                ),
                format!("rules: {}", decision.rules.join(", ")),
            );
        }
    };
    // Dropped while still waiting (the session ended under it: the gateway stopping, the
    // database gone), the request is withdrawn, not left pending in the broker and open in
    // the evidence.
    let mut held = Held {
        session,
        id: Some(id.clone()),
    };
    let mut notice = BytesMut::new();
    codec::write_error(
        &mut notice,
        b'N',
        "NOTICE",
        "01000",
        &format!(
            "Warden: statement held for approval {id} by {approvers} (rule {}); waiting up to {}",
            decision.rules.join(", "),
            human_duration(timeout)
        ),
        Some(&format!(
            "An approver runs: warden approvals approve {id} --comment \"...\""
        )),
    );
    if io.cw.lock().await.write_all(&notice).await.is_err() {
        held.withdraw("client disconnected while the statement was held");
        return HoldResult::ClientGone("connection lost while waiting for approval".into());
    }
    loop {
        let room = io.buf.len() < 1 << 20;
        tokio::select! {
            o = &mut outcome => {
                held.id = None; // decided (or the broker is gone): nothing to withdraw
                return match o {
                    Ok(HoldOutcome::Approved { approvers, comment }) => HoldResult::Approved(ApprovalInfo {
                        id,
                        approver: Some(approvers.join(",")),
                        decision: Some("approved".into()),
                        decided_at: Some(warden_core::time_fmt::now_rfc3339()),
                        comment,
                    }),
                    Ok(HoldOutcome::Denied { approver, comment }) => refused(
                        "42501",
                        format!(
                            "Warden: approval {id} was denied by {approver}{}; the statement was not run",
                            comment.map(|c| format!(": {c}")).unwrap_or_default()
                        ),
                        format!("rules: {}", decision.rules.join(", ")),
                    ),
                    Ok(HoldOutcome::TimedOut) => refused(
                        "42501",
                        format!("Warden: approval {id} timed out after {}; the statement was not run", human_duration(timeout)),
                        format!("nobody among {approvers} decided in time"),
                    ),
                    Ok(HoldOutcome::Withdrawn { reason }) => refused(
                        "57014",
                        format!("Warden: approval {id} was withdrawn ({reason}); the statement was not run"),
                        String::new(),
                    ),
                    Err(_) => refused(
                        "42501",
                        format!("Warden: the approval broker stopped before approval {id} was decided"),
                        String::new(),
                    ),
                };
            }
            _ = io.hold_cancel.notified() => {
                held.withdraw("client cancelled the statement");
                return refused(
                    "57014",
                    format!("canceling statement due to user request (Warden approval {id} withdrawn)"),
                    String::new(),
                );
            }
            r = io.cr.read_buf(io.buf), if room => match r {
                Ok(0) | Err(_) => {
                    held.withdraw("client disconnected while the statement was held");
                    return HoldResult::ClientGone("connection lost while waiting for approval".into());
                }
                Ok(_) => {} // pipelined messages wait in the buffer until the hold ends
            },
        }
    }
}

/// An approval request a statement is waiting on; withdrawn if the wait is dropped.
struct Held<'a> {
    session: &'a Session,
    id: Option<String>,
}

impl Held<'_> {
    fn withdraw(&mut self, reason: &str) {
        if let Some(id) = self.id.take() {
            self.session.withdraw_approval(&id, reason);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.withdraw("the session ended while the statement was held");
    }
}

/// `SET warden.purpose = '...'` (simple or extended) changes the session's purpose; the
/// statement is still forwarded, so transaction semantics stay the database's.
fn apply_session_setting(session: &Session, info: &StatementInfo) {
    if let Some((name, value)) = &info.set_var
        && name == "warden.purpose"
    {
        session.set_purpose(Some(value.clone()).filter(|v| !v.is_empty() && v != "DEFAULT"));
    }
}

/// What the upstream → client direction knows about the result set being streamed.
#[derive(Default)]
struct RowState {
    columns: Vec<rows::Column>,
    binary: Vec<bool>,
    plan: Option<warden_masking::ColumnPlan>,
    copy_out: bool,
    /// Sync groups answered so far (ReadyForQuery count).
    groups_done: u64,
}

impl RowState {
    fn end_result(&mut self) {
        self.plan = None;
        self.copy_out = false;
    }
}

/// Pop the Describe this RowDescription/NoData answers, if it belongs to the current sync
/// group; returns whether Warden sent it itself (then the answer is not forwarded).
fn answer_describe(sh: &mut Shared, groups_done: u64) -> bool {
    match sh.describes.front() {
        Some(&(group, internal)) if group == groups_done => {
            sh.describes.pop_front();
            internal
        }
        _ => false,
    }
}

async fn upstream_to_client(
    ur: &mut ReadHalf<Stream>,
    buf: &mut BytesMut,
    cw: &tokio::sync::Mutex<WriteHalf<Stream>>,
    session: &Session,
    shared: &Mutex<Shared>,
) -> SessionEnd {
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut done: Vec<(RequestId, ResponseInfo)> = Vec::new();
    let mut rs = RowState::default();
    let limits = session.limits;
    let masker = session.masker.as_ref();
    let mut scratch_stats = warden_masking::MaskStats::default();
    // Synced up to here, as far as this direction has waited for it (`Shared::must_sync`).
    let mut synced = 0u64;
    loop {
        if buf.is_empty() || matches!(codec::split_frame(buf, MAX_BACKEND_FRAME), Ok(None)) {
            buf.reserve(64 * 1024);
            match ur.read_buf(buf).await {
                Ok(0) => return SessionEnd::UpstreamClosed("connection closed".into()),
                Ok(_) => {}
                Err(e) => return SessionEnd::UpstreamClosed(e.to_string()),
            }
        }
        // `must_sync` read under the lock this block already holds (see the gate below).
        let need = {
            let mut sh = lock(shared);
            loop {
                let (tag, len) = match codec::split_frame(buf, MAX_BACKEND_FRAME) {
                    Ok(Some(f)) => (f.tag, f.len),
                    Ok(None) => break,
                    Err(e) => {
                        return SessionEnd::UpstreamClosed(format!(
                            "malformed message from the database: {e}"
                        ));
                    }
                };
                let frame = &buf[..len];
                let body = &frame[5..];
                let mut forward = true;
                match tag {
                    b'T' => {
                        let internal = answer_describe(&mut sh, rs.groups_done);
                        forward = !internal;
                        rs.columns = rows::parse_row_description(body).unwrap_or_default();
                        rs.binary = rs.columns.iter().map(|c| c.binary).collect();
                        rs.plan = masker
                            .map(|m| rows::plan_for(m, &rs.columns))
                            .filter(|p| !p.is_noop());
                    }
                    b'n' => forward = !answer_describe(&mut sh, rs.groups_done),
                    b'D' => {
                        let mut replaced = None;
                        if let Some(plan) = &rs.plan {
                            let st = match sh.inflight.front_mut() {
                                Some(Pending::Action(a)) => &mut a.capture.stats,
                                _ => &mut scratch_stats,
                            };
                            match rows::mask_data_row(body, plan, st) {
                                Ok(r) => replaced = r,
                                Err(e) => {
                                    // A row Warden cannot read is a row it cannot mask: fail closed.
                                    return SessionEnd::UpstreamClosed(format!(
                                        "unreadable DataRow while masking: {e}"
                                    ));
                                }
                            }
                        }
                        if let Some(Pending::Action(a)) = sh.inflight.front_mut() {
                            a.rows += 1;
                            a.bytes += len as u64;
                            if a.capture.columns.is_empty() && !rs.columns.is_empty() {
                                a.capture.columns =
                                    rs.columns.iter().map(|c| c.name.clone()).collect();
                            }
                            let sent: &[u8] = replaced.as_deref().map(|f| &f[5..]).unwrap_or(body);
                            if !a.capture.wants_more(limits.response_rows) {
                                a.capture.mark_truncated();
                            } else if let Ok(vals) = rows::row_values(sent) {
                                a.capture.add_row(
                                    &vals,
                                    &rs.binary,
                                    limits.response_rows,
                                    limits.response_bytes,
                                );
                            }
                        }
                        if let Some(f) = replaced {
                            out.extend_from_slice(&f);
                            forward = false;
                        }
                    }
                    b'H' => {
                        rs.copy_out = true;
                        if masker.is_some() && body.first() == Some(&1) {
                            return SessionEnd::ProtocolError(
                                "binary COPY TO cannot be masked; use text COPY on masked connections".into(),
                            );
                        }
                    }
                    b'd' => {
                        let mut replaced = None;
                        if rs.copy_out
                            && let Some(m) = masker
                        {
                            let st = match sh.inflight.front_mut() {
                                Some(Pending::Action(a)) => &mut a.capture.stats,
                                _ => &mut scratch_stats,
                            };
                            if let std::borrow::Cow::Owned(line) = m.mask_bytes(body, st) {
                                let mut f = BytesMut::with_capacity(line.len() + 5);
                                f.extend_from_slice(&[b'd', 0, 0, 0, 0]);
                                f.extend_from_slice(&line);
                                let l = (f.len() - 1) as i32;
                                f[1..5].copy_from_slice(&l.to_be_bytes());
                                replaced = Some(f);
                            }
                        }
                        if let Some(Pending::Action(a)) = sh.inflight.front_mut() {
                            a.rows += 1;
                            a.bytes += len as u64;
                            let sent: &[u8] = replaced.as_deref().map(|f| &f[5..]).unwrap_or(body);
                            a.capture
                                .add_line(sent, limits.response_rows, limits.response_bytes);
                        }
                        if let Some(f) = replaced {
                            out.extend_from_slice(&f);
                            forward = false;
                        }
                    }
                    b'c' => rs.copy_out = false,
                    b'C' | b'I' | b's' => {
                        rs.end_result();
                        let tag_text = match tag {
                            b'C' => codec::Reader::new(body)
                                .cstr("command tag")
                                .unwrap_or("")
                                .to_string(),
                            b'I' => "EMPTY".to_string(),
                            _ => "SUSPENDED".to_string(),
                        };
                        if let Some(Pending::Action(_)) = sh.inflight.front()
                            && let Some(Pending::Action(a)) = sh.inflight.pop_front()
                        {
                            let rows = codec::tag_rows(&tag_text).unwrap_or(a.rows);
                            done.push(a.finish(ResponseInfo {
                                status: "ok".into(),
                                tag: Some(tag_text),
                                rows,
                                ..Default::default()
                            }));
                        }
                    }
                    b'E' => {
                        rs.end_result();
                        let fields = codec::parse_error_fields(body).unwrap_or_default();
                        if let Some(i) = sh
                            .denials
                            .iter()
                            .position(|d| fields.message.contains(&d.nonce))
                        {
                            if let Some(d) = sh.denials.remove(i) {
                                codec::write_error(
                                    &mut out,
                                    b'E',
                                    "ERROR",
                                    d.code,
                                    &d.message,
                                    (!d.hint.is_empty()).then_some(d.hint.as_str()),
                                );
                                forward = false;
                            }
                        } else if let Some(Pending::Action(_)) = sh.inflight.front()
                            && let Some(Pending::Action(a)) = sh.inflight.pop_front()
                        {
                            let rows = a.rows;
                            done.push(a.finish(ResponseInfo {
                                status: "error".into(),
                                error_code: Some(fields.code),
                                error_message: Some(fields.message),
                                rows,
                                ..Default::default()
                            }));
                        }
                    }
                    b'Z' => {
                        rs.end_result();
                        rs.groups_done += 1;
                        let groups_done = rs.groups_done;
                        // Describes of groups the database skipped after an error.
                        while sh.describes.front().is_some_and(|&(g, _)| g < groups_done) {
                            sh.describes.pop_front();
                        }
                        // Everything before the boundary that did not complete was skipped
                        // by the database after an error.
                        while let Some(p) = sh.inflight.pop_front() {
                            match p {
                                Pending::Boundary => break,
                                Pending::Action(a) => done.push(a.finish(ResponseInfo {
                                    status: "not_executed".into(),
                                    ..Default::default()
                                })),
                            }
                        }
                    }
                    _ => {}
                }
                if forward {
                    out.extend_from_slice(frame);
                }
                buf.advance(len);
                if out.len() >= 256 * 1024 {
                    break;
                }
            }
            sh.must_sync
        };
        for (id, resp) in done.drain(..) {
            session.record_response(&id, resp);
        }
        scratch_stats.per_detector.clear();
        if !out.is_empty() {
            // Results of reads forwarded before their records were synced wait for the sync.
            if need > synced {
                if let Err(e) = session.requests_synced(need).await {
                    return SessionEnd::ResultsWithheld(e.to_string());
                }
                synced = need;
            }
            if let Err(e) = cw.lock().await.write_all(&out).await {
                return SessionEnd::ClientVanished(e.to_string());
            }
            out.clear();
        }
    }
}
