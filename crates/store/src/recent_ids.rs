//! The ids of the most recent records, so that a record appended twice is refused before
//! it reaches SQLite's `UNIQUE` constraint (which would stop the indexer for good).
//!
//! Checked under the chain lock for every record, so it is kept cheap: an id in Warden's
//! own form (32 lowercase hex digits, [`warden_core::evidence::new_id`]) is held as a
//! `u128` — no allocation, no string hashing; any other id as a boxed string.
use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Hex(u128),
    Other(Box<str>),
}

fn key(id: &str) -> Key {
    let b = id.as_bytes();
    // Lowercase only: "AB…" and "ab…" are different ids and must stay different keys.
    if b.len() == 32
        && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && let Ok(v) = u128::from_str_radix(id, 16)
    {
        Key::Hex(v)
    } else {
        Key::Other(id.into())
    }
}

/// The last `cap` ids, oldest first.
pub(crate) struct RecentIds {
    cap: usize,
    order: VecDeque<Key>,
    set: HashSet<Key>,
}

impl RecentIds {
    pub(crate) fn new(cap: usize) -> RecentIds {
        RecentIds {
            cap,
            order: VecDeque::with_capacity(cap),
            set: HashSet::with_capacity(cap + 1),
        }
    }

    /// Remember `id`; false (and nothing changes) when it is already among the recent ones.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        let k = key(id);
        // One lookup for the check and the insertion; the set briefly holds `cap + 1`.
        if !self.set.insert(k.clone()) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(k);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_other_ids_are_refused_twice_and_forgotten_in_order() {
        let mut r = RecentIds::new(3);
        let a = "18ee65887e4f6c30000025e5000003f3";
        assert!(r.insert(a));
        assert!(!r.insert(a));
        // Same digits in uppercase, one digit more, one less: all different ids.
        assert!(r.insert(&a.to_uppercase()));
        assert!(r.insert("custom-id"));
        assert!(!r.insert("custom-id"));
        // `a` was the oldest of three: the fourth pushes it out.
        assert!(r.insert("18ee65887e4f6c30000025e5000003f4"));
        assert!(r.insert(a));
        assert!(!r.insert("custom-id"));
    }

    #[test]
    fn the_hex_key_is_the_ids_value() {
        assert_eq!(key("0000000000000000000000000000000f"), Key::Hex(15));
        assert_eq!(key("ffffffffffffffffffffffffffffffff"), Key::Hex(u128::MAX));
        assert!(matches!(
            key("0000000000000000000000000000000g"),
            Key::Other(_)
        ));
        assert!(matches!(
            key("000000000000000000000000000000f"),
            Key::Other(_)
        ));
        assert!(matches!(key(""), Key::Other(_)));
    }
}
