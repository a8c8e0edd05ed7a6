//! Metric names and the Prometheus registry. Every metric is defined here, once.

use std::sync::LazyLock;

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Dead letters waiting (status pending), by route and error class.
pub const DLQ_DEPTH: &str = "switchyard_dlq_depth";
/// WAL bytes the replication slot holds back (server WAL end − confirmed position), by source.
pub const SLOT_LAG_BYTES: &str = "switchyard_slot_lag_bytes";
/// Rows copied by the initial snapshot since start, by source and table.
pub const SNAPSHOT_ROWS_TOTAL: &str = "switchyard_snapshot_rows_total";
/// How far the initial snapshot is (0 to 1, from the tables' estimated sizes), by source.
pub const SNAPSHOT_PROGRESS: &str = "switchyard_snapshot_progress_ratio";
/// 1 while a source works (connecting, snapshotting, streaming), 0 while it fails.
pub const SOURCE_UP: &str = "switchyard_source_up";
/// Webhook requests answered, by source and HTTP status.
pub const WEBHOOK_REQUESTS_TOTAL: &str = "switchyard_webhook_requests_total";
/// Webhook requests refused by the signature check, by source and reason.
pub const WEBHOOK_REJECTED_TOTAL: &str = "switchyard_webhook_rejected_total";
/// Provider retries answered without a second record, by source.
pub const WEBHOOK_DUPLICATES_TOTAL: &str = "switchyard_webhook_duplicates_total";
/// Events no route took, dropped by `[router] unmatched = "drop"`, by source.
pub const UNMATCHED_TOTAL: &str = "switchyard_unmatched_total";
/// Configuration reloads, by result (`ok`, `error`).
pub const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
/// Dead letters written since start, by route and error class.
pub const DEAD_LETTERS_TOTAL: &str = "switchyard_dead_letters_total";

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// See [`DLQ_DEPTH`].
    pub dlq_depth: IntGaugeVec,
    /// See [`DEAD_LETTERS_TOTAL`].
    pub dead_letters: IntCounterVec,
    /// See [`SLOT_LAG_BYTES`].
    pub slot_lag: IntGaugeVec,
    /// See [`SNAPSHOT_ROWS_TOTAL`].
    pub snapshot_rows: IntCounterVec,
    /// See [`SNAPSHOT_PROGRESS`].
    pub snapshot_progress: GaugeVec,
    /// See [`SOURCE_UP`].
    pub source_up: IntGaugeVec,
    /// See [`WEBHOOK_REQUESTS_TOTAL`].
    pub webhook_requests: IntCounterVec,
    /// See [`WEBHOOK_REJECTED_TOTAL`].
    pub webhook_rejected: IntCounterVec,
    /// See [`WEBHOOK_DUPLICATES_TOTAL`].
    pub webhook_duplicates: IntCounterVec,
    /// See [`UNMATCHED_TOTAL`].
    pub unmatched: IntCounterVec,
    /// See [`CONFIG_RELOADS_TOTAL`].
    pub reloads: IntCounterVec,
}

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
        Opts::new(SNAPSHOT_ROWS_TOTAL, "Rows copied by the initial snapshot"),
        &["source", "table"],
    )?;
    let snapshot_progress = GaugeVec::new(
        Opts::new(
            SNAPSHOT_PROGRESS,
            "Initial snapshot progress, 0 to 1 (from estimated table sizes)",
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
            "Webhook requests refused by the signature check (401)",
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
    registry.register(Box::new(slot_lag.clone()))?;
    registry.register(Box::new(dlq_depth.clone()))?;
    registry.register(Box::new(dead_letters.clone()))?;
    Ok(Metrics {
        registry,
        dlq_depth,
        dead_letters,
        slot_lag,
        snapshot_rows,
        snapshot_progress,
        source_up,
        webhook_requests,
        webhook_rejected,
        webhook_duplicates,
        unmatched,
        reloads,
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
pub fn metrics() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

/// All metrics in the Prometheus text format.
pub fn render() -> String {
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
