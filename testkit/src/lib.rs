//! Test helpers shared by vmseal's crates: a real, freshly manufactured swtpm per test, and the
//! paths of the public test vectors in `../shared/vectors`, and a private PostgreSQL cluster.
//!
//! Nothing here is a mock: [`Swtpm`] runs Debian's `swtpm`, manufactured by `swtpm_setup` with EK
//! certificates issued by `swtpm_localca` under a CA private to the instance.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod examples;
pub mod postgres;
pub mod python;
pub mod scenario;

/// A running swtpm with its own state directory and EK CA.
#[derive(Debug)]
pub struct Swtpm {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn free_port_pair() -> Option<u16> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").ok()?;
        let p = l.local_addr().ok()?.port();
        drop(l);
        if p < 65535 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Some(p);
        }
    }
    None
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| {
        format!("{cmd:?}: {e} (is swtpm installed? apt-get install swtpm swtpm-tools)")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Swtpm {
    /// Manufacture and start a new swtpm (TPM 2.0, EK certificates at 0x1c00002 and 0x1c00016).
    pub fn start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(d.join("ca")).map_err(|e| e.to_string())?;
        let write = |name: &str, text: String| -> Result<(), String> {
            std::fs::File::create(d.join(name))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| e.to_string())
        };
        let ca = d.join("ca");
        write(
            "swtpm-localca.conf",
            format!(
                "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\ncertserial = {0}/certserial\n",
                ca.display()
            ),
        )?;
        write(
            "swtpm-localca.options",
            "--platform-manufacturer vmseal-test --platform-version 2.1 --platform-model swtpm\n"
                .into(),
        )?;
        write(
            "swtpm_setup.conf",
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {0}/swtpm-localca.conf\ncreate_certs_tool_options = {0}/swtpm-localca.options\n",
                d.display()
            ),
        )?;
        run(Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(d.join("state"))
            .arg("--create-ek-cert")
            .arg("--config")
            .arg(d.join("swtpm_setup.conf"))
            .arg("--overwrite"))?;
        let mut me = Self {
            dir,
            port: 0,
            child: None,
        };
        me.launch()?;
        Ok(me)
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_port_pair().ok_or("no free TCP port pair on 127.0.0.1")?;
            let mut child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", self.dir.path().join("state").display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("spawn swtpm: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("swtpm exited with {status}");
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    self.child = Some(child);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(format!("swtpm did not start: {last}"))
    }

    /// The TCTI string for tss-esapi / tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stop swtpm (state is kept on disk) and start it again, like a host reboot of the TPM.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// PEM of the EK CA root (swtpm-localca-rootca).
    pub fn ek_root_pem(&self) -> PathBuf {
        self.dir.path().join("ca/swtpm-localca-rootca-cert.pem")
    }

    /// PEM of the EK CA intermediate (swtpm-localca), which signs EK certificates.
    pub fn ek_issuer_pem(&self) -> PathBuf {
        self.dir.path().join("ca/issuercert.pem")
    }

    /// Extend a PCR with tpm2-tools (sha256 bank), as a changed boot state would.
    pub fn extend_pcr(&self, index: u8) -> Result<(), String> {
        run(Command::new("tpm2_pcrextend")
            .env("TPM2TOOLS_TCTI", self.tcti())
            .arg(format!(
                "{index}:sha256=0000000000000000000000000000000000000000000000000000000000000001"
            )))
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fuzz target's smoke run on the stable toolchain: `f` on `seed`, then on `rounds`
/// deterministic mutations of it (a byte replaced by one of `alphabet`, a truncation, or a byte
/// inserted), xorshift-driven so that every run tries the same inputs.
pub fn mutations(seed: &[u8], rounds: usize, alphabet: &[u8], mut f: impl FnMut(&[u8])) {
    f(seed);
    if seed.is_empty() || alphabet.is_empty() {
        return;
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut d = seed.to_vec();
        let i = (x as usize) % d.len();
        match x % 3 {
            0 => d[i] = alphabet[(x >> 8) as usize % alphabet.len()],
            1 => d.truncate(i),
            _ => d.insert(i, (x >> 16) as u8),
        }
        f(&d);
    }
}

/// The shared test vectors directory (`../shared/vectors` beside the repository), or the
/// directory named by `VMSEAL_VECTORS`.
pub fn vectors_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VMSEAL_VECTORS") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
    root.canonicalize().unwrap_or(root)
}

