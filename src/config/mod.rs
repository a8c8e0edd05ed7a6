//! Configuration: one TOML file (default `routes.toml`) read into validated types.
//!
//! Loading happens in three steps: `${VAR}` substitution on the raw text
//! ([`interpolate`]), parsing into span-carrying serde structs ([`raw`]), and validation into the
//! types below ([`validate`]). Every step collects all of its errors, each naming
//! `file:line:column`, so a user fixes a file in one pass. Later code never re-checks.

pub(crate) mod admin;
pub(crate) mod diagnostic;
pub(crate) mod filter;
pub(crate) mod interpolate;
mod postgres;
pub(crate) mod raw;
mod route;
mod sections;
mod validate;
mod webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostic::{ConfigError, ConfigErrors};
pub use postgres::{UrlTlsError, url_tls, url_with_tls};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[server]`
    pub server: ServerConfig,
    /// `[kafka]`
    pub kafka: KafkaConfig,
    /// `[schema_registry]`
    pub schema_registry: RegistryConfig,
    /// `[dlq]`
    pub dlq: DlqConfig,
    /// `[sources.<name>]`, by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[router]`
    pub router: RouterConfig,
    /// `[telemetry]`
    pub telemetry: TelemetryConfig,
    /// `[admin]`: the admin API's and console's tokens.
    pub admin: admin::AdminConfig,
}

/// `[telemetry]`: traces.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Where spans are sent (OTLP over HTTP, protobuf; the full `/v1/traces` URL); `None`: no
    /// traces.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept, 0 to 1.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "switchyard".into(),
        }
    }
}

/// `[router]`: policies of the route table as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterConfig {
    /// What happens to an event no route takes.
    pub unmatched: Unmatched,
    /// Reload when the file changes.
    pub watch: bool,
    /// Key of `sha256` masks.
    pub mask_key: Option<Secret>,
}

/// `[router] unmatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Acknowledged and dropped, counted in `switchyard_unmatched_total{source}`.
    #[default]
    Drop,
    /// Stored in the DLQ (class `unroutable`), to be replayed once a route takes it.
    Dlq,
}

/// Default of `[server] body_timeout`.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of `[server] max_connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of `[server] max_buffered_bytes`.
pub(crate) const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Admin listener for `/metrics`, `/healthz` and `/readyz`; without it they are served on
    /// `listen` beside the webhooks.
    pub admin_listen: Option<SocketAddr>,
    /// Largest accepted request body in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// How long a webhook waits for its Kafka acknowledgement before answering 503.
    pub ack_timeout: Duration,
    /// How long an orderly stop (SIGTERM) waits for events in flight (default 30s).
    pub shutdown_timeout: Duration,
    /// Threads serving HTTP, each with its own event loop (default: one per CPU core).
    pub http_threads: usize,
    /// How long a request's headers, and then its body, may take to arrive (default 5s).
    pub body_timeout: Duration,
    /// Connections open at once (default 1024); new connections wait beyond it.
    pub max_connections: usize,
    /// Bytes the bodies of all requests in flight may hold (default 64 MiB).
    pub max_buffered_bytes: usize,
}

/// `[kafka]`: the sink.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`
    pub bootstrap_servers: String,
    /// Partitions of topics switchyard creates (default 3).
    pub partitions: i32,
    /// Replication factor of topics switchyard creates (default 1).
    pub replication_factor: i32,
    /// librdkafka `message.timeout.ms` for one produce attempt (default 20s).
    pub delivery_timeout: Duration,
    /// How long transient failures are retried before the event fails (default 5m).
    pub retry_max_elapsed: Duration,
    /// Events in flight to Kafka at once (default 10,000); sources wait beyond it.
    pub max_in_flight: usize,
    /// Extra librdkafka properties, passed as given.
    pub properties: BTreeMap<String, String>,
}

/// `[schema_registry]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Base URL.
    pub url: String,
    /// Per-request timeout (default 10s).
    pub timeout: Duration,
    /// Credentials sent with every request to the registry (none by default).
    pub auth: Option<RegistryAuth>,
}

