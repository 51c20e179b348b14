//! `vmseal-certs`: inspect and verify certificate chains (X.509 with ML-DSA, AMD SEV-SNP, TPM EK),
//! SNP reports and vmseal evidence, from public material only.
#![forbid(unsafe_code)]

mod chain;
mod inspect;
mod model;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use time::OffsetDateTime;
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};
use vmseal_sealer::x509::{ParsedCert, parse_bundle};

use crate::inspect::{Context, Input, detect, node_for, report_node};
use crate::model::{Node, Status};

#[derive(Parser)]
#[command(
    name = "vmseal-certs",
    version,
    about = "Inspect and verify vmseal evidence, X.509 (ML-DSA, ECDSA, RSA-PSS), AMD SEV-SNP and TPM chains",
    long_about = "vmseal-certs reads vmseal snapshot evidence, PEM or DER certificates and bundles, \
SEV-SNP reports (binary or hex), AMD certificate tables (configfs-tsm auxblob), configfs-tsm JSON \
and golden baselines as signed CoRIM, and shows what they contain and which links verify. It needs public material only. The genuine AMD \
ARK/ASK/ASVK for Milan, Genoa and Turin are built in; TPM manufacturer CAs are given with --roots.",
    after_help = "Exit status of verify: 0 valid, 1 invalid (one line per broken link), 2 usage or I/O error.\n\n\
Examples:\n  vmseal-certs inspect vm1.cose\n  vmseal-certs inspect --json vcek.der ask_ark.pem\n  \
vmseal-certs verify --roots ek-ca.pem vm1.cose\n  vmseal-certs verify --report report.bin --vcek vcek.der\n  \
vmseal-certs verify --allow-insecure test-vm.cose   # accept the INSECURE SNP stand-in (tests only)\n  \
vmseal-certs verify --corim-signer verifier-corim.pem web-1-baseline-v3.corim   # a golden baseline (signed CoRIM)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct TrustArgs {
    /// PEM/DER file of trusted roots or intermediates (a TPM manufacturer's EK CA, say); repeatable.
    #[arg(long = "roots", value_name = "FILE")]
    roots: Vec<PathBuf>,
    /// Accept the INSECURE software SEV-SNP stand-in's test root carried in the input (tests only).
    #[arg(long)]
    allow_insecure: bool,
    /// A public key (PEM PUBLIC KEY or CERTIFICATE) trusted to sign CoRIM golden baselines (a
    /// verifier's `admin baselines signer`, a kernel build's key); repeatable.
    #[arg(long = "corim-signer", value_name = "FILE")]
    corim_signers: Vec<PathBuf>,
    /// Hardware anchors evidence must carry: tpm, snp, both or none.
    #[arg(long, default_value = "tpm", value_parser = parse_require)]
    require: AnchorRequirement,
    /// Verify as of this time (RFC 3339) instead of now, e.g. to audit old evidence.
    #[arg(long, value_parser = parse_time)]
    at: Option<OffsetDateTime>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a shell completion script (bash, zsh, fish or elvish), e.g. into
    /// /etc/bash_completion.d/vmseal-certs.
    #[command(
        after_help = "Example:\n  vmseal-certs completions bash > /etc/bash_completion.d/vmseal-certs"
    )]
    Completions {
        /// The shell.
        #[arg(value_parser = vmseal_client::cli::SHELLS)]
        shell: String,
    },
    /// Print the man page (roff), e.g. into /usr/share/man/man1/vmseal-certs.1.
    #[command(after_help = "Example:\n  vmseal-certs man > /usr/share/man/man1/vmseal-certs.1")]
    Man,
    /// Show what files contain, as a tree, with the status of every check.
    Inspect {
        /// Files: evidence, certificates, bundles, SNP reports, auxblobs, configfs-tsm JSON.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Check an export of a verifier's audit log offline: its hash chain, and that it agrees
    /// with signed checkpoints kept outside the verifier (a webhook receiver's, an auditor's).
    #[command(
        after_help = "Exit status: 0 intact and agreeing with every checkpoint, 1 not (the \
first place the history differs is named), 2 usage or I/O error.\n\nExample:\n  \
vmseal-verifier admin --state DIR audit export --out audit.json\n  \
vmseal-certs verify-audit --verifier-ca DIR/ca.pem --export audit.json --checkpoint /srv/hooks/checkpoints"
    )]
    VerifyAudit {
        /// The verifier's CA certificate (its ca.pem): checkpoints must be signed under it
        /// (`--ca` is the old spelling).
        #[arg(long = "verifier-ca", alias = "ca", env = "VMSEAL_VERIFIER_CA")]
        ca: PathBuf,
        /// The audit log export (`vmseal-verifier admin audit export --out FILE`).
        #[arg(long)]
        export: PathBuf,
        /// A signed checkpoint (JWS), or a directory of them (*.jwt); repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Check the checkpoints' certificates as of this time (RFC 3339) instead of now.
        #[arg(long, value_parser = parse_time)]
        at: Option<OffsetDateTime>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify files; exit 0 when all are valid under the trust configuration.
    #[command(
        after_help = "With --chain, the files (or directories of *.cose files) are a VM's \
history: each is verified, then every VM's evidence must form one unbroken chain, and each gap, \
fork, broken link or reorder is named with its files (exit 1).\n\nExample:\n  \
vmseal-certs verify --chain --roots ek-ca.pem /var/lib/vmseal/evidence/web-1"
    )]
    Verify {
        /// Files: evidence, certificate chains (leaf first or any order), auxblobs, configfs-tsm
        /// JSON; with --chain, evidence files and directories of them.
        files: Vec<PathBuf>,
        /// Check that each VM's evidence forms one unbroken chain (sequence numbers and `prev`
        /// digests), as well as verifying every file.
        #[arg(long, conflicts_with_all = ["report", "vcek"])]
        chain: bool,
        /// A bare SNP report to verify (with --vcek).
        #[arg(long, requires = "vcek")]
        report: Option<PathBuf>,
        /// The VCEK or VLEK (PEM or DER) for --report.
        #[arg(long, requires = "report")]
        vcek: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

fn parse_require(s: &str) -> Result<AnchorRequirement, String> {
    AnchorRequirement::from_name(s).ok_or_else(|| format!("{s:?}: use tpm, snp, both or none"))
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z): {e}"))
}

