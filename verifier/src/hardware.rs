//! The hardware appraisal policy: what an enrolling host's anchors must say, beyond being genuine.
//! A genuine SEV-SNP report of a guest launched with DEBUG allowed proves only that the hypervisor
//! may read and write that guest's memory; a genuine TPM quote proves nothing about the host's
//! boot until its PCRs are compared with reference values. [`appraise`] checks the service's (or
//! an enrollment token's) [`HardwarePolicy`] and names, on refusal, the field, the value found
//! and the value required.

use vmseal_client::HardwarePolicy;
use vmseal_sealer::snp::verify::VerifiedReport;
use vmseal_sealer::tpm::verify::VerifiedQuote;

/// SEV-SNP guest policy bits (SEV-SNP ABI, "Guest Policy").
const POLICY_SMT: u64 = 1 << 17;
const POLICY_MIGRATE_MA: u64 = 1 << 18;
const POLICY_DEBUG: u64 = 1 << 19;

/// A hardware-policy refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {found}, but the hardware policy requires {required}")]
pub struct HardwareRefusal {
    /// The field (`snp.policy.debug`, `snp.vmpl`, `tpm.pcr[7]`, …).
    pub field: String,
    /// What the anchor says.
    pub found: String,
    /// What the policy requires.
    pub required: String,
}

fn refuse(
    field: impl Into<String>,
    found: impl Into<String>,
    required: impl Into<String>,
) -> HardwareRefusal {
    HardwareRefusal {
        field: field.into(),
        found: found.into(),
        required: required.into(),
    }
}

/// `value` (hex) is in `allowed` (hex, case-insensitive), or `allowed` is empty.
fn allowed(field: &str, value: &[u8], allowed: &[String]) -> Result<bool, HardwareRefusal> {
    if allowed.is_empty() {
        return Ok(false);
    }
    let v = hex::encode(value);
    if allowed.iter().any(|a| a.trim().eq_ignore_ascii_case(&v)) {
        Ok(true)
    } else {
        Err(refuse(field, v, format!("one of {}", allowed.join(", "))))
    }
}

/// Check verified anchors (the fresh ones an enrollment answers its challenge with) against `p`;
/// the checks made (for the enrollment result and `admin hosts`), or the first refusal.
pub fn appraise(
    tpm: Option<&VerifiedQuote>,
    snp: Option<&VerifiedReport>,
    p: &HardwarePolicy,
) -> Result<Vec<String>, HardwareRefusal> {
    let mut checked = Vec::new();
    if let Some(s) = snp {
        let r = &s.report;
        let bit = |b: u64| r.policy & b != 0;
        if bit(POLICY_DEBUG) && !p.allow_debug {
            return Err(refuse(
                "snp.policy.debug",
                format!("allowed (policy {:#x})", r.policy),
                "not allowed (allow_debug = false)",
            ));
        }
        checked.push("snp.policy.debug".into());
        if bit(POLICY_MIGRATE_MA) && !p.allow_migration_agent {
            return Err(refuse(
                "snp.policy.migrate_ma",
                format!("allowed (policy {:#x})", r.policy),
                "not allowed (allow_migration_agent = false)",
            ));
        }
        checked.push("snp.policy.migrate_ma".into());
        if bit(POLICY_SMT) && !p.allow_smt {
            return Err(refuse(
                "snp.policy.smt",
                format!("allowed (policy {:#x})", r.policy),
                "not allowed (allow_smt = false)",
            ));
        }
        checked.push("snp.policy.smt".into());
        if !p.vmpls.is_empty() {
            if !p.vmpls.contains(&r.vmpl) {
                return Err(refuse(
                    "snp.vmpl",
                    r.vmpl.to_string(),
                    format!("one of {:?}", p.vmpls),
                ));
            }
            checked.push("snp.vmpl".into());
        }
        if !p.report_versions.is_empty() {
            if !p.report_versions.contains(&r.version) {
                return Err(refuse(
                    "snp.version",
                    r.version.to_string(),
                    format!("one of {:?}", p.report_versions),
                ));
            }
            checked.push("snp.version".into());
        }
        for (field, value, list) in [
            ("snp.measurement", &r.measurement[..], &p.measurements),
            ("snp.host_data", &r.host_data[..], &p.host_data),
            ("snp.family_id", &r.family_id[..], &p.family_ids),
            ("snp.image_id", &r.image_id[..], &p.image_ids),
        ] {
            if allowed(field, value, list)? {
                checked.push(field.into());
            }
        }
        let t = s.reported_tcb;
        let m = p.min_tcb;
        for (field, found, min) in [
            ("snp.reported_tcb.bootloader", t.bootloader, m.bootloader),
            ("snp.reported_tcb.tee", t.tee, m.tee),
            ("snp.reported_tcb.snp", t.snp, m.snp),
            ("snp.reported_tcb.microcode", t.microcode, m.microcode),
            ("snp.reported_tcb.fmc", t.fmc, m.fmc),
        ] {
            if min > 0 {
                if found < min {
                    return Err(refuse(field, found.to_string(), format!("at least {min}")));
                }
                checked.push(field.into());
            }
        }
    }
    if let Some(q) = tpm {
        for (index, want) in &p.pcrs {
            let field = format!("tpm.pcr[{index}]");
            let i: u8 = index
                .parse()
                .map_err(|_| refuse(&field, "not a PCR index", "0 to 23"))?;
            let got = q
                .pcrs
                .iter()
                .find(|x| x.bank == "sha256" && x.index == i)
                .map(|x| hex::encode(&x.value));
            match got {
                Some(g) if g.eq_ignore_ascii_case(want.trim()) => checked.push(field),
                Some(g) => return Err(refuse(field, g, want.clone())),
                None => return Err(refuse(field, "not quoted", want.clone())),
            }
        }
    } else if !p.pcrs.is_empty() {
        return Err(refuse(
            "tpm",
            "no TPM anchor",
            "a TPM quote with reference PCR values",
        ));
    }
    Ok(checked)
}

