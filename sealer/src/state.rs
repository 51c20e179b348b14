//! A sealing host's state directory: the AK, the intermediate certificate, the TPM-sealed seed of
//! the intermediate key, and each VM's position in its evidence chain.
//!
//! ```text
//! DIR/state.json             host id, TCTI, PCR policy, SNP provider, format version
//! DIR/ak.cbor                attestation key blob (TPM-wrapped private part + public)
//! DIR/ek-cert.der            EK certificate read from the TPM
//! DIR/intermediate.der       the intermediate certificate (anchors inside)
//! DIR/intermediate-key.sealed  the ML-DSA-87 seed, sealed by the TPM to the PCR policy — or, in
//!                            an SEV-SNP guest without a TPM (`vmseal-shim init`), by a key the
//!                            Secure Processor derives for the guest's launch measurement
//! DIR/insecure-snp.cbor      INSECURE stand-in hierarchy with private keys (insecure-soft only)
//! DIR/insecure-snp-ark.pem   its test ARK and ASK, for a verifier that is told to accept them
//! DIR/vms/<vm>.json          next sequence number and digest of the last evidence
//! ```
//!
//! Every file is written atomically (temporary file, fsync, rename), so a crash never leaves a
//! half-written state; `init` refuses to overwrite an existing state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::anchor::{FreshAnchors, SnpAnchor, TpmAnchor, snp_binding, tpm_binding};
use crate::evidence::{SealError, Sealer};
use crate::keys::IntermediateKey;
use crate::merkle::Digest;
use crate::snp::Product;
use crate::snp::provider::{ConfigfsTsm, InsecureSoft, ProviderError, ReportProvider, SevGuest};
use crate::snp::standin::{StandInError, TestHierarchy};
use crate::tpm::{AkBlob, SealedBlob, Tpm, TpmError};
use crate::x509::{CertError, IntermediateProfile, issue_intermediate};

/// Format version of the state directory.
pub const STATE_VERSION: u32 = 1;

/// Errors reading or writing host state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory already holds a state.
    #[error("{0} already holds a vmseal host state; use another directory or remove it first")]
    Exists(PathBuf),
    /// The directory holds no state.
    #[error("{0} holds no vmseal host state; run `vmseal-host init --state {0}` first")]
    Missing(PathBuf),
    /// A file is malformed.
    #[error("{path} is malformed: {reason}")]
    Malformed {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TPM.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// SNP.
    #[error("SEV-SNP: {0}")]
    Snp(#[from] ProviderError),
    /// Stand-in.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// Keys.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// Certificates.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Sealer.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The VM id cannot be a file name.
    #[error("VM id {0:?} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'")]
    VmId(String),
}

/// Which SNP provider anchors the intermediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnpChoice {
    /// No SNP anchor (the host is not an SNP guest).
    None,
    /// configfs-tsm.
    Configfs,
    /// /dev/sev-guest.
    SevGuest,
    /// The INSECURE software stand-in.
    InsecureSoft,
}

/// What seals the intermediate key's seed at rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedSeal {
    /// The TPM, to a PCR policy (hosts; guests with a vTPM).
    #[default]
    Tpm,
    /// AES-256-GCM under the key the SEV-SNP Secure Processor derives for this guest's launch
    /// measurement and policy (`/dev/sev-guest`), or the INSECURE stand-in's imitation of it.
    SnpDerived,
}

/// The persisted configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateConfig {
    /// Format version.
    pub version: u32,
    /// Host identifier.
    pub host_id: String,
    /// TPM TCTI used at init.
    pub tcti: String,
    /// sha256 PCRs quoted and sealed to.
    pub pcrs: Vec<u8>,
    /// SNP provider.
    pub snp: SnpChoice,
    /// What seals the seed (states written before this field existed: the TPM).
    #[serde(default)]
    pub seal: SeedSeal,
    /// When the state was created (RFC 3339).
    pub created: String,
    /// What the INSECURE stand-in reports of the guest (its fresh reports say the same).
    #[serde(default)]
    pub insecure_policy: Option<u64>,
    /// The stand-in's VMPL.
    #[serde(default)]
    pub insecure_vmpl: Option<u32>,
    /// The stand-in's launch measurement, hex.
    #[serde(default)]
    pub insecure_measurement: Option<String>,
}

