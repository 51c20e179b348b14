//! Page hashing and per-page Merkle trees.
//!
//! A region of guest memory is hashed 4 KiB page by page; the page hashes are the leaves of a
//! binary Merkle tree with the RFC 6962 shape (an unpaired last node is promoted a level), and
//! domain-separated nodes:
//!
//! ```text
//! leaf(page)  = H(0x00 ‖ page)
//! node(l, r)  = H(0x01 ‖ l ‖ r)
//! ```
//!
//! A verifier that holds a baseline tree recomputes a new root from a delta of changed leaves in
//! O(k log n) with [`MerkleTree::apply_delta`]; a change left out of the delta leaves the root
//! different from the claimed one, so the diff is complete.

use serde::{Deserialize, Serialize};

/// The page size of every tree: 4 KiB.
pub const PAGE_SIZE: usize = 4096;

/// A 32-byte digest.
pub type Digest = [u8; 32];

/// Errors building or updating a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MerkleError {
    /// A tree needs at least one leaf.
    #[error("a Merkle tree needs at least one page")]
    Empty,
    /// Input was not a whole number of pages.
    #[error("{0} bytes is not a whole number of 4 KiB pages")]
    PartialPage(usize),
    /// A delta named a leaf outside the tree.
    #[error("leaf index {index} is outside a tree of {leaves} leaves")]
    IndexOutOfRange {
        /// Index named.
        index: u64,
        /// Leaves in the tree.
        leaves: u64,
    },
}

/// The hash function of a tree, named by the capture policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HashAlg {
    /// SHA-256 (AWS-LC, SHA-NI where the CPU has it).
    #[default]
    Sha256,
    /// BLAKE3 (SIMD where the CPU has it).
    Blake3,
}

impl HashAlg {
    /// Stable text name, as used in policies and claims.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }

    /// Parse a stable text name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "blake3" => Some(Self::Blake3),
            _ => None,
        }
    }

    /// Hash the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Digest {
        match self {
            Self::Sha256 => {
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                for p in parts {
                    ctx.update(p);
                }
                let mut out = [0u8; 32];
                out.copy_from_slice(ctx.finish().as_ref());
                out
            }
            Self::Blake3 => {
                let mut h = blake3::Hasher::new();
                for p in parts {
                    h.update(p);
                }
                *h.finalize().as_bytes()
            }
        }
    }

    /// The leaf hash of one page (or of any leaf payload).
    pub fn leaf(self, page: &[u8]) -> Digest {
        self.hash(&[&[0x00], page])
    }

    /// The hash of an inner node.
    pub fn node(self, left: &Digest, right: &Digest) -> Digest {
        self.hash(&[&[0x01], left, right])
    }
}

/// Hash a buffer of whole pages into leaf digests.
pub fn hash_pages(alg: HashAlg, data: &[u8]) -> Result<Vec<Digest>, MerkleError> {
    if !data.len().is_multiple_of(PAGE_SIZE) {
        return Err(MerkleError::PartialPage(data.len()));
    }
    Ok(data.chunks_exact(PAGE_SIZE).map(|p| alg.leaf(p)).collect())
}

