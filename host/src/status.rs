//! `vmseal-host status`: a doctor for a host — is the state whole, the TPM reachable, do its PCRs
//! still unseal the intermediate key, are the certificates far from expiry, is the verifier
//! reachable, and where does each VM's chain stand there. Each check says what it found and, when
//! it failed, the fix.

use std::path::{Path, PathBuf};

use vmseal_client::doctor::Check;
use vmseal_sealer::state::HostState;

/// Where to look for the verifier, when the host has one.
#[derive(Debug, Clone)]
pub struct VerifierCheck {
    /// https://host:port.
    pub url: String,
    /// Its CA.
    pub ca: PathBuf,
    /// The agent certificate and key.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

fn days_left(der_or_pem: &[u8]) -> Option<i64> {
    let c = vmseal_sealer::x509::parse_bundle(der_or_pem)
        .ok()?
        .into_iter()
        .next()?;
    Some((c.not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400)
}

fn expiry(name: &str, days: Option<i64>, fix: &str) -> Check {
    match days {
        None => Check::fail(name, "cannot be read", fix),
        Some(d) if d < 0 => Check::fail(name, format!("expired {} day(s) ago", -d), fix),
        Some(d) if d < vmseal_capture::agent::enroll::RENEW_WITHIN_DAYS => {
            Check::fail(name, format!("{d} day(s) left"), fix)
        }
        Some(d) => Check::pass(name, format!("{d} day(s) left")),
    }
}

/// Run every check of the host state in `state` (with `tcti` instead of the recorded one, when
/// given) and, with `verifier`, of its verifier.
pub fn run(state: &Path, tcti: Option<&str>, verifier: Option<&VerifierCheck>) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = match HostState::config_of(state) {
        Ok(c) => {
            out.push(Check::pass(
                "state",
                format!(
                    "{}: host {}, made {}",
                    state.display(),
                    c.host_id,
                    c.created
                ),
            ));
            c
        }
        Err(e) => {
            out.push(Check::fail(
                "state",
                e.to_string(),
                "make one: `vmseal-host init --state DIR --host-id ID`",
            ));
            return out;
        }
    };
    let tcti = tcti.unwrap_or(&cfg.tcti).to_owned();
    if cfg.seal == vmseal_sealer::state::SeedSeal::Tpm {
        match vmseal_sealer::tpm::Tpm::open(&tcti).and_then(|mut t| t.ek_certificate()) {
            Ok(ek) => out.push(Check::pass(
                "tpm",
                format!("{tcti} answers; EK certificate {} bytes", ek.len()),
            )),
            Err(e) => out.push(Check::fail(
                "tpm",
                e.to_string(),
                "start the TPM (swtpm) or fix its address (--tpm, or the state's TCTI)",
            )),
        }
    }
    match HostState::load(state, Some(&tcti)) {
        Ok(_) => out.push(Check::pass(
            "seal",
            format!(
                "the intermediate key unseals (PCRs {:?} as at init)",
                cfg.pcrs
            ),
        )),
        Err(e) => out.push(Check::fail(
            "seal",
            e.to_string(),
            "if the PCRs changed (a firmware or boot update), make a new state (`vmseal-host init`) \
             and enrol it with a `--restart-chains` token: its VMs' chains continue",
        )),
    }
    out.push(expiry(
        "intermediate certificate",
        std::fs::read(state.join("intermediate.der"))
            .ok()
            .and_then(|d| days_left(&d)),
        "make a new state (`vmseal-host init`) and enrol it with a `--restart-chains` token",
    ));
    let Some(v) = verifier else {
        return out;
    };
    let cert = std::fs::read(&v.cert);
    out.push(expiry(
        "agent certificate",
        cert.as_ref().ok().and_then(|c| days_left(c)),
        "renew it: `vmseal-host renew` (or enrol with a token if there is none)",
    ));
    let client = match (cert, std::fs::read(&v.ca), std::fs::read(&v.key)) {
        (Ok(c), Ok(ca), Ok(k)) => vmseal_client::Client::new(&v.url, &ca, &c, &k),
        _ => {
            out.push(Check::fail(
                "verifier",
                format!(
                    "cannot read {}, {} or {}",
                    v.ca.display(),
                    v.cert.display(),
                    v.key.display()
                ),
                "enrol the host first: `vmseal-host enroll`",
            ));
            return out;
        }
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "verifier",
                e.to_string(),
                "fix the URL or files",
            ));
            return out;
        }
    };
    match client.get("/readyz") {
        Ok(_) => out.push(Check::pass("verifier", format!("{} is ready", v.url))),
        Err(e) => {
            out.push(Check::fail(
                "verifier",
                e.to_string(),
                "see the message's hint; docs/operations.md, When something goes wrong",
            ));
            return out;
        }
    }
    // Each VM this host has sealed for: where its chain stands at the verifier.
    let mut vms: Vec<String> = std::fs::read_dir(state.join("vms"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.path()
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    vms.sort();
    for vm in vms {
        let name = format!("vm {vm}");
        match client.chain_head(&vm) {
            Ok(h) if h.next_seq == 0 && h.prev.is_none() => {
                out.push(Check::pass(&name, "no evidence accepted yet"))
            }
            Ok(h) => out.push(Check::pass(
                &name,
                format!(
                    "last accepted snapshot #{}; the next builds on it",
                    h.next_seq.saturating_sub(1)
                ),
            )),
            Err(e) => out.push(Check::fail(
                &name,
                e.to_string(),
                "register it at the verifier (`admin register-vm`), or it belongs to another \
                 verifier",
            )),
        }
    }
    out
}
