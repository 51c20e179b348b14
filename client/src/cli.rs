//! What every vmseal binary offers about itself: shell completions and a man page, generated from
//! its CLI definition (so they never drift from `--help`).

/// Shells completions are made for.
pub const SHELLS: [&str; 4] = ["bash", "zsh", "fish", "elvish"];

/// The completion script of `cmd` for `shell` (one of [`SHELLS`]).
pub fn completions(mut cmd: clap::Command, shell: &str) -> Result<Vec<u8>, String> {
    use clap_complete::Shell;
    let sh = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        "elvish" => Shell::Elvish,
        other => {
            return Err(format!(
                "no completions for shell {other:?}: use one of {}",
                SHELLS.join(", ")
            ));
        }
    };
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(sh, &mut cmd, name, &mut out);
    Ok(out)
}

/// The man page (roff) of `cmd`, with a section per subcommand.
pub fn man_page(cmd: clap::Command) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .map_err(|e| e.to_string())?;
    fn subs(c: &clap::Command, prefix: &str, out: &mut Vec<u8>) -> Result<(), String> {
        for s in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{prefix} {}", s.get_name());
            out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
            if let Some(a) = s.get_about() {
                out.extend_from_slice(format!("{a}\n").as_bytes());
            }
            let usage = s.clone().bin_name(&name).render_usage().to_string();
            out.extend_from_slice(format!(".PP\n{}\n", usage.replace('-', "\\-")).as_bytes());
            subs(s, &name, out)?;
        }
        Ok(())
    }
    subs(&cmd, cmd.get_name(), &mut out)?;
    Ok(out)
}

/// `completions SHELL` of the binary whose command line is `C`: the script, on stdout.
pub fn print_completions<C: clap::CommandFactory>(shell: &str) -> Result<(), String> {
    print(completions(C::command(), shell))
}

/// `man` of the binary whose command line is `C`: its man page, on stdout.
pub fn print_man<C: clap::CommandFactory>() -> Result<(), String> {
    print(man_page(C::command()))
}

/// Log to stderr what `VMSEAL_LOG` selects (an `EnvFilter`: `debug`, `warn,tss_esapi=debug`, …),
/// else `default`; colour only on a terminal (a log file or journal gets plain text).
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMSEAL_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The exit status of a command that ended with `r`: success, or `failure` after printing the
/// error and its causes on stderr (`error: what failed: why`).
pub fn exit_code(r: anyhow::Result<()>, failure: u8) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::error_text(e.chain()));
            std::process::ExitCode::from(failure)
        }
    }
}

/// Write generated text (completions, a man page) to stdout.
pub fn print(generated: Result<Vec<u8>, String>) -> Result<(), String> {
    let b = generated?;
    std::io::Write::write_all(&mut std::io::stdout(), &b).map_err(|e| e.to_string())
}

/// `run`: the service of an agent (the host's, the shim's) on its configuration file.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The configuration (TOML; relative paths are relative to it).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Stop after this many rounds (default: run until SIGTERM or SIGINT).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// One JSON object per capture on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where the verifier is and how to know it: `--verifier URL --verifier-ca CA` (flattened into
/// the commands of the host agent and the shim that talk to it).
#[derive(Debug, Clone, clap::Args)]
pub struct VerifierArgs {
    /// Verifier URL (https://host:port).
    #[arg(long, env = "VMSEAL_VERIFIER")]
    pub verifier: String,
    /// The verifier's CA certificate (its ca.pem).
    #[arg(long, env = "VMSEAL_VERIFIER_CA")]
    pub verifier_ca: std::path::PathBuf,
}

/// The agent certificate a client presents to the verifier: `--agent-cert`, `--agent-key`, by
/// default `agent.pem` and `agent.key` in the client's state directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentCertArgs {
    /// Agent certificate [default: STATE/agent.pem].
    #[arg(long)]
    pub agent_cert: Option<std::path::PathBuf>,
    /// Its key [default: STATE/agent.key].
    #[arg(long)]
    pub agent_key: Option<std::path::PathBuf>,
}

impl AgentCertArgs {
    /// The certificate and key, defaulting to `agent.pem` and `agent.key` in `state`.
    pub fn paths(&self, state: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            self.agent_cert
                .clone()
                .unwrap_or_else(|| state.join("agent.pem")),
            self.agent_key
                .clone()
                .unwrap_or_else(|| state.join("agent.key")),
        )
    }
}