impl StateConfig {
    fn knobs(&self) -> crate::snp::standin::ReportKnobs {
        crate::snp::standin::ReportKnobs {
            policy: self.insecure_policy,
            vmpl: self.insecure_vmpl,
            measurement: self
                .insecure_measurement
                .as_deref()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok()),
        }
    }
}

/// What `init` set up.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Host identifier.
    pub host_id: String,
    /// TPM TCTI.
    pub tcti: String,
    /// sha256 PCRs to quote and seal to.
    pub pcrs: Vec<u8>,
    /// SNP provider.
    pub snp: SnpChoice,
    /// How the INSECURE stand-in reports (with [`SnpChoice::InsecureSoft`] only).
    pub insecure: StandInOptions,
    /// Nonce to bind (a verifier's challenge); random when absent.
    pub nonce: Option<Vec<u8>>,
    /// Intermediate certificate lifetime.
    pub validity: Duration,
}

/// How the INSECURE software SEV-SNP stand-in makes its reports (tests only: its reports prove
/// nothing, and verifiers refuse them unless told its root).
#[derive(Debug, Clone, Copy)]
pub struct StandInOptions {
    /// Product layout (Milan, Genoa, Turin).
    pub product: Product,
    /// Report version (2, 3 or 5).
    pub report_version: u32,
    /// What its report says of the guest (tests make bad reports with it).
    pub knobs: crate::snp::standin::ReportKnobs,
}

impl Default for StandInOptions {
    /// A Genoa, version 3 report of a guest with the default policy.
    fn default() -> Self {
        Self {
            product: Product::Genoa,
            report_version: 3,
            knobs: Default::default(),
        }
    }
}

impl StandInOptions {
    /// A fresh test hierarchy (ARK → ASK → VCEK) and its report over `report_data`.
    fn report(
        &self,
        report_data: &[u8; 64],
    ) -> Result<(TestHierarchy, crate::snp::provider::SnpEvidence), StateError> {
        let h = TestHierarchy::generate(self.product)?;
        let ev = InsecureSoft {
            hierarchy: h.clone(),
            version: self.report_version,
            knobs: self.knobs,
        }
        .report(report_data)?;
        Ok((h, ev))
    }
}

/// `state.json`, written last: its presence marks a complete state.
fn write_state_json(dir: &Path, cfg: &impl Serialize) -> Result<(), StateError> {
    let json = serde_json::to_vec_pretty(cfg).map_err(|e| malformed(&dir.join("state.json"), e))?;
    write_atomic(&dir.join("state.json"), &json)
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let ioe = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    // A bare file name has the empty parent: that is the current directory.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(ioe)?;
    tmp.write_all(bytes).map_err(ioe)?;
    tmp.as_file().sync_all().map_err(ioe)?;
    tmp.persist(path).map_err(|e| ioe(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, StateError> {
    std::fs::read(path).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, reason: impl std::fmt::Display) -> StateError {
    StateError::Malformed {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Check that a VM id is safe as a file name and as a certificate name.
pub fn check_vm_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::VmId(id.to_owned()))
    }
}

/// Summary of a completed `init`.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The intermediate certificate.
    pub intermediate_der: Vec<u8>,
    /// Name of the AK.
    pub ak_name: Vec<u8>,
    /// Whether an SNP anchor was added, and whether it is the INSECURE stand-in.
    pub snp: SnpChoice,
}

/// Create the host state in `dir`: AK, intermediate key and certificate, sealed seed.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitReport, StateError> {
    if dir.join("state.json").exists() {
        return Err(StateError::Exists(dir.to_owned()));
    }
    std::fs::create_dir_all(dir.join("vms")).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    crate::keys::warm_up();

    let mut tpm = Tpm::open(&opts.tcti)?;
    let ek_cert = tpm.ek_certificate()?;
    let ak = tpm.create_ak()?;
    let ak_name = tpm.ak_name(&ak)?;
    let key = IntermediateKey::generate()?;
    let nonce = binding_nonce(opts.nonce.as_deref())?;
    let quote = tpm.quote(&ak, &tpm_binding(key.spki_der(), &nonce), &opts.pcrs)?;
    let tpm_anchor = TpmAnchor {
        attest: quote.attest,
        signature: quote.signature,
        ak_public: ak.public.clone(),
        ek_cert: ek_cert.clone(),
        pcrs: quote.pcrs,
        nonce: nonce.clone(),
    };

    let report_data = snp_binding(key.spki_der(), &nonce);
    let mut insecure = None;
    let snp = match opts.snp {
        SnpChoice::None => None,
        SnpChoice::Configfs => Some(ConfigfsTsm::default().report(&report_data)?),
        SnpChoice::SevGuest => Some(SevGuest::default().report(&report_data)?),
        SnpChoice::InsecureSoft => {
            let (h, ev) = opts.insecure.report(&report_data)?;
            insecure = Some(h);
            Some(ev)
        }
    };
    let snp_anchor = snp.map(|e| SnpAnchor {
        provider: e.provider,
        report: e.report,
        vek: e.vek,
        ask: e.ask,
        ark: e.ark,
        nonce: nonce.clone(),
    });
    let intermediate_der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: &opts.host_id,
            tpm: Some(&tpm_anchor),
            snp: snp_anchor.as_ref(),
            validity: opts.validity,
        },
        OffsetDateTime::now_utc(),
    )?;
    let sealed = tpm.seal(key.seed().as_ref(), &opts.pcrs)?;

    if let Some(h) = &insecure {
        write_insecure(dir, h)?;
    }
    write_atomic(&dir.join("ak.cbor"), &crate::anchor::encode(&ak))?;
    write_atomic(&dir.join("ek-cert.der"), &ek_cert)?;
    write_atomic(
        &dir.join("intermediate-key.sealed"),
        &crate::anchor::encode(&sealed),
    )?;
    write_atomic(&dir.join("intermediate.der"), &intermediate_der)?;
    let cfg = StateConfig {
        version: STATE_VERSION,
        host_id: opts.host_id.clone(),
        tcti: opts.tcti.clone(),
        pcrs: opts.pcrs.clone(),
        snp: opts.snp,
        seal: SeedSeal::Tpm,
        created: now_rfc3339(),
        insecure_policy: opts.insecure.knobs.policy,
        insecure_vmpl: opts.insecure.knobs.vmpl,
        insecure_measurement: opts.insecure.knobs.measurement.map(hex::encode),
    };
    write_state_json(dir, &cfg)?;
    Ok(InitReport {
        intermediate_der,
        ak_name,
        snp: opts.snp,
    })
}

