//! `vmseal-host run`: the host agent. It captures many VMs on their schedules with bounded
//! concurrency and a shared hashing budget, and writes sealed evidence for each.
//!
//! ```toml
//! state = "/var/lib/vmseal"            # made by `vmseal-host init`
//! out_dir = "/var/lib/vmseal/evidence" # evidence goes to OUT_DIR/<vm>/<vm>-<seq>.cose
//! max_concurrent = 2                   # captures running at once
//! budget_mbps = 400                    # page hashing bandwidth shared by all captures (optional)
//! full_every = 10                      # incremental sources: a full capture every N (default 10)
//!
//! [verifier]                           # optional: submit evidence (docs/operations.md)
//! url = "https://verifier:8443"
//! ca = "/etc/vmseal/ca.pem"
//! retry_secs = 60                      # retry a failed submission this long (default 60)
//!
//! [[vm]]
//! id = "web-1"
//! source = "qemu:/run/web-1.qmp,/dev/shm/web-1"
//! policy = "/etc/vmseal/linux.toml"    # optional with a verifier: its assigned policy wins
//! symbols = "/etc/vmseal/web-1.map"
//! interval_secs = 60                   # default: the policy's interval_secs, else 60
//!
//! [[vm]]
//! id = "micro"
//! source = "kvm"                       # a micro-VM started and kept by the agent
//! ```
//!
//! Relative paths are relative to the configuration file. Captures of one VM never overlap; an
//! error is logged and retried at the next interval, never fatal to the agent. With a verifier,
//! each capture uses the policy the verifier assigned to the VM (fetched before the capture), so
//! a host-side edit cannot drift from what the verifier appraises by; the local `policy` is used
//! only while the verifier has none assigned.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::guest;
use crate::kvm::{MicroVm, MicroVmConfig};
use crate::qemu::QemuSource;
use vmseal_capture::agent::courier::Delivery;
use vmseal_capture::agent::round::{Agent, Freshness};
use vmseal_capture::dump::open_dump;
use vmseal_capture::hash::Budget;
use vmseal_capture::policy::{Policy, SymbolMap};
use vmseal_capture::source::MemorySource;
use vmseal_capture::{Baseline, Consistency, Plan, Snapshot};

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Reading a file.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("{path}: {message}")]
    Config {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state: PathBuf,
    out_dir: PathBuf,
    #[serde(default)]
    tpm: Option<String>,
    #[serde(default = "default_concurrency")]
    max_concurrent: usize,
    #[serde(default)]
    budget_mbps: Option<f64>,
    #[serde(default = "default_full_every")]
    full_every: u32,
    #[serde(default)]
    verifier: Option<RawVerifier>,
    vm: Vec<RawVm>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerifier {
    url: String,
    ca: PathBuf,
    #[serde(default)]
    agent_cert: Option<PathBuf>,
    #[serde(default)]
    agent_key: Option<PathBuf>,
    #[serde(default)]
    token_cert: Option<PathBuf>,
    #[serde(default)]
    token_key: Option<PathBuf>,
    #[serde(default)]
    retry_secs: Option<u64>,
}

/// Where the agent submits evidence.
#[derive(Debug, Clone)]
pub struct VerifierConn {
    /// https://host:port.
    pub url: String,
    /// The verifier CA (PEM).
    pub ca: PathBuf,
    /// This host's agent certificate (PEM; default STATE/agent.pem).
    pub agent_cert: PathBuf,
    /// Its key (PEM; default STATE/agent.key).
    pub agent_key: PathBuf,
    /// An enrollment token (certificate, key) to enrol with when there is no agent certificate yet.
    pub token: Option<(PathBuf, PathBuf)>,
    /// How long a submission that failed for a transient reason is retried.
    pub retry: Duration,
}

fn default_concurrency() -> usize {
    2
}

fn default_full_every() -> u32 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    id: String,
    source: String,
    #[serde(default)]
    policy: Option<PathBuf>,
    #[serde(default)]
    symbols: Option<PathBuf>,
    #[serde(default)]
    interval_secs: Option<u64>,
    #[serde(default)]
    baseline: Option<PathBuf>,
}

