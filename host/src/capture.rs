//! The capture engine: plan the pages a policy selects, hash them (in parallel) into one Merkle
//! tree per region, keep the capture consistent with a short pause, and update the trees
//! incrementally from the dirty log.
//!
//! Consistency, as live migration does it:
//! - [`Consistency::StopCopy`]: pause, hash everything, resume. The pause is the whole capture.
//! - [`Consistency::PreCopy`]: hash everything while the guest runs, then pause, re-hash only the
//!   pages written meanwhile (the dirty log), resume. The result is the memory as it was at the
//!   pause — the same as a stop-and-copy capture at that moment — with a pause proportional to the
//!   pages dirtied during the pre-copy, not to the memory size.
//!
//! [`Snapshot::incremental`] starts from the previous snapshot's trees and re-hashes only pages
//! written since (pre-copy style), updating leaves in O(k log n); it equals a full capture of the
//! same memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vmseal_sealer::claims::{
    CaptureInfo, CaptureKind, Claims, GpaRange, ModuleInfo, PolicyRef, Region, RegionDelta,
};
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};

use crate::policy::{Policy, RegionPolicy, Sampling, Selector, SymbolMap};
use crate::source::{DirtyPages, MemorySource, PAGE, SourceError};

/// Errors planning or capturing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The policy cannot be applied to this guest.
    #[error("region {region:?}: {reason}")]
    Plan {
        /// Region.
        region: String,
        /// Why, and how to fix it.
        reason: String,
    },
    /// The memory source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Incremental capture needs a dirty log.
    #[error("{0} has no dirty page log; use a full capture")]
    NoDirtyLog(String),
    /// Merkle error.
    #[error(transparent)]
    Merkle(#[from] vmseal_sealer::merkle::MerkleError),
    /// A baseline file is unusable.
    #[error("baseline: {0}")]
    Baseline(String),
}

fn plan_err(region: &str, reason: impl Into<String>) -> CaptureError {
    CaptureError::Plan {
        region: region.to_owned(),
        reason: reason.into(),
    }
}

/// One region, resolved to the pages it covers, in tree order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRegion {
    /// Its policy entry.
    pub policy: RegionPolicy,
    /// Guest page frame numbers, one per leaf.
    pub pfns: Vec<u64>,
    /// Guest-virtual address of each leaf, for symbol-selected regions.
    pub gvas: Option<Vec<u64>>,
}

/// A transformation applied to one page before hashing: undo a KASLR slide.
#[derive(Debug, Clone)]
pub struct Fixup {
    relocs: std::sync::Arc<crate::kaslr::KernelRelocs>,
    gva: u64,
    slide: u64,
}

impl PlannedRegion {
    /// The pages as coalesced guest-physical ranges.
    pub fn ranges(&self) -> Vec<GpaRange> {
        let mut out: Vec<GpaRange> = Vec::new();
        for &p in &self.pfns {
            match out.last_mut() {
                Some(r) if r.start + r.len == p * PAGE => r.len += PAGE,
                _ => out.push(GpaRange {
                    start: p * PAGE,
                    len: PAGE,
                }),
            }
        }
        out
    }
}

/// The pages a policy selects in one guest, for one nonce.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Hash.
    pub hash: HashAlg,
    /// Regions, in policy order.
    pub regions: Vec<PlannedRegion>,
    /// Policy identity for the claims.
    pub policy: PolicyRef,
    /// Nonce the sampling was keyed with.
    pub nonce: Option<Vec<u8>>,
    /// The guest boot the source reported (the `boot` claim).
    pub boot: Option<[u8; 16]>,
    /// Hashing bandwidth budget shared with other captures (never applied while the guest is
    /// paused, so it cannot lengthen a pause).
    pub budget: Option<std::sync::Arc<Budget>>,
    /// Page → (region, leaf) positions.
    index: HashMap<u64, Vec<(usize, usize)>>,
    /// Pages transformed before hashing (KASLR undo).
    fixups: HashMap<u64, Fixup>,
}

