//! `vmseal-host`: the host side of vmseal.
//!
//! For now: `init` sets up the host's seal (TPM attestation key, ML-DSA-87 intermediate with its
//! hardware anchors, the intermediate seed sealed by the TPM), and `seal` hashes a raw memory image
//! into per-page Merkle trees and writes signed snapshot evidence. The capture engine (KVM, QEMU,
//! dirty logging, policies) will replace the image reader.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use time::Duration;
use vmseal_capture::agent::seal::Sealed;
use vmseal_capture::dump::{RawDump, open_dump};
use vmseal_capture::policy::{Policy, RegionPolicy, Sampling, Selector, SymbolMap};
use vmseal_capture::source::GuestMemory;
use vmseal_capture::{Baseline, Consistency, Plan, Snapshot};
use vmseal_host::guest;
use vmseal_host::kvm::{MicroVm, MicroVmConfig};
use vmseal_host::qemu::QemuSource;
use vmseal_sealer::claims::{CaptureKind, RegionClass, Severity};
use vmseal_sealer::merkle::{HashAlg, PAGE_SIZE};
use vmseal_sealer::snp::Product;
use vmseal_sealer::state::{
    HostState, InitOptions, SnpChoice, StandInOptions, check_vm_id, init, write_atomic,
};

#[derive(Parser)]
#[command(
    name = "vmseal-host",
    version,
    about = "Capture VM memory and seal it into signed, hardware-anchored evidence",
    long_about = "vmseal-host runs beside the hypervisor. It keeps a per-host seal: an attestation key \
in the TPM, an ML-DSA-87 intermediate key whose certificate carries a TPM quote (and an SEV-SNP \
report when the host is an SNP guest), and that key's seed sealed by the TPM to the host's PCRs. \
Each snapshot is hashed page by page into Merkle trees and signed by a fresh ML-DSA-65 leaf key.",
    after_help = "Examples:\n  \
  vmseal-host init --state /var/lib/vmseal --tpm device:/dev/tpmrm0\n  \
  vmseal-host init --state ./st --tpm swtpm:host=127.0.0.1,port=2321 --snp insecure-soft\n  \
  vmseal-host seal --state ./st --vm-id web-1 --image guest.raw --out web-1.cose\n  \
  vmseal-certs verify --roots ek-ca.pem web-1.cose"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script (bash, zsh, fish or elvish), e.g. into
    /// /etc/bash_completion.d/vmseal-host.
    #[command(
        after_help = "Example:\n  vmseal-host completions bash > /etc/bash_completion.d/vmseal-host"
    )]
    Completions {
        /// The shell.
        #[arg(value_parser = vmseal_client::cli::SHELLS)]
        shell: String,
    },
    /// Print the man page (roff), e.g. into /usr/share/man/man1/vmseal-host.1.
    #[command(after_help = "Example:\n  vmseal-host man > /usr/share/man/man1/vmseal-host.1")]
    Man,
    /// Create the host's seal: AK, intermediate key and certificate, TPM-sealed key blob.
    #[command(
        after_help = "The state directory must not already hold a state. The TPM must have an RSA \
EK certificate at NV index 0x1c00002 (swtpm: swtpm_setup --create-ek-cert)."
    )]
    Init(InitArgs),
    /// Hash a raw memory image into Merkle trees and write signed snapshot evidence.
    #[command(
        after_help = "Regions default to the whole image as one data region. Give --region \
NAME:CLASS:SEVERITY:OFFSET:LEN (repeatable) to name regions; CLASS is code|rodata|data|structure, \
SEVERITY low|medium|high|critical, OFFSET and LEN in bytes (0x… allowed), page-aligned.\n\n\
Example:\n  vmseal-host seal --state ./st --vm-id vm1 --image mem.raw --out vm1.cose \\\n    \
--region kernel-text:code:critical:0x100000:0x200000 --region heap:data:medium:0x400000:0x100000"
    )]
    Seal(SealArgs),

    /// Capture a VM's memory by a policy and seal it (sources: kvm micro-VM, dump:FILE).
    #[command(
        after_help = "Examples:\n  vmseal-host capture --source dump:mem.raw --policy p.toml --state ./st --vm-id vm1 --out vm1.cose\n  \
vmseal-host capture --source kvm --state ./st --vm-id micro --out m.cose --baseline-out base.cbor\n  \
vmseal-host capture --source kvm --state ./st --vm-id micro --out m2.cose --baseline base.cbor"
    )]
    Capture(CaptureArgs),
    /// Enrol this host with a verifier using an enrollment token; writes the agent certificate.
    #[command(
        after_help = "The verifier's admin makes the token (`vmseal-verifier admin enrollment-token`). \
The host sends its intermediate certificate (TPM quote, EK certificate, SNP report) and its EK public \
area; the verifier wraps a secret for the EK bound to the AK's name, and only this TPM can unwrap it \
(credential activation). The agent key is made here and never leaves the host.\n\n\
Example:\n  vmseal-host enroll --state ./st --verifier https://verifier:8443 --verifier-ca ca.pem \\\n    \
--token-cert token.pem --token-key token.key\n  (writes ./st/agent.pem and ./st/agent.key)"
    )]
    Enroll(EnrollArgs),
    /// Renew this host's agent certificate by proving its hardware again (a fresh TPM quote by
    /// the enrolled AK, an SNP report of the same chip, over the verifier's nonce); the old
    /// certificate is revoked. The agent (`run`) does this by itself at start when fewer than 30
    /// days are left.
    #[command(
        after_help = "Example:\n  vmseal-host renew --state ./st --verifier https://verifier:8443 --verifier-ca ca.pem\n  \
(replaces ./st/agent.pem and ./st/agent.key)"
    )]
    Renew(RenewArgs),
    /// Check this host: its state, the TPM, that the PCRs still unseal the intermediate key, the
    /// certificates' days left and, with a verifier, that it is reachable and where each VM's
    /// chain stands there. Exit 0 when every check passes, 1 otherwise (each failure with its fix).
    #[command(after_help = "Examples:\n  vmseal-host status --state ./st\n  \
