//! Snapshots: the planned pages hashed into one Merkle tree per region, kept consistent with a
//! short pause, and updated incrementally from the dirty log.
//!
//! Consistency, as live migration does it:
//! - [`Consistency::StopCopy`]: pause, hash everything, resume. The pause is the whole capture.
//! - [`Consistency::PreCopy`]: hash everything while the guest runs (on all cores but one: the
//!   guest's vCPU keeps one), then re-hash the pages it wrote meanwhile in rounds until what is
//!   left fits [`PRECOPY_PAUSE_TARGET`] (or stops shrinking), then pause, re-hash that rest (the
//!   dirty log, on every core), resume. The result is the memory as it was at the
//!   pause — the same as a stop-and-copy capture at that moment — with a pause proportional to the
//!   pages dirtied during the pre-copy, not to the memory size.
//!
//! [`Snapshot::incremental`] starts from the previous snapshot's trees and re-hashes only pages
//! written since (pre-copy style), updating leaves in O(k log n); it equals a full capture of the
//! same memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vmseal_sealer::claims::{
    CaptureInfo, CaptureKind, Claims, KernelObjects, ModuleInfo, Region, RegionDelta,
};
use vmseal_sealer::merkle::{Digest, MerkleTree};

use crate::CaptureError;
use crate::baseline::{Baseline, BaselineRegion};
use crate::hash::{Budget, hash_pages_fixed};
use crate::plan::Plan;
use crate::policy::Sampling;
use crate::source::{DirtyPages, GuestMemory, MemorySource};

/// How the capture is kept consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Pause for the whole capture.
    StopCopy,
    /// Hash while running, pause only to re-hash pages dirtied meanwhile.
    PreCopy,
}

/// What one capture did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    /// Full, or incremental from a base sequence number.
    pub kind: CaptureKind,
    /// Pages read and hashed (re-hashes included).
    pub pages_read: u64,
    /// Time the guest was paused.
    pub pause: Duration,
    /// Pages read while it was paused (all of them for stop-copy; for pre-copy and incremental
    /// captures, what the guest wrote after the last round).
    pub paused_pages: u64,
    /// Total time.
    pub duration: Duration,
    /// Of the pause, the time the kernel-objects walk took (zero without one).
    pub kernel_walk: Duration,
}

/// The trees of one capture.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What was captured.
    pub plan: Plan,
    /// One tree per planned region.
    pub trees: Vec<MerkleTree>,
    /// What the guest kernel's structures held at the pause, when the plan walks them.
    pub kernel: Option<KernelObjects>,
    /// How.
    pub stats: CaptureStats,
}

impl Snapshot {
    fn build(
        plan: Plan,
        digests: &HashMap<u64, Digest>,
        stats: CaptureStats,
    ) -> Result<Self, CaptureError> {
        let trees = plan
            .regions
            .iter()
            .map(|r| {
                let leaves = r
                    .pfns
                    .iter()
                    .map(|p| digests.get(p).copied().unwrap_or_default())
                    .collect();
                MerkleTree::from_leaves(plan.hash, leaves)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            plan,
            trees,
            kernel: None,
            stats,
        })
    }

    /// Capture every planned page.
    pub fn full(
        source: &mut dyn MemorySource,
        plan: Plan,
        mode: Consistency,
    ) -> Result<Self, CaptureError> {
        let t0 = Instant::now();
        let pages = plan.pages();
        let mut read = pages.len() as u64;
        let mut paused_pages = pages.len() as u64;
        let mut kernel = None;
        let ((digests, walked), pause) = match mode {
            Consistency::StopCopy => while_paused(source, |src| {
                dirty_since_last(src)?; // tracking restarts at this consistent point
                let d = hash_pages_fixed(src, plan.hash, &pages, None, &plan.fixups)?;
                Ok((d, walk_kernel(&plan, src, &mut kernel)))
            })?,
            Consistency::PreCopy => {
                dirty_since_last(source)?; // start tracking before the pre-copy pass
                // While the guest runs, hash on all cores but one: its vCPU keeps one.
                let (mut d, carry, rounds_read) = beside_the_guest(|| {
                    let t = Instant::now();
                    let mut d = hash_pages_fixed(
                        source,
                        plan.hash,
                        &pages,
                        plan.budget.as_deref(),
                        &plan.fixups,
                    )?;
                    let per_page = t.elapsed() / (pages.len().max(1) as u32);
                    let (carry, read) = converge(source, &plan, &pages, &mut d, per_page)?;
                    Ok::<_, CaptureError>((d, carry, read))
                })?;
                read += rounds_read;
                let (r, pause) = while_paused(source, |src| {
                    let dirty = match (dirty_since_last(src)?, carry) {
                        (Some(mut now), Some(carry)) => {
                            now.union(&carry);
                            Some(now)
                        }
                        (now, _) => now,
                    };
                    let r = rehash_dirty(src, &plan, &pages, &mut d, dirty.as_ref(), None)?;
                    Ok((r, walk_kernel(&plan, src, &mut kernel)))
                })?;
                read += r.0;
                paused_pages = r.0;
                ((d, r.1), pause)
            }
        };
        let map: HashMap<u64, Digest> = pages.into_iter().zip(digests).collect();
        let mut s = Self::build(
            plan,
            &map,
            CaptureStats {
                kind: CaptureKind::Full,
                pages_read: read,
                pause,
                paused_pages,
                duration: t0.elapsed(),
                kernel_walk: walked,
            },
        )?;
        s.kernel = kernel;
        Ok(s)
    }

