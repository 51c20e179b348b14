//! `vmseal-shim`: capture a guest's own memory from inside it.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use vmseal_host::capture::{Baseline, Consistency, Plan, Snapshot};
use vmseal_host::policy::Policy;
use vmseal_host::source::MemorySource;

#[derive(Parser)]
#[command(
    name = "vmseal-shim",
    version,
    about = "vmseal's guest shim: capture this guest's own memory (a process, or the kernel) with the host's capture engine",
    after_help = "Examples:\n  vmseal-shim capture --source process:$(pidof sshd) --policy sshd.toml --baseline-out sshd.base\n  \
vmseal-shim capture --source kernel --policy linux.toml --baseline linux.base"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Capture once and print each region's page count and Merkle root (and, against a
    /// baseline, which regions changed).
    Capture {
        /// `process:PID` (its mappings, stopped while read) or `kernel[:KCORE]` (/proc/kcore).
        #[arg(long)]
        source: String,
        /// The capture policy (TOML; docs/policy.md): `mapping` selectors for a process,
        /// `symbol` selectors for the kernel.
        #[arg(long)]
        policy: PathBuf,
        /// Kernel symbols [default: /proc/kallsyms].
        #[arg(long, default_value = "/proc/kallsyms")]
        kallsyms: PathBuf,
        /// Report changes against this baseline (written earlier with --baseline-out).
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Write this capture's page hashes as a baseline.
        #[arg(long)]
        baseline_out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    let Cmd::Capture {
        source,
        policy,
        kallsyms,
        baseline,
        baseline_out,
        json,
    } = cmd;
    let text = std::fs::read_to_string(&policy)
        .with_context(|| format!("cannot read {}", policy.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("{}", policy.display()))?;
    let baseline = baseline
        .map(|p| -> Result<Baseline> {
            let b = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            Baseline::from_bytes(&b).with_context(|| format!("{}", p.display()))
        })
        .transpose()?;
    let (mut src, symbols): (Box<dyn MemorySource>, _) = if let Some(pid) =
        source.strip_prefix("process:")
    {
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("{pid:?} is not a process id"))?;
        let src =
            vmseal_shim::process::ProcessSource::attach(pid).map_err(|e| anyhow::anyhow!("{e}"))?;
        (Box::new(src), None)
    } else if source == "kernel" || source.starts_with("kernel:") {
        let kcore = source.strip_prefix("kernel:").unwrap_or("/proc/kcore");
        let syms = vmseal_shim::kernel::symbols(&kallsyms).map_err(anyhow::Error::msg)?;
        let src = vmseal_shim::kernel::open(kcore.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
        (Box::new(src), Some(syms))
    } else {
        bail!("--source must be process:PID or kernel[:KCORE], not {source:?}");
    };
    let plan = Plan::new(&policy, src.as_ref(), symbols.as_ref(), None)
        .with_context(|| format!("planning the capture of {}", src.describe()))?;
    let snap = Snapshot::full(src.as_mut(), plan, Consistency::StopCopy)
        .with_context(|| format!("capturing {}", src.describe()))?;
    if let Some(p) = &baseline_out {
        vmseal_sealer::state::write_atomic(p, &snap.baseline().to_bytes())?;
    }
    let changed = baseline.as_ref().map(|b| snap.changed_pages(b));
    let regions = snap.regions();
    if json {
        let out = serde_json::json!({
            "source": src.describe(),
            "pause_us": snap.stats.pause.as_micros() as u64,
            "regions": regions.iter().map(|r| serde_json::json!({
                "name": r.name, "class": r.class.name(), "severity": r.severity.name(),
                "pages": r.pages, "root": hex::encode(r.root),
                "changed_pages": changed.as_ref().map(|c| c.iter().find(|(n, _)| *n == r.name).map_or(0, |x| x.1)),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} (paused {} µs)",
            src.describe(),
            snap.stats.pause.as_micros()
        );
        for r in &regions {
            let what = match changed
                .as_ref()
                .and_then(|c| c.iter().find(|(n, _)| *n == r.name))
            {
                Some((_, n)) if *n > 0 => format!("CHANGED: {n} page(s) differ from the baseline"),
                Some(_) => "unchanged".into(),
                None if changed.is_some() => "unchanged".into(),
                None => String::new(),
            };
            println!(
                "  region {:<20} {:<9} {:<9} {:>7} pages  {}  {what}",
                r.name,
                r.class.name(),
                r.severity.name(),
                r.pages,
                &hex::encode(r.root)[..16]
            );
        }
    }
    Ok(())
}
