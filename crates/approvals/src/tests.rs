use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_core::{ActionInfo, AuthInfo, AuthMethod, EvidenceRecord, Principal, RecordKind};
use warden_store::{Durability, RecordFilter, Store};

use super::*;

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k1".into()),
        },
        on_behalf_of: None,
    }
}

fn agent() -> Principal {
    principal("agent:reporter", &["agents"])
}

fn request(min: u32, grant: Option<Duration>) -> ApprovalRequest {
    ApprovalRequest {
        requester: agent(),
        session_id: "s1".into(),
        connection: "orders".into(),
        protocol: "postgres".into(),
        purpose: Some("cleanup".into()),
        action: ActionInfo {
            kind: "sql".into(),
            text: "DELETE FROM items WHERE id = 1".into(),
            sql_kinds: vec!["delete".into()],
            ..Default::default()
        },
        rules: vec!["agent-writes-need-a-dba".into()],
        approvers: vec!["group:dba".into()],
        min_approvals: min,
        grant,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    broker: Arc<Broker>,
}

fn fixture(settings: BrokerSettings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open("sqlite://evidence.db", dir.path(), Durability::Process).unwrap());
    let broker = Broker::new(store.ledger(), settings);
    Fixture {
        _dir: dir,
        store,
        broker,
    }
}

impl Fixture {
    async fn records(&self, kind: RecordKind) -> Vec<EvidenceRecord> {
        self.store.ledger().flush().await.unwrap();
        let mut out = Vec::new();
        self.store
            .query(
                &RecordFilter {
                    kind: Some(kind.as_str().into()),
                    ..Default::default()
                },
                &mut |r| {
                    out.push(r);
                    true
                },
            )
            .unwrap();
        out
    }
}

fn dba(name: &str) -> Principal {
    principal(&format!("user:{name}"), &["dba"])
}

#[tokio::test]
async fn approve_releases_the_hold_and_is_recorded() {
    let f = fixture(BrokerSettings::default());
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    assert!(
        hold.id.starts_with("apr_") && hold.id.len() == 14,
        "{}",
        hold.id
    );
    let req = f.records(RecordKind::ApprovalRequested).await;
    assert_eq!(req.len(), 1);
    let r = &req[0];
    assert_eq!(r.principal.as_ref().unwrap().id, "agent:reporter");
    assert_eq!(r.approval.as_ref().unwrap().id, hold.id);
    assert_eq!(r.connection.as_deref(), Some("orders"));
    assert_eq!(r.purpose.as_deref(), Some("cleanup"));
    assert_eq!(
        r.action.as_ref().unwrap().text,
        "DELETE FROM items WHERE id = 1"
    );
    assert_eq!(r.decision.as_ref().unwrap().effect, Effect::Approve);
    assert_eq!(
        r.detail.as_deref(),
        Some("waiting for 1 approval(s) from group:dba")
    );
    assert_eq!(f.broker.list(true).len(), 1);
    assert_eq!(f.broker.get(&hold.id).unwrap().state, State::Pending);

    let v = f
        .broker
        .decide(&hold.id, &dba("dana"), true, Some("ok, ticket 42".into()))
        .await
        .unwrap();
    assert_eq!(v.state, State::Approved);
    assert_eq!(
        hold.outcome.await.unwrap(),
        Outcome::Approved {
            approvers: vec!["user:dana".into()],
            comment: Some("ok, ticket 42".into())
        }
    );
    let dec = f.records(RecordKind::ApprovalDecided).await;
    assert_eq!(dec.len(), 1);
    let a = dec[0].approval.as_ref().unwrap();
    assert_eq!(a.decision.as_deref(), Some("approved"));
    assert_eq!(a.approver.as_deref(), Some("user:dana"));
    assert_eq!(a.comment.as_deref(), Some("ok, ticket 42"));
    assert!(a.decided_at.is_some());
    assert_eq!(dec[0].request_id.as_deref(), Some(r.id.as_str()));
    assert_eq!(dec[0].principal.as_ref().unwrap().id, "agent:reporter");
    // Decided holds stay listable, but not as pending.
    assert!(f.broker.list(true).is_empty());
    assert_eq!(f.broker.list(false).len(), 1);
    // A second decision is refused.
    let err = f
        .broker
        .decide(&hold.id, &dba("erin"), true, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DecideError::AlreadyDecided { .. }), "{err}");
    assert_eq!(err.http_status(), 409);
    let err = f
        .broker
        .decide("apr_nope", &dba("erin"), true, None)
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 404);
}

