//! RFC 6962 / RFC 9162 Merkle tree over record hashes.
//!
//! - leaf hash `= SHA-256(0x00 || data)`; for evidence, `data` is the 32 raw bytes of the
//!   record's `hash` (hex-decoded), leaf index `= seq - 1`;
//! - interior node `= SHA-256(0x01 || left || right)`;
//! - the tree over `n` leaves splits at the largest power of two `< n` (RFC 6962 §2.1),
//!   the root of the empty tree is `SHA-256("")`.
//!
//! Inclusion proofs (audit paths) and consistency proofs are the RFC 6962 §2.1.1/§2.1.2
//! `PATH` and `PROOF`; verification follows RFC 9162 §2.1.3.2 and §2.1.4.2.
//! [`Frontier`] computes roots incrementally (O(log n) memory) and [`Tree`] keeps every
//! level to hand out many inclusion proofs in O(log n) each.
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf of a record: `leaf_hash(hex_decode(record.hash))`. `None` if the hash is not
/// 64 hex digits.
pub fn record_leaf(record_hash_hex: &str) -> Option<Hash> {
    let raw = decode32(record_hash_hex)?;
    Some(leaf_hash(&raw))
}

/// Decode 64 hex digits.
pub fn decode32(hex_str: &str) -> Option<Hash> {
    if hex_str.len() != 64 {
        return None;
    }
    let v = hex::decode(hex_str).ok()?;
    v.try_into().ok()
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1usize;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Merkle tree hash of `leaves` (already leaf-hashed), RFC 6962 `MTH`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Incremental root computation: push leaves in order, ask for the root at any time.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// Roots of the perfect subtrees, left to right, with their heights (strictly
    /// decreasing).
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn push(&mut self, leaf: Hash) {
        let mut cur = (0u32, leaf);
        while let Some(&(h, left)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (h + 1, node_hash(&left, &cur.1));
        }
        self.stack.push(cur);
        self.size += 1;
    }
    /// The roots of the perfect subtrees that make up the tree so far, left to right
    /// (one per set bit of `size`, largest first): all that is needed to go on pushing
    /// leaves without the earlier ones (a retention seal stores them).
    pub fn nodes(&self) -> Vec<Hash> {
        self.stack.iter().map(|(_, h)| *h).collect()
    }
    /// Rebuild a frontier of `size` leaves from [`Frontier::nodes`]; `None` when the
    /// number of nodes is not the number of set bits of `size`.
    pub fn from_nodes(size: u64, nodes: &[Hash]) -> Option<Frontier> {
        if nodes.len() != size.count_ones() as usize {
            return None;
        }
        let heights = (0..64u32).rev().filter(|b| size >> b & 1 == 1);
        Some(Frontier {
            stack: heights.zip(nodes.iter().copied()).collect(),
            size,
        })
    }
    /// The root of the tree over every leaf pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Every level of the tree, for many inclusion proofs against one tree size.
///
/// The first `prefix` leaves may be unknown (sealed by retention): the tree is then built
/// from their [`Frontier`] nodes, which are exactly the nodes any audit path of a later
/// leaf needs from that part of the tree.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `levels[j]` holds the nodes of height `j` from index `offsets[j]` on; a level with
    /// an odd count promotes its last node.
    levels: Vec<Vec<Hash>>,
    offsets: Vec<u64>,
    /// The frontier node of height `j` (index `offsets[j] - 1`), when `prefix` has bit `j`.
    prefix_nodes: Vec<Option<Hash>>,
    size: u64,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Self {
        Self::with_prefix(&Frontier::new(), leaves)
    }
    /// The tree over `prefix.size()` sealed leaves (known by their frontier) followed by
    /// `rest`.
    pub fn with_prefix(prefix: &Frontier, rest: Vec<Hash>) -> Self {
        let p = prefix.size();
        let size = p + rest.len() as u64;
        let mut by_height: Vec<Option<Hash>> = vec![None; 64];
        for &(h, node) in &prefix.stack {
            by_height[h as usize] = Some(node);
        }
        let mut tree = Tree {
            levels: vec![rest],
            offsets: vec![p],
            prefix_nodes: vec![by_height[0]],
            size,
        };
        let mut j = 0usize;
        let mut count = size; // nodes at level j
        while count > 1 {
            let next_count = count.div_ceil(2);
            let off = p >> (j + 1);
            let mut next = Vec::with_capacity((next_count - off) as usize);
            for k in off..next_count {
                let left = tree.node(j, 2 * k).expect("a left child is known");
                if 2 * k + 1 < count {
                    let right = tree.node(j, 2 * k + 1).expect("a right child is known");
                    next.push(node_hash(&left, &right));
                } else {
                    next.push(left);
                }
            }
            tree.levels.push(next);
            tree.offsets.push(off);
            tree.prefix_nodes
                .push(by_height.get(j + 1).copied().flatten());
            j += 1;
            count = next_count;
        }
        tree
    }
    fn node(&self, level: usize, index: u64) -> Option<Hash> {
        let off = self.offsets[level];
        if index >= off {
            return self.levels[level].get((index - off) as usize).copied();
        }
        if index + 1 == off {
            return self.prefix_nodes[level];
        }
        None
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn root(&self) -> Hash {
        if self.size == 0 {
            return empty_root();
        }
        self.node(self.levels.len() - 1, 0)
            .unwrap_or_else(empty_root)
    }
    /// Audit path of leaf `index` (bottom-up), `None` when out of range or sealed.
    pub fn inclusion_proof(&self, index: u64) -> Option<Vec<Hash>> {
        if index >= self.size || index < self.offsets[0] {
            return None;
        }
        let mut i = index;
        let mut count = self.size;
        let mut path = Vec::new();
        for level in 0..self.levels.len() - 1 {
            let sibling = i ^ 1;
            if sibling < count {
                path.push(self.node(level, sibling)?);
            }
            i >>= 1;
            count = count.div_ceil(2);
        }
        Some(path)
    }
}

/// Audit path for leaf `index` in the tree over `leaves` (RFC 6962 `PATH`).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Option<Vec<Hash>> {
    Tree::new(leaves.to_vec()).inclusion_proof(index)
}

