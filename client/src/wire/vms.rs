//! VMs: registration, policies, thresholds, module rules, baselines and where a VM's chain
//! stands.

use serde::{Deserialize, Serialize};

/// `POST /v1/vms` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewVm {
    /// VM id.
    pub vm_id: String,
    /// Host id.
    pub host_id: String,
    /// Alert threshold (0–100).
    #[serde(default)]
    pub threshold: Option<u8>,
    /// The capture policy (TOML text, docs/policy.md) the VM must be captured under: the
    /// verifier parses it with the host's own parser, keeps it, serves it to the VM's agent, and
    /// appraises by its regions.
    #[serde(default)]
    pub policy: Option<String>,
}

/// `POST /v1/vms/{vm}/baselines` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PromoteBaseline {
    /// The appraised snapshot the baseline comes from.
    pub seq: u64,
    /// Per region, the page hashes.
    pub regions: Vec<BaselineLeaves>,
    /// The snapshot's `kernel` claim (its deterministic CBOR, hex) when it carried one: the
    /// golden kernel state, checked against the digest the appraisal kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_objects: Option<String>,
}

/// Leaves of one region.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineLeaves {
    /// Region name.
    pub name: String,
    /// Concatenated 32-byte leaves, hex.
    pub leaves: String,
}

/// `POST /v1/vms/{vm}/threshold` body (admin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetThreshold {
    /// Alert threshold (0–100).
    pub threshold: u8,
}

/// `POST /v1/vms/{vm}/policy` body (admin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignPolicy {
    /// The capture policy, TOML text (docs/policy.md); its SHA-256 is what evidence must name.
    pub policy: String,
}

/// `POST /v1/vms/{vm}/reset-chain` body (admin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetChain {
    /// The sequence number the VM's next evidence must carry (0 when absent): the host's next
    /// one (`vmseal-host` keeps it in its state).
    #[serde(default)]
    pub at: u64,
}

/// `POST /v1/vms/{vm}/modules` body (admin): which capture modules may capture the VM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllowModules {
    /// Rules `NAME VERSION [BUILD-SHA256]` (e.g. `vmseal-host 0.1.0`); empty allows any module.
    pub allowed: Vec<String>,
}

/// Where a VM's evidence chain stands at the verifier (`GET /v1/vms/{vm}/chain`, and in every
/// refusal of the VM's evidence): the next evidence must carry `next_seq` and name `prev`. The
/// host builds each snapshot on it, so a refused or lost snapshot never wedges the VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainHead {
    /// VM id.
    pub vm_id: String,
    /// The sequence number the VM's next evidence must carry.
    pub next_seq: u64,
    /// SHA-256 (hex) of the last accepted evidence, which the next one names as `prev`; none at
    /// the start of a chain (#0, or where an admin restarted it).
    pub prev: Option<String>,
}

/// `GET /v1/vms/{vm}/baseline`: the active golden baseline, so an agent computes its deltas
/// against exactly what the verifier appraises with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveBaseline {
    /// VM.
    pub vm_id: String,
    /// Its version.
    pub version: u64,
    /// The capture policy it was captured under, hex (absent for baselines promoted before the
    /// verifier kept it).
    pub policy_digest: Option<String>,
    /// The page hash.
    pub hash_alg: String,
    /// Its regions, by name.
    pub regions: Vec<ActiveBaselineRegion>,
}

/// One region of an [`ActiveBaseline`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveBaselineRegion {
    /// Name.
    pub name: String,
    /// Class (the verifier's).
    pub class: vmseal_sealer::claims::RegionClass,
    /// Severity (the verifier's).
    pub severity: vmseal_sealer::claims::Severity,
    /// Pages.
    pub pages: u64,
    /// The page digests, concatenated, hex.
    pub leaves: String,
}

/// A single-use verifier nonce: `POST /v1/vms/{vm}/nonce`, and the challenges of an enrollment
/// (`POST /v1/enrollment-challenges`) or a renewal (`POST /v1/hosts/{host}/renewal-challenges`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nonce {
    /// The nonce, hex.
    pub nonce: String,
    /// Seconds it stays valid.
    pub expires_in: i64,
}

impl Nonce {
    /// A nonce's answer.
    pub fn new(nonce: &[u8], expires_in: i64) -> Self {
        Self {
            nonce: hex::encode(nonce),
            expires_in,
        }
    }

    /// The nonce's bytes; `None` when it is not hex.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.nonce).ok()
    }
}

