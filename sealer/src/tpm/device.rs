//! The TPM side of the root of trust (tss-esapi over any TCTI).
//!
//! - The **endorsement key** (RSA-2048, TCG default template) and its certificate from NV index
//!   0x1c00002.
//! - An **attestation key**: ECC P-256, restricted signing, created under the EK so that
//!   credential activation ([`Tpm::activate_credential`]) proves it lives in the same TPM.
//! - **Quotes** over host PCRs whose `extraData` binds the intermediate key.
//! - **Sealing** of the intermediate key's seed to a PCR policy under a storage primary key in the
//!   owner hierarchy: after a TPM restart it unseals; after a quoted PCR changes it does not.

use std::str::FromStr;

use tss_esapi::Context;
use tss_esapi::abstraction::{ak, ek, pcr};
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::AsymmetricAlgorithm;
use tss_esapi::interface_types::algorithm::{
    HashingAlgorithm, PublicAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EccPoint, EncryptedSecret, IdObject, KeyedHashScheme, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyedHashParameters, SensitiveData, SignatureScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use crate::anchor::PcrValue;

/// Errors talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is invalid or the TPM cannot be reached.
    #[error(
        "cannot open TPM at {tcti:?}: {source} (is swtpm or the TPM device up? e.g. swtpm:host=127.0.0.1,port=2321 or device:/dev/tpmrm0)"
    )]
    Open {
        /// The TCTI.
        tcti: String,
        /// Cause.
        #[source]
        source: tss_esapi::Error,
    },
    /// The TCTI string is not one vmseal understands (checked before the TPM library sees it:
    /// it would fall back to a default silently).
    #[error("TPM address {tcti:?}: {reason}")]
    BadTcti {
        /// The TCTI.
        tcti: String,
        /// What is wrong, and the right form.
        reason: String,
    },
    /// A TPM command failed.
    #[error("TPM command {command} failed: {source}")]
    Command {
        /// Which operation.
        command: &'static str,
        /// Cause.
        #[source]
        source: tss_esapi::Error,
    },
    /// The TPM has no EK certificate in NV.
    #[error(
        "the TPM has no RSA EK certificate at NV index 0x1c00002 (swtpm: run swtpm_setup with --create-ek-cert)"
    )]
    NoEkCertificate,
    /// The PCR policy no longer holds: the sealed key cannot be used in this host state.
    #[error(
        "the TPM refused to unseal the intermediate key: PCRs {pcrs:?} differ from when it was sealed ({source})"
    )]
    PolicyMismatch {
        /// The PCRs of the policy.
        pcrs: Vec<u8>,
        /// The TPM's answer.
        #[source]
        source: tss_esapi::Error,
    },
    /// A stored blob is malformed.
    #[error("stored TPM blob {0} is malformed")]
    Blob(&'static str),
    /// A PCR index is out of range.
    #[error("PCR index {0} is out of range (0-23)")]
    PcrIndex(u8),
}

fn cmd(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { command, source }
}

/// An attestation key as stored on disk: the TPM-wrapped private part and the public part.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AkBlob {
    /// `TPM2B_PRIVATE` contents (encrypted by the EK; useless outside this TPM).
    #[serde(with = "serde_bytes")]
    pub private: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC`.
    #[serde(with = "serde_bytes")]
    pub public: Vec<u8>,
}

/// A sealed data object: the intermediate seed under a PCR policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedBlob {
    /// `TPM2B_PRIVATE` contents.
    #[serde(with = "serde_bytes")]
    pub private: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC`.
    #[serde(with = "serde_bytes")]
    pub public: Vec<u8>,
    /// sha256 PCRs of the policy.
    pub pcrs: Vec<u8>,
}

/// A quote, ready to travel in a [`crate::anchor::TpmAnchor`].
#[derive(Debug, Clone)]
pub struct Quote {
    /// Marshalled `TPMS_ATTEST`.
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// PCR values quoted, in selection order.
    pub pcrs: Vec<PcrValue>,
}

/// An open TPM.
pub struct Tpm {
    ctx: Context,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

fn slot(i: u8) -> Result<PcrSlot, TpmError> {
    if i > 23 {
        return Err(TpmError::PcrIndex(i));
    }
    PcrSlot::try_from(1u32 << i).map_err(|_| TpmError::PcrIndex(i))
}

fn sha256_selection(pcrs: &[u8]) -> Result<PcrSelectionList, TpmError> {
    let slots = pcrs
        .iter()
        .map(|&i| slot(i))
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("build PCR selection"))
}