    /// Update this snapshot with the pages written since it was taken (pre-copy style); the result
    /// is the same as a full capture of the guest at the moment of the pause. The source needs a
    /// [`DirtyLog`](crate::source::DirtyLog).
    pub fn incremental(
        &self,
        source: &mut dyn MemorySource,
        base_seq: u64,
    ) -> Result<Self, CaptureError> {
        let t0 = Instant::now();
        let mut next = self.clone();
        let no_log = |src: &dyn MemorySource| CaptureError::NoDirtyLog(src.describe());
        let first = dirty_since_last(source)?.ok_or_else(|| no_log(source))?;
        let budget = next.plan.budget.clone();
        let mut read = next.update(source, &first, budget.as_deref())?;
        let mut kernel = None;
        let ((r, walked), pause) = while_paused(source, |src| {
            let d = dirty_since_last(src)?.ok_or_else(|| no_log(src))?;
            let r = next.update(src, &d, None)?;
            Ok((r, walk_kernel(&next.plan, src, &mut kernel)))
        })?;
        read += r;
        next.kernel = kernel;
        next.stats = CaptureStats {
            kind: CaptureKind::Incremental { base_seq },
            pages_read: read,
            pause,
            paused_pages: r,
            duration: t0.elapsed(),
            kernel_walk: walked,
        };
        Ok(next)
    }

