//! An auditor's check of evidence chains, offline: given a VM's evidence files (each already
//! verified on its own), do they form one unbroken chain? Every snapshot names its predecessor's
//! SHA-256 (`prev`) and carries the next sequence number, so a removed, inserted, forked or
//! reordered snapshot shows — and is named, with the files involved.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::merkle::Digest;

/// One verified evidence, as the chain check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// Where it came from (a file name), to name it in findings.
    pub source: String,
    /// VM.
    pub vm_id: String,
    /// Host whose intermediate signed it.
    pub host_id: String,
    /// Sequence number.
    pub seq: u64,
    /// The predecessor's digest it names.
    pub prev: Option<Digest>,
    /// SHA-256 of the evidence.
    pub digest: Digest,
    /// When it was made (Unix seconds, the claims' `iat`).
    pub iat: i64,
    /// SHA-256 of the intermediate certificate that signed it.
    pub intermediate: Digest,
}

/// Something wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainFinding {
    /// Sequence numbers missing between two snapshots.
    Gap {
        /// The last snapshot before the gap.
        after: u64,
        /// The first after it.
        next: u64,
        /// The file of `next`.
        source: String,
    },
    /// Two different evidences with one sequence number.
    Fork {
        /// Sequence number.
        seq: u64,
        /// Their files.
        sources: Vec<String>,
    },
    /// A snapshot whose `prev` is not its predecessor's digest (or that names none after #0).
    BrokenLink {
        /// Sequence number.
        seq: u64,
        /// Its file.
        source: String,
        /// The digest it names, hex (None: it names no predecessor).
        names: Option<String>,
        /// Its predecessor's digest, hex.
        expected: String,
    },
    /// A snapshot made before its predecessor (its `iat` is earlier).
    Reordered {
        /// Sequence number.
        seq: u64,
        /// Its file.
        source: String,
        /// Seconds before its predecessor it claims to have been made.
        earlier_by: i64,
    },
}

impl std::fmt::Display for ChainFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gap {
                after,
                next,
                source,
            } => {
                let n = next - after - 1;
                if n == 1 {
                    write!(
                        f,
                        "gap: #{} is missing (between #{after} and #{next}, {source})",
                        after + 1
                    )
                } else {
                    write!(
                        f,
                        "gap: #{}..#{} are missing ({n} snapshots, between #{after} and #{next}, {source})",
                        after + 1,
                        next - 1
                    )
                }
            }
            Self::Fork { seq, sources } => write!(
                f,
                "fork: {} different evidences claim #{seq}: {}",
                sources.len(),
                sources.join(", ")
            ),
            Self::BrokenLink {
                seq,
                source,
                names,
                expected,
            } => {
                // A digest is shown by its first 16 hex digits.
                let short = |d: &str| {
                    if d.len() == 64 {
                        d[..16].to_owned()
                    } else {
                        d.to_owned()
                    }
                };
                let names = names.as_deref().map_or("none".to_owned(), short);
                if *seq == 0 {
                    write!(
                        f,
                        "broken link: #0 ({source}) names {names} as its predecessor; {expected}"
                    )
                } else {
                    write!(
                        f,
                        "broken link: #{seq} ({source}) names {names} as its predecessor, but #{} is {}",
                        seq - 1,
                        short(expected)
                    )
                }
            }
            Self::Reordered {
                seq,
                source,
                earlier_by,
            } => write!(
                f,
                "reordered: #{seq} ({source}) claims to have been made {earlier_by} s before #{}",
                seq.saturating_sub(1)
            ),
        }
    }
}

/// One VM's chain, as the files given show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// VM.
    pub vm_id: String,
    /// Hosts whose keys signed it (more than one: it moved, or the host was rebuilt).
    pub hosts: Vec<String>,
    /// Distinct intermediates that signed it.
    pub intermediates: usize,
    /// Lowest and highest sequence numbers given.
    pub first: u64,
    /// Highest sequence number given.
    pub last: u64,
    /// Evidence given.
    pub evidence: usize,
    /// What is wrong; empty when the chain is unbroken from `first` to `last`.
    pub findings: Vec<ChainFinding>,
}