/// `GET /v1/vms/{vm}/policy`: the capture policy assigned to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmPolicy {
    /// VM.
    pub vm_id: String,
    /// The SHA-256 of its text, hex; `None` when none is assigned.
    pub policy_digest: Option<String>,
    /// Its text; `None` when none is assigned.
    pub policy: Option<String>,
}

/// One VM as `GET /v1/vms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmSummary {
    /// VM id.
    pub vm_id: String,
    /// Host id.
    pub host_id: String,
    /// Alert threshold.
    pub threshold: u8,
    /// Assigned policy digest, hex.
    pub policy_digest: Option<String>,
    /// Last accepted sequence number.
    pub last_seq: Option<u64>,
    /// Its latest trust score.
    pub score: Option<u8>,
    /// Its latest tier.
    pub tier: Option<super::Tier>,
    /// When it was last appraised, Unix seconds.
    pub appraised_at: Option<i64>,
    /// Active baseline version.
    pub baseline_version: Option<u64>,
}

/// `GET /v1/vms`: every VM, by id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmList {
    /// The VMs.
    pub vms: Vec<VmSummary>,
}

/// `POST /v1/vms` answer (201): the VM as registered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmRegistered {
    /// VM id.
    pub vm_id: String,
    /// Its host.
    pub host_id: String,
    /// Its alert threshold (the verifier's default when the request named none).
    pub threshold: u8,
}

/// `POST /v1/vms/{vm}/threshold` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThresholdSet {
    /// VM id.
    pub vm_id: String,
    /// The new alert threshold.
    pub threshold: u8,
}

/// `POST /v1/vms/{vm}/policy` answer: the policy now assigned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyAssigned {
    /// VM id.
    pub vm_id: String,
    /// SHA-256 of the policy text, hex.
    pub policy_digest: String,
    /// The regions it names, in order.
    pub regions: Vec<String>,
}

/// `POST /v1/vms/{vm}/reset-chain` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainReset {
    /// VM id.
    pub vm_id: String,
    /// The last accepted sequence number before the reset (none: the VM had no evidence).
    pub previous_seq: Option<u64>,
    /// The sequence number the VM's next evidence must carry.
    pub next_seq: u64,
}

/// `POST /v1/vms/{vm}/modules` answer: the rules now in force (empty: any module).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModulesAllowed {
    /// VM id.
    pub vm_id: String,
    /// Module rules, `NAME VERSION [BUILD-SHA256]`, as the verifier reads them.
    pub allowed: Vec<String>,
}

/// `DELETE /v1/vms/{vm}` answer: what was removed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmRemoved {
    /// VM id.
    pub vm_id: String,
    /// The host it was registered on.
    pub host_id: String,
    /// Its last accepted sequence number.
    pub last_seq: Option<u64>,
    /// Appraisals removed.
    pub appraisals: u64,
    /// Baseline versions removed.
    pub baselines: u64,
    /// Alerts removed.
    pub alerts: u64,
}

/// `POST /v1/vms/{vm}/baselines` answer (201): the new golden baseline version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselinePromoted {
    /// VM id.
    pub vm_id: String,
    /// The version (versions are never overwritten: each promotion adds one).
    pub version: u64,
    /// The appraised snapshot it came from.
    pub source_seq: u64,
}

/// A golden baseline version, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineVersion {
    /// Version.
    pub version: u64,
    /// The snapshot it was promoted from; null when imported from a CoRIM.
    pub source_seq: Option<u64>,
    /// Who promoted or imported it.
    pub promoted_by: String,
    /// When (Unix seconds).
    pub promoted_at: i64,
    /// The capture policy its values were captured under (hex).
    pub policy_digest: Option<String>,
    /// The trusted key that signed the CoRIM it was imported from.
    pub corim_signer: Option<String>,
    /// How many regions it holds.
    pub regions: u64,
}

/// `GET /v1/vms/{vm}/baselines` answer: every version, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineList {
    /// VM id.
    pub vm_id: String,
    /// Its versions.
    pub baselines: Vec<BaselineVersion>,
}

/// `POST /v1/vms/{vm}/baselines/corim` answer (201): the version a signed CoRIM became.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineImported {
    /// VM id.
    pub vm_id: String,
    /// The new version.
    pub version: u64,
    /// The CoRIM's id.
    pub corim_id: String,
    /// The name of the trusted key that signed it.
    pub signer: String,
    /// That key's id (hex).
    pub signer_kid: String,
    /// The issuer the CoRIM names, if any.
    pub issuer: Option<String>,
    /// How many regions it held.
    pub regions: u64,
}