/// Keep the INSECURE stand-in's hierarchy (it is the guest's "derived key" too) and its test
/// roots, for a verifier that is told to accept them.
fn write_insecure(dir: &Path, h: &TestHierarchy) -> Result<(), StateError> {
    write_atomic(&dir.join("insecure-snp.cbor"), &h.to_bytes())?;
    let pem = pem::encode_many(&[
        pem::Pem::new("CERTIFICATE", h.ark.clone()),
        pem::Pem::new("CERTIFICATE", h.ask.clone()),
    ]);
    write_atomic(&dir.join("insecure-snp-ark.pem"), pem.as_bytes())
}

/// The nonce an anchor binds: the verifier's challenge, or 32 fresh random bytes.
fn binding_nonce(given: Option<&[u8]>) -> Result<Vec<u8>, StateError> {
    match given {
        Some(n) => Ok(n.to_vec()),
        None => {
            let mut n = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut n).map_err(|_| crate::keys::KeyError::Rng)?;
            Ok(n)
        }
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What `init_guest` sets up: a state for an SEV-SNP guest without a TPM.
#[derive(Debug, Clone)]
pub struct GuestInitOptions {
    /// The guest's identity at the verifier (its "host id").
    pub host_id: String,
    /// The SNP provider: configfs-tsm or /dev/sev-guest (either way the seed is sealed with the
    /// key /dev/sev-guest derives), or the INSECURE stand-in.
    pub snp: SnpChoice,
    /// How the INSECURE stand-in reports (with [`SnpChoice::InsecureSoft`] only).
    pub insecure: StandInOptions,
    /// Nonce to bind; random when absent.
    pub nonce: Option<Vec<u8>>,
    /// Intermediate certificate lifetime.
    pub validity: Duration,
}

/// Create the state of an SEV-SNP guest without a TPM in `dir`: an intermediate key whose
/// certificate carries the guest's SNP report (REPORT_DATA binding the key), its seed sealed with
/// the guest's derived key ([`SeedSeal::SnpDerived`]).
pub fn init_guest(dir: &Path, opts: &GuestInitOptions) -> Result<InitReport, StateError> {
    if dir.join("state.json").exists() {
        return Err(StateError::Exists(dir.to_owned()));
    }
    if opts.snp == SnpChoice::None {
        return Err(malformed(
            dir,
            "a guest state without a TPM needs an SNP anchor: configfs, sev-guest or insecure-soft",
        ));
    }
    std::fs::create_dir_all(dir.join("vms")).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    crate::keys::warm_up();
    let key = IntermediateKey::generate()?;
    let nonce = binding_nonce(opts.nonce.as_deref())?;
    let report_data = snp_binding(key.spki_der(), &nonce);
    let (evidence, derived, insecure) = match opts.snp {
        SnpChoice::InsecureSoft => {
            let (h, ev) = opts.insecure.report(&report_data)?;
            let k = crate::snp::derived::insecure_key(&h).map_err(|e| malformed(dir, e))?;
            (ev, k, Some(h))
        }
        SnpChoice::Configfs => (
            ConfigfsTsm::default().report(&report_data)?,
            crate::snp::derived::sev_guest_key().map_err(|e| malformed(dir, e))?,
            None,
        ),
        SnpChoice::SevGuest | SnpChoice::None => (
            SevGuest::default().report(&report_data)?,
            crate::snp::derived::sev_guest_key().map_err(|e| malformed(dir, e))?,
            None,
        ),
    };
    let snp_anchor = SnpAnchor {
        provider: evidence.provider,
        report: evidence.report,
        vek: evidence.vek,
        ask: evidence.ask,
        ark: evidence.ark,
        nonce,
    };
    let intermediate_der = issue_intermediate(
        &key,
        &IntermediateProfile {
            host_id: &opts.host_id,
            tpm: None,
            snp: Some(&snp_anchor),
            validity: opts.validity,
        },
        OffsetDateTime::now_utc(),
    )?;
    let sealed = crate::snp::derived::seal(&derived, opts.host_id.as_bytes(), key.seed().as_ref())
        .map_err(|e| malformed(dir, e))?;
    if let Some(h) = &insecure {
        write_insecure(dir, h)?;
    }
    write_atomic(&dir.join("intermediate-key.sealed"), &sealed)?;
    write_atomic(&dir.join("intermediate.der"), &intermediate_der)?;
    let cfg = StateConfig {
        version: STATE_VERSION,
        host_id: opts.host_id.clone(),
        tcti: String::new(),
        pcrs: Vec::new(),
        snp: opts.snp,
        seal: SeedSeal::SnpDerived,
        created: now_rfc3339(),
        insecure_policy: opts.insecure.knobs.policy,
        insecure_vmpl: opts.insecure.knobs.vmpl,
        insecure_measurement: opts.insecure.knobs.measurement.map(hex::encode),
    };
    write_state_json(dir, &cfg)?;
    Ok(InitReport {
        intermediate_der,
        ak_name: Vec::new(),
        snp: opts.snp,
    })
}

/// The seed of a [`SeedSeal::SnpDerived`] state, opened with this guest's derived key.
fn open_guest_seed(dir: &Path, config: &StateConfig) -> Result<Zeroizing<Vec<u8>>, StateError> {
    let sealed_path = dir.join("intermediate-key.sealed");
    let blob = read(&sealed_path)?;
    let key = match config.snp {
        SnpChoice::InsecureSoft => {
            let hp = dir.join("insecure-snp.cbor");
            let h = TestHierarchy::from_bytes(&read(&hp)?).map_err(|e| malformed(&hp, e))?;
            crate::snp::derived::insecure_key(&h)
        }
        _ => crate::snp::derived::sev_guest_key(),
    }
    .map_err(|e| malformed(&sealed_path, e))?;
    crate::snp::derived::open(&key, config.host_id.as_bytes(), &blob)
        .map_err(|e| malformed(&sealed_path, e))
}

/// A CBOR file of the state.
fn read_cbor<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    crate::anchor::decode(&read(path)?).map_err(|e| malformed(path, e))
}

