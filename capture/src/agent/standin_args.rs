//! Command-line flags for what the INSECURE SEV-SNP stand-in reports about its guest, shared by
//! `vmseal-host init` and `vmseal-shim init`: tests make each report a verifier's hardware policy
//! must refuse (a DEBUG guest, another VMPL, an unknown launch measurement). Meaningless, and
//! refused, with a real SNP provider.

use vmseal_sealer::snp::standin::ReportKnobs;

/// `--insecure-policy`, `--insecure-vmpl`, `--insecure-measurement`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StandInArgs {
    /// INSECURE stand-in only: the guest policy its report carries, hex (default 30000: SMT
    /// allowed; 80000 adds DEBUG, which verifiers refuse by default).
    #[arg(long, value_parser = parse_policy)]
    pub insecure_policy: Option<u64>,
    /// INSECURE stand-in only: the VMPL its report says it was requested at (default 0).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=3))]
    pub insecure_vmpl: Option<u32>,
    /// INSECURE stand-in only: the launch measurement its report carries, 96 hex digits.
    #[arg(long, value_parser = parse_measurement)]
    pub insecure_measurement: Option<[u8; 48]>,
}

impl StandInArgs {
    /// The report knobs; an error when any is set without the stand-in.
    pub fn knobs(&self, standin: bool) -> Result<ReportKnobs, String> {
        let k = ReportKnobs {
            policy: self.insecure_policy,
            vmpl: self.insecure_vmpl,
            measurement: self.insecure_measurement,
        };
        if k != ReportKnobs::default() && !standin {
            return Err(
                "--insecure-policy, --insecure-vmpl and --insecure-measurement apply to the \
                 INSECURE stand-in only (--snp insecure-soft)"
                    .into(),
            );
        }
        Ok(k)
    }
}

fn parse_policy(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .map_err(|e| format!("a guest policy is hex, e.g. 30000: {e}"))
}

fn parse_measurement(s: &str) -> Result<[u8; 48], String> {
    hex::decode(s.trim())
        .ok()
        .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| "a launch measurement is 48 bytes: 96 hex digits".into())
}
