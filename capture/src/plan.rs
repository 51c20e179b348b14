//! The plan of a capture: the pages a policy selects in one guest, for one nonce.
//!
//! Each region's selector resolves to pages by its own function ([`gpa`], [`gva`], [`section`],
//! [`symbol`], [`mapping`]); virtual ranges are translated page by page through the source's MMU
//! view; a sampled region then keeps the pages the verifier's nonce picks
//! ([`vmseal_policy::sample_indices`], the same function the verifier uses).

use std::collections::HashMap;

use vmseal_sealer::claims::{GpaRange, PolicyRef};
use vmseal_sealer::merkle::HashAlg;

use crate::CaptureError;
use crate::hash::Budget;
use crate::kaslr::{KernelRelocs, Sections};
use crate::policy::{Policy, RegionPolicy, Sampling, Selector, SymbolMap};
use crate::source::{GuestMemory, PAGE};

pub(crate) fn plan_err(region: &str, reason: impl Into<String>) -> CaptureError {
    CaptureError::Plan {
        region: region.to_owned(),
        reason: reason.into(),
    }
}

/// What selectors resolve against besides the source: the symbol map and the ELF sections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookup<'a> {
    /// The guest's symbols (`symbol` selectors).
    pub symbols: Option<&'a SymbolMap>,
    /// The ELF file's sections (`section` selectors).
    pub sections: Option<&'a Sections>,
}

/// The pages of one region before sampling: page frame numbers, and the guest-virtual address of
/// each for virtual selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Guest page frame numbers.
    pub pfns: Vec<u64>,
    /// Guest-virtual address of each page (virtual selectors only).
    pub gvas: Option<Vec<u64>>,
}

/// `gpa`: a guest-physical range, whole pages.
pub fn gpa(start: u64, len: u64) -> Resolved {
    Resolved {
        pfns: (start / PAGE..(start + len) / PAGE).collect(),
        gvas: None,
    }
}

/// `gva`: a guest-virtual range, widened to pages and translated.
pub fn gva(
    region: &str,
    source: &dyn GuestMemory,
    start: u64,
    len: u64,
) -> Result<Resolved, CaptureError> {
    let end = start
        .checked_add(len)
        .ok_or_else(|| plan_err(region, "range overflows"))?;
    virtual_range(region, source, start, end)
}

/// `section`: an ELF section of the policy's `elf` file (or the kernel's vmlinux).
pub fn section(
    region: &str,
    source: &dyn GuestMemory,
    sections: Option<&Sections>,
    name: &str,
) -> Result<Resolved, CaptureError> {
    let secs = sections.ok_or_else(|| {
        plan_err(
            region,
            "selects an ELF section, but no ELF file was loaded (policy `elf` or `kernel`)",
        )
    })?;
    let (a, n) = secs
        .get(name)
        .ok_or_else(|| plan_err(region, format!("section {name:?} is not in the ELF file")))?;
    let end = a
        .checked_add(n)
        .ok_or_else(|| plan_err(region, "section range overflows"))?;
    virtual_range(region, source, a, end)
}

/// `symbol`: from a symbol to an end symbol or for a length.
pub fn symbol(
    region: &str,
    source: &dyn GuestMemory,
    symbols: Option<&SymbolMap>,
    start: &str,
    end: Option<&str>,
    len: Option<u64>,
) -> Result<Resolved, CaptureError> {
    let map = symbols.ok_or_else(|| {
        plan_err(
            region,
            "selects by symbol, but no symbol map was given (policy `symbols = \"System.map\"` or --symbols)",
        )
    })?;
    let find = |sym: &str| {
        map.get(sym)
            .ok_or_else(|| plan_err(region, format!("symbol {sym:?} is not in the symbol map")))
    };
    let s = find(start)?;
    let e = match (end, len) {
        (Some(e), _) => find(e)?,
        (None, Some(l)) => s
            .checked_add(l)
            .ok_or_else(|| plan_err(region, "range overflows"))?,
        (None, None) => return Err(plan_err(region, "needs `end_symbol` or `len`")),
    };
    virtual_range(region, source, s, e)
}

/// `mapping`: a process's mappings of a path with given permissions, page by page.
pub fn mapping(
    region: &str,
    source: &dyn GuestMemory,
    path: &str,
    perms: &str,
) -> Result<Resolved, CaptureError> {
    let found: Vec<_> = source
        .mappings()
        .into_iter()
        .filter(|m| m.path == path && m.perms.get(..3) == Some(perms))
        .collect();
    if found.is_empty() {
        return Err(plan_err(
            region,
            format!("{} has no {perms} mapping of {path:?}", source.describe()),
        ));
    }
    let vas: Vec<u64> = found
        .iter()
        .flat_map(|m| (m.start / PAGE..(m.start + m.len).div_ceil(PAGE)).map(|v| v * PAGE))
        .collect();
    translate(source, vas)
}

/// The pages of the virtual range [`start`, `end`), translated.
fn virtual_range(
    region: &str,
    source: &dyn GuestMemory,
    start: u64,
    end: u64,
) -> Result<Resolved, CaptureError> {
    if end <= start {
        return Err(plan_err(
            region,
            format!("end {end:#x} is not after start {start:#x}"),
        ));
    }
    translate(
        source,
        (start / PAGE..end.div_ceil(PAGE))
            .map(|vpn| vpn * PAGE)
            .collect(),
    )
}