/// The state's `state.json`, checked for its format version.
fn read_config(dir: &Path) -> Result<StateConfig, StateError> {
    let cfg_path = dir.join("state.json");
    if !cfg_path.exists() {
        return Err(StateError::Missing(dir.to_owned()));
    }
    let config: StateConfig =
        serde_json::from_slice(&read(&cfg_path)?).map_err(|e| malformed(&cfg_path, e))?;
    if config.version != STATE_VERSION {
        return Err(malformed(
            &cfg_path,
            format!(
                "format version {} (expected {STATE_VERSION})",
                config.version
            ),
        ));
    }
    Ok(config)
}

/// What a host enrols with: its intermediate certificate, its TPM's EK public area, and the AK
/// that answers the verifier's credential challenge. Needs no unsealing (PCRs may have moved since
/// `init`: the verifier decides from the quote in the certificate).
#[derive(Debug)]
pub struct EnrollmentMaterial {
    /// The TPM and its AK; none in a guest state without a TPM (nothing to activate).
    tpm: Option<(Tpm, AkBlob)>,
    /// The state directory and its configuration (for fresh anchors).
    dir: PathBuf,
    config: StateConfig,
    /// Host id.
    pub host_id: String,
    /// The intermediate certificate, DER.
    pub intermediate_der: Vec<u8>,
    /// The EK public area (marshalled `TPMT_PUBLIC`).
    pub ek_public: Vec<u8>,
}