/// One VM the agent captures.
#[derive(Debug, Clone)]
pub struct VmJob {
    /// VM id.
    pub id: String,
    /// Source spec (`kvm`, `dump:FILE`, `qemu:QMP,MEM[,MEMDEV]`).
    pub source: String,
    /// The policy: the configured one (or the micro-VM's built-in one) until the verifier's
    /// assigned policy replaces it; None when neither is known yet.
    pub policy: Option<Policy>,
    /// The text of the verifier's policy in use, when it came from the verifier.
    pub policy_text: Option<String>,
    /// Where files the policy names (kernel image, ELF) are looked up.
    pub policy_dir: PathBuf,
    /// Symbols.
    pub symbols: Option<SymbolMap>,
    /// Interval.
    pub interval: Duration,
    /// The kernel's relocations and sections the policy names.
    pub kernel: vmseal_capture::kaslr::KernelContext,
    /// Deltas are reported against this baseline (the one promoted at the verifier) instead of
    /// the VM's first capture.
    pub baseline: Option<Baseline>,
}

/// The agent's configuration, loaded and checked.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Host state directory.
    pub state: PathBuf,
    /// Evidence directory.
    pub out_dir: PathBuf,
    /// TPM TCTI override.
    pub tpm: Option<String>,
    /// Captures at once.
    pub max_concurrent: usize,
    /// Shared hashing budget, MB/s.
    pub budget_mbps: Option<f64>,
    /// Full capture every N captures for incremental sources.
    pub full_every: u32,
    /// VMs.
    pub vms: Vec<VmJob>,
    /// The verifier evidence is submitted to, if any.
    pub verifier: Option<VerifierConn>,
}

impl DaemonConfig {
    /// Load and check a configuration file.
    pub fn load(path: &Path) -> Result<Self, DaemonError> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| DaemonError::Io { path: p, source }
        };
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let cfg = |message: String| DaemonError::Config {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| {
                let before = &text[..s.start.min(text.len())];
                format!("line {}: ", before.matches('\n').count() + 1)
            });
            cfg(format!("{}{}", at.unwrap_or_default(), e.message().trim()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        if raw.vm.is_empty() {
            return Err(cfg("no [[vm]] entries".into()));
        }
        if raw.max_concurrent == 0 {
            return Err(cfg("max_concurrent must be at least 1".into()));
        }
        if raw.budget_mbps.is_some_and(|b| b.is_nan() || b <= 0.0) {
            return Err(cfg("budget_mbps must be positive".into()));
        }
        let mut vms = Vec::new();
        for v in &raw.vm {
            vmseal_sealer::state::check_vm_id(&v.id).map_err(|e| cfg(e.to_string()))?;
            if vms.iter().any(|j: &VmJob| j.id == v.id) {
                return Err(cfg(format!("VM {:?} is listed twice", v.id)));
            }
            let ok_source =
                v.source == "kvm" || v.source.starts_with("dump:") || v.source.starts_with("qemu:");
            if !ok_source {
                return Err(cfg(format!(
                    "VM {:?}: source must be kvm, dump:FILE or qemu:QMP,MEM[,MEMDEV]",
                    v.id
                )));
            }
            let mut policy_dir = base.to_owned();
            let policy = match (&v.policy, v.source.as_str()) {
                (Some(p), _) => {
                    let p = rel(p);
                    let t = std::fs::read_to_string(&p).map_err(io(&p))?;
                    policy_dir = p.parent().unwrap_or(Path::new(".")).to_owned();
                    Some(Policy::parse(&t).map_err(|e| DaemonError::Config {
                        path: p.clone(),
                        message: e.to_string(),
                    })?)
                }
                (None, "kvm") => {
                    Some(Policy::parse(guest::POLICY).map_err(|e| cfg(e.to_string()))?)
                }
                // The verifier's assigned policy is fetched before each capture.
                (None, _) if raw.verifier.is_some() => None,
                (None, _) => {
                    return Err(cfg(format!(
                        "VM {:?} needs a policy: name one (policy = \"FILE\"), or add a [verifier] \
                         section and assign one there (`vmseal-verifier admin assign-policy`)",
                        v.id
                    )));
                }
            };
            let symbols = match &v.symbols {
                Some(p) => {
                    let p = rel(p);
                    let t = std::fs::read_to_string(&p).map_err(io(&p))?;
                    Some(SymbolMap::parse(&t).map_err(|e| DaemonError::Config {
                        path: p.clone(),
                        message: e.to_string(),
                    })?)
                }
                None => None,
            };
            let kernel = match &policy {
                Some(p) => {
                    vmseal_capture::kaslr::KernelContext::load(p, &policy_dir, symbols.as_ref())
                        .map_err(|e| cfg(format!("VM {:?}: {e}", v.id)))?
                }
                None => Default::default(),
            };
            let secs = v
                .interval_secs
                .or(policy.as_ref().and_then(|p| p.interval_secs))
                .unwrap_or(60)
                .max(1);
            // File paths inside the source are relative to the configuration too.
            let source = if let Some(f) = v.source.strip_prefix("dump:") {
                format!("dump:{}", rel(Path::new(f)).display())
            } else if let Some(spec) = v.source.strip_prefix("qemu:") {
                let parts: Vec<String> = spec
                    .split(',')
                    .enumerate()
                    .map(|(i, p)| {
                        if i < 2 {
                            rel(Path::new(p)).display().to_string()
                        } else {
                            p.to_owned()
                        }
                    })
                    .collect();
                format!("qemu:{}", parts.join(","))
            } else {
                v.source.clone()
            };
            let baseline = v
                .baseline
                .as_ref()
                .map(|p| {
                    let p = rel(p);
                    let b = std::fs::read(&p).map_err(io(&p))?;
                    Baseline::from_bytes(&b).map_err(|e| DaemonError::Config {
                        path: p.clone(),
                        message: e.to_string(),
                    })
                })
                .transpose()?;
            vms.push(VmJob {
                id: v.id.clone(),
                source,
                policy,
                policy_text: None,
                policy_dir,
                symbols,
                interval: Duration::from_secs(secs),
                kernel,
                baseline,
            });
        }
        Ok(Self {
            state: rel(&raw.state),
            out_dir: rel(&raw.out_dir),
            tpm: raw.tpm,
            max_concurrent: raw.max_concurrent,
            budget_mbps: raw.budget_mbps,
            full_every: raw.full_every.max(1),
            verifier: match &raw.verifier {
                None => None,
                Some(v) => Some(VerifierConn {
                    url: v.url.clone(),
                    ca: rel(&v.ca),
                    agent_cert: v
                        .agent_cert
                        .as_deref()
                        .map(rel)
                        .unwrap_or_else(|| rel(&raw.state).join("agent.pem")),
                    agent_key: v
                        .agent_key
                        .as_deref()
                        .map(rel)
                        .unwrap_or_else(|| rel(&raw.state).join("agent.key")),
                    token: match (&v.token_cert, &v.token_key) {
                        (Some(c), Some(k)) => Some((rel(c), rel(k))),
                        (None, None) => None,
                        _ => {
                            return Err(cfg(
                                "[verifier]: give both token_cert and token_key, or neither".into(),
                            ));
                        }
                    },
                    retry: Duration::from_secs(v.retry_secs.unwrap_or(60)),
                }),
            },
            vms,
        })
    }
}