/// Check a TCTI string's syntax: `device:PATH`, `swtpm:host=H,port=P` or `mssim:…` (either key may
/// be left out for its default, 127.0.0.1 and 2321, but nothing else may be there), `tabrmd[:…]`.
/// The TPM library itself falls back to defaults on what it does not understand — a typo in a
/// port would silently talk to another TPM.
pub fn check_tcti(tcti: &str) -> Result<(), String> {
    const FORMS: &str = "use device:/dev/tpmrm0 (the kernel's resource manager), \
                         swtpm:host=127.0.0.1,port=2321 (a software TPM), or tabrmd";
    let (kind, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
    match kind {
        "device" => {
            if !conf.starts_with('/') {
                return Err(format!(
                    "device: needs an absolute path, e.g. device:/dev/tpmrm0; {FORMS}"
                ));
            }
            Ok(())
        }
        "swtpm" | "mssim" => {
            let mut seen = Vec::new();
            for part in conf.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("{part:?} is not key=value; {kind}:host=H,port=P"))?;
                if seen.contains(&k) {
                    return Err(format!("{k} is given twice"));
                }
                seen.push(k);
                match k {
                    "host" if !v.is_empty() => {}
                    "port" => {
                        let p: u16 = v
                            .parse()
                            .map_err(|_| format!("port {v:?} is not a number 1-65535"))?;
                        if p == 0 {
                            return Err("port 0 is not a port".into());
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{part:?}: {kind}: takes host=H and port=P only; {FORMS}"
                        ));
                    }
                }
            }
            Ok(())
        }
        "tabrmd" => Ok(()),
        _ if tcti.starts_with("/dev/") => Err(format!(
            "a device path needs the device: prefix: device:{tcti}"
        )),
        _ => Err(format!("unknown TPM interface {kind:?}; {FORMS}")),
    }
}

