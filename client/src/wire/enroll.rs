//! Enrollment: tokens, the host's request, the credential challenge, and what an enrolling host's
//! hardware must be.

use serde::{Deserialize, Serialize};

/// `POST /v1/enrollment-tokens` body (admin): a one-use bootstrap credential for one host.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewEnrollmentToken {
    /// Lifetime in minutes (1 to 10,080; 60 when absent).
    #[serde(default)]
    pub valid_minutes: Option<u32>,
    /// Only this host may enrol with it (any host when absent).
    #[serde(default)]
    pub host_id: Option<String>,
    /// The anchors the enrolling intermediate must carry: `tpm`, `snp`, `both` or `none`
    /// (the service's `--require` when absent). A guest shim in a confidential VM has `snp`.
    #[serde(default)]
    pub require: Option<String>,
    /// Let another hardware root take over `host_id` (a replaced machine). Without it, a host id
    /// stays with the TPM / SNP platform that first enrolled it.
    #[serde(default)]
    pub replace: bool,
    /// Let a rebuilt host (same id, a new intermediate key) continue the evidence chains of its
    /// VMs from where the verifier's stand; each continued chain is audited. Without it, such an
    /// enrollment is refused `chains_exist` while any of the host's VMs has evidence.
    #[serde(default)]
    pub restart_chains: bool,
    /// The hardware policy this host must meet, instead of the service's.
    #[serde(default)]
    pub hardware: Option<HardwarePolicy>,
}

/// A bootstrap credential: a client certificate with role `enroll`, good for one enrollment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentToken {
    /// Token id (the certificate's CN).
    pub token_id: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// Client certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM. Hand it to the host over a channel you trust.
    pub key_pem: String,
}

/// `POST /v1/enrollments` body (bootstrap credential): the host's enrollment bundle.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentRequest {
    /// The intermediate certificate (DER, base64): its anchors carry the AK, the quote, the EK
    /// certificate and the SNP report.
    pub intermediate: String,
    /// The TPM's EK public area (marshalled `TPMT_PUBLIC`, base64), when the intermediate has a
    /// TPM anchor: the credential challenge is wrapped for it.
    #[serde(default)]
    pub ek_public: Option<String>,
    /// The agent's certificate request (PKCS#10, PEM); its key never leaves the host.
    pub csr_pem: String,
    /// Anchors made now for the verifier's challenge (`POST /v1/enrollment-challenges`): CBOR
    /// `FreshAnchors` (a TPM quote and an SNP report binding the intermediate's SPKI with the
    /// challenge's nonce), base64. Required when the intermediate has any anchor.
    #[serde(default)]
    pub fresh: Option<String>,
}

/// The verifier's answer to an enrollment request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EnrollmentAnswer {
    /// Prove the AK lives in the TPM of the EK: activate this credential and send back the secret.
    Challenge(CredentialChallenge),
    /// Enrolled without a challenge (no TPM anchor).
    Enrolled(Enrolled),
}

/// A credential challenge (TPM2_MakeCredential output for the EK, bound to the AK's name).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialChallenge {
    /// Answer under `POST /v1/enrollments/{enrollment_id}/activation`.
    pub enrollment_id: String,
    /// `TPM2B_ID_OBJECT` contents, base64.
    pub credential_blob: String,
    /// `TPM2B_ENCRYPTED_SECRET` contents, base64.
    pub encrypted_secret: String,
    /// Seconds the challenge stays open.
    pub expires_in: i64,
}

/// `POST /v1/enrollments/{id}/activation` body: what TPM2_ActivateCredential returned.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Activation {
    /// The recovered secret, base64.
    pub secret: String,
}

/// Enrollment result: the host's pinned intermediate and its agent certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enrolled {
    /// Host id (from the intermediate certificate).
    pub host_id: String,
    /// SHA-256 of the pinned intermediate, hex.
    pub intermediate_sha256: String,
    /// Whether the SNP anchor was the INSECURE stand-in (accepted by configuration).
    pub insecure: bool,
    /// Whether the AK was bound to the EK by credential activation.
    pub activated: bool,
    /// Agent client certificate, PEM (for the key of the certificate request).
    pub agent_cert_pem: String,
    /// What the hardware policy checked of the anchors (`snp.policy.debug`, `tpm.pcr[0]`, …).
    #[serde(default)]
    pub hardware_checked: Vec<String>,
}

