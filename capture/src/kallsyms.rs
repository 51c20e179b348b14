//! The kernel's own symbol table, decoded from the compressed kallsyms tables in its read-only
//! data — the table `/proc/kallsyms` shows, read from the image (the bzImage's vmlinux keeps no
//! ELF symbols), so a capture needs no symbol map from the guest.
//!
//! `scripts/kallsyms.c` writes, each table 8-byte aligned (x86-64, `CONFIG_KALLSYMS_BASE_RELATIVE`):
//! `kallsyms_offsets` (one `i32` per symbol), `kallsyms_relative_base` (`u64`),
//! `kallsyms_num_syms` (`u32`), `kallsyms_names` (per symbol a length — one byte, or two since
//! 6.1 when the first has its top bit set — and that many token indices; the first character
//! expanded is the symbol's type), `kallsyms_markers` (one `u32` per 256 symbols: where its names
//! start), `kallsyms_token_table` (256 NUL-terminated tokens) and `kallsyms_token_index` (256
//! `u16` offsets into it); from 6.1, `kallsyms_seqs_of_names` (three bytes a symbol) between the
//! markers and the token table. Both layouts are read. No table carries its own address, so they are found
//! as vmlinux-to-elf finds them: the token table by its run of single-digit tokens, the index by
//! the offsets it must hold, the markers and names by their shape, each checked against the
//! others. An address is `relative_base - 1 - offset` for a negative offset, the offset itself
//! otherwise (`CONFIG_KALLSYMS_ABSOLUTE_PERCPU`, as x86-64 has it); addresses are link-time: add
//! the KASLR slide for the running kernel's.

use crate::policy::SymbolMap;

/// Most symbols decoded (a distribution kernel has about 200,000).
pub const MAX_SYMBOLS: usize = 1 << 21;

/// Why the kallsyms tables cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KallsymsError {
    /// A table is not where its neighbours say it must be, or is not what it must be.
    #[error(
        "kallsyms: {0} (the kernel needs CONFIG_KALLSYMS with base-relative addresses, as x86-64 \
         distribution kernels have; else give its symbols: the guest's /proc/kallsyms or System.map)"
    )]
    NotFound(String),
}

fn not_found(m: impl Into<String>) -> KallsymsError {
    KallsymsError::NotFound(m.into())
}

/// One symbol: its type (`T`, `t`, `D` …), name and link-time address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Its type, as `/proc/kallsyms` shows it.
    pub kind: char,
    /// Its name.
    pub name: String,
    /// Its link-time address.
    pub addr: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

const fn align_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

/// The 256 tokens at `start` if `index` (at `index_at`) holds exactly their offsets.
fn tokens_at(data: &[u8], start: usize, index_at: usize) -> Option<Vec<Vec<u8>>> {
    let mut tokens = Vec::with_capacity(256);
    let mut at = start;
    for i in 0..256 {
        if usize::from(u16_at(data, index_at + 2 * i)?) != at - start {
            return None;
        }
        let len = data.get(at..)?.iter().position(|&b| b == 0)?;
        if len == 0 || len > 64 {
            return None;
        }
        tokens.push(data[at..at + len].to_vec());
        at += len + 1;
    }
    Some(tokens)
}

