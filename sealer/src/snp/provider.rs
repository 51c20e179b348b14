//! Where SNP reports come from inside a guest.
//!
//! - [`ConfigfsTsm`]: Linux's configfs-tsm interface (`/sys/kernel/config/tsm/report`, Linux 6.7+).
//! - [`SevGuest`]: the `/dev/sev-guest` ioctl interface, through the `sev` crate.
//! - [`InsecureSoft`]: the INSECURE software stand-in ([`super::standin`]), for machines without
//!   SNP hardware. Every output it makes is labelled INSECURE.

use std::path::{Path, PathBuf};

use sev::firmware::host::{CertTableEntry, CertType};

use super::standin::{StandInError, TestHierarchy};
use crate::anchor::SnpProvider;

/// Errors obtaining a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The interface is absent: not an SNP guest, or an older kernel.
    #[error(
        "{interface} is not available ({source}); is this an SEV-SNP guest with the sev-guest driver loaded?"
    )]
    Unavailable {
        /// Which interface.
        interface: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An I/O step on the interface failed.
    #[error("{step}: {source}")]
    Io {
        /// Which step.
        step: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process wrote the report entry concurrently.
    #[error(
        "configfs-tsm generation changed from {before} to {after}: another writer raced this request; retry"
    )]
    Generation {
        /// Generation before.
        before: u64,
        /// Generation after.
        after: u64,
    },
    /// The report entry belongs to another TSM provider.
    #[error("configfs-tsm provider is {0:?}, not sev_guest")]
    Provider(String),
    /// The firmware refused.
    #[error("SNP firmware request failed: {0}")]
    Firmware(String),
    /// No VCEK/VLEK in the certificate table, and none configured.
    #[error(
        "no VCEK or VLEK in the extended report's certificate table; fetch it from the AMD KDS for this chip and TCB and pass it explicitly"
    )]
    NoVek,
    /// The certificate table is malformed.
    #[error("malformed certificate table (auxblob): {0}")]
    CertTable(String),
    /// Stand-in failure.
    #[error(transparent)]
    StandIn(#[from] StandInError),
}

/// A report and whatever certificates came with it.
#[derive(Debug, Clone)]
pub struct SnpEvidence {
    /// Provider.
    pub provider: SnpProvider,
    /// Raw report.
    pub report: Vec<u8>,
    /// DER VCEK/VLEK.
    pub vek: Vec<u8>,
    /// DER ASK/ASVK, when supplied.
    pub ask: Vec<u8>,
    /// DER ARK, when supplied.
    pub ark: Vec<u8>,
}

/// Something that returns signed SNP reports binding 64 bytes of guest data.
pub trait ReportProvider {
    /// Which provider this is.
    fn kind(&self) -> SnpProvider;
    /// Request a report with `report_data` in REPORT_DATA.
    fn report(&mut self, report_data: &[u8; 64]) -> Result<SnpEvidence, ProviderError>;
}

/// Parse a GHCB certificate table (configfs-tsm auxblob, extended report certificates): entries of
/// `{GUID[16], offset u32, length u32}` ended by an all-zero entry, offsets from the table start.
///
/// The `sev` crate's own parser (`vec_bytes_to_cert_table`) walks raw pointers without bounds
/// checks and crashes on a truncated table, so outside bytes are parsed here, safely.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<CertTableEntry>, ProviderError> {
    let bad = |m: &str| ProviderError::CertTable(m.to_owned());
    let mut entries = Vec::new();
    for i in 0.. {
        let at = i * 24;
        let e = table
            .get(at..at + 24)
            .ok_or_else(|| bad("table ends before its terminating entry"))?;
        if e.iter().all(|&b| b == 0) {
            return Ok(entries);
        }
        if entries.len() >= 64 {
            return Err(bad("more than 64 entries"));
        }
        let guid = uuid::Uuid::from_slice(&e[..16]).map_err(|e| bad(&e.to_string()))?;
        let offset = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
        let len = u32::from_le_bytes([e[20], e[21], e[22], e[23]]) as usize;
        let data = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| bad("entry points outside the table"))?;
        entries.push(
            CertTableEntry::from_guid(&guid, data.to_vec()).map_err(|e| bad(&e.to_string()))?,
        );
    }
    Err(bad("unterminated"))
}

/// The certificates of a GHCB certificate table, DER (empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCerts {
    /// VCEK or VLEK.
    pub vek: Vec<u8>,
    /// ASK or ASVK.
    pub ask: Vec<u8>,
    /// ARK.
    pub ark: Vec<u8>,
}

/// Split a GHCB certificate table into its VCEK/VLEK, ASK and ARK.
pub fn split_cert_table(table: &[u8]) -> Result<TableCerts, ProviderError> {
    Ok(split_entries(&parse_cert_table(table)?))
}

fn to_der(data: &[u8]) -> Vec<u8> {
    if data.starts_with(b"-----BEGIN") {
        pem::parse(data)
            .map(|p| p.into_contents())
            .unwrap_or_default()
    } else {
        // DER entries may be padded to a page: keep exactly the outer SEQUENCE.
        der_len(data).map_or_else(|| data.to_vec(), |n| data[..n].to_vec())
    }
}

/// Length of the DER SEQUENCE at the start of `d`, if it fits.
fn der_len(d: &[u8]) -> Option<usize> {
    if *d.first()? != 0x30 {
        return None;
    }
    let l0 = *d.get(1)? as usize;
    let (hdr, len) = if l0 < 0x80 {
        (2, l0)
    } else {
        let k = l0 & 0x7f;
        if k == 0 || k > 4 {
            return None;
        }
        (
            2 + k,
            d.get(2..2 + k)?
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize),
        )
    };
    let n = hdr.checked_add(len)?;
    (n <= d.len()).then_some(n)
}