/// A bandwidth budget for page hashing (a token bucket in bytes per second), so capture never
/// starves the guests: every capture sharing it together reads at most `rate` bytes per second.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Budget {
    /// A budget of `mb_per_s` megabytes (10^6 bytes) per second.
    pub fn new(mb_per_s: f64) -> Self {
        let rate = (mb_per_s * 1e6).max(PAGE as f64 * 64.0);
        let burst = (rate / 10.0).max(PAGE as f64 * 64.0);
        Self {
            rate,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        }
    }

    /// Wait until `bytes` may be read.
    pub fn take(&self, bytes: u64) {
        let need = bytes as f64;
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * self.rate)
                    .min(self.burst.max(need));
                st.1 = now;
                if st.0 >= need {
                    st.0 -= need;
                    return;
                }
                (need - st.0) / self.rate
            };
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

impl Plan {
    /// Resolve `policy` against `source` (RAM layout, address translation) and `symbols`.
    pub fn new(
        policy: &Policy,
        source: &dyn MemorySource,
        symbols: Option<&SymbolMap>,
        nonce: Option<&[u8]>,
    ) -> Result<Self, CaptureError> {
        Self::new_with_sections(policy, source, symbols, None, nonce)
    }

    /// [`Plan::new`], with the ELF sections that `section` selectors name.
    pub fn new_with_sections(
        policy: &Policy,
        source: &dyn MemorySource,
        symbols: Option<&SymbolMap>,
        sections: Option<&crate::kaslr::Sections>,
        nonce: Option<&[u8]>,
    ) -> Result<Self, CaptureError> {
        let ram = source.ram();
        let in_ram = |pfn: u64| {
            ram.iter()
                .any(|&(s, l)| pfn * PAGE >= s && (pfn + 1) * PAGE <= s + l)
        };
        let mut regions = Vec::new();
        for rp in &policy.regions {
            let name = rp.name.as_str();
            // Virtual selectors resolve to [s, e) and are translated page by page.
            let virt: Option<(u64, u64)> = match &rp.selector {
                Selector::Gpa { .. } | Selector::Mapping { .. } => None,
                Selector::Gva { start, len } => Some((*start, start + len)),
                Selector::Section { name: sec } => {
                    let secs = sections.ok_or_else(|| plan_err(name, "selects an ELF section, but no ELF file was loaded (policy `elf` or `kernel`)"))?;
                    let (a, n) = secs.get(sec).ok_or_else(|| {
                        plan_err(name, format!("section {sec:?} is not in the ELF file"))
                    })?;
                    Some((
                        a,
                        a.checked_add(n)
                            .ok_or_else(|| plan_err(name, "section range overflows"))?,
                    ))
                }
                Selector::Symbol { start, end, len } => {
                    let map = symbols.ok_or_else(|| plan_err(name, "selects by symbol, but no symbol map was given (policy `symbols = \"System.map\"` or --symbols)"))?;
                    let s = map.get(start).ok_or_else(|| {
                        plan_err(name, format!("symbol {start:?} is not in the symbol map"))
                    })?;
                    let e = match (end, len) {
                        (Some(e), _) => map.get(e).ok_or_else(|| {
                            plan_err(name, format!("symbol {e:?} is not in the symbol map"))
                        })?,
                        (None, Some(l)) => s
                            .checked_add(*l)
                            .ok_or_else(|| plan_err(name, "range overflows"))?,
                        (None, None) => return Err(plan_err(name, "needs `end_symbol` or `len`")),
                    };
                    Some((s, e))
                }
            };
            let mut gvas: Option<Vec<u64>> = None;
            let mut pfns: Vec<u64> = match (&rp.selector, virt) {
                (Selector::Gpa { start, len }, _) => (start / PAGE..(start + len) / PAGE).collect(),
                (Selector::Mapping { path, perms }, _) => {
                    let found: Vec<_> = source
                        .mappings()
                        .into_iter()
                        .filter(|m| m.path == *path && m.perms.get(..3) == Some(perms.as_str()))
                        .collect();
                    if found.is_empty() {
                        return Err(plan_err(
                            name,
                            format!("{} has no {perms} mapping of {path:?}", source.describe()),
                        ));
                    }
                    let vas: Vec<u64> = found
                        .iter()
                        .flat_map(|m| {
                            (m.start / PAGE..(m.start + m.len).div_ceil(PAGE)).map(|v| v * PAGE)
                        })
                        .collect();
                    let pfns = vas
                        .iter()
                        .map(|&va| source.virt_to_phys(va).map(|pa| pa / PAGE))
                        .collect::<Result<_, _>>()?;
                    gvas = Some(vas);
                    pfns
                }
                (_, Some((s, e))) => {
                    if e <= s {
                        return Err(plan_err(
                            name,
                            format!("end {e:#x} is not after start {s:#x}"),
                        ));
                    }
                    let (first, last) = (s / PAGE, e.div_ceil(PAGE));
                    gvas = Some((first..last).map(|vpn| vpn * PAGE).collect());
                    (first..last)
                        .map(|vpn| source.virt_to_phys(vpn * PAGE).map(|gpa| gpa / PAGE))
                        .collect::<Result<_, _>>()?
                }
                (_, None) => return Err(plan_err(name, "unresolved selector")),
            };
            if let Some(&bad) = pfns.iter().find(|&&p| !in_ram(p)) {
                return Err(plan_err(
                    name,
                    format!("page {:#x} is outside guest RAM {ram:x?}", bad * PAGE),
                ));
            }
            if let Sampling::Pages(k) = rp.sampling {
                let nonce = nonce.ok_or_else(|| {
                    plan_err(name, "samples pages by the verifier's nonce; give --nonce")
                })?;
                let idx = vmseal_policy::sample_indices(nonce, name, pfns.len(), k as usize);
                pfns = idx.iter().map(|&i| pfns[i]).collect();
                gvas = gvas.map(|g| idx.iter().map(|&i| g[i]).collect());
            }
            regions.push(PlannedRegion {
                policy: rp.clone(),
                pfns,
                gvas,
            });
        }
        let mut index: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
        for (r, reg) in regions.iter().enumerate() {
            for (i, &p) in reg.pfns.iter().enumerate() {
                index.entry(p).or_default().push((r, i));
            }
        }
        Ok(Self {
            hash: policy.hash,
            regions,
            policy: PolicyRef {
                name: policy.name.clone(),
                version: policy.version,
                digest: policy.digest,
            },
            nonce: nonce.map(<[u8]>::to_vec),
            boot: source.boot_id(),
            budget: None,
            index,
            fixups: HashMap::new(),
        })
    }

