//! Metric names and the Prometheus registry. Every metric is defined here, once.

use std::sync::{Arc, LazyLock, RwLock};

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Dead letters waiting (status pending), by route and error class.
pub(crate) const DLQ_DEPTH: &str = "switchyard_dlq_depth";
/// WAL bytes the replication slot holds back (server WAL end − confirmed position), by source.
pub(crate) const SLOT_LAG_BYTES: &str = "switchyard_slot_lag_bytes";
/// Rows copied by the initial snapshot since start, by source and table.
pub(crate) const SNAPSHOT_ROWS_TOTAL: &str = "switchyard_snapshot_rows_total";
/// How far the initial snapshot is (0 to 1, from the tables' estimated sizes), by source.
pub(crate) const SNAPSHOT_PROGRESS: &str = "switchyard_snapshot_progress_ratio";
/// Rows an initial snapshot or a backfill still has to copy (from the table's estimate).
pub(crate) const SNAPSHOT_REMAINING: &str = "switchyard_snapshot_remaining_rows";
/// 1 while a source works (connecting, snapshotting, streaming), 0 while it fails.
pub(crate) const SOURCE_UP: &str = "switchyard_source_up";
/// How long a postgres source has been held by a transient failure (Kafka or the schema
/// registry unavailable), by source; 0 while its changes flow. Its changes wait, the slot
/// holds, nothing is dead-lettered.
pub(crate) const SOURCE_BLOCKED_SECONDS: &str = "switchyard_source_blocked_seconds";
/// Webhook requests answered, by source and HTTP status.
pub(crate) const WEBHOOK_REQUESTS_TOTAL: &str = "switchyard_webhook_requests_total";
/// Webhook requests refused before they reached Kafka, by source and reason: the signature
/// check's reasons (`missing_header`, `malformed`, `stale`, `mismatch`, `token`; 401),
/// `failure_budget` (the sender's address failed too often, 429), `rate_limited` (429),
/// `too_large` (413), `body_timeout` (408), `overloaded` (`max_buffered_bytes`, 503).
pub(crate) const WEBHOOK_REJECTED_TOTAL: &str = "switchyard_webhook_rejected_total";
/// HTTP connections the server closed before a request reached a handler, by reason
/// (`head_timeout`, `head_too_large`, `bad_request`).
pub(crate) const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "switchyard_http_connections_closed_total";
/// Provider retries answered without a second record, by source.
pub(crate) const WEBHOOK_DUPLICATES_TOTAL: &str = "switchyard_webhook_duplicates_total";
/// Events no route took, dropped by `[router] unmatched = "drop"`, by source.
pub(crate) const UNMATCHED_TOTAL: &str = "switchyard_unmatched_total";
/// Configuration reloads, by result (`ok`, `error`).
pub(crate) const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
/// Dead letters written since start, by route and error class.
pub(crate) const DEAD_LETTERS_TOTAL: &str = "switchyard_dead_letters_total";
/// Entries stored while Kafka was unavailable that the daemon sent again by itself, by source
/// and result (`delivered`, `failed`: failed for a reason of the entry, left for on-call).
pub(crate) const DLQ_REDELIVERED_TOTAL: &str = "switchyard_dlq_redelivered_total";
/// Events a source handed to the pipeline (CDC changes and messages, snapshot reads, accepted
/// webhooks), by source.
pub(crate) const EVENTS_RECEIVED_TOTAL: &str = "switchyard_events_received_total";
/// Events a route took (matched and named a topic), by route.
pub(crate) const EVENTS_ROUTED_TOTAL: &str = "switchyard_events_routed_total";
/// Records Kafka acknowledged, by topic.
pub(crate) const RECORDS_PRODUCED_TOTAL: &str = "switchyard_records_produced_total";
/// Seconds from handing a record to the producer to its delivery report (acks=all).
pub(crate) const PRODUCE_LATENCY_SECONDS: &str = "switchyard_produce_latency_seconds";
/// Seconds from the source's commit (CDC) or the request's receipt (webhooks) to the last
/// Kafka acknowledgement of the event, by source.
pub(crate) const END_TO_END_LATENCY_SECONDS: &str = "switchyard_end_to_end_latency_seconds";
/// Events taken by the pipeline and not yet delivered, dead-lettered or failed.
pub(crate) const EVENTS_IN_FLIGHT: &str = "switchyard_events_in_flight";
/// Dead letters in the store, by status (`pending`, `replayed`, `discarded`).
pub(crate) const DLQ_ENTRIES: &str = "switchyard_dlq_entries";
/// The last LSN the source confirmed to its replication slot, by source.
pub(crate) const CONFIRMED_LSN: &str = "switchyard_confirmed_lsn";
/// Schema registry requests (schema registrations), by result (`ok`, `error`).
pub(crate) const REGISTRY_REQUESTS_TOTAL: &str = "switchyard_registry_requests_total";
/// Keys and values encoded with a schema id already in the cache (no registry request).
pub(crate) const SCHEMA_CACHE_HITS_TOTAL: &str = "switchyard_schema_cache_hits_total";
/// Always 1, labelled with the version and git commit of the running binary.
pub(crate) const BUILD_INFO: &str = "switchyard_build_info";