/// What happened to one capture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureEvent {
    /// VM.
    pub vm: String,
    /// Sequence number sealed, when it succeeded.
    pub seq: Option<u64>,
    /// Evidence file.
    pub out: Option<PathBuf>,
    /// full | incremental.
    pub kind: String,
    /// Pages read.
    pub pages_read: u64,
    /// Pause, µs.
    pub pause_us: u64,
    /// Regions whose pages differ from the VM's first capture (its baseline).
    pub changed_regions: Vec<String>,
    /// Error, when it failed.
    pub error: Option<String>,
    /// The verifier's capture request this capture answers, if it was asked for.
    pub request_id: Option<String>,
}

impl CaptureEvent {
    fn failed(vm: &str, error: String, request_id: Option<String>) -> Self {
        Self {
            vm: vm.to_owned(),
            seq: None,
            out: None,
            kind: String::new(),
            pages_read: 0,
            pause_us: 0,
            changed_regions: vec![],
            error: Some(error),
            request_id,
        }
    }
}

/// A capture the verifier asked for: captured in full, as soon as the VM is not being captured
/// already, with the verifier's nonce in the claims (and keying any sampled region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// The verifier's request id.
    pub request_id: String,
    /// VM id.
    pub vm: String,
    /// The nonce the evidence must carry.
    pub nonce: Vec<u8>,
}

/// Captures asked for on demand, waiting for the agent's loop (filled by the verifier long-poll).
#[derive(Debug, Default)]
pub struct Demands(Mutex<std::collections::VecDeque<Demand>>);

