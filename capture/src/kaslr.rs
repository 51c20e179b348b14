//! KASLR without a baseline per boot: undo the kernel's own relocations in captured pages.
//!
//! With KASLR the kernel's text differs between boots only where the kernel relocated itself: the
//! sites listed in the relocation table that the x86 build appends to the compressed kernel
//! (`arch/x86/boot/compressed/misc.c`, `handle_relocations`). vmseal reads that table from the
//! bzImage, learns the slide from the running kernel's `_text`, and subtracts the slide at every
//! site before hashing; the result is byte-identical to a `nokaslr` boot, so one golden baseline
//! serves every boot of the same kernel.
//!
//! Table format, read backwards from the end of the decompressed image (each entry a 32-bit
//! link-time kernel address, sign-extended):
//! `… 0, 64-bit sites…, 0, inverse 32-bit sites…, 0, 32-bit sites…` ← end.

use object::read::elf::{FileHeader, ProgramHeader};

/// Link-time start of the kernel mapping on x86-64.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// Errors reading the relocation table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KaslrError {
    /// Not a bzImage.
    #[error("not an x86 bzImage: {0}")]
    NotBzImage(String),
    /// The payload did not decompress.
    #[error("kernel payload: {0}")]
    Payload(String),
    /// The relocation table is malformed.
    #[error("relocation table: {0}")]
    Relocs(String),
    /// The policy's `[kernel_objects]` cannot be walked in this guest.
    #[error("kernel objects: {0}")]
    KernelObjects(String),
}

/// The kernel's relocation sites (link-time virtual addresses), sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRelocs {
    /// Link-time address of `_text` (the first loadable segment).
    pub link_text: u64,
    /// Sites of 32-bit relocations (`+= delta`).
    pub r32: Vec<u64>,
    /// Sites of inverse 32-bit relocations (`-= delta`).
    pub r32_inv: Vec<u64>,
    /// Sites of 64-bit relocations (`+= delta`).
    pub r64: Vec<u64>,
}

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const MAX_KERNEL: usize = 512 << 20;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decompress an LZ4 legacy stream (what `CONFIG_KERNEL_LZ4` produces).
fn lz4_legacy(p: &[u8]) -> Result<Vec<u8>, KaslrError> {
    let bad = |m: &str| KaslrError::Payload(m.to_owned());
    if u32_at(p, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(bad(
            "only LZ4-compressed kernels are supported (CONFIG_KERNEL_LZ4, as Debian's cloud kernel)",
        ));
    }
    let mut out = Vec::new();
    let mut at = 4;
    // The build appends the decompressed size (4 bytes) after the stream.
    while at + 8 <= p.len() {
        let n = u32_at(p, at).ok_or_else(|| bad("truncated block header"))? as usize;
        at += 4;
        if n as u32 == LZ4_LEGACY_MAGIC {
            continue;
        }
        let block = p
            .get(at..at + n)
            .ok_or_else(|| bad("block runs past the payload"))?;
        at += n;
        let start = out.len();
        if start + LZ4_LEGACY_BLOCK > MAX_KERNEL {
            return Err(bad("decompressed kernel larger than 512 MiB"));
        }
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let got = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| KaslrError::Payload(e.to_string()))?;
        out.truncate(start + got);
    }
    Ok(out)
}

/// Decompress an x86 bzImage's payload: the ELF vmlinux followed by its relocation table.
pub fn decompress_bzimage(image: &[u8]) -> Result<Vec<u8>, KaslrError> {
    let nb = |m: &str| KaslrError::NotBzImage(m.to_owned());
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(nb("no HdrS setup header"));
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(&s) => s as usize,
        None => return Err(nb("truncated")),
    };
    let pm = (setup_sects + 1) * 512;
    let off = u32_at(image, 0x248).ok_or_else(|| nb("truncated"))? as usize;
    let len = u32_at(image, 0x24c).ok_or_else(|| nb("truncated"))? as usize;
    let payload = image
        .get(pm + off..pm.saturating_add(off).saturating_add(len))
        .ok_or_else(|| nb("payload outside the file"))?;
    lz4_legacy(payload)
}

/// ELF sections of a file: name → (link-time address, size).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    map: std::collections::BTreeMap<String, (u64, u64)>,
    /// Added to every address (the KASLR slide for a kernel's sections).
    pub slide: u64,
}

impl Sections {
    /// Read the section headers of an ELF64 file.
    pub fn from_elf(data: &[u8]) -> Result<Self, KaslrError> {
        use object::{Object, ObjectSection};
        let f = object::read::elf::ElfFile64::<object::Endianness>::parse(data)
            .map_err(|e| KaslrError::Relocs(format!("not an ELF64 file: {e}")))?;
        let mut map = std::collections::BTreeMap::new();
        for s in f.sections() {
            if let Ok(name) = s.name()
                && !name.is_empty()
                && s.address() != 0
                && s.size() != 0
            {
                map.insert(name.to_owned(), (s.address(), s.size()));
            }
        }
        Ok(Self { map, slide: 0 })
    }

