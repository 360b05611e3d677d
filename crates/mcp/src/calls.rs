//! The tools. Each SQL or HTTP call follows the phases of the wire adapters:
//! connection → access → evidence session → decide (→ hold) → record (durable) →
//! run on the target → mask → record the outcome → answer.
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use warden_core::{ActionInfo, ApprovalInfo, Decision, Effect, RecordKind, ResponseInfo};
use warden_masking::{MaskResult, MaskStats};
use warden_pg::client::{Client, ClientError};
use warden_pg::rows;
use warden_pipeline::{ConnectionSpec, HoldOutcome, Protocol, RequestId};

use crate::jsonrpc::{self, RpcError};
use crate::tools;
use crate::{McpServer, McpSession, PROTO, Slot};

pub(crate) struct Ctx<'a> {
    pub server: &'a Arc<McpServer>,
    pub session: &'a Arc<McpSession>,
    /// `Warden-Purpose` header of the POST (used when a call names no purpose).
    pub header_purpose: Option<String>,
}

/// A `tools/call` result.
struct ToolResult {
    structured: Value,
    text: String,
    is_error: bool,
}

impl ToolResult {
    fn ok(structured: Value) -> Self {
        let text = serde_json::to_string(&structured).unwrap_or_default();
        ToolResult {
            structured,
            text,
            is_error: false,
        }
    }
    fn error(message: impl Into<String>) -> Self {
        let message = message.into();
        ToolResult {
            structured: json!({"error": message}),
            text: message,
            is_error: true,
        }
    }
    fn error_with(message: impl Into<String>, extra: Value) -> Self {
        let message = message.into();
        let mut structured = json!({"error": message});
        if let (Value::Object(s), Value::Object(e)) = (&mut structured, extra) {
            s.extend(e);
        }
        ToolResult {
            structured,
            text: message,
            is_error: true,
        }
    }
    fn into_json(self) -> Value {
        json!({
            "content": [{"type": "text", "text": self.text}],
            "structuredContent": self.structured,
            "isError": self.is_error,
        })
    }
}

pub(crate) async fn call(ctx: &Ctx<'_>, mut params: Map<String, Value>) -> Result<Value, RpcError> {
    let name = match params.remove("name") {
        Some(Value::String(n)) => n,
        _ => {
            return Err(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "invalid params: `name` (the tool) is required",
            ));
        }
    };
    let args = match params.remove("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "invalid params: `arguments` must be an object",
            ));
        }
    };
    let r = match name.as_str() {
        "list_connections" => match tools::no_args(&args) {
            Ok(()) => list_connections(ctx),
            Err(e) => ToolResult::error(e),
        },
        "describe_connection" => match tools::describe_args(&args) {
            Ok(a) => describe(ctx, a).await,
            Err(e) => ToolResult::error(e),
        },
        "query" => match tools::query_args(&args) {
            Ok(a) => query(ctx, a).await,
            Err(e) => ToolResult::error(e),
        },
        "http_request" => match tools::http_args(&args) {
            Ok(a) => http_request(ctx, a).await,
            Err(e) => ToolResult::error(e),
        },
        "approval_status" => match tools::approval_id_arg(&args) {
            Ok(id) => approval_status(ctx, &id),
            Err(e) => ToolResult::error(e),
        },
        other => {
            return Err(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                format!(
                    "invalid params: unknown tool `{}`",
                    other
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>()
                ),
            ));
        }
    };
    Ok(r.into_json())
}

// ------------------------------------------------------------------ list / describe

