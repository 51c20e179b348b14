//! `vmseal-shim`: a guest attests its own memory from inside its trust boundary.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use vmseal_capture::{Baseline, Snapshot};
use vmseal_client::cli::{AgentCertArgs, VerifierArgs};
use vmseal_sealer::state::StandInOptions;
use vmseal_sealer::state::{GuestInitOptions, HostState, SnpChoice};
use vmseal_shim::attest::{
    RunConfig, TargetSpec, attest_once, capture, load_baseline, verdict_line,
};

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
    /// `process:PID` or `process:NAME` (its mappings, stopped while read), or `kernel[:KCORE]`
    /// (/proc/kcore).
    #[arg(long)]
    source: String,
    /// The capture policy (TOML, docs/policy.md): `mapping` selectors for a process, `symbol`
    /// selectors for the kernel.
    #[arg(long)]
    policy: PathBuf,
    /// Kernel symbols.
    #[arg(long, default_value = "/proc/kallsyms")]
    kallsyms: PathBuf,
    /// The kernel's BTF (its structures' layout, for a policy's `[kernel_objects]`).
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    btf: PathBuf,
    /// The kernel's ELF notes (its build id).
    #[arg(long, default_value = "/sys/kernel/notes")]
    kernel_notes: PathBuf,
    /// Report page changes against this baseline (written by `capture --baseline-out`); when
    /// attesting, only while the verifier has no golden baseline of the VM.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a shell completion script (bash, zsh, fish or elvish), e.g. into
    /// /etc/bash_completion.d/vmseal-shim.
    #[command(
        after_help = "Example:\n  vmseal-shim completions bash > /etc/bash_completion.d/vmseal-shim"
    )]
    Completions {
        /// The shell.
        #[arg(value_parser = vmseal_client::cli::SHELLS)]
        shell: String,
    },
    /// Print the man page (roff), e.g. into /usr/share/man/man1/vmseal-shim.1.
    #[command(after_help = "Example:\n  vmseal-shim man > /usr/share/man/man1/vmseal-shim.1")]
    Man,
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
        /// Intermediate certificate lifetime, days (1 to 3650; `--validity-days` is the old
        /// spelling).
        #[arg(long = "valid-days", alias = "validity-days", default_value_t = 365,
            value_parser = clap::value_parser!(i64).range(1..=3650))]
        validity_days: i64,
        /// The guest's (v)TPM, e.g. an SVSM vTPM (`device:/dev/tpmrm0`): the intermediate is then
        /// also bound by a quote, and its seed sealed by the TPM to PCRs 0-7 instead of the
        /// SNP-derived key. Enrollment then proves the AK by credential activation.
        #[arg(long)]
        tpm: Option<String>,
        #[command(flatten)]
        standin: vmseal_capture::agent::standin_args::StandInArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enrol this guest at the verifier with a one-use enrollment token from its admin.
    Enroll {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        #[command(flatten)]
        to: VerifierArgs,
        #[command(flatten)]
        agent: AgentCertArgs,
        /// The enrollment token certificate.
        #[arg(long)]
        token_cert: PathBuf,
        /// Its key.
        #[arg(long)]
        token_key: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    /// Attest every target of a configuration file on a schedule, as a service (see
    /// packaging/vmseal-shim.service).
    #[command(
        after_help = "The configuration (TOML; relative paths are relative to it):\n\n  \
state = \"/var/lib/vmseal-shim\"\n  verifier = \"https://verifier:8443\"\n  verifier_ca = \"/etc/vmseal/ca.pem\"\n  \
interval_secs = 300\n\n  [[target]]\n  vm_id = \"web-1\"\n  source = \"kernel\"\n  policy = \"linux.toml\"\n\n  \
[[target]]\n  vm_id = \"web-1-sshd\"\n  source = \"process:sshd\"\n  policy = \"sshd.toml\"\n  baseline = \"sshd.base\""
    )]
    Run(vmseal_client::cli::RunArgs),
    /// Attest: a nonce from the verifier, a capture answering it, sealed, submitted; prints the
    /// verdict and trust score. Exit 0 affirming, 1 warning, 2 contraindicated, 3 no attestation.
    Attest {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        #[command(flatten)]
        to: VerifierArgs,
        #[command(flatten)]
        agent: AgentCertArgs,
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
    vmseal_capture::agent::quiet_tpm_library();
    let cli = Cli::parse();
    let json = matches!(
        &cli.command,
        Cmd::Attest { json: true, .. } | Cmd::Capture { json: true, .. }
    );
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": vmseal_client::error_text(e.chain()) })
                );
            }
            eprintln!("error: {}", vmseal_client::error_text(e.chain()));
            ExitCode::from(EXIT_NO_ATTESTATION)
        }
    }
}

