//! The micro-VM's guest program: real x86 code, assembled at run time with iced-x86, that keeps a
//! code area, a syscall-like pointer table, a linked task table and a working set it writes on its
//! own vCPU while vmseal captures it. The host can attack it the way rootkits do.
//!
//! Guest-physical layout (32-bit flat protected mode, no paging):
//!
//! ```text
//! 0x0000_1000  code        entry loop + 16 handlers            (class code, critical)
//! 0x0000_3000  syscalls    16 × u32 handler pointers           (class structure, critical)
//! 0x0000_4000  tasks       32 × {pid, state, next, name[20]}   (class structure, high)
//! 0x0000_5000  config      working-set base, pages, stride     (class rodata, medium)
//! 0x0000_6000  stack       grows down from 0x1_0000
//! 0x0010_0000  working set counters and pages the guest writes (class data, low)
//! ```
//!
//! Each loop iteration walks the task list, calls one handler through the pointer table, and writes
//! one word into one page of the working set (page = iteration × stride mod pages); every 4096
//! iterations it does `out 0x80, al`, a heartbeat the host counts.

use iced_x86::code_asm::{CodeAssembler, dword_ptr, eax, ebx, ecx, edx, esi, esp};

/// Code area.
pub const CODE: u64 = 0x1000;
/// Code area size.
pub const CODE_LEN: u64 = 0x2000;
/// Syscall pointer table.
pub const SYSCALLS: u64 = 0x3000;
/// Number of syscall handlers.
pub const NR_SYSCALLS: u32 = 16;
/// Task table.
pub const TASKS: u64 = 0x4000;
/// Number of tasks.
pub const NR_TASKS: u32 = 32;
/// Size of a task entry.
pub const TASK_SIZE: u64 = 32;
/// Config page: `[ws_base, ws_pages, stride]` as u32.
pub const CONFIG: u64 = 0x5000;
/// Top of the stack.
pub const STACK_TOP: u64 = 0x1_0000;
/// Start of the working set; its first page holds counters.
pub const WORKING_SET: u64 = 0x10_0000;
/// Heartbeat I/O port.
pub const HEARTBEAT_PORT: u16 = 0x80;

/// Errors assembling the guest.
#[derive(Debug, thiserror::Error)]
#[error("assembling the guest program failed: {0}")]
pub struct AssembleError(String);

/// The assembled program: bytes placed at [`CODE`] and the handler addresses.
#[derive(Debug, Clone)]
pub struct Program {
    /// Machine code for [`CODE`].
    pub code: Vec<u8>,
    /// Guest-physical address of each handler.
    pub handlers: Vec<u32>,
}