impl Demands {
    /// Queue a demand.
    pub fn push(&self, d: Demand) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(d);
    }

    /// Whether no demand is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn pop_where(&self, ready: impl Fn(&Demand) -> bool) -> Option<Demand> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = q.iter().position(ready)?;
        q.remove(i)
    }
}

/// Per-VM state across captures.
struct VmState {
    job: VmJob,
    vm: Option<MicroVm>,
    last: Option<(Snapshot, u64)>,
    baseline: Option<Baseline>,
    captures: u32,
    /// The kernel context and symbols of the guest's running boot, found without a symbol map,
    /// kept while its divide-error gate points where it did (the same boot of the same kernel:
    /// a reboot with KASLR moves it).
    boot: Option<BootKernel>,
}

/// What [`VmState::boot`] keeps.
struct BootKernel {
    divide_error: u64,
    context: vmseal_capture::kaslr::KernelContext,
    symbols: Option<SymbolMap>,
}

/// Capture under the verifier's assigned policy when it has one (checked before every capture):
/// parsed with the same parser the verifier used, its kernel files found beside the configured
/// policy. When the verifier cannot be asked, the policy in use stays.
fn refresh_policy(st: &mut VmState, verifier: &vmseal_client::Client) -> Result<(), String> {
    let id = st.job.id.clone();
    let text = match verifier.assigned_policy(&id) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!(
                vm = id,
                "keeping the policy in use: asking the verifier for the VM's policy: {e}"
            );
            return Ok(());
        }
    };
    if st.job.policy_text.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let p = Policy::parse(&text)
        .map_err(|e| format!("the verifier's assigned policy for VM {id:?}: {e}"))?;
    let kernel =
        vmseal_capture::kaslr::KernelContext::load(&p, &st.job.policy_dir, st.job.symbols.as_ref())
            .map_err(|e| format!("the verifier's assigned policy for VM {id:?}: {e}"))?;
    tracing::info!(
        vm = id,
        policy = hex::encode(p.digest),
        "capturing under the verifier's assigned policy"
    );
    st.job.policy = Some(p);
    st.job.kernel = kernel;
    st.boot = None;
    st.job.policy_text = Some(text);
    // An incremental capture carries its base's policy: the next one is full.
    st.last = None;
    Ok(())
}

fn capture_one(
    st: &mut VmState,
    budget: Option<&Arc<Budget>>,
    full_every: u32,
    nonce: Option<&[u8]>,
) -> Result<Snapshot, String> {
    let job = &st.job;
    let Some(policy) = job.policy.as_ref() else {
        return Err(format!(
            "VM {:?} has no policy: the verifier has none assigned (`vmseal-verifier admin \
             assign-policy --vm-id {} --policy FILE`) and the agent's configuration names none",
            job.id, job.id
        ));
    };
    let plan_for = |src: &dyn MemorySource| -> Result<Plan, String> {
        let mut p =
            Plan::new(policy, src, job.symbols.as_ref(), nonce).map_err(|e| e.to_string())?;
        p.budget = budget.cloned();
        Ok(p)
    };
    if job.source == "kvm" {
        if st.vm.is_none() {
            let vm = MicroVm::start(MicroVmConfig::default()).map_err(|e| e.to_string())?;
            vm.wait_heartbeats(2, Duration::from_secs(30));
            st.vm = Some(vm);
        }
        let Some(vm) = st.vm.as_mut() else {
            return Err("micro-VM missing".into());
        };
        let symbols = job
            .symbols
            .clone()
            .unwrap_or_else(|| guest::symbols(vm.program()));
        // A verifier's nonce makes a full capture: an incremental one would carry its base's claims.
        let incremental =
            nonce.is_none() && st.last.is_some() && !st.captures.is_multiple_of(full_every);
        return match (&st.last, incremental) {
            (Some((prev, seq)), true) => prev.incremental(vm, *seq).map_err(|e| e.to_string()),
            _ => {
                let mut p =
                    Plan::new(policy, vm, Some(&symbols), nonce).map_err(|e| e.to_string())?;
                p.budget = budget.cloned();
                Snapshot::full(vm, p, Consistency::PreCopy).map_err(|e| e.to_string())
            }
        };
    }
    if let Some(path) = job.source.strip_prefix("dump:") {
        let mut src = open_dump(Path::new(path)).map_err(|e| e.to_string())?;
        let p = plan_for(src.as_ref())?;
        return Snapshot::full(src.as_mut(), p, Consistency::StopCopy).map_err(|e| e.to_string());
    }
    let spec = job.source.strip_prefix("qemu:").unwrap_or_default();
    let mut src = QemuSource::open(spec).map_err(|e| e.to_string())?;
    src.prepare_for(policy).map_err(|e| e.to_string())?;
    // Without a symbol map, the kernel's own table moved by this boot's slide (or found in its
    // memory), kept for the boot.
    let mut p = if job.symbols.is_none() && job.kernel.needs_boot() {
        let divide_error = src.divide_error_handler()?;
        if st.boot.as_ref().map(|b| b.divide_error) != Some(divide_error) {
            let (context, symbols) = st
                .job
                .kernel
                .for_boot(&src, divide_error)
                .map_err(|e| e.to_string())?;
            st.boot = Some(BootKernel {
                divide_error,
                context,
                symbols,
            });
        }
        let b = st
            .boot
            .as_ref()
            .ok_or("the boot's kernel context is missing")?;
        let policy = st.job.policy.as_ref().ok_or("no policy")?;
        b.context
            .plan(policy, &src, b.symbols.as_ref(), nonce)
            .map_err(|e| e.to_string())?
    } else {
        job.kernel
            .plan(policy, &src, job.symbols.as_ref(), nonce)
            .map_err(|e| e.to_string())?
    };
    p.budget = budget.cloned();
    Snapshot::full(&mut src, p, Consistency::StopCopy).map_err(|e| e.to_string())
}

