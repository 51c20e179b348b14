//! Independent implementations written in Python (a standard's reference validator, a client
//! generator), installed from PyPI into a virtual environment under the target directory, once.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `script` with `python`; it prints one JSON value, which comes back parsed. A failing
/// script's output and error are the error.
pub fn run_json(python: &Path, script: &str) -> Result<serde_json::Value, String> {
    let o = Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!("{out}{}", String::from_utf8_lossy(&o.stderr)));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))
}

/// The Python of a virtual environment holding `packages` (pip requirement strings), made on
/// first use under `target/vmseal-python` and reused; errors say what is missing.
pub fn with_packages(packages: &[&str]) -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vmseal-python");
    let python = target.join("bin/python");
    // One process at a time: tests run in parallel.
    let lock = target.with_extension("lock");
    std::fs::create_dir_all(target.parent().unwrap_or(Path::new(".")))
        .map_err(|e| e.to_string())?;
    let _guard = FileLock::take(&lock)?;
    if !python.exists() {
        let o = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&target)
            .output()
            .map_err(|e| format!("python3: {e} (apt-get install python3 python3-venv)"))?;
        if !o.status.success() {
            return Err(format!(
                "python3 -m venv: {} (apt-get install python3-venv)",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    let o = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "pip install {}: {}",
            packages.join(" "),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(python)
}

/// An exclusive lock on a file (created), held while the guard lives.
struct FileLock(std::fs::File);

impl FileLock {
    fn take(path: &Path) -> Result<Self, String> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.lock()
            .map_err(|e| format!("locking {}: {e}", path.display()))?;
        Ok(Self(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
