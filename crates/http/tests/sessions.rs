//! `Warden-Session` sessions: one per key per principal and connection, kept while in use,
//! ended (`session.end`) after the idle period, never while a request is in flight.
use std::sync::Arc;
use std::time::Duration;

use warden_core::{AuthInfo, AuthMethod, EvidenceRecord, Principal};
use warden_http::sessions::{ConnSessions, Sessions};
use warden_pipeline::{ConnectionSpec, Pipeline, Protocol, SessionEnd, UpstreamTls};
use warden_policy::Policy;
use warden_store::{Durability, RecordFilter, Store};

fn principal(id: &str) -> Principal {
    Principal {
        id: id.into(),
        groups: vec!["agents".into()],
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k1".into()),
        },
        on_behalf_of: None,
    }
}

fn records(store: &Store, kind: &str) -> Vec<EvidenceRecord> {
    let mut out = Vec::new();
    let filter = RecordFilter {
        kind: Some(kind.into()),
        ..Default::default()
    };
    store
        .query(&filter, &mut |r| {
            out.push(r);
            true
        })
        .unwrap();
    out
}

type Setup = (
    tempfile::TempDir,
    Arc<Store>,
    Arc<Pipeline>,
    Arc<ConnectionSpec>,
);

/// A store, a pipeline and one HTTP connection `api`.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open("sqlite://e.db", dir.path(), Durability::Process).unwrap());
    let spec = ConnectionSpec {
        name: "api".into(),
        protocol: Protocol::Http,
        upstream: "http://127.0.0.1:9".into(),
        database: None,
        user: None,
        password: None,
        tls: UpstreamTls::Disable,
        headers: vec![],
        description: None,
    };
    let pipeline = Pipeline::new(vec![spec], Policy::default(), store.clone(), None, None);
    let conn = pipeline.connection("api").unwrap();
    (dir, store, pipeline, conn)
}

#[tokio::test]
async fn keyed_sessions_are_shared_and_expire_when_idle() {
    let (_dir, store, pipeline, conn) = setup();
    let sessions = Sessions::new(Duration::from_millis(200), 10);
    let (a, b) = (principal("agent:a"), principal("agent:b"));

    let l1 = sessions
        .lease(
            &pipeline,
            &a,
            &conn,
            "c",
            Some("run-1"),
            Some("p1".into()),
            None,
        )
        .await
        .unwrap();
    let l2 = sessions
        .lease(&pipeline, &a, &conn, "c", Some("run-1"), None, None)
        .await
        .unwrap();
    let other = sessions
        .lease(&pipeline, &b, &conn, "c", Some("run-1"), None, None)
        .await
        .unwrap();
    let mut single = sessions
        .lease(&pipeline, &a, &conn, "c", None, None, None)
        .await
        .unwrap();
    single.confirm_start().await.unwrap();
    assert_eq!(
        l1.session.id, l2.session.id,
        "same key, same principal: one session"
    );
    assert_ne!(
        l1.session.id, other.session.id,
        "another principal: another session"
    );
    assert!(l1.keyed() && !single.keyed());
    assert_eq!(l1.session.purpose().as_deref(), Some("p1"));
    assert_eq!(sessions.len(), 2);
    let keyed_id = l1.session.id.clone();
    single.release(SessionEnd::ClientTerminated);

    // One lease still in flight: the sweep keeps the session however idle it is.
    l1.release(SessionEnd::ClientTerminated);
    other.release(SessionEnd::ClientTerminated);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sessions.sweep(false).await;
    assert_eq!(sessions.len(), 1, "only b's idle session ended");
    l2.release(SessionEnd::ClientTerminated);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sessions.sweep(false).await;
    assert!(sessions.is_empty());
    pipeline.ledger().flush().await.unwrap();

    let ends = records(&store, "session.end");
    assert_eq!(ends.len(), 3, "a's keyed, b's keyed, the per-request one");
    let keyed_end = ends
        .iter()
        .find(|r| r.session_id.as_deref() == Some(keyed_id.as_str()))
        .unwrap();
    assert!(
        keyed_end
            .detail
            .as_deref()
            .unwrap()
            .contains("no request for")
    );
    assert_eq!(records(&store, "session.start").len(), 3);

    // Reusing the key after expiry opens a new session.
    let again = sessions
        .lease(&pipeline, &a, &conn, "c", Some("run-1"), None, None)
        .await
        .unwrap();
    assert_ne!(again.session.id, keyed_id);
    again.release(SessionEnd::ClientTerminated);

    // The cap on open keyed sessions.
    for i in 0..9 {
        let k = format!("k{i}");
        sessions
            .lease(&pipeline, &a, &conn, "c", Some(&k), None, None)
            .await
            .unwrap()
            .release(SessionEnd::ClientTerminated);
    }
    assert!(matches!(
        sessions
            .lease(&pipeline, &a, &conn, "c", Some("one-too-many"), None, None)
            .await,
        Err(warden_http::sessions::OpenError::TooMany)
    ));
    sessions.sweep(true).await;
    assert!(sessions.is_empty());
}