fn split_entries(entries: &[CertTableEntry]) -> TableCerts {
    let mut t = TableCerts::default();
    for e in entries {
        match e.cert_type {
            CertType::VCEK | CertType::VLEK => t.vek = to_der(e.data()),
            CertType::ASK => t.ask = to_der(e.data()),
            CertType::ARK => t.ark = to_der(e.data()),
            _ => {}
        }
    }
    t
}

/// Linux configfs-tsm (`Documentation/ABI/testing/configfs-tsm`).
#[derive(Debug, Clone)]
pub struct ConfigfsTsm {
    /// Usually `/sys/kernel/config/tsm/report`.
    pub base: PathBuf,
    /// Privilege level (VMPL) to request.
    pub privlevel: u32,
}

impl Default for ConfigfsTsm {
    fn default() -> Self {
        Self {
            base: PathBuf::from("/sys/kernel/config/tsm/report"),
            privlevel: 0,
        }
    }
}

fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
    let step = step.into();
    move |source| ProviderError::Io { step, source }
}

fn read_u64(p: &Path) -> Result<u64, ProviderError> {
    let s = std::fs::read_to_string(p).map_err(io(format!("read {}", p.display())))?;
    s.trim()
        .parse()
        .map_err(|_| ProviderError::Provider(format!("generation {s:?}")))
}

impl ReportProvider for ConfigfsTsm {
    fn kind(&self) -> SnpProvider {
        SnpProvider::ConfigfsTsm
    }

    fn report(&mut self, report_data: &[u8; 64]) -> Result<SnpEvidence, ProviderError> {
        if let Err(source) = std::fs::metadata(&self.base) {
            return Err(ProviderError::Unavailable {
                interface: self.base.display().to_string(),
                source,
            });
        }
        let entry = self.base.join(format!("vmseal-{}", std::process::id()));
        std::fs::create_dir(&entry).map_err(io(format!("mkdir {}", entry.display())))?;
        let result = (|| {
            let provider =
                std::fs::read_to_string(entry.join("provider")).map_err(io("read provider"))?;
            if provider.trim() != "sev_guest" {
                return Err(ProviderError::Provider(provider.trim().to_owned()));
            }
            std::fs::write(entry.join("privlevel"), self.privlevel.to_string())
                .map_err(io("write privlevel"))?;
            let before = read_u64(&entry.join("generation"))?;
            std::fs::write(entry.join("inblob"), report_data).map_err(io("write inblob"))?;
            let report = std::fs::read(entry.join("outblob")).map_err(io("read outblob"))?;
            let aux = std::fs::read(entry.join("auxblob")).unwrap_or_default();
            let after = read_u64(&entry.join("generation"))?;
            // Our inblob write bumps the generation once; anything more is another writer.
            if after != before + 1 {
                return Err(ProviderError::Generation { before, after });
            }
            if aux.is_empty() {
                return Err(ProviderError::NoVek);
            }
            let TableCerts { vek, ask, ark } = split_cert_table(&aux)?;
            if vek.is_empty() {
                return Err(ProviderError::NoVek);
            }
            Ok(SnpEvidence {
                provider: SnpProvider::ConfigfsTsm,
                report,
                vek,
                ask,
                ark,
            })
        })();
        // The entry is ours; removing it is best effort.
        let _ = std::fs::remove_dir(&entry);
        result
    }
}

/// `/dev/sev-guest` through the `sev` crate (SNP_GET_EXT_REPORT).
#[derive(Debug, Clone, Default)]
pub struct SevGuest {
    /// VMPL to request.
    pub vmpl: u32,
}

impl ReportProvider for SevGuest {
    fn kind(&self) -> SnpProvider {
        SnpProvider::SevGuest
    }

    fn report(&mut self, report_data: &[u8; 64]) -> Result<SnpEvidence, ProviderError> {
        let mut fw = sev::firmware::guest::Firmware::open().map_err(|source| {
            ProviderError::Unavailable {
                interface: "/dev/sev-guest".into(),
                source,
            }
        })?;
        let (report, certs) = fw
            .get_ext_report(None, Some(*report_data), Some(self.vmpl))
            .map_err(|e| ProviderError::Firmware(e.to_string()))?;
        let TableCerts { vek, ask, ark } = split_entries(&certs.unwrap_or_default());
        if vek.is_empty() {
            return Err(ProviderError::NoVek);
        }
        Ok(SnpEvidence {
            provider: SnpProvider::SevGuest,
            report,
            vek,
            ask,
            ark,
        })
    }
}

/// The INSECURE software stand-in.
#[derive(Debug, Clone)]
pub struct InsecureSoft {
    /// The test hierarchy.
    pub hierarchy: TestHierarchy,
    /// Report version to produce (2, 3 or 5).
    pub version: u32,
    /// Guest policy, VMPL and measurement to report instead of the defaults (tests).
    pub knobs: super::standin::ReportKnobs,
}

impl ReportProvider for InsecureSoft {
    fn kind(&self) -> SnpProvider {
        SnpProvider::InsecureSoft
    }

    fn report(&mut self, report_data: &[u8; 64]) -> Result<SnpEvidence, ProviderError> {
        tracing::warn!(
            "SEV-SNP report from the INSECURE software stand-in: it proves nothing about this machine"
        );
        Ok(SnpEvidence {
            provider: SnpProvider::InsecureSoft,
            report: self
                .hierarchy
                .report_with(self.version, report_data, &self.knobs)?,
            vek: self.hierarchy.vcek.clone(),
            ask: self.hierarchy.ask.clone(),
            ark: self.hierarchy.ark.clone(),
        })
    }
}
