//! `vmseal-shim`: a guest attests its own memory from inside its trust boundary.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use vmseal_host::capture::{Baseline, Consistency, Plan, Snapshot};
use vmseal_host::policy::{Policy, SymbolMap};
use vmseal_host::source::MemorySource;
use vmseal_sealer::state::{GuestInitOptions, HostState, SnpChoice};

/// Exit status of `attest`: the verdict, or why there is none.
const EXIT_AFFIRMING: u8 = 0;
const EXIT_WARNING: u8 = 1;
const EXIT_CONTRAINDICATED: u8 = 2;
const EXIT_NO_ATTESTATION: u8 = 3;

#[derive(Parser)]
#[command(
    name = "vmseal-shim",
    version,
    about = "vmseal's guest shim: this guest attests its own memory (a process, or the kernel), sealed under its own SEV-SNP report",
    after_help = "Once, in the guest:\n  vmseal-shim init --state /var/lib/vmseal-shim --snp configfs --id web-1\n  \
vmseal-shim enroll --state /var/lib/vmseal-shim --verifier https://verifier:8443 --verifier-ca ca.pem \\\n    \
--token-cert token.pem --token-key token.key\n\
Then, as often as wanted:\n  vmseal-shim attest --state /var/lib/vmseal-shim --verifier https://verifier:8443 --verifier-ca ca.pem \\\n    \
--vm-id web-1 --source process:$(pidof sshd) --policy sshd.toml\n\
Exit status of attest: 0 affirming, 1 warning, 2 contraindicated, 3 could not attest (the reason is printed)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Snp {
    /// Linux configfs-tsm (/sys/kernel/config/tsm/report); the seal key from /dev/sev-guest.
    Configfs,
    /// /dev/sev-guest for the report and the seal key.
    SevGuest,
    /// The INSECURE software stand-in (no SNP hardware: tests only; a verifier refuses it unless
    /// told to accept its test root).
    InsecureSoft,
}

#[derive(clap::Args)]
struct Target {
    /// `process:PID` (its mappings, stopped while read) or `kernel[:KCORE]` (/proc/kcore).
    #[arg(long)]
    source: String,
    /// The capture policy (TOML, docs/policy.md): `mapping` selectors for a process, `symbol`
    /// selectors for the kernel.
    #[arg(long)]
    policy: PathBuf,
    /// Kernel symbols.
    #[arg(long, default_value = "/proc/kallsyms")]
    kallsyms: PathBuf,
    /// Report page changes against this baseline (written by `capture --baseline-out`).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Verifier {
    /// Verifier URL.
    #[arg(long, env = "VMSEAL_VERIFIER")]
    verifier: String,
    /// The verifier's CA certificate.
    #[arg(long)]
    verifier_ca: PathBuf,
    /// This guest's agent certificate [default: STATE/agent.pem].
    #[arg(long)]
    agent_cert: Option<PathBuf>,
    /// Its key [default: STATE/agent.key].
    #[arg(long)]
    agent_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the shim's state: an ML-DSA intermediate key whose certificate carries this guest's
    /// SEV-SNP report, its seed sealed with the key the Secure Processor derives for this guest.
    Init {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        /// Where the SNP report (and the seal key) come from.
        #[arg(long, value_enum)]
        snp: Snp,
        /// This guest's identity at the verifier.
        #[arg(long)]
        id: String,
        /// Intermediate certificate lifetime, days.
        #[arg(long, default_value_t = 365)]
        validity_days: i64,
    },
    /// Enrol this guest at the verifier with a one-use enrollment token from its admin.
    Enroll {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        #[command(flatten)]
        verifier: Verifier,
        /// The enrollment token certificate.
        #[arg(long)]
        token_cert: PathBuf,
        /// Its key.
        #[arg(long)]
        token_key: PathBuf,
    },
    /// Capture once, locally: each region's pages and Merkle root (no verifier).
    Capture {
        #[command(flatten)]
        target: Target,
        /// Write this capture's page hashes as a baseline.
        #[arg(long)]
        baseline_out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attest: a nonce from the verifier, a capture answering it, sealed, submitted; prints the
    /// verdict and trust score. Exit 0 affirming, 1 warning, 2 contraindicated, 3 no attestation.
    Attest {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        #[command(flatten)]
        verifier: Verifier,
        /// The VM id the verifier knows this guest's evidence under.
        #[arg(long)]
        vm_id: String,
        #[command(flatten)]
        target: Target,
        /// Keep the sealed evidence, and its page hashes (VM-SEQ.baseline.cbor, what an admin
        /// promotes to the golden baseline), here [default: STATE/evidence].
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Print JSON (the appraisal, or `{"error": …}`).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(
        &cli.command,
        Cmd::Attest { json: true, .. } | Cmd::Capture { json: true, .. }
    );
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_NO_ATTESTATION)
        }
    }
}