vmseal-host status --config /etc/vmseal/agent.toml\n  \
vmseal-host status --state ./st --verifier https://verifier:8443 --verifier-ca ca.pem --json")]
    Status(StatusArgs),
    /// The KVM micro-VM: run it under repeated capture, or show its guest program.
    #[command(subcommand)]
    Vm(VmCommand),
    /// The host agent: capture every configured VM on its schedule and seal the evidence.
    #[command(
        after_help = "The configuration (TOML) lists the host state, the evidence directory, \
max_concurrent, budget_mbps, and one [[vm]] per guest with its source, policy and interval; see \
docs/operations.md. SIGINT or SIGTERM stops the agent after the captures in flight.\n\n\
Example:\n  vmseal-host run --config /etc/vmseal/agent.toml"
    )]
    Run(vmseal_client::cli::RunArgs),
    /// Measure capture performance on a micro-VM (figures beside same-process baselines), or
    /// what walking a Linux guest's kernel objects adds to a capture's pause.
    #[command(
        after_help = "Prints the figures of docs/benchmarks.md; --json prints one JSON object. With \
--source qemu:…, --policy (with [kernel_objects]) and --symbols, measures the kernel-objects walk \
beside the page-hash capture of the same guest instead (the symbols, without --symbols, decoded \
from the policy's kernel image).\n\n\
Examples:\n  vmseal-host bench --mem-mib 1024 --json\n  \
vmseal-host bench --source qemu:/run/vm.qmp,/dev/shm/vm --policy linux.toml --rounds 20"
    )]
    Bench {
        /// Guest memory to capture, MiB.
        #[arg(long, default_value_t = 1024)]
        mem_mib: u64,
        /// Threads for capture and the raw-hash baseline [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// A running QEMU guest (`qemu:QMP_SOCKET,MEM_FILE[,MEMDEV_ID]`) whose kernel-objects walk
        /// to measure.
        #[arg(long, requires = "policy")]
        source: Option<String>,
        /// Its policy, with `[kernel_objects]`.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Its running kernel's symbols [default: decoded from the policy's kernel image].
        #[arg(long)]
        symbols: Option<PathBuf>,
        /// Captures with the walk (and as many without) whose medians are reported.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// A host's state and TPM, and the verifier it talks to.
#[derive(clap::Args)]
struct HostAt {
    /// State directory made by `init`.
    #[arg(long)]
    state: PathBuf,
    /// TPM TCTI, if not the one recorded at init.
    #[arg(long, env = "VMSEAL_TPM")]
    tpm: Option<String>,
    #[command(flatten)]
    to: vmseal_client::cli::VerifierArgs,
}

#[derive(clap::Args)]
struct EnrollArgs {
    #[command(flatten)]
    at: HostAt,
    /// Enrollment token certificate (from the verifier's admin).
    #[arg(long)]
    token_cert: PathBuf,
    /// Enrollment token key.
    #[arg(long)]
    token_key: PathBuf,
    /// Where to write the agent certificate and key.
    #[command(flatten)]
    agent: vmseal_client::cli::AgentCertArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// State directory made by `init` (or give --config).
    #[arg(long, required_unless_present = "config", env = "VMSEAL_STATE")]
    state: Option<PathBuf>,
    /// The agent's configuration: its state, TPM and [verifier] section.
    #[arg(long, conflicts_with_all = ["state", "verifier"])]
    config: Option<PathBuf>,
    /// TPM TCTI, if not the one recorded at init.
    #[arg(long, env = "VMSEAL_TPM")]
    tpm: Option<String>,
    /// Verifier URL (https://host:port), to check it and the VMs' chains there.
    #[arg(long, requires = "verifier_ca", env = "VMSEAL_VERIFIER")]
    verifier: Option<String>,
    /// The verifier's CA certificate.
    #[arg(long, env = "VMSEAL_VERIFIER_CA")]
    verifier_ca: Option<PathBuf>,
    /// Agent certificate [default: STATE/agent.pem].
    #[arg(long)]
    agent_cert: Option<PathBuf>,
    /// Its key [default: STATE/agent.key].
    #[arg(long)]
    agent_key: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RenewArgs {
    #[command(flatten)]
    at: HostAt,
    /// The agent certificate to renew (and its key).
    #[command(flatten)]
    agent: vmseal_client::cli::AgentCertArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
enum VmCommand {
    /// Start the micro-VM on /dev/kvm and capture it repeatedly; optionally inject attacks.
    #[command(
        after_help = "Example (what the demo runs):\n  vmseal-host vm run --state ./st --vm-id micro --captures 3 \\\n    \
--attack code-patch --attack pointer-hook --attack-after 2 --incremental --out-dir ./evidence"
    )]
    Run(VmRunArgs),
    /// Print the guest program (disassembly) and its symbol map.
    Listing,
}

#[derive(Clone, Copy, ValueEnum)]
enum SnpArg {
    /// No SNP anchor.
    None,
    /// Linux configfs-tsm (/sys/kernel/config/tsm/report).
    Configfs,
    /// /dev/sev-guest.
    SevGuest,
    /// INSECURE software stand-in (tests only).
    InsecureSoft,
}

#[derive(Clone, Copy, ValueEnum)]
enum HashArg {
    /// SHA-256.
    Sha256,
    /// BLAKE3.
    Blake3,
}

#[derive(clap::Args)]
struct InitArgs {
    /// State directory to create.
    #[arg(long)]
    state: PathBuf,
    /// TPM TCTI: device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, mssim:…
    #[arg(long, env = "VMSEAL_TPM")]
    tpm: String,
    /// SEV-SNP anchor for the intermediate key (only inside an SNP guest, or the INSECURE
    /// software stand-in for tests).
    #[arg(long, value_enum, default_value_t = SnpArg::None)]
    snp: SnpArg,
    /// Host identifier written into the intermediate certificate [default: hostname].
    #[arg(long)]
    host_id: Option<String>,
    /// sha256 PCRs to quote and to seal the key to, e.g. 0-7 or 0,2,4,7.
    #[arg(long, default_value = "0-7")]
    pcrs: String,
    /// Nonce (hex) from the verifier to bind; random when omitted.
    #[arg(long)]
    nonce: Option<String>,
    /// Product layout of INSECURE stand-in reports.
    #[arg(long, default_value = "milan", value_parser = parse_product)]
    insecure_product: Product,
    /// Report version of INSECURE stand-in reports (2, 3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=5))]
    insecure_report_version: u32,
    #[command(flatten)]
    standin: vmseal_capture::agent::standin_args::StandInArgs,
    /// Lifetime of the intermediate certificate, in days (1 to 3650; `--validity-days` is the
    /// old spelling).
    #[arg(long = "valid-days", alias = "validity-days", default_value_t = 365,
        value_parser = clap::value_parser!(i64).range(1..=3650))]
    validity_days: i64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SealArgs {
    /// State directory made by `init`.
    #[arg(long)]
    state: PathBuf,
    /// VM identifier ([A-Za-z0-9._-], up to 128 characters).
    #[arg(long)]
    vm_id: String,
    /// Raw memory image (a whole number of 4 KiB pages).
    #[arg(long)]
    image: PathBuf,
    /// Where to write the evidence (COSE_Sign1).
    #[arg(long)]
    out: PathBuf,
    /// TPM TCTI, if not the one recorded at init.
    #[arg(long, env = "VMSEAL_TPM")]
    tpm: Option<String>,
    /// A region, NAME:CLASS:SEVERITY:OFFSET:LEN (repeatable).
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Page hash.
    #[arg(long, value_enum, default_value_t = HashArg::Sha256)]
    hash: HashArg,
    /// Verifier nonce (hex) this snapshot answers.
    #[arg(long)]
    nonce: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Memory source: `kvm` (a fresh micro-VM), `dump:FILE` (a raw image or an ELF core from
    /// QEMU's dump-guest-memory), or
    /// `qemu:QMP_SOCKET,MEM_FILE[,MEMDEV_ID]` (a running QEMU guest with a shared memory-backend-file).
    #[arg(long)]
    source: String,
    /// Capture policy (TOML, docs/policy.md); the micro-VM has a built-in default.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The running kernel's symbols (System.map format: its /proc/kallsyms or System.map), for
    /// `symbol` selectors, KASLR and kernel objects. For a QEMU guest whose policy names its
    /// `kernel`, they default to the kernel's own table decoded from that image, moved by the
    /// slide the guest's interrupt table gives.
    #[arg(long)]
    symbols: Option<PathBuf>,
    /// State directory made by `init`.
    #[arg(long)]
    state: PathBuf,
    /// VM identifier.
    #[arg(long)]
    vm_id: String,
    /// TPM TCTI, if not the one recorded at init.
    #[arg(long, env = "VMSEAL_TPM")]
    tpm: Option<String>,
    /// Verifier nonce (hex): goes into the claims and keys page sampling.
    #[arg(long)]
    nonce: Option<String>,
    /// Capture every page of regions the policy samples (`sample = k`): a golden baseline needs
    /// them whole, since each later nonce selects other pages of it. The evidence still names the
    /// same policy; the verifier accepts a whole region where a sample is asked for.
    #[arg(long)]
    all_pages: bool,
    /// Baseline trees (from --baseline-out) to report a delta against.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Write this capture's trees as a baseline.
    #[arg(long)]
    baseline_out: Option<PathBuf>,
    /// Where to write the evidence.
    #[arg(long)]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    submit: SubmitArgs,
}

#[derive(clap::Args)]
struct VmRunArgs {
    /// State directory made by `init`.
    #[arg(long)]
    state: PathBuf,
    /// VM identifier.
    #[arg(long, default_value = "micro-vm")]
    vm_id: String,
    /// TPM TCTI, if not the one recorded at init.
    #[arg(long, env = "VMSEAL_TPM")]
    tpm: Option<String>,
    /// Capture policy (default: host/policies/micro-vm.toml, built in).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64)]
    mem_mib: u64,
    /// Working-set pages the guest keeps writing.
    #[arg(long, default_value_t = 1024)]
    ws_pages: u32,
    /// Number of captures.
    #[arg(long, default_value_t = 3)]
    captures: u32,
    /// Time between captures, ms.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Attack to inject (repeatable).
    #[arg(long = "attack", value_enum)]
    attacks: Vec<AttackArg>,
    /// Inject the attacks before this capture (0-based).
    #[arg(long, default_value_t = 1)]
    attack_after: u32,
    /// Where evidence files and baseline.cbor go.
    #[arg(long, default_value = "evidence")]
    out_dir: PathBuf,
    /// Captures after the first re-hash only pages the dirty log reports.
    #[arg(long)]
    incremental: bool,
    /// How full captures stay consistent.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::PreCopy)]
    consistency: ConsistencyArg,
    /// Verifier nonce (hex).
    #[arg(long)]
    nonce: Option<String>,
    /// JSON output, one object per capture.
    #[arg(long)]
    json: bool,
    /// Report deltas against this baseline file instead of the verifier's golden baseline (with
    /// --verifier) or the first capture of this run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// Submitting snapshots to a verifier (`vm run`, `capture`).
#[derive(clap::Args)]
struct SubmitArgs {
    /// Submit every snapshot to this verifier (https://host:port) and print its appraisal; each
    /// snapshot builds on the verifier's chain, its deltas against the verifier's golden baseline.
    #[arg(long, requires = "verifier_ca", env = "VMSEAL_VERIFIER")]
    verifier: Option<String>,
    /// The verifier's CA certificate.
    #[arg(long, env = "VMSEAL_VERIFIER_CA")]
    verifier_ca: Option<PathBuf>,
    /// This host's agent certificate (from `vmseal-host enroll`) [default: STATE/agent.pem].
    #[arg(long)]
    agent_cert: Option<PathBuf>,
    /// This host's agent key [default: STATE/agent.key].
    #[arg(long)]
    agent_key: Option<PathBuf>,
    /// Retry a submission that failed for a transient reason (verifier unreachable, overloaded)
    /// with the same evidence for this many seconds.
    #[arg(long, default_value_t = 60)]
    retry_secs: u64,
}

impl SubmitArgs {
    /// The verifier's client, when one is given.
    fn client(&self, state: &Path) -> Result<Option<vmseal_client::Client>> {
        let (Some(url), Some(ca)) = (&self.verifier, &self.verifier_ca) else {
            return Ok(None);
        };
        let cert = self
            .agent_cert
            .clone()
            .unwrap_or_else(|| state.join("agent.pem"));
        let key = self
            .agent_key
            .clone()
            .unwrap_or_else(|| state.join("agent.key"));
        let read = |p: &PathBuf| {
            std::fs::read(p).with_context(|| {
                format!(
                    "cannot read {} (enrol the host first: `vmseal-host enroll`)",
                    p.display()
                )
            })
        };
        Ok(Some(vmseal_client::Client::new(
            url,
            &read(ca)?,
            &read(&cert)?,
            &read(&key)?,
        )?))
    }

    /// A courier on `client`: build on the verifier's chain of `vm_id`, and fetch its golden
    /// baseline when `baseline` is not given already.
    fn start<'a>(
        &self,
        client: &'a vmseal_client::Client,
        state: &'a HostState,
        vm_id: &str,
        baseline: &mut Option<Baseline>,
        json: bool,
    ) -> Result<vmseal_capture::agent::courier::Courier<'a>> {
        let c = vmseal_capture::agent::courier::Courier::new(client, state)
            .retry_for(std::time::Duration::from_secs(self.retry_secs));
        let h = c.sync(vm_id)?;
        if !json {
            println!("the verifier's chain of {vm_id} stands at #{}", h.next_seq);
        }
        if baseline.is_none()
            && let Some(b) = client.active_baseline(vm_id)?
        {
            *baseline = Some(Baseline::from_verifier(&b)?);
            if !json {
                println!(
                    "deltas against the verifier's golden baseline v{}",
                    b.version
                );
            }
        }
        Ok(c)
    }
}

