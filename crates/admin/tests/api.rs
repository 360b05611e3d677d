//! The admin API over real HTTP (Warden's own minimal client over a TcpStream).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use warden_admin::Authenticator;
use warden_approvals::{ApprovalRequest, Broker, BrokerSettings, Hold, Outcome, http};
use warden_core::{ActionInfo, AuthInfo, AuthMethod, Principal, RecordKind};
use warden_store::{Durability, RecordFilter, Store};

struct Tokens(HashMap<String, Principal>);

impl Authenticator for Tokens {
    async fn authenticate(&self, token: &str, _client: &str) -> Result<Principal, String> {
        self.0
            .get(token)
            .cloned()
            .ok_or_else(|| "unknown token".into())
    }
}

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k".into()),
        },
        on_behalf_of: None,
    }
}

fn request() -> ApprovalRequest {
    ApprovalRequest {
        requester: principal("agent:reporter", &["agents"]),
        session_id: "s1".into(),
        connection: "orders".into(),
        protocol: "postgres".into(),
        purpose: Some("cleanup".into()),
        action: ActionInfo {
            kind: "sql".into(),
            text: "DELETE FROM items".into(),
            ..Default::default()
        },
        rules: vec!["writes".into()],
        approvers: vec!["group:dba".into()],
        min_approvals: 1,
        grant: None,
    }
}

struct Server {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    broker: Arc<Broker>,
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_with<A: Authenticator>(
    dir: tempfile::TempDir,
    store: Arc<Store>,
    auth: Arc<A>,
) -> Server {
    let broker = Broker::new(store.ledger(), BrokerSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(warden_admin::serve(listener, broker.clone(), auth, async {
        let _ = rx.await;
    }));
    Server {
        _dir: dir,
        store,
        broker,
        base,
        stop: Some(stop),
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open("sqlite://e.db", dir.path(), Durability::Process).unwrap());
    let tokens = Tokens(HashMap::from([
        (
            "agent".to_string(),
            principal("agent:reporter", &["agents"]),
        ),
        ("dana".to_string(), principal("user:dana", &["dba"])),
        ("erin".to_string(), principal("user:erin", &["dba"])),
        ("otto".to_string(), principal("user:otto", &["sales"])),
    ]));
    start_with(dir, store, Arc::new(tokens)).await
}

async fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http::request(
        method,
        &format!("{}{path}", s.base),
        &headers,
        body.map(str::as_bytes),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::String(r.text()));
    (r.status, v)
}

async fn hold(s: &Server) -> Hold {
    s.broker.hold(request()).await.unwrap()
}

#[tokio::test]
async fn healthz_and_auth() {
    let s = start().await;
    let (st, body) = call(&s, "GET", "/healthz", None, None).await;
    assert_eq!((st, body), (200, serde_json::json!("ok")));
    for path in ["/api/v1/approvals", "/api/v1/nothing-here"] {
        let (st, body) = call(&s, "GET", path, None, None).await;
        assert_eq!(st, 401, "{path}: {body}");
        assert_eq!(body["code"], "unauthenticated");
        let (st, _) = call(&s, "GET", path, Some("bogus"), None).await;
        assert_eq!(st, 401);
    }
    let (st, _) = call(&s, "GET", "/api/v1/nothing-here", Some("dana"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn list_show_approve() {
    let s = start().await;
    let h = hold(&s).await;
    let (st, body) = call(
        &s,
        "GET",
        "/api/v1/approvals?pending=true",
        Some("dana"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let list = body["approvals"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], h.id.as_str());
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[0]["statement"], "DELETE FROM items");
    assert_eq!(list[0]["requester"], "agent:reporter");
    assert!(list[0]["seconds_left"].as_u64().unwrap() > 500);

    let path = format!("/api/v1/approvals/{}", h.id);
    let (st, body) = call(&s, "GET", &path, Some("dana"), None).await;
    assert_eq!((st, body["id"].as_str()), (200, Some(h.id.as_str())));
    let (st, _) = call(
        &s,
        "GET",
        "/api/v1/approvals/apr_missing",
        Some("dana"),
        None,
    )
    .await;
    assert_eq!(st, 404);

    let (st, body) = call(
        &s,
        "POST",
        &format!("{path}/approve"),
        Some("dana"),
        Some(r#"{"comment": "looks fine"}"#),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "approved");
    assert_eq!(body["votes"][0]["approver"], "user:dana");
    assert_eq!(body["votes"][0]["comment"], "looks fine");
    assert_eq!(
        h.outcome.await.unwrap(),
        Outcome::Approved {
            approvers: vec!["user:dana".into()],
            comment: Some("looks fine".into())
        }
    );
    // Decided: 409; gone from the pending list but still in the history.
    let (st, body) = call(&s, "POST", &format!("{path}/deny"), Some("erin"), None).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["code"], "already_decided");
    let (_, body) = call(
        &s,
        "GET",
        "/api/v1/approvals?pending=true",
        Some("dana"),
        None,
    )
    .await;
    assert!(body["approvals"].as_array().unwrap().is_empty());
    let (_, body) = call(&s, "GET", "/api/v1/approvals", Some("dana"), None).await;
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refusals() {
    let s = start().await;
    let h = hold(&s).await;
    let path = format!("/api/v1/approvals/{}", h.id);
    let (st, body) = call(&s, "POST", &format!("{path}/approve"), Some("agent"), None).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "self_approval");
    let (st, body) = call(&s, "POST", &format!("{path}/approve"), Some("otto"), None).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["code"], "not_an_approver");
    assert!(body["error"].as_str().unwrap().contains("group:dba"));
    let (st, body) = call(
        &s,
        "POST",
        &format!("{path}/approve"),
        Some("dana"),
        Some("{nope"),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/approvals/apr_x/deny",
        Some("dana"),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (st, body) = call(&s, "POST", &format!("{path}/deny"), Some("dana"), Some("")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "denied");
    assert!(matches!(h.outcome.await.unwrap(), Outcome::Denied { .. }));
}

#[tokio::test]
async fn real_pipeline_authenticates_warden_keys_and_records_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open("sqlite://e.db", dir.path(), Durability::Process).unwrap());
    let key = warden_identity::keys::generate_key("user:dana", &["dba".to_string()], None);
    store.insert_key(&key.record).unwrap();
    let pipeline = warden_pipeline::Pipeline::new(
        vec![],
        warden_policy::Policy::new(vec![]),
        store.clone(),
        None,
        None,
    );
    let s = start_with(dir, store, pipeline).await;
    let h = hold(&s).await;
    let (st, body) = call(
        &s,
        "POST",
        &format!("/api/v1/approvals/{}/approve", h.id),
        Some(&key.presented),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["decided_by"][0], "user:dana");
    let (st, _) = call(
        &s,
        "GET",
        "/api/v1/approvals",
        Some("wk_000000000000_nope"),
        None,
    )
    .await;
    assert_eq!(st, 401);
    s.store.ledger().flush().await.unwrap();
    let mut kinds = Vec::new();
    s.store
        .query(&RecordFilter::default(), &mut |r| {
            kinds.push(r.kind);
            true
        })
        .unwrap();
    assert_eq!(
        kinds,
        vec![
            RecordKind::ApprovalRequested,
            RecordKind::ApprovalDecided,
            RecordKind::AuthFailed
        ]
    );
}
