//! Recently classified statement texts.
//!
//! Clients send the same texts over and over — drivers re-`Parse` the same unnamed
//! statement on every execution, ORMs and agents repeat their queries — and a full
//! sqlparser parse costs tens of microseconds, more than everything else Warden does for
//! a statement. Classification is a pure function of (dialect, text), so a hit is exactly
//! what a parse would return. Bounded: texts over [`MAX_TEXT`] bytes are not kept, and
//! the map is emptied when it reaches [`MAX_ENTRIES`] (no per-hit bookkeeping on the hot
//! path; a workload with more distinct texts than that simply parses as before).
use std::collections::HashMap;
use std::sync::Mutex;

use warden_policy::Dialect;

pub(crate) const MAX_ENTRIES: usize = 4096;
pub(crate) const MAX_TEXT: usize = 2048;

/// Text → classification (`V`: the statements of a query string, or one statement),
/// one map per dialect (the same text may classify differently).
pub(crate) struct SqlCache<V> {
    maps: Mutex<[HashMap<Box<str>, V>; 2]>,
}

impl<V> Default for SqlCache<V> {
    fn default() -> Self {
        SqlCache {
            maps: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }
}

fn slot(d: Dialect) -> usize {
    match d {
        Dialect::Postgres => 0,
        Dialect::MySql => 1,
    }
}

impl<V: Clone> SqlCache<V> {
    /// `classify(sql, dialect)` through the cache.
    pub(crate) fn classify(
        &self,
        sql: &str,
        dialect: Dialect,
        classify: impl FnOnce(&str, Dialect) -> V,
    ) -> V {
        if sql.len() > MAX_TEXT {
            return classify(sql, dialect);
        }
        if let Some(hit) = self.lock()[slot(dialect)].get(sql) {
            return hit.clone();
        }
        // Parsed outside the lock: sessions never wait on each other's parses.
        let info = classify(sql, dialect);
        let mut maps = self.lock();
        let map = &mut maps[slot(dialect)];
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(sql.into(), info.clone());
        info
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<Box<str>, V>; 2]> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use warden_policy::StatementInfo;

    #[test]
    fn a_hit_is_what_a_parse_returns_and_the_map_stays_bounded() {
        let cache = SqlCache::<Arc<[StatementInfo]>>::default();
        let calls = std::cell::Cell::new(0);
        let parse = |s: &str, d| {
            calls.set(calls.get() + 1);
            Arc::<[StatementInfo]>::from(warden_policy::classify(s, d))
        };
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let a = cache.classify(sql, Dialect::Postgres, parse);
        let b = cache.classify(sql, Dialect::Postgres, parse);
        assert_eq!(calls.get(), 1);
        assert_eq!(&*a, &*b);
        assert_eq!(
            &*a,
            warden_policy::classify(sql, Dialect::Postgres).as_slice()
        );
        // The dialect is part of the key.
        cache.classify(sql, Dialect::MySql, parse);
        assert_eq!(calls.get(), 2);
        for i in 0..(MAX_ENTRIES + 10) {
            cache.classify(&format!("SELECT {i}"), Dialect::Postgres, parse);
        }
        assert!(cache.lock()[0].len() <= MAX_ENTRIES);
        // Long texts are classified every time, never stored.
        let long = format!("SELECT '{}'", "x".repeat(MAX_TEXT));
        cache.classify(&long, Dialect::Postgres, parse);
        assert!(!cache.lock()[0].keys().any(|k| k.len() > MAX_TEXT));
    }
}
