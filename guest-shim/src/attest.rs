//! One attestation, and the schedule that repeats it (`vmseal-shim attest` and `run`): a nonce
//! from the verifier, a capture answering it, sealed under the guest's intermediate, submitted;
//! the appraisal comes back with a signed EAR the client has verified.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vmseal_capture::agent::courier::{Courier, Delivery};
use vmseal_capture::agent::round::{Agent, Freshness};
use vmseal_capture::policy::{Policy, SymbolMap};
use vmseal_capture::source::MemorySource;
use vmseal_capture::{Baseline, Consistency, Plan, Snapshot};
use vmseal_sealer::state::HostState;

/// Why an attestation did not happen.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttestError(pub String);

fn err(e: impl std::fmt::Display) -> AttestError {
    AttestError(e.to_string())
}

/// What to capture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// `process:PID`, `process:NAME` (the oldest process of that name, looked up at each
    /// capture), or `kernel[:KCORE]`.
    pub source: String,
    /// The capture policy file.
    pub policy: PathBuf,
    /// Kernel symbols [default: /proc/kallsyms].
    #[serde(default = "default_kallsyms")]
    pub kallsyms: PathBuf,
    /// The kernel's BTF, for `[kernel_objects]` [default: /sys/kernel/btf/vmlinux].
    #[serde(default = "default_btf")]
    pub btf: PathBuf,
    /// The kernel's ELF notes (its build id) [default: /sys/kernel/notes].
    #[serde(default = "default_notes")]
    pub notes: PathBuf,
    /// Deltas against this baseline (a snapshot's page hashes) while the verifier has no golden
    /// baseline of the VM; once it has one, deltas go against the baseline it serves.
    #[serde(default)]
    pub baseline: Option<PathBuf>,
}

fn default_kallsyms() -> PathBuf {
    PathBuf::from("/proc/kallsyms")
}

fn default_btf() -> PathBuf {
    PathBuf::from("/sys/kernel/btf/vmlinux")
}

fn default_notes() -> PathBuf {
    PathBuf::from("/sys/kernel/notes")
}

/// The pid of the oldest process named `name` (its `comm`).
pub fn pid_of(name: &str) -> Option<u32> {
    let mut found: Vec<(u64, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Field 22: start time.
            let start = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(19)?
                .parse()
                .ok()?;
            Some((start, pid))
        })
        .collect();
    found.sort();
    found.first().map(|&(_, pid)| pid)
}

/// Open the source `spec` names.
pub fn open_source(
    t: &TargetSpec,
) -> Result<(Box<dyn MemorySource>, Option<SymbolMap>), AttestError> {
    if let Some(p) = t.source.strip_prefix("process:") {
        let pid = match p.parse::<u32>() {
            Ok(pid) => pid,
            Err(_) => pid_of(p).ok_or_else(|| err(format!("no process named {p:?} is running")))?,
        };
        let src = crate::process::ProcessSource::attach(pid).map_err(err)?;
        Ok((Box::new(src), None))
    } else if t.source == "kernel" || t.source.starts_with("kernel:") {
        let kcore = t.source.strip_prefix("kernel:").unwrap_or("/proc/kcore");
        let syms = crate::kernel::symbols(&t.kallsyms).map_err(err)?;
        let src = crate::kernel::open(kcore.as_ref()).map_err(err)?;
        Ok((Box::new(src), Some(syms)))
    } else {
        Err(err(format!(
            "source must be process:PID, process:NAME or kernel[:KCORE], not {:?}",
            t.source
        )))
    }
}

/// Read and parse a policy file.
pub fn load_policy(p: &Path) -> Result<Policy, AttestError> {
    let text =
        std::fs::read_to_string(p).map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
    Policy::parse(&text).map_err(|e| err(format!("{}: {e}", p.display())))
}

/// Read a baseline file.
pub fn load_baseline(p: Option<&Path>) -> Result<Option<Baseline>, AttestError> {
    p.map(|p| {
        let b = std::fs::read(p).map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
        Baseline::from_bytes(&b).map_err(|e| err(format!("{}: {e}", p.display())))
    })
    .transpose()
}

/// Capture `t` once (with the verifier's nonce, when attesting); the snapshot and what it was.
pub fn capture(t: &TargetSpec, nonce: Option<&[u8]>) -> Result<(Snapshot, String), AttestError> {
    let policy = load_policy(&t.policy)?;
    let (mut src, symbols) = open_source(t)?;
    let planning =
        |e: &dyn std::fmt::Display| err(format!("planning the capture of {}: {e}", src.describe()));
    let plan = match (&symbols, &policy.kernel_objects) {
        // The running kernel, its objects walked too.
        (Some(syms), Some(_)) => {
            let lookup = vmseal_capture::plan::Lookup {
                symbols: Some(syms),
                sections: None,
            };
            let mut plan =
                Plan::resolve(&policy, src.as_ref(), lookup, nonce).map_err(|e| planning(&e))?;
            let walk = crate::kernel::walk(&t.btf, &t.notes, syms).map_err(|e| planning(&e))?;
            plan.kernel = Some(std::sync::Arc::new(walk));
            plan
        }
        _ => Plan::new(&policy, src.as_ref(), symbols.as_ref(), nonce).map_err(|e| planning(&e))?,
    };
    let snap = Snapshot::full(src.as_mut(), plan, Consistency::StopCopy)
        .map_err(|e| err(format!("capturing {}: {e}", src.describe())))?;
    Ok((snap, src.describe()))
}

