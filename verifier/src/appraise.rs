//! Appraisal: what a publicly verified snapshot means for its VM.
//!
//! [`appraise`] runs, in order, the checks that need the verifier's state — the VM and host the
//! evidence claims, the pinned intermediate, freshness (nonce or timestamp window), sequence
//! continuity (gap, replay, reorder), the assigned policy and the baseline's policy, the allowed
//! capture modules — and then walks **the verifier's own list of regions** (the assigned policy's,
//! else the golden baseline's): a region the evidence leaves out, labels with another class or
//! severity, resizes, or (code and rodata) moves within one guest boot is a finding at the
//! verifier's class and severity, never at the evidence's. For every region the stored golden
//! baseline tree with the evidence's delta applied must recompute the signed region root, so a
//! change left out of the delta is caught, in O(k log n) node hashes for k changed pages; a
//! sampled region must hold exactly the pages the verifier's nonce selects. The findings, weighed
//! by class and severity, give a trust score 0–100, a tier, and an AR4SI trust vector.
//!
//! The evidence's description of itself is only ever checked, never trusted: a host whose
//! userspace is compromised can unseal its intermediate and sign any claims
//! (docs/threat-model.md), so everything it could lie about to look healthy is decided here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vmseal_client::ErrorCode;

use vmseal_policy::{Policy, Sampling};
use vmseal_sealer::claims::{GpaRange, Region, RegionClass, Severity};
use vmseal_sealer::merkle::{Digest, MerkleTree};
use vmseal_sealer::verify::VerifiedEvidence;

/// A point in a VM's evidence chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPoint {
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 of that evidence.
    pub digest: Digest,
}

/// Guest-physical ranges (`[start, len]` in bytes) of every fully captured region, by name.
pub type Layout = BTreeMap<String, Vec<[u64; 2]>>;

/// The ranges of a region as `[start, len]` pairs.
pub fn range_pairs(ranges: &[GpaRange]) -> Vec<[u64; 2]> {
    ranges.iter().map(|r| [r.start, r.len]).collect()
}

/// One entry of a VM's capture-module allow-list: `name version [build-digest-hex]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRule {
    /// Module name (`vmseal-host`, `vmseal-shim`).
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA-256 of the module's binary, when the rule pins a build.
    pub build_digest: Option<Digest>,
}

impl ModuleRule {
    /// Parse `name version [build-digest-hex]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut w = s.split_whitespace();
        let (Some(name), Some(version)) = (w.next(), w.next()) else {
            return Err(format!(
                "{s:?}: a module rule is `NAME VERSION [BUILD-SHA256]`, e.g. `vmseal-host 0.1.0`"
            ));
        };
        let build_digest = w
            .next()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| Digest::try_from(b.as_slice()).ok())
                    .ok_or_else(|| format!("{s:?}: the build digest must be 64 hex digits"))
            })
            .transpose()?;
        if w.next().is_some() {
            return Err(format!(
                "{s:?}: too many words; `NAME VERSION [BUILD-SHA256]`"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            version: version.to_owned(),
            build_digest,
        })
    }

    /// Whether the evidence's module is allowed by this rule.
    fn allows(&self, m: &vmseal_sealer::claims::ModuleInfo) -> bool {
        self.name == m.name
            && self.version == m.version
            && self.build_digest.is_none_or(|d| d == m.build_digest)
    }
}

impl std::fmt::Display for ModuleRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)?;
        if let Some(d) = &self.build_digest {
            write!(f, " {}", hex::encode(d))?;
        }
        Ok(())
    }
}

/// What the verifier knows about a VM.
#[derive(Debug, Clone, Default)]
pub struct VmRecord {
    /// VM id.
    pub vm_id: String,
    /// Host the VM belongs to.
    pub host_id: String,
    /// SHA-256 of the host's enrolled (pinned) intermediate certificate.
    pub intermediate_digest: Digest,
    /// Digest of the policy assigned to the VM, if one is.
    pub policy_digest: Option<Digest>,
    /// The assigned policy, parsed from the text the verifier stores (absent for a policy
    /// assigned by digest only, before the verifier kept texts).
    pub policy: Option<Arc<Policy>>,
    /// Allowed capture modules; empty allows any.
    pub allowed_modules: Vec<ModuleRule>,
    /// The last appraised evidence.
    pub last: Option<ChainPoint>,
    /// Where the chain starts when there is no last evidence: 0, or where an admin's reset said.
    pub chain_start: u64,
    /// Score below which an appraisal raises an alert.
    pub threshold: u8,
    /// Whether the host's enrolled SNP anchor was the INSECURE stand-in (accepted by config).
    pub insecure_anchor: bool,
    /// Whether the host enrolled with a hardware anchor (a TPM or SNP root is recorded): without
    /// one, nothing vouches for its hardware.
    pub anchored: bool,
    /// What the hardware policy checked of the host's anchors at enrollment.
    pub hardware_checked: Vec<String>,
    /// The last hardware re-appraisal's verdict, when it was not "ok".
    pub hardware_problem: Option<String>,
    /// The active (newest) golden baseline version, if any.
    pub baseline_version: Option<u64>,
    /// Tier of the last accepted appraisal.
    pub last_tier: Option<String>,
    /// The VM's unresolved below-threshold alert, if any.
    pub threshold_alert: Option<i64>,
    /// Changes each time the VM id is registered (after a removal): what is cached of a VM is
    /// keyed by it.
    pub incarnation: i64,
    /// The guest boot of the last accepted snapshot (empty when that evidence named none);
    /// `None` before the first.
    pub boot: Option<Vec<u8>>,
    /// The ranges first seen in that boot.
    pub layout: Layout,
}

/// One region of a golden baseline.
#[derive(Debug, Clone)]
pub struct BaselineRegion {
    /// Name.
    pub name: String,
    /// Class.
    pub class: RegionClass,
    /// Severity.
    pub severity: Severity,
    /// The page-hash tree.
    pub tree: MerkleTree,
    /// The guest-physical ranges of the snapshot it was promoted from (`[start, len]`); absent
    /// for baselines promoted before the verifier kept them.
    pub ranges: Option<Vec<[u64; 2]>>,
}

/// A golden baseline.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Version (baselines are never overwritten).
    pub version: u64,
    /// The policy its snapshot was captured under; absent for baselines promoted before the
    /// verifier kept it (evidence cannot be appraised against those: promote again).
    pub policy_digest: Option<Digest>,
    /// Regions.
    pub regions: Vec<BaselineRegion>,
    /// The golden kernel objects, when its snapshot carried them.
    pub kernel: Option<vmseal_sealer::claims::KernelObjects>,
}

