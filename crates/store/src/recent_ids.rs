//! The ids of the most recent records, so that a record appended twice is refused before
//! it reaches SQLite's `UNIQUE` constraint (which would stop the indexer for good).
//!
//! Checked under the chain lock for every record, so it is kept cheap: an id in Warden's
//! own form (32 lowercase hex digits, [`warden_core::evidence::new_id`]) is held as a
//! `u128` — no allocation, no string hashing — in a set hashed with one multiply (SipHash
//! of the key was ~2 % of a runtime thread's samples at 8 pgbench clients); any other id
//! as a boxed string in a set with the standard library's keyed SipHash.
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, PartialEq, Eq)]
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

/// Hashes the `u128` of a Warden-form id. Its bits are a nanosecond clock, the process id
/// and a counter, so they vary on their own; the multiply spreads them over the high bits
/// (hashbrown's control byte) and the shift back over the low ones (the bucket).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, v: u128) {
        let h = ((v as u64) ^ ((v >> 64) as u64) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    /// Not reached for a `u128` key; correct for any bytes all the same.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(b));
        }
    }
}

/// The last `cap` ids, oldest first.
pub(crate) struct RecentIds {
    cap: usize,
    order: VecDeque<Key>,
    hex: HashSet<u128, BuildHasherDefault<IdHasher>>,
    other: HashSet<Box<str>>,
}

impl RecentIds {
    pub(crate) fn new(cap: usize) -> RecentIds {
        RecentIds {
            cap,
            order: VecDeque::with_capacity(cap),
            hex: HashSet::with_capacity_and_hasher(cap + 1, BuildHasherDefault::default()),
            other: HashSet::new(),
        }
    }

    /// Remember `id`; false (and nothing changes) when it is already among the recent ones.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        let k = key(id);
        // One lookup for the check and the insertion; the sets briefly hold `cap + 1`.
        let new = match &k {
            Key::Hex(v) => self.hex.insert(*v),
            Key::Other(s) => self.other.insert(s.clone()),
        };
        if !new {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            match old {
                Key::Hex(v) => self.hex.remove(&v),
                Key::Other(s) => self.other.remove(&s),
            };
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

    proptest::proptest! {
        /// Against the plainest model: refused exactly when the id is among the last
        /// `cap` accepted ones.
        #[test]
        fn refuses_exactly_the_ids_among_the_last_accepted(
            cap in 1usize..8,
            ids in proptest::collection::vec((0u8..12, proptest::bool::ANY), 0..200),
        ) {
            let mut r = RecentIds::new(cap);
            let mut model: VecDeque<String> = VecDeque::new();
            for (n, hex) in ids {
                let id = if hex { format!("{:032x}", u128::from(n) << 70 | 7) } else { format!("id-{n}") };
                let expect = !model.contains(&id);
                proptest::prop_assert_eq!(r.insert(&id), expect, "{}", id);
                if expect {
                    model.push_back(id);
                    if model.len() > cap {
                        model.pop_front();
                    }
                }
            }
        }
    }
}