/// Assemble the guest program.
pub fn assemble() -> Result<Program, AssembleError> {
    let e = |x: iced_x86::IcedError| AssembleError(x.to_string());
    let mut a = CodeAssembler::new(32).map_err(e)?;
    let mut top = a.create_label();
    let mut walk = a.create_label();
    let mut walked = a.create_label();
    let mut no_beat = a.create_label();
    let mut handlers: Vec<_> = (0..NR_SYSCALLS).map(|_| a.create_label()).collect();

    a.mov(esp, STACK_TOP as u32).map_err(e)?;
    a.xor(ebx, ebx).map_err(e)?;
    a.set_label(&mut top).map_err(e)?;
    // Walk the task list (at most NR_TASKS + 1 steps, so a corrupted list cannot hang the walk).
    a.mov(esi, TASKS as u32).map_err(e)?;
    a.xor(ecx, ecx).map_err(e)?;
    a.set_label(&mut walk).map_err(e)?;
    a.test(esi, esi).map_err(e)?;
    a.jz(walked).map_err(e)?;
    a.inc(ecx).map_err(e)?;
    a.cmp(ecx, NR_TASKS + 1).map_err(e)?;
    a.jae(walked).map_err(e)?;
    a.mov(esi, dword_ptr(esi + 8)).map_err(e)?;
    a.jmp(walk).map_err(e)?;
    a.set_label(&mut walked).map_err(e)?;
    a.mov(dword_ptr(WORKING_SET as u32), ecx).map_err(e)?;
    // Dispatch a "syscall" through the pointer table.
    a.mov(eax, ebx).map_err(e)?;
    a.and(eax, NR_SYSCALLS - 1).map_err(e)?;
    a.call(dword_ptr(eax * 4 + SYSCALLS as u32)).map_err(e)?;
    // Write one word into page (ebx * stride) mod pages of the working set.
    a.mov(eax, ebx).map_err(e)?;
    a.imul_2(eax, dword_ptr(CONFIG as u32 + 8)).map_err(e)?;
    a.xor(edx, edx).map_err(e)?;
    a.div(dword_ptr(CONFIG as u32 + 4)).map_err(e)?;
    a.shl(edx, 12).map_err(e)?;
    a.add(edx, dword_ptr(CONFIG as u32)).map_err(e)?;
    a.mov(dword_ptr(edx + 0x10), ebx).map_err(e)?;
    a.inc(ebx).map_err(e)?;
    a.test(ebx, 0xfff).map_err(e)?;
    a.jnz(no_beat).map_err(e)?;
    a.out(HEARTBEAT_PORT as u32, iced_x86::code_asm::al)
        .map_err(e)?;
    a.set_label(&mut no_beat).map_err(e)?;
    a.jmp(top).map_err(e)?;
    // Handlers: each counts its calls in the first working-set page.
    for (i, l) in handlers.iter_mut().enumerate() {
        a.set_label(l).map_err(e)?;
        a.inc(dword_ptr(WORKING_SET as u32 + 4 + 4 * i as u32))
            .map_err(e)?;
        a.ret().map_err(e)?;
    }
    let r = a
        .assemble_options(
            CODE,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .map_err(e)?;
    let handlers = handlers
        .iter()
        .map(|l| r.label_ip(l).map(|ip| ip as u32).map_err(e))
        .collect::<Result<Vec<_>, _>>()?;
    let code = r.inner.code_buffer;
    if code.len() as u64 > CODE_LEN {
        return Err(AssembleError(format!(
            "program is {} bytes, more than the code area",
            code.len()
        )));
    }
    Ok(Program { code, handlers })
}

/// An intel-syntax listing of the program, for `vmseal-host vm listing` and the docs.
pub fn listing(p: &Program) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut d = Decoder::with_ip(32, &p.code, CODE, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    for ins in &mut d {
        let mut s = String::new();
        f.format(&ins, &mut s);
        let start = (ins.ip() - CODE) as usize;
        let bytes: String = p.code[start..start + ins.len()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push_str(&format!("{:08x}  {bytes:<20} {s}\n", ins.ip()));
    }
    out
}

/// The default capture policy for the micro-VM (`host/policies/micro-vm.toml`).
pub const POLICY: &str = include_str!("../policies/micro-vm.toml");

/// The guest's symbol map (System.map format via [`vmseal_capture::policy::SymbolMap`]).
pub fn symbols(p: &Program) -> vmseal_capture::policy::SymbolMap {
    let mut m = vmseal_capture::policy::SymbolMap::default();
    m.insert("vmseal_entry", CODE);
    for (i, h) in p.handlers.iter().enumerate() {
        m.insert(&format!("handler_{i}"), *h as u64);
    }
    m.insert("code_end", CODE + p.code.len() as u64);
    m.insert("syscall_table", SYSCALLS);
    m.insert("task_table", TASKS);
    m.insert("config", CONFIG);
    m.insert("working_set", WORKING_SET);
    m
}

/// The initial syscall table: handler i at slot i.
pub fn syscall_table(p: &Program) -> Vec<u8> {
    p.handlers.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// The initial task table: a list 0 → 1 → … → 31 → null.
pub fn task_table() -> Vec<u8> {
    let mut t = vec![0u8; (NR_TASKS as u64 * TASK_SIZE) as usize];
    for i in 0..NR_TASKS as usize {
        let e = &mut t[i * TASK_SIZE as usize..(i + 1) * TASK_SIZE as usize];
        e[0..4].copy_from_slice(&(100 + i as u32).to_le_bytes()); // pid
        e[4..8].copy_from_slice(&1u32.to_le_bytes()); // state: running
        let next = if i + 1 < NR_TASKS as usize {
            TASKS as u32 + (i as u32 + 1) * TASK_SIZE as u32
        } else {
            0
        };
        e[8..12].copy_from_slice(&next.to_le_bytes());
        let name = format!("task-{i}");
        e[12..12 + name.len()].copy_from_slice(name.as_bytes());
    }
    t
}

/// The config page.
pub fn config(ws_base: u32, ws_pages: u32, stride: u32) -> Vec<u8> {
    [ws_base, ws_pages.max(1), stride]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_assembles_and_lists() {
        let p = assemble().unwrap();
        assert!(p.code.len() > 50 && p.code.len() < CODE_LEN as usize);
        assert_eq!(p.handlers.len(), NR_SYSCALLS as usize);
        assert!(p.handlers.windows(2).all(|w| w[0] < w[1]));
        let l = listing(&p);
        assert!(l.contains("out 80h,al"), "{l}");
        assert!(l.contains("call dword ptr"), "{l}");
    }

    #[test]
    fn task_list_is_linked() {
        let t = task_table();
        let next = u32::from_le_bytes(t[8..12].try_into().unwrap());
        assert_eq!(next, TASKS as u32 + TASK_SIZE as u32);
        let last = (NR_TASKS as usize - 1) * TASK_SIZE as usize;
        assert_eq!(&t[last + 8..last + 12], &[0, 0, 0, 0]);
    }
}