/// Deliver sealed evidence and print the verifier's answer; why it was not accepted.
fn deliver(
    c: &vmseal_capture::agent::courier::Courier<'_>,
    vm_id: &str,
    sealed: &Sealed,
    out: &Path,
    base: &vmseal_sealer::state::VmChain,
    json: bool,
) -> Result<(), String> {
    use vmseal_capture::agent::courier::Delivery;
    let seq = sealed.claims.seq;
    let d = c.deliver(vm_id, sealed, out, base, &move |attempt, e, wait| {
        if !json {
            println!(
                "  VERIFIER: attempt {attempt} failed ({e}); the same evidence again in {} ms",
                wait.as_millis()
            );
        }
    });
    match &d {
        Delivery::Accepted {
            appraisal: ap,
            attempts,
            ..
        } if json => println!(
            "{}",
            serde_json::json!({ "appraisal": ap, "attempts": attempts })
        ),
        Delivery::Accepted { appraisal: ap, .. } => {
            let changed: Vec<String> = ap.changes.iter().map(|c| c.describe()).collect();
            println!(
                "  VERIFIER: {}{} [signed EAR verified]",
                verdict_words(ap, &d),
                if changed.is_empty() {
                    String::new()
                } else {
                    format!("; changed: {}", changed.join(", "))
                }
            );
            for f in ap.kernel.iter().flat_map(|k| &k.findings) {
                println!("  VERIFIER: kernel: {}", f.describe());
            }
        }
        d => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "seq": seq, "error": d.describe() })
                );
            } else {
                println!("  VERIFIER: {}", d.describe());
            }
            return Err(format!("#{seq}: {}", d.describe()));
        }
    }
    Ok(())
}

fn parse_product(s: &str) -> Result<Product, String> {
    Product::from_name(s).ok_or_else(|| format!("unknown product {s:?}: use milan, genoa or turin"))
}

/// Parse "0-7" or "0,2,4".
fn parse_pcrs(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u8>()?, b.parse::<u8>()?),
            None => {
                let v = part.parse::<u8>()?;
                (v, v)
            }
        };
        if a > b || b > 23 {
            bail!("PCR range {part:?} is not within 0-23");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        bail!("no PCRs selected");
    }
    Ok(out)
}