/// RFC 9162 §2.1.3.2: does `proof` show `leaf` at `index` in the tree of `size` with `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

/// Consistency proof between the tree of the first `old_size` leaves and the tree of all
/// `leaves` (RFC 6962 `PROOF`). Empty when `old_size` is 0 or equals the size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Option<Vec<Hash>> {
    let m = usize::try_from(old_size).ok()?;
    if m > leaves.len() {
        return None;
    }
    if m == 0 || m == leaves.len() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    subproof(m, leaves, true, &mut out);
    Some(out)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree (`old_size`, `old_root`) is a prefix of
/// (`new_size`, `new_root`)?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    &fr == old_root && &sr == new_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The RFC 6962 test inputs used by the certificate-transparency implementations.
    fn vector_leaves() -> Vec<Hash> {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        inputs.iter().map(|d| leaf_hash(d)).collect()
    }

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn known_roots() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves = vector_leaves();
        for n in 1..=8 {
            let want = ROOTS[n - 1];
            assert_eq!(hex::encode(root(&leaves[..n])), want, "MTH of {n}");
            assert_eq!(hex::encode(Tree::new(leaves[..n].to_vec()).root()), want);
            let mut f = Frontier::new();
            leaves[..n].iter().for_each(|l| f.push(*l));
            assert_eq!(hex::encode(f.root()), want, "frontier of {n}");
        }
    }

    #[test]
    fn known_inclusion_paths() {
        // RFC 6962 test vectors (leaf index, tree size, path).
        let leaves = vector_leaves();
        let cases: [(u64, usize, &[&str]); 4] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (index, size, want) in cases {
            let got = inclusion_proof(&leaves[..size], index).unwrap();
            let got: Vec<String> = got.iter().map(hex::encode).collect();
            assert_eq!(got, want, "path of {index} in {size}");
            let proof: Vec<Hash> = want.iter().map(|h| decode32(h).unwrap()).collect();
            assert!(verify_inclusion(
                &leaves[index as usize],
                index,
                size as u64,
                &proof,
                &root(&leaves[..size])
            ));
        }
    }

    #[test]
    fn known_consistency_proofs() {
        let leaves = vector_leaves();
        let cases: [(u64, &[&str]); 3] = [
            (
                1,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
        ];
        for (m, want) in cases {
            let got = consistency_proof(&leaves, m).unwrap();
            let got: Vec<String> = got.iter().map(hex::encode).collect();
            assert_eq!(got, want, "consistency {m} -> 8");
            let proof: Vec<Hash> = want.iter().map(|h| decode32(h).unwrap()).collect();
            assert!(verify_consistency(
                m,
                8,
                &root(&leaves[..m as usize]),
                &root(&leaves),
                &proof
            ));
        }
    }

    #[test]
    fn tampered_proofs_fail() {
        let leaves: Vec<Hash> = (0u32..13).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let r = root(&leaves);
        let p = inclusion_proof(&leaves, 6).unwrap();
        assert!(verify_inclusion(&leaves[6], 6, 13, &p, &r));
        assert!(!verify_inclusion(&leaves[6], 7, 13, &p, &r), "wrong index");
        assert!(!verify_inclusion(&leaves[6], 6, 7, &p, &r), "wrong size");
        assert!(!verify_inclusion(&leaves[5], 6, 13, &p, &r), "wrong leaf");
        assert!(!verify_inclusion(&leaves[6], 6, 13, &p[1..], &r), "short");
        let mut bad = p.clone();
        bad[1][0] ^= 1;
        assert!(!verify_inclusion(&leaves[6], 6, 13, &bad, &r), "edited");
        let c = consistency_proof(&leaves, 5).unwrap();
        let r5 = root(&leaves[..5]);
        assert!(verify_consistency(5, 13, &r5, &r, &c));
        assert!(!verify_consistency(5, 13, &r, &r5, &c));
        assert!(!verify_consistency(6, 13, &r5, &r, &c));
        let mut bad = c.clone();
        bad[0][31] ^= 0x80;
        assert!(!verify_consistency(5, 13, &r5, &r, &bad));
        assert!(!verify_consistency(5, 13, &r5, &r, &[]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn a_sealed_prefix_gives_the_same_root_and_paths(n in 1usize..200, p in 0usize..200, seed in any::<u64>()) {
            let p = p % (n + 1);
            let leaves: Vec<Hash> = (0..n as u64).map(|i| leaf_hash(&(seed ^ i).to_le_bytes())).collect();
            let mut f = Frontier::new();
            for l in &leaves[..p] {
                f.push(*l);
            }
            let g = Frontier::from_nodes(p as u64, &f.nodes()).unwrap();
            prop_assert_eq!(g.root(), f.root());
            let full = Tree::new(leaves.clone());
            let sealed = Tree::with_prefix(&g, leaves[p..].to_vec());
            prop_assert_eq!(sealed.size(), n as u64);
            prop_assert_eq!(sealed.root(), root(&leaves));
            for i in 0..n as u64 {
                if (i as usize) < p {
                    prop_assert!(sealed.inclusion_proof(i).is_none());
                } else {
                    prop_assert_eq!(sealed.inclusion_proof(i), full.inclusion_proof(i));
                }
            }
            // Pushing the rest onto the rebuilt frontier reaches the same root.
            let mut g = g;
            for l in &leaves[p..] {
                g.push(*l);
            }
            prop_assert_eq!(g.root(), root(&leaves));
            prop_assert_eq!(Frontier::from_nodes(p as u64, &[]).is_none(), p > 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_leaf_proves_and_sizes_are_consistent(n in 1usize..300, seed in any::<u64>(), a in any::<u64>(), b in any::<u64>()) {
            let leaves: Vec<Hash> = (0..n as u64).map(|i| leaf_hash(&(seed ^ i).to_le_bytes())).collect();
            let tree = Tree::new(leaves.clone());
            let r = root(&leaves);
            prop_assert_eq!(tree.root(), r);
            let mut f = Frontier::new();
            for (i, l) in leaves.iter().enumerate() {
                f.push(*l);
                if i % 17 == 0 {
                    prop_assert_eq!(f.root(), root(&leaves[..=i]));
                }
            }
            prop_assert_eq!(f.root(), r);
            for i in 0..n as u64 {
                let p = tree.inclusion_proof(i).unwrap();
                prop_assert!(verify_inclusion(&leaves[i as usize], i, n as u64, &p, &r), "leaf {} of {}", i, n);
            }
            let (m1, m2) = {
                let x = (a % (n as u64 + 1)) as usize;
                let y = (b % (n as u64 + 1)) as usize;
                (x.min(y), x.max(y))
            };
            let proof = consistency_proof(&leaves[..m2], m1 as u64).unwrap();
            prop_assert!(verify_consistency(m1 as u64, m2 as u64, &root(&leaves[..m1]), &root(&leaves[..m2]), &proof));
            if m1 > 0 && m1 < m2 {
                let other = leaf_hash(b"other");
                prop_assert!(!verify_consistency(m1 as u64, m2 as u64, &other, &root(&leaves[..m2]), &proof));
            }
        }
    }
}
