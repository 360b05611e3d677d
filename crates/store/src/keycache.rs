//! Key records cached for the authentication hot path.
//!
//! Every HTTP request and MCP call authenticates its bearer key; reading the key from
//! SQLite each time cost a transaction on a connection whose page cache the indexer's
//! commits keep invalidating (~15 % of the gateway's CPU under `wrk`). Found records are
//! kept in memory instead.
//!
//! Revocation must still take effect at once, in this process and in a gateway running
//! beside the CLI that revoked. [`Store::revoke_key`](crate::Store::revoke_key) appends
//! one byte to a stamp file next to the database (`<db>.keys-revoked`) after its commit;
//! every lookup `stat`s that file first (one system call) and drops the whole cache when
//! its length, inode or mtime changed. A lookup that started before the revocation
//! committed may still see the key active, exactly as without a cache; every lookup that
//! starts after the stamp was written sees it revoked. Unknown ids are not cached (a new
//! key is found on first use), and expiry is checked by the callers on every use.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use warden_core::KeyRecord;

/// Most cached records; the cache is emptied when it is full (keys are few).
const MAX_KEYS: usize = 4096;

/// What identifies one version of the stamp file (`None`: it does not exist yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
}

struct State {
    stamp: Option<Stamp>,
    keys: HashMap<String, KeyRecord>,
}

pub(crate) struct KeyCache {
    stamp_file: PathBuf,
    state: Mutex<State>,
}

/// The stamp file of the database at `db`.
pub(crate) fn stamp_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".keys-revoked");
    PathBuf::from(p)
}

impl KeyCache {
    pub(crate) fn new(db: &Path) -> KeyCache {
        let stamp_file = stamp_path(db);
        KeyCache {
            state: Mutex::new(State {
                stamp: read_stamp(&stamp_file),
                keys: HashMap::new(),
            }),
            stamp_file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached record of `id`, or what `load` finds (cached when found).
    pub(crate) fn get_or_load<E>(
        &self,
        id: &str,
        load: impl FnOnce() -> Result<Option<KeyRecord>, E>,
    ) -> Result<Option<KeyRecord>, E> {
        let now = read_stamp(&self.stamp_file);
        {
            let mut st = self.lock();
            if st.stamp != now {
                st.keys.clear();
                st.stamp = now;
            }
            if let Some(k) = st.keys.get(id) {
                return Ok(Some(k.clone()));
            }
        }
        let found = load()?;
        if let Some(k) = &found {
            let mut st = self.lock();
            // Only cache what was read under the stamp seen before reading: a revocation
            // that landed meanwhile has changed it, and the next lookup re-reads.
            if st.stamp == now {
                if st.keys.len() >= MAX_KEYS {
                    st.keys.clear();
                }
                st.keys.insert(id.to_string(), k.clone());
            }
        }
        Ok(found)
    }

    /// Tell every cache of this database (in any process) that a key changed.
    pub(crate) fn announce_revocation(&self) -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&self.stamp_file)?.write_all(b"r")?;
        // This process sees it on its next lookup through the same stamp check.
        Ok(())
    }
}

fn read_stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (ino, mtime_ns) = {
        use std::os::unix::fs::MetadataExt;
        (
            m.ino(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )
    };
    #[cfg(not(unix))]
    let (ino, mtime_ns) = (
        0,
        m.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128),
    );
    Some(Stamp {
        len: m.len(),
        ino,
        mtime_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            principal: "agent:a".into(),
            groups: vec![],
            created_at: "2026-11-27T00:00:00Z".into(),
            expires_at: None,
            revoked_at: None,
            secret_hash: [0; 32],
            scram_salt: Vec::new(),
            scram_iterations: 4096,
            scram_stored_key: [0; 32],
            scram_server_key: [0; 32],
        }
    }

    #[test]
    fn caches_found_keys_until_a_revocation_is_announced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let cache = KeyCache::new(&db);
        let other_process = KeyCache::new(&db);
        let loads = std::cell::Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(Some(key("k1")))
        };
        assert!(cache.get_or_load("k1", load).unwrap().is_some());
        assert!(cache.get_or_load("k1", load).unwrap().is_some());
        assert_eq!(loads.get(), 1, "second lookup served from the cache");
        other_process.announce_revocation().unwrap();
        assert!(cache.get_or_load("k1", load).unwrap().is_some());
        assert_eq!(loads.get(), 2, "a revocation elsewhere empties the cache");
        cache.announce_revocation().unwrap();
        assert!(cache.get_or_load("k1", load).unwrap().is_some());
        assert_eq!(loads.get(), 3, "and so does one in this process");
    }

    #[test]
    fn unknown_ids_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(&dir.path().join("e.db"));
        let mut loads = 0;
        for _ in 0..3 {
            let r = cache.get_or_load("nope", || {
                loads += 1;
                Ok::<_, ()>(None)
            });
            assert!(r.unwrap().is_none());
        }
        assert_eq!(loads, 3);
    }
}