/// Every metric name above (the dashboard and alert rules in `deploy/` use only these: a test
/// checks it).
#[cfg(test)]
const ALL: &[&str] = &[
    DLQ_DEPTH,
    SLOT_LAG_BYTES,
    SNAPSHOT_ROWS_TOTAL,
    SNAPSHOT_REMAINING,
    SNAPSHOT_PROGRESS,
    SOURCE_UP,
    SOURCE_BLOCKED_SECONDS,
    WEBHOOK_REQUESTS_TOTAL,
    WEBHOOK_REJECTED_TOTAL,
    HTTP_CONNECTIONS_CLOSED_TOTAL,
    WEBHOOK_DUPLICATES_TOTAL,
    UNMATCHED_TOTAL,
    CONFIG_RELOADS_TOTAL,
    DEAD_LETTERS_TOTAL,
    DLQ_REDELIVERED_TOTAL,
    EVENTS_RECEIVED_TOTAL,
    EVENTS_ROUTED_TOTAL,
    RECORDS_PRODUCED_TOTAL,
    PRODUCE_LATENCY_SECONDS,
    END_TO_END_LATENCY_SECONDS,
    EVENTS_IN_FLIGHT,
    DLQ_ENTRIES,
    CONFIRMED_LSN,
    REGISTRY_REQUESTS_TOTAL,
    SCHEMA_CACHE_HITS_TOTAL,
    BUILD_INFO,
];

/// The git commit the binary was built from (`unknown` outside a git checkout).
pub(crate) const GIT_SHA: &str = env!("SWITCHYARD_GIT_SHA");

/// The process's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    /// See [`DLQ_DEPTH`].
    pub dlq_depth: IntGaugeVec,
    /// See [`DEAD_LETTERS_TOTAL`].
    pub dead_letters: IntCounterVec,
    /// See [`DLQ_REDELIVERED_TOTAL`].
    pub dlq_redelivered: IntCounterVec,
    /// See [`SLOT_LAG_BYTES`].
    pub slot_lag: IntGaugeVec,
    /// See [`SNAPSHOT_ROWS_TOTAL`].
    pub snapshot_rows: IntCounterVec,
    /// See [`SNAPSHOT_PROGRESS`].
    pub snapshot_progress: GaugeVec,
    /// `switchyard_snapshot_remaining_rows{source}`.
    pub snapshot_remaining: IntGaugeVec,
    /// See [`SOURCE_UP`].
    pub source_up: IntGaugeVec,
    /// See [`SOURCE_BLOCKED_SECONDS`].
    pub source_blocked_seconds: GaugeVec,
    /// See [`WEBHOOK_REQUESTS_TOTAL`].
    pub webhook_requests: IntCounterVec,
    /// See [`WEBHOOK_REJECTED_TOTAL`].
    pub webhook_rejected: IntCounterVec,
    /// See [`HTTP_CONNECTIONS_CLOSED_TOTAL`].
    pub http_connections_closed: IntCounterVec,
    /// See [`WEBHOOK_DUPLICATES_TOTAL`].
    pub webhook_duplicates: IntCounterVec,
    /// See [`UNMATCHED_TOTAL`].
    pub unmatched: IntCounterVec,
    /// See [`CONFIG_RELOADS_TOTAL`].
    pub reloads: IntCounterVec,
    /// See [`EVENTS_RECEIVED_TOTAL`].
    pub events_received: IntCounterVec,
    /// See [`EVENTS_ROUTED_TOTAL`]; resolved once per route.
    pub events_routed: ByLabel<IntCounterVec>,
    /// See [`RECORDS_PRODUCED_TOTAL`]; resolved once per topic.
    pub records_produced: ByLabel<IntCounterVec>,
    /// See [`PRODUCE_LATENCY_SECONDS`].
    pub produce_latency: Histogram,
    /// See [`END_TO_END_LATENCY_SECONDS`]; resolved once per source.
    pub end_to_end_latency: ByLabel<HistogramVec>,
    /// See [`EVENTS_IN_FLIGHT`] (set at each scrape).
    pub in_flight: IntGauge,
    /// See [`DLQ_ENTRIES`] (set at each scrape).
    pub dlq_entries: IntGaugeVec,
    /// See [`CONFIRMED_LSN`].
    pub confirmed_lsn: IntGaugeVec,
    /// See [`REGISTRY_REQUESTS_TOTAL`].
    pub registry_requests: IntCounterVec,
    /// See [`SCHEMA_CACHE_HITS_TOTAL`].
    pub schema_cache_hits: IntCounter,
}