/// A Merkle tree that keeps every level, so single leaves can be updated in O(log n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    alg: HashAlg,
    /// `levels[0]` are the leaves; the last level has one node, the root.
    levels: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// Build a tree over leaf digests.
    pub fn from_leaves(alg: HashAlg, leaves: Vec<Digest>) -> Result<Self, MerkleError> {
        if leaves.is_empty() {
            return Err(MerkleError::Empty);
        }
        let mut levels = vec![leaves];
        while let Some(prev) = levels.last().filter(|l| l.len() > 1) {
            let next: Vec<Digest> = prev
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => alg.node(l, r),
                    [only] => *only,
                    _ => unreachable_pair(),
                })
                .collect();
            levels.push(next);
        }
        Ok(Self { alg, levels })
    }

    /// Hash whole pages and build the tree.
    pub fn from_pages(alg: HashAlg, data: &[u8]) -> Result<Self, MerkleError> {
        Self::from_leaves(alg, hash_pages(alg, data)?)
    }

    /// The hash function.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The root digest.
    pub fn root(&self) -> Digest {
        // `from_leaves` guarantees at least one level with one node at the top.
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf digests.
    pub fn leaves(&self) -> &[Digest] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// Replace leaves and recompute only the affected paths; returns the new root.
    ///
    /// Validates every index before changing anything, so an error leaves the tree as it was.
    pub fn apply_delta(&mut self, changes: &[(u64, Digest)]) -> Result<Digest, MerkleError> {
        let n = self.leaf_count();
        if let Some(&(index, _)) = changes.iter().find(|(i, _)| *i >= n) {
            return Err(MerkleError::IndexOutOfRange { index, leaves: n });
        }
        let mut dirty: Vec<usize> = Vec::with_capacity(changes.len());
        for &(i, d) in changes {
            let i = i as usize;
            self.levels[0][i] = d;
            dirty.push(i);
        }
        for level in 1..self.levels.len() {
            let mut parents: Vec<usize> = dirty.iter().map(|i| i / 2).collect();
            parents.sort_unstable();
            parents.dedup();
            for &p in &parents {
                let below = &self.levels[level - 1];
                let v = match (below.get(2 * p), below.get(2 * p + 1)) {
                    (Some(l), Some(r)) => self.alg.node(l, r),
                    (Some(l), None) => *l,
                    _ => continue,
                };
                self.levels[level][p] = v;
            }
            dirty = parents;
        }
        Ok(self.root())
    }

    /// The root this tree would have with `changes` applied, without changing it: O(k log n) node
    /// hashes for k changed leaves, touching only their paths (what a verifier does with a
    /// snapshot's delta against its stored baseline).
    pub fn root_with_changes(&self, changes: &[(u64, Digest)]) -> Result<Digest, MerkleError> {
        let n = self.leaf_count();
        if let Some(&(index, _)) = changes.iter().find(|(i, _)| *i >= n) {
            return Err(MerkleError::IndexOutOfRange { index, leaves: n });
        }
        let mut level_changes: std::collections::BTreeMap<usize, Digest> =
            changes.iter().map(|&(i, d)| (i as usize, d)).collect();
        for level in 1..self.levels.len() {
            let below = &self.levels[level - 1];
            let get = |m: &std::collections::BTreeMap<usize, Digest>, i: usize| {
                m.get(&i).or(below.get(i)).copied()
            };
            let parents: std::collections::BTreeSet<usize> =
                level_changes.keys().map(|i| i / 2).collect();
            let mut next = std::collections::BTreeMap::new();
            for p in parents {
                let v = match (get(&level_changes, 2 * p), get(&level_changes, 2 * p + 1)) {
                    (Some(l), Some(r)) => self.alg.node(&l, &r),
                    (Some(l), None) => l,
                    _ => continue,
                };
                next.insert(p, v);
            }
            level_changes = next;
        }
        Ok(level_changes
            .get(&0)
            .copied()
            .unwrap_or_else(|| self.root()))
    }

    /// Indices of leaves that differ from `other` (trees of the same size).
    pub fn diff(&self, other: &MerkleTree) -> Vec<u64> {
        self.leaves()
            .iter()
            .zip(other.leaves())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u64)
            .collect()
    }
}

#[cold]
fn unreachable_pair() -> Digest {
    // `chunks(2)` yields one or two items; keep the type total without a panic.
    [0u8; 32]
}

