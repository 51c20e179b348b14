//! An appraisal: what `POST /v1/vms/{vm}/evidence` answers (and `GET …/appraisals` lists), with
//! the signed results (EAR) it carries.

use serde::{Deserialize, Serialize};

/// AR4SI tier (draft-ietf-rats-ar4si).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    /// The tier named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Affirming, Self::Warning, Self::Contraindicated]
            .into_iter()
            .find(|t| t.name() == name)
    }

    /// The name on the wire (`affirming`, `warning`, `contraindicated`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Affirming => "affirming",
            Self::Warning => "warning",
            Self::Contraindicated => "contraindicated",
        }
    }
}

/// The AR4SI trust vector claims vmseal sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// What is wrong with a region the verifier expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Finding {
    /// Pages differ from the golden baseline.
    Changed,
    /// The evidence leaves the region out.
    Missing,
    /// The evidence gives it another class or severity than the verifier's.
    Relabelled,
    /// The evidence gives it another number of pages than the baseline.
    Resized,
    /// Code or rodata at other guest-physical pages than earlier in the same guest boot.
    Remapped,
}

/// A region that differs from what the verifier expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionChange {
    /// Name.
    pub region: String,
    /// Class (the verifier's).
    pub class: vmseal_sealer::claims::RegionClass,
    /// Severity (the verifier's).
    pub severity: vmseal_sealer::claims::Severity,
    /// What is wrong, most serious first (`changed` alone for a plain content change).
    pub findings: Vec<Finding>,
    /// What the evidence claimed, `class/severity`, when it was relabelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// Changed pages (for a missing or resized region: every page).
    pub changed_pages: u64,
    /// Which pages: `[first, end)` index ranges, ascending, at most 1,024 (then
    /// `ranges_truncated`).
    pub changed_ranges: Vec<[u64; 2]>,
    /// Whether more ranges changed than `changed_ranges` lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ranges_truncated: bool,
    /// Pages in the region.
    pub pages: u64,
    /// Score points this region cost (once per region, whatever its findings).
    pub penalty: u8,
}

impl RegionChange {
    /// One line for people: `kernel-text (code critical, 3 page(s) changed, RELABELLED …)`.
    pub fn describe(&self) -> String {
        let findings: Vec<String> = self
            .findings
            .iter()
            .map(|f| match f {
                Finding::Changed => format!("{} page(s) changed", self.changed_pages),
                Finding::Missing => "MISSING from the evidence".into(),
                Finding::Relabelled => format!(
                    "RELABELLED {} by the evidence",
                    self.claimed.as_deref().unwrap_or("?")
                ),
                Finding::Resized => format!("RESIZED to {} page(s)", self.pages),
                Finding::Remapped => {
                    "REMAPPED to other guest-physical pages within one boot".into()
                }
            })
            .collect();
        let findings = if findings.is_empty() {
            vec![format!("{} page(s) changed", self.changed_pages)]
        } else {
            findings
        };
        format!(
            "{} ({} {}, {})",
            self.region,
            self.class,
            self.severity,
            findings.join(", ")
        )
    }
}

/// A difference the verifier found between a snapshot's kernel objects and its golden state
/// (`docs/kernel-objects.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelFinding {
    /// Its kind: `hidden_process`, `hidden_module`, `hooked_syscall`, `hooked_gate`,
    /// `walk_failed`, `new_root_process`, `new_module` or `new_process`.
    pub kind: String,
    /// Severity (the VM's policy's, else the kind's default).
    pub severity: vmseal_sealer::claims::Severity,
    /// What it is about: `pid 36 kswapd0`, `module virtio_ring`, `syscall 134`, `gate 3`.
    pub subject: String,
    /// What differs, in words.
    pub detail: String,
}

impl KernelFinding {
    /// One line for people: `hidden process pid 2 kthreadd (critical): …`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({}): {}",
            self.kind.replace('_', " "),
            self.subject,
            self.severity,
            self.detail
        )
    }
}