/// How often each replica re-appraises the enrolled hosts' hardware.
pub const REAPPRAISE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How far ahead an expiring intermediate or VCEK/VLEK chain is reported.
pub const EXPIRY_NOTICE_S: i64 = 7 * 24 * 3600;

/// How far ahead an agent certificate's expiry is raised as a host's problem.
pub const AGENT_CERT_NOTICE_S: i64 = 30 * 86_400;

/// Re-appraise every enabled host's pinned intermediate: its anchors must still verify (now, and
/// [`EXPIRY_NOTICE_S`] from now) and still meet the hardware policy it was enrolled under — the
/// token's own, else the service's as it is *now*, so a stricter policy applies to hosts already
/// enrolled — and its agent certificate must have more than [`AGENT_CERT_NOTICE_S`] left. A host
/// whose verdict changes for the worse raises `evidence_refused` (code `hardware_reappraisal`) on
/// each of its VMs; `admin hosts list` shows the verdict.
pub async fn reappraise(st: &crate::state::AppState) -> Result<(), crate::store::StoreError> {
    let now = time::OffsetDateTime::now_utc();
    // What is there is verified; which anchors a host needs was decided at its enrollment.
    let mut trust = st.settings.enrollment_trust.clone();
    trust.require = vmseal_sealer::verify::AnchorRequirement {
        tpm: false,
        snp: false,
    };
    trust.tpm.require_ek_chain = false;
    for h in st.store.hosts_to_reappraise().await? {
        let (host, der, policy) = (h.host_id, h.intermediate_der, h.hardware_policy);
        let policy = match policy
            .as_deref()
            .map(serde_json::from_str::<HardwarePolicy>)
        {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::error!("host {host:?}: its stored hardware policy does not parse: {e}");
                continue;
            }
            None => st.settings.hardware.clone(),
        };
        let verify = |at| vmseal_sealer::verify::verify_intermediate(&der, &trust, at);
        let verdict = match verify(now) {
            Err(e) => format!("its anchors no longer verify: {e}"),
            Ok(v) => match appraise(v.tpm.as_ref(), v.snp.as_ref(), &policy) {
                Err(r) => format!("the hardware policy refuses it: {r}"),
                Ok(_) => match verify(now + time::Duration::seconds(EXPIRY_NOTICE_S)) {
                    Err(e) => format!("its anchors expire within 7 days: {e}; re-enrol it"),
                    // The agent certificate, 30 days ahead (the agent renews it at its next start).
                    Ok(_) => match h.agent_not_after {
                        Some(t) if t - now.unix_timestamp() < AGENT_CERT_NOTICE_S => {
                            let on = time::OffsetDateTime::from_unix_timestamp(t)
                                .ok()
                                .and_then(|d| {
                                    d.format(&time::format_description::well_known::Rfc3339)
                                        .ok()
                                })
                                .unwrap_or_else(|| t.to_string());
                            format!(
                                "its agent certificate expires {on}: the agent renews it when it \
                                 starts, or run `vmseal-host renew` on the host"
                            )
                        }
                        _ => "ok".to_owned(),
                    },
                },
            },
        };
        if st.store.set_hardware_status(&host, &verdict).await? && verdict != "ok" {
            tracing::warn!(host, "hardware re-appraisal: {verdict}");
            crate::alerts::alert_host(
                st,
                &host,
                "hardware_reappraisal",
                &format!("host {host:?}: {verdict}"),
            )
            .await?;
        }
    }
    Ok(())
}
