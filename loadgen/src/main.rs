//! `vmseal-loadgen`: load the vmseal verifier on loopback and report what it costs.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vmseal-loadgen",
    version,
    about = "Load the vmseal verifier on loopback and report throughput, latency and CPU per \
             appraisal, each against a same-run /healthz baseline (docs/benchmarks.md).",
    after_help = "Examples:\n  vmseal-loadgen appraise --json\n  \
vmseal-loadgen fleet --agents 1000 --vms 10000 --json\n  \
vmseal-loadgen fleet --agents 1000 --vms 10000 --rate 500 --database postgres://vmseal@127.0.0.1:5432/empty_db --json"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One enrolled host, one server worker: appraisals per second and per CPU-second of the
    /// service, p50/p99, against the same clients asking GET /healthz.
    #[command(
        after_help = "Example:\n  vmseal-loadgen appraise --clients 8 --per-client 250 --json"
    )]
    Appraise {
        /// Concurrent clients, one VM each.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Evidence per client.
        #[arg(long, default_value_t = 250)]
        per_client: usize,
        /// Pages of the code, structure and data regions.
        #[arg(long, value_delimiter = ',', default_value = "256,4,4096")]
        pages: Vec<u64>,
        /// Changed data pages per evidence.
        #[arg(long, default_value_t = 16)]
        changed: u64,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// A fleet: many agents (each its own host, agent certificate and mutual-TLS connection)
    /// submitting evidence for many VMs at once, on SQLite or PostgreSQL.
    #[command(after_help = "Examples (what docs/benchmarks.md reports):\n  \
vmseal-loadgen fleet --agents 1000 --vms 10000 --json\n  \
vmseal-loadgen fleet --agents 1000 --vms 10000 --database postgres://vmseal@127.0.0.1:5432/empty_db --json\n\
scripts/bench-fleet.sh runs both, with a temporary PostgreSQL.")]
    Fleet {
        /// Concurrent agents (one connection each).
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// VMs, spread over the agents.
        #[arg(long, default_value_t = 10_000)]
        vms: usize,
        /// Evidence per VM.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Pages of the code, structure and data regions.
        #[arg(long, value_delimiter = ',', default_value = "16,2,64")]
        pages: Vec<u64>,
        /// Database URL (an empty PostgreSQL database); default SQLite in a temporary directory.
        #[arg(long)]
        database: Option<String>,
        /// Server worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Offer this many evidence per second over the fleet, each agent on its own schedule
        /// (latency under a given load); default: every agent back to back (throughput).
        #[arg(long)]
        rate: Option<f64>,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
}

fn pages(p: Vec<u64>) -> anyhow::Result<[u64; 3]> {
    p.try_into()
        .map_err(|_| anyhow::anyhow!("--pages takes three numbers: code,structure,data"))
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                vmseal_client::error_text(e.chain().map(|c| c as &dyn std::error::Error))
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Appraise {
            clients,
            per_client,
            pages: p,
            changed,
            json,
        } => {
            let r = vmseal_loadgen::appraise::run(clients, per_client, pages(p)?, changed, &|m| {
                if !json {
                    eprintln!("appraise: {m}")
                }
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            anyhow::ensure!(r.errors == 0, "{} submissions failed", r.errors);
            Ok(())
        }
        Cmd::Fleet {
            agents,
            vms,
            rounds,
            pages: p,
            database,
            workers,
            rate,
            json,
        } => {
            let o = vmseal_loadgen::fleet::FleetOptions {
                agents,
                vms,
                rounds,
                pages: pages(p)?,
                database,
                workers,
                rate,
            };
            let r = vmseal_loadgen::fleet::run(&o, &|m| {
                if !json {
                    eprintln!("fleet: {m}")
                }
            })
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("the fleet benchmark")?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} agents, {} VMs on {}: {} appraisals, {} errors, {:.0}/s, p50 {:.1} ms, \
                     p99 {:.1} ms (healthz p99 {:.1} ms), {:.0} appraisals per service CPU-second, \
                     {} TLS connections",
                    r.agents,
                    r.vms,
                    r.database,
                    r.appraisals,
                    r.errors,
                    r.appraisals_per_sec,
                    r.p50_ms,
                    r.p99_ms,
                    r.healthz_p99_ms,
                    r.appraisals_per_server_cpu_second,
                    r.tls_connections
                );
            }
            anyhow::ensure!(r.errors == 0, "{} submissions failed", r.errors);
            Ok(())
        }
    }
}

/// Every example of `vmseal-loadgen`, in its `--help` texts and in README.md and docs/*.md,
/// parses with its CLI definition as printed (and the definition itself is consistent).
#[cfg(test)]
#[test]
fn every_example_in_help_and_docs_parses() {
    vmseal_testkit::examples::assert_cli_examples_parse::<Cli>("vmseal-loadgen", 5);
}
