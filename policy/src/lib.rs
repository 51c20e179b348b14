//! The capture policy: which guest memory regions to capture, how to classify them and how to hash
//! them. TOML, documented in `docs/policy.md`; every error names the line and column.
//!
//! ```toml
//! name = "micro-vm"
//! version = 1
//! hash = "sha256"                 # or "blake3"
//! symbols = "guest.map"           # optional System.map for `symbol` selectors
//!
//! [[region]]
//! name = "guest-code"
//! class = "code"                  # code | rodata | data | structure
//! severity = "critical"           # low | medium | high | critical
//! gpa = { start = 0x1000, len = 0x2000 }
//!
//! [[region]]
//! name = "handlers"
//! class = "code"
//! severity = "high"
//! symbol = "handler_0"            # from the symbol map; with `end_symbol`, the range between
//! end_symbol = "handlers_end"
//!
//! [[region]]
//! name = "heap"
//! class = "data"
//! severity = "low"
//! gpa = { start = 0x100000, len = 0x400000 }
//! sample = 16                     # 16 pages chosen by a PRF keyed with the verifier's nonce
//!
//! [[region]]                        # inside a guest (vmseal-shim), of a process's memory:
//! name = "sshd-code"
//! class = "code"
//! severity = "critical"
//! mapping = "/usr/sbin/sshd"        # its mappings of this file (or "[heap]", "[stack]" …)
//! perms = "r-x"                     # with these permissions (default r-x)
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use vmseal_sealer::claims::{RegionClass, Severity};
use vmseal_sealer::merkle::HashAlg;

/// The page size every policy range is measured in.
pub const PAGE: u64 = 4096;

/// Whether `name` can name a region: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Largest policy file accepted.
pub const MAX_POLICY_LEN: usize = 1 << 20;

/// A policy error, with its position in the text when it has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}{message}", location.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
pub struct PolicyError {
    /// 1-based line and column.
    pub location: Option<(usize, usize)>,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

fn err_at(text: &str, span: Range<usize>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        location: Some(line_col(text, span.start)),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: toml::Spanned<String>,
    version: u64,
    #[serde(default)]
    hash: Option<toml::Spanned<String>>,
    #[serde(default)]
    symbols: Option<String>,
    #[serde(default)]
    interval_secs: Option<u64>,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    elf: Option<String>,
    #[serde(default, rename = "region")]
    regions: Vec<toml::Spanned<RawRegion>>,
    #[serde(default)]
    kernel_objects: Option<toml::Spanned<RawKernelObjects>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernelObjects {
    #[serde(default)]
    severity: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: u64,
    len: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: toml::Spanned<String>,
    class: toml::Spanned<String>,
    severity: toml::Spanned<String>,
    #[serde(default)]
    gpa: Option<toml::Spanned<RawRange>>,
    #[serde(default)]
    gva: Option<toml::Spanned<RawRange>>,
    #[serde(default)]
    section: Option<toml::Spanned<String>>,
    #[serde(default)]
    symbol: Option<toml::Spanned<String>>,
    #[serde(default)]
    end_symbol: Option<toml::Spanned<String>>,
    #[serde(default)]
    mapping: Option<toml::Spanned<String>>,
    #[serde(default)]
    perms: Option<toml::Spanned<String>>,
    #[serde(default)]
    len: Option<u64>,
    #[serde(default)]
    sample: Option<toml::Spanned<u64>>,
    #[serde(default)]
    kaslr: Option<toml::Spanned<String>>,
}

/// How a region's memory is located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A guest-physical range.
    Gpa {
        /// Start (page-aligned).
        start: u64,
        /// Length (whole pages).
        len: u64,
    },
    /// A guest-virtual range, widened to whole pages.
    Gva {
        /// Start.
        start: u64,
        /// Length.
        len: u64,
    },
    /// An ELF section of the policy's `elf` file (or of the kernel's vmlinux), widened to pages.
    Section {
        /// Section name, e.g. ".rodata".
        name: String,
    },
    /// From a symbol to `end` (another symbol) or for `len` bytes, page-aligned outward.
    Symbol {
        /// Start symbol.
        start: String,
        /// End symbol, exclusive.
        end: Option<String>,
        /// Length, when no end symbol.
        len: Option<u64>,
    },
    /// A process's mappings of a file (or of `[heap]`, `[stack]` …) with given permissions: the
    /// sources that capture a process from inside its guest (`vmseal-shim`) list them.
    Mapping {
        /// The mapped path, as /proc/PID/maps shows it.
        path: String,
        /// Permissions, `r-x` style (the private/shared flag is not compared).
        perms: String,
    },
}

/// Which pages of a region are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Every page.
    All,
    /// `k` distinct pages chosen by HMAC-SHA256 keyed with the verifier's nonce.
    Pages(u64),
}