/// The caller's freshness findings and limits.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// The time of appraisal, Unix seconds.
    pub now: i64,
    /// Evidence without a nonce must be at most this old (seconds).
    pub max_age: i64,
    /// Tolerated clock skew into the future (seconds).
    pub skew: i64,
    /// When the evidence carries a nonce: whether the caller found it issued, unexpired and
    /// unused, and consumed it.
    pub nonce_accepted: bool,
}

/// Why an appraisal refused the evidence. Each variant has a stable code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppraisalError {
    /// The evidence is for another VM.
    #[error("evidence is for VM {got:?}, not {want:?}")]
    WrongVm {
        /// Claimed.
        got: String,
        /// Expected.
        want: String,
    },
    /// The evidence comes from another host than the VM's.
    #[error("evidence for VM {vm:?} comes from host {got:?}, but the VM belongs to host {want:?}")]
    WrongHost {
        /// VM.
        vm: String,
        /// Claimed host.
        got: String,
        /// Registered host.
        want: String,
    },
    /// Not signed under the host's enrolled intermediate.
    #[error("evidence is not signed under the host's enrolled intermediate; re-enrol the host")]
    NotPinned,
    /// The nonce was not issued, expired, or already used.
    #[error(
        "the nonce was not issued by this verifier, has expired, or was already used; request a new one"
    )]
    Nonce,
    /// Too old, or from the future.
    #[error("evidence issued at {iat} is outside the accepted window ({window} s) at {now}")]
    Stale {
        /// Issued at.
        iat: i64,
        /// Now.
        now: i64,
        /// Window.
        window: i64,
    },
    /// An older sequence number than the last appraised.
    #[error("out of order: evidence #{seq} arrived after #{last}")]
    Reordered {
        /// Sequence.
        seq: u64,
        /// Last appraised.
        last: u64,
    },
    /// A gap in the sequence.
    #[error("gap: expected evidence #{expected}, got #{got} ({} missing)", got - expected)]
    Gap {
        /// Expected.
        expected: u64,
        /// Got.
        got: u64,
    },
    /// The first evidence of a VM must be #0 (or where an admin's reset said).
    #[error(
        "VM {vm:?} has no evidence since its chain (re)started, so it starts at #{want}, not #{got}; an admin resets a chain explicitly (`admin vms reset-chain --vm-id VM --at N`)"
    )]
    ChainStart {
        /// VM.
        vm: String,
        /// Claimed sequence.
        got: u64,
        /// Where the chain starts.
        want: u64,
    },
    /// `prev` does not name the last appraised evidence.
    #[error(
        "broken chain: evidence #{seq} does not follow the last appraised evidence (prev digest differs)"
    )]
    BrokenChain {
        /// Sequence.
        seq: u64,
    },
    /// Captured under another policy than the one assigned.
    #[error(
        "captured under policy {got} but the VM is assigned policy {want}: capture under the assigned policy (the agent fetches it, `GET /v1/vms/{{vm}}/policy`; `vm run` without --policy uses it), or assign the new one (`admin assign-policy`)"
    )]
    Policy {
        /// Claimed digest, hex.
        got: String,
        /// Assigned digest, hex.
        want: String,
    },
    /// Captured under another policy than the golden baseline's (no policy assigned).
    #[error(
        "captured under policy {got} but golden baseline v{version} was captured under policy {want}; capture under that policy, or assign the new policy (`admin assign-policy`) and promote a baseline under it"
    )]
    BaselinePolicy {
        /// Claimed digest, hex.
        got: String,
        /// The baseline's digest, hex.
        want: String,
        /// Baseline version.
        version: u64,
    },
    /// The active baseline predates the verifier's record of policies.
    #[error(
        "golden baseline v{0} was promoted before the verifier recorded the policy of baselines; promote it again (`admin promote-baseline`)"
    )]
    BaselinePolicyUnknown(u64),
    /// Capture module not allowed.
    #[error(
        "capture module {0} is not allowed for this VM; an admin allows it with `admin allow-modules`"
    )]
    Module(String),
    /// A region's delta does not recompute its root: a change was left out or forged.
    #[error(
        "region {0:?}: the baseline with the evidence's delta does not give the signed root (incomplete or forged delta)"
    )]
    Delta(String),
    /// A sampled region without the verifier's nonce to key the sample.
    #[error(
        "region {0:?} is sampled by the policy, which needs the verifier's nonce in the evidence (capture on a challenge)"
    )]
    SampleUnkeyed(String),
    /// A sampled region holds other pages than the verifier's nonce selects.
    #[error("region {region:?}: {reason}")]
    SampleMismatch {
        /// Region.
        region: String,
        /// What differs.
        reason: String,
    },
}

impl AppraisalError {
    /// Stable, machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::WrongVm { .. } => ErrorCode::WrongVm,
            Self::WrongHost { .. } => ErrorCode::WrongHost,
            Self::NotPinned => ErrorCode::NotEnrolled,
            Self::Nonce => ErrorCode::BadNonce,
            Self::Stale { .. } => ErrorCode::Stale,
            Self::Reordered { .. } => ErrorCode::Reordered,
            Self::Gap { .. } => ErrorCode::SeqGap,
            Self::ChainStart { .. } => ErrorCode::ChainStart,
            Self::BrokenChain { .. } => ErrorCode::BrokenChain,
            Self::Policy { .. } => ErrorCode::PolicyMismatch,
            Self::BaselinePolicy { .. } => ErrorCode::BaselinePolicyMismatch,
            Self::BaselinePolicyUnknown(_) => ErrorCode::BaselinePolicyUnknown,
            Self::Module(_) => ErrorCode::ModuleNotAllowed,
            Self::Delta(_) => ErrorCode::IncompleteDelta,
            Self::SampleUnkeyed(_) => ErrorCode::SampleUnkeyed,
            Self::SampleMismatch { .. } => ErrorCode::SampleMismatch,
        }
    }
}

pub use vmseal_client::wire::{Finding, RegionChange, Tier, TrustVector};

/// Most page ranges a region change lists (the count is always exact).
pub const MAX_CHANGED_RANGES: usize = 1024;

/// The ascending page indices `changed` as `[first, end)` ranges, at most `max` of them; and
/// whether some were left out.
fn ranges(changed: impl Iterator<Item = u64>, max: usize) -> (Vec<[u64; 2]>, bool) {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for i in changed {
        if let Some(r) = out.last_mut()
            && r[1] >= i
        {
            r[1] = r[1].max(i + 1);
            continue;
        }
        if out.len() == max {
            return (out, true);
        }
        out.push([i, i + 1]);
    }
    (out, false)
}