/// The appraisal of a snapshot's kernel objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelAppraisal {
    /// What differs, most severe first.
    pub findings: Vec<KernelFinding>,
    /// Score points the findings cost: each kind once, at its severity.
    pub penalty: u8,
    /// Whether a golden kernel state was compared against (without one, only hidden objects and
    /// walks that did not finish are findings).
    pub golden: bool,
    /// Processes the snapshot holds.
    pub processes: u64,
    /// Modules the snapshot holds.
    pub modules: u64,
}

/// A region of the appraised evidence, as its signed claims state it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppraisedRegion {
    /// Name.
    pub name: String,
    /// Class the evidence gives it.
    pub class: vmseal_sealer::claims::RegionClass,
    /// Severity the evidence gives it.
    pub severity: vmseal_sealer::claims::Severity,
    /// Pages it holds.
    pub pages: u64,
    /// Its Merkle root, hex.
    pub root: String,
    /// Guest-physical ranges `[start, len]` (absent in answers stored before they were kept).
    #[serde(default)]
    pub ranges: Vec<[u64; 2]>,
}

fn answered() -> bool {
    true
}

/// The verifier's verdict on one evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Appraisal {
    /// VM.
    pub vm_id: String,
    /// Sequence number appraised.
    pub seq: u64,
    /// Evidence digest (SHA-256), hex.
    pub evidence: String,
    /// Trust score 0-100.
    pub score: u8,
    /// Tier.
    pub tier: Tier,
    /// AR4SI trust vector.
    pub trust_vector: TrustVector,
    /// Regions that differ from what the verifier expects.
    pub changes: Vec<RegionChange>,
    /// Regions of the evidence no baseline covers.
    pub unbaselined: Vec<String>,
    /// Baseline version compared against.
    pub baseline_version: Option<u64>,
    /// Why no baseline was compared against although one exists (it was captured under another
    /// policy than the one assigned: promote one under the assigned policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_note: Option<String>,
    /// Whether the evidence belongs to another guest boot than the VM's previous snapshot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot_changed: bool,
    /// Whether the score is below the VM's alert threshold.
    pub alert: bool,
    /// What the hardware policy checked of the host's anchors (`snp.policy.debug`, `tpm.pcr[7]`,
    /// …): the `hardware` claim is only as strong as this list.
    pub hardware_checked: Vec<String>,
    /// Why the host's hardware no longer passes its re-appraisal, if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_problem: Option<String>,
    /// The appraisal of the snapshot's kernel objects, when it carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelAppraisal>,
}

/// The answer to evidence: the verdict, its signed results, and the evidence's regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppraisalResult {
    /// The verdict (its fields sit at the top level of the JSON).
    #[serde(flatten)]
    pub appraisal: Appraisal,
    /// The signed result, EAR as a JWT.
    pub ear: String,
    /// The same, COSE_Sign1 over CBOR, base64 (empty in answers stored before 0.1 had it).
    #[serde(default)]
    pub ear_cbor: String,
    /// The evidence's regions.
    #[serde(default)]
    pub regions: Vec<AppraisedRegion>,
    /// The SHA-256 (hex) of the evidence's `kernel` claim, its deterministic CBOR: promoting the
    /// snapshot takes its golden kernel state from the host's baseline file, checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_digest: Option<String>,
    /// The page hash.
    pub hash_alg: String,
    /// The capture policy's digest, hex (empty in answers stored before the verifier kept it).
    #[serde(default)]
    pub policy_digest: String,
    /// Whether the evidence answered a verifier nonce (answers stored before it was said did).
    #[serde(default = "answered")]
    pub nonce: bool,
    /// Sent again: the stored answer to evidence the verifier had accepted already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A result reads as its verdict: `result.score`, `result.changes`.
impl std::ops::Deref for AppraisalResult {
    type Target = Appraisal;
    fn deref(&self) -> &Appraisal {
        &self.appraisal
    }
}

/// `GET /v1/vms/{vm}/appraisals`: a VM's latest accepted appraisals, newest first, each exactly
/// as it was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppraisalList {
    /// VM.
    pub vm_id: String,
    /// Newest first.
    pub appraisals: Vec<AppraisalResult>,
}