impl Target {
    fn spec(&self) -> TargetSpec {
        TargetSpec {
            source: self.source.clone(),
            policy: self.policy.clone(),
            kallsyms: self.kallsyms.clone(),
            btf: self.btf.clone(),
            notes: self.kernel_notes.clone(),
            baseline: self.baseline.clone(),
        }
    }
}

fn client(
    state: &Path,
    url: &str,
    ca: &Path,
    agent: &AgentCertArgs,
) -> Result<vmseal_client::Client> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let (cert, key) = agent.paths(state);
    Ok(vmseal_client::Client::new(
        url,
        &read(ca)?,
        &read(&cert).context("no agent certificate: enrol first (`vmseal-shim enroll`)")?,
        &read(&key)?,
    )?)
}

fn exit_for(tier: vmseal_client::Tier) -> u8 {
    match tier {
        vmseal_client::Tier::Affirming => EXIT_AFFIRMING,
        vmseal_client::Tier::Warning => EXIT_WARNING,
        vmseal_client::Tier::Contraindicated => EXIT_CONTRAINDICATED,
    }
}

fn run(cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::Completions { shell } => vmseal_client::cli::print_completions::<Cli>(&shell)
            .map_err(anyhow::Error::msg)
            .map(|()| 0),
        Cmd::Man => vmseal_client::cli::print_man::<Cli>()
            .map_err(anyhow::Error::msg)
            .map(|()| 0),
        Cmd::Init {
            state,
            snp,
            id,
            validity_days,
            tpm,
            standin,
            json,
        } => {
            let snp = match snp {
                Snp::Configfs => SnpChoice::Configfs,
                Snp::SevGuest => SnpChoice::SevGuest,
                Snp::InsecureSoft => SnpChoice::InsecureSoft,
            };
            vmseal_sealer::state::check_vm_id(&id)?;
            let validity = time::Duration::days(validity_days);
            let insecure = StandInOptions {
                knobs: standin
                    .knobs(snp == SnpChoice::InsecureSoft)
                    .map_err(anyhow::Error::msg)?,
                ..Default::default()
            };
            match tpm {
                // A vTPM: the host's state layout, the TPM sealing the seed, both anchors.
                Some(tcti) => vmseal_sealer::state::init(
                    &state,
                    &vmseal_sealer::state::InitOptions {
                        host_id: id.clone(),
                        tcti,
                        pcrs: (0..8).collect(),
                        snp,
                        insecure,
                        nonce: None,
                        validity,
                    },
                )
                .map(drop),
                None => vmseal_sealer::state::init_guest(
                    &state,
                    &GuestInitOptions {
                        host_id: id.clone(),
                        snp,
                        insecure,
                        nonce: None,
                        validity,
                    },
                )
                .map(drop),
            }
            .with_context(|| format!("cannot create the shim state in {}", state.display()))?;
            if snp == SnpChoice::InsecureSoft {
                eprintln!(
                    "WARNING: the SNP anchor is the INSECURE software stand-in: it proves nothing; tests only"
                );
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "state": state, "id": id, "insecure": snp == SnpChoice::InsecureSoft })
                );
            } else {
                println!("initialised {} for guest {id}", state.display());
            }
            Ok(0)
        }
        Cmd::Enroll {
            state,
            to,
            agent,
            token_cert,
            token_key,
            json,
        } => {
            let e = vmseal_capture::agent::enroll::enroll(
                &vmseal_capture::agent::enroll::EnrollOptions {
                    state: state.clone(),
                    tcti: None,
                    url: to.verifier.clone(),
                    ca: to.verifier_ca.clone(),
                    token_cert,
                    token_key,
                    agent_cert: agent.paths(&state).0,
                    agent_key: agent.paths(&state).1,
                },
            )
            .context("enrolling with the verifier")?;
            if json {
                println!("{}", serde_json::to_string(&e)?);
                return Ok(0);
            }
            println!(
                "enrolled guest {}{} (SNP anchor{})",
                e.host_id,
                if e.activated { " (AK activated)" } else { "" },
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
            let baseline = load_baseline(target.baseline.as_deref())?;
            let (snap, what) = capture(&target.spec(), None)?;
            if let Some(p) = &baseline_out {
                vmseal_sealer::state::write_atomic(p, &snap.baseline().to_bytes())?;
            }
            print_regions(&what, &snap, baseline.as_ref(), json)?;
            Ok(0)
        }
        Cmd::Attest {
            state,
            to,
            agent,
            vm_id,
            target,
            out_dir,
            json,
        } => {
            let st = HostState::load(&state, None)
                .with_context(|| format!("cannot load the shim state {}", state.display()))?;
            let client = client(&state, &to.verifier, &to.verifier_ca, &agent)?;
            let dir = out_dir.unwrap_or_else(|| state.join("evidence"));
            let (a, what) = attest_once(&st, &client, &vm_id, &target.spec(), &dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!("{}", verdict_line(&vm_id, &what, &a));
            }
            Ok(exit_for(a.tier))
        }
        Cmd::Run(a) => run_schedule(&a.config, a.rounds, a.json),
    }
}

