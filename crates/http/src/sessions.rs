//! HTTP evidence sessions: one per `Warden-Session` value per principal and connection
//! (kept while requests keep coming, ended after an idle period); without the header, one
//! per client connection, principal, connection and purpose ([`ConnSessions`], ended when
//! the client connection closes), like a PostgreSQL session.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use warden_core::Principal;
use warden_pipeline::{ConnectionSpec, Pipeline, Session, SessionEnd};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    principal: String,
    on_behalf_of: Option<String>,
    connection: String,
    session: String,
}

struct Entry {
    cell: Arc<OnceCell<Arc<Session>>>,
    last_used: Instant,
    in_flight: Arc<AtomicUsize>,
}

/// Keyed sessions, shared by all connections of the listener.
pub struct Sessions {
    map: Mutex<HashMap<Key, Entry>>,
    pub idle: Duration,
    pub max: usize,
}

/// A session in use by one request. Per-request sessions end when the lease is ended;
/// keyed and per-connection ones stay open.
pub struct Lease {
    pub session: Arc<Session>,
    kind: LeaseKind,
    /// `session.start` of a per-request session, queued but maybe not durable yet.
    started: Option<StartWait>,
}

enum LeaseKind {
    PerRequest,
    /// A `Warden-Session` session; the counter holds its requests in flight.
    Keyed(Arc<AtomicUsize>),
    /// The client connection's session: ended by [`ConnSessions::close`].
    Connection,
}

struct ConnKey {
    principal: String,
    on_behalf_of: Option<String>,
    connection: String,
    purpose: Option<String>,
}

impl ConnKey {
    /// Compared field by field so that a lookup (every request) allocates nothing.
    fn is(&self, principal: &Principal, connection: &str, purpose: Option<&str>) -> bool {
        self.principal == principal.id
            && self.on_behalf_of == principal.on_behalf_of
            && self.connection == connection
            && self.purpose.as_deref() == purpose
    }
}

type ConnCell = Arc<OnceCell<Arc<Session>>>;

/// Most sessions one client connection keeps (distinct principals, connections and
/// purposes); beyond it, requests get a session of their own.
const MAX_PER_CLIENT_CONNECTION: usize = 16;

/// The sessions of one client (TCP or TLS) connection for requests without
/// `Warden-Session`: keep-alive callers pay for `session.start` once, not per request.
///
/// A list, not a map: it holds at most [`MAX_PER_CLIENT_CONNECTION`] entries, nearly
/// always one.
#[derive(Default)]
pub struct ConnSessions {
    list: Mutex<Vec<(ConnKey, ConnCell)>>,
}

impl ConnSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ConnKey, ConnCell)>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cell of this principal, connection and purpose (added when there is room).
    fn cell(
        &self,
        principal: &Principal,
        connection: &str,
        purpose: Option<&str>,
    ) -> Option<ConnCell> {
        let mut list = self.lock();
        if let Some((_, cell)) = list
            .iter()
            .find(|(k, _)| k.is(principal, connection, purpose))
        {
            return Some(cell.clone());
        }
        if list.len() >= MAX_PER_CLIENT_CONNECTION {
            return None;
        }
        let cell = ConnCell::default();
        list.push((
            ConnKey {
                principal: principal.id.clone(),
                on_behalf_of: principal.on_behalf_of.clone(),
                connection: connection.to_string(),
                purpose: purpose.map(str::to_string),
            },
            cell.clone(),
        ));
        Some(cell)
    }

    fn take(&self) -> Vec<Arc<Session>> {
        self.lock()
            .drain(..)
            .filter_map(|(_, cell)| cell.get().cloned())
            .collect()
    }

    /// The client connection closed: end its sessions (durably).
    pub async fn close(&self, why: SessionEnd) {
        for s in self.take() {
            s.end(why.clone()).await;
        }
    }
}

impl Drop for ConnSessions {
    /// The connection's task was dropped before [`ConnSessions::close`] (shutdown): end
    /// what is left in the background rather than leave sessions without `session.end`.
    fn drop(&mut self) {
        let left = self.take();
        if left.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    for s in left {
                        s.end(SessionEnd::Shutdown).await;
                    }
                });
            }
            Err(_) => tracing::warn!(
                sessions = left.len(),
                "runtime gone: session.end not recorded"
            ),
        }
    }
}

type StartWait = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

impl Lease {
    /// Wait until `session.start` is durable (call after the request's own commit, which
    /// the ledger orders after it: then this resolves at once).
    pub async fn confirm_start(&mut self) -> Result<(), String> {
        match self.started.take() {
            Some(w) => w.await,
            None => Ok(()),
        }
    }