/// Distinct label values one [`ByLabel`] family keeps at most (see [`ByLabel::with`]).
pub(crate) const MAX_LABEL_VALUES: usize = 1000;
/// The label value that counts everything past [`MAX_LABEL_VALUES`].
pub(crate) const OTHER_LABEL: &str = "_other";

/// A labelled metric family whose children are resolved once per label value and kept, so the
/// hot path pays a read lock and a string hash, never a label formatting or vector search.
/// Label values must be bounded by the configuration (routes, topics, sources).
pub(crate) struct ByLabel<V: Family> {
    vec: V,
    children: RwLock<crate::FastMap<Arc<str>, <V as Family>::Child>>,
}

/// A metric vector with one label (the shape [`ByLabel`] caches).
pub(crate) trait Family {
    /// The metric of one label value.
    type Child: Clone;
    /// The child for `value`.
    fn child(&self, value: &str) -> Option<Self::Child>;
}

impl<P: MetricVecBuilder> Family for MetricVec<P> {
    type Child = P::M;
    fn child(&self, value: &str) -> Option<P::M> {
        self.get_metric_with_label_values(&[value]).ok()
    }
}

impl<V: Family> ByLabel<V> {
    fn new(vec: V) -> ByLabel<V> {
        ByLabel {
            vec,
            children: RwLock::new(crate::FastMap::default()),
        }
    }

    /// Runs `f` on the child for `value`, creating it the first time. Past
    /// [`MAX_LABEL_VALUES`] distinct values, new ones are counted under [`OTHER_LABEL`], so a
    /// topic template fed by unsigned input (`{event_type}`) cannot grow the series without end.
    pub(crate) fn with(&self, value: &str, f: impl FnOnce(&V::Child)) {
        let mut value = value;
        if let Ok(children) = self.children.read() {
            if let Some(c) = children.get(value) {
                f(c);
                return;
            }
            if children.len() >= MAX_LABEL_VALUES {
                value = OTHER_LABEL;
                if let Some(c) = children.get(value) {
                    f(c);
                    return;
                }
            }
        }
        let Some(child) = self.vec.child(value) else {
            return;
        };
        f(&child);
        if let Ok(mut children) = self.children.write() {
            children.insert(Arc::from(value), child);
        }
    }
}

