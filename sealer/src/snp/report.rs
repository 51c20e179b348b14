//! The SEV-SNP attestation report (AMD SEV-SNP ABI, `ATTESTATION_REPORT`, 1184 bytes), parsed
//! once into a typed struct.
//!
//! vmseal parses reports itself rather than through `sev::firmware::guest::AttestationReport`
//! because sev 8 refuses some genuine reports (a v2 report with a masked chip id, as VLEK-signed
//! reports have); every report in `../shared/vectors/sev-snp` parses here.

/// Size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes covered by the signature: `0x000..0x2A0`.
pub const SIGNED_LEN: usize = 0x2A0;

/// Errors parsing a report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// Wrong size.
    #[error("an SNP report is {REPORT_LEN} bytes, got {0}")]
    Length(usize),
    /// Unsupported version.
    #[error("unsupported SNP report version {0} (supported: 2 to 5)")]
    Version(u32),
    /// Unsupported signature algorithm.
    #[error("unsupported SNP report signature algorithm {0} (1 = ECDSA P-384 with SHA-384)")]
    SignatureAlgorithm(u32),
    /// r or s has bytes beyond the 48 a P-384 scalar can have.
    #[error("signature component {0} is not a P-384 scalar")]
    SignatureComponent(&'static str),
}

/// A TCB version (`TCB_VERSION`, u64), interpreted per product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVersion(pub u64);

/// The SPL components of a TCB version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TcbParts {
    /// Firmware management controller (Turin and later; 0 before).
    pub fmc: u8,
    /// Boot loader.
    pub bootloader: u8,
    /// TEE (PSP OS).
    pub tee: u8,
    /// SNP firmware.
    pub snp: u8,
    /// CPU microcode.
    pub microcode: u8,
}

impl TcbVersion {
    /// Split into SPLs. Milan and Genoa: byte 0 BL, 1 TEE, 6 SNP, 7 microcode. Turin: byte 0 FMC,
    /// 1 BL, 2 TEE, 3 SNP, 7 microcode.
    pub fn parts(self, product: super::Product) -> TcbParts {
        let b = self.0.to_le_bytes();
        match product {
            super::Product::Turin => TcbParts {
                fmc: b[0],
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
            _ => TcbParts {
                fmc: 0,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
        }
    }
}

/// Which key signed the report (`FLAGS.SIGNING_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SigningKey {
    /// Versioned chip endorsement key.
    Vcek,
    /// Versioned loaded endorsement key (cloud provider).
    Vlek,
    /// No key (unsigned report).
    None,
    /// Reserved value.
    Reserved(u8),
}

/// A parsed attestation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// The raw bytes.
    pub raw: Vec<u8>,
    /// Report format version.
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// Family ID.
    pub family_id: [u8; 16],
    /// Image ID.
    pub image_id: [u8; 16],
    /// VMPL of the request.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 SHA-384).
    pub signature_algo: u32,
    /// Current TCB.
    pub current_tcb: TcbVersion,
    /// Platform info.
    pub platform_info: u64,
    /// Raw flags.
    pub flags: u32,
    /// Guest-supplied data: vmseal binds the intermediate key here.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host data.
    pub host_data: [u8; 32],
    /// ID key digest.
    pub id_key_digest: [u8; 48],
    /// Author key digest.
    pub author_key_digest: [u8; 48],
    /// Report ID.
    pub report_id: [u8; 32],
    /// Migration agent report ID.
    pub report_id_ma: [u8; 32],
    /// TCB used to derive the signing key.
    pub reported_tcb: TcbVersion,
    /// CPUID family, model, stepping (version 3 and later; zero before).
    pub cpuid: (u8, u8, u8),
    /// Chip ID (zero when masked, as with VLEK).
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: TcbVersion,
    /// Current firmware build, minor, major.
    pub current_version: (u8, u8, u8),
    /// Committed firmware build, minor, major.
    pub committed_version: (u8, u8, u8),
    /// TCB at launch.
    pub launch_tcb: TcbVersion,
    /// Signature r, big-endian, 48 bytes.
    pub sig_r: [u8; 48],
    /// Signature s, big-endian, 48 bytes.
    pub sig_s: [u8; 48],
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut o = [0u8; N];
    o.copy_from_slice(&b[at..at + N]);
    o
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

/// Little-endian 72-byte component to a big-endian 48-byte scalar.
fn scalar(b: &[u8], at: usize, name: &'static str) -> Result<[u8; 48], ReportError> {
    let le = &b[at..at + 72];
    if le[48..].iter().any(|&x| x != 0) {
        return Err(ReportError::SignatureComponent(name));
    }
    let mut be = [0u8; 48];
    for (i, v) in le[..48].iter().enumerate() {
        be[47 - i] = *v;
    }
    Ok(be)
}

impl SnpReport {
    /// Parse a raw report.
    pub fn parse(b: &[u8]) -> Result<Self, ReportError> {
        if b.len() != REPORT_LEN {
            return Err(ReportError::Length(b.len()));
        }
        let version = u32_at(b, 0x00);
        if !(2..=5).contains(&version) {
            return Err(ReportError::Version(version));
        }
        let signature_algo = u32_at(b, 0x34);
        if signature_algo != 1 {
            return Err(ReportError::SignatureAlgorithm(signature_algo));
        }
        let cpuid = if version >= 3 {
            (b[0x188], b[0x189], b[0x18A])
        } else {
            (0, 0, 0)
        };
        Ok(Self {
            raw: b.to_vec(),
            version,
            guest_svn: u32_at(b, 0x04),
            policy: u64_at(b, 0x08),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            signature_algo,
            current_tcb: TcbVersion(u64_at(b, 0x38)),
            platform_info: u64_at(b, 0x40),
            flags: u32_at(b, 0x48),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: TcbVersion(u64_at(b, 0x180)),
            cpuid,
            chip_id: arr(b, 0x1A0),
            committed_tcb: TcbVersion(u64_at(b, 0x1E0)),
            current_version: (b[0x1E8], b[0x1E9], b[0x1EA]),
            committed_version: (b[0x1EC], b[0x1ED], b[0x1EE]),
            launch_tcb: TcbVersion(u64_at(b, 0x1F0)),
            sig_r: scalar(b, 0x2A0, "r")?,
            sig_s: scalar(b, 0x2E8, "s")?,
        })
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// Which key signed the report.
    pub fn signing_key(&self) -> SigningKey {
        match (self.flags >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            r => SigningKey::Reserved(r as u8),
        }
    }

    /// Whether the chip id is masked (`FLAGS.MASK_CHIP_KEY`, or all zero).
    pub fn chip_id_masked(&self) -> bool {
        self.flags & 0b10 != 0 || self.chip_id.iter().all(|&b| b == 0)
    }

    /// Product from CPUID (version 3 and later).
    pub fn product_from_cpuid(&self) -> Option<super::Product> {
        use super::Product;
        match self.cpuid {
            (0x19, 0x00..=0x0F, _) => Some(Product::Milan),
            (0x19, 0x10..=0x1F, _) | (0x19, 0xA0..=0xAF, _) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11, _) => Some(Product::Turin),
            _ => None,
        }
    }