/// A file in the shared vectors; fails loudly (never skips) when it is absent.
pub fn vector(rel: &str) -> Vec<u8> {
    let p = vectors_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| {
        // Tests must not silently pass without their vectors.
        panic!(
            "test vector {} missing: {e}; set VMSEAL_VECTORS to the shared vectors directory",
            p.display()
        )
    })
}

/// Where process `pid`'s executable mapping of `path` (its `r-xp` line in /proc/PID/maps)
/// starts.
pub fn code_start(pid: u32, path: &str) -> Result<u64, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
    let line = maps
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("r-xp") && l.ends_with(path))
        .ok_or_else(|| format!("no r-x mapping of {path}: {maps}"))?;
    let start = line.split('-').next().unwrap_or_default();
    u64::from_str_radix(start, 16).map_err(|e| format!("{start}: {e}"))
}

/// Flip every bit of the byte at `at` in process `pid`'s memory (through /proc/PID/mem), as an
/// injected hook would patch code.
pub fn flip_byte(pid: u32, at: u64) -> Result<(), String> {
    use std::os::unix::fs::FileExt as _;
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
    let mut b = [0u8; 1];
    mem.read_exact_at(&mut b, at).map_err(|e| e.to_string())?;
    mem.write_all_at(&[b[0] ^ 0xff], at)
        .map_err(|e| e.to_string())
}

/// A real Linux guest under QEMU (TCG), booted from Debian's cloud kernel and a busybox
/// initramfs (`scripts/fetch-test-kernel.sh`), with RAM in a shared memory-backend-file and a QMP
/// socket, as `vmseal-host` attaches to production guests.
#[derive(Debug)]
pub struct QemuGuest {
    dir: tempfile::TempDir,
    child: Option<Child>,
    mem: PathBuf,
    /// Kernel symbols the guest printed from /proc/kallsyms (System.map format).
    pub system_map: String,
    control: Option<std::fs::File>,
}

/// How [`QemuGuest::boot_with`] boots.
#[derive(Debug, Clone, Default)]
pub struct GuestOptions {
    /// RAM, MiB.
    pub mem_mib: u64,
    /// Leave KASLR on.
    pub kaslr: bool,
    /// An initramfs of the test's own (default: the one `fetch-test-kernel.sh` built).
    pub initrd: Option<PathBuf>,
    /// A virtio-net NIC on QEMU's user-mode network (needs the modules in `kernel_dir()/modules`).
    pub net: bool,
    /// A control line: the guest's /dev/ttyS1.
    pub control: bool,
}

