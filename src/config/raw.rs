//! The configuration file as written: serde structs that reject unknown keys and keep spans.
//! [`super::validate`] turns them into the types the daemon uses.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Address for webhooks (and `/metrics`, `/healthz`, `/readyz` without `admin_listen`).
    pub listen: Option<Spanned<String>>,
    /// Address for `/metrics`, `/healthz` and `/readyz`, apart from the webhooks.
    pub admin_listen: Option<Spanned<String>>,
    /// Largest accepted request body: bytes, or a size such as "1MiB".
    pub max_body_size: Option<Spanned<SizeValue>>,
    /// How long a webhook request waits for the Kafka acknowledgement before 503.
    pub ack_timeout: Option<Spanned<String>>,
    /// How long SIGTERM waits for events in flight to reach Kafka or the DLQ.
    pub shutdown_timeout: Option<Spanned<String>>,
    /// Threads serving HTTP (default: the CPU cores).
    pub http_threads: Option<Spanned<i64>>,
    /// How long a request's headers, and then its body, may take to arrive ("5s"; 408).
    pub body_timeout: Option<Spanned<String>>,
    /// Connections open at once; new connections wait beyond it.
    pub max_connections: Option<Spanned<i64>>,
    /// Bytes the bodies of all requests in flight may hold ("64MiB"; 503 beyond it).
    pub max_buffered_bytes: Option<Spanned<SizeValue>>,
}

/// A size written as a number of bytes or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    /// Plain bytes.
    Bytes(u64),
    /// "512KiB", "1MiB", "1MB".
    Text(String),
}

/// `[kafka]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: Spanned<String>,
    /// Partitions of topics switchyard creates.
    pub partitions: Option<Spanned<i64>>,
    /// Replication factor of topics switchyard creates.
    pub replication_factor: Option<Spanned<i64>>,
    /// How long one produce attempt may take before it is retried ("20s").
    pub delivery_timeout: Option<Spanned<String>>,
    /// How long transient produce failures are retried before giving up ("5m").
    pub retry_max_elapsed: Option<Spanned<String>>,
    /// Upper bound on events in flight to Kafka at once.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Passed to librdkafka as given.
    #[serde(default)]
    pub properties: BTreeMap<String, Spanned<PropertyValue>>,
}

/// A librdkafka property value: strings, integers and booleans are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum PropertyValue {
    /// `"zstd"`
    Text(String),
    /// `1048576`
    Integer(i64),
    /// `true`
    Bool(bool),
}

/// `[schema_registry]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchemaRegistry {
    /// Base URL of a Confluent-compatible registry.
    pub url: Spanned<String>,
    /// Per-request timeout ("10s").
    pub timeout: Option<Spanned<String>>,
    /// HTTP basic authentication: user name (or API key).
    pub username: Option<Spanned<String>>,
    /// HTTP basic authentication: password (or API secret).
    pub password: Option<Spanned<String>>,
    /// A bearer token.
    pub token: Option<Spanned<String>>,
}

/// `[dlq]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDlq {
    /// `sqlite://path` (relative to the config file) or `postgres://…`.
    pub url: Spanned<String>,
    /// Purge replayed and discarded entries older than this ("14d").
    pub retain: Option<Spanned<String>>,
    /// Store dead letters with their routes' masks applied.
    pub mask_payloads: Option<bool>,
}

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    /// OTLP/HTTP collector for traces, e.g. "http://otel-collector:4318"; no traces without it.
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Share of new traces kept, 0 to 1 (default 1); a sampled incoming `traceparent` is kept.
    pub sample_ratio: Option<Spanned<f64>>,
    /// The spans' `service.name` (default "switchyard").
    pub service_name: Option<Spanned<String>>,
}

/// `[router]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    /// What happens to an event no route takes: "drop" (default) or "dlq".
    pub unmatched: Option<Spanned<String>>,
    /// Reload the routes when the file changes (checked every 2 s); SIGHUP always reloads.
    pub watch: Option<bool>,
    /// Key of the `sha256` mask (an HMAC key, so hashes cannot be reversed by guessing).
    pub mask_key: Option<Spanned<String>>,
}

/// `[sources.<name>]` with `type = "webhook"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhookSource {
    /// Always "webhook" here.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// URL path the source listens on; defaults to `/webhooks/<name>`.
    pub path: Option<Spanned<String>>,
    /// Signature scheme: stripe, github, shopify, slack, standard, hmac, none.
    pub provider: Option<Spanned<String>>,
    /// Active signing secrets (several during a rotation).
    pub secrets: Option<Spanned<Vec<Spanned<String>>>>,
    /// Largest accepted age of a signed timestamp ("5m").
    pub tolerance: Option<Spanned<String>>,
    /// Largest accepted body for this source (default `[server].max_body_size`).
    pub max_body_size: Option<Spanned<SizeValue>>,
    /// Requests per second above which the source answers 429 ("100/s", "6000/m").
    pub rate_limit: Option<Spanned<String>>,
    /// How long an accepted event id is remembered to drop provider retries ("24h"; "0s": off).
    pub dedupe_window: Option<Spanned<String>>,
    /// Request headers copied into the envelope's `headers` map (allow-list); never a
    /// credential or signature header.
    pub headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// When Kafka cannot take an event in time: "reject" (503, the provider retries) or
    /// "dead_letter" (stored in the DLQ, answered 200).
    pub when_unavailable: Option<Spanned<String>>,
    /// How long a request waits for Kafka before `when_unavailable` applies (default
    /// `[server] ack_timeout`; Slack: "2s", under its 3 s limit).
    pub ack_timeout: Option<Spanned<String>>,
    /// `hmac`: the header carrying the signature.
    pub signature_header: Option<Spanned<String>>,
    /// `hmac`: sha1, sha256 or sha512.
    pub algorithm: Option<Spanned<String>>,
    /// `hmac`: hex or base64.
    pub encoding: Option<Spanned<String>>,
    /// `hmac`: text before the signature in its header, e.g. "sha256=".
    pub prefix: Option<Spanned<String>>,
    /// `hmac`: a header with a Unix timestamp, signed as `<timestamp>.<body>`.
    pub timestamp_header: Option<Spanned<String>>,
    /// JSON Pointer to the event id in the body.
    pub id_pointer: Option<Spanned<String>>,
    /// JSON Pointer to the event type in the body.
    pub type_pointer: Option<Spanned<String>>,
    /// `none`: a static bearer token the sender must present.
    pub token: Option<Spanned<String>>,
    /// `none` without a `token`: accept requests from anyone (must be said explicitly).
    pub allow_unauthenticated: Option<Spanned<bool>>,
}