    /// Undo the kernel's KASLR relocations in the regions whose policy says `kaslr = "undo"`: the
    /// slide is the running kernel's `_text` (from `symbols`) minus the link-time `_text`.
    pub fn undo_kaslr(
        &mut self,
        relocs: std::sync::Arc<crate::kaslr::KernelRelocs>,
        symbols: &SymbolMap,
    ) -> Result<u64, CaptureError> {
        let text = symbols.get("_text").ok_or_else(|| {
            plan_err(
                "kaslr",
                "the symbol map has no `_text`, so the KASLR slide is unknown",
            )
        })?;
        let slide = text.wrapping_sub(relocs.link_text);
        for r in &self.regions {
            if !r.policy.kaslr_undo {
                continue;
            }
            let gvas = r.gvas.as_ref().ok_or_else(|| {
                plan_err(&r.policy.name, "`kaslr = \"undo\"` needs a symbol selector")
            })?;
            for (&pfn, &gva) in r.pfns.iter().zip(gvas) {
                self.fixups.insert(
                    pfn,
                    Fixup {
                        relocs: relocs.clone(),
                        gva,
                        slide,
                    },
                );
            }
        }
        Ok(slide)
    }

    /// Every distinct page of the plan, ascending.
    pub fn pages(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.index.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

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
    /// Total time.
    pub duration: Duration,
}

/// Hash `pfns` from `source` in parallel; one digest per page, in the same order.
pub fn hash_pages(
    source: &dyn MemorySource,
    alg: HashAlg,
    pfns: &[u64],
    budget: Option<&Budget>,
) -> Result<Vec<Digest>, SourceError> {
    hash_pages_fixed(source, alg, pfns, budget, &HashMap::new())
}

/// Margin read on each side of a page whose relocations are undone, so that a relocation site
/// straddling the page boundary is corrected as a whole.
const FIXUP_MARGIN: usize = 8;

fn read_fixed(
    source: &dyn MemorySource,
    pfn: u64,
    f: &Fixup,
    buf: &mut [u8],
) -> Result<(), SourceError> {
    let mut window = vec![0u8; PAGE as usize + 2 * FIXUP_MARGIN];
    // The kernel image is physically contiguous; a margin outside RAM stays zero.
    let start = (pfn * PAGE).saturating_sub(FIXUP_MARGIN as u64);
    let skip = (pfn * PAGE - start) as usize;
    let win = &mut window[FIXUP_MARGIN - skip..];
    if source.read(start, win).is_err() {
        win.iter_mut().for_each(|b| *b = 0);
        source.read(
            pfn * PAGE,
            &mut window[FIXUP_MARGIN..FIXUP_MARGIN + PAGE as usize],
        )?;
    }
    f.relocs
        .undo(f.slide, f.gva - FIXUP_MARGIN as u64, &mut window);
    buf.copy_from_slice(&window[FIXUP_MARGIN..FIXUP_MARGIN + PAGE as usize]);
    Ok(())
}

fn hash_pages_fixed(
    source: &dyn MemorySource,
    alg: HashAlg,
    pfns: &[u64],
    budget: Option<&Budget>,
    fixups: &HashMap<u64, Fixup>,
) -> Result<Vec<Digest>, SourceError> {
    pfns.par_chunks(64)
        .map(|chunk| {
            if let Some(b) = budget {
                b.take(chunk.len() as u64 * PAGE);
            }
            let mut buf = vec![0u8; PAGE as usize];
            chunk
                .iter()
                .map(|&p| {
                    match fixups.get(&p) {
                        Some(f) => read_fixed(source, p, f, &mut buf)?,
                        None => source.read(p * PAGE, &mut buf)?,
                    }
                    Ok(alg.leaf(&buf))
                })
                .collect::<Result<Vec<_>, SourceError>>()
        })
        .collect::<Result<Vec<Vec<_>>, _>>()
        .map(|v| v.into_iter().flatten().collect())
}

/// The trees of one capture.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What was captured.
    pub plan: Plan,
    /// One tree per planned region.
    pub trees: Vec<MerkleTree>,
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
        Ok(Self { plan, trees, stats })
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
        let (digests, pause) = match mode {
            Consistency::StopCopy => {
                let p0 = Instant::now();
                source.pause()?;
                let r = (|| {
                    source.dirty_pages()?; // tracking restarts at this consistent point
                    hash_pages_fixed(source, plan.hash, &pages, None, &plan.fixups)
                })();
                source.resume()?;
                (r?, p0.elapsed())
            }
            Consistency::PreCopy => {
                source.dirty_pages()?; // start tracking before the pre-copy pass
                let mut d = hash_pages_fixed(
                    source,
                    plan.hash,
                    &pages,
                    plan.budget.as_deref(),
                    &plan.fixups,
                )?;
                let p0 = Instant::now();
                source.pause()?;
                let r = (|| {
                    let dirty = source.dirty_pages()?;
                    rehash_dirty(source, &plan, &pages, &mut d, dirty.as_ref())
                })();
                source.resume()?;
                read += r?;
                (d, p0.elapsed())
            }
        };
        let map: HashMap<u64, Digest> = pages.into_iter().zip(digests).collect();
        Self::build(
            plan,
            &map,
            CaptureStats {
                kind: CaptureKind::Full,
                pages_read: read,
                pause,
                duration: t0.elapsed(),
            },
        )
    }

    /// Update this snapshot with the pages written since it was taken (pre-copy style); the result
    /// is the same as a full capture of the guest at the moment of the pause.
    pub fn incremental(
        &self,
        source: &mut dyn MemorySource,
        base_seq: u64,
    ) -> Result<Self, CaptureError> {
        let t0 = Instant::now();
        let mut next = self.clone();
        let first = source
            .dirty_pages()?
            .ok_or_else(|| CaptureError::NoDirtyLog(source.describe()))?;
        let budget = next.plan.budget.clone();
        let mut read = next.update(source, &first, budget.as_deref())?;
        let p0 = Instant::now();
        source.pause()?;
        let r = (|| {
            let d = source
                .dirty_pages()?
                .ok_or_else(|| CaptureError::NoDirtyLog(source.describe()))?;
            next.update(source, &d, None)
        })();
        source.resume()?;
        read += r?;
        next.stats = CaptureStats {
            kind: CaptureKind::Incremental { base_seq },
            pages_read: read,
            pause: p0.elapsed(),
            duration: t0.elapsed(),
        };
        Ok(next)
    }

    /// Re-hash the planned pages in `dirty` and update the trees; returns pages read.
    fn update(
        &mut self,
        source: &dyn MemorySource,
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
        })
    }
}