fn open_source(t: &Target) -> Result<(Box<dyn MemorySource>, Option<SymbolMap>)> {
    if let Some(pid) = t.source.strip_prefix("process:") {
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("{pid:?} is not a process id"))?;
        let src =
            vmseal_shim::process::ProcessSource::attach(pid).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((Box::new(src), None))
    } else if t.source == "kernel" || t.source.starts_with("kernel:") {
        let kcore = t.source.strip_prefix("kernel:").unwrap_or("/proc/kcore");
        let syms = vmseal_shim::kernel::symbols(&t.kallsyms).map_err(anyhow::Error::msg)?;
        let src = vmseal_shim::kernel::open(kcore.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((Box::new(src), Some(syms)))
    } else {
        bail!(
            "--source must be process:PID or kernel[:KCORE], not {:?}",
            t.source
        )
    }
}

fn load_policy(p: &Path) -> Result<Policy> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    Policy::parse(&text).with_context(|| format!("{}", p.display()))
}

fn load_baseline(p: Option<&PathBuf>) -> Result<Option<Baseline>> {
    p.map(|p| -> Result<Baseline> {
        let b = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        Baseline::from_bytes(&b).with_context(|| format!("{}", p.display()))
    })
    .transpose()
}

fn capture(t: &Target, nonce: Option<&[u8]>) -> Result<(Snapshot, String)> {
    let policy = load_policy(&t.policy)?;
    let (mut src, symbols) = open_source(t)?;
    let plan = Plan::new(&policy, src.as_ref(), symbols.as_ref(), nonce)
        .with_context(|| format!("planning the capture of {}", src.describe()))?;
    let snap = Snapshot::full(src.as_mut(), plan, Consistency::StopCopy)
        .with_context(|| format!("capturing {}", src.describe()))?;
    Ok((snap, src.describe()))
}

fn client(state: &Path, v: &Verifier) -> Result<vmseal_client::Client> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let cert = v
        .agent_cert
        .clone()
        .unwrap_or_else(|| state.join("agent.pem"));
    let key = v
        .agent_key
        .clone()
        .unwrap_or_else(|| state.join("agent.key"));
    Ok(vmseal_client::Client::new(
        &v.verifier,
        &read(&v.verifier_ca)?,
        &read(&cert).context("no agent certificate: enrol first (`vmseal-shim enroll`)")?,
        &read(&key)?,
    )?)
}