/// `[sources.<name>]` with `type = "postgres"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgresSource {
    /// Always "postgres" here.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// `postgres://user@host:port/db`; the password comes from `${ENV}`.
    pub url: Spanned<String>,
    /// Replication slot (default `switchyard_<name>`), created if missing.
    pub slot: Option<Spanned<String>>,
    /// Publication (default `switchyard_<name>`), created if missing.
    pub publication: Option<Spanned<String>>,
    /// `schema.table` entries; `*` within a name is a glob (`public.*`, `public.order_*`).
    pub tables: Spanned<Vec<Spanned<String>>>,
    /// Tables `tables` matches that are not captured (same syntax).
    pub exclude_tables: Option<Spanned<Vec<Spanned<String>>>>,
    /// Backfill a table that joins the publication on a reload or at start (default false).
    pub snapshot_new_tables: Option<bool>,
    /// "never" (default) or "initial".
    pub snapshot: Option<Spanned<String>>,
    /// Rows per snapshot chunk (default 10000): the unit of progress and of resumption.
    pub snapshot_chunk_rows: Option<Spanned<i64>>,
    /// How often to write a heartbeat on an idle database ("30s").
    pub heartbeat_interval: Option<Spanned<String>>,
    /// How long a leader that stops answering (frozen, cut off) keeps the slot's leadership
    /// lock before the server ends its session ("10s").
    pub leader_timeout: Option<Spanned<String>>,
    /// Follow each delete with a tombstone (null value, same key); default true.
    pub tombstones: Option<bool>,
    /// What an unchanged TOASTed value that cannot be read back is replaced by (Debezium's
    /// `unavailable.value.placeholder`; `hex:` followed by hex digits gives raw bytes).
    pub unavailable_value_placeholder: Option<Spanned<String>>,
}

/// Either kind of source.
#[derive(Debug)]
pub(crate) enum RawSource {
    /// `type = "webhook"`
    Webhook(Box<RawWebhookSource>),
    /// `type = "postgres"`
    Postgres(Box<RawPostgresSource>),
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    /// Unique route name.
    pub name: Spanned<String>,
    /// Name of a `[sources.<name>]` table.
    pub source: Spanned<String>,
    /// Topic, may use `{source}` `{schema}` `{table}` `{event_type}`; postgres sources default
    /// to `{source}.{schema}.{table}`.
    pub topic: Option<Spanned<String>>,
    /// Postgres sources: only these tables (`schema.table`, or `table` for any schema).
    pub tables: Option<Spanned<Vec<String>>>,
    /// Postgres sources: only these operations (`insert`, `update`, `delete`, `truncate`).
    pub ops: Option<Spanned<Vec<String>>>,
    /// Postgres sources: key columns instead of the primary key (`["email"]`); webhook
    /// sources: a JSON Pointer into the body (`"/data/object/id"`) instead of the event id.
    pub key: Option<Spanned<RouteKey>>,
    /// Webhook sources: only these event types (globs: `"payment_intent.*"`).
    pub event_types: Option<Spanned<Vec<String>>>,
    /// A topic with `{event_type}`: at most this many distinct topics (1 to 10,000); beyond
    /// them an event goes to the DLQ as `unroutable`.
    pub max_topics: Option<Spanned<i64>>,
    /// A CEL expression the event must satisfy.
    pub filter: Option<Spanned<String>>,
    /// Field transforms: `mask`, `drop`, `rename`.
    pub transform: Option<Spanned<RawTransform>>,
    /// What a definite failure on this route does: "dlq" (default) or "halt".
    pub on_error: Option<Spanned<String>>,
    /// Webhook sources: an Avro record schema (`.avsc`, relative to this file) that the body
    /// is converted into, as the CloudEvent's `data`.
    pub value_schema: Option<Spanned<String>>,
}

/// `[routes.transform]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTransform {
    /// Field → "sha256" (keyed hash) or "redact".
    #[serde(default)]
    pub mask: BTreeMap<String, Spanned<String>>,
    /// Fields left out.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Field → new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

/// A route's `key`: columns (postgres) or a JSON Pointer (webhooks).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RouteKey {
    /// `"/data/object/id"`
    Pointer(String),
    /// `["email"]`
    Columns(Vec<String>),
}
