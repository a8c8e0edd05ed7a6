//! Test harness: real components on loopback, started per test and killed by PID at drop.
//!
//! - [`postgres::PgCluster`]: a private PostgreSQL 15 cluster (`initdb` as user `postgres`),
//!   `wal_level=logical`, a fresh database per test.
//! - [`broker::Broker`]: a Tansu Kafka-protocol broker with in-memory storage.
//! - [`registry::Registry`]: a rivven-schema Confluent-compatible schema registry.
//! - [`daemon`]: switchyard itself, in-process, configured for those components.
//!
//! Binaries come from `TANSU_BIN` / `RIVVEN_SCHEMA_BIN` or `PATH` (`scripts/tools.sh` installs
//! them into `~/.cache/switchyard/tools/bin`). Every wait polls with a deadline.

#![allow(dead_code)]

pub mod broker;
pub mod cdc;
pub mod consume;
pub mod daemon;
pub mod netns;
pub mod postgres;
pub mod proxy;
pub mod registry;
pub mod webdriver;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now, and never handed out before in this process:
/// the tests run in one process, and a port given to one test (a broker it stops and starts
/// again on the same port, say) is not free for another while that test holds it unbound.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async flavour of [`wait_for`].
pub async fn wait_for_async<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when something accepts TCP connections on `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Finds a tool binary via `env_var` or `PATH`, or panics naming the install command.
pub fn find_bin(env_var: &str, name: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("HOME").map(|h| {
        PathBuf::from(h)
            .join(".cache/switchyard/tools/bin")
            .join(name)
    });
    if let Some(p) = cache.filter(|p| p.is_file()) {
        return p;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{name}` not found: set {env_var} or put it on PATH. Install it with `{install}` \
         (or run scripts/tools.sh, which caches it in ~/.cache/switchyard/tools/bin)"
    );
}

/// A child process killed (by PID) and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> ChildGuard {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log file");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child: Some(child),
            name: name.to_string(),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("{} exited with {status}:\n{tail}", self.name);
            }
        }
    }

    /// Sends `signal` (e.g. `"TERM"`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("a running process");
        let status = wait_for(&format!("{} to exit", self.name), timeout, || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch directory for one test's components, removed at drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("switchyard-test-")
        .tempdir()
        .expect("create temp dir")
}

/// The components most tests need: a scratch dir, a broker and a registry.
pub struct Stack {
    /// Scratch directory (logs, config, DLQ); removed last.
    pub dir: tempfile::TempDir,
    /// Kafka-protocol broker.
    pub broker: broker::Broker,
    /// Schema registry.
    pub registry: registry::Registry,
}

impl Stack {
    /// Starts a broker and a registry in a fresh scratch dir.
    pub fn start() -> Stack {
        let dir = scratch();
        let broker = broker::Broker::start(dir.path());
        let registry = registry::Registry::start(dir.path());
        Stack {
            dir,
            broker,
            registry,
        }
    }
}

/// The `[server]`, `[kafka]` and `[schema_registry]` sections most test configurations start
/// with: listening on `listen`, the broker at `bootstrap` (5 s delivery timeout), the registry
/// at `registry`.
pub fn config_head(listen: &str, bootstrap: &str, registry: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
[kafka]
bootstrap_servers = "{bootstrap}"
delivery_timeout = "5s"
[schema_registry]
url = "{registry}"
"#
    )
}

/// Runs `switchyard ARGS -c CONFIG`; (exit code, stdout + stderr).
pub fn run_cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let (code, stdout, stderr) = run_cli_split(config, args);
    (code, stdout + &stderr)
}

/// Runs `switchyard ARGS -c CONFIG`; (exit code, stdout, stderr).
pub fn run_cli_split(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run switchyard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `switchyard tail TOPIC --limit LIMIT --idle 20s -c CONFIG` (a consumer's view, decoded
/// through the registry); its stdout, one JSON record per line. Fails the test if it fails.
pub async fn tail(config: &std::path::Path, topic: &str, limit: usize) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "tail",
            topic,
            "--limit",
            &limit.to_string(),
            "--idle",
            "20s",
            "-c",
        ])
        .arg(config)
        .output()
        .await
        .expect("run tail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