/// One capture of one VM as an agent round: the verifier's policy first, then the round, then
/// what the agent keeps for the next capture.
fn capture_round(
    st: &mut VmState,
    agent: &Agent<'_>,
    demand: Option<Demand>,
    budget: Option<&Arc<Budget>>,
    full_every: u32,
    out_dir: &Path,
) -> (CaptureEvent, Option<Delivery>) {
    let id = st.job.id.clone();
    let request_id = demand.as_ref().map(|d| d.request_id.clone());
    let fresh = match &demand {
        Some(d) => Freshness::Given(d.nonce.clone()),
        None => Freshness::Scheduled,
    };
    if let Some(v) = agent.client()
        && let Err(e) = refresh_policy(st, v)
    {
        return (CaptureEvent::failed(&id, e, request_id), None);
    }
    let own = st.baseline.clone();
    let on_retry = |attempt: u32, e: &vmseal_client::ClientError, wait: Duration| {
        tracing::warn!(
            vm = id,
            "submission attempt {attempt} failed ({e}); the same evidence again in {} ms",
            wait.as_millis()
        )
    };
    let round = agent.round(
        &id,
        fresh,
        own.as_ref(),
        out_dir,
        |nonce| capture_one(st, budget, full_every, nonce),
        &on_retry,
    );
    let round = match round {
        Ok(r) => r,
        Err(e) => {
            let ev = CaptureEvent::failed(&id, vmseal_client::error_chain_text(&e), request_id);
            return (ev, None);
        }
    };
    let snap = &round.snapshot;
    let seq = round.sealed.claims.seq;
    let changed: Vec<String> = round
        .baseline
        .as_ref()
        .map(|b| snap.delta(b).into_iter().map(|d| d.region).collect())
        .unwrap_or_default();
    let kind = match snap.stats.kind {
        vmseal_sealer::claims::CaptureKind::Full => "full".to_owned(),
        vmseal_sealer::claims::CaptureKind::Incremental { base_seq } => {
            format!("incremental:{base_seq}")
        }
    };
    let ev = CaptureEvent {
        vm: id.clone(),
        seq: Some(seq),
        out: Some(round.sealed.out.clone()),
        kind,
        pages_read: snap.stats.pages_read,
        pause_us: snap.stats.pause.as_micros() as u64,
        changed_regions: changed,
        error: None,
        request_id,
    };
    if st.baseline.is_none() {
        st.baseline = Some(snap.baseline());
    }
    st.captures += 1;
    // A nonce capture is no base for an incremental one.
    st.last = demand.is_none().then_some((round.snapshot, seq));
    (ev, round.delivery)
}