/// Root over a list of digests (region roots), with the same node rule.
pub fn root_of(alg: HashAlg, digests: &[Digest]) -> Result<Digest, MerkleError> {
    MerkleTree::from_leaves(alg, digests.to_vec()).map(|t| t.root())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1 MTH, written recursively, as the reference.
    fn mth(alg: HashAlg, leaves: &[Digest]) -> Digest {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = leaves.len().next_power_of_two() / 2;
        alg.node(&mth(alg, &leaves[..k]), &mth(alg, &leaves[k..]))
    }

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| HashAlg::Sha256.leaf(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn shape_matches_rfc6962_for_every_size_up_to_70() {
        for alg in [HashAlg::Sha256, HashAlg::Blake3] {
            for n in 1..=70 {
                let l = leaves(n);
                let t = MerkleTree::from_leaves(alg, l.clone()).unwrap();
                assert_eq!(t.root(), mth(alg, &l), "n = {n}");
            }
        }
    }

    #[test]
    fn delta_gives_the_same_root_as_a_rebuild() {
        let mut l = leaves(37);
        let mut t = MerkleTree::from_leaves(HashAlg::Sha256, l.clone()).unwrap();
        let changes = vec![
            (0u64, [1u8; 32]),
            (36, [2u8; 32]),
            (17, [3u8; 32]),
            (18, [4u8; 32]),
        ];
        for &(i, d) in &changes {
            l[i as usize] = d;
        }
        let root = t.apply_delta(&changes).unwrap();
        assert_eq!(
            root,
            MerkleTree::from_leaves(HashAlg::Sha256, l).unwrap().root()
        );
    }

    #[test]
    fn root_with_changes_equals_apply_delta_without_mutating() {
        for n in [1usize, 2, 3, 7, 37, 64, 65] {
            let t = MerkleTree::from_leaves(HashAlg::Sha256, leaves(n)).unwrap();
            let changes: Vec<(u64, Digest)> = [0, n / 2, n - 1]
                .iter()
                .map(|&i| (i as u64, [i as u8 + 1; 32]))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect();
            let mut t2 = t.clone();
            let want = t2.apply_delta(&changes).unwrap();
            assert_eq!(t.root_with_changes(&changes).unwrap(), want, "n = {n}");
            assert_eq!(t.root_with_changes(&[]).unwrap(), t.root());
        }
        let t = MerkleTree::from_leaves(HashAlg::Sha256, leaves(4)).unwrap();
        assert!(t.root_with_changes(&[(4, [0; 32])]).is_err());
    }

    #[test]
    fn bad_delta_changes_nothing() {
        let mut t = MerkleTree::from_leaves(HashAlg::Sha256, leaves(5)).unwrap();
        let before = t.clone();
        let err = t
            .apply_delta(&[(1, [9u8; 32]), (5, [9u8; 32])])
            .unwrap_err();
        assert_eq!(
            err,
            MerkleError::IndexOutOfRange {
                index: 5,
                leaves: 5
            }
        );
        assert_eq!(t, before);
    }

    #[test]
    fn pages_must_be_whole() {
        assert_eq!(
            MerkleTree::from_pages(HashAlg::Sha256, &[0u8; 4095]).unwrap_err(),
            MerkleError::PartialPage(4095)
        );
        assert_eq!(
            MerkleTree::from_pages(HashAlg::Sha256, &[]).unwrap_err(),
            MerkleError::Empty
        );
        let t = MerkleTree::from_pages(HashAlg::Sha256, &[0u8; 3 * 4096]).unwrap();
        assert_eq!(t.leaf_count(), 3);
    }

    #[test]
    fn leaf_and_node_are_domain_separated() {
        let a = [7u8; 32];
        let mut both = vec![];
        both.extend_from_slice(&a);
        both.extend_from_slice(&a);
        // A leaf whose content is two digests must not collide with the node over them.
        assert_ne!(HashAlg::Sha256.leaf(&both), HashAlg::Sha256.node(&a, &a));
    }

    #[test]
    fn sha256_of_empty_matches_fips_180() {
        assert_eq!(
            hex::encode(HashAlg::Sha256.hash(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