fn run(cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::Init {
            state,
            snp,
            id,
            validity_days,
        } => {
            let snp = match snp {
                Snp::Configfs => SnpChoice::Configfs,
                Snp::SevGuest => SnpChoice::SevGuest,
                Snp::InsecureSoft => SnpChoice::InsecureSoft,
            };
            vmseal_sealer::state::check_vm_id(&id)?;
            vmseal_sealer::state::init_guest(
                &state,
                &GuestInitOptions {
                    host_id: id.clone(),
                    snp,
                    insecure_product: vmseal_sealer::snp::Product::Genoa,
                    insecure_report_version: 3,
                    nonce: None,
                    validity: time::Duration::days(validity_days),
                },
            )
            .with_context(|| format!("cannot create the shim state in {}", state.display()))?;
            if snp == SnpChoice::InsecureSoft {
                eprintln!(
                    "WARNING: the SNP anchor is the INSECURE software stand-in: it proves nothing; tests only"
                );
            }
            println!("initialised {} for guest {id}", state.display());
            Ok(0)
        }
        Cmd::Enroll {
            state,
            verifier,
            token_cert,
            token_key,
        } => {
            let e = vmseal_host::enroll::enroll(&vmseal_host::enroll::EnrollOptions {
                state: state.clone(),
                tcti: None,
                url: verifier.verifier.clone(),
                ca: verifier.verifier_ca.clone(),
                token_cert,
                token_key,
                agent_cert: verifier
                    .agent_cert
                    .clone()
                    .unwrap_or_else(|| state.join("agent.pem")),
                agent_key: verifier
                    .agent_key
                    .clone()
                    .unwrap_or_else(|| state.join("agent.key")),
            })
            .context("enrolling with the verifier")?;
            println!(
                "enrolled guest {} (SNP anchor{})",
                e.host_id,
                if e.insecure {
                    ", INSECURE stand-in"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        Cmd::Capture {
            target,
            baseline_out,
            json,
        } => {
            let baseline = load_baseline(target.baseline.as_ref())?;
            let (snap, what) = capture(&target, None)?;
            if let Some(p) = &baseline_out {
                vmseal_sealer::state::write_atomic(p, &snap.baseline().to_bytes())?;
            }
            print_regions(&what, &snap, baseline.as_ref(), json)?;
            Ok(0)
        }
        Cmd::Attest {
            state,
            verifier,
            vm_id,
            target,
            out_dir,
            json,
        } => {
            let st = HostState::load(&state, None)
                .with_context(|| format!("cannot load the shim state {}", state.display()))?;
            let client = client(&state, &verifier)?;
            let baseline = load_baseline(target.baseline.as_ref())?;
            let nonce = client
                .nonce(&vm_id)
                .context("asking the verifier for a nonce")?;
            let (snap, what) = capture(&target, Some(&nonce))?;
            let dir = out_dir.unwrap_or_else(|| state.join("evidence"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let seq = st.vm_chain(&vm_id)?.next_seq;
            let out = dir.join(format!("{vm_id}-{seq:06}.cose"));
            let sealed = vmseal_host::seal::seal_snapshot(
                &st,
                "vmseal-shim",
                &vm_id,
                &snap,
                baseline.as_ref(),
                &out,
            )
            .context("sealing the evidence")?;
            // The page hashes beside it: what an admin promotes to the golden baseline.
            let base = dir.join(format!("{vm_id}-{seq:06}.baseline.cbor"));
            vmseal_sealer::state::write_atomic(&base, &snap.baseline().to_bytes())?;
            let a = client
                .submit_evidence(&vm_id, sealed.evidence.clone())
                .map_err(|e| {
                    let hint = if e.to_string().contains("incomplete_delta") {
                        " (the verifier has a golden baseline: give --baseline with the page hashes \
                         of the snapshot it was promoted from, e.g. STATE/evidence/VM-000000.baseline.cbor)"
                    } else {
                        ""
                    };
                    anyhow::anyhow!("submitting the evidence: {e}{hint}")
                })?;
            let tier = a["tier"].as_str().unwrap_or("");
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                let changed: Vec<String> = a["changes"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .map(|x| {
                                format!(
                                    "{} ({} page(s))",
                                    x["region"].as_str().unwrap_or("?"),
                                    x["changed_pages"]
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{what}: snapshot #{} of {vm_id}: trust score {} ({tier}){} [signed EAR verified]",
                    a["seq"],
                    a["score"],
                    if changed.is_empty() {
                        String::new()
                    } else {
                        format!("; changed: {}", changed.join(", "))
                    }
                );
            }
            Ok(match tier {
                "affirming" => EXIT_AFFIRMING,
                "warning" => EXIT_WARNING,
                "contraindicated" => EXIT_CONTRAINDICATED,
                other => bail!("the verifier answered an unknown tier {other:?}"),
            })
        }
    }
}

fn print_regions(
    what: &str,
    snap: &Snapshot,
    baseline: Option<&Baseline>,
    json: bool,
) -> Result<()> {
    let changed = baseline.map(|b| snap.changed_pages(b));
    let count = |name: &str| {
        changed
            .as_ref()
            .map(|c| c.iter().find(|(n, _)| n == name).map_or(0, |x| x.1))
    };
    let regions = snap.regions();
    if json {
        let out = serde_json::json!({
            "source": what,
            "regions": regions.iter().map(|r| serde_json::json!({
                "name": r.name, "class": r.class.name(), "severity": r.severity.name(),
                "pages": r.pages, "root": hex::encode(r.root), "changed_pages": count(&r.name),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{what}");
    for r in &regions {
        let note = match count(&r.name) {
            Some(0) => "unchanged".to_owned(),
            Some(n) => format!("CHANGED: {n} page(s) differ from the baseline"),
            None => String::new(),
        };
        println!(
            "  region {:<20} {:<9} {:<9} {:>7} pages  {}  {note}",
            r.name,
            r.class.name(),
            r.severity.name(),
            r.pages,
            &hex::encode(r.root)[..16]
        );
    }
    Ok(())
}