/// One region of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPolicy {
    /// Name, unique in the policy.
    pub name: String,
    /// Class.
    pub class: RegionClass,
    /// Severity.
    pub severity: Severity,
    /// Where it is.
    pub selector: Selector,
    /// Which pages.
    pub sampling: Sampling,
    /// Undo the kernel's KASLR relocations in these pages before hashing.
    pub kaslr_undo: bool,
}

/// A kind of difference the verifier finds between a snapshot's kernel objects and its golden
/// state (`[kernel_objects]` in the policy; `docs/kernel-objects.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelFindingKind {
    /// A process the pid namespace knows that is not on the task list.
    HiddenProcess,
    /// A module in the module kset that is not on the module list.
    HiddenModule,
    /// A system-call table entry that differs from the golden state's (after the KASLR slide).
    HookedSyscall,
    /// An interrupt gate that differs from the golden state's (after the KASLR slide).
    HookedGate,
    /// A walk of the kernel's structures that did not finish (a list that loops, a pointer out
    /// of the kernel): tampered or corrupt; or evidence under a `[kernel_objects]` policy that
    /// carries none.
    WalkFailed,
    /// The kernel's build differs from the golden state's: its tables cannot be compared
    /// (promote a golden state for the new kernel).
    KernelChanged,
    /// A process running as root (euid 0) that is not a kernel thread and was not in the golden
    /// state, or a golden process that became root.
    NewRootProcess,
    /// A module not in the golden state.
    NewModule,
    /// A process not in the golden state.
    NewProcess,
}

impl KernelFindingKind {
    /// Every kind, most severe by default first.
    pub const ALL: [Self; 9] = [
        Self::HiddenProcess,
        Self::HiddenModule,
        Self::HookedSyscall,
        Self::HookedGate,
        Self::WalkFailed,
        Self::KernelChanged,
        Self::NewRootProcess,
        Self::NewModule,
        Self::NewProcess,
    ];

    /// Stable name (as the policy, the API and alerts spell it).
    pub fn name(self) -> &'static str {
        match self {
            Self::HiddenProcess => "hidden_process",
            Self::HiddenModule => "hidden_module",
            Self::HookedSyscall => "hooked_syscall",
            Self::HookedGate => "hooked_gate",
            Self::WalkFailed => "walk_failed",
            Self::KernelChanged => "kernel_changed",
            Self::NewRootProcess => "new_root_process",
            Self::NewModule => "new_module",
            Self::NewProcess => "new_process",
        }
    }

    /// Parse a stable name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Its severity unless the policy says otherwise: hidden objects and hooks are critical, a
    /// walk that did not finish, another kernel build and a new root process high, a new module medium, a new process
    /// low.
    pub fn default_severity(self) -> Severity {
        match self {
            Self::HiddenProcess | Self::HiddenModule | Self::HookedSyscall | Self::HookedGate => {
                Severity::Critical
            }
            Self::WalkFailed | Self::KernelChanged | Self::NewRootProcess => Severity::High,
            Self::NewModule => Severity::Medium,
            Self::NewProcess => Severity::Low,
        }
    }
}

/// The policy's `[kernel_objects]`: the capture walks the guest kernel's processes, modules,
/// interrupt gates and system-call table inside its pause (the structures' layout from the
/// kernel's BTF: on a host, in the policy's `kernel`; inside a guest, its own; where they are
/// from the symbols); the verifier diffs them against the golden
/// state with these severities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelObjectsPolicy {
    /// Severities that differ from each kind's default.
    pub severity: BTreeMap<KernelFindingKind, Severity>,
    /// Process (`comm`) and module names whose appearance is not a finding (`new_process`,
    /// `new_module`, `new_root_process` only: a hidden or hooked object is always one).
    pub allow: Vec<String>,
}