impl QemuGuest {
    /// The directory of the test kernel, its initramfs and its network modules
    /// (`scripts/fetch-test-kernel.sh`).
    pub fn kernel_dir() -> Result<PathBuf, String> {
        std::env::var_os("VMSEAL_TEST_KERNEL_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vmseal/kernel"))
            })
            .ok_or_else(|| "no HOME and no VMSEAL_TEST_KERNEL_DIR".into())
    }

    /// Boot a guest with `mem_mib` MiB; `kaslr` leaves kernel address randomisation on.
    pub fn boot(mem_mib: u64, kaslr: bool) -> Result<Self, String> {
        Self::boot_with(&GuestOptions {
            mem_mib,
            kaslr,
            ..GuestOptions::default()
        })
    }

    /// Boot a guest as `o` says: its own initramfs (whose init must print `vmseal-ready`),
    /// user-mode networking (the host's loopback is 10.0.2.2 in the guest), a control line
    /// (the guest's /dev/ttyS1, written with [`QemuGuest::send`]).
    pub fn boot_with(o: &GuestOptions) -> Result<Self, String> {
        let (mem_mib, kaslr) = (o.mem_mib, o.kaslr);
        let kdir = Self::kernel_dir()?;
        let kernel = kdir.join("vmlinuz");
        let initrd = o.initrd.clone().unwrap_or_else(|| kdir.join("initrd.gz"));
        if !kernel.exists() || !initrd.exists() {
            return Err(format!(
                "test kernel missing in {}: run scripts/fetch-test-kernel.sh",
                kdir.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mem = PathBuf::from(format!(
            "/dev/shm/vmseal-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let append = format!(
            "console=ttyS0 quiet panic=-1{}",
            if kaslr { "" } else { " nokaslr" }
        );
        let mut cmd = Command::new("qemu-system-x86_64");
        if o.net {
            cmd.args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]);
        }
        if o.control {
            let ctl = dir.path().join("ctl");
            for end in ["in", "out"] {
                let f = ctl.with_extension(end);
                let st = Command::new("mkfifo")
                    .arg(&f)
                    .status()
                    .map_err(|e| e.to_string())?;
                if !st.success() {
                    return Err(format!("mkfifo {} failed", f.display()));
                }
            }
        }
        let child = cmd
            .args(["-machine", "q35,memory-backend=mem", "-accel", "tcg", "-m"])
            .arg(format!("{mem_mib}M"))
            .arg("-object")
            .arg(format!(
                "memory-backend-file,id=mem,size={mem_mib}M,mem-path={},share=on",
                mem.display()
            ))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                &append,
                "-display",
                "none",
                "-no-reboot",
                "-serial",
            ])
            .arg(format!("file:{}", dir.path().join("console.log").display()))
            // The guest's second serial port, the control line: QEMU reads ctl.in, writes ctl.out.
            .args(if o.control {
                vec![
                    "-serial".to_owned(),
                    format!("pipe:{}", dir.path().join("ctl").display()),
                ]
            } else {
                vec![]
            })
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.path().join("qmp.sock").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86): {e}")
            })?;
        let mut me = Self {
            dir,
            child: Some(child),
            mem,
            system_map: String::new(),
            control: None,
        };
        if o.control {
            // Opening the write end waits for QEMU to open the read end.
            let w = std::fs::OpenOptions::new()
                .write(true)
                .open(me.dir.path().join("ctl.in"))
                .map_err(|e| format!("control line: {e}"))?;
            me.control = Some(w);
            // Keep QEMU's output end drained.
            let out = me.dir.path().join("ctl.out");
            std::thread::spawn(move || {
                if let Ok(mut f) = std::fs::File::open(out) {
                    let _ = std::io::copy(&mut f, &mut std::io::sink());
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let log =
                std::fs::read_to_string(me.dir.path().join("console.log")).unwrap_or_default();
            if log.contains("vmseal-ready") {
                let syms = log
                    .split("vmseal-symbols-begin")
                    .nth(1)
                    .and_then(|s| s.split("vmseal-symbols-end").next())
                    .unwrap_or_default();
                me.system_map = syms.trim().replace('\r', "");
                return Ok(me);
            }
            if let Some(st) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!(
                    "qemu exited with {st} before the guest was ready:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("guest not ready after 180 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the guest printed on its console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log"))
            .unwrap_or_default()
            .replace('\r', "")
    }

    /// Send one line to the guest's control line (/dev/ttyS1).
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self
            .control
            .as_mut()
            .ok_or("booted without a control line")?;
        w.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| w.flush())
            .map_err(|e| format!("control line: {e}"))
    }

    /// Wait until the console shows `marker` after byte `from`; returns the console text from
    /// `from` up to and including the marker's line, and where the next wait should start.
    pub fn wait_for(
        &self,
        marker: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<(String, usize), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.console();
            if let Some(i) = log.get(from..).and_then(|t| t.find(marker)) {
                let end = log[from + i..]
                    .find('\n')
                    .map_or(log.len(), |n| from + i + n + 1);
                return Ok((log[from..end].to_owned(), end));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {marker:?} on the guest console within {timeout:?}:\n{}",
                    log.get(from..).unwrap_or("")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The QMP socket.
    pub fn qmp(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// The memory backend file.
    pub fn mem(&self) -> PathBuf {
        self.mem.clone()
    }

    /// Address of a symbol the guest printed.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.system_map.lines().find_map(|l| {
            let mut p = l.split_whitespace();
            let (a, _, n) = (p.next()?, p.next()?, p.next()?);
            (n == name)
                .then(|| u64::from_str_radix(a, 16).ok())
                .flatten()
        })
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.mem);
    }
}
