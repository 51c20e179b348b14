//! The **INSECURE** software SEV-SNP stand-in.
//!
//! No SNP hardware exists on the machines vmseal is developed and tested on, so this module
//! produces byte-exact attestation reports (versions 2, 3 and 5, in the Milan, Genoa and Turin
//! layouts) signed by a *test* VCEK under a *test* ASK and ARK that it generates: RSA-4096 with
//! RSASSA-PSS/SHA-384 for ARK and ASK, ECDSA P-384 for the VCEK, with AMD's VCEK extensions
//! (TCB SPLs, hwID, product name), exactly as AMD's KDS issues them. Every certificate subject says
//! INSECURE; the verifier refuses this hierarchy unless its trust configuration names the test ARK
//! ([`super::verify::SnpTrust::allow_insecure`]). It proves nothing about any real machine.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use der::asn1::{BitString, Ia5String, OctetString};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use std::str::FromStr;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::Product;
use super::report::{REPORT_LEN, SIGNED_LEN, SnpReport, TcbParts};
use super::verify::AmdRoots;

/// The label every output of the stand-in carries.
pub const INSECURE: &str = "INSECURE";

/// Errors of the stand-in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandInError {
    /// Key generation or signing failed.
    #[error("stand-in crypto failed: {0}")]
    Crypto(String),
    /// Certificate encoding failed.
    #[error("stand-in certificate encoding failed: {0}")]
    Der(String),
    /// Unsupported report version.
    #[error("the stand-in makes report versions 2, 3 and 5, not {0}")]
    Version(u32),
    /// A persisted hierarchy is malformed.
    #[error("stored stand-in hierarchy is malformed: {0}")]
    Stored(String),
}

fn crypto(e: impl std::fmt::Display) -> StandInError {
    StandInError::Crypto(e.to_string())
}
fn derr(e: impl std::fmt::Display) -> StandInError {
    StandInError::Der(e.to_string())
}

/// A generated test hierarchy, with the private keys needed to issue reports.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct TestHierarchy {
    /// Product layout the reports follow.
    pub product: Product,
    /// DER test ARK.
    #[serde(with = "serde_bytes")]
    pub ark: Vec<u8>,
    /// DER test ASK.
    #[serde(with = "serde_bytes")]
    pub ask: Vec<u8>,
    /// DER test VCEK.
    #[serde(with = "serde_bytes")]
    pub vcek: Vec<u8>,
    /// PKCS#8 of the VCEK's P-384 key.
    #[serde(with = "serde_bytes")]
    vcek_key: Vec<u8>,
    /// The chip ID the VCEK's hwID names.
    #[serde(with = "serde_bytes")]
    pub chip_id: Vec<u8>,
    /// The TCB the VCEK is issued for (reported_tcb).
    pub tcb: u64,
}

impl std::fmt::Debug for TestHierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHierarchy (INSECURE)")
            .field("product", &self.product)
            .finish_non_exhaustive()
    }
}

const PSS_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

fn pss_sha384_alg() -> Result<AlgorithmIdentifierOwned, StandInError> {
    // RSASSA-PSS-params: sha384, MGF1(sha384), salt 48, trailer 1 — what AMD's KDS uses.
    let params = hex::decode(concat!(
        "3034a00f300d06096086480165030402020500a11c301a06092a864886f70d010108",
        "300d06096086480165030402020500a203020130"
    ))
    .map_err(derr)?;
    Ok(AlgorithmIdentifierOwned {
        oid: PSS_OID,
        parameters: Some(der::Any::from_der(&params).map_err(derr)?),
    })
}

fn int_ext(oid: &str, v: u8) -> Result<Extension, StandInError> {
    Ok(Extension {
        extn_id: ObjectIdentifier::from_str(oid).map_err(derr)?,
        critical: false,
        extn_value: OctetString::new(
            der::asn1::Int::new(&[v])
                .map_err(derr)?
                .to_der()
                .map_err(derr)?,
        )
        .map_err(derr)?,
    })
}

fn cert(
    subject: &str,
    issuer: &str,
    spki: SubjectPublicKeyInfoOwned,
    years: u64,
    extensions: Vec<Extension>,
    signer: &RsaKeyPair,
) -> Result<Vec<u8>, StandInError> {
    let now = std::time::SystemTime::now();
    let not_before = Time::try_from(now - std::time::Duration::from_secs(86_400)).map_err(derr)?;
    let not_after =
        Time::try_from(now + std::time::Duration::from_secs(years * 365 * 86_400)).map_err(derr)?;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(crypto)?;
    serial[0] &= 0x7f;
    serial[0] |= 1;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(derr)?,
        signature: pss_sha384_alg()?,
        issuer: Name::from_str(issuer).map_err(derr)?,
        validity: Validity {
            not_before,
            not_after,
        },
        subject: Name::from_str(subject).map_err(derr)?,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(derr)?;
    let mut sig = vec![0u8; signer.public_modulus_len()];
    signer
        .sign(
            &signature::RSA_PSS_SHA384,
            &SystemRandom::new(),
            &tbs_der,
            &mut sig,
        )
        .map_err(crypto)?;
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: pss_sha384_alg()?,
        signature: BitString::from_bytes(&sig).map_err(derr)?,
    }
    .to_der()
    .map_err(derr)
}