impl ChainReport {
    /// Whether the chain is unbroken.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Check the chains `links` form, one report per VM (sorted by VM id). The same evidence given
/// twice counts once. A chain may start anywhere (an audit of part of a history); from there,
/// every sequence number must be present once, name its predecessor, and not predate it.
pub fn check_chains(links: Vec<ChainLink>) -> Vec<ChainReport> {
    let mut by_vm: BTreeMap<String, BTreeMap<u64, Vec<ChainLink>>> = BTreeMap::new();
    for l in links {
        let at = by_vm
            .entry(l.vm_id.clone())
            .or_default()
            .entry(l.seq)
            .or_default();
        if !at.iter().any(|o| o.digest == l.digest) {
            at.push(l);
        }
    }
    by_vm
        .into_iter()
        .map(|(vm_id, seqs)| {
            let mut findings = Vec::new();
            let mut hosts: Vec<String> = Vec::new();
            let mut intermediates: Vec<Digest> = Vec::new();
            let mut evidence = 0;
            let mut prev: Option<&ChainLink> = None;
            for (&seq, at) in &seqs {
                evidence += at.len();
                for l in at {
                    if !hosts.contains(&l.host_id) {
                        hosts.push(l.host_id.clone());
                    }
                    if !intermediates.contains(&l.intermediate) {
                        intermediates.push(l.intermediate);
                    }
                }
                if at.len() > 1 {
                    let mut sources: Vec<String> = at.iter().map(|l| l.source.clone()).collect();
                    sources.sort();
                    findings.push(ChainFinding::Fork { seq, sources });
                }
                // Of a fork, the branch that continues from the predecessor is followed.
                let cur = prev
                    .and_then(|p| at.iter().find(|l| l.prev == Some(p.digest)))
                    .unwrap_or(&at[0]);
                if let Some(p) = prev {
                    if seq > p.seq + 1 {
                        findings.push(ChainFinding::Gap {
                            after: p.seq,
                            next: seq,
                            source: cur.source.clone(),
                        });
                    } else if cur.prev != Some(p.digest) {
                        findings.push(ChainFinding::BrokenLink {
                            seq,
                            source: cur.source.clone(),
                            names: cur.prev.map(hex::encode),
                            expected: hex::encode(p.digest),
                        });
                    }
                    if cur.iat < p.iat {
                        findings.push(ChainFinding::Reordered {
                            seq,
                            source: cur.source.clone(),
                            earlier_by: p.iat - cur.iat,
                        });
                    }
                } else if seq == 0 && cur.prev.is_some() {
                    findings.push(ChainFinding::BrokenLink {
                        seq,
                        source: cur.source.clone(),
                        names: cur.prev.map(hex::encode),
                        expected: "none (the first snapshot names no predecessor)".into(),
                    });
                }
                prev = Some(cur);
            }
            ChainReport {
                vm_id,
                hosts,
                intermediates: intermediates.len(),
                first: seqs.keys().next().copied().unwrap_or_default(),
                last: seqs.keys().next_back().copied().unwrap_or_default(),
                evidence,
                findings,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` links of one VM.
    fn chain(n: u64) -> Vec<ChainLink> {
        let mut out: Vec<ChainLink> = Vec::new();
        for seq in 0..n {
            out.push(ChainLink {
                source: format!("vm-{seq:06}.cose"),
                vm_id: "vm".into(),
                host_id: "h".into(),
                seq,
                prev: out.last().map(|p| p.digest),
                digest: [seq as u8 + 1; 32],
                iat: 1000 + seq as i64,
                intermediate: [9; 32],
            });
        }
        out
    }

    #[test]
    fn an_unbroken_chain_is_intact_from_any_start() {
        let r = check_chains(chain(200));
        assert_eq!(
            (r.len(), r[0].evidence, r[0].first, r[0].last),
            (1, 200, 0, 199)
        );
        assert!(r[0].intact(), "{:?}", r[0].findings);
        // Part of a history: from #50 on.
        let r = check_chains(chain(200).split_off(50));
        assert!(r[0].intact());
        // The same file twice is one evidence.
        let mut c = chain(3);
        c.push(c[1].clone());
        assert!(check_chains(c)[0].intact());
    }

    #[test]
    fn a_removed_snapshot_is_a_named_gap() {
        let mut c = chain(200);
        c.remove(100);
        let r = check_chains(c);
        assert_eq!(
            r[0].findings,
            vec![ChainFinding::Gap {
                after: 99,
                next: 101,
                source: "vm-000101.cose".into()
            }]
        );
        assert_eq!(
            r[0].findings[0].to_string(),
            "gap: #100 is missing (between #99 and #101, vm-000101.cose)"
        );
    }

    #[test]
    fn forks_broken_links_and_reorders_are_named() {
        // A second #5 that names #4: a fork.
        let mut c = chain(10);
        let mut other = c[5].clone();
        other.digest = [0xee; 32];
        other.source = "other-000005.cose".into();
        c.push(other);
        let f = &check_chains(c)[0].findings;
        assert!(
            matches!(&f[..], [ChainFinding::Fork { seq: 5, sources }] if sources.len() == 2),
            "{f:?}"
        );
        // #6 names something else than #5.
        let mut c = chain(10);
        c[6].prev = Some([0xaa; 32]);
        let f = &check_chains(c)[0].findings;
        assert!(
            matches!(&f[..], [ChainFinding::BrokenLink { seq: 6, .. }]),
            "{f:?}"
        );
        // #0 naming a predecessor.
        let mut c = chain(2);
        c[0].prev = Some([0xaa; 32]);
        assert!(matches!(
            &check_chains(c)[0].findings[..],
            [ChainFinding::BrokenLink { seq: 0, .. }]
        ));
        // #7 made before #6.
        let mut c = chain(10);
        c[7].iat = c[6].iat - 30;
        let f = &check_chains(c)[0].findings;
        assert!(
            matches!(
                &f[..],
                [ChainFinding::Reordered {
                    seq: 7,
                    earlier_by: 30,
                    ..
                }]
            ),
            "{f:?}"
        );
    }

    #[test]
    fn vms_are_checked_apart() {
        let mut c = chain(3);
        let mut b = chain(2);
        for l in &mut b {
            l.vm_id = "b".into();
        }
        c.extend(b);
        let r = check_chains(c);
        assert_eq!(
            r.iter()
                .map(|r| (r.vm_id.as_str(), r.evidence))
                .collect::<Vec<_>>(),
            [("b", 2), ("vm", 3)]
        );
        assert!(r.iter().all(ChainReport::intact));
    }
}
