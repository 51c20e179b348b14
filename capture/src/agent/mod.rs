//! The agent's side of the protocol, shared by `vmseal-host` and `vmseal-shim`: enrollment
//! ([`enroll`]), sealing a snapshot into evidence ([`seal`]), delivering it so that neither a
//! refusal nor an outage wedges a VM ([`courier`]), and one attestation [`round`] — the verifier's
//! baseline, a nonce, a capture answering it, the seal, the submission.

pub mod courier;
pub mod enroll;
pub mod round;
pub mod seal;
pub mod standin_args;

/// The TPM library (tpm2-tss) prints its own warnings and errors on stderr unless `TSS2_LOG` says
/// otherwise; vmseal reports TPM failures itself, with their cause and fix. Unless the caller set
/// `TSS2_LOG` (to see the library's own lines), re-execute this process once with it set to
/// `all+NONE` — call this first thing in `main`, before any thread or TPM context exists. (Setting
/// the variable in-process would need `unsafe` `std::env::set_var`, and the library reads it at
/// its first log line.)
pub fn quiet_tpm_library() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os("TSS2_LOG").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("TSS2_LOG", "all+NONE")
        .exec();
    // `exec` returns only when it failed: carry on, with the library's own lines.
    eprintln!(
        "warning: cannot silence the TPM library's own log lines ({err}); set TSS2_LOG=all+NONE"
    );
}