/// What an enrolling host's hardware must be: the service's defaults (`[hardware]` in the
/// verifier's configuration) or an enrollment token's own. A refusal names the field, the value
/// found and the value required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HardwarePolicy {
    /// Accept SEV-SNP guests whose policy allows DEBUG (the hypervisor can then read and write
    /// their memory): false by default.
    #[serde(default)]
    pub allow_debug: bool,
    /// Accept guests whose policy allows a migration agent: false by default.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Accept guests whose policy allows SMT: true by default.
    #[serde(default = "yes")]
    pub allow_smt: bool,
    /// VMPLs the report may have been requested at (empty: any).
    #[serde(default)]
    pub vmpls: Vec<u32>,
    /// Allowed launch measurements, hex (empty: any).
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Allowed HOST_DATA values, hex (empty: any).
    #[serde(default)]
    pub host_data: Vec<String>,
    /// Allowed ID-block family ids, hex (empty: any).
    #[serde(default)]
    pub family_ids: Vec<String>,
    /// Allowed ID-block image ids, hex (empty: any).
    #[serde(default)]
    pub image_ids: Vec<String>,
    /// Minimum reported TCB, per component.
    #[serde(default)]
    pub min_tcb: MinTcb,
    /// Accepted report versions (empty: any).
    #[serde(default)]
    pub report_versions: Vec<u32>,
    /// Reference values of the TPM quote's SHA-256 PCRs: index ("0" to "23") → hex. Each named
    /// PCR must be in the quote with exactly this value.
    #[serde(default)]
    pub pcrs: std::collections::BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl HardwarePolicy {
    /// Check the values are well-formed (hex, PCR indices); the first problem, for a person.
    pub fn check(&self) -> Result<(), String> {
        for m in self
            .measurements
            .iter()
            .chain(&self.host_data)
            .chain(&self.family_ids)
            .chain(&self.image_ids)
            .chain(self.pcrs.values())
        {
            if hex::decode(m.trim()).is_err() {
                return Err(format!("{m:?} is not hex"));
            }
        }
        for k in self.pcrs.keys() {
            if !k.parse::<u8>().is_ok_and(|i| i < 24) {
                return Err(format!("PCR index {k:?} is not 0 to 23"));
            }
        }
        Ok(())
    }
}

impl Default for HardwarePolicy {
    fn default() -> Self {
        Self {
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            vmpls: Vec::new(),
            measurements: Vec::new(),
            host_data: Vec::new(),
            family_ids: Vec::new(),
            image_ids: Vec::new(),
            min_tcb: MinTcb::default(),
            report_versions: Vec::new(),
            pcrs: std::collections::BTreeMap::new(),
        }
    }
}

/// The lowest security version each TCB component of an SNP report may have (0: any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MinTcb {
    /// Boot loader.
    #[serde(default)]
    pub bootloader: u8,
    /// TEE (PSP OS).
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware.
    #[serde(default)]
    pub snp: u8,
    /// CPU microcode.
    #[serde(default)]
    pub microcode: u8,
    /// Firmware management controller (Turin).
    #[serde(default)]
    pub fmc: u8,
}

/// One enrolled host as `GET /v1/hosts` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostSummary {
    /// Host id.
    pub host_id: String,
    /// The hardware root that enrolled it (the TPM's EK, the SNP chip id or VLEK).
    pub hardware_root: Option<String>,
    /// Whether its SNP anchor came from the INSECURE software stand-in.
    pub insecure_anchor: bool,
    /// When it enrolled, Unix seconds.
    pub enrolled_at: i64,
    /// When an admin disabled it, Unix seconds.
    pub disabled_at: Option<i64>,
    /// SHA-256 of its pinned intermediate certificate, hex.
    pub intermediate_sha256: String,
    /// The last hardware re-appraisal: `ok`, or why not.
    pub hardware_status: Option<String>,
    /// When its agent certificate expires, Unix seconds.
    pub agent_not_after: Option<i64>,
    /// How many VMs it runs.
    pub vms: u64,
    /// When its VMs' evidence last arrived, Unix seconds.
    pub last_evidence: Option<i64>,
    /// What the hardware policy checked at enrollment.
    pub hardware_checked: Option<serde_json::Value>,
}

/// `GET /v1/hosts`: every enrolled host, by id.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostList {
    /// The hosts.
    pub hosts: Vec<HostSummary>,
}

/// `POST /v1/hosts/{host}/disable` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostDisabled {
    /// Host id.
    pub host_id: String,
    /// The serial (hex) of the agent certificate revoked, when one was recorded.
    pub revoked_serial: Option<String>,
}