    /// The sections of the vmlinux inside a bzImage.
    pub fn from_bzimage(image: &[u8]) -> Result<Self, KaslrError> {
        Self::from_elf(&decompress_bzimage(image)?)
    }

    /// A section's runtime address and size.
    pub fn get(&self, name: &str) -> Option<(u64, u64)> {
        self.map
            .get(name)
            .map(|&(a, s)| (a.wrapping_add(self.slide), s))
    }
}

impl KernelRelocs {
    /// Read the relocation table from an x86 bzImage.
    pub fn from_bzimage(image: &[u8]) -> Result<Self, KaslrError> {
        Self::from_decompressed(&decompress_bzimage(image)?)
    }

    /// Parse the decompressed image: an ELF vmlinux followed by the relocation table.
    pub fn from_decompressed(k: &[u8]) -> Result<Self, KaslrError> {
        let bad = |m: String| KaslrError::Relocs(m);
        let hdr = object::elf::FileHeader64::<object::Endianness>::parse(k)
            .map_err(|e| bad(format!("vmlinux is not ELF64: {e}")))?;
        let endian = hdr.endian().map_err(|e| bad(e.to_string()))?;
        let link_text = hdr
            .program_headers(endian, k)
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .find(|ph| ph.p_type(endian) == object::elf::PT_LOAD)
            .map(|ph| ph.p_vaddr(endian))
            .ok_or_else(|| bad("vmlinux has no PT_LOAD".into()))?;
        let words = k.len() / 4;
        let word = |i: usize| u32_at(k, i * 4).unwrap_or(0);
        let sext = |w: u32| w as i32 as i64 as u64;
        let mut i = words;
        let mut take = |name: &str| -> Result<Vec<u64>, KaslrError> {
            let mut v = Vec::new();
            loop {
                if i == 0 {
                    return Err(bad(format!("no terminator after the {name} relocations")));
                }
                i -= 1;
                let w = word(i);
                if w == 0 {
                    break;
                }
                let a = sext(w);
                if a < START_KERNEL_MAP {
                    return Err(bad(format!(
                        "{name} relocation {a:#x} is not a kernel address"
                    )));
                }
                v.push(a);
            }
            v.sort_unstable();
            Ok(v)
        };
        let r32 = take("32-bit")?;
        let r32_inv = take("inverse 32-bit")?;
        let r64 = take("64-bit")?;
        if r32.is_empty() && r64.is_empty() {
            return Err(bad(
                "empty relocation table (a kernel built without CONFIG_RELOCATABLE?)".into(),
            ));
        }
        Ok(Self {
            link_text,
            r32,
            r32_inv,
            r64,
        })
    }