/// Attest `t` as `vm_id` in one [agent round](vmseal_capture::agent::round): the appraisal
/// (its EAR verified) and what was captured. The evidence and its page hashes
/// (`VM-SEQ.baseline.cbor`) are kept in `out_dir`.
pub fn attest_once(
    state: &HostState,
    client: &vmseal_client::Client,
    vm_id: &str,
    t: &TargetSpec,
    out_dir: &Path,
) -> Result<(vmseal_client::AppraisalResult, String), AttestError> {
    let own = load_baseline(t.baseline.as_deref())?;
    let agent = Agent::new(state, "vmseal-shim")
        .with_verifier(client, Courier::new(client, state))
        .keep_page_hashes(true);
    let mut what = String::new();
    let round = agent
        .round(
            vm_id,
            Freshness::Ask,
            own.as_ref(),
            out_dir,
            |nonce| {
                capture(t, nonce).map(|(snap, w)| {
                    what = w;
                    snap
                })
            },
            &|attempt, e, wait| {
                eprintln!(
                    "submission attempt {attempt} failed ({e}); the same evidence again in {} ms",
                    wait.as_millis()
                )
            },
        )
        .map_err(|e| err(vmseal_client::error_chain_text(&e)))?;
    match round.delivery {
        Some(Delivery::Accepted { appraisal, .. }) => Ok((*appraisal, what)),
        Some(d) => {
            let hint = match &d {
                Delivery::Refused {
                    code: Some(vmseal_client::ErrorCode::IncompleteDelta),
                    ..
                } => {
                    " (the verifier's baseline and this capture's policy disagree: assign the \
                     policy the baseline was promoted under, or promote a snapshot of this one)"
                }
                _ => "",
            };
            Err(err(format!(
                "submitting the evidence: {}{hint}",
                d.describe()
            )))
        }
        None => Err(err("no verifier to submit the evidence to")),
    }
}

/// One line for an appraisal: its score, tier, changed regions and kernel findings.
pub fn verdict_line(vm_id: &str, what: &str, a: &vmseal_client::AppraisalResult) -> String {
    let changed: Vec<String> = a.changes.iter().map(|c| c.describe()).collect();
    let kernel: Vec<String> = a
        .kernel
        .iter()
        .flat_map(|k| &k.findings)
        .map(|f| f.describe())
        .collect();
    format!(
        "{what}: snapshot #{} of {vm_id}: trust score {} ({}){}{} [signed EAR verified]",
        a.seq,
        a.score,
        a.tier.name(),
        if changed.is_empty() {
            String::new()
        } else {
            format!("; changed: {}", changed.join(", "))
        },
        if kernel.is_empty() {
            String::new()
        } else {
            format!("; kernel: {}", kernel.join("; "))
        }
    )
}

/// `vmseal-shim run`'s configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The shim's state directory.
    pub state: PathBuf,
    /// Verifier URL.
    pub verifier: String,
    /// The verifier's CA certificate.
    pub verifier_ca: PathBuf,
    /// Agent certificate [default: STATE/agent.pem].
    #[serde(default)]
    pub agent_cert: Option<PathBuf>,
    /// Its key [default: STATE/agent.key].
    #[serde(default)]
    pub agent_key: Option<PathBuf>,
    /// Seconds between attestations of each target.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Evidence directory [default: STATE/evidence].
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    /// What to attest.
    #[serde(rename = "target")]
    pub targets: Vec<RunTarget>,
}

fn default_interval() -> u64 {
    300
}

/// One `[[target]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTarget {
    /// The VM id its evidence is appraised under.
    pub vm_id: String,
    /// What to capture.
    #[serde(flatten)]
    pub spec: TargetSpec,
}

impl RunConfig {
    /// Load `path`; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, AttestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        let mut c: Self =
            toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        if c.targets.is_empty() {
            return Err(err(format!("{}: no [[target]] to attest", path.display())));
        }
        if c.interval_secs == 0 {
            return Err(err(format!(
                "{}: interval_secs must be at least 1",
                path.display()
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut c.state);
        abs(&mut c.verifier_ca);
        for p in [&mut c.agent_cert, &mut c.agent_key, &mut c.out_dir]
            .into_iter()
            .flatten()
        {
            abs(p);
        }
        for t in &mut c.targets {
            abs(&mut t.spec.policy);
            if let Some(b) = &mut t.spec.baseline {
                abs(b);
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_configuration_loads() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/shim.toml");
        let c = RunConfig::load(&f).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(
            (c.interval_secs, c.targets[1].spec.source.as_str()),
            (300, "process:nginx")
        );
    }
}