/// Run the agent until `stop` is set, or until every VM was captured `rounds` times and no
/// demand is waiting. Demands (the verifier's capture requests) go before scheduled captures and
/// do not count as rounds. Each capture is one [`Agent::round`]: with a verifier, under its
/// assigned policy, against its served baseline, on its chain, submitted. `on_event` hears of
/// each capture, with what became of its submission.
pub fn run(
    cfg: &DaemonConfig,
    rounds: Option<u32>,
    stop: &AtomicBool,
    demands: &Demands,
    agent: &Agent<'_>,
    on_event: &(dyn Fn(&CaptureEvent, Option<&Delivery>) + Sync),
) {
    let budget = cfg.budget_mbps.map(|b| Arc::new(Budget::new(b)));
    let states: Vec<Mutex<VmState>> = cfg
        .vms
        .iter()
        .map(|j| {
            Mutex::new(VmState {
                job: j.clone(),
                vm: None,
                last: None,
                baseline: j.baseline.clone(),
                captures: 0,
                boot: None,
            })
        })
        .collect();
    let slots = (Mutex::new(0usize), Condvar::new());
    let mut next_due: Vec<Instant> = vec![Instant::now(); cfg.vms.len()];
    let mut done: Vec<u32> = vec![0; cfg.vms.len()];
    let busy: Vec<AtomicBool> = cfg.vms.iter().map(|_| AtomicBool::new(false)).collect();
    std::thread::scope(|scope| {
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let finished = rounds.is_some_and(|r| done.iter().all(|&d| d >= r))
                && busy.iter().all(|b| !b.load(Ordering::Acquire))
                && demands.is_empty();
            if finished {
                break;
            }
            // Demands for VMs this agent does not capture are answered with an error at once.
            while let Some(d) = demands.pop_where(|d| !cfg.vms.iter().any(|v| v.id == d.vm)) {
                on_event(
                    &CaptureEvent::failed(
                        &d.vm,
                        format!(
                            "the verifier asked for VM {:?}, which this agent does not capture (not in its configuration)",
                            d.vm
                        ),
                        Some(d.request_id),
                    ),
                    None,
                );
            }
            let now = Instant::now();
            let mut starts: Vec<(usize, Option<Demand>)> = Vec::new();
            let idle = |i: usize, starts: &[(usize, Option<Demand>)]| {
                !busy[i].load(Ordering::Acquire) && !starts.iter().any(|(j, _)| *j == i)
            };
            while let Some(d) = demands.pop_where(|d| {
                cfg.vms
                    .iter()
                    .position(|v| v.id == d.vm)
                    .is_some_and(|i| idle(i, &starts))
            }) {
                if let Some(i) = cfg.vms.iter().position(|v| v.id == d.vm) {
                    starts.push((i, Some(d)));
                }
            }
            for i in 0..cfg.vms.len() {
                if rounds.is_some_and(|r| done[i] >= r) || !idle(i, &starts) || now < next_due[i] {
                    continue;
                }
                next_due[i] = now + cfg.vms[i].interval;
                done[i] += 1;
                starts.push((i, None));
            }
            for (i, demand) in starts {
                {
                    // Wait for a slot: a started capture is never dropped.
                    let mut n = slots.0.lock().unwrap_or_else(|p| p.into_inner());
                    while *n >= cfg.max_concurrent {
                        n = slots.1.wait(n).unwrap_or_else(|p| p.into_inner());
                    }
                    *n += 1;
                }
                busy[i].store(true, Ordering::Release);
                let (state, slots, busy, budget) = (&states[i], &slots, &busy[i], budget.as_ref());
                let out_dir = cfg.out_dir.join(&cfg.vms[i].id);
                let full_every = cfg.full_every;
                scope.spawn(move || {
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    let (ev, delivery) =
                        capture_round(&mut st, agent, demand, budget, full_every, &out_dir);
                    on_event(&ev, delivery.as_ref());
                    drop(st);
                    busy.store(false, Ordering::Release);
                    let mut n = slots.0.lock().unwrap_or_else(|p| p.into_inner());
                    *n -= 1;
                    slots.1.notify_all();
                });
            }
            let n = slots.0.lock().unwrap_or_else(|p| p.into_inner());
            let _ = slots.1.wait_timeout(n, Duration::from_millis(50));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_example_configuration_loads() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/agent.toml");
        let c = DaemonConfig::load(&f).unwrap();
        assert_eq!(c.vms.len(), 2);
        assert!(c.vms[0].policy.is_none(), "the verifier's policy, fetched");
        assert!(c.vms[1].policy.is_some(), "the micro-VM's built-in one");
        let v = c.verifier.unwrap();
        assert_eq!(
            (v.url.as_str(), v.retry),
            ("https://verifier.example:8443", Duration::from_secs(60))
        );
    }
}