/// How switchyard authenticates to the schema registry. Its `Debug` shows neither the
/// password or token nor the user name (for Confluent Cloud, the API key).
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// HTTP basic authentication (`username`, `password`): Confluent Cloud's API key and
    /// secret, Confluent Platform's `basic.auth.user.info`, Aiven, Redpanda.
    Basic {
        /// The user name or API key.
        username: String,
        /// The password or API secret.
        password: Secret,
    },
    /// A bearer token (`token`): `Authorization: Bearer …`.
    Bearer(Secret),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Basic { .. } => f.write_str("Basic(<redacted>)"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl RegistryAuth {
    /// The value of the `Authorization` header.
    pub fn header_value(&self) -> String {
        use base64::Engine;
        match self {
            RegistryAuth::Basic { username, password } => {
                let mut pair = format!("{username}:").into_bytes();
                pair.extend_from_slice(&password.0);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            RegistryAuth::Bearer(token) => {
                format!("Bearer {}", String::from_utf8_lossy(&token.0))
            }
        }
    }
}

/// `[dlq]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    /// Where dead letters are stored (`url`).
    pub store: DlqStoreConfig,
    /// Replayed and discarded entries older than this are purged (`retain`, default 14d).
    pub retain: Duration,
    /// `mask_payloads`: dead letters are stored with the masks of their routes applied (the
    /// raw values never reach the store; a replay sends the masked payload).
    pub mask_payloads: bool,
}

/// Where dead letters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqStoreConfig {
    /// Embedded SQLite file; relative paths were resolved against the config file's directory.
    Sqlite(PathBuf),
    /// Shared PostgreSQL store: its URL, with `sslmode` and `sslrootcert` (absolute) as
    /// written or resolved (see [`url_tls`]).
    Postgres(String),
}

/// One `[sources.<name>]` table.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The table's name.
    pub name: String,
    /// What kind of source it is.
    pub kind: SourceKind,
}

/// The source types.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// HTTP webhooks.
    Webhook(WebhookSourceConfig),
    /// PostgreSQL logical replication.
    Postgres(PostgresSourceConfig),
}

/// `type = "postgres"`
#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    /// Connection URL (may hold a password: never log it).
    pub url: String,
    /// Replication slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Captured tables: the part of the configuration a reload applies to a running source.
    pub selection: TableSelection,
    /// Heartbeat interval on idle databases.
    pub heartbeat_interval: Duration,
    /// How long a leader that stops answering keeps the slot's lock (the lock session's
    /// `idle_session_timeout`; see `source::postgres::leader`).
    pub leader_timeout: Duration,
    /// Follow each delete with a tombstone.
    pub tombstones: bool,
    /// TLS to Postgres, from `sslmode` / `sslrootcert` in the URL (removed from `url`).
    pub tls: PgTls,
    /// Copy the tables' existing rows before streaming (`snapshot = "initial"`).
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk.
    pub snapshot_chunk_rows: usize,
    /// The bytes an unchanged TOASTed value that cannot be read back is replaced by
    /// (`unavailable_value_placeholder`, `hex:` decoded; default
    /// [`DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER`]): bytea columns get these bytes, string
    /// columns their UTF-8 text.
    pub unavailable_value_placeholder: Vec<u8>,
}

/// Debezium's default `unavailable.value.placeholder`.
pub(crate) const DEFAULT_UNAVAILABLE_VALUE_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// `snapshot = "never" | "initial"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Only changes committed after the slot exists.
    Never,
    /// The rows that exist when the slot is created (op "r"), then the changes after them.
    Initial,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

/// TLS settings for both the SQL and the replication connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// The mode.
    pub mode: PgSslMode,
    /// CA certificate (PEM) for `verify-ca` / `verify-full`; relative to the config file.
    pub root_cert: Option<PathBuf>,
}

/// `schema.table`, where `*` within either name stands for any run of characters
/// (`public.*`, `public.order_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSelector {
    /// Schema (may hold `*`).
    pub schema: String,
    /// Table (may hold `*`), `None` for every table of the schema (`schema.*`).
    pub table: Option<String>,
}

impl std::fmt::Display for TableSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            self.schema,
            self.table.as_deref().unwrap_or("*")
        )
    }
}

/// Which tables a postgres source captures (`tables`, `exclude_tables`), and whether a table
/// that joins is backfilled (`snapshot_new_tables`). A reload applies it to the running source
/// (see `source::postgres::publication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSelection {
    /// Tables captured.
    pub tables: Vec<TableSelector>,
    /// Tables `tables` matches that are left out.
    pub exclude: Vec<TableSelector>,
    /// Backfill each table that joins the publication.
    pub snapshot_new_tables: bool,
}

