//! Switchyard in-process, wired to a test's broker and registry.

use std::path::Path;
use std::time::Duration;

use switchyard::config::Config;
use switchyard::daemon::Daemon;

/// A configuration for one webhook source `orders` routed to `topic`.
pub fn webhook_config(
    dir: &Path,
    bootstrap: &str,
    registry: &str,
    topic: &str,
    extra_server: &str,
) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[kafka]
bootstrap_servers = "{bootstrap}"
partitions = 3
delivery_timeout = "5s"

[schema_registry]
url = "{registry}"

[sources.orders]
type = "webhook"
path = "/webhooks/orders"
provider = "none"
allow_unauthenticated = true

[[routes]]
name = "orders-to-kafka"
source = "orders"
topic = "{topic}"
"#
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, &text).expect("write config");
    match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n{text}"),
    }
}

/// Starts switchyard and returns it with its base URL.
pub async fn start(config: Config) -> (Daemon, String) {
    // Logs only on request: SWITCHYARD_LOG=switchyard=debug scripts/test NAME
    if std::env::var_os("SWITCHYARD_LOG").is_some() {
        switchyard::telemetry::init_logging(switchyard::telemetry::LogFormat::Text);
    }
    let daemon = Daemon::start(config).await.expect("switchyard starts");
    let url = format!("http://{}", daemon.addr());
    (daemon, url)
}

/// Stops switchyard.
pub async fn stop(daemon: Daemon) {
    daemon.shutdown(Duration::from_secs(10)).await;
}

/// The parts of a test configuration that vary.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `bootstrap_servers`.
    pub bootstrap: String,
    /// Registry URL.
    pub registry: String,
    /// Topic of the `orders-to-kafka` route.
    pub topic: String,
    /// Lines under `[server]`.
    pub server: String,
    /// Lines under `[kafka.properties]`.
    pub kafka_properties: String,
    /// `[dlq].url` (default: sqlite://dlq/switchyard.db beside the file).
    pub dlq_url: Option<String>,
    /// `[server].listen` (default 127.0.0.1:0).
    pub listen: Option<String>,
}

impl Setup {
    /// `broker` and `registry`, the route to `topic`; the rest as by default.
    pub fn new(
        broker: &super::broker::Broker,
        registry: &super::registry::Registry,
        topic: &str,
    ) -> Setup {
        Setup {
            bootstrap: broker.bootstrap(),
            registry: registry.url(),
            topic: topic.into(),
            ..Setup::default()
        }
    }

    /// This setup listening on a free loopback port (a switchyard process of its own), with
    /// its base URL.
    pub fn on_free_port(self) -> (Setup, String) {
        let port = super::free_port();
        let setup = Setup {
            listen: Some(format!("127.0.0.1:{port}")),
            ..self
        };
        (setup, format!("http://127.0.0.1:{port}"))
    }
}

/// An HTTP client whose requests give up after `timeout`.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Writes `routes.toml` for `setup` into `dir` and returns its path.
pub fn write_config(dir: &Path, setup: &Setup) -> std::path::PathBuf {
    let Setup {
        bootstrap,
        registry,
        topic,
        server,
        kafka_properties,
        dlq_url,
        listen,
    } = setup;
    let listen = listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
    let dlq = dlq_url
        .clone()
        .unwrap_or_else(|| "sqlite://dlq/switchyard.db".into());
    let text = format!(
        r#"
[server]
listen = "{listen}"
{server}

[kafka]
bootstrap_servers = "{bootstrap}"
delivery_timeout = "5s"
retry_max_elapsed = "20s"

[kafka.properties]
{kafka_properties}

[schema_registry]
url = "{registry}"

[dlq]
url = "{dlq}"

[sources.orders]
type = "webhook"
provider = "none"
allow_unauthenticated = true

[[routes]]
name = "orders-to-kafka"
source = "orders"
topic = "{topic}"
"#
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts the switchyard binary on `config` (`switchyard run -c config`), logging to `log`;
/// killed by PID when dropped.
pub fn spawn_binary(config: &Path, log: std::path::PathBuf) -> crate::support::ChildGuard {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["run", "-c"]).arg(config);
    crate::support::ChildGuard::spawn("switchyard", cmd, log)
}

/// The text of `GET {url}/metrics`.
pub async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Waits (up to 60 s) until the daemon at `url` answers `/readyz` with 200.
pub async fn wait_ready(client: &reqwest::Client, url: &str) {
    crate::support::wait_for_async(
        "switchyard to be ready",
        std::time::Duration::from_secs(60),
        || async {
            client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        },
    )
    .await;
}