    /// Re-hash the planned pages in `dirty` and update the trees; returns pages read.
    fn update(
        &mut self,
        source: &dyn GuestMemory,
        dirty: &DirtyPages,
        budget: Option<&Budget>,
    ) -> Result<u64, CaptureError> {
        let pages: Vec<u64> = dirty
            .iter()
            .filter(|p| self.plan.index.contains_key(p))
            .collect();
        let digests = hash_pages_fixed(source, self.plan.hash, &pages, budget, &self.plan.fixups)?;
        let mut per_region: Vec<Vec<(u64, Digest)>> = vec![Vec::new(); self.trees.len()];
        for (p, d) in pages.iter().zip(digests) {
            for &(r, leaf) in self
                .plan
                .index
                .get(p)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                per_region[r].push((leaf as u64, d));
            }
        }
        for (tree, changes) in self.trees.iter_mut().zip(per_region) {
            if !changes.is_empty() {
                tree.apply_delta(&changes)?;
            }
        }
        Ok(pages.len() as u64)
    }

    /// The claims regions (name, class, severity, ranges, pages, root).
    pub fn regions(&self) -> Vec<Region> {
        self.plan
            .regions
            .iter()
            .zip(&self.trees)
            .map(|(r, t)| Region {
                name: r.policy.name.clone(),
                class: r.policy.class,
                severity: r.policy.severity,
                ranges: r.ranges(),
                pages: r.pfns.len() as u64,
                root: t.root(),
            })
            .collect()
    }

    /// Changed leaves against a baseline, per region present in both with the same size — or,
    /// for a region sampled by the verifier's nonce, against the baseline pages that nonce
    /// selects (the verifier compares the sample with exactly those).
    pub fn delta(&self, baseline: &Baseline) -> Vec<RegionDelta> {
        let mut out = Vec::new();
        for (r, tree) in self.plan.regions.iter().zip(&self.trees) {
            let Some(b) = baseline.regions.iter().find(|b| b.name == r.policy.name) else {
                continue;
            };
            let leaves = b.leaves();
            let reference: Vec<Digest> = if leaves.len() == tree.leaves().len() {
                leaves
            } else if let (Sampling::Pages(k), Some(nonce)) = (r.policy.sampling, &self.plan.nonce)
            {
                let idx =
                    vmseal_policy::sample_indices(nonce, &r.policy.name, leaves.len(), k as usize);
                if idx.len() != tree.leaves().len() {
                    continue;
                }
                idx.iter().map(|&i| leaves[i]).collect()
            } else {
                continue;
            };
            let changes: Vec<(u64, Digest)> = tree
                .leaves()
                .iter()
                .zip(&reference)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, _))| (i as u64, *a))
                .collect();
            if !changes.is_empty() {
                out.push(RegionDelta {
                    region: r.policy.name.clone(),
                    changes,
                });
            }
        }
        out
    }

    /// For every region, how many of its pages differ from `baseline` (0 when equal, or when the
    /// baseline has no comparable region).
    pub fn changed_pages(&self, baseline: &Baseline) -> Vec<(String, usize)> {
        let d = self.delta(baseline);
        self.plan
            .regions
            .iter()
            .map(|r| {
                let n = d
                    .iter()
                    .find(|d| d.region == r.policy.name)
                    .map_or(0, |d| d.changes.len());
                (r.policy.name.clone(), n)
            })
            .collect()
    }

    /// One line per region for people: name, class, severity, pages, the start of its root,
    /// and, against `changed` (from [`changed_pages`](Self::changed_pages)), whether it changed.
    pub fn region_lines(&self, changed: Option<&[(String, usize)]>) -> Vec<String> {
        self.regions()
            .iter()
            .map(|r| {
                let status = match changed.and_then(|ch| ch.iter().find(|(n, _)| *n == r.name)) {
                    None => String::new(),
                    Some((_, 0)) => "  unchanged".into(),
                    Some((_, k)) => format!("  CHANGED: {k} page(s) differ from the baseline"),
                };
                format!(
                    "  region {:<20} {:<9} {:<9} {:>7} pages  {}{status}",
                    r.name,
                    r.class.name(),
                    r.severity.name(),
                    r.pages,
                    &hex::encode(r.root)[..16]
                )
            })
            .collect()
    }

    /// This snapshot's trees as a baseline for later deltas.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            policy_digest: self.plan.policy.digest.to_vec(),
            hash: self.plan.hash.name().to_owned(),
            regions: self
                .plan
                .regions
                .iter()
                .zip(&self.trees)
                .map(|(r, t)| BaselineRegion {
                    name: r.policy.name.clone(),
                    leaves: t.leaves().concat(),
                })
                .collect(),
            kernel: self.kernel.as_ref().map(|k| k.encode()),
        }
    }

    /// The snapshot claims, ready to seal.
    #[allow(clippy::too_many_arguments)]
    pub fn claims(
        &self,
        vm_id: &str,
        host_id: &str,
        seq: u64,
        prev: Option<Digest>,
        iat: i64,
        module: ModuleInfo,
        baseline: Option<&Baseline>,
    ) -> Result<Claims, CaptureError> {
        let regions = self.regions();
        let (memory_root, code_hash) = Claims::compute_roots(self.plan.hash, &regions)
            .map_err(|e| CaptureError::Baseline(e.to_string()))?;
        Ok(Claims {
            vm_id: vm_id.to_owned(),
            host_id: host_id.to_owned(),
            seq,
            prev,
            iat,
            nonce: self.plan.nonce.clone(),
            boot: self.plan.boot,
            policy: self.plan.policy.clone(),
            hash_alg: self.plan.hash,
            regions,
            memory_root,
            code_hash,
            module,
            capture: CaptureInfo {
                kind: self.stats.kind,
                pages_read: self.stats.pages_read,
                pause_us: self.stats.pause.as_micros() as u64,
                duration_us: self.stats.duration.as_micros() as u64,
            },
            delta: baseline.map(|b| self.delta(b)).unwrap_or_default(),
            sealed: None,
            kernel: self.kernel.clone(),
        })
    }
}

/// Walk the kernel's objects when the plan says to (with the guest paused), into `out`; the time
/// the walk took.
fn walk_kernel(plan: &Plan, src: &dyn MemorySource, out: &mut Option<KernelObjects>) -> Duration {
    let t = Instant::now();
    *out = plan.kernel.as_ref().map(|w| w.observe(src));
    t.elapsed()
}