fn list_connections(ctx: &Ctx<'_>) -> ToolResult {
    let p = &ctx.session.principal;
    let pipeline = &ctx.server.pipeline;
    let mut conns: Vec<&Arc<ConnectionSpec>> = pipeline
        .connections()
        .filter(|c| c.protocol != Protocol::Mcp && pipeline.may_connect(p, &c.name))
        .collect();
    conns.sort_by(|a, b| a.name.cmp(&b.name));
    let list: Vec<Value> = conns
        .into_iter()
        .map(|c| {
            let rules = rules_for(ctx, &c.name);
            let description = c.description.clone().unwrap_or_else(|| match c.protocol {
                Protocol::Postgres => format!(
                    "PostgreSQL database `{}`",
                    c.database.as_deref().unwrap_or(&c.name)
                ),
                Protocol::Mysql => format!(
                    "MySQL database `{}`",
                    c.database.as_deref().unwrap_or(&c.name)
                ),
                Protocol::Http => "HTTP API".to_string(),
                Protocol::Kubernetes => "Kubernetes API".to_string(),
                Protocol::Mcp => String::new(),
            });
            let summary = rules
                .iter()
                .map(|r| {
                    let what = r["sql"]
                        .as_array()
                        .or(r["http"].as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_else(|| "everything".into());
                    format!("{}: {what}", r["effect"].as_str().unwrap_or(""))
                })
                .collect::<Vec<_>>()
                .join("; ");
            json!({
                "name": c.name,
                "protocol": c.protocol.as_str(),
                "description": description,
                "tool": match c.protocol {
                    Protocol::Http | Protocol::Kubernetes => "http_request",
                    _ => "query",
                },
                "allowed": summary,
                "rules": rules,
            })
        })
        .collect();
    ToolResult::ok(json!({"principal": p.id, "connections": list}))
}

/// The rules that apply to the caller on `connection`, as the agent should read them.
fn rules_for(ctx: &Ctx<'_>, connection: &str) -> Vec<Value> {
    let p = &ctx.session.principal;
    ctx.server
        .pipeline
        .policy()
        .rules()
        .iter()
        .filter(|r| r.principal_match(p).is_some() && r.connection_match(connection).is_some())
        .map(|r| {
            let mut v = json!({"rule": r.id, "effect": r.effect.as_str()});
            if let Some(k) = &r.sql {
                v["sql"] = json!(k.iter().map(|k| k.as_str()).collect::<Vec<_>>());
            }
            if let Some(h) = &r.http {
                v["http"] = json!(h);
            }
            if !r.approvers.is_empty() {
                v["approvers"] = json!(r.approvers);
            }
            if r.refine.require_purpose {
                v["require_purpose"] = json!(true);
            }
            if let Some(t) = &r.refine.tables {
                v["tables"] = json!(t);
            }
            v
        })
        .collect()
}

/// Columns of the non-system schemas (run as a SELECT through the pipeline).
const CATALOG_SQL: &str = "SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.is_nullable \
FROM information_schema.columns c \
JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') \
AND c.table_schema NOT LIKE 'pg\\_toast%' AND c.table_schema NOT LIKE 'pg\\_temp%' \
ORDER BY c.table_schema, c.table_name, c.ordinal_position";
const CATALOG_MAX_COLUMNS: usize = 5000;

async fn describe(ctx: &Ctx<'_>, a: tools::DescribeArgs) -> ToolResult {
    let spec = match connection(ctx, &a.connection).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match spec.protocol {
        Protocol::Postgres => {}
        Protocol::Http | Protocol::Kubernetes => {
            return ToolResult::ok(json!({
                "connection": spec.name,
                "protocol": spec.protocol.as_str(),
                "description": spec.description,
                "tool": "http_request",
                "rules": rules_for(ctx, &spec.name),
            }));
        }
        _ => {
            return ToolResult::error(format!(
                "Warden: connection `{}` ({}) cannot be used through MCP yet",
                spec.name,
                spec.protocol.as_str()
            ));
        }
    }
    let sql = QueryLike {
        sql: CATALOG_SQL.to_string(),
        params: Vec::new(),
        purpose: a.purpose,
        approval_id: None,
        max_rows: CATALOG_MAX_COLUMNS,
    };
    let out = match run_sql(ctx, &spec, sql).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut tables: Vec<Value> = Vec::new();
    for row in &out.rows {
        let cell = |i: usize| row.get(i).and_then(|v| v.clone()).unwrap_or_default();
        let (schema, table) = (cell(0), cell(1));
        let col = json!({"name": cell(2), "type": cell(3), "nullable": cell(4) == "YES"});
        match tables.last_mut() {
            Some(t) if t["schema"] == schema.as_str() && t["table"] == table.as_str() => {
                if let Some(c) = t["columns"].as_array_mut() {
                    c.push(col);
                }
            }
            _ => tables.push(json!({"schema": schema, "table": table, "columns": [col]})),
        }
    }
    ToolResult::ok(json!({
        "connection": spec.name,
        "protocol": "postgres",
        "description": spec.description,
        "tables": tables,
        "truncated": out.truncated,
        "request_id": out.request_id.to_string(),
    }))
}

// ------------------------------------------------------------------ shared phases

/// The connection named by a call, if it exists and the caller may use it.
async fn connection(ctx: &Ctx<'_>, name: &str) -> Result<Arc<ConnectionSpec>, ToolResult> {
    let p = &ctx.session.principal;
    let pipeline = &ctx.server.pipeline;
    let clean: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    let Some(spec) = pipeline.connection(name) else {
        pipeline
            .record_session_refused(
                Some(p),
                &clean,
                PROTO,
                &ctx.session.client,
                "unknown connection",
            )
            .await;
        return Err(ToolResult::error(format!(
            "Warden: there is no connection named `{clean}`; list_connections shows the ones you may use"
        )));
    };
    if !pipeline.may_connect(p, &spec.name) {
        let why = format!(
            "no rule gives {} access to connection `{}`",
            p.id, spec.name
        );
        pipeline
            .record_session_refused(Some(p), &spec.name, PROTO, &ctx.session.client, &why)
            .await;
        return Err(ToolResult::error(format!("Warden: {why}")));
    }
    Ok(spec)
}

async fn slot(ctx: &Ctx<'_>, spec: &Arc<ConnectionSpec>) -> Result<Arc<Slot>, ToolResult> {
    ctx.session
        .slot(&ctx.server.pipeline, spec)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not record session.start");
            ToolResult::error("Warden: the evidence ledger is unavailable; nothing was run")
        })
}

