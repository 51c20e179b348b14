//! A real PostgreSQL server for tests: a private cluster (`initdb` + `pg_ctl`, Debian's
//! `postgresql` package) on a free loopback port, or a server the test run already started
//! (`VMSEAL_TEST_POSTGRES`, as `scripts/test.sh` does), in which each test gets its own database.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming a running server tests may create databases on, e.g.
/// `postgres://vmseal@127.0.0.1:5433/postgres`.
pub const ENV: &str = "VMSEAL_TEST_POSTGRES";

/// A private PostgreSQL cluster, stopped (immediately) and deleted when dropped.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

/// A fresh, empty database for one test; keeps its private cluster (if any) running.
#[derive(Debug)]
pub struct PgDatabase {
    /// Connection URL, `postgres://vmseal@127.0.0.1:PORT/NAME`.
    pub url: String,
    cluster: Option<PgCluster>,
}

impl PgDatabase {
    /// A new database on the server named by `VMSEAL_TEST_POSTGRES`, or on a private cluster
    /// started for it when that is unset.
    pub fn create() -> Result<Self, String> {
        match std::env::var(ENV) {
            Ok(server) if !server.is_empty() => Ok(Self {
                url: create_database(&server)?,
                cluster: None,
            }),
            _ => {
                let cluster = PgCluster::start()?;
                Ok(Self {
                    url: create_database(&cluster.url("postgres"))?,
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// The private cluster behind this database (None on a shared server).
    pub fn cluster(&mut self) -> Option<&mut PgCluster> {
        self.cluster.as_mut()
    }
}

fn create_database(server: &str) -> Result<String, String> {
    let mut rnd = [0u8; 6];
    getrandom(&mut rnd);
    let name = format!(
        "vmseal_test_{}",
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    run(Command::new("psql")
        .arg("-X")
        .arg("-q")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(server)
        .arg("-c")
        .arg(format!("CREATE DATABASE {name}")))?;
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| format!("{ENV}={server:?} is not a postgres:// URL with a database"))?;
    Ok(format!("{base}/{name}"))
}

fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(b);
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        format!("{cmd:?}: {e} (is PostgreSQL installed? apt-get install postgresql)")
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The newest installed server's binary directory (`/usr/lib/postgresql/N/bin`).
fn server_bin() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (apt-get install postgresql)"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no PostgreSQL server under /usr/lib/postgresql".into())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command run as the cluster's owner: `postgres` when the tests run as root (the server
/// refuses to run as root), else the current user.
fn as_owner(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl PgCluster {
    /// `initdb` a new cluster (trust authentication for the `vmseal` superuser, loopback only)
    /// and start it on a free port.
    pub fn start() -> Result<Self, String> {
        let bin = server_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("vmseal-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if is_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path()))?;
        }
        run(as_owner(&bin, "initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .arg("-U")
            .arg("vmseal")
            .arg("--auth=trust")
            .arg("-E")
            .arg("UTF8")
            .arg("--no-instructions"))?;
        let mut me = Self { dir, port: 0, bin };
        me.port = free_port()?;
        me.start_again()?;
        Ok(me)
    }

    /// Start the (stopped) cluster again on its port.
    pub fn start_again(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        run(as_owner(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(d.join("data"))
            .arg("-l")
            .arg(d.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                self.port,
                d.display()
            ))
            .arg("-w")
            .arg("start"))
        .map(drop)
        .map_err(|e| format!("{e}\nlog: {}", self.log()))
    }

    /// Stop the server now (`-m immediate`: like a crash; clients see their connections drop).
    pub fn stop(&mut self) -> Result<(), String> {
        run(as_owner(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-m")
            .arg("immediate")
            .arg("-w")
            .arg("stop"))
        .map(drop)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` as the `vmseal` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://vmseal@127.0.0.1:{}/{db}", self.port)
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
