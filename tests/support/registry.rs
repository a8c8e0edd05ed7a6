//! A real Confluent-compatible schema registry: rivven-schema, on a loopback port.

use std::process::Command;
use std::time::Duration;

use super::{ChildGuard, find_bin, free_port, wait_for};

/// A running schema registry.
pub struct Registry {
    _process: ChildGuard,
    port: u16,
}

impl Registry {
    /// Starts a registry on a free port and waits until `GET /subjects` answers.
    pub fn start(dir: &std::path::Path) -> Registry {
        let bin = find_bin(
            "RIVVEN_SCHEMA_BIN",
            "rivven-schema",
            "cargo install rivven-schema --version 0.0.22 --locked",
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir)
            .env("RUST_LOG", "warn");
        let mut process = ChildGuard::spawn(
            "rivven-schema",
            cmd,
            dir.join(format!("registry-{port}.log")),
        );
        let url = format!("http://127.0.0.1:{port}/subjects");
        wait_for(
            "rivven-schema to answer GET /subjects",
            Duration::from_secs(30),
            || {
                process.assert_running();
                http_get_ok(&url).then_some(())
            },
        );
        Registry {
            _process: process,
            port,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A minimal blocking HTTP GET that reports whether the answer was 200.
fn http_get_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}