/// `type = "webhook"`
#[derive(Debug, Clone)]
pub struct WebhookSourceConfig {
    /// URL path, starting with `/`.
    pub path: String,
    /// Signature scheme.
    pub provider: WebhookProvider,
    /// Active signing secrets (raw key bytes; Standard Webhooks' `whsec_` already decoded).
    pub secrets: Vec<Secret>,
    /// Largest accepted age (either way) of a signed timestamp.
    pub tolerance: Duration,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Requests per second above which the source answers 429.
    pub rate_limit: Option<f64>,
    /// How long accepted event ids are remembered (zero: no deduplication).
    pub dedupe_window: Duration,
    /// Request headers (lowercase) copied into the envelope.
    pub headers: Vec<String>,
    /// What to do when Kafka cannot take an event in time (default by provider:
    /// [`WhenUnavailable::default_for`]).
    pub when_unavailable: WhenUnavailable,
    /// How long a request waits for Kafka; `None`: `[server] ack_timeout` (Slack: 2 s).
    pub ack_timeout: Option<Duration>,
    /// JSON Pointer to the event id in the body.
    pub id_pointer: Option<String>,
    /// JSON Pointer to the event type in the body.
    pub type_pointer: Option<String>,
}

/// A secret: its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// When Kafka cannot take a webhook in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnavailable {
    /// 503 with `Retry-After`: the provider delivers it again.
    Reject,
    /// Stored in the DLQ (class `unavailable`) and answered 200; delivered automatically, in
    /// order, once Kafka is back (`replay::redeliver`).
    DeadLetter,
}

impl WhenUnavailable {
    /// The default of a provider: `dead_letter` for senders that do not retry or retry
    /// briefly (GitHub, Slack, Shopify), `reject` for those that retry for hours or days
    /// (Stripe, Standard Webhooks) and for unknown senders (`hmac`, `none`).
    pub(crate) fn default_for(provider: &WebhookProvider) -> WhenUnavailable {
        match provider {
            WebhookProvider::Github | WebhookProvider::Slack | WebhookProvider::Shopify => {
                WhenUnavailable::DeadLetter
            }
            _ => WhenUnavailable::Reject,
        }
    }
}

/// How webhook requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookProvider {
    /// No signature; optionally a static bearer token.
    None {
        /// `Authorization: Bearer <token>` required when set.
        token: Option<Secret>,
    },
    /// `Stripe-Signature: t=…,v1=…`.
    Stripe,
    /// `X-Hub-Signature-256: sha256=…`.
    Github,
    /// `X-Shopify-Hmac-Sha256` (base64).
    Shopify,
    /// `X-Slack-Signature: v0=…` with `X-Slack-Request-Timestamp`.
    Slack,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// A generic HMAC header.
    Hmac(HmacSpec),
}

impl WebhookProvider {
    /// The name used in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            WebhookProvider::None { .. } => "none",
            WebhookProvider::Stripe => "stripe",
            WebhookProvider::Github => "github",
            WebhookProvider::Shopify => "shopify",
            WebhookProvider::Slack => "slack",
            WebhookProvider::Standard => "standard",
            WebhookProvider::Hmac(_) => "hmac",
        }
    }
}

/// The generic HMAC scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSpec {
    /// Header carrying the signature (lowercase).
    pub header: String,
    /// Digest.
    pub algorithm: HmacAlgorithm,
    /// How the signature is written.
    pub encoding: SignatureEncoding,
    /// Text before the signature, e.g. `sha256=`.
    pub prefix: String,
    /// Header with a Unix timestamp; when set the signed content is `<timestamp>.<body>`.
    pub timestamp_header: Option<String>,
}

/// HMAC digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// SHA-1 (legacy senders).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

