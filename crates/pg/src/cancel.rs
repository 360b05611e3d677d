//! CancelRequest handling. Clients get Warden's own BackendKeyData (random pid and
//! secret); a CancelRequest carrying them is mapped to the upstream's key and sent there.
//! The upstream's key never reaches the client.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

use crate::codec;

#[derive(Clone)]
pub struct CancelTarget {
    pub secret: [u8; 4],
    /// Wakes a statement held for approval: a cancel withdraws the request.
    pub hold_cancel: Arc<tokio::sync::Notify>,
    pub upstream_addr: String,
    pub upstream_pid: i32,
    pub upstream_secret: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<i32, CancelTarget>>>,
}

impl CancelRegistry {
    /// Register a session; returns the (pid, secret) to give the client.
    pub fn register(
        &self,
        upstream_addr: String,
        upstream_pid: i32,
        upstream_secret: Vec<u8>,
    ) -> (i32, [u8; 4]) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pid: i32 = rand::random::<i32>() & 0x3fff_ffff;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret: [u8; 4] = rand::random();
            map.insert(
                pid,
                CancelTarget {
                    secret,
                    hold_cancel: Arc::default(),
                    upstream_addr,
                    upstream_pid,
                    upstream_secret,
                },
            );
            return (pid, secret);
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.get(&pid)?;
        if secret.len() == 4 && bool::from(t.secret.ct_eq(secret)) {
            Some(t.clone())
        } else {
            None
        }
    }
}

/// Send a CancelRequest for `target` to its upstream. Best effort, like PostgreSQL's own.
pub async fn send_cancel(target: &CancelTarget) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&target.upstream_addr).await?;
        let mut b = BytesMut::new();
        codec::write_cancel(&mut b, target.upstream_pid, &target.upstream_secret);
        s.write_all(&b).await?;
        s.shutdown().await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), fut).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cancel request to upstream failed"),
        Err(_) => tracing::warn!("cancel request to upstream timed out"),
    }
}