fn parse_num(s: &str) -> Result<u64> {
    let s = s.trim();
    Ok(
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16)?,
            None => s.parse()?,
        },
    )
}

struct RegionSpec {
    name: String,
    class: RegionClass,
    severity: Severity,
    offset: u64,
    len: u64,
}

fn parse_region(s: &str) -> Result<RegionSpec> {
    let p: Vec<&str> = s.split(':').collect();
    let [name, class, severity, offset, len] = p[..] else {
        bail!("region {s:?}: expected NAME:CLASS:SEVERITY:OFFSET:LEN");
    };
    let spec = RegionSpec {
        name: name.to_owned(),
        class: RegionClass::from_name(class).with_context(|| {
            format!("region {s:?}: class must be code, rodata, data or structure")
        })?,
        severity: Severity::from_name(severity).with_context(|| {
            format!("region {s:?}: severity must be low, medium, high or critical")
        })?,
        offset: parse_num(offset).with_context(|| format!("region {s:?}: bad offset"))?,
        len: parse_num(len).with_context(|| format!("region {s:?}: bad length"))?,
    };
    if !spec.offset.is_multiple_of(PAGE_SIZE as u64)
        || !spec.len.is_multiple_of(PAGE_SIZE as u64)
        || spec.len == 0
    {
        bail!("region {s:?}: offset and length must be non-zero multiples of 4096");
    }
    Ok(spec)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn cmd_init(a: InitArgs) -> Result<()> {
    let InitArgs {
        state,
        tpm,
        snp,
        host_id,
        pcrs,
        nonce,
        insecure_product,
        insecure_report_version,
        standin,
        validity_days,
        json,
    } = a;
    let state = state.as_path();
    let pcrs = pcrs.as_str();
    let snp = match snp {
        SnpArg::None => SnpChoice::None,
        SnpArg::Configfs => SnpChoice::Configfs,
        SnpArg::SevGuest => SnpChoice::SevGuest,
        SnpArg::InsecureSoft => SnpChoice::InsecureSoft,
    };
    if snp == SnpChoice::InsecureSoft {
        eprintln!(
            "WARNING: --snp insecure-soft uses the INSECURE software SEV-SNP stand-in. Its reports \
prove nothing; verifiers refuse them unless configured with its test root. Tests only."
        );
    }
    let opts = InitOptions {
        host_id: host_id.unwrap_or_else(hostname),
        tcti: tpm,
        pcrs: parse_pcrs(pcrs)?,
        snp,
        insecure: StandInOptions {
            product: insecure_product,
            report_version: insecure_report_version,
            knobs: standin
                .knobs(snp == SnpChoice::InsecureSoft)
                .map_err(anyhow::Error::msg)?,
        },
        nonce: nonce
            .map(|n| hex::decode(n.trim()))
            .transpose()
            .context("--nonce must be hex")?,
        validity: Duration::days(validity_days),
    };
    let started = Instant::now();
    let r = init(state, &opts).with_context(|| format!("cannot initialise {}", state.display()))?;
    let cert = vmseal_sealer::x509::ParsedCert::from_der(&r.intermediate_der)?;
    if json {
        let v = serde_json::json!({
            "state": state,
            "host_id": opts.host_id,
            "intermediate": {
                "subject": cert.subject,
                "spki_sha256": hex::encode(HashAlg::Sha256.hash(&[&cert.spki_der])),
                "cert_sha256": hex::encode(HashAlg::Sha256.hash(&[&r.intermediate_der])),
                "not_after": cert.not_after,
            },
            "ak_name": hex::encode(&r.ak_name),
            "pcrs": opts.pcrs,
            "snp": format!("{:?}", r.snp),
            "insecure": r.snp == SnpChoice::InsecureSoft,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "initialised {} for host {:?} in {:.1?}",
            state.display(),
            opts.host_id,
            started.elapsed()
        );
        println!("  intermediate  {} (ML-DSA-87)", cert.subject);
        println!(
            "  SPKI SHA-256  {}",
            hex::encode(HashAlg::Sha256.hash(&[&cert.spki_der]))
        );
        println!("  AK name       {}", hex::encode(&r.ak_name));
        println!(
            "  anchors       TPM quote over sha256 PCRs {:?}{}",
            opts.pcrs,
            match r.snp {
                SnpChoice::None => String::new(),
                SnpChoice::InsecureSoft => " + SEV-SNP report from the INSECURE stand-in".into(),
                other => format!(" + SEV-SNP report ({other:?})"),
            }
        );
        println!(
            "  sealed key    {}/intermediate-key.sealed (TPM, PCR policy)",
            state.display()
        );
    }
    Ok(())
}

/// `seal --image`: the regions given on the command line become a policy for the raw image.
fn cmd_seal(a: SealArgs) -> Result<()> {
    check_vm_id(&a.vm_id)?;
    let source = RawDump::open(&a.image)?;
    let size = source.ram()[0].1;
    let mut specs: Vec<RegionSpec> = a
        .regions
        .iter()
        .map(|s| parse_region(s))
        .collect::<Result<_>>()?;
    if specs.is_empty() {
        specs.push(RegionSpec {
            name: "image".into(),
            class: RegionClass::Data,
            severity: Severity::High,
            offset: 0,
            len: size,
        });
    }
    for s in &specs {
        if s.offset.checked_add(s.len).is_none_or(|end| end > size) {
            bail!("region {:?} ends beyond the {size}-byte image", s.name);
        }
    }
    let text: String = specs
        .iter()
        .map(|s| {
            format!(
                "{}:{}:{}:{:#x}:{:#x}\n",
                s.name,
                s.class.name(),
                s.severity.name(),
                s.offset,
                s.len
            )
        })
        .collect();
    let policy = Policy {
        name: "image-regions".into(),
        version: 1,
        hash: match a.hash {
            HashArg::Sha256 => HashAlg::Sha256,
            HashArg::Blake3 => HashAlg::Blake3,
        },
        symbols: None,
        interval_secs: None,
        kernel: None,
        elf: None,
        kernel_objects: None,
        regions: specs
            .iter()
            .map(|s| RegionPolicy {
                name: s.name.clone(),
                class: s.class,
                severity: s.severity,
                selector: Selector::Gpa {
                    start: s.offset,
                    len: s.len,
                },
                sampling: Sampling::All,
                kaslr_undo: false,
            })
            .collect(),
        digest: HashAlg::Sha256.hash(&[text.as_bytes()]),
    };
    let state = HostState::load(&a.state, a.tpm.as_deref())
        .with_context(|| format!("cannot load host state {}", a.state.display()))?;
    let nonce = parse_nonce(a.nonce.as_deref())?;
    let mut source = source;
    let plan = Plan::new(&policy, &source, None, nonce.as_deref())?;
    let snap = with_progress(plan.pages().len() as u64, || {
        Snapshot::full(&mut source, plan, Consistency::StopCopy)
    })?;
    let sealed = seal_snapshot(&state, &a.vm_id, &snap, None, &a.out)?;
    report(&sealed, &snap, None, a.json)
}

fn parse_nonce(n: Option<&str>) -> Result<Option<Vec<u8>>> {
    n.map(|n| hex::decode(n.trim()))
        .transpose()
        .context("--nonce must be hex")
}

/// Run `f` with a spinner on a terminal (hashing is parallel, so progress is shown as a spinner).
fn with_progress<T>(pages: u64, f: impl FnOnce() -> T) -> T {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} capturing {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(format!("{pages} pages"));
    pb.enable_steady_tick(std::time::Duration::from_millis(100));
    let r = f();
    pb.finish_and_clear();
    r
}

/// Seal a snapshot as the next evidence of `vm_id` and write it to `out`.
fn seal_snapshot(
    state: &HostState,
    vm_id: &str,
    snap: &Snapshot,
    baseline: Option<&Baseline>,
    out: &Path,
) -> Result<Sealed> {
    vmseal_capture::agent::seal::seal_snapshot(state, "vmseal-host", vm_id, snap, baseline, out)
        .with_context(|| format!("cannot seal evidence of {vm_id} to {}", out.display()))
}

fn report(
    s: &Sealed,
    snap: &Snapshot,
    changes: Option<&[(String, usize)]>,
    json: bool,
) -> Result<()> {
    let c = &s.claims;
    if json {
        let v = serde_json::json!({
            "out": s.out,
            "vm_id": c.vm_id,
            "seq": c.seq,
            "memory_root": hex::encode(c.memory_root),
            "code_hash": hex::encode(c.code_hash),
            "evidence_sha256": hex::encode(s.digest),
            "bytes": s.evidence.len(),
            "pages": c.regions.iter().map(|r| r.pages).sum::<u64>(),
            "pages_read": c.capture.pages_read,
            "pause_us": c.capture.pause_us,
            "duration_us": c.capture.duration_us,
            "kind": match c.capture.kind { CaptureKind::Full => "full".to_owned(), CaptureKind::Incremental { base_seq } => format!("incremental:{base_seq}") },
            "regions": c.regions.iter().map(|r| serde_json::json!({
                "name": r.name, "class": r.class.name(), "pages": r.pages, "root": hex::encode(r.root),
                "changed_pages": c.delta.iter().find(|d| d.region == r.name).map_or(0, |d| d.changes.len()),
            })).collect::<Vec<_>>(),
            "kernel": c.kernel.as_ref().map(|k| serde_json::json!({
                "processes": k.tasks.len(),
                "modules": k.modules.len(),
                "gates": k.idt.len(),
                "syscalls": k.syscalls.len(),
                "errors": k.errors,
                "walk_us": snap.stats.kernel_walk.as_micros() as u64,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let kind = match c.capture.kind {
        CaptureKind::Full => "full".to_owned(),
        CaptureKind::Incremental { base_seq } => format!("incremental from #{base_seq}"),
    };
    println!(
        "sealed {} #{} -> {} ({} bytes; {kind}, {} pages read, pause {} µs, {:.1} ms)",
        c.vm_id,
        c.seq,
        s.out.display(),
        s.evidence.len(),
        snap.stats.pages_read,
        c.capture.pause_us,
        c.capture.duration_us as f64 / 1000.0
    );
    println!("  memory root  {}", hex::encode(c.memory_root));
    for line in snap.region_lines(changes) {
        println!("{line}");
    }
    if let Some(k) = &c.kernel {
        println!(
            "  kernel       {} processes, {} modules, {} gates, {} system calls (walked in {} µs of the pause)",
            k.tasks.len(),
            k.modules.len(),
            k.idt.len(),
            k.syscalls.len(),
            snap.stats.kernel_walk.as_micros()
        );
        for e in &k.errors {
            println!(
                "  kernel       the {} walk did not finish: {}",
                e.walk, e.error
            );
        }
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum AttackArg {
    /// Overwrite a syscall handler's code with NOPs.
    CodePatch,
    /// Point a syscall table slot at another handler.
    PointerHook,
    /// Unlink a task from the task list.
    HiddenTask,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ConsistencyArg {
    /// Hash while the guest runs; pause only to re-hash pages dirtied meanwhile.
    PreCopy,
    /// Pause for the whole capture.
    StopCopy,
}

/// With `all_pages`, the policy with every sampled region captured whole.
fn whole(mut policy: Policy, all_pages: bool) -> Policy {
    if all_pages {
        for r in &mut policy.regions {
            r.sampling = Sampling::All;
        }
    }
    policy
}

fn load_policy(path: Option<&Path>, default: &str) -> Result<Policy> {
    match path {
        None => Ok(Policy::parse(default)?),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))?;
            Policy::parse(&text).with_context(|| format!("policy {}", p.display()))
        }
    }
}

/// `vm run`: start the micro-VM and capture it repeatedly, injecting attacks on request.
fn cmd_vm_run(a: VmRunArgs) -> Result<()> {
    check_vm_id(&a.vm_id)?;
    let policy = load_policy(a.policy.as_deref(), guest::POLICY)?;
    let state = HostState::load(&a.state, a.tpm.as_deref())
        .with_context(|| format!("cannot load host state {}", a.state.display()))?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
    let mut vm = MicroVm::start(MicroVmConfig {
        mem_mib: a.mem_mib,
        ws_pages: a.ws_pages,
        stride: 7,
    })?;
    if !vm.wait_heartbeats(2, std::time::Duration::from_secs(30)) {
        bail!(
            "the micro-VM's guest made no progress: {}",
            vm.exited().unwrap_or_else(|| "no heartbeat in 30 s".into())
        );
    }
    if !a.json {
        println!(
            "micro-VM running: {} (guest code {} bytes, {} heartbeats)",
            vm.describe(),
            vm.program().code.len(),
            vm.heartbeats()
        );
    }
    let nonce = parse_nonce(a.nonce.as_deref())?;
    let plan = Plan::new(
        &policy,
        &vm,
        Some(&guest::symbols(vm.program())),
        nonce.as_deref(),
    )?;
    let consistency = match a.consistency {
        ConsistencyArg::PreCopy => Consistency::PreCopy,
        ConsistencyArg::StopCopy => Consistency::StopCopy,
    };
    let mut baseline: Option<Baseline> = match &a.baseline {
        Some(p) => Some(Baseline::from_bytes(
            &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?),
        None => None,
    };
    let verifier = a.submit.client(&a.state)?;
    let courier = verifier
        .as_ref()
        .map(|c| a.submit.start(c, &state, &a.vm_id, &mut baseline, a.json))
        .transpose()?;
    let mut prev: Option<(Snapshot, u64)> = None;
    let mut failed: Vec<String> = Vec::new();
    let mut first_capture: Option<(Baseline, u64)> = None;
    for i in 0..a.captures.max(1) {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(a.interval_ms));
        }
        if i == a.attack_after && !a.attacks.is_empty() {
            for at in &a.attacks {
                let (what, gpa) = match at {
                    AttackArg::CodePatch => (
                        "code patch: syscall handler 3 overwritten with NOPs",
                        vm.inject_code_patch(3)?,
                    ),
                    AttackArg::PointerHook => (
                        "pointer hook: syscall slot 5 now points at handler 6",
                        vm.inject_pointer_hook(5, 6)?,
                    ),
                    AttackArg::HiddenTask => (
                        "hidden task: task 7 unlinked from the task list",
                        vm.inject_hidden_task(7)?,
                    ),
                };
                if !a.json {
                    println!("ATTACK injected at gpa {gpa:#x}: {what}");
                }
            }
            vm.wait_heartbeats(1, std::time::Duration::from_secs(5));
        }
        let snap = match (&prev, a.incremental) {
            (Some((p, seq)), true) => p.incremental(&mut vm, *seq)?,
            _ => Snapshot::full(&mut vm, plan.clone(), consistency)?,
        };
        let base = state.vm_chain(&a.vm_id)?;
        let seq = base.next_seq;
        let out = a.out_dir.join(format!("{}-{seq:06}.cose", a.vm_id));
        let sealed = seal_snapshot(&state, &a.vm_id, &snap, baseline.as_ref(), &out)?;
        let changes = baseline.as_ref().map(|b| snap.changed_pages(b));
        report(&sealed, &snap, changes.as_deref(), a.json)?;
        let mut accepted = true;
        if let Some(c) = &courier
            && let Err(e) = deliver(c, &a.vm_id, &sealed, &out, &base, a.json)
        {
            accepted = false;
            failed.push(e);
        }
        if first_capture.is_none() && accepted {
            first_capture = Some((snap.baseline(), seq));
        }
        if baseline.is_none() {
            baseline = Some(snap.baseline());
        }
        prev = accepted.then_some((snap, seq));
    }
    // The page hashes of the first accepted snapshot: what an admin promotes. A file already
    // there (perhaps the one promoted) is never overwritten.
    if let Some((b, seq)) = first_capture {
        let path = a.out_dir.join("baseline.cbor");
        let path = if path.exists() {
            a.out_dir.join(format!("baseline-{seq:06}.cbor"))
        } else {
            path
        };
        if !path.exists() {
            write_atomic(&path, &b.to_bytes())?;
            if !a.json {
                println!(
                    "page hashes of snapshot #{seq} (to promote as the golden baseline): {}",
                    path.display()
                );
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "the verifier did not accept {} of the snapshots: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// A symbol map file (System.map format), when one is named.
fn load_symbols(path: Option<&Path>) -> Result<Option<SymbolMap>> {
    path.map(|p| -> Result<SymbolMap> {
        Ok(SymbolMap::parse(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?)
    })
    .transpose()
}

/// `capture`: one capture from a source.
fn cmd_capture(a: CaptureArgs) -> Result<()> {
    check_vm_id(&a.vm_id)?;
    let state = HostState::load(&a.state, a.tpm.as_deref())
        .with_context(|| format!("cannot load host state {}", a.state.display()))?;
    let nonce = parse_nonce(a.nonce.as_deref())?;
    let mut baseline = a
        .baseline
        .as_deref()
        .map(|p| -> Result<Baseline> {
            Ok(Baseline::from_bytes(&std::fs::read(p).with_context(
                || format!("cannot read {}", p.display()),
            )?)?)
        })
        .transpose()?;
    let verifier = a.submit.client(&a.state)?;
    let courier = verifier
        .as_ref()
        .map(|c| a.submit.start(c, &state, &a.vm_id, &mut baseline, a.json))
        .transpose()?;
    let symbols = load_symbols(a.symbols.as_deref())?;
    let (snap, _vm) = match a.source.split_once(':').unwrap_or((a.source.as_str(), "")) {
        ("dump", path) if !path.is_empty() => {
            if a.policy.is_none() {
                bail!("a dump needs --policy FILE (see docs/policy.md)");
            }
            let policy = whole(load_policy(a.policy.as_deref(), "")?, a.all_pages);
            let mut src = open_dump(Path::new(path))?;
            let plan = Plan::new(&policy, src.as_ref(), symbols.as_ref(), nonce.as_deref())?;
            (
                with_progress(plan.pages().len() as u64, || {
                    Snapshot::full(src.as_mut(), plan, Consistency::StopCopy)
                })?,
                None,
            )
        }
        ("kvm", "") => {
            let policy = whole(
                load_policy(a.policy.as_deref(), guest::POLICY)?,
                a.all_pages,
            );
            let mut vm = MicroVm::start(MicroVmConfig::default())?;
            vm.wait_heartbeats(2, std::time::Duration::from_secs(30));
            let syms = symbols.unwrap_or_else(|| guest::symbols(vm.program()));
            let plan = Plan::new(&policy, &vm, Some(&syms), nonce.as_deref())?;
            let snap = Snapshot::full(&mut vm, plan, Consistency::PreCopy)?;
            (snap, Some(vm))
        }
        ("qemu", spec) if !spec.is_empty() => {
            if a.policy.is_none() {
                bail!("a QEMU guest needs --policy FILE (see docs/policy.md)");
            }
            let policy = whole(load_policy(a.policy.as_deref(), "")?, a.all_pages);
            let mut src = QemuSource::open(spec)?;
            src.prepare_for(&policy)?;
            let dir = a
                .policy
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            let kctx = vmseal_capture::kaslr::KernelContext::load(&policy, dir, symbols.as_ref())
                .with_context(|| {
                format!(
                    "policy {}",
                    a.policy.as_deref().unwrap_or(Path::new("")).display()
                )
            })?;
            // Without --symbols, the kernel's own table from its image, moved by this boot's
            // slide (from its divide-error gate), or found in its memory.
            let (kctx, symbols) = src
                .boot_context(&kctx, symbols)
                .map_err(anyhow::Error::msg)?;
            let plan = kctx.plan(&policy, &src, symbols.as_ref(), nonce.as_deref())?;
            let snap = with_progress(plan.pages().len() as u64, || {
                Snapshot::full(&mut src, plan, Consistency::StopCopy)
            })?;
            (snap, None)
        }
        _ => bail!("--source must be kvm, dump:FILE or qemu:QMP_SOCKET,MEM_FILE[,MEMDEV_ID]"),
    };
    if let Some(p) = &a.baseline_out {
        write_atomic(p, &snap.baseline().to_bytes())?;
    }
    let base = state.vm_chain(&a.vm_id)?;
    let sealed = seal_snapshot(&state, &a.vm_id, &snap, baseline.as_ref(), &a.out)?;
    let changes = baseline.as_ref().map(|b| snap.changed_pages(b));
    report(&sealed, &snap, changes.as_deref(), a.json)?;
    if let Some(c) = &courier {
        deliver(c, &a.vm_id, &sealed, &a.out, &base, a.json)
            .map_err(|e| anyhow::anyhow!("the verifier did not accept the snapshot {e}"))?;
    }
    Ok(())
}

fn cmd_run(config: &Path, rounds: Option<u32>, json: bool) -> Result<()> {
    let cfg = vmseal_host::daemon::DaemonConfig::load(config)?;
    let state = HostState::load(&cfg.state, cfg.tpm.as_deref())
        .with_context(|| format!("cannot load host state {}", cfg.state.display()))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handlers")?;
    }
    if !json {
        eprintln!(
            "vmseal-host agent: {} VM(s), at most {} capture(s) at once{}",
            cfg.vms.len(),
            cfg.max_concurrent,
            cfg.budget_mbps
                .map(|b| format!(", hashing budget {b} MB/s"))
                .unwrap_or_default()
        );
    }
    let verifier = match &cfg.verifier {
        Some(v) => {
            if let Some((token_cert, token_key)) = &v.token
                && !v.agent_cert.exists()
            {
                let e = vmseal_capture::agent::enroll::enroll(
                    &vmseal_capture::agent::enroll::EnrollOptions {
                        state: cfg.state.clone(),
                        tcti: cfg.tpm.clone(),
                        url: v.url.clone(),
                        ca: v.ca.clone(),
                        token_cert: token_cert.clone(),
                        token_key: token_key.clone(),
                        agent_cert: v.agent_cert.clone(),
                        agent_key: v.agent_key.clone(),
                    },
                )
                .context("enrolling with the verifier's enrollment token")?;
                eprintln!(
                    "enrolled host {} with {} (AK activated: {})",
                    e.host_id, v.url, e.activated
                );
            }
            // A certificate close to its end is renewed before it is used.
            match vmseal_capture::agent::enroll::days_left(&v.agent_cert) {
                Ok(days) if days < vmseal_capture::agent::enroll::RENEW_WITHIN_DAYS => {
                    eprintln!(
                        "the agent certificate has {days} day(s) left: renewing it (proving this \
                         host's TPM again)"
                    );
                    vmseal_capture::agent::enroll::renew(
                        &cfg.state,
                        cfg.tpm.as_deref(),
                        &v.url,
                        &v.ca,
                        &v.agent_cert,
                        &v.agent_key,
                    )
                    .context("renewing the agent certificate")?;
                }
                Ok(_) => {}
                Err(e) => eprintln!("warning: {e}"),
            }
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
            Some(vmseal_client::Client::new(
                &v.url,
                &read(&v.ca)?,
                &read(&v.agent_cert)?,
                &read(&v.agent_key)?,
            )?)
        }
        None => None,
    };
    let retry = cfg.verifier.as_ref().map(|v| v.retry).unwrap_or_default();
    let mut agent = vmseal_capture::agent::round::Agent::new(&state, "vmseal-host");
    if let Some(c) = &verifier {
        let courier = vmseal_capture::agent::courier::Courier::new(c, &state)
            .retry_for(retry)
            .stop_on(stop.as_ref());
        // Every snapshot builds on the verifier's chain (each round asks where it stands); say
        // where each VM's stands now.
        for vm in &cfg.vms {
            match courier.sync(&vm.id) {
                Ok(h) if !json => eprintln!(
                    "{}: the verifier's chain stands at #{}; the next snapshot builds on it",
                    vm.id, h.next_seq
                ),
                Ok(_) => {}
                Err(e) => eprintln!("warning: {e}; sealing from the local record until it answers"),
            }
        }
        agent = agent.with_verifier(c, courier);
    }
    let failures = std::sync::atomic::AtomicU64::new(0);
    let on_event =
        |e: &vmseal_host::daemon::CaptureEvent,
         delivery: Option<&vmseal_capture::agent::courier::Delivery>| {
            if delivery.is_some_and(|d| !d.accepted()) || e.error.is_some() {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if json {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                match delivery {
                    Some(vmseal_capture::agent::courier::Delivery::Accepted {
                        appraisal, ..
                    }) => v["appraisal"] = serde_json::to_value(appraisal).unwrap_or_default(),
                    Some(d) => {
                        v["submit_error"] = serde_json::Value::String(d.describe());
                        if let vmseal_capture::agent::courier::Delivery::Refused {
                            code,
                            head,
                            ..
                        } = d
                        {
                            v["refused"] = serde_json::json!({ "code": code.map_or("client", vmseal_client::ErrorCode::as_str), "next_seq": head.as_ref().map(|h| h.next_seq) });
                        }
                    }
                    None => {}
                }
                println!("{v}");
            } else if let Some(err) = &e.error {
                eprintln!("{}: capture failed: {err}", e.vm);
            } else {
                let changed = if e.changed_regions.is_empty() {
                    "no change from baseline".to_owned()
                } else {
                    format!("CHANGED: {}", e.changed_regions.join(", "))
                };
                println!(
                    "{} #{} {}{} ({} pages, pause {} µs) -> {}; {changed}",
                    e.vm,
                    e.seq.unwrap_or_default(),
                    e.kind,
                    e.request_id
                        .as_deref()
                        .map(|r| format!(" on the verifier's request {r}"))
                        .unwrap_or_default(),
                    e.pages_read,
                    e.pause_us,
                    e.out
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                match delivery {
                    Some(
                        d @ vmseal_capture::agent::courier::Delivery::Accepted {
                            appraisal: a, ..
                        },
                    ) => {
                        println!("  {}: verifier {}", e.vm, verdict_words(a, d));
                    }
                    Some(d) => eprintln!("  {}: submission {}", e.vm, d.describe()),
                    None => {}
                }
            }
        };
    let demands = std::sync::Arc::new(vmseal_host::daemon::Demands::default());
    if let Some(v) = &verifier {
        poll_capture_requests(v, &state.config.host_id, &demands, &stop);
    }
    vmseal_host::daemon::run(&cfg, rounds, &stop, &demands, &agent, &on_event);
    let n = failures.load(std::sync::atomic::Ordering::Relaxed);
    if rounds.is_some() && n > 0 {
        bail!("{n} capture(s) failed");
    }
    Ok(())
}

/// Pick up the verifier's capture requests for this host: one look now (requests made while the
/// agent was down are answered in this run), then a long-poll thread until `stop`. The agent needs
/// no inbound port.
fn poll_capture_requests(
    client: &vmseal_client::Client,
    host_id: &str,
    demands: &std::sync::Arc<vmseal_host::daemon::Demands>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    fn queue(list: Vec<vmseal_client::CaptureRequest>, demands: &vmseal_host::daemon::Demands) {
        for r in list {
            match hex::decode(&r.nonce) {
                Ok(nonce) => demands.push(vmseal_host::daemon::Demand {
                    request_id: r.request_id,
                    vm: r.vm_id,
                    nonce,
                }),
                Err(_) => tracing::warn!(
                    request = r.request_id,
                    "capture request with a non-hex nonce ignored"
                ),
            }
        }
    }
    match client.capture_requests(host_id, 0) {
        Ok(list) => queue(list, demands),
        Err(e) => eprintln!("warning: cannot fetch capture requests: {e}"),
    }
    let (client, host_id, demands, stop) = (
        client.clone(),
        host_id.to_owned(),
        demands.clone(),
        stop.clone(),
    );
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match client.capture_requests(&host_id, 25) {
                Ok(list) => queue(list, &demands),
                Err(e) => {
                    eprintln!("warning: capture-request long-poll failed (retrying in 5 s): {e}");
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
            }
        }
    });
}

/// What an accepted appraisal says, in words: the score and tier, and what to do when there is
/// nothing to compare with yet.
fn verdict_words(
    a: &vmseal_client::AppraisalResult,
    d: &vmseal_capture::agent::courier::Delivery,
) -> String {
    let again = match d {
        vmseal_capture::agent::courier::Delivery::Accepted {
            duplicate: true, ..
        } => " (accepted earlier; its answer had been lost)",
        _ => "",
    };
    if a.baseline_version.is_none() && a.baseline_note.is_none() {
        return format!(
            "accepted #{} (score {}); no golden baseline to compare with yet{again}: promote one \
             (`vmseal-verifier admin promote-baseline --vm-id {} --seq {} --baseline FILE`)",
            a.seq, a.score, a.vm_id, a.seq
        );
    }
    format!(
        "trust score {} ({}){}{again}",
        a.score,
        a.tier.name(),
        if a.alert { " ALERT" } else { "" }
    )
}

/// `bench --source qemu:…`: the kernel-objects walk beside the page-hash capture.
fn cmd_bench_kernel(
    source: &str,
    policy_path: &Path,
    symbols: Option<&Path>,
    rounds: usize,
    json: bool,
) -> Result<()> {
    let Some(spec) = source.strip_prefix("qemu:") else {
        bail!("--source must be qemu:QMP_SOCKET,MEM_FILE[,MEMDEV_ID]");
    };
    let policy = load_policy(Some(policy_path), "")?;
    let symbols = load_symbols(symbols)?;
    let mut src = QemuSource::open(spec)?;
    src.refresh_paging()?;
    let dir = policy_path.parent().unwrap_or(Path::new("."));
    let kctx = vmseal_capture::kaslr::KernelContext::load(&policy, dir, symbols.as_ref())
        .with_context(|| format!("policy {}", policy_path.display()))?;
    let (kctx, symbols) = src
        .boot_context(&kctx, symbols)
        .map_err(anyhow::Error::msg)?;
    let plan = kctx.plan(&policy, &src, symbols.as_ref(), None)?;
    let r = vmseal_host::bench::kernel(&mut src, &plan, rounds, &|m| {
        if !json {
            eprintln!("bench: {m}");
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "kernel objects: {} read in {:.2} ms of a {:.2} ms pause; the page-hash pause of the same \
             guest ({} pages) is {:.2} ms: the walk adds {:.1}% (as much as hashing {:.0} pages); \
             medians of {} rounds",
            r.objects,
            r.walk_ms,
            r.pause_with_walk_ms,
            r.pages,
            r.pause_page_hash_ms,
            r.walk_vs_page_hash_ratio * 100.0,
            r.walk_in_pages,
            r.rounds
        );
    }
    Ok(())
}

fn cmd_bench(mem_mib: u64, threads: Option<usize>, json: bool) -> Result<()> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let quiet = json;
    let r = vmseal_host::bench::run(mem_mib, threads, &|m| {
        if !quiet {
            eprintln!("bench: {m}");
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}

fn cmd_status(a: StatusArgs) -> Result<()> {
    use vmseal_client::doctor::render;
    use vmseal_host::status::{VerifierCheck, run};
    let (state, tpm, verifier) = match &a.config {
        Some(c) => {
            let cfg = vmseal_host::daemon::DaemonConfig::load(c)?;
            let v = cfg.verifier.as_ref().map(|v| VerifierCheck {
                url: v.url.clone(),
                ca: v.ca.clone(),
                cert: v.agent_cert.clone(),
                key: v.agent_key.clone(),
            });
            (cfg.state.clone(), a.tpm.clone().or(cfg.tpm.clone()), v)
        }
        None => {
            let state = a.state.clone().unwrap_or_default();
            let v = match (&a.verifier, &a.verifier_ca) {
                (Some(url), Some(ca)) => Some(VerifierCheck {
                    url: url.clone(),
                    ca: ca.clone(),
                    cert: a
                        .agent_cert
                        .clone()
                        .unwrap_or_else(|| state.join("agent.pem")),
                    key: a
                        .agent_key
                        .clone()
                        .unwrap_or_else(|| state.join("agent.key")),
                }),
                _ => None,
            };
            (state, a.tpm.clone(), v)
        }
    };
    let checks = run(&state, tpm.as_deref(), verifier.as_ref());
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "ok": checks.iter().all(|c| c.ok), "checks": checks })
        );
    } else {
        print!("{}", render(&checks));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn cmd_renew(a: RenewArgs) -> Result<()> {
    let (cert, key) = a.agent.paths(&a.at.state);
    let before = vmseal_capture::agent::enroll::days_left(&cert)?;
    let not_after = vmseal_capture::agent::enroll::renew(
        &a.at.state,
        a.at.tpm.as_deref(),
        &a.at.to.verifier,
        &a.at.to.verifier_ca,
        &cert,
        &key,
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "agent_cert": cert, "not_after": not_after, "days_left_before": before })
        );
    } else {
        println!(
            "agent certificate renewed ({} days were left; the new one lasts {} days): {}",
            before,
            (not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400,
            cert.display()
        );
    }
    Ok(())
}

fn cmd_enroll(a: EnrollArgs) -> Result<()> {
    let (agent_cert, agent_key) = a.agent.paths(&a.at.state);
    let o = vmseal_capture::agent::enroll::EnrollOptions {
        agent_cert,
        agent_key,
        state: a.at.state,
        tcti: a.at.tpm,
        url: a.at.to.verifier,
        ca: a.at.to.verifier_ca,
        token_cert: a.token_cert,
        token_key: a.token_key,
    };
    let e = vmseal_capture::agent::enroll::enroll(&o)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "host_id": e.host_id,
                "intermediate_sha256": e.intermediate_sha256,
                "ak_activated": e.activated,
                "insecure_snp": e.insecure,
                "agent_cert": o.agent_cert,
                "agent_key": o.agent_key,
            })
        );
    } else {
        println!(
            "enrolled host {} (intermediate {}){}{}",
            e.host_id,
            &e.intermediate_sha256[..16],
            if e.activated {
                ", AK bound to the EK by credential activation"
            } else {
                ""
            },
            if e.insecure {
                "; SNP anchor: INSECURE software stand-in (accepted by the verifier's configuration)"
            } else {
                ""
            }
        );
        println!(
            "agent certificate: {}\nagent key:         {}",
            o.agent_cert.display(),
            o.agent_key.display()
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    vmseal_capture::agent::quiet_tpm_library();
    // The TPM crate's own lines repeat what vmseal's errors say (with the fix): off unless
    // VMSEAL_LOG asks for them (e.g. VMSEAL_LOG=warn,tss_esapi=debug).
    vmseal_client::cli::init_logging("warn,tss_esapi=off");
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Completions { shell } => {
            vmseal_client::cli::print_completions::<Cli>(&shell).map_err(anyhow::Error::msg)
        }
        Command::Man => vmseal_client::cli::print_man::<Cli>().map_err(anyhow::Error::msg),
        Command::Init(a) => cmd_init(a),
        Command::Seal(a) => cmd_seal(a),
        Command::Capture(a) => cmd_capture(a),
        Command::Vm(VmCommand::Run(a)) => cmd_vm_run(a),
        Command::Enroll(a) => cmd_enroll(a),
        Command::Renew(a) => cmd_renew(a),
        Command::Status(a) => cmd_status(a),
        Command::Bench {
            source: Some(source),
            policy: Some(policy),
            symbols,
            rounds,
            json,
            ..
        } => cmd_bench_kernel(&source, &policy, symbols.as_deref(), rounds, json),
        Command::Bench {
            mem_mib,
            threads,
            json,
            ..
        } => cmd_bench(mem_mib, threads, json),
        Command::Run(a) => cmd_run(&a.config, a.rounds, a.json),
        Command::Vm(VmCommand::Listing) => {
            guest::assemble().map_err(anyhow::Error::from).map(|p| {
                println!(
                    "; vmseal micro-VM guest program (32-bit protected mode, loaded at {:#x})",
                    guest::CODE
                );
                print!("{}", guest::listing(&p));
                println!("\n; symbol map (System.map format)");
                print!("{}", guest::symbols(&p).render());
            })
        }
    };
    vmseal_client::cli::exit_code(r, 1)
}

/// Every example of `vmseal-host`, in its `--help` texts and in README.md and docs/*.md,
/// parses with its CLI definition as printed (and the definition itself is consistent).
#[cfg(test)]
#[test]
fn every_example_in_help_and_docs_parses() {
    vmseal_testkit::examples::assert_cli_examples_parse::<Cli>("vmseal-host", 10);
}