/// Run `f` with the guest paused when the source can pause, and resume it whether `f` succeeded
/// or not. The duration is how long the guest was paused (zero for a source that cannot pause).
fn while_paused<T>(
    source: &mut dyn MemorySource,
    f: impl FnOnce(&mut dyn MemorySource) -> Result<T, CaptureError>,
) -> Result<(T, Duration), CaptureError> {
    let p0 = Instant::now();
    let paused = match source.pausable() {
        Some(p) => {
            p.pause()?;
            true
        }
        None => false,
    };
    let r = f(source);
    if let Some(p) = source.pausable().filter(|_| paused) {
        p.resume()?;
    }
    Ok((r?, if paused { p0.elapsed() } else { Duration::ZERO }))
}

/// The pages written since the last call, or `None` for a source without a dirty log.
fn dirty_since_last(source: &mut dyn MemorySource) -> Result<Option<DirtyPages>, CaptureError> {
    Ok(source.dirty_log().map(|d| d.dirty_pages()).transpose()?)
}

/// The longest a pre-copy capture plans to keep the guest paused for its final round (the pages
/// the guest wrote since the last round are read again while it is stopped).
pub const PRECOPY_PAUSE_TARGET: Duration = Duration::from_millis(2);

/// Rounds of pre-copy at most, after the first pass.
pub const PRECOPY_MAX_ROUNDS: u32 = 8;

/// Pre-copy rounds while the guest runs, as live migration converges: re-read the planned pages
/// the guest wrote since the last round, until what is left would take less than
/// [`PRECOPY_PAUSE_TARGET`] to read (at the rate the first pass measured, `per_page`), or the
/// guest writes as fast as the rounds read (the set stops shrinking), or
/// [`PRECOPY_MAX_ROUNDS`]. Returns the pages written since the last round that were not read
/// again (the final round, paused, reads them with whatever comes after) and how many pages the
/// rounds read. A source without a dirty log has no rounds: its final round reads everything.
fn converge(
    source: &mut dyn MemorySource,
    plan: &Plan,
    pages: &[u64],
    digests: &mut [Digest],
    per_page: Duration,
) -> Result<(Option<DirtyPages>, u64), CaptureError> {
    let mut read = 0;
    let mut last = u64::MAX;
    for _ in 0..PRECOPY_MAX_ROUNDS {
        let Some(dirty) = dirty_since_last(source)? else {
            return Ok((None, read));
        };
        let planned = dirty.iter().filter(|p| plan.index.contains_key(p)).count() as u64;
        let small = per_page.saturating_mul(planned as u32) <= PRECOPY_PAUSE_TARGET;
        if small || planned >= last {
            return Ok((Some(dirty), read));
        }
        read += rehash_dirty(
            source,
            plan,
            pages,
            digests,
            Some(&dirty),
            plan.budget.as_deref(),
        )?;
        last = planned;
    }
    Ok((dirty_since_last(source)?, read))
}

/// Run `f` (page hashing while the guest runs) on a thread pool of all cores but one, so that
/// the guest's vCPU is not crowded out by the capture that chases its writes. The final,
/// paused round uses every core.
fn beside_the_guest<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("vmseal-precopy-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn rehash_dirty(
    source: &dyn GuestMemory,
    plan: &Plan,
    pages: &[u64],
    digests: &mut [Digest],
    dirty: Option<&DirtyPages>,
    budget: Option<&Budget>,
) -> Result<u64, CaptureError> {
    let Some(dirty) = dirty else {
        // No dirty log: the only consistent choice is to re-hash everything while paused.
        let all = hash_pages_fixed(source, plan.hash, pages, budget, &plan.fixups)?;
        digests.copy_from_slice(&all);
        return Ok(pages.len() as u64);
    };
    let idx: Vec<usize> = pages
        .iter()
        .enumerate()
        .filter(|(_, p)| dirty.contains(**p))
        .map(|(i, _)| i)
        .collect();
    let which: Vec<u64> = idx.iter().map(|&i| pages[i]).collect();
    let fresh = hash_pages_fixed(source, plan.hash, &which, budget, &plan.fixups)?;
    for (i, d) in idx.into_iter().zip(fresh) {
        digests[i] = d;
    }
    Ok(which.len() as u64)
}