    pub fn keyed(&self) -> bool {
        matches!(self.kind, LeaseKind::Keyed(_))
    }

    /// The request is over: end a per-request session (durably, in the background).
    pub fn release(self, why: SessionEnd) {
        match self.kind {
            LeaseKind::Keyed(n) => {
                n.fetch_sub(1, Ordering::AcqRel);
            }
            LeaseKind::Connection => {}
            LeaseKind::PerRequest => {
                let s = self.session;
                // Bodies can be dropped while the runtime shuts down: never panic there.
                match tokio::runtime::Handle::try_current() {
                    Ok(h) => {
                        h.spawn(async move { s.end(why).await });
                    }
                    Err(_) => {
                        tracing::warn!(session = %s.id, "runtime gone: session.end not recorded")
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
pub enum OpenError {
    TooMany,
    Ledger(String),
}

impl Sessions {
    pub fn new(idle: Duration, max: usize) -> Arc<Sessions> {
        Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session for this request: the keyed one (opened on first use), else the
    /// client connection's one (`scope`), else a new one.
    #[allow(clippy::too_many_arguments)]
    pub async fn lease(
        &self,
        pipeline: &Arc<Pipeline>,
        principal: &Principal,
        connection: &Arc<ConnectionSpec>,
        client: &str,
        key: Option<&str>,
        purpose: Option<String>,
        scope: Option<&ConnSessions>,
    ) -> Result<Lease, OpenError> {
        let open = |purpose: Option<String>| {
            Session::open(
                pipeline.clone(),
                principal.clone(),
                connection.clone(),
                client.to_string(),
                purpose,
            )
        };
        if key.is_none()
            && let Some(scope) = scope
            && let Some(cell) = scope.cell(principal, &connection.name, purpose.as_deref())
        {
            let s = cell
                .get_or_try_init(|| open(purpose))
                .await
                .map_err(|e| OpenError::Ledger(e.to_string()))?;
            return Ok(Lease {
                session: s.clone(),
                kind: LeaseKind::Connection,
                started: None,
            });
        }
        let Some(key) = key else {
            let (s, started) = Session::open_submitted(
                pipeline.clone(),
                principal.clone(),
                connection.clone(),
                client.to_string(),
                purpose,
            );
            return Ok(Lease {
                session: s,
                kind: LeaseKind::PerRequest,
                started: Some(Box::pin(
                    async move { started.await.map_err(|e| e.to_string()) },
                )),
            });
        };
        let k = Key {
            principal: principal.id.clone(),
            on_behalf_of: principal.on_behalf_of.clone(),
            connection: connection.name.clone(),
            session: key.to_string(),
        };
        let (cell, in_flight) = {
            let mut map = self.lock();
            if !map.contains_key(&k) && map.len() >= self.max {
                return Err(OpenError::TooMany);
            }
            let e = map.entry(k).or_insert_with(|| Entry {
                cell: Arc::new(OnceCell::new()),
                last_used: Instant::now(),
                in_flight: Arc::new(AtomicUsize::new(0)),
            });
            e.last_used = Instant::now();
            e.in_flight.fetch_add(1, Ordering::AcqRel);
            (e.cell.clone(), e.in_flight.clone())
        };
        let opened = cell.get_or_try_init(|| open(purpose.clone())).await;
        match opened {
            Ok(s) => {
                if purpose.is_some() && s.purpose() != purpose {
                    s.set_purpose(purpose);
                }
                Ok(Lease {
                    session: s.clone(),
                    kind: LeaseKind::Keyed(in_flight),
                    started: None,
                })
            }
            Err(e) => {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(OpenError::Ledger(e.to_string()))
            }
        }
    }

    /// End sessions idle longer than `idle` (none of whose requests is in flight).
    pub async fn sweep(&self, all: bool) {
        let now = Instant::now();
        let expired: Vec<Arc<Session>> = {
            let mut map = self.lock();
            let keys: Vec<Key> = map
                .iter()
                .filter(|(_, e)| {
                    all || (e.in_flight.load(Ordering::Acquire) == 0
                        && now.duration_since(e.last_used) >= self.idle)
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| map.remove(&k))
                .filter_map(|e| e.cell.get().cloned())
                .collect()
        };
        let why = if all {
            SessionEnd::Shutdown
        } else {
            SessionEnd::Idle(warden_approvals::humanize(self.idle))
        };
        for s in expired {
            s.end(why.clone()).await;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