impl KernelObjectsPolicy {
    /// The severity of a finding of `kind`.
    pub fn severity(&self, kind: KernelFindingKind) -> Severity {
        self.severity
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_severity())
    }

    /// Whether `name` is allow-listed.
    pub fn allows(&self, name: &str) -> bool {
        self.allow.iter().any(|a| a == name)
    }
}

/// A parsed policy, with the digest of its exact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Page and tree hash.
    pub hash: HashAlg,
    /// System.map path for symbol selectors, relative to the policy file.
    pub symbols: Option<String>,
    /// Capture interval for `vmseal-host run`.
    pub interval_secs: Option<u64>,
    /// The kernel image (bzImage) whose relocation table `kaslr = "undo"` regions use, relative
    /// to the policy file.
    pub kernel: Option<String>,
    /// An ELF file whose sections `section` selectors name (default: the kernel's vmlinux).
    pub elf: Option<String>,
    /// Regions, in order.
    pub regions: Vec<RegionPolicy>,
    /// Kernel objects to walk and how to appraise them, when the policy has `[kernel_objects]`.
    pub kernel_objects: Option<KernelObjectsPolicy>,
    /// SHA-256 of the exact policy text.
    pub digest: [u8; 32],
}

impl Policy {
    /// Parse policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError {
                location: None,
                message: format!("policy is {} bytes; the limit is 1 MiB", text.len()),
            });
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_owned();
            match e.span() {
                Some(s) => err_at(text, s, format!("{msg} (see docs/policy.md)")),
                None => PolicyError {
                    location: None,
                    message: msg,
                },
            }
        })?;
        let hash = match &raw.hash {
            None => HashAlg::Sha256,
            Some(h) => HashAlg::from_name(h.get_ref()).ok_or_else(|| {
                err_at(
                    text,
                    h.span(),
                    format!(
                        "unknown hash {:?}: use \"sha256\" or \"blake3\"",
                        h.get_ref()
                    ),
                )
            })?,
        };
        if raw.name.get_ref().is_empty() {
            return Err(err_at(
                text,
                raw.name.span(),
                "the policy name must not be empty",
            ));
        }
        if raw.regions.is_empty() {
            return Err(PolicyError {
                location: None,
                message: "the policy has no [[region]]; add at least one".into(),
            });
        }
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        let mut regions = Vec::new();
        for r in &raw.regions {
            let span = r.span();
            let r = r.get_ref();
            let name = r.name.get_ref().clone();
            if !valid_region_name(&name) {
                return Err(err_at(
                    text,
                    r.name.span(),
                    format!("region name {name:?} must be 1-64 characters of [A-Za-z0-9._-]"),
                ));
            }
            if let Some(prev) = seen.insert(name.clone(), r.name.span()) {
                let (l, _) = line_col(text, prev.start);
                return Err(err_at(
                    text,
                    r.name.span(),
                    format!("region {name:?} is already defined on line {l}"),
                ));
            }
            let class = RegionClass::from_name(r.class.get_ref()).ok_or_else(|| {
                err_at(
                    text,
                    r.class.span(),
                    format!(
                        "unknown class {:?}: use code, rodata, data or structure",
                        r.class.get_ref()
                    ),
                )
            })?;
            let severity = Severity::from_name(r.severity.get_ref()).ok_or_else(|| {
                err_at(
                    text,
                    r.severity.span(),
                    format!(
                        "unknown severity {:?}: use low, medium, high or critical",
                        r.severity.get_ref()
                    ),
                )
            })?;
            let given = [
                r.gpa.is_some(),
                r.gva.is_some(),
                r.symbol.is_some(),
                r.section.is_some(),
                r.mapping.is_some(),
            ];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err(err_at(
                    text,
                    span,
                    format!(
                        "region {name:?}: give exactly one selector of `gpa`, `gva`, `symbol`, `section` or `mapping`"
                    ),
                ));
            }
            if let Some(p) = &r.perms {
                let ok = r.mapping.is_some()
                    && p.get_ref().len() == 3
                    && p.get_ref()
                        .chars()
                        .zip(['r', 'w', 'x'])
                        .all(|(c, want)| c == want || c == '-');
                if !ok {
                    return Err(err_at(
                        text,
                        p.span(),
                        "`perms` goes with `mapping` and reads like \"r-x\" or \"rw-\"",
                    ));
                }
            }
            if (r.end_symbol.is_some() || r.len.is_some()) && r.symbol.is_none() {
                return Err(err_at(
                    text,
                    span,
                    "`end_symbol` and `len` go with `symbol`",
                ));
            }
            let range = |g: &toml::Spanned<RawRange>,
                         what: &str|
             -> Result<(u64, u64), PolicyError> {
                let gr = g.get_ref();
                if !gr.start.is_multiple_of(PAGE) || !gr.len.is_multiple_of(PAGE) || gr.len == 0 {
                    return Err(err_at(
                        text,
                        g.span(),
                        format!(
                            "{what} range {:#x}+{:#x} must start on a 4 KiB page and cover whole pages (len > 0)",
                            gr.start, gr.len
                        ),
                    ));
                }
                if gr.start.checked_add(gr.len).is_none() {
                    return Err(err_at(text, g.span(), format!("{what} range overflows")));
                }
                Ok((gr.start, gr.len))
            };
            let selector = if let Some(g) = &r.gpa {
                let (start, len) = range(g, "gpa")?;
                Selector::Gpa { start, len }
            } else if let Some(g) = &r.gva {
                let (start, len) = range(g, "gva")?;
                Selector::Gva { start, len }
            } else if let Some(sec) = &r.section {
                if raw.elf.is_none() && raw.kernel.is_none() {
                    return Err(err_at(
                        text,
                        sec.span(),
                        "a `section` selector needs `elf = \"file\"` or `kernel = \"vmlinuz\"` at the top of the policy",
                    ));
                }
                Selector::Section {
                    name: sec.get_ref().clone(),
                }
            } else if let Some(sym) = &r.symbol {
                if r.end_symbol.is_some() == r.len.is_some() {
                    return Err(err_at(
                        text,
                        sym.span(),
                        "a `symbol` region needs exactly one of `end_symbol` or `len`",
                    ));
                }
                Selector::Symbol {
                    start: sym.get_ref().clone(),
                    end: r.end_symbol.as_ref().map(|e| e.get_ref().clone()),
                    len: r.len,
                }
            } else if let Some(m) = &r.mapping {
                Selector::Mapping {
                    path: m.get_ref().clone(),
                    perms: r
                        .perms
                        .as_ref()
                        .map_or_else(|| "r-x".to_owned(), |p| p.get_ref().clone()),
                }
            } else {
                return Err(err_at(
                    text,
                    span,
                    format!(
                        "region {name:?} needs a selector: `gpa = {{ start = …, len = … }}`, `gva = {{ … }}`, `symbol = \"…\"`, `section = \"…\"` or `mapping = \"…\"`"
                    ),
                ));
            };
            let sampling = match &r.sample {
                None => Sampling::All,
                Some(k) if *k.get_ref() == 0 => {
                    return Err(err_at(
                        text,
                        k.span(),
                        "`sample` must be at least 1 page (omit it to capture every page)",
                    ));
                }
                Some(k) => Sampling::Pages(*k.get_ref()),
            };
            let kaslr_undo = match &r.kaslr {
                None => false,
                Some(k) if k.get_ref() == "undo" => {
                    if !matches!(
                        selector,
                        Selector::Symbol { .. } | Selector::Gva { .. } | Selector::Section { .. }
                    ) {
                        return Err(err_at(
                            text,
                            k.span(),
                            "`kaslr = \"undo\"` needs a kernel-virtual selector: `symbol`, `gva` or `section`",
                        ));
                    }
                    if raw.kernel.is_none() {
                        return Err(err_at(
                            text,
                            k.span(),
                            "`kaslr = \"undo\"` needs the kernel image: add `kernel = \"vmlinuz\"` at the top of the policy",
                        ));
                    }
                    true
                }
                Some(k) => {
                    return Err(err_at(
                        text,
                        k.span(),
                        format!(
                            "unknown kaslr mode {:?}: the only mode is \"undo\"",
                            k.get_ref()
                        ),
                    ));
                }
            };
            regions.push(RegionPolicy {
                name,
                class,
                severity,
                selector,
                sampling,
                kaslr_undo,
            });
        }
        let kernel_objects = match &raw.kernel_objects {
            None => None,
            Some(k) => {
                let mut severity = BTreeMap::new();
                for (name, sev) in &k.get_ref().severity {
                    let kind = KernelFindingKind::from_name(name).ok_or_else(|| {
                        err_at(
                            text,
                            sev.span(),
                            format!(
                                "unknown kernel finding {name:?}: use {}",
                                KernelFindingKind::ALL
                                    .map(KernelFindingKind::name)
                                    .join(", ")
                            ),
                        )
                    })?;
                    let s = Severity::from_name(sev.get_ref()).ok_or_else(|| {
                        err_at(
                            text,
                            sev.span(),
                            format!(
                                "unknown severity {:?}: use low, medium, high or critical",
                                sev.get_ref()
                            ),
                        )
                    })?;
                    severity.insert(kind, s);
                }
                Some(KernelObjectsPolicy {
                    severity,
                    allow: k.get_ref().allow.clone(),
                })
            }
        };
        Ok(Self {
            name: raw.name.into_inner(),
            version: raw.version,
            hash,
            symbols: raw.symbols,
            interval_secs: raw.interval_secs,
            kernel: raw.kernel,
            elf: raw.elf,
            regions,
            kernel_objects,
            digest: HashAlg::Sha256.hash(&[text.as_bytes()]),
        })
    }
}

