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

use warden_policy::{Dialect, Shape, SqlKind, StatementInfo};

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
    /// A stored classification of exactly this text (`None` for texts over [`MAX_TEXT`]).
    pub(crate) fn get(&self, sql: &str, dialect: Dialect) -> Option<V> {
        if sql.len() > MAX_TEXT {
            return None;
        }
        self.lock()[slot(dialect)].get(sql).cloned()
    }

    /// Store the classification of `sql` (parsed outside the lock: sessions never wait
    /// on each other's parses).
    pub(crate) fn put(&self, sql: &str, dialect: Dialect, info: V) {
        if sql.len() > MAX_TEXT {
            return;
        }
        let mut maps = self.lock();
        let map = &mut maps[slot(dialect)];
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(sql.into(), info);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<Box<str>, V>; 2]> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Classifications shared by PostgreSQL statements that differ only in literal values
/// (`WHERE aid = 7`, then `= 8`), keyed by [`warden_policy::literal_shape`]: a text the
/// exact-text cache has not seen still skips the parse when its shape has been parsed.
/// Only clean parses are shared (no parse error, no `SET` value); a hit is the stored
/// classification with the statement's own text. Bounded like [`SqlCache`].
#[derive(Default)]
pub(crate) struct ShapeCache {
    map: Mutex<HashMap<Box<str>, StatementInfo>>,
}

impl ShapeCache {
    /// The shape of `sql` when it can share a classification: PostgreSQL only (MySQL's
    /// lexical rules differ), texts up to [`MAX_TEXT`]. Computed once per statement and
    /// passed to [`ShapeCache::get`] and, on a miss, [`ShapeCache::put`].
    pub(crate) fn shape<'a>(sql: &'a str, dialect: Dialect) -> Option<Shape<'a>> {
        if dialect != Dialect::Postgres || sql.len() > MAX_TEXT {
            return None;
        }
        warden_policy::literal_shape(sql)
    }

    /// The classification of the statement of `shape` if one of the same shape was
    /// parsed, with this statement's text.
    pub(crate) fn get(&self, shape: &Shape<'_>) -> Option<StatementInfo> {
        let map = self.lock();
        let found = map.get(shape.key.as_str())?;
        Some(StatementInfo {
            text: shape.text.to_string(),
            ..found.clone()
        })
    }

    /// Remember the classification of the statement of `shape` (one statement).
    pub(crate) fn put(&self, shape: &Shape<'_>, stmts: &[StatementInfo]) {
        let [info] = stmts else { return };
        if info.parse_error.is_some()
            || info.set_var.is_some()
            || info.kinds.contains(&SqlKind::Unparsed)
            || info.kinds.contains(&SqlKind::Set)
        {
            return;
        }
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        let stored = StatementInfo {
            text: String::new(),
            ..info.clone()
        };
        map.insert(shape.key.as_str().into(), stored);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, StatementInfo>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_hit_is_what_a_parse_returns_and_the_map_stays_bounded() {
        let cache = SqlCache::<Arc<[StatementInfo]>>::default();
        let calls = std::cell::Cell::new(0);
        let parse = |s: &str, d| {
            calls.set(calls.get() + 1);
            Arc::<[StatementInfo]>::from(warden_policy::classify(s, d))
        };
        // What `Session::classify_sql` does around the shape cache.
        let cache_classify =
            |cache: &SqlCache<Arc<[StatementInfo]>>,
             s: &str,
             d,
             parse: &dyn Fn(&str, Dialect) -> Arc<[StatementInfo]>| {
                if let Some(hit) = cache.get(s, d) {
                    return hit;
                }
                let v = parse(s, d);
                cache.put(s, d, v.clone());
                v
            };
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let a = cache_classify(&cache, sql, Dialect::Postgres, &parse);
        let b = cache_classify(&cache, sql, Dialect::Postgres, &parse);
        assert_eq!(calls.get(), 1);
        assert_eq!(&*a, &*b);
        assert_eq!(
            &*a,
            warden_policy::classify(sql, Dialect::Postgres).as_slice()
        );
        // The dialect is part of the key.
        cache_classify(&cache, sql, Dialect::MySql, &parse);
        assert_eq!(calls.get(), 2);
        for i in 0..(MAX_ENTRIES + 10) {
            cache_classify(&cache, &format!("SELECT {i}"), Dialect::Postgres, &parse);
        }
        assert!(cache.lock()[0].len() <= MAX_ENTRIES);
        // Long texts are classified every time, never stored.
        let long = format!("SELECT '{}'", "x".repeat(MAX_TEXT));
        cache_classify(&cache, &long, Dialect::Postgres, &parse);
        assert!(!cache.lock()[0].keys().any(|k| k.len() > MAX_TEXT));
    }

    #[test]
    fn statements_of_one_shape_share_a_parse_with_their_own_text() {
        let shapes = ShapeCache::default();
        let pg = |sql| ShapeCache::shape(sql, Dialect::Postgres).expect("shaped");
        let first = "SELECT abalance FROM pgbench_accounts WHERE aid = 7";
        assert_eq!(shapes.get(&pg(first)), None);
        let parsed = warden_policy::classify(first, Dialect::Postgres);
        shapes.put(&pg(first), &parsed);
        let next = "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;";
        let hit = shapes.get(&pg(next)).expect("same shape");
        assert_eq!(vec![hit], warden_policy::classify(next, Dialect::Postgres));
        // Another table, another shape.
        assert_eq!(
            shapes.get(&pg("SELECT abalance FROM other WHERE aid = 7")),
            None
        );
        // Not shared: parse errors, several statements; MySQL and long texts get no shape.
        for sql in ["SELECT FROM WHERE 1", "SELECT 1 FROM t WHERE"] {
            shapes.put(&pg(sql), &warden_policy::classify(sql, Dialect::Postgres));
        }
        shapes.put(
            &pg("SELECT 1"),
            &warden_policy::classify("SELECT 1; SELECT 2", Dialect::Postgres),
        );
        assert_eq!(shapes.lock().len(), 1);
        assert!(ShapeCache::shape(first, Dialect::MySql).is_none());
        let long = format!(
            "SELECT 1 FROM t WHERE a IN ({})",
            "1, ".repeat(MAX_TEXT) + "1"
        );
        assert!(ShapeCache::shape(&long, Dialect::Postgres).is_none());
    }
}
