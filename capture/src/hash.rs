//! Hashing pages: in parallel (rayon, 64 pages a task), under a shared bandwidth [`Budget`], with
//! the KASLR slide undone first on the pages whose policy says so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use vmseal_sealer::merkle::{Digest, HashAlg};

use crate::plan::Fixup;
use crate::source::{GuestMemory, PAGE, SourceError};

/// starves the guests: every capture sharing it together reads at most `rate` bytes per second.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Budget {
    /// A budget of `mb_per_s` megabytes (10^6 bytes) per second.
    pub fn new(mb_per_s: f64) -> Self {
        let rate = (mb_per_s * 1e6).max(PAGE as f64 * 64.0);
        let burst = (rate / 10.0).max(PAGE as f64 * 64.0);
        Self {
            rate,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        }
    }

    /// Wait until `bytes` may be read.
    pub fn take(&self, bytes: u64) {
        let need = bytes as f64;
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * self.rate)
                    .min(self.burst.max(need));
                st.1 = now;
                if st.0 >= need {
                    st.0 -= need;
                    return;
                }
                (need - st.0) / self.rate
            };
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}
/// Hash `pfns` from `source` in parallel; one digest per page, in the same order.
pub fn hash_pages(
    source: &dyn GuestMemory,
    alg: HashAlg,
    pfns: &[u64],
    budget: Option<&Budget>,
) -> Result<Vec<Digest>, SourceError> {
    hash_pages_fixed(source, alg, pfns, budget, &HashMap::new())
}

/// Margin read on each side of a page whose relocations are undone, so that a relocation site
/// straddling the page boundary is corrected as a whole.
const FIXUP_MARGIN: usize = 8;

fn read_fixed(
    source: &dyn GuestMemory,
    pfn: u64,
    f: &Fixup,
    buf: &mut [u8],
) -> Result<(), SourceError> {
    let mut window = vec![0u8; PAGE as usize + 2 * FIXUP_MARGIN];
    // The kernel image is physically contiguous; a margin outside RAM stays zero.
    let start = (pfn * PAGE).saturating_sub(FIXUP_MARGIN as u64);
    let skip = (pfn * PAGE - start) as usize;
    let win = &mut window[FIXUP_MARGIN - skip..];
    if source.read(start, win).is_err() {
        win.iter_mut().for_each(|b| *b = 0);
        source.read(
            pfn * PAGE,
            &mut window[FIXUP_MARGIN..FIXUP_MARGIN + PAGE as usize],
        )?;
    }
    f.relocs
        .undo(f.slide, f.gva - FIXUP_MARGIN as u64, &mut window);
    buf.copy_from_slice(&window[FIXUP_MARGIN..FIXUP_MARGIN + PAGE as usize]);
    Ok(())
}

pub(crate) fn hash_pages_fixed(
    source: &dyn GuestMemory,
    alg: HashAlg,
    pfns: &[u64],
    budget: Option<&Budget>,
    fixups: &HashMap<u64, Fixup>,
) -> Result<Vec<Digest>, SourceError> {
    pfns.par_chunks(64)
        .map(|chunk| {
            if let Some(b) = budget {
                b.take(chunk.len() as u64 * PAGE);
            }
            let mut buf = vec![0u8; PAGE as usize];
            chunk
                .iter()
                .map(|&p| {
                    match fixups.get(&p) {
                        Some(f) => read_fixed(source, p, f, &mut buf)?,
                        None => source.read(p * PAGE, &mut buf)?,
                    }
                    Ok(alg.leaf(&buf))
                })
                .collect::<Result<Vec<_>, SourceError>>()
        })
        .collect::<Result<Vec<Vec<_>>, _>>()
        .map(|v| v.into_iter().flatten().collect())
}