/// `run`: attest every target on the schedule until SIGTERM/SIGINT (or `rounds`); a failed
/// attestation is reported and retried at the next interval. Exit status: the worst verdict of
/// the last round.
fn run_schedule(config: &Path, rounds: Option<u32>, json: bool) -> Result<u8> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = RunConfig::load(config)?;
    let st = HostState::load(&c.state, None)
        .with_context(|| format!("cannot load the shim state {}", c.state.display()))?;
    let agent = AgentCertArgs {
        agent_cert: c.agent_cert.clone(),
        agent_key: c.agent_key.clone(),
    };
    let client = client(&c.state, &c.verifier, &c.verifier_ca, &agent)?;
    let out_dir = c
        .out_dir
        .clone()
        .unwrap_or_else(|| c.state.join("evidence"));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handlers")?;
    }
    eprintln!(
        "vmseal-shim: attesting {} target(s) every {} s to {}",
        c.targets.len(),
        c.interval_secs,
        c.verifier
    );
    let mut round = 0u32;
    let mut worst = EXIT_AFFIRMING;
    while !stop.load(Ordering::Relaxed) && rounds.is_none_or(|r| round < r) {
        round += 1;
        worst = EXIT_AFFIRMING;
        for t in &c.targets {
            let code = match attest_once(&st, &client, &t.vm_id, &t.spec, &out_dir) {
                Ok((a, what)) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "vm_id": t.vm_id, "appraisal": a })
                        );
                    } else {
                        println!("{}", verdict_line(&t.vm_id, &what, &a));
                    }
                    exit_for(a.tier)
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "vm_id": t.vm_id, "error": e.to_string() })
                        );
                    }
                    eprintln!("{}: could not attest: {e}", t.vm_id);
                    EXIT_NO_ATTESTATION
                }
            };
            worst = worst.max(code);
        }
        if rounds.is_some_and(|r| round >= r) {
            break;
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(c.interval_secs);
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    Ok(worst)
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
    for line in snap.region_lines(changed.as_deref()) {
        println!("{line}");
    }
    Ok(())
}

/// Every example of `vmseal-shim`, in its `--help` texts and in README.md and docs/*.md,
/// parses with its CLI definition as printed (and the definition itself is consistent).
#[cfg(test)]
#[test]
fn every_example_in_help_and_docs_parses() {
    vmseal_testkit::examples::assert_cli_examples_parse::<Cli>("vmseal-shim", 3);
}