/// A symbol table (System.map format: `address type name` per line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolMap {
    symbols: BTreeMap<String, u64>,
}

impl SymbolMap {
    /// Parse System.map text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut symbols = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(_kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(PolicyError {
                    location: Some((i + 1, 1)),
                    message: "expected `address type name`".into(),
                });
            };
            let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).map_err(|_| {
                PolicyError {
                    location: Some((i + 1, 1)),
                    message: format!("{addr:?} is not a hexadecimal address"),
                }
            })?;
            symbols.entry(name.to_owned()).or_insert(addr);
        }
        Ok(Self { symbols })
    }

    /// Look a symbol up.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// The lowest address of a symbol above `addr` (where the object at `addr` ends at the
    /// latest, e.g. the system-call table).
    pub fn next_after(&self, addr: u64) -> Option<u64> {
        self.symbols.values().copied().filter(|&a| a > addr).min()
    }

    /// Add a symbol.
    pub fn insert(&mut self, name: &str, addr: u64) {
        self.symbols.insert(name.to_owned(), addr);
    }

    /// Render in System.map format.
    pub fn render(&self) -> String {
        let mut v: Vec<_> = self.symbols.iter().collect();
        v.sort_by_key(|(_, a)| **a);
        v.iter().map(|(n, a)| format!("{a:016x} T {n}\n")).collect()
    }
}

