//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the admin API — what the
//! console and the CLI (`warden approvals ...`, `warden sessions ... --admin-url`) call.
//! Hand-written; a unit test checks that every route in [`crate::ROUTES`] is described
//! and that every described path is routed.
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn err_resp(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn json_resp(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

fn q(name: &str, desc: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": ty}})
}

fn id_param(desc: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": desc, "schema": {"type": "string"}})
}

fn op(
    tag: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<Value>,
    ok: (&str, Value),
) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(ok.0.into(), ok.1);
    responses.insert(
        "401".into(),
        err_resp("no valid credential or console session"),
    );
    let mut o =
        json!({"tags": [tag], "summary": summary, "parameters": params, "responses": responses});
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": false, "content": {"application/json": {"schema": b}}});
    }
    o
}

fn window_params() -> Vec<Value> {
    vec![
        q(
            "since",
            "start of the window (inclusive): RFC 3339, a date, or a span ago (30m, 2h, 7d)",
            "string",
        ),
        q(
            "until",
            "end of the window (exclusive), same forms",
            "string",
        ),
        q("principal", "agent:NAME or user:NAME", "string"),
        q("connection", "connection name", "string"),
    ]
}

/// The document.
pub fn document() -> Value {
    let ref_ = |s: &str| json!({"$ref": format!("#/components/schemas/{s}")});
    let mut paths = serde_json::Map::new();
    paths.insert("/api/v1/openapi.json".into(), json!({"get": {
        "tags": ["meta"], "summary": "This document (no credential needed)", "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}));
    paths.insert("/api/v1/login".into(), json!({"post": {
        "tags": ["console"], "summary": "Sign in to the console with a Warden key or a JWT; sets the HttpOnly, SameSite=Strict session cookie",
        "security": [],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["credential"], "properties": {"credential": {"type": "string"}}}}}},
        "responses": {"200": json_resp("signed in", ref_("Me")), "401": err_resp("credential rejected"),
                      "415": err_resp("the body must be JSON")}}}));
    paths.insert(
        "/api/v1/logout".into(),
        json!({"post": op("console", "End the console session (needs X-CSRF-Token)", vec![], None,
        ("204", json!({"description": "signed out"})))}),
    );
    paths.insert("/api/v1/me".into(), json!({"get": op("console", "Who is calling, whether they may read evidence, and the CSRF token of a console session", vec![], None,
        ("200", json_resp("the caller", ref_("Me"))))}));
    paths.insert("/api/v1/approvals".into(), json!({"get": op("approvals", "Held actions, oldest first: pending and recently decided", vec![
        q("pending", "only pending ones (true/false)", "boolean")], None,
        ("200", json_resp("the holds", json!({"type": "object", "properties": {"approvals": {"type": "array", "items": ref_("Approval")}}}))))}));
    paths.insert("/api/v1/approvals/events".into(), json!({"get": op("approvals",
        "Server-sent events: an `approvals` event with the same JSON as GET /approvals on connect and after every change", vec![], None,
        ("200", json!({"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}})))}));
    paths.insert(
        "/api/v1/approvals/{id}".into(),
        json!({"get": op("approvals", "One hold", vec![id_param("approval id (apr_...)")], None,
        ("200", json_resp("the hold", ref_("Approval"))))}),
    );
    for (verb, what) in [("approve", "Approve"), ("deny", "Deny")] {
        let mut o = op(
            "approvals",
            &format!(
                "{what} a held action as the caller (four-eyes: never the requester or the human it acts for; must match the rule's approvers)"
            ),
            vec![id_param("approval id (apr_...)")],
            Some(
                json!({"type": "object", "properties": {"comment": {"type": "string", "maxLength": crate::MAX_COMMENT}}}),
            ),
            (
                "200",
                json_resp("the hold after the vote", ref_("Approval")),
            ),
        );
        let r = o["responses"].as_object_mut().expect("object");
        r.insert(
            "403".into(),
            err_resp(
                "self-approval, not an approver, or a console request without a valid CSRF token",
            ),
        );
        r.insert("404".into(), err_resp("no such hold"));
        r.insert("409".into(), err_resp("already decided, or a second vote"));
        r.insert("503".into(), err_resp("the decision could not be recorded"));
        paths.insert(
            format!("/api/v1/approvals/{{id}}/{verb}"),
            json!({"post": o}),
        );
    }
    let mut sp = window_params();
    sp.push(q(
        "has_denials",
        "only sessions with a policy.denied record",
        "boolean",
    ));
    sp.push(q(
        "has_approvals",
        "only sessions with an approval.requested record",
        "boolean",
    ));
    sp.push(q(
        "limit",
        "at most this many (default 100, max 1000)",
        "integer",
    ));
    paths.insert("/api/v1/sessions".into(), json!({"get": op("evidence", "Sessions that started in the window, newest first (auditors)", sp, None,
        ("200", json_resp("sessions", json!({"type": "object", "properties": {"sessions": {"type": "array", "items": ref_("Session")}}}))))}));
    paths.insert("/api/v1/sessions/{id}".into(), json!({"get": op("evidence", "One session and its evidence records in order, for replay (auditors)", vec![id_param("session id or a unique prefix")], None,
        ("200", json_resp("the session", json!({"type": "object", "properties": {
            "session": ref_("Session"), "records": {"type": "array", "items": ref_("Record")}, "truncated": {"type": "boolean"}}}))))}));
    let mut rp = window_params();
    rp.push(q(
        "kind",
        "record kind (action.request, policy.denied, ...)",
        "string",
    ));
    rp.push(q("session", "session id", "string"));
    rp.push(q(
        "q",
        "case-insensitive text in the statement / request line",
        "string",
    ));
    rp.push(q(
        "before",
        "next page: records with seq below this",
        "integer",
    ));
    rp.push(q(
        "limit",
        "page size (default 100, max 1000); ignored by downloads",
        "integer",
    ));
    rp.push(q(
        "format",
        "json (a page, newest first), csv or ndjson (a download of every match, oldest first)",
        "string",
    ));
    paths.insert("/api/v1/records".into(), json!({"get": op("evidence", "Audit search (auditors)", rp, None,
        ("200", json!({"description": "a page, or a download", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "records": {"type": "array", "items": ref_("Record")}, "next_before": {"type": ["integer", "null"]}}}},
            "text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}}})))}));
    paths.insert("/api/v1/evidence/export".into(), json!({"post": op("evidence",
        "A signed evidence bundle of the selected records (auditors); verify offline with `warden evidence verify FILE --public-key KEY`",
        vec![], Some(json!({"type": "object", "properties": {"since": {"type": "string"}, "until": {"type": "string"},
            "principal": {"type": "string"}, "connection": {"type": "string"}, "kind": {"type": "string"}}})),
        ("200", json!({"description": "the bundle (docs/evidence-format.md)", "content": {"application/json": {}}})))}));
    paths.insert("/api/v1/overview".into(), json!({"get": op("evidence", "Connections and rules (read-only), records per day for 14 days, sessions active in the last 15 minutes (auditors)", vec![], None,
        ("200", json_resp("the overview", json!({"type": "object"}))))}));
    paths.insert("/api/v1/chain".into(), json!({"get": op("evidence", "Chain head, last signed checkpoint, last background verification (auditors)", vec![], None,
        ("200", json_resp("chain status", json!({"type": "object", "properties": {
            "head_seq": {"type": "integer"}, "head_hash": {"type": "string"}, "checkpoint": {"type": ["object", "null"]},
            "verify": {"type": ["object", "null"]}, "verifying": {"type": "boolean"}}}))))}));
    paths.insert(
        "/api/v1/chain/verify".into(),
        json!({"post": op("evidence", "Start a full verification now (auditors)", vec![], None,
        ("202", json_resp("started", json!({"type": "object"}))))}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Warden admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Approvals, sessions, audit search and evidence export on Warden's admin listener. \
    Authenticate with `Authorization: Bearer <Warden key or JWT>`, or with the console's session cookie from POST /api/v1/login; \
    cookie-authenticated requests other than GET must send the session's CSRF token in `X-CSRF-Token`. \
    Errors are {\"error\": sentence, \"code\": code}."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"console": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a Warden key (wk_...) or a JWT from [identity.oidc]"},
                "console": {"type": "apiKey", "in": "cookie", "name": crate::console::COOKIE}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "code"], "properties": {"error": {"type": "string"}, "code": {"type": "string"}}},
                "Me": {"type": "object", "properties": {"principal": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}},
                    "on_behalf_of": {"type": ["string", "null"]}, "auditor": {"type": "boolean"}, "csrf_token": {"type": ["string", "null"]}}},
                "Approval": {"type": "object", "properties": {
                    "id": {"type": "string"}, "state": {"enum": ["pending", "approved", "denied", "timeout", "withdrawn"]},
                    "requester": {"type": "string"}, "on_behalf_of": {"type": "string"}, "session_id": {"type": "string"},
                    "connection": {"type": "string"}, "protocol": {"type": "string"}, "purpose": {"type": "string"},
                    "action_kind": {"type": "string"}, "statement": {"type": "string"}, "params": {"type": "array"},
                    "rules": {"type": "array", "items": {"type": "string"}}, "approvers": {"type": "array", "items": {"type": "string"}},
                    "min_approvals": {"type": "integer"}, "grant_secs": {"type": "integer"}, "votes": {"type": "array"},
                    "created_at": {"type": "string"}, "expires_at": {"type": "string"}, "seconds_left": {"type": "integer"},
                    "decided_at": {"type": "string"}, "decided_by": {"type": "array", "items": {"type": "string"}}, "reason": {"type": "string"},
                    "may_decide": {"type": "boolean", "description": "whether the caller's vote would be accepted now"},
                    "why_not": {"type": "string"}}},
                "Session": {"type": "object", "properties": {
                    "session_id": {"type": "string"}, "principal": {"type": ["string", "null"]}, "connection": {"type": ["string", "null"]},
                    "protocol": {"type": ["string", "null"]}, "client": {"type": ["string", "null"]}, "purpose": {"type": ["string", "null"]},
                    "started_at": {"type": "string"}, "ended_at": {"type": ["string", "null"]}, "last_activity": {"type": "string"},
                    "first_seq": {"type": "integer"}, "last_seq": {"type": "integer"}, "records": {"type": "integer"},
                    "requests": {"type": "integer"}, "denied": {"type": "integer"}, "errors": {"type": "integer"}, "approvals": {"type": "integer"}}},
                "Record": {"type": "object", "description": "an evidence record (PRODUCT.md, docs/evidence-format.md)"}
            }
        }
    })
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Response {
    axum::Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use tower::ServiceExt;
    use warden_approvals::{Broker, BrokerSettings};
    use warden_core::{AuthInfo, AuthMethod, Principal};
    use warden_store::{Durability, Store};

    use super::*;
    use crate::Authenticator;

    struct One;
    impl Authenticator for One {
        async fn authenticate(&self, token: &str, _: &str) -> Result<Principal, String> {
            (token == "dana")
                .then(|| Principal {
                    id: "user:dana".into(),
                    groups: vec!["dba".into()],
                    auth: AuthInfo {
                        method: AuthMethod::WardenKey,
                        issuer: None,
                        subject: None,
                    },
                    on_behalf_of: None,
                })
                .ok_or_else(|| "no".into())
        }
    }

    #[tokio::test]
    async fn every_route_is_documented_and_every_documented_path_is_routed() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in crate::ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is routed but not in openapi.json"
            );
        }
        let mut documented = 0;
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                documented += 1;
                assert!(
                    crate::ROUTES.contains(&(method.as_str(), path.as_str())),
                    "{method} {path} is documented but not in ROUTES"
                );
            }
        }
        assert_eq!(documented, crate::ROUTES.len());

        // Each one is really routed: never the API's 404 fallback or 405.
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open("sqlite://e.db", dir.path(), Durability::Process).unwrap());
        let broker = Broker::new(store.ledger(), BrokerSettings::default());
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let app = crate::build(
            crate::AdminParts {
                broker,
                auth: Arc::new(One),
                evidence: Some(crate::EvidenceSource {
                    store,
                    signer: None,
                    public_keys: vec![],
                    config: json!({}),
                }),
                console: Default::default(),
            },
            rx,
        );
        for (method, path) in crate::ROUTES {
            if *path == "/api/v1/approvals/events" {
                continue; // a stream that does not end; covered by the browser test
            }
            let uri = path.replace("{id}", "x");
            let req = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("authorization", "Bearer dana")
                .header("content-type", "application/json")
                .body(Body::from(if *path == "/api/v1/login" {
                    r#"{"credential":"dana"}"#
                } else {
                    ""
                }))
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !(status == 404 && v["error"] == "no such API endpoint"),
                "{method} {path} is not routed"
            );
        }
    }
}