    /// Undo a slide of `slide` bytes in `window`, whose first byte is at runtime virtual address
    /// `window_gva`. Sites not wholly inside the window are left alone (callers give the page an
    /// 8-byte margin on each side and keep the middle).
    pub fn undo(&self, slide: u64, window_gva: u64, window: &mut [u8]) {
        if slide == 0 {
            return;
        }
        let link_start = window_gva.wrapping_sub(slide);
        let link_end = link_start.wrapping_add(window.len() as u64);
        let sites = |v: &[u64]| -> Vec<usize> {
            let lo = v.partition_point(|&a| a < link_start);
            let hi = v.partition_point(|&a| a < link_end);
            v[lo..hi]
                .iter()
                .map(|&a| (a - link_start) as usize)
                .collect()
        };
        let s32 = slide as u32;
        for o in sites(&self.r32) {
            if let Some(b) = window.get_mut(o..o + 4) {
                let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_sub(s32);
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        for o in sites(&self.r32_inv) {
            if let Some(b) = window.get_mut(o..o + 4) {
                let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_add(s32);
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        for o in sites(&self.r64) {
            if let Some(b) = window.get_mut(o..o + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                b.copy_from_slice(&u64::from_le_bytes(w).wrapping_sub(slide).to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_reverses_each_kind_of_relocation() {
        let base = 0xffff_ffff_8100_0000u64;
        let r = KernelRelocs {
            link_text: base,
            r32: vec![base + 0x10],
            r32_inv: vec![base + 0x20],
            r64: vec![base + 0x30],
        };
        let slide = 0x2a0_0000u64;
        let mut page = vec![0u8; 0x40];
        page[0x10..0x14]
            .copy_from_slice(&(0x8100_1234u32.wrapping_add(slide as u32)).to_le_bytes());
        page[0x20..0x24].copy_from_slice(&(0x55u32.wrapping_sub(slide as u32)).to_le_bytes());
        page[0x30..0x38].copy_from_slice(&(base + 0x99 + slide).to_le_bytes());
        r.undo(slide, base + slide, &mut page);
        assert_eq!(&page[0x10..0x14], &0x8100_1234u32.to_le_bytes());
        assert_eq!(&page[0x20..0x24], &0x55u32.to_le_bytes());
        assert_eq!(&page[0x30..0x38], &(base + 0x99).to_le_bytes());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(KernelRelocs::from_bzimage(&[0u8; 4096]).is_err());
        assert!(KernelRelocs::from_decompressed(&[1u8; 64]).is_err());
        assert!(lz4_legacy(&[0x02, 0x21, 0x4c, 0x18, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]).is_err());
    }
}

/// What a policy needs from the guest's kernel or ELF file: the relocation table for
/// `kaslr = "undo"` regions, and section addresses for `section` selectors.
#[derive(Debug, Clone, Default)]
pub struct KernelContext {
    /// Relocation table (from the policy's `kernel`).
    pub relocs: Option<std::sync::Arc<KernelRelocs>>,
    /// Sections (from the policy's `elf`, else from the kernel's vmlinux, slid like the kernel).
    pub sections: Option<Sections>,
    /// The kernel-objects walk (the policy's `[kernel_objects]`: the profile from the kernel's
    /// BTF, the addresses from the symbols).
    pub walk: Option<std::sync::Arc<crate::kernel::KernelWalk>>,
    /// Loaded without the running kernel's symbols: its own symbol table, decoded from the image
    /// (link-time addresses), and its profile when the policy walks kernel objects — what
    /// [`for_boot`](Self::for_boot) makes the context of one boot from.
    pub image_symbols: Option<std::sync::Arc<ImageSymbols>>,
    /// The policy walks kernel objects but names no image: the kernel's symbols and BTF are
    /// found in its own memory at each boot ([`for_boot`](Self::for_boot)).
    pub from_memory: bool,
}

/// What the kernel image says of itself when no symbol map is given.
#[derive(Debug)]
pub struct ImageSymbols {
    /// Its kallsyms table, link-time addresses.
    pub symbols: Vec<crate::kallsyms::Symbol>,
    /// Where its text was linked.
    pub link_text: u64,
    /// Its kernel profile, when the policy walks kernel objects.
    pub profile: Option<crate::kernel::KernelProfile>,
    /// Whether the context's sections are the kernel's (moved by its slide), not an `elf`'s.
    pub kernel_sections: bool,
}

impl KernelContext {
    /// Load what `policy` names, with paths relative to `policy_dir`; the kernel's KASLR slide
    /// comes from `_text` in `symbols` when present.
    pub fn load(
        policy: &crate::policy::Policy,
        policy_dir: &std::path::Path,
        symbols: Option<&crate::policy::SymbolMap>,
    ) -> Result<Self, KaslrError> {
        let read = |f: &str| {
            let p = policy_dir.join(f);
            std::fs::read(&p).map_err(|e| KaslrError::NotBzImage(format!("{}: {e}", p.display())))
        };
        let mut ctx = Self::default();
        if let Some(k) = &policy.kernel {
            let vmlinux = decompress_bzimage(&read(k)?)?;
            let relocs = KernelRelocs::from_decompressed(&vmlinux)?;
            let mut sections = Sections::from_elf(&vmlinux)?;
            if let Some(text) = symbols.and_then(|s| s.get("_text")) {
                sections.slide = text.wrapping_sub(relocs.link_text);
            }
            if symbols.is_none() {
                // No symbol map: the kernel's own table, for `running` to slide per boot.
                let table = crate::kallsyms::decode(&vmlinux)
                    .map_err(|e| KaslrError::KernelObjects(e.to_string()))?;
                let profile = match policy.kernel_objects {
                    Some(_) => Some(
                        crate::kernel::KernelProfile::from_vmlinux(&vmlinux)
                            .map_err(|e| KaslrError::KernelObjects(e.to_string()))?,
                    ),
                    None => None,
                };
                ctx.image_symbols = Some(std::sync::Arc::new(ImageSymbols {
                    symbols: table,
                    link_text: relocs.link_text,
                    profile,
                    kernel_sections: policy.elf.is_none(),
                }));
            } else if policy.kernel_objects.is_some() {
                let walk = || {
                    let symbols = symbols.ok_or_else(|| {
                        crate::kernel::WalkSetupError::Symbols(
                            "every symbol (no symbol map was given)".into(),
                        )
                    })?;
                    let profile = crate::kernel::KernelProfile::from_vmlinux(&vmlinux)?;
                    crate::kernel::KernelWalk::new(profile, relocs.link_text, symbols)
                };
                ctx.walk = Some(std::sync::Arc::new(
                    walk().map_err(|e| KaslrError::KernelObjects(e.to_string()))?,
                ));
            }
            ctx.relocs = Some(std::sync::Arc::new(relocs));
            ctx.sections = Some(sections);
        }
        if policy.kernel_objects.is_some() && policy.kernel.is_none() {
            // No image: the layout and the symbols from the kernel's own memory, per boot
            // (unless symbols are given, then only the layout is missing).
            if symbols.is_some() {
                return Err(KaslrError::KernelObjects(
                    "with a symbol map, walking the guest's kernel objects needs its kernel image \
                     for the structures' layout (its BTF): add `kernel = \"vmlinuz\"` at the top \
                     of the policy, or give no symbols and let the capture find both in the \
                     guest's memory"
                        .into(),
                ));
            }
            ctx.from_memory = true;
        }
        if let Some(e) = &policy.elf {
            ctx.sections = Some(Sections::from_elf(&read(e)?)?);
        }
        Ok(ctx)
    }

    /// Whether the context needs the running boot before it plans ([`for_boot`](Self::for_boot)):
    /// it was loaded without symbols, or without an image for the policy's kernel objects.
    pub fn needs_boot(&self) -> bool {
        self.image_symbols.is_some() || self.from_memory
    }

    /// The context and symbols of the running boot of `mem`, whose divide-error gate points at
    /// `divide_error`: loaded without symbols, the image's table moved by the KASLR slide that
    /// gate gives (`kallsyms::slide_from_divide_error`); loaded without an image for kernel
    /// objects, the kernel's symbols and BTF found in its own memory around that gate
    /// (`kernel::find_in_memory`). A context that needs neither is returned as it is, with no
    /// symbols.
    pub fn for_boot(
        &self,
        mem: &dyn crate::source::GuestMemory,
        divide_error: u64,
    ) -> Result<(Self, Option<crate::policy::SymbolMap>), KaslrError> {
        let objects = |e: &dyn std::fmt::Display| KaslrError::KernelObjects(e.to_string());
        if self.from_memory {
            let found =
                crate::kernel::find_in_memory(mem, divide_error).map_err(|e| objects(&e))?;
            let walk = crate::kernel::KernelWalk::new(
                found.profile,
                crate::kernel::X86_64_LINK_TEXT,
                &found.symbols,
            )
            .map_err(|e| objects(&e))?;
            let mut ctx = self.clone();
            ctx.walk = Some(std::sync::Arc::new(walk));
            return Ok((ctx, Some(found.symbols)));
        }
        let Some(img) = &self.image_symbols else {
            return Ok((self.clone(), None));
        };
        let slide = crate::kallsyms::slide_from_divide_error(&img.symbols, divide_error)
            .map_err(|e| objects(&e))?;
        let symbols = crate::kallsyms::running(&img.symbols, slide);
        let mut ctx = self.clone();
        if let Some(s) = ctx.sections.as_mut()
            && img.kernel_sections
        {
            s.slide = slide;
        }
        if let Some(p) = &img.profile {
            let walk = crate::kernel::KernelWalk::new(p.clone(), img.link_text, &symbols)
                .map_err(|e| objects(&e))?;
            ctx.walk = Some(std::sync::Arc::new(walk));
        }
        Ok((ctx, Some(symbols)))
    }

    /// Plan `policy` and arm the KASLR undo where the policy asks for it.
    pub fn plan(
        &self,
        policy: &crate::policy::Policy,
        source: &dyn crate::source::GuestMemory,
        symbols: Option<&crate::policy::SymbolMap>,
        nonce: Option<&[u8]>,
    ) -> Result<crate::Plan, crate::CaptureError> {
        let lookup = crate::plan::Lookup {
            symbols,
            sections: self.sections.as_ref(),
        };
        let mut plan = crate::Plan::resolve(policy, source, lookup, nonce)?;
        plan.kernel = self.walk.clone();
        if policy.regions.iter().any(|r| r.kaslr_undo) {
            let relocs = self
                .relocs
                .clone()
                .ok_or_else(|| crate::CaptureError::Plan {
                    region: "kaslr".into(),
                    reason: "the policy's kernel image was not loaded".into(),
                })?;
            let syms = symbols.ok_or_else(|| crate::CaptureError::Plan {
                region: "kaslr".into(),
                reason: "KASLR undo needs the running kernel's symbols (_text): give --symbols"
                    .into(),
            })?;
            plan.undo_kaslr(relocs, syms)?;
        }
        Ok(plan)
    }
}