/// The page positions a region sampled with `sample = k` must hold: `k` of its `n` pages chosen
/// by HMAC-SHA256(nonce, region ‖ 0 ‖ counter), ascending (every page when `k >= n`).
///
/// The host captures exactly these pages; the verifier recomputes them from the nonce it issued
/// and refuses evidence that sampled any other, so the host cannot choose which pages are seen.
pub fn sample_indices(nonce: &[u8], region: &str, n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, nonce);
    let mut chosen = std::collections::BTreeSet::new();
    let mut counter = 0u64;
    while chosen.len() < k {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(region.as_bytes());
        ctx.update(&[0]);
        ctx.update(&counter.to_le_bytes());
        let tag = ctx.sign();
        let mut v = [0u8; 8];
        v.copy_from_slice(&tag.as_ref()[..8]);
        chosen.insert((u64::from_le_bytes(v) % n as u64) as usize);
        counter += 1;
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
version = 3
hash = "blake3"

[[region]]
name = "code"
class = "code"
severity = "critical"
gpa = { start = 0x1000, len = 0x2000 }

[[region]]
name = "heap"
class = "data"
severity = "low"
symbol = "heap_start"
len = 0x10000
sample = 4
"#;

    #[test]
    fn parses_a_good_policy() {
        let p = Policy::parse(GOOD).unwrap();
        assert_eq!(p.hash, HashAlg::Blake3);
        assert_eq!(p.regions.len(), 2);
        assert_eq!(
            p.regions[0].selector,
            Selector::Gpa {
                start: 0x1000,
                len: 0x2000
            }
        );
        assert_eq!(p.regions[1].sampling, Sampling::Pages(4));
        assert_eq!(p.digest, HashAlg::Sha256.hash(&[GOOD.as_bytes()]));
    }

    fn err(text: &str) -> PolicyError {
        Policy::parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_line_and_column_and_the_fix() {
        let e = err(&GOOD.replace("class = \"code\"", "class = \"kode\""));
        assert_eq!(e.location.map(|l| l.0), Some(8), "{e}");
        assert!(
            e.to_string()
                .contains("use code, rodata, data or structure"),
            "{e}"
        );

        let e = err(&GOOD.replace("0x2000", "0x2001"));
        assert_eq!(e.location.map(|l| l.0), Some(10), "{e}");
        assert!(e.to_string().contains("whole pages"), "{e}");

        let e = err(&GOOD.replace("name = \"heap\"", "name = \"code\""));
        assert!(e.to_string().contains("already defined on line 7"), "{e}");

        let e = err(&GOOD.replace("hash = \"blake3\"", "hash = \"md5\""));
        assert_eq!(e.location, Some((4, 8)), "{e}");

        let e = err(&GOOD.replace("severity = \"low\"", "severity = \"low\"\ncolour = 1"));
        assert!(
            e.location.is_some() && e.to_string().contains("colour"),
            "{e}"
        );

        let e = err(&GOOD.replace("len = 0x10000\n", ""));
        assert!(
            e.to_string()
                .contains("exactly one of `end_symbol` or `len`"),
            "{e}"
        );

        let e = err("name = \"x\"\nversion = 1\n");
        assert!(e.to_string().contains("no [[region]]"), "{e}");

        let e = err("name = \"x\"\nversion = [\n");
        assert!(e.location.is_some(), "{e}");
    }

    #[test]
    fn kernel_objects_take_severities_and_allowed_names() {
        let base = "name = \"k\"\nversion = 1\nkernel = \"vmlinuz\"\n[[region]]\nname = \"t\"\nclass = \"code\"\nseverity = \"high\"\ngpa = { start = 0, len = 0x1000 }\n";
        let p = Policy::parse(&format!("{base}[kernel_objects]\n")).unwrap();
        let k = p.kernel_objects.unwrap();
        assert_eq!(
            k.severity(KernelFindingKind::HiddenProcess),
            Severity::Critical
        );
        assert_eq!(k.severity(KernelFindingKind::NewProcess), Severity::Low);
        let p = Policy::parse(&format!(
            "{base}[kernel_objects]\nallow = [\"sshd\"]\nseverity = {{ new_process = \"medium\", hooked_gate = \"high\" }}\n"
        ))
        .unwrap();
        let k = p.kernel_objects.unwrap();
        assert_eq!(k.severity(KernelFindingKind::NewProcess), Severity::Medium);
        assert_eq!(k.severity(KernelFindingKind::HookedGate), Severity::High);
        assert!(k.allows("sshd") && !k.allows("sh"));
        assert!(Policy::parse(base).unwrap().kernel_objects.is_none());
        let e = err(&format!(
            "{base}[kernel_objects]\nseverity = {{ hidden_thing = \"low\" }}\n"
        ));
        assert!(
            e.to_string()
                .contains("unknown kernel finding \"hidden_thing\": use hidden_process"),
            "{e}"
        );
        assert!(e.location.is_some(), "{e}");
        let e = err(&format!(
            "{base}[kernel_objects]\nseverity = {{ new_process = \"dire\" }}\n"
        ));
        assert!(e.to_string().contains("unknown severity \"dire\""), "{e}");
        // Without `kernel`: the shim takes the layout from the running kernel's own BTF (the
        // host refuses it when it plans the capture).
        let p = Policy::parse(&format!(
            "{}[kernel_objects]\n",
            base.replace("kernel = \"vmlinuz\"\n", "")
        ))
        .unwrap();
        assert!(p.kernel_objects.is_some() && p.kernel.is_none());
        let e = err(&format!("{base}[kernel_objects]\nwalk = 1\n"));
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn kaslr_undo_needs_a_symbol_region_and_a_kernel() {
        let base = "name = \"k\"\nversion = 1\n[[region]]\nname = \"t\"\nclass = \"code\"\nseverity = \"high\"\n";
        let ok = format!(
            "kernel = \"vmlinuz\"\n{base}symbol = \"_stext\"\nend_symbol = \"_etext\"\nkaslr = \"undo\"\n"
        );
        let p = Policy::parse(&ok).unwrap();
        assert!(p.regions[0].kaslr_undo);
        assert_eq!(p.kernel.as_deref(), Some("vmlinuz"));
        let e = err(&ok.replace("kernel = \"vmlinuz\"\n", ""));
        assert!(e.to_string().contains("add `kernel = "), "{e}");
        let e = err(&ok.replace("kaslr = \"undo\"", "kaslr = \"redo\""));
        assert!(e.to_string().contains("the only mode is"), "{e}");
        let e = err(&format!(
            "kernel = \"v\"\n{base}gpa = {{ start = 0, len = 0x1000 }}\nkaslr = \"undo\"\n"
        ));
        assert!(
            e.to_string().contains("needs a kernel-virtual selector"),
            "{e}"
        );
    }

    #[test]
    fn gva_and_section_selectors() {
        let base = "name = \"k\"\nversion = 1\n[[region]]\nname = \"t\"\nclass = \"rodata\"\nseverity = \"high\"\n";
        let p = Policy::parse(&format!(
            "{base}gva = {{ start = 0xffffffff82000000, len = 0x2000 }}\n"
        ))
        .unwrap();
        assert_eq!(
            p.regions[0].selector,
            Selector::Gva {
                start: 0xffff_ffff_8200_0000,
                len: 0x2000
            }
        );
        let p =
            Policy::parse(&format!("elf = \"vmlinux\"\n{base}section = \".rodata\"\n")).unwrap();
        assert_eq!(
            p.regions[0].selector,
            Selector::Section {
                name: ".rodata".into()
            }
        );
        let e = err(&format!("{base}section = \".rodata\"\n"));
        assert!(e.to_string().contains("needs `elf = "), "{e}");
        let e = err(&format!(
            "{base}section = \".rodata\"\nsymbol = \"x\"\nlen = 1\n"
        ));
        assert!(e.to_string().contains("exactly one selector"), "{e}");
        let e = err(&format!("{base}gva = {{ start = 0x10, len = 0x1000 }}\n"));
        assert!(e.to_string().contains("gva range"), "{e}");
    }

    #[test]
    fn mapping_selectors_name_a_file_and_permissions() {
        let base = "name = \"p\"\nversion = 1\n[[region]]\nname = \"t\"\nclass = \"code\"\nseverity = \"high\"\n";
        let p = Policy::parse(&format!("{base}mapping = \"/usr/sbin/sshd\"\n")).unwrap();
        assert_eq!(
            p.regions[0].selector,
            Selector::Mapping {
                path: "/usr/sbin/sshd".into(),
                perms: "r-x".into()
            }
        );
        let p = Policy::parse(&format!("{base}mapping = \"[heap]\"\nperms = \"rw-\"\n")).unwrap();
        assert!(
            matches!(&p.regions[0].selector, Selector::Mapping { perms, .. } if perms == "rw-")
        );
        for (bad, why) in [
            ("mapping = \"x\"\nperms = \"rwxp\"\n", "reads like"),
            ("mapping = \"x\"\nperms = \"x--\"\n", "reads like"),
            (
                "gpa = { start = 0, len = 0x1000 }\nperms = \"r-x\"\n",
                "goes with `mapping`",
            ),
            (
                "mapping = \"x\"\nsymbol = \"y\"\nlen = 1\n",
                "exactly one selector",
            ),
        ] {
            let e = err(&format!("{base}{bad}"));
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn symbol_maps_parse_and_render() {
        let m = SymbolMap::parse("0000000000001000 T entry\nffffffff81000000 T _text\n").unwrap();
        assert_eq!(m.get("_text"), Some(0xffff_ffff_8100_0000));
        assert_eq!(SymbolMap::parse(&m.render()).unwrap(), m);
        assert!(SymbolMap::parse("zz T x").is_err());
        assert!(SymbolMap::parse("1000 T").is_err());
    }

    #[test]
    fn sampling_is_deterministic_per_nonce_and_distinct() {
        let a = sample_indices(b"nonce-1", "heap", 1000, 16);
        assert_eq!(a, sample_indices(b"nonce-1", "heap", 1000, 16));
        assert_ne!(a, sample_indices(b"nonce-2", "heap", 1000, 16));
        assert_ne!(a, sample_indices(b"nonce-1", "other", 1000, 16));
        assert_eq!(a.len(), 16);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_indices(b"n", "r", 5, 9), vec![0, 1, 2, 3, 4]);
    }
}