fn rsa_spki(kp: &RsaKeyPair) -> Result<SubjectPublicKeyInfoOwned, StandInError> {
    let der = kp.public_key().as_der().map_err(crypto)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_ref()).map_err(derr)
}

fn names(product: Product) -> (String, String, String) {
    let p = product.name();
    (
        format!("CN=INSECURE vmseal test ARK-{p},O=vmseal INSECURE test hierarchy"),
        format!("CN=INSECURE vmseal test SEV-{p},O=vmseal INSECURE test hierarchy"),
        "CN=INSECURE vmseal test SEV-VCEK,O=vmseal INSECURE test hierarchy".to_string(),
    )
}

/// A plausible TCB for each product.
pub fn default_tcb(product: Product) -> TcbParts {
    match product {
        Product::Milan => TcbParts {
            fmc: 0,
            bootloader: 4,
            tee: 0,
            snp: 24,
            microcode: 219,
        },
        Product::Genoa => TcbParts {
            fmc: 0,
            bootloader: 10,
            tee: 0,
            snp: 23,
            microcode: 84,
        },
        Product::Turin => TcbParts {
            fmc: 1,
            bootloader: 1,
            tee: 1,
            snp: 1,
            microcode: 77,
        },
    }
}

fn tcb_u64(product: Product, t: TcbParts) -> u64 {
    let mut b = [0u8; 8];
    match product {
        Product::Turin => {
            b[0] = t.fmc;
            b[1] = t.bootloader;
            b[2] = t.tee;
            b[3] = t.snp;
        }
        _ => {
            b[0] = t.bootloader;
            b[1] = t.tee;
            b[6] = t.snp;
        }
    }
    b[7] = t.microcode;
    u64::from_le_bytes(b)
}

/// What a stand-in report says about its guest, where a test wants something else than the
/// defaults (policy 0x30000: SMT allowed, no DEBUG, no migration agent; VMPL 0; a fixed
/// measurement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportKnobs {
    /// The guest policy (e.g. with bit 19, DEBUG, set).
    pub policy: Option<u64>,
    /// The VMPL the report was requested at.
    pub vmpl: Option<u32>,
    /// The launch measurement.
    pub measurement: Option<[u8; 48]>,
}

/// The stand-in's default launch measurement.
pub fn default_measurement() -> [u8; 48] {
    let m = crate::anchor::snp_binding(b"vmseal INSECURE stand-in launch measurement", b"");
    let mut out = [0u8; 48];
    out.copy_from_slice(&m[..48]);
    out
}

impl TestHierarchy {
    /// The stand-in VCEK's private key (PKCS#8): what its INSECURE "derived key" comes from.
    pub(crate) fn vcek_key_pkcs8(&self) -> &[u8] {
        &self.vcek_key
    }