/// Buckets of [`PRODUCE_LATENCY_SECONDS`]: 0.5 ms to 10 s.
const PRODUCE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of [`END_TO_END_LATENCY_SECONDS`]: 5 ms to 5 min.
const END_TO_END_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let dlq_depth = IntGaugeVec::new(
        Opts::new(
            DLQ_DEPTH,
            "Dead letters waiting for on-call (status pending)",
        ),
        &["route", "class"],
    )?;
    let dead_letters = IntCounterVec::new(
        Opts::new(
            DEAD_LETTERS_TOTAL,
            "Dead letters written since the process started",
        ),
        &["route", "class"],
    )?;
    let slot_lag = IntGaugeVec::new(
        Opts::new(SLOT_LAG_BYTES, "WAL bytes retained by the replication slot"),
        &["source"],
    )?;
    let snapshot_rows = IntCounterVec::new(
        Opts::new(
            SNAPSHOT_ROWS_TOTAL,
            "Rows copied by the initial snapshot and by backfills",
        ),
        &["source", "table"],
    )?;
    let snapshot_progress = GaugeVec::new(
        Opts::new(
            SNAPSHOT_PROGRESS,
            "Initial snapshot or backfill progress, 0 to 1 (from estimated table sizes)",
        ),
        &["source"],
    )?;
    let snapshot_remaining = IntGaugeVec::new(
        Opts::new(
            SNAPSHOT_REMAINING,
            "Rows the running initial snapshot or backfill still has to copy (estimated; 0 when none runs)",
        ),
        &["source"],
    )?;
    let source_up = IntGaugeVec::new(
        Opts::new(
            SOURCE_UP,
            "1 while the source works, 0 while it fails (see /readyz for the error)",
        ),
        &["source"],
    )?;
    registry.register(Box::new(source_up.clone()))?;
    let source_blocked_seconds = GaugeVec::new(
        Opts::new(
            SOURCE_BLOCKED_SECONDS,
            "How long the source has been held by Kafka or the schema registry being unavailable (0 while changes flow; the slot holds, nothing is dead-lettered)",
        ),
        &["source"],
    )?;
    registry.register(Box::new(source_blocked_seconds.clone()))?;
    let webhook_requests = IntCounterVec::new(
        Opts::new(
            WEBHOOK_REQUESTS_TOTAL,
            "Webhook requests answered, by HTTP status",
        ),
        &["source", "status"],
    )?;
    let webhook_rejected = IntCounterVec::new(
        Opts::new(
            WEBHOOK_REJECTED_TOTAL,
            "Webhook requests refused before they reached Kafka: signature check (401), failure_budget and rate_limited (429), too_large (413), body_timeout (408), overloaded (503)",
        ),
        &["source", "reason"],
    )?;
    let webhook_duplicates = IntCounterVec::new(
        Opts::new(
            WEBHOOK_DUPLICATES_TOTAL,
            "Provider retries answered 200 without a second record",
        ),
        &["source"],
    )?;
    registry.register(Box::new(webhook_requests.clone()))?;
    registry.register(Box::new(webhook_rejected.clone()))?;
    let http_connections_closed = IntCounterVec::new(
        Opts::new(
            HTTP_CONNECTIONS_CLOSED_TOTAL,
            "HTTP connections closed before a request reached a handler: no request head within body_timeout (head_timeout, idle kept-alive connections included), a head over 32 KiB (head_too_large, answered 431), a malformed request (bad_request)",
        ),
        &["reason"],
    )?;
    registry.register(Box::new(http_connections_closed.clone()))?;
    registry.register(Box::new(webhook_duplicates.clone()))?;
    let unmatched = IntCounterVec::new(
        Opts::new(UNMATCHED_TOTAL, "Events no route took, dropped by policy"),
        &["source"],
    )?;
    registry.register(Box::new(unmatched.clone()))?;
    let reloads = IntCounterVec::new(
        Opts::new(CONFIG_RELOADS_TOTAL, "Configuration reloads, by result"),
        &["result"],
    )?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(snapshot_rows.clone()))?;
    registry.register(Box::new(snapshot_progress.clone()))?;
    registry.register(Box::new(snapshot_remaining.clone()))?;
    registry.register(Box::new(slot_lag.clone()))?;
    registry.register(Box::new(dlq_depth.clone()))?;
    registry.register(Box::new(dead_letters.clone()))?;
    let dlq_redelivered = IntCounterVec::new(
        Opts::new(
            DLQ_REDELIVERED_TOTAL,
            "Entries stored while Kafka was unavailable that the daemon sent again by itself",
        ),
        &["source", "result"],
    )?;
    registry.register(Box::new(dlq_redelivered.clone()))?;

    let events_received = IntCounterVec::new(
        Opts::new(
            EVENTS_RECEIVED_TOTAL,
            "Events a source handed to the pipeline",
        ),
        &["source"],
    )?;
    registry.register(Box::new(events_received.clone()))?;
    let events_routed = IntCounterVec::new(
        Opts::new(EVENTS_ROUTED_TOTAL, "Events a route took"),
        &["route"],
    )?;
    registry.register(Box::new(events_routed.clone()))?;
    let records_produced = IntCounterVec::new(
        Opts::new(RECORDS_PRODUCED_TOTAL, "Records acknowledged by Kafka"),
        &["topic"],
    )?;
    registry.register(Box::new(records_produced.clone()))?;
    let produce_latency = Histogram::with_opts(
        HistogramOpts::new(
            PRODUCE_LATENCY_SECONDS,
            "Seconds from handing a record to the producer to its delivery report",
        )
        .buckets(PRODUCE_BUCKETS.to_vec()),
    )?;
    registry.register(Box::new(produce_latency.clone()))?;
    let end_to_end_latency = HistogramVec::new(
        HistogramOpts::new(
            END_TO_END_LATENCY_SECONDS,
            "Seconds from source commit or webhook receipt to the last Kafka acknowledgement",
        )
        .buckets(END_TO_END_BUCKETS.to_vec()),
        &["source"],
    )?;
    registry.register(Box::new(end_to_end_latency.clone()))?;
    let in_flight = IntGauge::new(EVENTS_IN_FLIGHT, "Events in the pipeline, not yet durable")?;
    registry.register(Box::new(in_flight.clone()))?;
    let dlq_entries = IntGaugeVec::new(
        Opts::new(DLQ_ENTRIES, "Dead letters in the store, by status"),
        &["status"],
    )?;
    registry.register(Box::new(dlq_entries.clone()))?;
    let confirmed_lsn = IntGaugeVec::new(
        Opts::new(
            CONFIRMED_LSN,
            "Last LSN confirmed to the replication slot (everything before it is durable)",
        ),
        &["source"],
    )?;
    registry.register(Box::new(confirmed_lsn.clone()))?;
    let registry_requests = IntCounterVec::new(
        Opts::new(
            REGISTRY_REQUESTS_TOTAL,
            "Schema registry requests, by result",
        ),
        &["result"],
    )?;
    registry.register(Box::new(registry_requests.clone()))?;
    let schema_cache_hits = IntCounter::new(
        SCHEMA_CACHE_HITS_TOTAL,
        "Keys and values encoded with a cached schema id (no registry request)",
    )?;
    registry.register(Box::new(schema_cache_hits.clone()))?;
    let build_info = IntGaugeVec::new(
        Opts::new(BUILD_INFO, "The running binary's version and git commit"),
        &["version", "git_sha"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_SHA])
        .set(1);
    registry.register(Box::new(build_info))?;
    Ok(Metrics {
        registry,
        dlq_depth,
        dead_letters,
        dlq_redelivered,
        slot_lag,
        snapshot_rows,
        snapshot_progress,
        snapshot_remaining,
        source_up,
        source_blocked_seconds,
        webhook_requests,
        webhook_rejected,
        http_connections_closed,
        webhook_duplicates,
        unmatched,
        reloads,
        events_received,
        events_routed: ByLabel::new(events_routed),
        records_produced: ByLabel::new(records_produced),
        produce_latency,
        end_to_end_latency: ByLabel::new(end_to_end_latency),
        in_flight,
        dlq_entries,
        confirmed_lsn,
        registry_requests,
        schema_cache_hits,
    })
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match build() {
    Ok(m) => Some(m),
    Err(e) => {
        tracing::error!(error = %e, "metrics are unavailable");
        None
    }
});

