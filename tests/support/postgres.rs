//! A private PostgreSQL 15 cluster for one test: `initdb` into a temp dir as user `postgres`,
//! `wal_level=logical`, on a free loopback port; stopped (by PID) and removed at drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, wait_for};

/// A running cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    pid: Option<u32>,
    /// The server options it started with (for [`PgCluster::start_again`]).
    opts: String,
}

fn bindir() -> PathBuf {
    if let Some(p) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(p);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(o) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").is_file() {
            return p;
        }
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    assert!(
        debian.join("initdb").is_file(),
        "PostgreSQL 15 server binaries not found: install postgresql-15 or set PG_BINDIR"
    );
    debian
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a Postgres tool, as user `postgres` when we are root (initdb refuses root).
fn pg_command(bindir: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    }
}

impl PgCluster {
    /// Initialises and starts a cluster; panics with the tool's output on failure.
    pub fn start() -> PgCluster {
        Self::start_inner(false)
    }

    /// Like [`PgCluster::start`], with `ssl = on` and a server certificate for 127.0.0.1 signed
    /// by a CA made for the test (`ca.pem` in [`PgCluster::ca_cert`]). Role `tls_only` (superuser,
    /// replication) may connect over TLS only; `postgres` may connect either way.
    pub fn start_with_tls() -> PgCluster {
        Self::start_inner(true)
    }

    /// The test CA's certificate (PEM), for `sslrootcert`.
    pub fn ca_cert(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn make_certs(dir: &Path) {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=switchyard-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "san.ext",
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod key");
    }

    fn start_inner(tls: bool) -> PgCluster {
        let bindir = bindir();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        if tls {
            Self::make_certs(dir.path());
        }
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the cluster dir to postgres failed");
        }
        let out = pg_command(&bindir, "initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c wal_level=logical -c max_replication_slots=16 -c max_wal_senders=16 -c fsync=off",
            dir.path().display()
        );
        if tls {
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
                dir.path().display()
            ));
            // tls_only may not connect in plain text, for SQL or replication.
            let hba = data.join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            let rules = "hostnossl all tls_only 127.0.0.1/32 reject\nhostnossl replication tls_only 127.0.0.1/32 reject\nhostssl replication all 127.0.0.1/32 trust\n";
            std::fs::write(&hba, format!("{rules}{old}")).expect("write pg_hba.conf");
        }
        let out = pg_command(&bindir, "pg_ctl")
            .args(["-D"])
            .arg(&data)
            .args(["-w", "-t", "60", "-l"])
            .arg(dir.path().join("postgres.log"))
            .args(["-o", &opts, "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pid_file = data.join("postmaster.pid");
        let pid = wait_for("postmaster.pid", Duration::from_secs(10), || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        });
        PgCluster {
            dir,
            bindir,
            port,
            pid: Some(pid),
            opts,
        }
    }

    /// Stops the server (fast shutdown): clients are disconnected, new ones refused until
    /// [`PgCluster::start_again`].
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    /// Starts a server [`PgCluster::stop`] stopped (same port and settings).
    pub fn start_again(&self) {
        self.pg_ctl(&["-o", &self.opts, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = pg_command(&self.bindir, "pg_ctl")
            .args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.path().join("postgres.log"))
            .args(args)
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restarts the server (fast shutdown, same port and settings): clients are disconnected.
    pub fn restart(&self) {
        let out = pg_command(&self.bindir, "pg_ctl")
            .args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "60", "-m", "fast", "-l"])
            .arg(self.dir.path().join("postgres.log"))
            .arg("restart")
            .output()
            .expect("run pg_ctl restart");
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database and returns its name.
    pub async fn fresh_database(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(
            &format!("{} connect_timeout=10", self.libpq("postgres")),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test cluster");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        drop(client);
        let _ = task.await;
        name.to_string()
    }

    /// A libpq key=value connection string for `database`.
    pub fn libpq(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let stopped = pg_command(&self.bindir, "pg_ctl")
            .args(["-D"])
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !stopped && let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