fn context(t: &TrustArgs) -> Result<Context> {
    let mut roots = Vec::new();
    for p in &t.roots {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        roots.extend(
            parse_bundle(&bytes)
                .with_context(|| format!("{}: not PEM or DER certificates", p.display()))?,
        );
    }
    let mut trust = TrustConfig {
        require: t.require,
        ..TrustConfig::default()
    };
    trust.tpm.ek_roots = roots.iter().map(|c| c.der.clone()).collect();
    trust.tpm.require_ek_chain = t.require.tpm;
    let corim_signers = t
        .corim_signers
        .iter()
        .map(|p| {
            let pem = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            vmseal_client::corim::TrustedKey::from_pem(p.display().to_string(), &pem)
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    Ok(Context {
        trust,
        roots,
        corim_signers,
        allow_insecure: t.allow_insecure,
        at: t.at.unwrap_or_else(OffsetDateTime::now_utc),
    })
}

fn read_input(p: &PathBuf) -> Result<Input> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    detect(&bytes).with_context(|| p.display().to_string())
}

fn print(nodes: &[(String, Node)], json: bool) -> Result<()> {
    if json {
        let v: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(f, n)| serde_json::json!({ "file": f, "node": n }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut out = String::new();
        for (f, n) in nodes {
            out.push_str(&format!("{f}\n"));
            n.render(&mut out, 1);
        }
        print!("{out}");
    }
    Ok(())
}

/// For a certificate file: every link verifies and the top of the chain is trusted.
fn anchor_chain(certs: &[ParsedCert], node: &mut Node, ctx: &Context) {
    let mut trusted: Vec<ParsedCert> = ctx.roots.clone();
    // The built-in AMD ARK, ASK and ASVK certificates are all trusted.
    for r in &ctx.trust.snp.roots {
        for d in [Some(&r.ark), Some(&r.ask), r.asvk.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Ok(c) = ParsedCert::from_der(d) {
                trusted.push(c);
            }
        }
    }
    // Tops: certificates whose issuer is not among the input certificates (or that are self-signed).
    for c in certs {
        let issuer_in_input = certs
            .iter()
            .any(|o| o.subject_raw == c.issuer_raw && o.der != c.der);
        if issuer_in_input {
            continue;
        }
        let anchored = trusted.iter().any(|t| {
            (t.der == c.der)
                || (t.subject_raw == c.issuer_raw && vmseal_sealer::x509::signed_by(c, t))
        });
        if anchored {
            node.check(
                "trust anchor",
                Status::Valid(format!("{:?} is or is issued by a trusted root", c.subject)),
            );
        } else {
            node.check(
                "trust anchor",
                Status::Invalid(format!(
                    "{:?} does not chain to a trusted root (add one with --roots)",
                    c.subject
                )),
            );
        }
    }
    let now = ctx.at.unix_timestamp();
    for c in certs {
        if !c.valid_at(now) {
            node.check(
                "validity",
                Status::Invalid(format!("{:?} is expired or not yet valid", c.subject)),
            );
        }
    }
}

fn verdict(n: &Node, allow_insecure: bool) -> Vec<String> {
    let mut f = n.failures();
    if f.is_empty() && n.insecure() && !allow_insecure {
        f.push(
            "INSECURE software SNP stand-in root: refused (pass --allow-insecure in tests)".into(),
        );
    }
    f
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Cmd::Completions { shell } => vmseal_client::cli::print_completions::<Cli>(&shell)
            .map_err(anyhow::Error::msg)
            .map(|()| true),
        Cmd::Man => vmseal_client::cli::print_man::<Cli>()
            .map_err(anyhow::Error::msg)
            .map(|()| true),
        Cmd::Inspect { files, trust } => {
            let ctx = context(&trust)?;
            let mut out = Vec::new();
            for f in &files {
                let input = read_input(f)?;
                for n in node_for(&input, &ctx) {
                    out.push((f.display().to_string(), n));
                }
            }
            print(&out, trust.json)?;
            Ok(true)
        }
        Cmd::VerifyAudit {
            ca,
            export,
            checkpoints,
            at,
            json,
        } => verify_audit(&ca, &export, &checkpoints, at, json),
        Cmd::Verify {
            files,
            chain: true,
            trust,
            ..
        } => {
            let ctx = context(&trust)?;
            let files = chain::expand(&files)?;
            if files.is_empty() {
                bail!("nothing to verify: give evidence files or directories holding *.cose files");
            }
            let a = chain::audit(&files, &ctx);
            if trust.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                chain::print(&a);
            }
            Ok(a.ok())
        }
        Cmd::Verify {
            files,
            report,
            vcek,
            trust,
            ..
        } => {
            let ctx = context(&trust)?;
            if files.is_empty() && report.is_none() {
                bail!("nothing to verify: give files, or --report R --vcek V");
            }
            let mut results: Vec<(String, Node)> = Vec::new();
            if let (Some(r), Some(v)) = (&report, &vcek) {
                let raw = match read_input(r)? {
                    Input::Report(b) => b,
                    _ => bail!("{} is not an SNP report", r.display()),
                };
                let vek_bytes =
                    std::fs::read(v).with_context(|| format!("cannot read {}", v.display()))?;
                let vek = parse_bundle(&vek_bytes)
                    .with_context(|| format!("{}: not a certificate", v.display()))?;
                let node = report_node(&raw, vek.first().map(|c| c.der.as_slice()), &ctx);
                results.push((r.display().to_string(), node));
            }
            for f in &files {
                let input = read_input(f)?;
                if matches!(input, Input::Corim(_)) && ctx.corim_signers.is_empty() {
                    bail!(
                        "{} is a signed CoRIM: give the key it must be signed by with --corim-signer PEM \
                         (a verifier's `vmseal-verifier admin baselines signer`)",
                        f.display()
                    );
                }
                let mut node = match &input {
                    Input::Certs(c) => {
                        let mut n = Node::new("chain", format!("{} certificate(s)", c.len()));
                        n.children = node_for(&input, &ctx);
                        anchor_chain(c, &mut n, &ctx);
                        n
                    }
                    Input::Report(_) => bail!(
                        "{}: a bare report needs its VCEK: verify --report {} --vcek FILE",
                        f.display(),
                        f.display()
                    ),
                    _ => {
                        let mut n = Node::new("file", f.display().to_string());
                        n.children = node_for(&input, &ctx);
                        n
                    }
                };
                if matches!(input, Input::Evidence(_)) {
                    node.title = "evidence".into();
                }
                results.push((f.display().to_string(), node));
            }
            let mut ok = true;
            let mut lines = Vec::new();
            for (f, n) in &results {
                let fails = verdict(n, trust.allow_insecure);
                if fails.is_empty() {
                    let warn = if n.insecure() {
                        " (INSECURE test root accepted)"
                    } else {
                        ""
                    };
                    lines.push(serde_json::json!({"file": f, "valid": true, "broken": []}));
                    if !trust.json {
                        println!("{f}: valid{warn}");
                    }
                } else {
                    ok = false;
                    if !trust.json {
                        println!("{f}: INVALID");
                        for l in &fails {
                            println!("  broken link: {l}");
                        }
                    }
                    lines.push(serde_json::json!({"file": f, "valid": false, "broken": fails}));
                }
            }
            if trust.json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            }
            Ok(ok)
        }
    }
}