/// Signature encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Lowercase or uppercase hex.
    Hex,
    /// Standard base64.
    Base64,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// The source it takes events from.
    pub source: String,
    /// Topic template.
    pub topic: TopicTemplate,
    /// Only changes of these tables (`schema.table` or `table`); empty: all.
    pub tables: Vec<String>,
    /// Only these change operations (`c`, `u`, `d`, `t`); empty: all.
    pub ops: Vec<String>,
    /// Key columns instead of the primary key; empty: the primary key.
    pub key: Vec<String>,
    /// Webhooks: a JSON Pointer to the key in the body; none: the event id.
    pub key_pointer: Option<String>,
    /// Webhooks: only event types matching one of these globs; empty: all.
    pub event_types: Vec<String>,
    /// A topic with `{event_type}`: at most this many distinct topics (`max_topics`); none:
    /// bounded by `event_types` (literal types) or not dynamic.
    pub max_topics: Option<usize>,
    /// A CEL expression the event must satisfy (compiled when the file is loaded).
    pub filter: Option<String>,
    /// Field transforms applied to what this route writes.
    pub transform: Option<std::sync::Arc<Transform>>,
    /// What a definite failure (schema, encode, oversize, produce) on this route does.
    pub on_error: OnError,
    /// Webhooks: the Avro record the body is converted into (`value_schema`), read and
    /// checked at load; none: `data` is the body as a string.
    pub value_schema: Option<std::sync::Arc<crate::avro::typed::ValueSchema>>,
}

/// `on_error` of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The event goes to the DLQ and the stream goes on.
    #[default]
    Dlq,
    /// The source stops at the event (CDC: the slot holds, retried with backoff; webhooks:
    /// 503) until the cause is fixed: for routes where order matters more than progress.
    Halt,
}

/// `[routes.transform]`: applied in the order drop, mask, rename (all name the original fields).
/// For changes the fields are columns (of `before` and `after`); for webhooks they are keys of
/// the JSON body (`name` at the top level, or a JSON Pointer `/a/b`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transform {
    /// Fields left out (and out of the schema).
    pub drop: Vec<String>,
    /// Fields replaced by a keyed hash or a placeholder (their schema type becomes string).
    pub mask: Vec<(String, MaskKind)>,
    /// Fields renamed.
    pub rename: Vec<(String, String)>,
    /// The HMAC key of `sha256` masks.
    pub mask_key: Secret,
}

/// How a field is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// HMAC-SHA256 with `[router] mask_key`, hex: equal values stay equal (joins work).
    Sha256,
    /// The text `[redacted]`.
    Redact,
}

/// A topic name with `{placeholders}`, checked at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<TopicPart>,
}

/// A piece of a [`TopicTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    /// Written as is.
    Literal(String),
    /// Filled from the event.
    Field(TopicField),
}

/// The event fields a topic may name (defined with the event model).
pub use crate::event::TopicField;

impl TopicTemplate {
    /// The pieces, in order.
    pub fn parts(&self) -> &[TopicPart] {
        &self.parts
    }

    /// The topic when it has no placeholders.
    pub(crate) fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [TopicPart::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Fills the placeholders; `None` when the event lacks a field the template names.
    /// The one topic renderer: the router (per event), `check --registry`, `topics` and
    /// `lineage` all fill templates here.
    pub(crate) fn render<S: AsRef<str>>(
        &self,
        field: impl Fn(TopicField) -> Option<S>,
    ) -> Option<String> {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                TopicPart::Literal(s) => out.push_str(s),
                TopicPart::Field(f) => out.push_str(field(*f)?.as_ref()),
            }
        }
        Some(out)
    }
}

/// Characters Kafka allows in a topic name.
pub(crate) fn is_legal_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        // Bytes, not chars: any non-ASCII byte fails the test either way.
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

impl Config {
    /// Reads and validates a configuration file, reporting every problem at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read the configuration file: {e}"),
                help: Some("pass the file with -c/--config PATH".into()),
            }])
        })?;
        Self::from_str_with_env(path, &text, |name| std::env::var(name).ok())
    }

    /// Validates configuration text as if read from `path`, looking variables up with `env`.
    pub fn from_str_with_env(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        validate::load(path, text, env)
    }

    /// The directory relative paths in the file are resolved against.
    pub(crate) fn base_dir(path: &Path) -> PathBuf {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_credentials_never_show_in_debug_output() {
        let basic = RegistryAuth::Basic {
            username: "ABCDKEY123".into(),
            password: Secret(b"hunter2-secret".to_vec()),
        };
        let bearer = RegistryAuth::Bearer(Secret(b"tok-xyz".to_vec()));
        let shown = format!("{basic:?} {bearer:?} {:?}", Some(&basic));
        for hidden in ["ABCDKEY123", "hunter2", "tok-xyz"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("Basic(<redacted>)") && shown.contains("Bearer(<redacted>)"));
    }
}
