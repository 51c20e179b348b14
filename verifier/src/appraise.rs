//! Appraisal: what a publicly verified snapshot means for its VM.
//!
//! [`appraise`] runs, in order, the checks that need the verifier's state — the VM and host the
//! evidence claims, the pinned intermediate, freshness (nonce or timestamp window), sequence
//! continuity (gap, replay, reorder), the assigned policy, the allowed capture modules — and then
//! the **Merkle diff**: for every region, the stored golden baseline tree with the evidence's delta
//! applied must recompute the signed region root, so a change left out of the delta is caught, in
//! O(k log n) node hashes for k changed pages. The changed regions, weighed by class and severity,
//! give a trust score 0–100, a tier, and an AR4SI trust vector.

use serde::Serialize;
use vmseal_sealer::claims::{RegionClass, Severity};
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

/// What the verifier knows about a VM.
#[derive(Debug, Clone)]
pub struct VmRecord {
    /// VM id.
    pub vm_id: String,
    /// Host the VM belongs to.
    pub host_id: String,
    /// SHA-256 of the host's enrolled (pinned) intermediate certificate.
    pub intermediate_digest: Digest,
    /// Digest of the policy assigned to the VM, if one is.
    pub policy_digest: Option<Digest>,
    /// Allowed capture modules as "name version"; empty allows any.
    pub allowed_modules: Vec<String>,
    /// The last appraised evidence.
    pub last: Option<ChainPoint>,
    /// Score below which an appraisal raises an alert.
    pub threshold: u8,
    /// Whether the host's enrolled SNP anchor was the INSECURE stand-in (accepted by config).
    pub insecure_anchor: bool,
    /// The active (newest) golden baseline version, if any.
    pub baseline_version: Option<u64>,
    /// Tier of the last accepted appraisal.
    pub last_tier: Option<String>,
    /// The VM's unresolved below-threshold alert, if any.
    pub threshold_alert: Option<i64>,
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
}

/// A golden baseline.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Version (baselines are never overwritten).
    pub version: u64,
    /// Regions.
    pub regions: Vec<BaselineRegion>,
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
    /// The sequence number was already appraised (same evidence again).
    #[error("replay: evidence #{seq} was already appraised")]
    Replay {
        /// Sequence.
        seq: u64,
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
    /// `prev` does not name the last appraised evidence.
    #[error(
        "broken chain: evidence #{seq} does not follow the last appraised evidence (prev digest differs)"
    )]
    BrokenChain {
        /// Sequence.
        seq: u64,
    },
    /// Captured under another policy than the one assigned.
    #[error("captured under policy {got} but the VM is assigned policy {want}")]
    Policy {
        /// Claimed digest, hex.
        got: String,
        /// Assigned digest, hex.
        want: String,
    },
    /// Capture module not allowed.
    #[error("capture module {0:?} is not allowed for this VM")]
    Module(String),
    /// A region's delta does not recompute its root: a change was left out or forged.
    #[error(
        "region {0:?}: the baseline with the evidence's delta does not give the signed root (incomplete or forged delta)"
    )]
    Delta(String),
    /// A region has another size than in the baseline.
    #[error(
        "region {region:?} has {got} pages but the baseline has {want}; promote a new baseline after a verified change"
    )]
    RegionSize {
        /// Region.
        region: String,
        /// Claimed pages.
        got: u64,
        /// Baseline pages.
        want: u64,
    },
}

impl AppraisalError {
    /// Stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongVm { .. } => "wrong_vm",
            Self::WrongHost { .. } => "wrong_host",
            Self::NotPinned => "not_enrolled",
            Self::Nonce => "bad_nonce",
            Self::Stale { .. } => "stale",
            Self::Replay { .. } => "replay",
            Self::Reordered { .. } => "reordered",
            Self::Gap { .. } => "seq_gap",
            Self::BrokenChain { .. } => "broken_chain",
            Self::Policy { .. } => "policy_mismatch",
            Self::Module(_) => "module_not_allowed",
            Self::Delta(_) => "incomplete_delta",
            Self::RegionSize { .. } => "region_size",
        }
    }
}

/// AR4SI tier (draft-ietf-rats-ar4si).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Trustworthy.
    Affirming,
    /// Something deserves attention.
    Warning,
    /// Do not trust.
    Contraindicated,
}

impl Tier {
    /// AR4SI value of the tier (2, 32, 96).
    pub fn ar4si(self) -> i8 {
        match self {
            Self::Affirming => 2,
            Self::Warning => 32,
            Self::Contraindicated => 96,
        }
    }
}

/// The AR4SI trust vector claims vmseal sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TrustVector {
    /// The signing key chain and the enrolled identity.
    pub instance_identity: i8,
    /// Code regions (`executables`).
    pub executables: i8,
    /// Data and structure regions (`runtime-opaque`).
    pub runtime_opaque: i8,
    /// The hardware anchors (`hardware`).
    pub hardware: i8,
}