/// The process's metrics, if they could be registered.
pub(crate) fn metrics() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

/// All metrics in the Prometheus text format.
pub(crate) fn render() -> String {
    let Some(m) = metrics() else {
        return String::new();
    };
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::ALL;

    #[test]
    fn label_values_past_the_cap_are_counted_as_other() {
        let vec = prometheus::IntCounterVec::new(prometheus::Opts::new("t_total", "t"), &["topic"])
            .expect("vec");
        let family = super::ByLabel::new(vec.clone());
        for i in 0..super::MAX_LABEL_VALUES + 50 {
            family.with(&format!("topic-{i}"), |c| c.inc());
        }
        family.with("topic-0", |c| c.inc());
        let values: Vec<String> = prometheus::core::Collector::collect(&vec)[0]
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value().to_string())
            .collect();
        assert_eq!(values.len(), super::MAX_LABEL_VALUES + 1);
        assert_eq!(
            vec.with_label_values(&[super::OTHER_LABEL]).get(),
            50,
            "the 50 values past the cap"
        );
        assert_eq!(vec.with_label_values(&["topic-0"]).get(), 2);
    }

    /// The `switchyard_*` names a text mentions, histogram suffixes removed.
    fn mentioned(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("switchyard_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| ALL.contains(b))
                .unwrap_or(name);
            names.push(base.to_string());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_dashboard_and_alert_rules_use_only_metrics_that_exist() {
        for (file, text) in [
            (
                "alerts.yml",
                include_str!("../../deploy/observability/alerts.yml"),
            ),
            (
                "grafana-dashboard.json",
                include_str!("../../deploy/observability/grafana-dashboard.json"),
            ),
        ] {
            let names = mentioned(text);
            assert!(!names.is_empty(), "{file} mentions no metric");
            for name in names {
                assert!(ALL.contains(&name.as_str()), "{file}: no metric {name}");
            }
        }
    }

    #[test]
    fn every_metric_is_registered_once_with_the_switchyard_prefix() {
        assert!(ALL.iter().all(|n| n.starts_with("switchyard_")));
        let mut unique = ALL.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ALL.len());
        assert!(super::metrics().is_some(), "the registry builds");
    }
}