fn denial_message(d: &Decision, what: &str) -> String {
    let rules = if d.rules.is_empty() {
        "default deny: no rule allows it".to_string()
    } else {
        format!(
            "rule {}",
            d.rules
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut m = format!("Warden denied this {what} ({rules}): {}", d.reason);
    if d.reason.contains("purpose") {
        m.push_str(". Pass `purpose` in the tool call.");
    }
    m
}

/// What the approval phase decided.
enum Gate {
    /// Go on (with the approval that let it through, if any).
    Go(Option<ApprovalInfo>),
    /// Answer this instead (pending, refused).
    Stop(ToolResult),
    /// A new hold: wait up to `approval_wait` for it.
    Wait {
        id: String,
        outcome: tokio::sync::oneshot::Receiver<HoldOutcome>,
        timeout: std::time::Duration,
    },
}

fn pending(
    ctx: &Ctx<'_>,
    id: &str,
    decision: &Decision,
    seconds_left: u64,
    tool: &str,
) -> ToolResult {
    let approvers = if decision.approvers.is_empty() {
        "an approver".to_string()
    } else {
        decision.approvers.join(", ")
    };
    let link = ctx.server.pipeline.approvals().map(|a| a.broker.link(id));
    let message = format!(
        "Warden: held for approval {id} by {approvers} (rule {}). It has NOT run yet. An approver runs `warden approvals approve {id}`. Poll approval_status {{\"id\": \"{id}\"}}; once approved, call {tool} again with the same arguments plus \"approval_id\": \"{id}\".",
        decision.rules.join(", ")
    );
    // Not an error: the call is parked. The text is the JSON itself, so an agent that only
    // reads text content still finds the approval id under a fixed key.
    ToolResult::ok(json!({
        "status": "pending_approval",
        "approval_id": id,
        "approvers": decision.approvers,
        "rules": decision.rules,
        "expires_in_seconds": seconds_left,
        "link": link,
        "message": message,
    }))
}

/// The approval phase of an `approve` decision (called with the slot's gate held).
async fn approval_gate(
    ctx: &Ctx<'_>,
    slot: &Slot,
    action: &ActionInfo,
    decision: &Decision,
    approval_id: Option<&str>,
    tool: &str,
) -> Gate {
    let session = &slot.session;
    if let Some(grant) = session.granted(decision) {
        return Gate::Go(Some(ApprovalInfo {
            id: grant,
            decision: Some("granted".into()),
            comment: Some("covered by a standing time-boxed grant".into()),
            ..Default::default()
        }));
    }
    let Some(approvals) = ctx.server.pipeline.approvals() else {
        return Gate::Stop(ToolResult::error(
            "Warden: this call needs approval, but approvals are not configured",
        ));
    };
    if let Some(id) = approval_id {
        let clean: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(view) = approvals.broker.get(id) else {
            return Gate::Stop(ToolResult::error(format!(
                "Warden: approval `{clean}` is unknown (or expired from memory)"
            )));
        };
        if view.requester != session.principal.id
            || view.on_behalf_of != session.principal.on_behalf_of
            || view.connection != session.connection.name
            || view.action_kind != action.kind
            || view.statement != action.text
            || view.params != action.params
        {
            return Gate::Stop(ToolResult::error(format!(
                "Warden: approval `{clean}` was given for another statement, caller or connection; it approves exactly the call that was held"
            )));
        }
        return match view.state {
            warden_approvals::State::Pending => Gate::Stop(pending(
                ctx,
                id,
                decision,
                view.seconds_left.unwrap_or(0),
                tool,
            )),
            warden_approvals::State::Approved => {
                if !ctx.server.spend_approval(id) {
                    return Gate::Stop(ToolResult::error(format!(
                        "Warden: approval `{clean}` was already used; each approval lets one call through"
                    )));
                }
                Gate::Go(Some(ApprovalInfo {
                    id: id.to_string(),
                    approver: Some(view.decided_by.join(",")),
                    decision: Some("approved".into()),
                    decided_at: view.decided_at.clone(),
                    comment: view.votes.last().and_then(|v| v.comment.clone()),
                }))
            }
            other => Gate::Stop(ToolResult::error_with(
                format!(
                    "Warden: approval `{clean}` is {other}{}; the call was not run",
                    view.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
                json!({"approval_id": id, "state": other.as_str()}),
            )),
        };
    }
    match session.request_approval(action.clone(), decision).await {
        Ok((id, outcome, timeout)) => Gate::Wait {
            id,
            outcome,
            timeout,
        },
        Err(e) => Gate::Stop(ToolResult::error(format!(
            "Warden: this call needs approval and was not run: {e}"
        ))),
    }
}

/// Wait (up to `approval_wait`) for a new hold.
async fn wait_hold(
    ctx: &Ctx<'_>,
    id: String,
    outcome: tokio::sync::oneshot::Receiver<HoldOutcome>,
    timeout: std::time::Duration,
    decision: &Decision,
    tool: &str,
) -> Result<ApprovalInfo, ToolResult> {
    let wait = ctx.server.config.approval_wait;
    if wait.is_zero() {
        return Err(pending(ctx, &id, decision, timeout.as_secs(), tool));
    }
    match tokio::time::timeout(wait, outcome).await {
        Err(_) => Err(pending(
            ctx,
            &id,
            decision,
            timeout.saturating_sub(wait).as_secs(),
            tool,
        )),
        Ok(Ok(HoldOutcome::Approved { approvers, comment })) => {
            ctx.server.spend_approval(&id);
            Ok(ApprovalInfo {
                id,
                approver: Some(approvers.join(",")),
                decision: Some("approved".into()),
                decided_at: Some(warden_core::time_fmt::now_rfc3339()),
                comment,
            })
        }
        Ok(Ok(HoldOutcome::Denied { approver, comment })) => Err(ToolResult::error_with(
            format!(
                "Warden: approval {id} was denied by {approver}{}; the call was not run",
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            ),
            json!({"approval_id": id, "state": "denied"}),
        )),
        Ok(Ok(HoldOutcome::TimedOut)) => Err(ToolResult::error_with(
            format!("Warden: approval {id} timed out; the call was not run"),
            json!({"approval_id": id, "state": "timeout"}),
        )),
        Ok(Ok(HoldOutcome::Withdrawn { reason })) => Err(ToolResult::error_with(
            format!("Warden: approval {id} was withdrawn ({reason}); the call was not run"),
            json!({"approval_id": id, "state": "withdrawn"}),
        )),
        Ok(Err(_)) => Err(ToolResult::error(format!(
            "Warden: the approval broker stopped before approval {id} was decided"
        ))),
    }
}

/// Decide, hold if needed, and commit the `action.request` record. Returns the request id
/// and the slot once the action may run.
async fn admit(
    ctx: &Ctx<'_>,
    spec: &Arc<ConnectionSpec>,
    action: ActionInfo,
    purpose: Option<String>,
    approval_id: Option<&str>,
    tool: &str,
    decide: impl FnOnce(&warden_pipeline::Session) -> Decision,
) -> Result<(Arc<Slot>, RequestId), ToolResult> {
    let slot = slot(ctx, spec).await?;
    let session = slot.session.clone();
    let what = if action.kind == "sql" {
        "statement"
    } else {
        "request"
    };
    let (decision, gate) = {
        let _g = slot.gate.lock().await;
        session.set_purpose(purpose.clone());
        let decision = decide(&session);
        let gate = match decision.effect {
            Effect::Deny => {
                session
                    .record_denied(
                        action.clone(),
                        &decision,
                        Some(format!("MCP tool `{tool}`")),
                    )
                    .await;
                return Err(ToolResult::error_with(
                    denial_message(&decision, what),
                    json!({"rules": decision.rules, "reason": decision.reason}),
                ));
            }
            Effect::Approve => {
                approval_gate(ctx, &slot, &action, &decision, approval_id, tool).await
            }
            Effect::Allow => Gate::Go(None),
        };
        (decision, gate)
    };
    let approval = match gate {
        Gate::Go(a) => a,
        Gate::Stop(r) => return Err(r),
        Gate::Wait {
            id,
            outcome,
            timeout,
        } => Some(wait_hold(ctx, id, outcome, timeout, &decision, tool).await?),
    };
    let mut rec = session.request_record(action, &decision);
    rec.purpose = purpose;
    rec.approval = approval;
    match session.commit_request(rec).await {
        Ok(id) => Ok((slot, id)),
        Err(e) => {
            tracing::error!(error = %e, session = %session.id, "could not record action.request");
            Err(ToolResult::error(
                "Warden: the call could not be recorded, so it was not run",
            ))
        }
    }
}

/// Records the `action.response` of an admitted call exactly once, with the call's own
/// purpose (concurrent calls may differ). A call abandoned midway (the agent's HTTP request
/// went away) is recorded `interrupted` when this is dropped: no request without an outcome.
struct ResponseRecorder {
    server: Arc<McpServer>,
    slot: Arc<Slot>,
    request: RequestId,
    purpose: Option<String>,
    started: Instant,
    done: bool,
}

impl ResponseRecorder {
    fn new(ctx: &Ctx<'_>, slot: &Arc<Slot>, request: &RequestId, purpose: Option<String>) -> Self {
        ResponseRecorder {
            server: ctx.server.clone(),
            slot: slot.clone(),
            request: request.clone(),
            purpose,
            started: Instant::now(),
            done: false,
        }
    }

    fn record(&mut self, mut info: ResponseInfo) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        info.duration_us = Some(self.started.elapsed().as_micros() as u64);
        let mut r = self.slot.session.record(RecordKind::ActionResponse);
        r.request_id = Some(self.request.to_string());
        r.purpose = self.purpose.clone();
        r.response = Some(info);
        self.server.pipeline.ledger().append_background(r);
    }

    fn fail(&mut self, msg: &str, code: Option<String>) {
        self.record(ResponseInfo {
            status: "error".into(),
            error_code: code,
            error_message: Some(msg.to_string()),
            ..Default::default()
        });
    }
}

impl Drop for ResponseRecorder {
    fn drop(&mut self) {
        if !self.done {
            self.record(ResponseInfo {
                status: "interrupted".into(),
                error_message: Some("the MCP request ended before the call finished".into()),
                ..Default::default()
            });
        }
    }
}

// ------------------------------------------------------------------ SQL

struct QueryLike {
    sql: String,
    params: Vec<Option<String>>,
    purpose: Option<String>,
    approval_id: Option<String>,
    max_rows: usize,
}

struct SqlOutcome {
    columns: Vec<String>,
    /// Masked rows as text.
    rows: Vec<Vec<Option<String>>>,
    types: Vec<u32>,
    total_rows: u64,
    truncated: bool,
    tag: String,
    masked_values: std::collections::BTreeMap<String, u64>,
    request_id: RequestId,
}

async fn run_sql(
    ctx: &Ctx<'_>,
    spec: &Arc<ConnectionSpec>,
    q: QueryLike,
) -> Result<SqlOutcome, ToolResult> {
    // Exactly one statement per call.
    let dialect = warden_policy::Dialect::Postgres;
    let stmts = warden_policy::classify(&q.sql, dialect);
    let info = match stmts.len() {
        0 => return Err(ToolResult::error("Warden: `sql` holds no statement")),
        1 => stmts
            .into_iter()
            .next()
            .ok_or_else(|| ToolResult::error("no statement"))?,
        n => {
            return Err(ToolResult::error(format!(
                "Warden: `sql` holds {n} statements; send exactly one statement per query call (nothing was run)"
            )));
        }
    };
    let purpose = q.purpose.clone().or_else(|| ctx.header_purpose.clone());
    let mut action = warden_pipeline::Session::sql_action(&info, q.params.clone());
    action.text = q.sql.clone();
    let (slot, request_id) = admit(
        ctx,
        spec,
        action,
        purpose.clone(),
        q.approval_id.as_deref(),
        "query",
        |s| s.decide_sql(&info),
    )
    .await?;
    let session = &slot.session;
    let mut rec = ResponseRecorder::new(ctx, &slot, &request_id, purpose);
    let timeout = ctx.server.config.call_timeout;
    let mut client = match tokio::time::timeout(timeout, Client::connect(spec, "warden-mcp")).await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let msg = format!("Warden could not open connection `{}`: {e}", spec.name);
            rec.fail(&msg, None);
            return Err(ToolResult::error(msg));
        }
        Err(_) => {
            let msg = format!("Warden could not open connection `{}` in time", spec.name);
            rec.fail(&msg, None);
            return Err(ToolResult::error(msg));
        }
    };
    let result = tokio::time::timeout(timeout, client.query(&q.sql, &q.params, q.max_rows)).await;
    let res = match result {
        Ok(Ok(r)) => {
            client.close().await;
            r
        }
        Ok(Err(ClientError::Server(e))) => {
            client.close().await;
            rec.fail(&e.message, Some(e.code.clone()));
            return Err(ToolResult::error_with(
                format!(
                    "the database refused the statement: {} ({})",
                    e.message, e.code
                ),
                json!({"sqlstate": e.code, "request_id": request_id.to_string()}),
            ));
        }
        Ok(Err(e)) => {
            let msg = e.to_string();
            rec.fail(&msg, None);
            return Err(ToolResult::error(msg));
        }
        Err(_) => {
            client.cancel().await;
            let msg = format!(
                "the statement did not finish within {}; it was cancelled",
                warden_approvals::humanize(timeout)
            );
            rec.fail(&msg, Some("57014".into()));
            return Err(ToolResult::error(msg));
        }
    };

    // Mask (the agent and the evidence only ever see masked values).
    let plan = session
        .masker
        .as_ref()
        .map(|m| rows::plan_for(m, &res.columns));
    let mut stats = MaskStats::default();
    let mut capture = rows::Capture::default();
    capture.columns = res.columns.iter().map(|c| c.name.clone()).collect();
    let binary = vec![false; res.columns.len()];
    let truncated = res.truncated();
    let mut out_rows = Vec::with_capacity(res.rows.len());
    for row in res.rows {
        let masked: Vec<Option<Vec<u8>>> = row
            .into_iter()
            .enumerate()
            .map(|(i, v)| match (v, &plan) {
                (None, _) => None,
                (Some(b), Some(p)) => match p.mask_value(i, &b, &mut stats) {
                    MaskResult::Unchanged => Some(b),
                    MaskResult::Replaced(nb) => Some(nb),
                    MaskResult::Null => None,
                },
                (Some(b), None) => Some(b),
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = masked.iter().map(|v| v.as_deref()).collect();
        capture.add_row(
            &refs,
            &binary,
            session.limits.response_rows,
            session.limits.response_bytes,
        );
        out_rows.push(
            masked
                .into_iter()
                .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                .collect::<Vec<_>>(),
        );
    }
    capture.stats.merge(&stats);
    let (masked, counts) = capture.into_evidence(res.total_rows);
    rec.record(ResponseInfo {
        status: "ok".into(),
        tag: Some(res.tag.clone()),
        rows: warden_pg::codec::tag_rows(&res.tag).unwrap_or(res.total_rows),
        bytes: res.bytes,
        masked,
        masked_values: counts.clone(),
        ..Default::default()
    });
    Ok(SqlOutcome {
        columns: res.columns.iter().map(|c| c.name.clone()).collect(),
        types: res.columns.iter().map(|c| c.type_oid).collect(),
        rows: out_rows,
        total_rows: res.total_rows,
        truncated,
        tag: res.tag,
        masked_values: counts,
        request_id,
    })
}

/// A text value as JSON: integers and booleans as such, everything else as a string.
fn typed(v: Option<String>, oid: u32) -> Value {
    let Some(s) = v else { return Value::Null };
    match oid {
        20 | 21 | 23 => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(s)),
        16 => match s.as_str() {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => Value::String(s),
        },
        _ => Value::String(s),
    }
}

async fn query(ctx: &Ctx<'_>, a: tools::QueryArgs) -> ToolResult {
    let spec = match connection(ctx, &a.connection).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if spec.protocol != Protocol::Postgres {
        return ToolResult::error(format!(
            "Warden: `query` runs SQL on PostgreSQL connections; `{}` is {} (use {})",
            spec.name,
            spec.protocol.as_str(),
            if spec.protocol == Protocol::Http {
                "http_request"
            } else {
                "another tool"
            }
        ));
    }
    let out = match run_sql(
        ctx,
        &spec,
        QueryLike {
            sql: a.sql,
            params: a.params,
            purpose: a.purpose,
            approval_id: a.approval_id,
            max_rows: ctx.server.config.max_rows,
        },
    )
    .await
    {
        Ok(o) => o,
        Err(r) => return r,
    };
    let rows: Vec<Value> = out
        .rows
        .into_iter()
        .map(|r| {
            Value::Array(
                r.into_iter()
                    .enumerate()
                    .map(|(i, v)| typed(v, out.types.get(i).copied().unwrap_or(0)))
                    .collect(),
            )
        })
        .collect();
    let returned = rows.len();
    let mut v = json!({
        "connection": spec.name,
        "command": out.tag,
        "columns": out.columns,
        "rows": rows,
        "row_count": returned,
        "total_rows": out.total_rows,
        "truncated": out.truncated,
        "request_id": out.request_id.to_string(),
    });
    if out.truncated {
        v["note"] = json!(format!(
            "only the first {returned} of {} rows are shown; narrow the query (WHERE / LIMIT)",
            out.total_rows
        ));
    }
    if !out.masked_values.is_empty() {
        v["masked_values"] = json!(out.masked_values);
    }
    ToolResult::ok(v)
}

// ------------------------------------------------------------------ HTTP

async fn http_request(ctx: &Ctx<'_>, a: tools::HttpArgs) -> ToolResult {
    let spec = match connection(ctx, &a.connection).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(upstream) = ctx
        .server
        .upstreams
        .get(&spec.name)
        .filter(|_| spec.protocol == Protocol::Http)
    else {
        return ToolResult::error(format!(
            "Warden: `http_request` works on HTTP connections; `{}` is {} (use query)",
            spec.name,
            spec.protocol.as_str()
        ));
    };
    let Ok(method) = Method::from_bytes(a.method.as_bytes()) else {
        return ToolResult::error("Warden: `method` is not a valid HTTP method");
    };
    let (raw_path, query) = match a.path.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (a.path.clone(), None),
    };
    let target = match warden_http::target::route(&format!("/c{raw_path}")) {
        Ok(t) => t,
        Err(warden_http::target::TargetError::BadPath(why)) => {
            return ToolResult::error(format!("Warden: {why}; nothing was sent"));
        }
        Err(_) => return ToolResult::error("Warden: `path` must start with `/`"),
    };
    let text = match &query {
        Some(q) => format!("{method} {}?{q}", target.path),
        None => format!("{method} {}", target.path),
    };
    let purpose = a.purpose.clone().or_else(|| ctx.header_purpose.clone());
    let masker = ctx.server.pipeline.masker_for(&spec.name);
    let mut stats = MaskStats::default();
    // Evidence keeps the (masked) request body, which also binds an approval to it.
    let body_evidence = a.body.as_ref().map(|b| {
        let cut = &b[..b.len().min(4096)];
        let shown = match &masker {
            Some(m) => m.mask_bytes(cut, &mut stats).into_owned(),
            None => cut.to_vec(),
        };
        String::from_utf8_lossy(&shown).into_owned()
    });
    let action = ActionInfo {
        kind: "http".into(),
        text,
        params: body_evidence.map(Some).into_iter().collect(),
        ..Default::default()
    };
    let policy_path = target.policy_path.clone();
    let m = method.clone();
    let (slot, request_id) = match admit(
        ctx,
        &spec,
        action,
        purpose.clone(),
        a.approval_id.as_deref(),
        "http_request",
        |s| s.decide_http(m.as_str(), &policy_path),
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut rec = ResponseRecorder::new(ctx, &slot, &request_id, purpose);
    let uri = match upstream.uri(&target.path, query.as_deref()) {
        Ok(u) => u,
        Err(e) => {
            let msg = format!("cannot build the upstream URL: {e}");
            rec.fail(&msg, None);
            return ToolResult::error(format!("Warden: {msg}"));
        }
    };
    let mut req = Request::new(warden_http::body::full(a.body.clone().unwrap_or_default()));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    for (k, v) in &a.headers {
        let lower = k.to_ascii_lowercase();
        if lower.starts_with("warden-")
            || matches!(
                lower.as_str(),
                "host"
                    | "authorization"
                    | "proxy-authorization"
                    | "cookie"
                    | "content-length"
                    | "transfer-encoding"
                    | "connection"
                    | "upgrade"
                    | "te"
                    | "keep-alive"
                    | "expect"
                    | "accept-encoding"
            )
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            req.headers_mut().insert(n, v);
        }
    }
    if a.body.is_some() && !req.headers().contains_key(header::CONTENT_TYPE) {
        let ct = if a
            .body
            .as_deref()
            .is_some_and(|b| serde_json::from_slice::<Value>(b).is_ok())
        {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        req.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if let Some(inject) = ctx.server.inject.get(&spec.name) {
        for (k, v) in inject {
            req.headers_mut().insert(k.clone(), v.clone());
        }
    }
    req.headers_mut().insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let timeout = ctx.server.config.call_timeout;
    let resp = match tokio::time::timeout(timeout, upstream.client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let msg = format!(
                "the upstream of `{}` ({}) failed: {e}",
                spec.name,
                upstream.describe()
            );
            rec.fail(&msg, None);
            return ToolResult::error(format!("Warden: {msg}"));
        }
        Err(_) => {
            let msg = format!("the upstream of `{}` did not answer in time", spec.name);
            rec.fail(&msg, None);
            return ToolResult::error(format!("Warden: {msg}"));
        }
    };
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let encoded = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let limit = ctx.server.config.max_response_body;
    let (bytes, complete, total) = match collect_up_to(resp.into_body(), limit, timeout).await {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("the upstream body failed: {e}");
            rec.fail(&msg, None);
            return ToolResult::error(format!("Warden: {msg}"));
        }
    };
    let mime = ct
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let is_json = mime == "application/json" || mime.ends_with("+json");
    let is_text = ct.is_none()
        || is_json
        || mime.starts_with("text/")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/x-ndjson"
                | "application/yaml"
        );
    let body: Value = if encoded {
        Value::String(format!("<{total} bytes of compressed content, not shown>"))
    } else if !is_text {
        Value::String(format!("<{total} bytes of {mime}, not shown>"))
    } else if is_json
        && complete
        && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
    {
        if let Some(m) = &masker {
            m.mask_json(&mut v, &mut stats);
        }
        v
    } else {
        let shown = match &masker {
            Some(m) => m.mask_bytes(&bytes, &mut stats).into_owned(),
            None => bytes.to_vec(),
        };
        Value::String(String::from_utf8_lossy(&shown).into_owned())
    };
    let code = status.as_u16();
    // Evidence: the masked body, capped.
    let cap = slot.session.limits.response_bytes;
    let excerpt = match &body {
        Value::String(s) if s.len() > cap => {
            let mut end = cap;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(s[..end].to_string())
        }
        v if serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0) > cap => {
            let s = serde_json::to_string(v).unwrap_or_default();
            let mut end = cap.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(s[..end].to_string())
        }
        v => v.clone(),
    };
    rec.record(ResponseInfo {
            status: if code >= 400 { "error" } else { "ok" }.into(),
            tag: Some(code.to_string()),
            error_code: (code >= 400).then(|| code.to_string()),
            bytes: total,
            masked: Some(
                json!({"status": code, "content_type": ct, "body": excerpt, "body_bytes": total, "truncated": !complete}),
            ),
            masked_values: stats.per_detector.clone(),
            ..Default::default()
    });
    let mut v = json!({
        "connection": spec.name,
        "status": code,
        "content_type": ct,
        "body": body,
        "truncated": !complete,
        "body_bytes": total,
        "request_id": request_id.to_string(),
    });
    if !stats.per_detector.is_empty() {
        v["masked_values"] = json!(stats.per_detector);
    }
    ToolResult {
        text: serde_json::to_string(&v).unwrap_or_default(),
        structured: v,
        is_error: code >= 400,
    }
}