/// The token table and index: (the table's start, its tokens, where the index ends).
fn find_tokens(data: &[u8]) -> Result<(usize, Vec<Vec<u8>>, usize), KallsymsError> {
    const DIGITS: &[u8] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
    let mut from = 0;
    while let Some(p) = data
        .get(from..)
        .and_then(|d| d.windows(DIGITS.len()).position(|w| w == DIGITS))
    {
        let digits = from + p;
        from = digits + 1;
        // Tokens 0x30..=0xff run from here to the end of the table; the index follows, aligned.
        let mut end = digits;
        let mut ok = true;
        for _ in 0x30..=0xff {
            match data.get(end..).and_then(|d| d.iter().position(|&b| b == 0)) {
                Some(len) if len > 0 && len <= 64 => end += len + 1,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        for align in [8, 4, 2] {
            let index_at = align_up(end, align);
            let Some(off) = u16_at(data, index_at + 2 * 0x30) else {
                continue;
            };
            let Some(start) = digits.checked_sub(usize::from(off)) else {
                continue;
            };
            if let Some(tokens) = tokens_at(data, start, index_at) {
                return Ok((start, tokens, index_at + 512));
            }
        }
    }
    Err(not_found(
        "no token table (a run of single-digit tokens with its index)",
    ))
}

/// The markers ending before `before` (zero padding skipped): (their start, values), or none.
fn markers_before(data: &[u8], before: usize) -> Option<(usize, Vec<u32>)> {
    let mut at = before - before % 4;
    while at >= 4 && u32_at(data, at - 4)? == 0 {
        at -= 4;
    }
    let mut values = Vec::new();
    while at >= 4 {
        at -= 4;
        let v = u32_at(data, at)?;
        if values.last().is_some_and(|&next| v >= next) {
            return None;
        }
        values.push(v);
        if v == 0 {
            values.reverse();
            return Some((at, values));
        }
        if values.len() > MAX_SYMBOLS / 256 + 1 {
            return None;
        }
    }
    None
}

/// Decode `n` names at `names` with `tokens`; their end, and each name's expansion.
fn decode_names(
    data: &[u8],
    names: usize,
    n: usize,
    tokens: &[Vec<u8>],
    markers: &[u32],
) -> Option<(usize, Vec<Vec<u8>>)> {
    let mut out = Vec::with_capacity(n);
    let mut at = names;
    for i in 0..n {
        if i % 256 == 0 && markers.get(i / 256).map(|&m| m as usize) != Some(at - names) {
            return None;
        }
        let mut len = usize::from(*data.get(at)?);
        at += 1;
        if len & 0x80 != 0 {
            len = (len & 0x7f) | (usize::from(*data.get(at)?) << 7);
            at += 1;
        }
        if len == 0 {
            return None;
        }
        let mut name = Vec::new();
        for &t in data.get(at..at + len)? {
            name.extend_from_slice(&tokens[usize::from(t)]);
        }
        at += len;
        out.push(name);
    }
    Some((at, out))
}

/// Every symbol of the kernel whose decompressed image (its vmlinux) is `vmlinux`, in table
/// order (ascending address), with link-time addresses.
pub fn decode(vmlinux: &[u8]) -> Result<Vec<Symbol>, KallsymsError> {
    decode_with_span(vmlinux).map(|(s, _)| s)
}

/// [`decode`], and where in `vmlinux` the tables lie (from `kallsyms_offsets` to the end of
/// `kallsyms_token_index`).
pub fn decode_with_span(
    vmlinux: &[u8],
) -> Result<(Vec<Symbol>, std::ops::Range<usize>), KallsymsError> {
    let (token_table, tokens, tables_end) = find_tokens(vmlinux)?;
    let span = |(syms, start): (Vec<Symbol>, usize)| (syms, start..tables_end);
    // Right before the token table: the markers (up to 6.0), or `kallsyms_seqs_of_names` (three
    // bytes a symbol, 8-aligned) and then the markers (6.1 on).
    if let Some((at, markers)) = markers_before(vmlinux, token_table)
        && let Some(found) = with_markers(vmlinux, at, &markers, &tokens)?
    {
        return Ok(span(found));
    }
    let lowest = token_table.saturating_sub(3 * MAX_SYMBOLS + 8);
    let mut end = token_table - token_table % 8;
    while end > lowest + 8 {
        end -= 8;
        let Some((at, markers)) = markers_before(vmlinux, end) else {
            continue;
        };
        let m = markers.len();
        let seqs = token_table - end;
        let fits = (((m - 1) * 256 + 1)..=m * 256).any(|n| align_up(3 * n, 8) == seqs);
        if fits && let Some(found) = with_markers(vmlinux, at, &markers, &tokens)? {
            return Ok(span(found));
        }
    }
    Err(not_found(
        "no kallsyms_markers, num_syms and names that agree before the token table",
    ))
}

/// The symbols whose markers are `markers` at `markers_at`: `kallsyms_num_syms` 8-aligned
/// before names that end (within padding) at the markers, one marker per 256 symbols; then the
/// relative base and the offsets before it; with where the offsets start. `None` when nothing
/// there agrees.
fn with_markers(
    vmlinux: &[u8],
    markers_at: usize,
    markers: &[u32],
    tokens: &[Vec<u8>],
) -> Result<Option<(Vec<Symbol>, usize)>, KallsymsError> {
    let lowest = markers_at.saturating_sub(64 << 20);
    let mut num_at = markers_at - markers_at % 8;
    while num_at >= lowest.max(16) + 8 {
        num_at -= 8;
        let Some(n) = u32_at(vmlinux, num_at).map(|n| n as usize) else {
            break;
        };
        if n == 0 || n > MAX_SYMBOLS || n.div_ceil(256) != markers.len() {
            continue;
        }
        let Some((names_end, names)) = decode_names(vmlinux, num_at + 8, n, tokens, markers) else {
            continue;
        };
        if align_up(names_end, 8) != markers_at && names_end != markers_at {
            continue;
        }
        let base =
            u64_at(vmlinux, num_at - 8).ok_or_else(|| not_found("no kallsyms_relative_base"))?;
        let offsets_at = (num_at - 8)
            .checked_sub(align_up(4 * n, 8))
            .ok_or_else(|| not_found("kallsyms_offsets would start before the image"))?;
        let mut out = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let off = u32_at(vmlinux, offsets_at + 4 * i)
                .ok_or_else(|| not_found("kallsyms_offsets cut short"))?
                as i32;
            let addr = if off >= 0 {
                off as u64
            } else {
                base.wrapping_sub(1).wrapping_sub(i64::from(off) as u64)
            };
            let Some((&kind, rest)) = name.split_first() else {
                return Err(not_found("an empty symbol name"));
            };
            out.push(Symbol {
                kind: char::from(kind),
                name: String::from_utf8_lossy(rest).into_owned(),
                addr,
            });
        }
        return Ok(Some((out, offsets_at)));
    }
    Ok(None)
}

/// The symbols as the running kernel has them: every address moved by `slide`, in System.map
/// form (the first of a name wins, as `SymbolMap::parse` keeps it).
pub fn running(symbols: &[Symbol], slide: u64) -> SymbolMap {
    let mut map = SymbolMap::default();
    for s in symbols {
        if map.get(&s.name).is_none() {
            // Per-CPU symbols are offsets into each CPU's area, not kernel addresses: not moved.
            let addr = if s.addr >= 0xffff_8000_0000_0000 {
                s.addr.wrapping_add(slide)
            } else {
                s.addr
            };
            map.insert(&s.name, addr);
        }
    }
    map
}

/// The KASLR slide of a running kernel whose divide-error gate (IDT vector 0) points at
/// `handler`: where its handler (`asm_exc_divide_error`) runs minus where `symbols` say it was
/// linked. KASLR moves the kernel in whole 2 MiB steps; anything else means the gate is hooked or
/// `symbols` are another kernel's.
pub fn slide_from_divide_error(symbols: &[Symbol], handler: u64) -> Result<u64, KallsymsError> {
    let linked = symbols
        .iter()
        .find(|s| s.name == "asm_exc_divide_error")
        .map(|s| s.addr)
        .ok_or_else(|| not_found("no asm_exc_divide_error (an x86-64 Linux 5.8 or later)"))?;
    let slide = handler.wrapping_sub(linked);
    if slide % 0x20_0000 != 0 {
        return Err(not_found(format!(
            "the guest's divide-error gate points at {handler:#x}, not its handler (linked at \
             {linked:#x}) moved by a KASLR slide: the gate is hooked, or the image is not this \
             guest's kernel"
        )));
    }
    Ok(slide)
}