impl Tpm {
    /// Open a TPM through a TCTI string (`swtpm:host=…,port=…`, `device:/dev/tpmrm0`, …), whose
    /// syntax is checked first ([`check_tcti`]).
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        check_tcti(tcti).map_err(|reason| TpmError::BadTcti {
            tcti: tcti.to_owned(),
            reason,
        })?;
        let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::Open {
            tcti: tcti.to_owned(),
            source,
        })?;
        let ctx = Context::new(conf).map_err(|source| TpmError::Open {
            tcti: tcti.to_owned(),
            source,
        })?;
        Ok(Self { ctx })
    }

    /// The RSA-2048 EK certificate (DER) from NV.
    pub fn ek_certificate(&mut self) -> Result<Vec<u8>, TpmError> {
        ek::retrieve_ek_pubcert(
            &mut self.ctx,
            tss_esapi::abstraction::AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        )
        .map_err(|_| TpmError::NoEkCertificate)
    }

    fn ek_handle(&mut self) -> Result<KeyHandle, TpmError> {
        ek::create_ek_object(&mut self.ctx, AsymmetricAlgorithm::Rsa, None)
            .map_err(cmd("create EK"))
    }

    /// The EK public area (marshalled `TPMT_PUBLIC`), for credential activation.
    pub fn ek_public(&mut self) -> Result<Vec<u8>, TpmError> {
        let ek = self.ek_handle()?;
        let r = self.ctx.read_public(ek).map_err(cmd("read EK public"));
        self.flush(ek.into());
        r?.0.marshall().map_err(cmd("marshal EK public"))
    }

    fn flush(&mut self, h: ObjectHandle) {
        // Best effort: a leaked transient handle is reclaimed when the TPM resets.
        let _ = self.ctx.flush_context(h);
    }

    /// Create an attestation key (ECC P-256, ECDSA-SHA256, restricted signing) under the EK.
    pub fn create_ak(&mut self) -> Result<AkBlob, TpmError> {
        let ek = self.ek_handle()?;
        let r = ak::create_ak_2(
            &mut self.ctx,
            ek,
            HashingAlgorithm::Sha256,
            tss_esapi::abstraction::AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        )
        .map_err(cmd("create AK"));
        self.flush(ek.into());
        let r = r?;
        Ok(AkBlob {
            private: r.out_private.value().to_vec(),
            public: r.out_public.marshall().map_err(cmd("marshal AK public"))?,
        })
    }

    fn load_ak(&mut self, blob: &AkBlob) -> Result<(KeyHandle, KeyHandle), TpmError> {
        let private =
            Private::try_from(blob.private.clone()).map_err(|_| TpmError::Blob("AK private"))?;
        let public = Public::unmarshall(&blob.public).map_err(|_| TpmError::Blob("AK public"))?;
        let ek = self.ek_handle()?;
        match ak::load_ak(&mut self.ctx, ek, None, private, public) {
            Ok(h) => Ok((ek, h)),
            Err(e) => {
                self.flush(ek.into());
                Err(TpmError::Command {
                    command: "load AK",
                    source: e,
                })
            }
        }
    }

    /// The TPM name of the AK (what MakeCredential binds).
    pub fn ak_name(&mut self, blob: &AkBlob) -> Result<Vec<u8>, TpmError> {
        let (ek, akh) = self.load_ak(blob)?;
        let r = self.ctx.read_public(akh).map_err(cmd("read AK public"));
        self.flush(akh.into());
        self.flush(ek.into());
        Ok(r?.1.value().to_vec())
    }

    /// TPM2_ActivateCredential: recover the secret a verifier wrapped for this EK and AK name.
    pub fn activate_credential(
        &mut self,
        blob: &AkBlob,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let id = IdObject::try_from(credential_blob.to_vec())
            .map_err(|_| TpmError::Blob("credential blob"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(|_| TpmError::Blob("encrypted secret"))?;
        let (ek, akh) = self.load_ak(blob)?;
        let result = (|| {
            let session = self
                .ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Policy,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(cmd("start policy session"))?
                .ok_or(TpmError::Blob("policy session"))?;
            let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            self.ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.policy_secret(
                        policy,
                        tss_esapi::handles::AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(cmd("PolicySecret(endorsement)"))?;
            let r = self
                .ctx
                .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                    ctx.activate_credential(akh, ek, id, secret)
                })
                .map_err(cmd("ActivateCredential"));
            self.flush(SessionHandle::from(session).into());
            r
        })();
        self.flush(akh.into());
        self.flush(ek.into());
        Ok(Zeroizing::new(result?.value().to_vec()))
    }

    /// Read sha256 PCRs (all of them, however many one TPM2_PCR_Read returns).
    pub fn read_pcrs(&mut self, pcrs: &[u8]) -> Result<Vec<PcrValue>, TpmError> {
        let sel = sha256_selection(pcrs)?;
        let data = self
            .ctx
            .execute_without_session(|ctx| pcr::read_all(ctx, sel))
            .map_err(cmd("PCR_Read"))?;
        let mut out = Vec::new();
        for (alg, bank) in data {
            let bank_name = match alg {
                HashingAlgorithm::Sha256 => "sha256",
                HashingAlgorithm::Sha1 => "sha1",
                HashingAlgorithm::Sha384 => "sha384",
                HashingAlgorithm::Sha512 => "sha512",
                _ => "unknown",
            };
            for (slot, digest) in bank.into_iter() {
                let index = u32::from(*slot).trailing_zeros() as u8;
                out.push(PcrValue {
                    bank: bank_name.into(),
                    index,
                    value: digest.value().to_vec(),
                });
            }
        }
        out.sort_by_key(|p| p.index);
        Ok(out)
    }

    /// TPM2_Quote over sha256 `pcrs` with `extra_data` (≤ 64 bytes) by the AK.
    pub fn quote(
        &mut self,
        blob: &AkBlob,
        extra_data: &[u8],
        pcrs: &[u8],
    ) -> Result<Quote, TpmError> {
        let sel = sha256_selection(pcrs)?;
        let data = Data::try_from(extra_data.to_vec()).map_err(cmd("quote extraData"))?;
        let values = self.read_pcrs(pcrs)?;
        let (ek, akh) = self.load_ak(blob)?;
        let r = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.quote(akh, data, SignatureScheme::Null, sel))
            .map_err(cmd("Quote"));
        self.flush(akh.into());
        self.flush(ek.into());
        let (attest, signature) = r?;
        Ok(Quote {
            attest: attest.marshall().map_err(cmd("marshal TPMS_ATTEST"))?,
            signature: signature
                .marshall()
                .map_err(cmd("marshal TPMT_SIGNATURE"))?,
            pcrs: values,
        })
    }

    fn storage_primary(&mut self) -> Result<KeyHandle, TpmError> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build()
            .map_err(cmd("SRK attributes"))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()
                .map_err(cmd("SRK parameters"))?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .map_err(cmd("SRK template"))?;
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(cmd("CreatePrimary(owner storage key)"))
    }

    fn pcr_policy_digest(&mut self, pcrs: &[u8]) -> Result<Digest, TpmError> {
        let sel = sha256_selection(pcrs)?;
        let values = self.read_pcrs(pcrs)?;
        let concat: Vec<u8> = values
            .iter()
            .flat_map(|v| v.value.iter().copied())
            .collect();
        let pcr_digest = Digest::try_from(crate::merkle::HashAlg::Sha256.hash(&[&concat]).to_vec())
            .map_err(cmd("PCR digest"))?;
        let trial = self.start_policy(SessionType::Trial)?;
        let r = self
            .ctx
            .policy_pcr(trial, pcr_digest, sel)
            .and_then(|_| self.ctx.policy_get_digest(trial))
            .map_err(cmd("PolicyPCR (trial)"));
        self.flush(SessionHandle::from(AuthSession::from(trial)).into());
        r
    }

    fn start_policy(&mut self, kind: SessionType) -> Result<PolicySession, TpmError> {
        let s = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd("start policy session"))?
            .ok_or(TpmError::Blob("policy session"))?;
        let (attrs, mask) = SessionAttributesBuilder::new().build();
        self.ctx
            .tr_sess_set_attributes(s, attrs, mask)
            .map_err(cmd("session attributes"))?;
        PolicySession::try_from(s).map_err(cmd("policy session"))
    }

    /// Seal `secret` (≤ 128 bytes) to the current values of sha256 `pcrs`.
    pub fn seal(&mut self, secret: &[u8], pcrs: &[u8]) -> Result<SealedBlob, TpmError> {
        let policy = self.pcr_policy_digest(pcrs)?;
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .with_admin_with_policy(true)
            .with_user_with_auth(false)
            .build()
            .map_err(cmd("sealed object attributes"))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Default::default())
            .build()
            .map_err(cmd("sealed object template"))?;
        let data = SensitiveData::try_from(secret.to_vec()).map_err(cmd("sealed data"))?;
        let srk = self.storage_primary()?;
        let r = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create(srk, public, None, Some(data), None, None)
            })
            .map_err(cmd("Create(sealed object)"));
        self.flush(srk.into());
        let r = r?;
        Ok(SealedBlob {
            private: r.out_private.value().to_vec(),
            public: r
                .out_public
                .marshall()
                .map_err(cmd("marshal sealed public"))?,
            pcrs: pcrs.to_vec(),
        })
    }

    /// Unseal a [`SealedBlob`]; fails with [`TpmError::PolicyMismatch`] when its PCRs changed.
    pub fn unseal(&mut self, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let private = Private::try_from(blob.private.clone())
            .map_err(|_| TpmError::Blob("sealed private"))?;
        let public =
            Public::unmarshall(&blob.public).map_err(|_| TpmError::Blob("sealed public"))?;
        let sel = sha256_selection(&blob.pcrs)?;
        let srk = self.storage_primary()?;
        let loaded = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.load(srk, private, public))
            .map_err(cmd("Load(sealed object)"));
        let obj = match loaded {
            Ok(h) => h,
            Err(e) => {
                self.flush(srk.into());
                return Err(e);
            }
        };
        let result = (|| {
            let session = self.start_policy(SessionType::Policy)?;
            let r = match self.ctx.policy_pcr(session, Digest::default(), sel) {
                Err(source) => Err(TpmError::PolicyMismatch {
                    pcrs: blob.pcrs.clone(),
                    source,
                }),
                Ok(()) => self
                    .ctx
                    .execute_with_session(Some(AuthSession::from(session)), |ctx| {
                        ctx.unseal(obj.into())
                    })
                    .map_err(|source| TpmError::PolicyMismatch {
                        pcrs: blob.pcrs.clone(),
                        source,
                    }),
            };
            self.flush(SessionHandle::from(AuthSession::from(session)).into());
            r
        })();
        self.flush(obj.into());
        self.flush(srk.into());
        Ok(Zeroizing::new(result?.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::check_tcti;

    #[test]
    fn tcti_strings_are_checked_before_the_library_falls_back_to_defaults() {
        for ok in [
            "device:/dev/tpmrm0",
            "swtpm:host=127.0.0.1,port=2321",
            "swtpm:port=40000",
            "swtpm:",
            "mssim:host=tpm.local,port=2321",
            "tabrmd",
            "tabrmd:bus_name=com.intel.tss2.Tabrmd",
        ] {
            check_tcti(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, says) in [
            ("/dev/tpmrm0", "device:/dev/tpmrm0"),
            ("device:tpmrm0", "absolute path"),
            ("swtpm:host=127.0.0.1,prot=2321", "host=H and port=P only"),
            ("swtpm:port=23x1", "not a number"),
            ("swtpm:port=0", "not a port"),
            ("swtpm:127.0.0.1:2321", "not key=value"),
            ("swtpm:port=1,port=2", "twice"),
            ("swtmp:port=2321", "unknown TPM interface"),
        ] {
            let e = check_tcti(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
