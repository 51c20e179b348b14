//! `vmseal-certs verify --chain`: an auditor's offline check of VMs' histories. Every evidence file
//! is verified on its own (leaf, signature, intermediate and its anchors — the intermediate once
//! per distinct certificate), in parallel; then each VM's files must form one unbroken chain, and
//! every gap, fork, broken link or reorder is named with its files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result};
use rayon::prelude::*;
use vmseal_sealer::anchor::SnpAnchor;
use vmseal_sealer::chain::{ChainLink, ChainReport, check_chains};
use vmseal_sealer::evidence::DecodedEvidence;
use vmseal_sealer::merkle::{Digest, HashAlg};
use vmseal_sealer::oid;
use vmseal_sealer::snp::report::SnpReport;
use vmseal_sealer::verify::{IntermediateCache, TrustConfig, verify_evidence_cached};
use vmseal_sealer::x509::ParsedCert;

use crate::inspect::{Context, snp_trust_for};

/// What `verify --chain` found.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ChainAudit {
    /// One report per VM.
    pub(crate) chains: Vec<ChainReport>,
    /// Files that did not verify on their own, with why.
    pub(crate) invalid: Vec<(String, String)>,
    /// Evidence files read.
    pub(crate) files: usize,
    /// Whether an accepted file's SNP anchor was the INSECURE stand-in.
    pub(crate) insecure: bool,
    /// Seconds the verification took.
    pub(crate) seconds: f64,
}

impl ChainAudit {
    /// Whether every file verified and every chain is unbroken.
    pub(crate) fn ok(&self) -> bool {
        self.invalid.is_empty() && self.chains.iter().all(ChainReport::intact)
    }
}

/// The evidence files `paths` name: files as given, and the `*.cose` files directly inside a
/// directory (not its `refused/` or `undelivered/` subdirectories: evidence a verifier never
/// accepted is not part of a chain).
pub(crate) fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "cose"))
                .collect();
            in_dir.sort();
            out.extend(in_dir);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The trust to verify an intermediate with: the configured one, plus with --allow-insecure the
/// INSECURE stand-in root its own SNP anchor carries.
fn trust_for(intermediate_der: &[u8], ctx: &Context) -> TrustConfig {
    let mut trust = ctx.trust.clone();
    if ctx.allow_insecure
        && let Ok(c) = ParsedCert::from_der(intermediate_der)
        && let Ok(Some(a)) = c.vmseal_extension::<SnpAnchor>(oid::EXT_SNP_ANCHOR_STR)
    {
        let product = SnpReport::parse(&a.report)
            .ok()
            .and_then(|r| r.product_from_cpuid());
        trust.snp = snp_trust_for(&a.ark, &a.ask, product, ctx);
    }
    trust
}

/// One file's outcome: its link in a chain and whether its anchor was the INSECURE stand-in, or
/// why it did not verify.
type Verified = Result<(ChainLink, bool), String>;

/// Verify `files` and check the chains they form.
pub(crate) fn audit(files: &[PathBuf], ctx: &Context) -> ChainAudit {
    let started = Instant::now();
    let cache = IntermediateCache::default();
    let trusts: Mutex<HashMap<Digest, TrustConfig>> = Mutex::default();
    let one = |path: &Path| -> Verified {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        let d = DecodedEvidence::decode(&bytes).map_err(|e| e.to_string())?;
        let inter = HashAlg::Sha256.hash(&[&d.intermediate_der]);
        let trust = {
            let known = trusts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&inter)
                .cloned();
            match known {
                Some(t) => t,
                None => {
                    let t = trust_for(&d.intermediate_der, ctx);
                    trusts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(inter, t.clone());
                    t
                }
            }
        };
        let v =
            verify_evidence_cached(&bytes, &trust, ctx.at, &cache).map_err(|e| e.to_string())?;
        let insecure = v.insecure();
        if insecure && !ctx.allow_insecure {
            return Err(
                "INSECURE software SNP stand-in root: refused (pass --allow-insecure in tests)"
                    .into(),
            );
        }
        Ok((
            ChainLink {
                source: path.display().to_string(),
                vm_id: v.claims.vm_id,
                host_id: v.host_id,
                seq: v.claims.seq,
                prev: v.claims.prev,
                digest: v.digest,
                iat: v.claims.iat,
                intermediate: v.intermediate_digest,
            },
            insecure,
        ))
    };
    let results: Vec<(String, Verified)> = files
        .par_iter()
        .map(|f| (f.display().to_string(), one(f)))
        .collect();
    let mut links = Vec::new();
    let mut invalid = Vec::new();
    let mut insecure = false;
    for (f, r) in results {
        match r {
            Ok((l, i)) => {
                insecure |= i;
                links.push(l);
            }
            Err(e) => invalid.push((f, e)),
        }
    }
    ChainAudit {
        chains: check_chains(links),
        invalid,
        files: files.len(),
        insecure,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Print `a` for a person.
pub(crate) fn print(a: &ChainAudit) {
    for c in &a.chains {
        let span = if c.first == c.last {
            format!("#{}", c.first)
        } else {
            format!("#{}..#{}", c.first, c.last)
        };
        let hosts = c.hosts.join(", ");
        let keys = if c.intermediates > 1 {
            format!(" ({} host keys: the host was re-enrolled)", c.intermediates)
        } else {
            String::new()
        };
        if c.intact() {
            println!(
                "{}: {span}, {} evidence, host {hosts}{keys}: chain intact",
                c.vm_id, c.evidence
            );
        } else {
            println!(
                "{}: {span}, {} evidence, host {hosts}{keys}: CHAIN BROKEN ({} problem(s))",
                c.vm_id,
                c.evidence,
                c.findings.len()
            );
            for f in &c.findings {
                println!("  {f}");
            }
        }
    }
    for (f, e) in &a.invalid {
        println!("{f}: INVALID: {e}");
    }
    let rate = if a.seconds > 0.0 {
        a.files as f64 / a.seconds
    } else {
        0.0
    };
    println!(
        "{} evidence file(s) verified in {:.2} s ({rate:.0}/s){}",
        a.files,
        a.seconds,
        if a.insecure {
            "; INSECURE test root accepted"
        } else {
            ""
        }
    );
}