impl EnrollmentMaterial {
    /// Read the state in `dir` and open its TPM (`tcti` overrides the one recorded at init).
    pub fn open(dir: &Path, tcti: Option<&str>) -> Result<Self, StateError> {
        let config = read_config(dir)?;
        let intermediate_der = read(&dir.join("intermediate.der"))?;
        if config.seal == SeedSeal::SnpDerived {
            return Ok(Self {
                tpm: None,
                host_id: config.host_id.clone(),
                intermediate_der,
                ek_public: Vec::new(),
                dir: dir.to_owned(),
                config,
            });
        }
        let ak: AkBlob = read_cbor(&dir.join("ak.cbor"))?;
        let mut tpm = Tpm::open(tcti.unwrap_or(&config.tcti))?;
        let ek_public = tpm.ek_public()?;
        Ok(Self {
            tpm: Some((tpm, ak)),
            host_id: config.host_id.clone(),
            intermediate_der,
            ek_public,
            dir: dir.to_owned(),
            config,
        })
    }

    /// Anchors for the verifier's enrollment challenge: a fresh quote by the AK over the
    /// intermediate's SPKI and `nonce` (the PCRs of init), and a fresh SNP report binding the
    /// same, from the provider of init.
    pub fn fresh_anchors(&mut self, nonce: &[u8]) -> Result<FreshAnchors, StateError> {
        let cert = crate::x509::ParsedCert::from_der(&self.intermediate_der)?;
        let spki = cert.spki_der.clone();
        let tpm = match self.tpm.as_mut() {
            Some((tpm, ak)) => {
                let ek_cert = tpm.ek_certificate()?;
                let q = tpm.quote(ak, &tpm_binding(&spki, nonce), &self.config.pcrs)?;
                Some(TpmAnchor {
                    attest: q.attest,
                    signature: q.signature,
                    ak_public: ak.public.clone(),
                    ek_cert,
                    pcrs: q.pcrs,
                    nonce: nonce.to_vec(),
                })
            }
            None => None,
        };
        let report_data = snp_binding(&spki, nonce);
        let snp = match self.config.snp {
            SnpChoice::None => None,
            SnpChoice::Configfs => Some(ConfigfsTsm::default().report(&report_data)?),
            SnpChoice::SevGuest => Some(SevGuest::default().report(&report_data)?),
            SnpChoice::InsecureSoft => {
                let hp = self.dir.join("insecure-snp.cbor");
                let h = TestHierarchy::from_bytes(&read(&hp)?).map_err(|e| malformed(&hp, e))?;
                // The same report version as the intermediate's.
                let version = cert
                    .vmseal_extension::<SnpAnchor>(crate::oid::EXT_SNP_ANCHOR_STR)
                    .ok()
                    .flatten()
                    .and_then(|a| {
                        a.report
                            .get(0..4)
                            .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
                    })
                    .unwrap_or(3);
                Some(
                    InsecureSoft {
                        hierarchy: h,
                        version,
                        knobs: self.config.knobs(),
                    }
                    .report(&report_data)?,
                )
            }
        }
        .map(|e| SnpAnchor {
            provider: e.provider,
            report: e.report,
            vek: e.vek,
            ask: e.ask,
            ark: e.ark,
            nonce: nonce.to_vec(),
        });
        Ok(FreshAnchors {
            nonce: nonce.to_vec(),
            tpm,
            snp,
        })
    }

    /// TPM2_ActivateCredential with the host's AK: the secret of the verifier's challenge.
    pub fn activate(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let (tpm, ak) = self.tpm.as_mut().ok_or_else(|| {
            malformed(
                Path::new("state.json"),
                "the verifier sent a TPM credential challenge, but this state has no TPM",
            )
        })?;
        Ok(tpm.activate_credential(ak, credential_blob, encrypted_secret)?)
    }
}