#[tokio::test]
async fn self_approval_is_refused() {
    let f = fixture(BrokerSettings::default());
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    // The requester itself, even if it is in the approvers' group.
    let mut me = agent();
    me.groups.push("dba".into());
    let err = f
        .broker
        .decide(&hold.id, &me, true, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DecideError::SelfApproval(_)), "{err}");
    assert_eq!(err.http_status(), 403);
    assert_eq!(f.broker.get(&hold.id).unwrap().state, State::Pending);
    assert!(f.records(RecordKind::ApprovalDecided).await.is_empty());
}

#[tokio::test]
async fn the_human_behind_the_agent_cannot_approve() {
    let f = fixture(BrokerSettings::default());
    let mut req = request(1, None);
    req.requester.on_behalf_of = Some("user:alice".into());
    let hold = f.broker.hold(req).await.unwrap();
    let err = f
        .broker
        .decide(&hold.id, &dba("alice"), true, None)
        .await
        .unwrap_err();
    match &err {
        DecideError::SelfApproval(m) => assert!(m.contains("on behalf of user:alice"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Nor another agent acting for alice.
    let mut other_agent = principal("agent:helper", &["dba"]);
    other_agent.on_behalf_of = Some("user:alice".into());
    let err = f
        .broker
        .decide(&hold.id, &other_agent, true, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DecideError::SelfApproval(_)), "{err}");
    // Someone else may.
    f.broker
        .decide(&hold.id, &dba("dana"), true, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_group_is_refused() {
    let f = fixture(BrokerSettings::default());
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    let err = f
        .broker
        .decide(&hold.id, &principal("user:otto", &["sales"]), true, None)
        .await
        .unwrap_err();
    match &err {
        DecideError::NotAnApprover(m) => assert!(m.contains("group:dba"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.broker.get(&hold.id).unwrap().state, State::Pending);
    // A named user approver matches by id.
    let mut req = request(1, None);
    req.approvers = vec!["user:boss".into()];
    let h2 = f.broker.hold(req).await.unwrap();
    assert!(
        f.broker
            .decide(&h2.id, &dba("dana"), true, None)
            .await
            .is_err()
    );
    f.broker
        .decide(&h2.id, &principal("user:boss", &[]), true, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn min_approvals_needs_distinct_approvers() {
    let f = fixture(BrokerSettings::default());
    let mut hold = f.broker.hold(request(2, None)).await.unwrap();
    let v = f
        .broker
        .decide(&hold.id, &dba("dana"), true, None)
        .await
        .unwrap();
    assert_eq!(v.state, State::Pending);
    assert_eq!(v.votes.len(), 1);
    assert!(
        hold.outcome.try_recv().is_err(),
        "still held after one vote"
    );
    let err = f
        .broker
        .decide(&hold.id, &dba("dana"), true, None)
        .await
        .unwrap_err();
    assert!(matches!(err, DecideError::DuplicateApprover(_)), "{err}");
    let v = f
        .broker
        .decide(&hold.id, &dba("erin"), true, Some("second".into()))
        .await
        .unwrap();
    assert_eq!(v.state, State::Approved);
    assert_eq!(v.decided_by, vec!["user:dana", "user:erin"]);
    assert_eq!(
        hold.outcome.await.unwrap(),
        Outcome::Approved {
            approvers: vec!["user:dana".into(), "user:erin".into()],
            comment: Some("second".into())
        }
    );
    let dec = f.records(RecordKind::ApprovalDecided).await;
    let d: Vec<_> = dec
        .iter()
        .map(|r| {
            let a = r.approval.as_ref().unwrap();
            (a.decision.clone().unwrap(), a.approver.clone().unwrap())
        })
        .collect();
    assert_eq!(
        d,
        vec![
            ("approved (1 of 2)".to_string(), "user:dana".to_string()),
            ("approved".to_string(), "user:dana,user:erin".to_string())
        ]
    );
}

#[tokio::test]
async fn deny_ends_the_hold() {
    let f = fixture(BrokerSettings::default());
    let hold = f.broker.hold(request(2, None)).await.unwrap();
    f.broker
        .decide(&hold.id, &dba("dana"), true, None)
        .await
        .unwrap();
    let v = f
        .broker
        .decide(&hold.id, &dba("erin"), false, Some("not today".into()))
        .await
        .unwrap();
    assert_eq!(v.state, State::Denied);
    assert_eq!(v.reason.as_deref(), Some("denied by user:erin: not today"));
    assert_eq!(
        hold.outcome.await.unwrap(),
        Outcome::Denied {
            approver: "user:erin".into(),
            comment: Some("not today".into())
        }
    );
    let dec = f.records(RecordKind::ApprovalDecided).await;
    let last = dec.last().unwrap().approval.as_ref().unwrap();
    assert_eq!(last.decision.as_deref(), Some("denied"));
    assert_eq!(last.approver.as_deref(), Some("user:erin"));
    assert_eq!(last.comment.as_deref(), Some("not today"));
}

#[tokio::test]
async fn timeout_fails_the_hold() {
    let f = fixture(BrokerSettings {
        timeout: Duration::from_millis(200),
        ..Default::default()
    });
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(5), hold.outcome)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, Outcome::TimedOut);
    assert_eq!(f.broker.get(&hold.id).unwrap().state, State::TimedOut);
    let err = f
        .broker
        .decide(&hold.id, &dba("dana"), true, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        DecideError::AlreadyDecided {
            state: State::TimedOut,
            ..
        }
    ));
    let dec = f.records(RecordKind::ApprovalDecided).await;
    assert_eq!(dec.len(), 1);
    let a = dec[0].approval.as_ref().unwrap();
    assert_eq!(a.decision.as_deref(), Some("timeout"));
    assert_eq!(a.approver, None);
}

#[tokio::test]
async fn withdraw_is_recorded() {
    let f = fixture(BrokerSettings::default());
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    f.broker.withdraw(&hold.id, "client cancelled");
    assert_eq!(
        hold.outcome.await.unwrap(),
        Outcome::Withdrawn {
            reason: "client cancelled".into()
        }
    );
    f.broker.withdraw(&hold.id, "twice"); // no-op
    let dec = f.records(RecordKind::ApprovalDecided).await;
    assert_eq!(dec.len(), 1);
    assert_eq!(
        dec[0].approval.as_ref().unwrap().decision.as_deref(),
        Some("withdrawn")
    );
    assert!(
        dec[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("client cancelled")
    );
    assert_eq!(f.broker.get(&hold.id).unwrap().state, State::Withdrawn);
}

#[tokio::test]
async fn grant_covers_later_requests_until_it_expires() {
    let f = fixture(BrokerSettings::default());
    let rules = vec!["agent-writes-need-a-dba".to_string()];
    assert_eq!(f.broker.granted(&agent(), "orders", &rules), None);
    let hold = f
        .broker
        .hold(request(1, Some(Duration::from_millis(400))))
        .await
        .unwrap();
    // Not before approval.
    assert_eq!(f.broker.granted(&agent(), "orders", &rules), None);
    f.broker
        .decide(&hold.id, &dba("dana"), true, None)
        .await
        .unwrap();
    assert_eq!(
        f.broker.granted(&agent(), "orders", &rules),
        Some(hold.id.clone())
    );
    // Not another connection, principal, or an extra uncovered rule.
    assert_eq!(f.broker.granted(&agent(), "billing", &rules), None);
    assert_eq!(
        f.broker
            .granted(&principal("agent:other", &["agents"]), "orders", &rules),
        None
    );
    let two = vec![rules[0].clone(), "ddl-needs-two".to_string()];
    assert_eq!(f.broker.granted(&agent(), "orders", &two), None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(f.broker.granted(&agent(), "orders", &rules), None);
}

#[tokio::test]
async fn denied_or_plain_approvals_grant_nothing() {
    let f = fixture(BrokerSettings::default());
    let rules = vec!["agent-writes-need-a-dba".to_string()];
    let h = f.broker.hold(request(1, None)).await.unwrap();
    f.broker
        .decide(&h.id, &dba("dana"), true, None)
        .await
        .unwrap();
    assert_eq!(f.broker.granted(&agent(), "orders", &rules), None);
    let h = f
        .broker
        .hold(request(1, Some(Duration::from_secs(3600))))
        .await
        .unwrap();
    f.broker
        .decide(&h.id, &dba("dana"), false, None)
        .await
        .unwrap();
    assert_eq!(f.broker.granted(&agent(), "orders", &rules), None);
}

#[tokio::test]
async fn history_is_capped() {
    let f = fixture(BrokerSettings {
        history: 2,
        ..Default::default()
    });
    let mut ids = Vec::new();
    for _ in 0..4 {
        let h = f.broker.hold(request(1, None)).await.unwrap();
        f.broker.withdraw(&h.id, "bye");
        ids.push(h.id);
    }
    let pending = f.broker.hold(request(1, None)).await.unwrap();
    let all: Vec<String> = f.broker.list(false).into_iter().map(|v| v.id).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.contains(&pending.id) && all.contains(&ids[3]) && all.contains(&ids[2]));
}

/// A one-shot HTTP receiver: answers each connection with the next status in
/// `statuses`, and forwards (headers, body) of every request.
async fn receiver(
    statuses: Vec<u16>,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<(String, String)>, Vec<u8>)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for status in statuses {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (headers, body) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request ended early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break (headers, buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let _ = tx.send((headers, body));
            let resp =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            s.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    (url, rx)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {h:?}"))
}

#[tokio::test]
async fn webhook_is_signed_and_retried() {
    // First attempt fails (500), the retry succeeds; then the decided event.
    let (url, mut rx) = receiver(vec![500, 200, 200]).await;
    let f = fixture(BrokerSettings {
        webhooks: vec![url],
        webhook_secret: Some("s3cret".into()),
        console_url: Some("https://warden.example/".into()),
        retry_delays: vec![Duration::from_millis(50)],
        ..Default::default()
    });
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    for attempt in 0..2 {
        let (h, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let ts: u64 = header(&h, "warden-timestamp").parse().unwrap();
        let sig = header(&h, "warden-signature");
        assert!(
            verify_signature("s3cret", ts, &body, sig, now, Duration::from_secs(300)),
            "attempt {attempt}: bad signature {sig}"
        );
        assert!(!verify_signature(
            "wrong",
            ts,
            &body,
            sig,
            now,
            Duration::from_secs(300)
        ));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["event"], "approval.requested");
        assert_eq!(v["approval"]["id"], hold.id.as_str());
        assert_eq!(v["approval"]["statement"], "DELETE FROM items WHERE id = 1");
        assert_eq!(
            v["link"],
            format!("https://warden.example/api/v1/approvals/{}", hold.id)
        );
    }
    f.broker
        .decide(&hold.id, &dba("dana"), false, None)
        .await
        .unwrap();
    let (h, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let ts: u64 = header(&h, "warden-timestamp").parse().unwrap();
    assert!(verify_signature(
        "s3cret",
        ts,
        &body,
        header(&h, "warden-signature"),
        now,
        Duration::from_secs(300)
    ));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["event"], "approval.decided");
    assert_eq!(v["approval"]["state"], "denied");
}

#[tokio::test]
async fn slack_message_names_statement_requester_purpose_and_link() {
    let (url, mut rx) = receiver(vec![200]).await;
    let f = fixture(BrokerSettings {
        slack_webhook: Some(url),
        ..Default::default()
    });
    let hold = f.broker.hold(request(1, None)).await.unwrap();
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("DELETE FROM items WHERE id = 1"), "{text}");
    assert!(text.contains("agent:reporter"), "{text}");
    assert!(text.contains("cleanup"), "{text}");
    assert!(
        text.contains(&format!(
            "http://127.0.0.1:8081/api/v1/approvals/{}",
            hold.id
        )),
        "{text}"
    );
}

#[tokio::test]
async fn hold_without_approvers_is_refused() {
    let f = fixture(BrokerSettings::default());
    let mut req = request(1, None);
    req.approvers.clear();
    assert!(f.broker.hold(req).await.is_err());
}

#[test]
fn ids_are_short_and_url_safe() {
    let a = new_approval_id();
    let b = new_approval_id();
    assert_ne!(a, b);
    assert!(
        a.chars()
            .skip(4)
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
    );
    assert_eq!(humanize(Duration::from_secs(600)), "10m");
    assert_eq!(humanize(Duration::from_secs(90)), "90s");
}