fn rehash_dirty(
    source: &dyn MemorySource,
    plan: &Plan,
    pages: &[u64],
    digests: &mut [Digest],
    dirty: Option<&DirtyPages>,
) -> Result<u64, CaptureError> {
    let Some(dirty) = dirty else {
        // No dirty log: the only consistent choice is to re-hash everything while paused.
        let all = hash_pages_fixed(source, plan.hash, pages, None, &plan.fixups)?;
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
    let fresh = hash_pages_fixed(source, plan.hash, &which, None, &plan.fixups)?;
    for (i, d) in idx.into_iter().zip(fresh) {
        digests[i] = d;
    }
    Ok(which.len() as u64)
}

/// Per-page leaves of a previous capture, against which later captures report a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// SHA-256 of the policy text.
    #[serde(with = "serde_bytes")]
    pub policy_digest: Vec<u8>,
    /// Hash name.
    pub hash: String,
    /// Regions.
    pub regions: Vec<BaselineRegion>,
}

/// One region of a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineRegion {
    /// Region name.
    pub name: String,
    /// Concatenated 32-byte leaves.
    #[serde(with = "serde_bytes")]
    pub leaves: Vec<u8>,
}

impl BaselineRegion {
    /// The leaves.
    pub fn leaves(&self) -> Vec<Digest> {
        self.leaves
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok())
            .collect()
    }
}