/// The result of an appraisal: the verdict (what the wire carries) and what the verifier keeps
/// of it besides.
#[derive(Debug, Clone)]
pub struct Appraisal {
    /// The verdict.
    pub verdict: vmseal_client::Appraisal,
    /// The VM's boot and layout after this appraisal (stored with it, not part of the result).
    pub layout_update: Option<(Vec<u8>, Layout)>,
}

/// An appraisal reads as its verdict: `a.score`, `a.changes`.
impl std::ops::Deref for Appraisal {
    type Target = vmseal_client::Appraisal;
    fn deref(&self) -> &vmseal_client::Appraisal {
        &self.verdict
    }
}

impl Appraisal {
    /// The answer to the evidence: this appraisal with its signed results and the evidence's
    /// regions (kept with it: a baseline is promoted from them).
    pub fn result(
        &self,
        ear: String,
        ear_cbor: String,
        regions: Vec<vmseal_client::AppraisedRegion>,
        claims: &vmseal_sealer::claims::Claims,
    ) -> vmseal_client::AppraisalResult {
        vmseal_client::AppraisalResult {
            appraisal: self.verdict.clone(),
            ear,
            ear_cbor,
            regions,
            kernel_digest: claims
                .kernel
                .as_ref()
                .map(|k| hex::encode(vmseal_sealer::merkle::HashAlg::Sha256.hash(&[&k.encode()]))),
            hash_alg: claims.hash_alg.name().to_owned(),
            policy_digest: hex::encode(claims.policy.digest),
            nonce: claims.nonce.is_some(),
            duplicate: false,
        }
    }
}

/// Points a change in a region costs, by class and severity (documented in docs/api.md).
pub fn penalty(class: RegionClass, severity: Severity) -> u8 {
    use RegionClass::*;
    use Severity::*;
    match (class, severity) {
        (Code, Critical) => 100,
        (Code, High) => 70,
        (Code, Medium) => 50,
        (Code, Low) => 30,
        (Structure | Rodata, Critical) => 60,
        (Structure | Rodata, High) => 45,
        (Structure | Rodata, Medium) => 25,
        (Structure | Rodata, Low) => 10,
        (Data, Critical) => 30,
        (Data, High) => 15,
        (Data, Medium) => 5,
        (Data, Low) => 0,
    }
}

/// Tier of a score: ≥ 80 affirming, ≥ 40 warning, else contraindicated.
pub fn tier(score: u8) -> Tier {
    match score {
        80.. => Tier::Affirming,
        40.. => Tier::Warning,
        _ => Tier::Contraindicated,
    }
}

/// A region the verifier expects, with its own class and severity.
struct Expected<'a> {
    name: &'a str,
    class: RegionClass,
    severity: Severity,
    sampling: Sampling,
}

impl<'a> Expected<'a> {
    fn new(name: &'a str, class: RegionClass, severity: Severity, sampling: Sampling) -> Self {
        Self {
            name,
            class,
            severity,
            sampling,
        }
    }
}

/// The pages (page-aligned addresses) of `[start, len]` ranges, or `None` when they do not
/// describe exactly `pages` pages (the claims check guarantees they do for evidence).
fn expand(ranges: &[[u64; 2]], pages: u64) -> Option<Vec<u64>> {
    let total = ranges
        .iter()
        .try_fold(0u64, |n, r| n.checked_add(r[1] / vmseal_policy::PAGE))?;
    if total != pages {
        return None;
    }
    let mut out = Vec::with_capacity(pages as usize);
    for r in ranges {
        out.extend((0..r[1] / vmseal_policy::PAGE).map(|i| r[0] + i * vmseal_policy::PAGE));
    }
    Some(out)
}