    /// Generate a fresh INSECURE test ARK, ASK and VCEK for `product`.
    pub fn generate(product: Product) -> Result<Self, StandInError> {
        tracing::warn!(
            product = product.name(),
            "generating an INSECURE software SEV-SNP test hierarchy"
        );
        let (ark_name, ask_name, vcek_name) = names(product);
        let ark_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(crypto)?;
        let ask_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(crypto)?;
        let ark = cert(
            &ark_name,
            &ark_name,
            rsa_spki(&ark_key)?,
            25,
            vec![],
            &ark_key,
        )?;
        let ask = cert(
            &ask_name,
            &ark_name,
            rsa_spki(&ask_key)?,
            25,
            vec![],
            &ark_key,
        )?;

        let vcek_pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(crypto)?;
        let vcek_kp = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            vcek_pkcs8.as_ref(),
        )
        .map_err(crypto)?;
        let vcek_spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
                parameters: Some(der::Any::from(ObjectIdentifier::new_unwrap("1.3.132.0.34"))),
            },
            subject_public_key: BitString::from_bytes(vcek_kp.public_key().as_ref())
                .map_err(derr)?,
        };
        let mut chip_id = vec![0u8; 64];
        let hwid_len = if product == Product::Turin { 8 } else { 64 };
        aws_lc_rs::rand::fill(&mut chip_id[..hwid_len]).map_err(crypto)?;
        let t = default_tcb(product);
        let mut exts = vec![
            int_ext("1.3.6.1.4.1.3704.1.1", 1)?,
            Extension {
                extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2"),
                critical: false,
                extn_value: OctetString::new(
                    Ia5String::new(&format!("{}-B0", product.name()))
                        .map_err(derr)?
                        .to_der()
                        .map_err(derr)?,
                )
                .map_err(derr)?,
            },
            int_ext("1.3.6.1.4.1.3704.1.3.1", t.bootloader)?,
            int_ext("1.3.6.1.4.1.3704.1.3.2", t.tee)?,
            int_ext("1.3.6.1.4.1.3704.1.3.3", t.snp)?,
            int_ext("1.3.6.1.4.1.3704.1.3.8", t.microcode)?,
            Extension {
                extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4"),
                critical: false,
                extn_value: OctetString::new(chip_id[..hwid_len].to_vec()).map_err(derr)?,
            },
        ];
        if product == Product::Turin {
            exts.push(int_ext("1.3.6.1.4.1.3704.1.3.9", t.fmc)?);
        }
        let vcek = cert(&vcek_name, &ask_name, vcek_spki, 7, exts, &ask_key)?;
        Ok(Self {
            product,
            ark,
            ask,
            vcek,
            vcek_key: vcek_pkcs8.as_ref().to_vec(),
            chip_id,
            tcb: tcb_u64(product, t),
        })
    }

    /// The hierarchy's public roots, marked insecure, for a trust configuration.
    pub fn roots(&self) -> AmdRoots {
        AmdRoots {
            product: self.product,
            ark: self.ark.clone(),
            ask: self.ask.clone(),
            asvk: None,
            insecure: true,
        }
    }

    /// Make a signed report of `version` (2, 3 or 5) carrying `report_data`.
    pub fn report(&self, version: u32, report_data: &[u8; 64]) -> Result<Vec<u8>, StandInError> {
        self.report_with(version, report_data, &ReportKnobs::default())
    }

    /// [`TestHierarchy::report`] with the guest policy, VMPL or launch measurement of `knobs`, so
    /// tests can make each report a verifier's hardware policy must refuse (a DEBUG guest, …).
    pub fn report_with(
        &self,
        version: u32,
        report_data: &[u8; 64],
        knobs: &ReportKnobs,
    ) -> Result<Vec<u8>, StandInError> {
        if !matches!(version, 2 | 3 | 5) {
            return Err(StandInError::Version(version));
        }
        let mut b = vec![0u8; REPORT_LEN];
        b[0x00..0x04].copy_from_slice(&version.to_le_bytes());
        // Policy: SMT allowed, ABI 0.0 (bit 16 is reserved, must be 1).
        b[0x08..0x10].copy_from_slice(&knobs.policy.unwrap_or(0x3_0000).to_le_bytes());
        b[0x30..0x34].copy_from_slice(&knobs.vmpl.unwrap_or(0).to_le_bytes());
        b[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
        for at in [0x38, 0x180, 0x1E0, 0x1F0] {
            b[at..at + 8].copy_from_slice(&self.tcb.to_le_bytes());
        }
        b[0x40..0x48].copy_from_slice(&0x3u64.to_le_bytes()); // SMT enabled, TSME enabled
        b[0x50..0x90].copy_from_slice(report_data);
        let measurement = knobs.measurement.unwrap_or_else(default_measurement);
        b[0x90..0xC0].copy_from_slice(&measurement);
        aws_lc_rs::rand::fill(&mut b[0x140..0x160]).map_err(crypto)?; // report id
        if version >= 3 {
            let (fam, model, step) = match self.product {
                Product::Milan => (0x19, 0x01, 0x01),
                Product::Genoa => (0x19, 0x11, 0x01),
                Product::Turin => (0x1A, 0x02, 0x00),
            };
            b[0x188] = fam;
            b[0x189] = model;
            b[0x18A] = step;
        }
        b[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        b[0x1E8..0x1EB].copy_from_slice(&[40, 55, 1]); // firmware 1.55.40
        b[0x1EC..0x1EF].copy_from_slice(&[40, 55, 1]);
        let kp =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &self.vcek_key)
                .map_err(crypto)?;
        let sig = kp
            .sign(&SystemRandom::new(), &b[..SIGNED_LEN])
            .map_err(crypto)?;
        let sig = sig.as_ref();
        if sig.len() != 96 {
            return Err(StandInError::Crypto(
                "unexpected P-384 signature length".into(),
            ));
        }
        let mut r = [0u8; 48];
        let mut s = [0u8; 48];
        r.copy_from_slice(&sig[..48]);
        s.copy_from_slice(&sig[48..]);
        SnpReport::write_signature(&mut b, &r, &s);
        Ok(b)
    }

    /// Serialise, private keys included, for the host's state directory.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::anchor::encode(self)
    }

    /// Load from [`TestHierarchy::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, StandInError> {
        crate::anchor::decode(b).map_err(|e| StandInError::Stored(e.to_string()))
    }
}