    /// Encode r and s back into the report's little-endian layout (for the software stand-in).
    pub fn write_signature(raw: &mut [u8], r_be: &[u8; 48], s_be: &[u8; 48]) {
        if raw.len() < REPORT_LEN {
            return;
        }
        raw[0x2A0..0x330].iter_mut().for_each(|b| *b = 0);
        for i in 0..48 {
            raw[0x2A0 + i] = r_be[47 - i];
            raw[0x2E8 + i] = s_be[47 - i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; REPORT_LEN];
        b[0..4].copy_from_slice(&version.to_le_bytes());
        b[0x34] = 1;
        b
    }

    #[test]
    fn rejects_bad_lengths_versions_and_algorithms() {
        assert_eq!(
            SnpReport::parse(&[0; 10]).unwrap_err(),
            ReportError::Length(10)
        );
        assert_eq!(
            SnpReport::parse(&minimal(1)).unwrap_err(),
            ReportError::Version(1)
        );
        let mut b = minimal(2);
        b[0x34] = 2;
        assert_eq!(
            SnpReport::parse(&b).unwrap_err(),
            ReportError::SignatureAlgorithm(2)
        );
        let mut b = minimal(3);
        b[0x2A0 + 60] = 1;
        assert_eq!(
            SnpReport::parse(&b).unwrap_err(),
            ReportError::SignatureComponent("r")
        );
    }

    #[test]
    fn signature_round_trips_through_the_le_layout() {
        let mut b = minimal(5);
        let r: [u8; 48] = core::array::from_fn(|i| i as u8 + 1);
        let s: [u8; 48] = core::array::from_fn(|i| 200 - i as u8);
        SnpReport::write_signature(&mut b, &r, &s);
        let p = SnpReport::parse(&b).unwrap();
        assert_eq!((p.sig_r, p.sig_s), (r, s));
    }

    #[test]
    fn turin_tcb_layout_differs() {
        let t = TcbVersion(u64::from_le_bytes([1, 2, 3, 4, 0, 0, 5, 6]));
        let m = t.parts(crate::snp::Product::Milan);
        assert_eq!((m.bootloader, m.tee, m.snp, m.microcode), (1, 2, 5, 6));
        let tu = t.parts(crate::snp::Product::Turin);
        assert_eq!(
            (tu.fmc, tu.bootloader, tu.tee, tu.snp, tu.microcode),
            (1, 2, 3, 4, 6)
        );
    }
}
