//! The PostgreSQL adapter: turns protocol-v3 wire traffic into actions for the shared
//! pipeline and relays everything else byte for byte.
//!
//! - [`codec`]: framing and the few message bodies Warden reads or writes.
//! - [`startup`]: SSLRequest/GSSENCRequest/CancelRequest/StartupMessage, caller auth.
//! - [`upstream`]: connecting to the target with Warden's own credential.
//! - [`relay`]: the live session — statements become actions, responses become evidence.
//! - [`rows`]: RowDescription/DataRow bodies, masking values in place, result excerpts.
//! - [`cancel`]: Warden's own BackendKeyData mapped to the upstream's.
//! - [`client`]: one statement on Warden's own credential (for the MCP front door).
//!
//! This crate knows nothing about policy files or storage: it asks the
//! [`warden_pipeline::Pipeline`] and obeys.
#![forbid(unsafe_code)]

pub mod cancel;
pub mod client;
pub mod codec;
pub mod relay;
pub mod rows;
pub mod startup;
pub mod stream;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use warden_pipeline::Pipeline;

/// Limits and settings of the PostgreSQL listener.
#[derive(Clone)]
pub struct PgListenerConfig {
    /// Accept TLS (SSLRequest → 'S') with this acceptor; None answers 'N'.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time allowed from TCP accept to a ready session (startup + auth + upstream).
    pub startup_timeout: Duration,
    /// Time allowed to connect and authenticate to the upstream.
    pub upstream_timeout: Duration,
    /// Most concurrent client connections; further ones get a clean `53300` error.
    pub max_connections: usize,
}

impl Default for PgListenerConfig {
    fn default() -> Self {
        PgListenerConfig {
            tls: None,
            startup_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// How long a shutdown waits for connections to finish after telling them to stop.
const DRAIN: Duration = Duration::from_secs(10);

/// Accept connections until `shutdown` resolves; then end every open session (`57P01`
/// to its client, in-flight statements cancelled and recorded `interrupted`, its
/// `session.end` recorded) and return once each connection task has finished, so the
/// caller's final flush and checkpoint cover them.
pub async fn serve(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    config: PgListenerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let registry = cancel::CancelRegistry::default();
    // One permit per connection task, held until the task ends (also how shutdown knows
    // every task has finished).
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let permit = slots.clone().try_acquire_owned();
        let pipeline = pipeline.clone();
        let registry = registry.clone();
        let config = config.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permit else {
                startup::refuse_too_many(socket).await;
                return;
            };
            startup::handle_connection(socket, peer, pipeline, registry, config, stop).await;
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "PostgreSQL connections still open {} s after shutdown began; leaving them",
            DRAIN.as_secs()
        );
    }
}