/// Appraise publicly verified evidence for `vm` against its baseline.
pub fn appraise(
    v: &VerifiedEvidence,
    vm: &VmRecord,
    baseline: Option<&Baseline>,
    fresh: Freshness,
) -> Result<Appraisal, AppraisalError> {
    let c = &v.claims;
    if c.vm_id != vm.vm_id {
        return Err(AppraisalError::WrongVm {
            got: c.vm_id.clone(),
            want: vm.vm_id.clone(),
        });
    }
    if v.host_id != vm.host_id || c.host_id != vm.host_id {
        return Err(AppraisalError::WrongHost {
            vm: vm.vm_id.clone(),
            got: v.host_id.clone(),
            want: vm.host_id.clone(),
        });
    }
    if !v.pinned || v.intermediate_digest != vm.intermediate_digest {
        return Err(AppraisalError::NotPinned);
    }
    // The same evidence again never reaches an appraisal: the service answers it with the
    // stored result (an idempotent retry); here it is out of order like any older evidence.
    if c.nonce.is_some() {
        if !fresh.nonce_accepted {
            return Err(AppraisalError::Nonce);
        }
    } else if c.iat < fresh.now - fresh.max_age || c.iat > fresh.now + fresh.skew {
        return Err(AppraisalError::Stale {
            iat: c.iat,
            now: fresh.now,
            window: fresh.max_age,
        });
    }
    match vm.last {
        // From #0 nothing precedes; after a reset to #N the evidence's `prev` names the host's
        // own record of #N-1, which the verifier no longer holds.
        None if c.seq != vm.chain_start || (vm.chain_start == 0 && c.prev.is_some()) => {
            return Err(AppraisalError::ChainStart {
                vm: vm.vm_id.clone(),
                got: c.seq,
                want: vm.chain_start,
            });
        }
        None => {}
        Some(last) if c.seq <= last.seq => {
            return Err(AppraisalError::Reordered {
                seq: c.seq,
                last: last.seq,
            });
        }
        Some(last) if c.seq > last.seq + 1 => {
            return Err(AppraisalError::Gap {
                expected: last.seq + 1,
                got: c.seq,
            });
        }
        Some(last) if c.prev != Some(last.digest) => {
            return Err(AppraisalError::BrokenChain { seq: c.seq });
        }
        Some(_) => {}
    }
    // The policy: the one an admin assigned, else the golden baseline's. A baseline captured
    // under another policy than the assigned one does not apply (the admin changed the policy and
    // promotes a baseline under it next).
    let mut baseline_note = None;
    let baseline = match (vm.policy_digest, baseline) {
        (Some(p), b) => {
            if p != c.policy.digest {
                return Err(AppraisalError::Policy {
                    got: hex::encode(c.policy.digest),
                    want: hex::encode(p),
                });
            }
            match b {
                Some(b) if b.policy_digest != Some(p) => {
                    baseline_note = Some(format!(
                        "golden baseline v{} was captured under another policy than the assigned one; promote a baseline under the assigned policy",
                        b.version
                    ));
                    None
                }
                b => b,
            }
        }
        (None, Some(b)) => {
            let Some(bp) = b.policy_digest else {
                return Err(AppraisalError::BaselinePolicyUnknown(b.version));
            };
            if bp != c.policy.digest {
                return Err(AppraisalError::BaselinePolicy {
                    got: hex::encode(c.policy.digest),
                    want: hex::encode(bp),
                    version: b.version,
                });
            }
            Some(b)
        }
        (None, None) => None,
    };
    if !vm.allowed_modules.is_empty() && !vm.allowed_modules.iter().any(|m| m.allows(&c.module)) {
        return Err(AppraisalError::Module(format!(
            "\"{} {}\" (build {})",
            c.module.name,
            c.module.version,
            hex::encode(c.module.build_digest)
        )));
    }

    // The verifier's list: the assigned policy's regions, else the baseline's.
    let expected: Vec<Expected<'_>> = match (&vm.policy, baseline) {
        (Some(p), _) => p
            .regions
            .iter()
            .map(|r| Expected::new(&r.name, r.class, r.severity, r.sampling))
            .collect(),
        (None, Some(b)) => b
            .regions
            .iter()
            .map(|r| Expected::new(&r.name, r.class, r.severity, Sampling::All))
            .collect(),
        (None, None) => Vec::new(),
    };
    let evidence: HashMap<&str, &Region> = c.regions.iter().map(|r| (r.name.as_str(), r)).collect();
    let deltas: HashMap<&str, &[(u64, Digest)]> = c
        .delta
        .iter()
        .map(|d| (d.region.as_str(), d.changes.as_slice()))
        .collect();
    let base: HashMap<&str, &BaselineRegion> = baseline
        .map(|b| b.regions.iter().map(|r| (r.name.as_str(), r)).collect())
        .unwrap_or_default();
    let boot = c.boot.map(|b| b.to_vec()).unwrap_or_default();
    let same_boot = vm.boot.as_deref() == Some(boot.as_slice());
    let mut layout = if same_boot {
        vm.layout.clone()
    } else {
        Layout::new()
    };

    let mut changes = Vec::new();
    let mut unbaselined = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(expected.len());
    for e in &expected {
        seen.insert(e.name);
        let mut change = RegionChange {
            region: e.name.to_owned(),
            class: e.class,
            severity: e.severity,
            findings: Vec::new(),
            claimed: None,
            changed_pages: 0,
            changed_ranges: Vec::new(),
            ranges_truncated: false,
            pages: 0,
            penalty: penalty(e.class, e.severity),
        };
        let Some(r) = evidence.get(e.name) else {
            change.findings.push(Finding::Missing);
            change.pages = base.get(e.name).map_or(0, |b| b.tree.leaf_count());
            change.changed_pages = change.pages;
            changes.push(change);
            continue;
        };
        change.pages = r.pages;
        if r.class != e.class || r.severity != e.severity {
            change.findings.push(Finding::Relabelled);
            change.claimed = Some(format!("{}/{}", r.class.name(), r.severity.name()));
        }
        let delta = deltas.get(e.name).copied().unwrap_or(&[]);
        let full = match (e.sampling, base.get(e.name)) {
            (Sampling::Pages(_), Some(b)) => r.pages == b.tree.leaf_count(),
            (Sampling::Pages(k), None) => r.pages > k,
            (Sampling::All, _) => true,
        };
        let pairs = range_pairs(&r.ranges);
        if full {
            if matches!(e.class, RegionClass::Code | RegionClass::Rodata)
                && layout.get(e.name).is_some_and(|l| *l != pairs)
            {
                change.findings.push(Finding::Remapped);
            }
            layout
                .entry(e.name.to_owned())
                .or_insert_with(|| pairs.clone());
        }
        let Some(br) = base.get(e.name) else {
            unbaselined.push(e.name.to_owned());
            if !change.findings.is_empty() {
                changes.push(change);
            }
            continue;
        };
        // Which baseline pages the evidence's leaves stand for: all, or the nonce's sample.
        let positions: Option<Vec<usize>> = match e.sampling {
            Sampling::Pages(k) if !full => {
                let nonce = c
                    .nonce
                    .as_deref()
                    .ok_or_else(|| AppraisalError::SampleUnkeyed(e.name.to_owned()))?;
                let n = br.tree.leaf_count() as usize;
                let idx = vmseal_policy::sample_indices(nonce, e.name, n, k as usize);
                if r.pages != idx.len() as u64 {
                    return Err(AppraisalError::SampleMismatch {
                        region: e.name.to_owned(),
                        reason: format!(
                            "holds {} pages, but the verifier's nonce selects {} of the baseline's {n}",
                            r.pages,
                            idx.len()
                        ),
                    });
                }
                // Where this boot's full ranges are known, the sampled pages must be exactly
                // the selected ones.
                if let Some(all) = layout.get(e.name).and_then(|l| expand(l, n as u64)) {
                    let want: Vec<u64> = idx.iter().map(|&i| all[i]).collect();
                    if expand(&pairs, r.pages).as_deref() != Some(want.as_slice()) {
                        return Err(AppraisalError::SampleMismatch {
                            region: e.name.to_owned(),
                            reason: "sampled other pages than the verifier's nonce selects".into(),
                        });
                    }
                }
                Some(idx)
            }
            _ => None,
        };
        let tree;
        let reference = match &positions {
            Some(idx) => {
                tree = MerkleTree::from_leaves(
                    br.tree.alg(),
                    idx.iter().map(|&i| br.tree.leaves()[i]).collect(),
                )
                .map_err(|_| AppraisalError::Delta(e.name.to_owned()))?;
                &tree
            }
            None if br.tree.leaf_count() != r.pages => {
                change.findings.push(Finding::Resized);
                change.changed_pages = r.pages.max(br.tree.leaf_count());
                changes.push(change);
                continue;
            }
            None => &br.tree,
        };
        let root = reference
            .root_with_changes(delta)
            .map_err(|_| AppraisalError::Delta(e.name.to_owned()))?;
        if root != r.root {
            return Err(AppraisalError::Delta(e.name.to_owned()));
        }
        // Leaves the delta sets to the baseline value are not changes.
        let is_change = |(i, d): &&(u64, Digest)| reference.leaves().get(*i as usize) != Some(d);
        let changed = delta.iter().filter(is_change).count() as u64;
        if changed > 0 {
            change.findings.insert(0, Finding::Changed);
            let at = |i: u64| positions.as_ref().map_or(i, |p| p[i as usize] as u64);
            (change.changed_ranges, change.ranges_truncated) = ranges(
                delta.iter().filter(is_change).map(|(i, _)| at(*i)),
                MAX_CHANGED_RANGES,
            );
            change.changed_pages = changed;
        }
        if !change.findings.is_empty() {
            changes.push(change);
        }
    }
    // Regions the evidence adds beyond the verifier's list are only listed.
    for r in &c.regions {
        if !seen.contains(r.name.as_str()) {
            unbaselined.push(r.name.clone());
        }
    }
    // Kernel objects: under the VM's policy's `[kernel_objects]` (evidence without them is a
    // finding), or, for evidence that carries them, with the default severities.
    let kernel_policy = vm.policy.as_ref().and_then(|p| p.kernel_objects.as_ref());
    let kernel = match (c.kernel.as_ref(), kernel_policy) {
        (None, None) => None,
        (now, policy) => Some(crate::kernel::appraise_kernel(
            now,
            baseline.and_then(|b| b.kernel.as_ref()),
            policy.unwrap_or(&Default::default()),
        )),
    };
    let kernel_worst = kernel
        .as_ref()
        .and_then(|k| k.findings.iter().map(|f| f.severity).max());
    let kernel_hooked = kernel.as_ref().is_some_and(|k| {
        k.findings
            .iter()
            .any(|f| f.kind == "hooked_syscall" || f.kind == "hooked_gate")
    });
    let lost: u32 = changes.iter().map(|ch| ch.penalty as u32).sum::<u32>()
        + kernel.as_ref().map_or(0, |k| u32::from(k.penalty));
    let mut score = 100u32.saturating_sub(lost) as u8;
    // Without a baseline nothing can be affirmed about memory.
    if baseline.is_none() {
        score = score.min(50);
    }
    let code_changed = changes.iter().any(|ch| ch.class == RegionClass::Code);
    let opaque_changed = changes.iter().any(|ch| {
        matches!(ch.class, RegionClass::Structure | RegionClass::Rodata)
            || (ch.class == RegionClass::Data
                && (ch.penalty > 0 || ch.findings[0] != Finding::Changed))
    });
    let trust_vector = TrustVector {
        instance_identity: Tier::Affirming.ar4si(),
        executables: if code_changed || kernel_hooked {
            Tier::Contraindicated.ar4si()
        } else if baseline.is_none() {
            Tier::Warning.ar4si()
        } else {
            Tier::Affirming.ar4si()
        },
        runtime_opaque: if kernel_worst >= Some(Severity::High) {
            Tier::Contraindicated.ar4si()
        } else if opaque_changed || kernel_worst.is_some() {
            Tier::Warning.ar4si()
        } else {
            Tier::Affirming.ar4si()
        },
        hardware: if vm.insecure_anchor
            || v.insecure()
            || !vm.anchored
            || vm.hardware_problem.is_some()
        {
            Tier::Warning.ar4si()
        } else {
            Tier::Affirming.ar4si()
        },
    };
    if expected.is_empty() {
        // Nothing expected yet (no policy text, no baseline): the layout is what this boot shows.
        for r in &c.regions {
            layout
                .entry(r.name.clone())
                .or_insert_with(|| range_pairs(&r.ranges));
        }
    }
    Ok(Appraisal {
        verdict: vmseal_client::Appraisal {
            vm_id: c.vm_id.clone(),
            seq: c.seq,
            evidence: hex::encode(v.digest),
            score,
            tier: tier(score),
            trust_vector,
            changes,
            unbaselined,
            baseline_version: baseline.map(|b| b.version),
            baseline_note,
            boot_changed: vm.boot.is_some() && !same_boot,
            alert: score < vm.threshold,
            hardware_checked: vm.hardware_checked.clone(),
            hardware_problem: vm.hardware_problem.clone(),
            kernel,
        },
        layout_update: Some((boot, layout)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Duration, OffsetDateTime};
    use vmseal_sealer::claims::{Claims, RegionDelta};
    use vmseal_sealer::evidence::Sealer;
    use vmseal_sealer::keys::IntermediateKey;
    use vmseal_sealer::merkle::HashAlg;
    use vmseal_sealer::verify::{AnchorRequirement, TrustConfig, verify_evidence};
    use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};

    const ALG: HashAlg = HashAlg::Sha256;

    struct Fixture {
        sealer: Sealer,
        trust: TrustConfig,
        baseline: Baseline,
        vm: VmRecord,
    }

    fn leaves(tag: u8, n: usize) -> Vec<Digest> {
        (0..n).map(|i| ALG.leaf(&[tag, i as u8])).collect()
    }

    fn fixture() -> Fixture {
        let key = IntermediateKey::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        let der = issue_intermediate(
            &key,
            &IntermediateProfile {
                host_id: "h1",
                tpm: None,
                snp: None,
                validity: Duration::days(1),
            },
            now,
        )
        .unwrap();
        let mut trust = TrustConfig {
            require: AnchorRequirement::from_name("none").unwrap(),
            ..TrustConfig::default()
        };
        let digest = ALG.hash(&[&der]);
        trust.pinned_intermediates.push(digest);
        let baseline = Baseline {
            version: 1,
            regions: [
                ("code", RegionClass::Code, Severity::Critical, 1, 8),
                ("tasks", RegionClass::Structure, Severity::High, 2, 2),
                ("heap", RegionClass::Data, Severity::Low, 3, 16),
            ]
            .into_iter()
            .map(|(name, class, severity, tag, pages)| BaselineRegion {
                name: name.into(),
                class,
                severity,
                tree: MerkleTree::from_leaves(ALG, leaves(tag, pages)).unwrap(),
                ranges: Some(vec![[0, pages as u64 * 4096]]),
            })
            .collect(),
            policy_digest: Some([5; 32]),
            kernel: None,
        };
        let vm = VmRecord {
            vm_id: "vm1".into(),
            host_id: "h1".into(),
            intermediate_digest: digest,
            policy_digest: Some([5; 32]),
            threshold: 70,
            anchored: true,
            baseline_version: Some(1),
            ..VmRecord::default()
        };
        Fixture {
            sealer: Sealer::new(key, der).unwrap(),
            trust,
            baseline,
            vm,
        }
    }

    /// Claims whose regions are the baseline with `changes` applied; the delta lists
    /// `delta_changes` (normally the same).
    fn claims(
        f: &Fixture,
        seq: u64,
        prev: Option<Digest>,
        changes: &[(&str, u64)],
        omit_from_delta: bool,
    ) -> Claims {
        let mut regions = Vec::new();
        let mut delta = Vec::new();
        for b in &f.baseline.regions {
            let mut t = b.tree.clone();
            let ch: Vec<(u64, Digest)> = changes
                .iter()
                .filter(|(n, _)| *n == b.name)
                .map(|(_, i)| (*i, ALG.leaf(b"evil")))
                .collect();
            t.apply_delta(&ch).unwrap();
            if !ch.is_empty() && !omit_from_delta {
                delta.push(RegionDelta {
                    region: b.name.clone(),
                    changes: ch,
                });
            }
            regions.push((b.name.clone(), b.class, b.severity, t));
        }
        vmseal_loadgen::appraise::synthetic_claims("h1", "vm1", seq, prev, &regions, delta, [5; 32])
    }

    fn verify(f: &Fixture, c: &Claims) -> VerifiedEvidence {
        let ev = f.sealer.seal(c, OffsetDateTime::now_utc()).unwrap();
        verify_evidence(&ev, &f.trust, OffsetDateTime::now_utc()).unwrap()
    }

    /// The fixture's first evidence with `changed` (region, pages) and `omit` as [`claims`]
    /// makes it, appraised fresh against the fixture's VM and baseline.
    fn first_appraised(
        f: &Fixture,
        changed: &[(&str, u64)],
        omit: bool,
    ) -> Result<Appraisal, AppraisalError> {
        appraise(
            &verify(f, &claims(f, 0, None, changed, omit)),
            &f.vm,
            Some(&f.baseline),
            fresh(),
        )
    }

    fn fresh() -> Freshness {
        Freshness {
            now: OffsetDateTime::now_utc().unix_timestamp(),
            max_age: 300,
            skew: 30,
            nonce_accepted: false,
        }
    }

    #[test]
    fn clean_snapshot_is_affirming_and_data_changes_cost_nothing() {
        let f = fixture();
        let a = first_appraised(&f, &[("heap", 3)], false).unwrap();
        assert_eq!(a.score, 100);
        assert_eq!(a.tier, Tier::Affirming);
        assert_eq!(a.changes.len(), 1, "the heap change is reported");
        assert!(!a.alert);
        assert_eq!(a.trust_vector.hardware, 2);
        // A host enrolled with no hardware anchor: nothing vouches for its hardware.
        let mut vm = f.vm.clone();
        vm.anchored = false;
        let a = appraise(
            &verify(&f, &claims(&f, 0, None, &[], false)),
            &vm,
            Some(&f.baseline),
            fresh(),
        )
        .unwrap();
        assert_eq!((a.score, a.trust_vector.hardware), (100, 32));
    }

    #[test]
    fn code_change_is_contraindicated_and_named() {
        let f = fixture();
        let a = first_appraised(&f, &[("code", 2), ("tasks", 1)], false).unwrap();
        assert_eq!(a.score, 0);
        assert_eq!(a.tier, Tier::Contraindicated);
        assert_eq!(a.trust_vector.executables, 96);
        assert_eq!(
            a.changes
                .iter()
                .map(|c| c.region.as_str())
                .collect::<Vec<_>>(),
            ["code", "tasks"]
        );
        assert_eq!(a.changes[0].changed_pages, 1);
        assert_eq!(a.changes[0].changed_ranges.len(), 1);
        assert!(a.alert);
        let a = first_appraised(&f, &[("tasks", 1)], false).unwrap();
        assert_eq!((a.score, a.tier), (55, Tier::Warning));
    }

    #[test]
    fn a_change_left_out_of_the_delta_is_refused() {
        let f = fixture();
        let e = first_appraised(&f, &[("code", 2)], true).unwrap_err();
        assert_eq!(e, AppraisalError::Delta("code".into()));
        assert_eq!(e.code(), ErrorCode::IncompleteDelta);
    }

    #[test]
    fn continuity_freshness_policy_and_identity() {
        let f = fixture();
        let v0 = verify(&f, &claims(&f, 0, None, &[], false));
        let mut vm = f.vm.clone();
        vm.last = Some(ChainPoint {
            seq: 0,
            digest: v0.digest,
        });
        let b = Some(&f.baseline);
        assert_eq!(
            appraise(&v0, &vm, b, fresh()).unwrap_err(),
            AppraisalError::Reordered { seq: 0, last: 0 }
        );
        let v1 = verify(&f, &claims(&f, 1, Some(v0.digest), &[], false));
        appraise(&v1, &vm, b, fresh()).unwrap();
        let v3 = verify(&f, &claims(&f, 3, Some(v0.digest), &[], false));
        assert_eq!(
            appraise(&v3, &vm, b, fresh()).unwrap_err().code(),
            ErrorCode::SeqGap
        );
        let v1b = verify(&f, &claims(&f, 1, Some([9; 32]), &[], false));
        assert_eq!(
            appraise(&v1b, &vm, b, fresh()).unwrap_err().code(),
            ErrorCode::BrokenChain
        );
        vm.last = Some(ChainPoint {
            seq: 5,
            digest: [1; 32],
        });
        assert_eq!(
            appraise(&v1, &vm, b, fresh()).unwrap_err().code(),
            ErrorCode::Reordered
        );

        let mut late = fresh();
        late.now += 10_000;
        assert_eq!(
            appraise(&v0, &f.vm, b, late).unwrap_err().code(),
            ErrorCode::Stale
        );
        let mut other = f.vm.clone();
        other.policy_digest = Some([6; 32]);
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            ErrorCode::PolicyMismatch
        );
        let mut other = f.vm.clone();
        other.vm_id = "vm2".into();
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            ErrorCode::WrongVm
        );
        let mut other = f.vm.clone();
        other.host_id = "h2".into();
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            ErrorCode::WrongHost
        );
        let mut other = f.vm.clone();
        other.intermediate_digest = [0; 32];
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            ErrorCode::NotEnrolled
        );
        let mut other = f.vm.clone();
        other.allowed_modules = vec![ModuleRule::parse("vmseal-host 9.9").unwrap()];
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            ErrorCode::ModuleNotAllowed
        );
        let no_base = appraise(&v0, &f.vm, None, fresh()).unwrap();
        assert_eq!(no_base.score, 50);
        assert_eq!(no_base.unbaselined.len(), 3);
    }

    #[test]
    fn changed_pages_become_ranges_bounded_in_number() {
        assert_eq!(ranges([].into_iter(), 4), (vec![], false));
        assert_eq!(
            ranges([1, 2, 3, 7, 9, 10].into_iter(), 4),
            (vec![[1, 4], [7, 8], [9, 11]], false)
        );
        assert_eq!(
            ranges([0, 2, 4, 6, 8].into_iter(), 2),
            (vec![[0, 1], [2, 3]], true)
        );
        // Extending the last range is always possible, even at the limit.
        assert_eq!(
            ranges([0, 2, 3, 4].into_iter(), 2),
            (vec![[0, 1], [2, 5]], false)
        );
    }

    /// Appraise `c` for the fixture's VM with its baseline.
    fn run(f: &Fixture, vm: &VmRecord, c: &Claims) -> Result<Appraisal, AppraisalError> {
        appraise(&verify(f, c), vm, Some(&f.baseline), fresh())
    }

    fn finding(a: &Appraisal, region: &str) -> Vec<Finding> {
        a.changes
            .iter()
            .find(|c| c.region == region)
            .map(|c| c.findings.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_region_left_out_is_a_finding_at_the_baselines_severity() {
        let f = fixture();
        let mut c = claims(&f, 0, None, &[], false);
        c.regions.retain(|r| r.name != "code");
        (c.memory_root, c.code_hash) = Claims::compute_roots(ALG, &c.regions).unwrap();
        let a = run(&f, &f.vm, &c).unwrap();
        assert_eq!(finding(&a, "code"), [Finding::Missing]);
        assert_eq!((a.score, a.tier), (0, Tier::Contraindicated));
        assert_eq!(a.trust_vector.executables, 96);
        // A low data region left out costs what a change to it costs (nothing), but is named.
        let mut c = claims(&f, 0, None, &[], false);
        c.regions.retain(|r| r.name != "heap");
        (c.memory_root, c.code_hash) = Claims::compute_roots(ALG, &c.regions).unwrap();
        let a = run(&f, &f.vm, &c).unwrap();
        assert_eq!(finding(&a, "heap"), [Finding::Missing]);
        assert_eq!(a.trust_vector.runtime_opaque, 32);
    }

    #[test]
    fn relabelled_renamed_and_resized_regions_score_as_the_verifier_says() {
        let f = fixture();
        // The patched code region calls itself low data: scored as critical code all the same.
        let mut c = claims(&f, 0, None, &[("code", 2)], false);
        c.regions[0].class = RegionClass::Data;
        c.regions[0].severity = Severity::Low;
        (c.memory_root, c.code_hash) = Claims::compute_roots(ALG, &c.regions).unwrap();
        let a = run(&f, &f.vm, &c).unwrap();
        assert_eq!(finding(&a, "code"), [Finding::Changed, Finding::Relabelled]);
        let ch = &a.changes[0];
        assert_eq!(
            (ch.class, ch.severity),
            (RegionClass::Code, Severity::Critical)
        );
        assert_eq!(ch.claimed.as_deref(), Some("data/low"));
        assert_eq!(a.score, 0);
        // Renamed: the verifier's "code" is missing, the new name is only listed.
        let mut c = claims(&f, 0, None, &[], false);
        c.regions[0].name = "code2".into();
        let a = run(&f, &f.vm, &c).unwrap();
        assert_eq!(finding(&a, "code"), [Finding::Missing]);
        assert_eq!(a.unbaselined, ["code2"]);
        assert_eq!(a.score, 0);
        // Resized (one page fewer): a finding, not a refusal.
        let mut c = claims(&f, 0, None, &[], false);
        let t = MerkleTree::from_leaves(ALG, leaves(1, 7)).unwrap();
        c.regions[0].pages = 7;
        c.regions[0].ranges[0].len = 7 * 4096;
        c.regions[0].root = t.root();
        (c.memory_root, c.code_hash) = Claims::compute_roots(ALG, &c.regions).unwrap();
        let a = run(&f, &f.vm, &c).unwrap();
        assert_eq!(finding(&a, "code"), [Finding::Resized]);
        assert_eq!(a.score, 0);
    }

    #[test]
    fn code_moved_within_a_boot_is_a_finding_and_across_boots_is_not() {
        let f = fixture();
        let a0 = run(&f, &f.vm, &claims(&f, 0, None, &[], false)).unwrap();
        assert_eq!(a0.score, 100);
        let (boot, layout) = a0.layout_update.clone().unwrap();
        assert_eq!(layout["code"], [[0, 8 * 4096]]);
        let mut vm = f.vm.clone();
        vm.boot = Some(boot);
        vm.layout = layout;
        // Same boot, the code region read from other pages (a clean copy the guest does not run).
        let mut c = claims(&f, 0, None, &[], false);
        c.regions[0].ranges[0].start = 0x10_0000;
        let a = run(&f, &vm, &c).unwrap();
        assert_eq!(finding(&a, "code"), [Finding::Remapped]);
        assert_eq!(a.score, 0);
        // The stored layout keeps what the boot first showed.
        assert_eq!(a.layout_update.unwrap().1["code"], [[0, 8 * 4096]]);
        // A data region may move; and in a new boot (KASLR) code may too, which is reported.
        let mut c = claims(&f, 0, None, &[], false);
        c.regions[2].ranges[0].start = 0x10_0000;
        assert_eq!(run(&f, &vm, &c).unwrap().score, 100);
        let mut c = claims(&f, 0, None, &[], false);
        c.regions[0].ranges[0].start = 0x10_0000;
        c.boot = Some([2; 16]);
        let a = run(&f, &vm, &c).unwrap();
        assert_eq!((a.score, a.boot_changed), (100, true));
        assert_eq!(a.layout_update.unwrap().1["code"], [[0x10_0000, 8 * 4096]]);
        // Evidence that names no boot is one boot with every other such evidence.
        let mut vm2 = f.vm.clone();
        vm2.boot = Some(Vec::new());
        vm2.layout = vm.layout.clone();
        let mut c = claims(&f, 0, None, &[], false);
        c.boot = None;
        c.regions[0].ranges[0].start = 0x10_0000;
        assert_eq!(
            finding(&run(&f, &vm2, &c).unwrap(), "code"),
            [Finding::Remapped]
        );
    }

    #[test]
    fn evidence_under_another_policy_than_the_baselines_is_refused() {
        let f = fixture();
        let mut vm = f.vm.clone();
        vm.policy_digest = None;
        let mut c = claims(&f, 0, None, &[], false);
        c.policy.digest = [6; 32];
        let e = run(&f, &vm, &c).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BaselinePolicyMismatch, "{e}");
        // A baseline from before the verifier kept policies: promote again.
        let mut f2 = fixture();
        f2.baseline.policy_digest = None;
        let mut vm2 = f2.vm.clone();
        vm2.policy_digest = None;
        let e = run(&f2, &vm2, &claims(&f2, 0, None, &[], false)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BaselinePolicyUnknown);
        // An admin assigned a new policy: evidence under it is appraised without the old
        // baseline (and says so) until one is promoted under it.
        let mut vm = f.vm.clone();
        vm.policy_digest = Some([6; 32]);
        let a = run(&f, &vm, &c).unwrap();
        assert_eq!((a.baseline_version, a.score), (None, 50));
        assert!(a.baseline_note.is_some());
    }

    #[test]
    fn a_new_vms_chain_starts_at_zero() {
        let f = fixture();
        let e = run(&f, &f.vm, &claims(&f, 3, None, &[], false)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ChainStart);
        let e = run(&f, &f.vm, &claims(&f, 0, Some([1; 32]), &[], false)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ChainStart);
        // After an admin's reset to #7, the chain resumes exactly there.
        let mut vm = f.vm.clone();
        vm.chain_start = 7;
        let e = run(&f, &vm, &claims(&f, 0, None, &[], false)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ChainStart);
        assert!(e.to_string().contains("starts at #7"), "{e}");
        run(&f, &vm, &claims(&f, 7, Some([1; 32]), &[], false)).unwrap();
    }

    #[test]
    fn module_rules_pin_versions_and_builds() {
        let f = fixture();
        let c = claims(&f, 0, None, &[], false);
        let version = env!("CARGO_PKG_VERSION");
        let mut vm = f.vm.clone();
        vm.allowed_modules = vec![ModuleRule::parse(&format!("vmseal-host {version}")).unwrap()];
        run(&f, &vm, &c).unwrap();
        let pinned = format!("vmseal-host {version} {}", "00".repeat(32));
        vm.allowed_modules = vec![ModuleRule::parse(&pinned).unwrap()];
        run(&f, &vm, &c).unwrap();
        let other = format!("vmseal-host {version} {}", "11".repeat(32));
        vm.allowed_modules = vec![ModuleRule::parse(&other).unwrap()];
        assert_eq!(
            run(&f, &vm, &c).unwrap_err().code(),
            ErrorCode::ModuleNotAllowed
        );
        assert_eq!(ModuleRule::parse(&other).unwrap().to_string(), other);
        assert!(ModuleRule::parse("vmseal-host").is_err());
        assert!(ModuleRule::parse("vmseal-host 1 abc").is_err());
        assert!(ModuleRule::parse("a b c d").is_err());
    }

    /// A policy sampling 4 of the heap's 16 pages.
    fn sampling_vm(f: &Fixture) -> VmRecord {
        let text = "name = \"p\"\nversion = 1\n\
            [[region]]\nname = \"code\"\nclass = \"code\"\nseverity = \"critical\"\ngpa = { start = 0, len = 0x8000 }\n\
            [[region]]\nname = \"tasks\"\nclass = \"structure\"\nseverity = \"high\"\ngpa = { start = 0x8000, len = 0x2000 }\n\
            [[region]]\nname = \"heap\"\nclass = \"data\"\nseverity = \"low\"\ngpa = { start = 0, len = 0x10000 }\nsample = 4\n";
        let mut vm = f.vm.clone();
        vm.policy = Some(Arc::new(Policy::parse(text).unwrap()));
        vm
    }

    /// Claims whose heap holds the baseline's pages at `idx`, with `changed` of them patched.
    fn sampled(f: &Fixture, nonce: &[u8], idx: &[usize], changed: &[u64]) -> Claims {
        let mut c = claims(f, 0, None, &[], false);
        let heap = &f.baseline.regions[2];
        let mut t =
            MerkleTree::from_leaves(ALG, idx.iter().map(|&i| heap.tree.leaves()[i]).collect())
                .unwrap();
        let delta: Vec<(u64, Digest)> = changed.iter().map(|&i| (i, ALG.leaf(b"evil"))).collect();
        t.apply_delta(&delta).unwrap();
        let r = &mut c.regions[2];
        r.pages = idx.len() as u64;
        r.root = t.root();
        r.ranges = idx
            .iter()
            .map(|&i| GpaRange {
                start: i as u64 * 4096,
                len: 4096,
            })
            .collect();
        if !delta.is_empty() {
            c.delta.push(RegionDelta {
                region: "heap".into(),
                changes: delta,
            });
        }
        (c.memory_root, c.code_hash) = Claims::compute_roots(ALG, &c.regions).unwrap();
        c.nonce = Some(nonce.to_vec());
        c
    }

    #[test]
    fn a_sampled_region_holds_exactly_the_pages_the_nonce_selects() {
        let f = fixture();
        let vm = sampling_vm(&f);
        let with_nonce = Freshness {
            nonce_accepted: true,
            ..fresh()
        };
        let go =
            |c: &Claims, vm: &VmRecord| appraise(&verify(&f, c), vm, Some(&f.baseline), with_nonce);
        let nonce = b"verifier-nonce";
        let idx = vmseal_policy::sample_indices(nonce, "heap", 16, 4);
        let a = go(&sampled(&f, nonce, &idx, &[]), &vm).unwrap();
        assert_eq!(a.score, 100, "{:?}", a.changes);
        // A change in a sampled page is found, and named by its page in the whole region.
        let a = go(&sampled(&f, nonce, &idx, &[1]), &vm).unwrap();
        assert_eq!(a.changes[0].region, "heap");
        assert_eq!(
            a.changes[0].changed_ranges,
            [[idx[1] as u64, idx[1] as u64 + 1]]
        );
        // The host picks other pages (clean ones): their hashes are not the selected pages'.
        let mut other: Vec<usize> = (0..16).filter(|i| !idx.contains(i)).take(4).collect();
        other.sort();
        let e = go(&sampled(&f, nonce, &other, &[]), &vm).unwrap_err();
        assert_eq!(e.code(), ErrorCode::IncompleteDelta, "{e}");
        // Fewer pages than selected.
        let e = go(&sampled(&f, nonce, &idx[..3], &[]), &vm).unwrap_err();
        assert_eq!(e.code(), ErrorCode::SampleMismatch, "{e}");
        // Without the verifier's nonce there is nothing to key the sample with.
        let mut c = sampled(&f, nonce, &idx, &[]);
        c.nonce = None;
        let e = appraise(&verify(&f, &c), &vm, Some(&f.baseline), fresh()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::SampleUnkeyed);
        // Once this boot's whole layout is known, the sampled addresses must be the selected
        // ones too: the selected hashes read from other pages are refused.
        let mut vm = vm;
        vm.boot = Some(vec![1; 16]);
        vm.layout.insert("heap".into(), vec![[0, 16 * 4096]]);
        let mut c = sampled(&f, nonce, &idx, &[]);
        c.regions[2].ranges[0].start += 0x100_0000;
        let e = go(&c, &vm).unwrap_err();
        assert_eq!(e.code(), ErrorCode::SampleMismatch, "{e}");
        go(&sampled(&f, nonce, &idx, &[]), &vm).unwrap();
    }
}
