//! A real Kafka-protocol broker: Tansu with in-memory storage, on a loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{ChildGuard, accepts, find_bin, free_port, wait_for};

/// A running Tansu broker.
pub struct Broker {
    process: ChildGuard,
    port: u16,
    /// The port clients are told to use (a proxy's, or `port`).
    advertised: u16,
    /// The address clients are told to connect to (127.0.0.1 unless behind a proxy elsewhere).
    host: std::net::Ipv4Addr,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port and waits until it answers metadata requests.
    pub fn start(dir: &std::path::Path) -> Broker {
        Self::start_on(free_port(), dir)
    }

    /// Starts a broker on `port` (e.g. to restart one that was stopped).
    pub fn start_on(port: u16, dir: &std::path::Path) -> Broker {
        Self::start_advertising(port, port, dir)
    }

    /// Starts a broker behind a [`Proxy`](super::proxy::Proxy) that a test can cut: clients
    /// reach it only through the proxy (it advertises the proxy's address).
    pub fn start_behind_proxy(dir: &std::path::Path) -> (Broker, super::proxy::Proxy) {
        let port = free_port();
        let mut proxy_port = free_port();
        while proxy_port == port {
            proxy_port = free_port();
        }
        let proxy =
            super::proxy::Proxy::start(proxy_port, SocketAddr::from(([127, 0, 0, 1], port)));
        (Self::start_advertising(port, proxy_port, dir), proxy)
    }

    /// Starts a broker that clients reach through a [`Proxy`](super::proxy::Proxy) listening on
    /// `host` (e.g. the test's end of a link into a network namespace).
    pub fn start_behind_proxy_on(
        host: std::net::Ipv4Addr,
        dir: &std::path::Path,
    ) -> (Broker, super::proxy::Proxy) {
        let port = free_port();
        let mut proxy_port = free_port();
        while proxy_port == port {
            proxy_port = free_port();
        }
        let proxy = super::proxy::Proxy::start_on(
            host,
            proxy_port,
            SocketAddr::from(([127, 0, 0, 1], port)),
        );
        let broker = Self::start_process(port, host, proxy_port, dir);
        broker.wait_ready();
        (broker, proxy)
    }

    fn start_advertising(port: u16, advertised: u16, dir: &std::path::Path) -> Broker {
        let broker = Self::start_process(port, std::net::Ipv4Addr::LOCALHOST, advertised, dir);
        broker.wait_ready();
        broker
    }

    fn start_process(
        port: u16,
        host: std::net::Ipv4Addr,
        advertised: u16,
        dir: &std::path::Path,
    ) -> Broker {
        let bin = find_bin(
            "TANSU_BIN",
            "tansu",
            "cargo install tansu --version 0.6.0 --features dynostore",
        );
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://{host}:{advertised}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised_url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .env("RUST_LOG", "warn");
        let log = dir.join(format!("tansu-{port}.log"));
        let mut process = ChildGuard::spawn("tansu", cmd, log.clone());
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for("tansu to listen", Duration::from_secs(30), || {
            process.assert_running();
            accepts(addr).then_some(())
        });
        Broker {
            process,
            port,
            advertised,
            host,
            log,
        }
    }

    fn wait_ready(&self) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .expect("metadata client");
        wait_for("tansu to answer metadata", Duration::from_secs(30), || {
            consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .ok()
                .filter(|m| !m.brokers().is_empty())
                .map(|_| ())
        });
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.advertised)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (SIGKILL). In-memory storage: its data is gone.
    pub fn stop(&mut self) {
        self.process.kill();
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_for("tansu to stop listening", Duration::from_secs(10), || {
            (!accepts(addr)).then_some(())
        });
    }

    /// Sends `signal` to the broker: `"STOP"` freezes it with its connections open, so what
    /// was sent to it stays unanswered.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Bytes clients sent that the broker has not read yet, over all its connections (from
    /// `/proc/net/tcp`): above zero while it is stopped and a request waits for it.
    pub fn unread_bytes(&self) -> u64 {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let port = format!(":{:04X}", self.port);
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local address, remote address, state (01 = established), tx:rx queues
                let (local, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
                if !local.ends_with(&port) || *state != "01" {
                    return None;
                }
                u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
            })
            .sum()
    }

    /// The broker's log file.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }
}
