//! Scenario steps over the workspace's binaries, in the manner of cloud-hypervisor's
//! `test_infra`: a [`Verifier`] (the real `vmseal-verifier serve`), a [`Host`] (`vmseal-host`
//! state on its own swtpm, enrolled at a verifier), a [`Guest`] (`vmseal-shim` state) and a
//! background [`Agent`] (`vmseal-host run`), each made by a builder or one call, so that an
//! end-to-end test reads as its steps.
//!
//! Every step runs the shipped binary exactly as an operator would; a step that must succeed
//! panics with the binary's output when it does not (a failed step is a failed test). The
//! binaries are looked up beside the running test executable (`target/<profile>/`): build them
//! first with `cargo build --workspace --bins`, as `scripts/test.sh` does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Swtpm;

/// The workspace binary `name`, beside the running test (`target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps/<test>-…; the binaries sit in target/<profile>/.
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Run the workspace binary `name` with `args` to its end (the TPM library kept quiet).
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env("TSS2_LOG", "all+NONE")
        .output()
        .unwrap_or_else(|e| panic!("{name} {args:?}: {e}"))
}

/// What a run printed: its standard output, then its standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `o`, which must have succeeded (else the test fails with what it printed).
pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// The JSON values a run printed on standard output, one after the other (`--json` streams).
pub fn json_stream(stdout: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<serde_json::Value>()
        .map(|v| v.expect("a JSON value"))
        .collect()
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Until something listens on loopback `port` (at most five seconds).
pub fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `f` in `dir`, as a string (for command lines).
pub fn path_in(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

/// The micro-VM's capture policy shipped with the host (`host/policies/micro-vm.toml`).
pub fn micro_vm_policy() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host/policies/micro-vm.toml")
        .display()
        .to_string()
}

/// A running `vmseal-verifier serve`, stopped when dropped.
#[derive(Debug)]
pub struct Verifier {
    child: std::sync::Mutex<Option<Child>>,
    state: String,
    args: std::sync::Mutex<Vec<String>>,
    port: u16,
    listen_by_env: bool,
    config: Option<String>,
}

/// How [`Verifier::builder`] starts the service.
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    state: String,
    args: Vec<String>,
    init: bool,
    port: Option<u16>,
    listen_by_env: bool,
    config: Option<String>,
    init_args: Vec<String>,
}

impl VerifierBuilder {
    /// More `serve` options.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// More `init` options (`--name 10.0.2.2`: a name the server certificate must carry).
    pub fn init_args(mut self, args: &[&str]) -> Self {
        self.init_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Serve a state made before (no `init`).
    pub fn existing(mut self) -> Self {
        self.init = false;
        self
    }

    /// Listen on this loopback port (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Say where to listen in `VMSEAL_LISTEN`, as an operator's unit file would, instead of
    /// `--listen`.
    pub fn listen_by_env(mut self) -> Self {
        self.listen_by_env = true;
        self
    }

    /// Serve from the configuration file `path` (`serve --config PATH`, its state as the file
    /// says) instead of `--state`.
    pub fn config(mut self, path: &str) -> Self {
        self.config = Some(path.to_owned());
        self
    }

    /// `vmseal-verifier init --state STATE` (unless [`existing`](Self::existing)) with the root
    /// CA's key then taken offline — moved out of the state, as in production — and `serve`,
    /// once it accepts connections.
    pub fn start(self) -> Verifier {
        if self.init {
            let mut a = vec!["init", "--state", &self.state];
            a.extend(self.init_args.iter().map(String::as_str));
            ok(run("vmseal-verifier", &a));
            std::fs::rename(
                format!("{}/ca.key", self.state),
                format!("{}.offline-ca.key", self.state),
            )
            .expect("taking the root CA's key offline");
        }
        let v = Verifier {
            child: Default::default(),
            port: self.port.unwrap_or_else(free_port),
            state: self.state,
            args: std::sync::Mutex::new(self.args),
            listen_by_env: self.listen_by_env,
            config: self.config,
        };
        v.serve();
        v
    }
}

impl Verifier {
    /// A verifier whose state is the directory `state`.
    pub fn builder(state: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            state: state.into(),
            args: Vec::new(),
            init: true,
            port: None,
            listen_by_env: false,
            config: None,
            init_args: Vec::new(),
        }
    }