/// A loaded host state, ready to seal.
#[derive(Debug)]
pub struct HostState {
    dir: PathBuf,
    /// Configuration.
    pub config: StateConfig,
    /// The sealer (intermediate key unsealed from the TPM).
    pub sealer: Sealer,
}

/// A VM's position in its evidence chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmChain {
    /// Sequence number the next evidence gets.
    pub next_seq: u64,
    /// SHA-256 of the last evidence, hex.
    pub prev: Option<String>,
}

impl HostState {
    /// Load the state, unsealing the intermediate key through the TPM (`tcti` overrides the one
    /// recorded at init).
    pub fn load(dir: &Path, tcti: Option<&str>) -> Result<Self, StateError> {
        let config = read_config(dir)?;
        let sealed_path = dir.join("intermediate-key.sealed");
        let seed = match config.seal {
            SeedSeal::SnpDerived => open_guest_seed(dir, &config)?,
            SeedSeal::Tpm => {
                let sealed: SealedBlob = read_cbor(&sealed_path)?;
                let mut tpm = Tpm::open(tcti.unwrap_or(&config.tcti))?;
                tpm.unseal(&sealed)?
            }
        };
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.as_slice()
                .try_into()
                .map_err(|_| malformed(&sealed_path, "unsealed seed is not 32 bytes"))?,
        );
        let key = IntermediateKey::from_seed(&seed)?;
        let intermediate_der = read(&dir.join("intermediate.der"))?;
        let cert = crate::x509::ParsedCert::from_der(&intermediate_der)?;
        if cert.spki_der != key.spki_der() {
            return Err(malformed(
                &dir.join("intermediate.der"),
                "certificate does not belong to the sealed intermediate key",
            ));
        }
        crate::keys::warm_up();
        Ok(Self {
            dir: dir.to_owned(),
            config,
            sealer: Sealer::new(key, intermediate_der)?,
        })
    }

    /// The host id of the state in `dir`, without unsealing anything.
    pub fn host_id_of(dir: &Path) -> Result<String, StateError> {
        Ok(read_config(dir)?.host_id)
    }

    /// The configuration of the state in `dir` (host id, TCTI, PCRs, …), without unsealing
    /// anything.
    pub fn config_of(dir: &Path) -> Result<StateConfig, StateError> {
        read_config(dir)
    }

    /// The AK blob.
    pub fn ak(&self) -> Result<AkBlob, StateError> {
        read_cbor(&self.dir.join("ak.cbor"))
    }

    fn vm_path(&self, vm_id: &str) -> Result<PathBuf, StateError> {
        check_vm_id(vm_id)?;
        Ok(self.dir.join("vms").join(format!("{vm_id}.json")))
    }

    /// Where `vm_id`'s chain stands.
    pub fn vm_chain(&self, vm_id: &str) -> Result<VmChain, StateError> {
        let p = self.vm_path(vm_id)?;
        if !p.exists() {
            return Ok(VmChain::default());
        }
        serde_json::from_slice(&read(&p)?).map_err(|e| malformed(&p, e))
    }

    /// Set where `vm_id`'s chain stands: the verifier's head, or back to where it stood before
    /// evidence that was never delivered (its successor takes its place).
    pub fn set_chain(&self, vm_id: &str, chain: &VmChain) -> Result<(), StateError> {
        let p = self.vm_path(vm_id)?;
        if let Some(prev) = &chain.prev
            && (prev.len() != 64 || !prev.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(malformed(&p, "a chain's prev digest is 64 hex digits"));
        }
        let json = serde_json::to_vec_pretty(chain).map_err(|e| malformed(&p, e))?;
        write_atomic(&p, &json)
    }

    /// Record that evidence with `digest` was issued for `vm_id` at `seq`.
    pub fn advance(&self, vm_id: &str, seq: u64, digest: &Digest) -> Result<(), StateError> {
        let p = self.vm_path(vm_id)?;
        let c = VmChain {
            next_seq: seq + 1,
            prev: Some(hex::encode(digest)),
        };
        let json = serde_json::to_vec_pretty(&c).map_err(|e| malformed(&p, e))?;
        write_atomic(&p, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids_are_checked() {
        for ok in ["vm-1", "a", "web_01.prod"] {
            check_vm_id(ok).unwrap();
        }
        for bad in ["", "../x", ".hidden", "a/b", "sp ace", &"x".repeat(129)] {
            assert!(check_vm_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary files left"
        );
    }
}