fn translate(source: &dyn GuestMemory, vas: Vec<u64>) -> Result<Resolved, CaptureError> {
    let pfns = vas
        .iter()
        .map(|&va| source.virt_to_phys(va).map(|pa| pa / PAGE))
        .collect::<Result<_, _>>()?;
    Ok(Resolved {
        pfns,
        gvas: Some(vas),
    })
}

/// Resolve one region's selector to its pages (before sampling).
pub fn resolve(
    rp: &RegionPolicy,
    source: &dyn GuestMemory,
    lookup: Lookup<'_>,
) -> Result<Resolved, CaptureError> {
    let name = rp.name.as_str();
    match &rp.selector {
        Selector::Gpa { start, len } => Ok(gpa(*start, *len)),
        Selector::Gva { start, len } => gva(name, source, *start, *len),
        Selector::Section { name: sec } => section(name, source, lookup.sections, sec),
        Selector::Symbol { start, end, len } => {
            symbol(name, source, lookup.symbols, start, end.as_deref(), *len)
        }
        Selector::Mapping { path, perms } => mapping(name, source, path, perms),
    }
}

/// Keep the pages of a sampled region that the verifier's nonce picks.
fn sample(rp: &RegionPolicy, r: Resolved, nonce: Option<&[u8]>) -> Result<Resolved, CaptureError> {
    let Sampling::Pages(k) = rp.sampling else {
        return Ok(r);
    };
    let nonce = nonce.ok_or_else(|| {
        plan_err(
            &rp.name,
            "samples pages by the verifier's nonce; give --nonce",
        )
    })?;
    let idx = vmseal_policy::sample_indices(nonce, &rp.name, r.pfns.len(), k as usize);
    Ok(Resolved {
        pfns: idx.iter().map(|&i| r.pfns[i]).collect(),
        gvas: r.gvas.map(|g| idx.iter().map(|&i| g[i]).collect()),
    })
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
    pub(crate) relocs: std::sync::Arc<KernelRelocs>,
    pub(crate) gva: u64,
    pub(crate) slide: u64,
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
    pub(crate) index: HashMap<u64, Vec<(usize, usize)>>,
    /// Pages transformed before hashing (KASLR undo).
    pub(crate) fixups: HashMap<u64, Fixup>,
    /// The kernel objects walked inside the pause (the policy's `[kernel_objects]`).
    pub kernel: Option<std::sync::Arc<crate::kernel::KernelWalk>>,
}

/// A bandwidth budget for page hashing (a token bucket in bytes per second), so capture never
impl Plan {
    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&PlannedRegion> {
        self.regions.iter().find(|r| r.policy.name == name)
    }

    /// Where the page at guest-physical `gpa` stands among `region`'s pages: its leaf in the
    /// region's tree (and its index in a delta), if the region has it.
    pub fn leaf_of(&self, region: &str, gpa: u64) -> Option<usize> {
        self.region(region)?
            .pfns
            .iter()
            .position(|&pfn| pfn == gpa / crate::source::PAGE)
    }

    /// Resolve `policy` against `source` (RAM layout, address translation) and `symbols`. A
    /// policy with `[kernel_objects]` is refused: only a plan that knows the kernel's layout walks
    /// them (`KernelContext::plan` for a QEMU guest, the shim for the kernel it runs in).
    pub fn new(
        policy: &Policy,
        source: &dyn GuestMemory,
        symbols: Option<&SymbolMap>,
        nonce: Option<&[u8]>,
    ) -> Result<Self, CaptureError> {
        if policy.kernel_objects.is_some() {
            return Err(plan_err(
                "kernel_objects",
                format!(
                    "{} has no Linux kernel objects to walk: a QEMU guest (vmseal-host, with the \
                     policy's `kernel`) or the running kernel inside a guest (vmseal-shim, source \
                     `kernel`) has",
                    source.describe()
                ),
            ));
        }
        Self::resolve(
            policy,
            source,
            Lookup {
                symbols,
                sections: None,
            },
            nonce,
        )
    }

    /// Resolve every region of `policy`: its selector ([`resolve`]), a check that every page is
    /// guest RAM, then sampling by `nonce`.
    pub fn resolve(
        policy: &Policy,
        source: &dyn GuestMemory,
        lookup: Lookup<'_>,
        nonce: Option<&[u8]>,
    ) -> Result<Self, CaptureError> {
        let ram = source.ram();
        let in_ram = |pfn: u64| {
            ram.iter()
                .any(|&(s, l)| pfn * PAGE >= s && (pfn + 1) * PAGE <= s + l)
        };
        let mut regions = Vec::with_capacity(policy.regions.len());
        for rp in &policy.regions {
            let r = resolve(rp, source, lookup)?;
            if let Some(&bad) = r.pfns.iter().find(|&&p| !in_ram(p)) {
                return Err(plan_err(
                    &rp.name,
                    format!("page {:#x} is outside guest RAM {ram:x?}", bad * PAGE),
                ));
            }
            let Resolved { pfns, gvas } = sample(rp, r, nonce)?;
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
            kernel: None,
        })
    }

    /// Undo the kernel's KASLR relocations in the regions whose policy says `kaslr = "undo"`: the
    /// slide is the running kernel's `_text` (from `symbols`) minus the link-time `_text`.
    pub fn undo_kaslr(
        &mut self,
        relocs: std::sync::Arc<KernelRelocs>,
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