/// Read up to `limit` bytes of a response body; counts (and drops) the rest.
async fn collect_up_to(
    mut body: hyper::body::Incoming,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<(Bytes, bool, u64), String> {
    let mut buf = BytesMut::new();
    let mut total: u64 = 0;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(d) = frame.into_data() {
                total += d.len() as u64;
                let room = limit.saturating_sub(buf.len());
                buf.extend_from_slice(&d[..d.len().min(room)]);
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("timed out reading the response".into()),
    }
    let complete = total as usize <= limit;
    Ok((buf.freeze(), complete, total))
}

// ------------------------------------------------------------------ approvals

fn approval_status(ctx: &Ctx<'_>, id: &str) -> ToolResult {
    let p = &ctx.session.principal;
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let Some(approvals) = ctx.server.pipeline.approvals() else {
        return ToolResult::error("Warden: approvals are not configured on this gateway");
    };
    let view = approvals
        .broker
        .get(id)
        .filter(|v| v.requester == p.id || warden_approvals::is_eligible(p, &v.approvers));
    let Some(v) = view else {
        return ToolResult::error(format!(
            "Warden: no approval `{clean}` that you requested or may decide"
        ));
    };
    let used = ctx.server.approval_used(id);
    let next = match v.state {
        warden_approvals::State::Pending => "wait: an approver has not decided yet".to_string(),
        warden_approvals::State::Approved if used => "already used by a retry".to_string(),
        warden_approvals::State::Approved => format!(
            "approved: repeat the held call with the same arguments plus \"approval_id\": \"{}\"",
            v.id
        ),
        other => format!("{other}: the held call will not run"),
    };
    ToolResult::ok(json!({
        "id": v.id,
        "state": v.state.as_str(),
        "connection": v.connection,
        "statement": v.statement,
        "params": v.params,
        "purpose": v.purpose,
        "approvers": v.approvers,
        "rules": v.rules,
        "decided_by": v.decided_by,
        "decided_at": v.decided_at,
        "reason": v.reason,
        "seconds_left": v.seconds_left,
        "used": used,
        "next": next,
    }))
}

impl McpServer {
    /// Mark an approval as spent; `false` if it already was.
    fn spend_approval(&self, id: &str) -> bool {
        self.used_approvals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string())
    }

    fn approval_used(&self, id: &str) -> bool {
        self.used_approvals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values() {
        assert_eq!(typed(Some("42".into()), 23), json!(42));
        assert_eq!(typed(Some("t".into()), 16), json!(true));
        assert_eq!(typed(Some("12.50".into()), 1700), json!("12.50"));
        // A masked integer column stays text rather than failing.
        assert_eq!(typed(Some("****".into()), 20), json!("****"));
        assert_eq!(typed(None, 23), Value::Null);
    }

    #[test]
    fn denials_name_the_rule_and_the_purpose() {
        let d = Decision {
            effect: Effect::Deny,
            rules: vec!["no-ddl".into()],
            reason: "rule no-ddl denies ddl".into(),
            approvers: vec![],
        };
        let m = denial_message(&d, "statement");
        assert!(m.contains("`no-ddl`"), "{m}");
        let d = Decision::deny("no rule allows select");
        assert!(denial_message(&d, "statement").contains("default deny"));
        let d = Decision::deny("rule r requires a declared purpose");
        assert!(denial_message(&d, "statement").contains("Pass `purpose`"));
    }

    #[test]
    fn tool_results_are_mcp_shaped() {
        let v = ToolResult::error("nope").into_json();
        assert_eq!(v["isError"], true);
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(v["content"][0]["text"], "nope");
        let v = ToolResult::ok(json!({"a": 1})).into_json();
        assert_eq!(v["isError"], false);
        assert_eq!(v["structuredContent"]["a"], 1);
        assert_eq!(v["content"][0]["text"], r#"{"a":1}"#);
    }
}