impl Baseline {
    /// The verifier's active baseline as `GET /v1/vms/{vm}/baseline` serves it (region names and
    /// hex leaves), checked like a decoded file.
    pub fn from_verifier(b: &vmseal_client::ActiveBaseline) -> Result<Self, CaptureError> {
        let bad = |w: &str| CaptureError::Baseline(format!("the verifier's baseline: {w}"));
        let regions = b
            .regions
            .iter()
            .map(|r| {
                Ok(BaselineRegion {
                    name: r.name.clone(),
                    leaves: hex::decode(&r.leaves).map_err(|_| bad("leaves are not hex"))?,
                })
            })
            .collect::<Result<Vec<_>, CaptureError>>()?;
        let policy_digest = match &b.policy_digest {
            Some(h) => hex::decode(h).map_err(|_| bad("policy digest is not hex"))?,
            None => Vec::new(),
        };
        // Through the decoder, which checks the leaves are whole digests.
        Self::from_bytes(
            &Self {
                policy_digest,
                hash: b.hash_alg.clone(),
                regions,
            }
            .to_bytes(),
        )
    }

    /// Encode as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Decode from CBOR.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CaptureError> {
        let v: Self = ciborium::de::from_reader_with_recursion_limit(b, 8)
            .map_err(|e| CaptureError::Baseline(e.to_string()))?;
        if v.regions.iter().any(|r| r.leaves.len() % 32 != 0) {
            return Err(CaptureError::Baseline(
                "leaf data is not a whole number of 32-byte digests".into(),
            ));
        }
        Ok(v)
    }
}