    fn serve(&self) {
        let mut c = Command::new(bin("vmseal-verifier"));
        match &self.config {
            Some(cfg) => c.args(["serve", "--config", cfg]),
            None => c.args(["serve", "--state", &self.state]),
        };
        c.args(self.args.lock().expect("verifier args").iter());
        let listen = format!("127.0.0.1:{}", self.port);
        if self.listen_by_env {
            c.env("VMSEAL_LISTEN", listen);
        } else {
            c.args(["--listen", &listen]);
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting vmseal-verifier serve");
        *self.child.lock().expect("verifier process") = Some(child);
        wait_for_port(self.port);
    }

    /// Its URL (`https://localhost:PORT`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its state directory.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Its root CA certificate (what clients pass as `--verifier-ca`).
    pub fn ca(&self) -> String {
        format!("{}/ca.pem", self.state)
    }

    /// `vmseal-verifier admin --verifier URL --state STATE ARGS…`.
    pub fn admin(&self, args: &[&str]) -> Output {
        let url = self.url();
        let mut a = vec!["admin", "--verifier", &url, "--state", &self.state];
        a.extend_from_slice(args);
        run("vmseal-verifier", &a)
    }

    /// `register-vm --vm-id VM --host-id HOST [--policy POLICY]`, which must succeed.
    pub fn register_vm(&self, vm: &str, host: &str, policy: Option<&str>) {
        let mut a = vec!["register-vm", "--vm-id", vm, "--host-id", host];
        if let Some(p) = policy {
            a.extend_from_slice(&["--policy", p]);
        }
        ok(self.admin(&a));
    }

    /// `promote-baseline --vm-id VM --seq SEQ --baseline FILE`, which must succeed: the page
    /// hashes of the VM's snapshot SEQ (as captured, in FILE) become its golden baseline.
    pub fn promote(&self, vm: &str, seq: u64, baseline: &str) {
        let seq = seq.to_string();
        ok(self.admin(&[
            "promote-baseline",
            "--vm-id",
            vm,
            "--seq",
            &seq,
            "--baseline",
            baseline,
        ]));
    }

    /// Stop the service (kill it: a crash, as far as its clients can tell).
    pub fn stop(&self) {
        let child = self.child.lock().map(|mut c| c.take()).unwrap_or(None);
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop it and serve the same state with the same options on the same port again.
    pub fn restart(&self) {
        self.stop();
        self.serve();
    }

    /// Stop it and serve the same state on the same port with other options.
    pub fn restart_with(&self, args: &[&str]) {
        *self.args.lock().expect("verifier args") = args.iter().map(|a| (*a).to_owned()).collect();
        self.restart();
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `vmseal-verifier webhook-receiver --listen 127.0.0.1:PORT --ca CA --name ops --count 1
/// EXTRA…` (its output piped), once it listens, and the webhook URL to give the verifier
/// (`http://127.0.0.1:PORT/vmseal`).
pub fn webhook_receiver(ca: &str, extra: &[&str]) -> (Child, String) {
    let port = free_port();
    let child = Command::new(bin("vmseal-verifier"))
        .args(["webhook-receiver", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ca", ca, "--name", "ops", "--count", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vmseal-verifier webhook-receiver");
    wait_for_port(port);
    (child, format!("http://127.0.0.1:{port}/vmseal"))
}

/// `BIN enroll --state STATE` at `v` with the token (certificate, key) (EXTRA: more options).
fn enroll_with(
    bin: &str,
    state: &str,
    v: &Verifier,
    token: (&str, &str),
    extra: &[&str],
) -> Output {
    let (url, ca) = (v.url(), v.ca());
    let mut a = vec![
        "enroll",
        "--state",
        state,
        "--verifier",
        &url,
        "--verifier-ca",
        &ca,
        "--token-cert",
        token.0,
        "--token-key",
        token.1,
    ];
    a.extend_from_slice(extra);
    run(bin, &a)
}

/// A host's `vmseal-host` state on a swtpm of its own, in a temporary directory.
#[derive(Debug)]
pub struct Host {
    sw: Swtpm,
    dir: tempfile::TempDir,
    id: String,
    snp: String,
}

/// How [`Host::builder`] makes the host.
#[derive(Debug, Clone)]
pub struct HostBuilder {
    snp: String,
    id: String,
}

impl HostBuilder {
    /// `--snp` of `vmseal-host init`: `none` (TPM only, the default), `insecure-soft` (the
    /// labelled software stand-in), …
    pub fn snp(mut self, snp: &str) -> Self {
        snp.clone_into(&mut self.snp);
        self
    }

    /// Its host id (default `e2e-host`).
    pub fn id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.id);
        self
    }

    /// A fresh swtpm and `vmseal-host init --state DIR/state --tpm … --json`.
    pub fn init(self) -> Host {
        let sw = Swtpm::start().expect("starting swtpm");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = path_in(dir.path(), "state");
        let o = ok(run(
            "vmseal-host",
            &[
                "init",
                "--state",
                &state,
                "--tpm",
                &sw.tcti(),
                "--snp",
                &self.snp,
                "--host-id",
                &self.id,
                "--json",
            ],
        ));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("init --json");
        assert_eq!(j["host_id"], self.id.as_str());
        Host {
            sw,
            dir,
            id: self.id,
            snp: self.snp,
        }
    }
}

impl Host {
    /// A host with an SNP mode and an id (see [`HostBuilder`]).
    pub fn builder() -> HostBuilder {
        HostBuilder {
            snp: "none".into(),
            id: "e2e-host".into(),
        }
    }

    /// `f` in the host's directory (its state is `p("state")`).
    pub fn p(&self, f: &str) -> String {
        path_in(self.dir.path(), f)
    }

    /// Its host id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its swtpm's TCTI (what `--tpm` takes).
    pub fn tcti(&self) -> String {
        self.sw.tcti()
    }

    /// Its swtpm.
    pub fn tpm(&mut self) -> &mut Swtpm {
        &mut self.sw
    }

    /// The CA that issued its TPM's EK certificate (what a verifier takes as `--ek-roots`).
    pub fn ek_ca(&self) -> String {
        self.sw.ek_issuer_pem().display().to_string()
    }

    /// The labelled INSECURE SNP stand-in's root, made by `init --snp insecure-soft`.
    pub fn insecure_snp_root(&self) -> String {
        self.p("state/insecure-snp-ark.pem")
    }

    /// A verifier (state `p("verifier")`) that trusts this host's roots and requires them:
    /// `--require tpm --ek-roots EK_CA`, or with the labelled INSECURE SNP stand-in `--require
    /// both` and `--insecure-snp-root` its root as well. More options may follow.
    pub fn verifier(&self) -> VerifierBuilder {
        let ek = self.ek_ca();
        let b = Verifier::builder(self.p("verifier"));
        if self.snp == "insecure-soft" {
            let root = self.insecure_snp_root();
            b.args(&[
                "--require",
                "both",
                "--ek-roots",
                &ek,
                "--insecure-snp-root",
                &root,
            ])
        } else {
            b.args(&["--require", "tpm", "--ek-roots", &ek])
        }
    }

    /// A raw memory image of `pages` pages (`mem.raw`), and its path.
    pub fn image(&self, pages: usize) -> String {
        let data: Vec<u8> = (0..pages * 4096).map(|i| (i % 251) as u8).collect();
        std::fs::write(self.p("mem.raw"), data).expect("writing mem.raw");
        self.p("mem.raw")
    }

    /// `vmseal-host seal` of `mem.raw` as VM `vm` into `out` (EXTRA: more options).
    pub fn seal(&self, vm: &str, out: &str, extra: &[&str]) -> Output {
        let (img, outp, state) = (self.p("mem.raw"), self.p(out), self.p("state"));
        let mut args = vec![
            "seal", "--state", &state, "--vm-id", vm, "--image", &img, "--out", &outp,
        ];
        args.extend_from_slice(extra);
        run("vmseal-host", &args)
    }

    /// The admin of `v` makes a one-use enrollment token for this host, written as
    /// `NAME.pem` and `NAME.key` in its directory (EXTRA: more options).
    pub fn token(&self, v: &Verifier, name: &str, extra: &[&str]) {
        let (c, k) = (
            self.p(&format!("{name}.pem")),
            self.p(&format!("{name}.key")),
        );
        let mut a = vec![
            "enrollment-token",
            "--host-id",
            &self.id,
            "--out-cert",
            &c,
            "--out-key",
            &k,
        ];
        a.extend_from_slice(extra);
        ok(v.admin(&a));
    }

    /// `vmseal-host enroll` at `v` with the token `NAME.pem`/`NAME.key` (EXTRA: more options).
    pub fn enroll(&self, v: &Verifier, token: &str, extra: &[&str]) -> Output {
        let (cert, key) = (
            self.p(&format!("{token}.pem")),
            self.p(&format!("{token}.key")),
        );
        enroll_with("vmseal-host", &self.p("state"), v, (&cert, &key), extra)
    }

    /// Where `enroll` writes the agent certificate in these tests: `--agent-cert agent.pem
    /// --agent-key agent.key` in the host's directory.
    pub fn agent_cert_args(&self) -> [String; 4] {
        [
            "--agent-cert".into(),
            self.p("agent.pem"),
            "--agent-key".into(),
            self.p("agent.key"),
        ]
    }

    /// A token, then an enrollment at `v` that must succeed (EXTRA: more enroll options); the
    /// agent certificate goes where `enroll` puts it by default (in the state).
    pub fn enrol(&self, v: &Verifier, extra: &[&str]) -> Output {
        self.token(v, "token", &[]);
        ok(self.enroll(v, "token", extra))
    }

    /// [`enrol`](Self::enrol) with the agent certificate where
    /// [`agent_cert_args`](Self::agent_cert_args) says, as [`vm_run`](Self::vm_run) uses it.
    pub fn enrol_agent(&self, v: &Verifier) -> Output {
        let cert = self.agent_cert_args();
        let a: Vec<&str> = cert.iter().map(String::as_str).collect();
        self.enrol(v, &a)
    }

    /// What `vm run` and `seal --submit` take to reach `v` as this host's agent.
    pub fn agent_args(&self, v: &Verifier) -> Vec<String> {
        let mut a = vec!["--verifier".into(), v.url(), "--verifier-ca".into(), v.ca()];
        a.extend(self.agent_cert_args());
        a
    }

    /// `vmseal-host vm run --state … --vm-id VM --mem-mib 16 --ws-pages 64 --out-dir OUT --json
    /// EXTRA…` against `v`: a micro-VM captured and submitted; the appraisals it printed. It
    /// must succeed.
    pub fn vm_run(
        &self,
        v: &Verifier,
        vm: &str,
        extra: &[&str],
        out: &str,
    ) -> Vec<serde_json::Value> {
        appraisals(&ok(self.vm_run_output(Some(v), vm, extra, out)))
    }

    /// [`vm_run`](Self::vm_run), whatever became of it; without a verifier, the evidence is
    /// only written to OUT.
    pub fn vm_run_output(
        &self,
        v: Option<&Verifier>,
        vm: &str,
        extra: &[&str],
        out: &str,
    ) -> Output {
        let (st, od) = (self.p("state"), self.p(out));
        let agent = v.map(|v| self.agent_args(v)).unwrap_or_default();
        let mut a = vec![
            "vm",
            "run",
            "--state",
            &st,
            "--vm-id",
            vm,
            "--mem-mib",
            "16",
            "--ws-pages",
            "64",
            "--out-dir",
            &od,
            "--json",
        ];
        a.extend_from_slice(extra);
        a.extend(agent.iter().map(String::as_str));
        run("vmseal-host", &a)
    }

    /// `vmseal-host run` on `agent.toml` in the host's directory for `rounds` rounds: the JSON
    /// events it printed, one per capture. It must succeed.
    pub fn run_agent(&self, rounds: u32) -> Vec<serde_json::Value> {
        let (rounds, config) = (rounds.to_string(), self.p("agent.toml"));
        let o = ok(run(
            "vmseal-host",
            &["run", "--config", &config, "--rounds", &rounds, "--json"],
        ));
        json_stream(&o.stdout)
    }
}

/// The appraisals among the JSON events a run printed (`{"appraisal": …}`).
pub fn appraisals(o: &Output) -> Vec<serde_json::Value> {
    json_stream(&o.stdout)
        .into_iter()
        .filter_map(|v| v.get("appraisal").cloned())
        .collect()
}

/// A guest with the shim's state (the labelled INSECURE SNP stand-in), made by `vmseal-shim
/// init`.
#[derive(Debug)]
pub struct Guest {
    dir: tempfile::TempDir,
    state: String,
    id: String,
    init_text: String,
}

/// How [`Guest::builder`] makes the guest's state.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    id: String,
    state: Option<String>,
    args: Vec<String>,
}

impl GuestBuilder {
    /// Keep the state at `path` (default: `shim` in the guest's temporary directory).
    pub fn state(mut self, path: &str) -> Self {
        self.state = Some(path.to_owned());
        self
    }

    /// More `init` options (`--tpm`, `--insecure-policy`, …).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// `vmseal-shim init --state STATE --snp insecure-soft --id ID ARGS…`, which must succeed.
    pub fn init(self) -> Guest {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = self.state.unwrap_or_else(|| path_in(dir.path(), "shim"));
        let mut a = vec![
            "init",
            "--state",
            &state,
            "--snp",
            "insecure-soft",
            "--id",
            &self.id,
        ];
        a.extend(self.args.iter().map(String::as_str));
        let init_text = text(&ok(run("vmseal-shim", &a)));
        Guest {
            dir,
            state,
            id: self.id,
            init_text,
        }
    }
}

impl Guest {
    /// A guest whose host id is `id`.
    pub fn builder(id: &str) -> GuestBuilder {
        GuestBuilder {
            id: id.to_owned(),
            state: None,
            args: Vec::new(),
        }
    }

    /// `Guest::builder(id).args(extra).init()`.
    pub fn init(id: &str, extra: &[&str]) -> Self {
        Self::builder(id).args(extra).init()
    }

    /// What `init` printed.
    pub fn init_text(&self) -> &str {
        &self.init_text
    }

    /// `f` in the guest's temporary directory.
    pub fn p(&self, f: &str) -> String {
        path_in(self.dir.path(), f)
    }

    /// Its state directory.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The labelled INSECURE SNP stand-in's root, made by `init`.
    pub fn insecure_snp_root(&self) -> String {
        format!("{}/insecure-snp-ark.pem", self.state)
    }

    /// A one-use token for this guest from the admin of `v`, requiring the anchors `require`
    /// (`snp`, `both`), written as `t.pem` and `t.key` (EXTRA: more options).
    pub fn token(&self, v: &Verifier, require: &str, extra: &[&str]) {
        let (cert, key) = (self.p("t.pem"), self.p("t.key"));
        let mut a = vec![
            "enrollment-token",
            "--host-id",
            &self.id,
            "--require",
            require,
            "--out-cert",
            &cert,
            "--out-key",
            &key,
        ];
        a.extend_from_slice(extra);
        ok(v.admin(&a));
    }

    /// `vmseal-shim enroll` at `v` with the token.
    pub fn enroll(&self, v: &Verifier) -> Output {
        let (cert, key) = (self.p("t.pem"), self.p("t.key"));
        enroll_with("vmseal-shim", &self.state, v, (&cert, &key), &[])
    }

    /// `vmseal-shim attest` of `source` under `policy` as VM `vm`, at `v` (EXTRA: more options).
    pub fn attest(
        &self,
        v: &Verifier,
        vm: &str,
        source: &str,
        policy: &str,
        extra: &[&str],
    ) -> Output {
        let (url, ca) = (v.url(), v.ca());
        let mut a = vec![
            "attest",
            "--state",
            &self.state,
            "--verifier",
            &url,
            "--verifier-ca",
            &ca,
            "--vm-id",
            vm,
            "--source",
            source,
            "--policy",
            policy,
        ];
        a.extend_from_slice(extra);
        run("vmseal-shim", &a)
    }
}

/// `vmseal-host run --json` in the background: its events, line by line; killed when dropped.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    events: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Agent {
    /// `vmseal-host run --config CONFIG --json`.
    pub fn start(config: &str) -> Self {
        let mut child = Command::new(bin("vmseal-host"))
            .args(["run", "--config", config, "--json"])
            .env("TSS2_LOG", "all+NONE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting vmseal-host run");
        let out = child.stdout.take().expect("the agent's standard output");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Self { child, events }
    }

    /// Events until `done` says enough (at most `secs` seconds, else the test fails).
    pub fn until(
        &self,
        secs: u64,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out; events so far: {got:?}");
            if let Ok(e) = self.events.recv_timeout(left) {
                got.push(e);
            }
        }
        got
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many of `events` are VM `vm`'s, succeeded (`ok`) or failed.
pub fn count(events: &[serde_json::Value], vm: &str, ok: bool) -> usize {
    events
        .iter()
        .filter(|e| e["vm"] == vm && e["error"].is_null() == ok)
        .count()
}