#[tokio::test]
async fn requests_without_the_header_share_their_client_connections_session() {
    let (_dir, store, pipeline, conn) = setup();
    let sessions = Sessions::new(Duration::from_secs(60), 10);
    let a = principal("agent:a");
    let (tcp1, tcp2) = (ConnSessions::default(), ConnSessions::default());
    let lease = |scope, purpose: &str| {
        sessions.lease(
            &pipeline,
            &a,
            &conn,
            "c",
            None,
            Some(purpose.to_string()),
            Some(scope),
        )
    };
    let first = lease(&tcp1, "p1").await.unwrap();
    let second = lease(&tcp1, "p1").await.unwrap();
    let other_purpose = lease(&tcp1, "p2").await.unwrap();
    let other_tcp = lease(&tcp2, "p1").await.unwrap();
    assert_eq!(first.session.id, second.session.id);
    assert_ne!(first.session.id, other_purpose.session.id);
    assert_ne!(first.session.id, other_tcp.session.id);
    for l in [first, second, other_purpose, other_tcp] {
        l.release(SessionEnd::ClientTerminated);
    }
    store.ledger().flush().await.unwrap();
    assert_eq!(records(&store, "session.start").len(), 3);
    assert!(
        records(&store, "session.end").is_empty(),
        "releasing a request does not end its connection's session"
    );
    tcp1.close(SessionEnd::ClientTerminated).await;
    store.ledger().flush().await.unwrap();
    assert_eq!(records(&store, "session.end").len(), 2);
    drop(tcp2); // a connection task dropped without close (shutdown) still ends its session
    for _ in 0..100 {
        if records(&store, "session.end").len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.ledger().flush().await.unwrap();
    assert_eq!(records(&store, "session.end").len(), 3);
}

#[tokio::test]
async fn a_client_connection_keeps_at_most_sixteen_sessions() {
    let (_dir, _store, pipeline, conn) = setup();
    let sessions = Sessions::new(Duration::from_secs(60), 10);
    let a = principal("agent:a");
    let tcp = ConnSessions::default();
    let lease = |purpose: String| {
        sessions.lease(&pipeline, &a, &conn, "c", None, Some(purpose), Some(&tcp))
    };
    let mut ids = Vec::new();
    for i in 0..16 {
        let l = lease(format!("p{i}")).await.unwrap();
        ids.push(l.session.id.clone());
        l.release(SessionEnd::ClientTerminated);
    }
    // A known purpose still finds its session once the list is full ...
    let again = lease("p3".into()).await.unwrap();
    assert_eq!(again.session.id, ids[3]);
    again.release(SessionEnd::ClientTerminated);
    // ... a seventeenth gets a session of its own per request.
    let x = lease("p16".into()).await.unwrap();
    let y = lease("p16".into()).await.unwrap();
    assert_ne!(x.session.id, y.session.id);
    assert!(!ids.contains(&x.session.id) && !ids.contains(&y.session.id));
    x.release(SessionEnd::ClientTerminated);
    y.release(SessionEnd::ClientTerminated);
}