/// A region that differs from the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RegionChange {
    /// Name.
    pub region: String,
    /// Class.
    pub class: &'static str,
    /// Severity.
    pub severity: &'static str,
    /// Changed pages.
    pub changed_pages: u64,
    /// Which pages: `[first, end)` index ranges, ascending, at most [`MAX_CHANGED_RANGES`] (then
    /// `ranges_truncated`).
    pub changed_ranges: Vec<[u64; 2]>,
    /// Whether more ranges changed than `changed_ranges` lists.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ranges_truncated: bool,
    /// Pages in the region.
    pub pages: u64,
    /// Score points this change cost.
    pub penalty: u8,
}

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

/// The result of an appraisal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Appraisal {
    /// VM.
    pub vm_id: String,
    /// Sequence appraised.
    pub seq: u64,
    /// Evidence digest, hex.
    pub evidence: String,
    /// Trust score 0–100.
    pub score: u8,
    /// Tier.
    pub tier: Tier,
    /// AR4SI trust vector.
    pub trust_vector: TrustVector,
    /// Regions that differ from the baseline.
    pub changes: Vec<RegionChange>,
    /// Regions the baseline does not cover.
    pub unbaselined: Vec<String>,
    /// Baseline version compared against.
    pub baseline_version: Option<u64>,
    /// Whether the score is below the VM's alert threshold.
    pub alert: bool,
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
    // The same evidence again is named a replay, whatever its nonce has become meanwhile.
    if let Some(last) = vm.last
        && c.seq == last.seq
        && v.digest == last.digest
    {
        return Err(AppraisalError::Replay { seq: c.seq });
    }
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
        None => {}
        Some(last) if c.seq == last.seq && v.digest == last.digest => {
            return Err(AppraisalError::Replay { seq: c.seq });
        }
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
    if let Some(p) = vm.policy_digest
        && p != c.policy.digest
    {
        return Err(AppraisalError::Policy {
            got: hex::encode(c.policy.digest),
            want: hex::encode(p),
        });
    }
    let module = format!("{} {}", c.module.name, c.module.version);
    if !vm.allowed_modules.is_empty() && !vm.allowed_modules.contains(&module) {
        return Err(AppraisalError::Module(module));
    }

    let mut changes = Vec::new();
    let mut unbaselined = Vec::new();
    if let Some(b) = baseline {
        for r in &c.regions {
            let Some(br) = b.regions.iter().find(|br| br.name == r.name) else {
                unbaselined.push(r.name.clone());
                continue;
            };
            if br.tree.leaf_count() != r.pages {
                return Err(AppraisalError::RegionSize {
                    region: r.name.clone(),
                    got: r.pages,
                    want: br.tree.leaf_count(),
                });
            }
            let delta: &[(u64, Digest)] = c
                .delta
                .iter()
                .find(|d| d.region == r.name)
                .map_or(&[], |d| &d.changes);
            let root = br
                .tree
                .root_with_changes(delta)
                .map_err(|_| AppraisalError::Delta(r.name.clone()))?;
            if root != r.root {
                return Err(AppraisalError::Delta(r.name.clone()));
            }
            // Leaves the delta sets to the baseline value are not changes.
            let is_change = |(i, d): &&(u64, Digest)| br.tree.leaves().get(*i as usize) != Some(d);
            let changed = delta.iter().filter(is_change).count() as u64;
            if changed > 0 {
                let (changed_ranges, ranges_truncated) = ranges(
                    delta.iter().filter(is_change).map(|(i, _)| *i),
                    MAX_CHANGED_RANGES,
                );
                changes.push(RegionChange {
                    region: r.name.clone(),
                    class: r.class.name(),
                    severity: r.severity.name(),
                    changed_pages: changed,
                    changed_ranges,
                    ranges_truncated,
                    pages: r.pages,
                    penalty: penalty(r.class, r.severity),
                });
            }
        }
    } else {
        unbaselined = c.regions.iter().map(|r| r.name.clone()).collect();
    }
    let lost: u32 = changes.iter().map(|ch| ch.penalty as u32).sum();
    let mut score = 100u32.saturating_sub(lost) as u8;
    // Without a baseline nothing can be affirmed about memory.
    if baseline.is_none() {
        score = score.min(50);
    }
    let code_changed = changes.iter().any(|ch| ch.class == "code");
    let opaque_changed = changes.iter().any(|ch| {
        matches!(ch.class, "structure" | "rodata") || (ch.class == "data" && ch.penalty > 0)
    });
    let trust_vector = TrustVector {
        instance_identity: Tier::Affirming.ar4si(),
        executables: if code_changed {
            Tier::Contraindicated.ar4si()
        } else if baseline.is_none() {
            Tier::Warning.ar4si()
        } else {
            Tier::Affirming.ar4si()
        },
        runtime_opaque: if opaque_changed {
            Tier::Warning.ar4si()
        } else {
            Tier::Affirming.ar4si()
        },
        hardware: if vm.insecure_anchor || v.insecure() {
            Tier::Warning.ar4si()
        } else {
            Tier::Affirming.ar4si()
        },
    };
    Ok(Appraisal {
        vm_id: c.vm_id.clone(),
        seq: c.seq,
        evidence: hex::encode(v.digest),
        score,
        tier: tier(score),
        trust_vector,
        changes,
        unbaselined,
        baseline_version: baseline.map(|b| b.version),
        alert: score < vm.threshold,
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
            regions: vec![
                BaselineRegion {
                    name: "code".into(),
                    class: RegionClass::Code,
                    severity: Severity::Critical,
                    tree: MerkleTree::from_leaves(ALG, leaves(1, 8)).unwrap(),
                },
                BaselineRegion {
                    name: "tasks".into(),
                    class: RegionClass::Structure,
                    severity: Severity::High,
                    tree: MerkleTree::from_leaves(ALG, leaves(2, 2)).unwrap(),
                },
                BaselineRegion {
                    name: "heap".into(),
                    class: RegionClass::Data,
                    severity: Severity::Low,
                    tree: MerkleTree::from_leaves(ALG, leaves(3, 16)).unwrap(),
                },
            ],
        };
        let vm = VmRecord {
            vm_id: "vm1".into(),
            host_id: "h1".into(),
            intermediate_digest: digest,
            policy_digest: Some([5; 32]),
            allowed_modules: vec![],
            last: None,
            threshold: 70,
            insecure_anchor: false,
            baseline_version: Some(1),
            last_tier: None,
            threshold_alert: None,
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
        crate::bench::synthetic_claims("h1", "vm1", seq, prev, &regions, delta, [5; 32])
    }

    fn verify(f: &Fixture, c: &Claims) -> VerifiedEvidence {
        let ev = f.sealer.seal(c, OffsetDateTime::now_utc()).unwrap();
        verify_evidence(&ev, &f.trust, OffsetDateTime::now_utc()).unwrap()
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
        let a = appraise(
            &verify(&f, &claims(&f, 0, None, &[("heap", 3)], false)),
            &f.vm,
            Some(&f.baseline),
            fresh(),
        )
        .unwrap();
        assert_eq!(a.score, 100);
        assert_eq!(a.tier, Tier::Affirming);
        assert_eq!(a.changes.len(), 1, "the heap change is reported");
        assert!(!a.alert);
    }

    #[test]
    fn code_change_is_contraindicated_and_named() {
        let f = fixture();
        let a = appraise(
            &verify(
                &f,
                &claims(&f, 0, None, &[("code", 2), ("tasks", 1)], false),
            ),
            &f.vm,
            Some(&f.baseline),
            fresh(),
        )
        .unwrap();
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
        let a = appraise(
            &verify(&f, &claims(&f, 0, None, &[("tasks", 1)], false)),
            &f.vm,
            Some(&f.baseline),
            fresh(),
        )
        .unwrap();
        assert_eq!((a.score, a.tier), (55, Tier::Warning));
    }

    #[test]
    fn a_change_left_out_of_the_delta_is_refused() {
        let f = fixture();
        let e = appraise(
            &verify(&f, &claims(&f, 0, None, &[("code", 2)], true)),
            &f.vm,
            Some(&f.baseline),
            fresh(),
        )
        .unwrap_err();
        assert_eq!(e, AppraisalError::Delta("code".into()));
        assert_eq!(e.code(), "incomplete_delta");
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
            AppraisalError::Replay { seq: 0 }
        );
        let v1 = verify(&f, &claims(&f, 1, Some(v0.digest), &[], false));
        appraise(&v1, &vm, b, fresh()).unwrap();
        let v3 = verify(&f, &claims(&f, 3, Some(v0.digest), &[], false));
        assert_eq!(
            appraise(&v3, &vm, b, fresh()).unwrap_err().code(),
            "seq_gap"
        );
        let v1b = verify(&f, &claims(&f, 1, Some([9; 32]), &[], false));
        assert_eq!(
            appraise(&v1b, &vm, b, fresh()).unwrap_err().code(),
            "broken_chain"
        );
        vm.last = Some(ChainPoint {
            seq: 5,
            digest: [1; 32],
        });
        assert_eq!(
            appraise(&v1, &vm, b, fresh()).unwrap_err().code(),
            "reordered"
        );

        let mut late = fresh();
        late.now += 10_000;
        assert_eq!(appraise(&v0, &f.vm, b, late).unwrap_err().code(), "stale");
        let mut other = f.vm.clone();
        other.policy_digest = Some([6; 32]);
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            "policy_mismatch"
        );
        let mut other = f.vm.clone();
        other.vm_id = "vm2".into();
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            "wrong_vm"
        );
        let mut other = f.vm.clone();
        other.host_id = "h2".into();
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            "wrong_host"
        );
        let mut other = f.vm.clone();
        other.intermediate_digest = [0; 32];
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            "not_enrolled"
        );
        let mut other = f.vm.clone();
        other.allowed_modules = vec!["vmseal-host 9.9".into()];
        assert_eq!(
            appraise(&v0, &other, b, fresh()).unwrap_err().code(),
            "module_not_allowed"
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
}
