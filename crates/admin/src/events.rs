//! `GET /api/v1/approvals/events`: server-sent events for the approvals inbox.
//!
//! On connect and after every change of a hold (created, voted on, approved, denied,
//! timed out, withdrawn — [`warden_approvals::Broker::subscribe`]), one event
//! `approvals` whose data is the same JSON as `GET /api/v1/approvals` for this caller
//! (each hold with `may_decide`). A comment line every 15 s keeps proxies from closing
//! the stream. The stream ends when the gateway shuts down, and — for a console
//! session — when the session is signed out or expires (checked every 5 s).
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use warden_core::Principal;

use crate::{AppState, Authenticator, Caller, list_for};

/// How often a stream opened with a console session checks that the session is open.
const SESSION_CHECK: Duration = Duration::from_secs(5);

pub(crate) async fn stream<A: Authenticator>(
    State(st): State<AppState<A>>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    let changes = st.broker.subscribe();
    let state = (st, p, changes, true);
    let session = caller.session;
    let events =
        futures_util::stream::unfold(state, move |(st, p, mut changes, first)| async move {
            let open = |st: &AppState<A>| session.is_none_or(|k| st.console.is_open(&k));
            if !first {
                loop {
                    if *st.stopping.borrow() || !open(&st) {
                        return None; // shutdown, sign-out or expiry ends the stream
                    }
                    tokio::select! {
                        r = changes.changed() => { r.ok()?; break; }
                        _ = crate::stopped(st.stopping.clone()) => return None,
                        _ = tokio::time::sleep(SESSION_CHECK) => {}
                    }
                }
                if !open(&st) {
                    return None;
                }
            }
            changes.borrow_and_update();
            let data = list_for(&st.broker, false, &p).to_string();
            let ev = Event::default().event("approvals").data(data);
            Some((Ok::<_, Infallible>(ev), (st, p, changes, false)))
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
