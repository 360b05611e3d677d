//! `warden serve`: wire config, store, identity, policy and listeners together.
use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use warden_pipeline::Pipeline;
use warden_policy::Policy;
use warden_store::Store;

use crate::config::Config;

pub fn serve(cfg: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    tracing::info!(config = %cfg.path.display(), "starting");
    let store = Arc::new(
        Store::open_with(
            &cfg.store_url,
            &cfg.base_dir,
            warden_store::StoreOptions {
                index_backlog: cfg.evidence_limits.index_backlog,
                indexer_nice: cfg.evidence_limits.indexer_nice,
                ..warden_store::StoreOptions::new(cfg.durability)
            },
        )
        .with_context(|| format!("opening the store {}", cfg.store_url))?,
    );
    let jwt = match &cfg.oidc {
        Some(o) => Some(warden_identity::JwtValidator::new(o.clone()).context("[identity.oidc]")?),
        None => None,
    };
    let tls = match &cfg.tls {
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    // Fail at start, not on the first statement, if the chain cannot be written (e.g. a
    // second gateway already owns this store's append log).
    store
        .ledger()
        .status()
        .context("starting the evidence ledger")?;
    // The approval broker: shared by the pipeline (holds) and the admin API (decisions).
    let broker = warden_approvals::Broker::new(store.ledger(), cfg.approvals.clone());
    let approvals = warden_pipeline::Approvals {
        broker: broker.clone(),
        rules: cfg.rule_approvals.clone(),
        timeout: cfg.approvals.timeout,
    };
    for sh in warden_policy::shadowed_rules(&cfg.rules) {
        tracing::warn!(rule = %sh.shadowed, by = %sh.by, "shadowed rule: {}", sh.why);
    }
    let masker = if cfg.masking.rules.is_empty() {
        None
    } else {
        Some(warden_masking::Masker::new(&cfg.masking).map_err(|errs| {
            anyhow::anyhow!(
                "[[masking]]: {}",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?)
    };
    let pipeline = Pipeline::build(warden_pipeline::PipelineParts {
        connections: cfg.connections.clone(),
        policy: Policy::new(cfg.rules.clone()),
        store: store.clone(),
        jwt,
        approvals: Some(approvals),
        masker,
        limits: warden_pipeline::EvidenceLimits {
            response_rows: cfg.evidence_limits.response_rows,
            response_bytes: cfg.evidence_limits.response_bytes,
        },
    });

    let checkpointer = crate::evidence_cmd::start_checkpointer(store.clone(), &cfg)?;
    let retention = crate::evidence_cmd::start_retention(store.clone(), &cfg);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(addr) = &cfg.postgres_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the PostgreSQL listener on {addr}"))?;
        tracing::info!(%addr, tls = tls.is_some(), "PostgreSQL listener ready");
        let mut rx = stop_rx.clone();
        let pg_cfg = warden_pg::PgListenerConfig {
            tls: tls.clone(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(warden_pg::serve(
            listener,
            pipeline.clone(),
            pg_cfg,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )));
    }
    if let Some(addr) = &cfg.admin_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the admin listener on {addr}"))?;
        tracing::info!(%addr, "admin API and web console ready");
        let mut rx = stop_rx.clone();
        // The console signs export bundles with the checkpoint key (the checkpointer
        // above created it if it was missing).
        let signer = warden_store::Signer::load(&cfg.signing_key)
            .map(Arc::new)
            .map_err(|e| tracing::warn!(error = %e, "console: no signing key; evidence export is unavailable"))
            .ok();
        let parts = warden_admin::AdminParts {
            broker: broker.clone(),
            auth: pipeline.clone(),
            evidence: Some(warden_admin::EvidenceSource {
                store: store.clone(),
                public_keys: signer.iter().map(|s| s.public().clone()).collect(),
                signer,
                config: crate::console_cfg::overview(&cfg),
            }),
            console: crate::console_cfg::settings(&cfg),
        };
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = warden_admin::serve_all(listener, parts, stop).await {
                tracing::error!(error = %e, "admin API stopped");
            }
        }));
    }
    // The MCP server (`/mcp`) rides on the HTTP listener: the HTTP gateway routes the
    // paths it claims to it and knows nothing else about MCP.
    let mut mcp_server = None;
    if let Some(addr) = &cfg.http_listen {
        let front_door = match &cfg.mcp {
            Some(m) => {
                let server = warden_mcp::McpServer::new(
                    pipeline.clone(),
                    warden_mcp::McpConfig {
                        max_rows: m.max_rows,
                        approval_wait: m.approval_wait,
                        call_timeout: m.call_timeout,
                        session_idle: m.session_idle,
                        authorization_servers: cfg.oidc.iter().map(|o| o.issuer.clone()).collect(),
                        ..Default::default()
                    },
                )
                .map_err(|e| anyhow::anyhow!("MCP server: {e}"))?;
                let sweeper = server.spawn_sweeper();
                tracing::info!(%addr, "MCP server ready at /mcp");
                let door = server.front_door();
                mcp_server = Some((server, sweeper));
                Some(door)
            }
            None => None,
        };
        let gateway = warden_http::HttpGateway::new(
            pipeline.clone(),
            &cfg.connections,
            warden_http::HttpConfig {
                tls: tls.clone(),
                front_door,
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("HTTP listener: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP listener on {addr}"))?;
        tracing::info!(%addr, tls = tls.is_some(), "HTTP listener ready");
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(gateway.serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    if let Some(a) = &cfg.mysql_listen {
        tracing::warn!(listener = "mysql", addr = %a, "this listener is not available in this version yet; ignoring");
    }
    eprintln!(
        "warden: serving {} connection(s) with {} rule(s); evidence in {}",
        cfg.connections.len(),
        cfg.rules.len(),
        store.path().display()
    );

    shutdown_signal().await;
    tracing::info!("shutting down: no new sessions; flushing evidence");
    let _ = stop_tx.send(true);
    if let Some((m, sweeper)) = &mcp_server {
        sweeper.abort();
        m.sweep(true).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Err(e) = pipeline.ledger().flush().await {
        tracing::error!(error = %e, "final evidence flush failed");
    }
    if let Some(r) = retention {
        r.abort();
    }
    checkpointer.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