/// `verify-audit`: the export's chain, and every checkpoint given.
fn verify_audit(
    ca: &PathBuf,
    export: &PathBuf,
    checkpoints: &[PathBuf],
    at: Option<OffsetDateTime>,
    json: bool,
) -> Result<bool> {
    use vmseal_client::audit::{verify_checkpoint, verify_export};
    let ca_pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let text =
        std::fs::read(export).with_context(|| format!("cannot read {}", export.display()))?;
    let e: vmseal_client::AuditExport = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not an audit export (`admin audit export --out FILE` writes one)",
            export.display()
        )
    })?;
    let mut files = Vec::new();
    for p in checkpoints {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jwt"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let now = at.unwrap_or_else(OffsetDateTime::now_utc);
    let mut verified = Vec::new();
    let mut bad = Vec::new();
    for f in &files {
        let t =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        match verify_checkpoint(&t, &ca_pem, now) {
            Ok(c) => verified.push(c),
            Err(err) => bad.push(format!(
                "{}: not a checkpoint signed under {}: {err}",
                f.display(),
                ca.display()
            )),
        }
    }
    let r = verify_export(&e.entries, &verified);
    let ok = r.is_ok() && bad.is_empty();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "intact": ok,
                "report": r.as_ref().ok(),
                "error": r.as_ref().err(),
                "bad_checkpoints": bad,
            }))?
        );
    } else {
        for b in &bad {
            println!("INVALID: {b}");
        }
        match &r {
            Ok(r) => println!(
                "audit log intact: {} entries (#1..#{}), agreeing with {} checkpoint(s){}",
                r.entries,
                r.last_id,
                r.checkpoints,
                match r.checkpointed_up_to {
                    Some(id) if id < r.last_id => format!(
                        "; entries after #{id} are chained but no checkpoint given vouches for them yet"
                    ),
                    Some(_) => String::new(),
                    None => "; with no checkpoint, a rewrite by whoever can write the database would not show".into(),
                }
            ),
            Err(e) => println!("audit log NOT intact: {e}"),
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(false) => ExitCode::from(1),
        r => vmseal_client::cli::exit_code(r.map(drop), 2),
    }
}

/// Every example of `vmseal-certs`, in its `--help` texts and in README.md and docs/*.md,
/// parses with its CLI definition as printed (and the definition itself is consistent).
#[cfg(test)]
#[test]
fn every_example_in_help_and_docs_parses() {
    vmseal_testkit::examples::assert_cli_examples_parse::<Cli>("vmseal-certs", 5);
}
