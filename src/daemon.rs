//! The running daemon: the HTTP listener (webhooks, health) on top of the pipeline.
//!
//! Shutdown, in order: new webhook requests are answered 503 and `/readyz` turns unready (the
//! listener stays open, so load balancers see why); the postgres sources stop reading, wait for
//! their events in flight and send the slot their final confirmed position; the pipeline drains
//! (events in flight reach Kafka or the DLQ, bounded by `[server] shutdown_timeout`); requests
//! in progress get their answers; then the listener closes and the producer is flushed. An
//! orderly stop acknowledges nothing it has not delivered and drops nothing it has acknowledged;
//! what is cut off by the bound is not acknowledged and is delivered again by its source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, SourceKind};
use crate::dlq::{DlqError, DlqStore};
use crate::pipeline::{Pipeline, PipelineError};
use crate::source::health::SourceHealth;
use crate::source::postgres::stream::PostgresSource;
use crate::source::webhook::dedupe::Dedupe;
use crate::source::webhook::{WebhookSource, error};
use crate::telemetry::traces::{Traces, TracesError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The dead-letter store could not be opened.
    #[error(transparent)]
    Dlq(#[from] DlqError),
    /// The OTLP trace exporter could not be set up.
    #[error(transparent)]
    Traces(#[from] TracesError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Daemon {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    pipeline: Arc<Pipeline>,
    max_in_flight: usize,
    retention: JoinHandle<()>,
    stop_sources: tokio::sync::watch::Sender<bool>,
    reloader: JoinHandle<()>,
    source_tasks: Vec<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    traces: Traces,
}

impl Daemon {
    /// Builds the pipeline, binds the listener and starts serving; spans go to
    /// `[telemetry] otlp_endpoint` when it is set.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let traces = Traces::from_config(&config.telemetry)?;
        if let Some(endpoint) = &config.telemetry.otlp_endpoint {
            info!(
                endpoint,
                sample_ratio = config.telemetry.sample_ratio,
                "sending traces over OTLP/HTTP"
            );
        }
        Daemon::start_with_traces(config, traces).await
    }

    /// [`Daemon::start`] with spans going to `traces` (tests: an in-memory exporter).
    pub async fn start_with_traces(config: Config, traces: Traces) -> Result<Daemon, StartError> {
        let dlq = Arc::new(DlqStore::open(&config.dlq.store).await?);
        let pipeline = Arc::new(
            Pipeline::new(&config)?
                .with_dlq(Arc::clone(&dlq))
                .with_traces(traces.clone()),
        );
        // Webhook deduplication remembers ids for the longest window of any source.
        let window = config
            .sources
            .values()
            .filter_map(|s| match &s.kind {
                SourceKind::Webhook(w) => Some(w.dedupe_window),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        let dedupe = if window.is_zero() {
            None
        } else {
            let micros = i64::try_from(window.as_micros()).unwrap_or(i64::MAX / 2);
            Some(Dedupe::start(Arc::clone(&dlq), micros).await)
        };
        let retention = tokio::spawn(purge_periodically(
            Arc::clone(&dlq),
            config.dlq.retain,
            window,
        ));
        let health = Arc::new(SourceHealth::default());
        let draining = Arc::new(AtomicBool::new(false));
        let app = app(
            &config,
            Arc::clone(&pipeline),
            Arc::clone(&dlq),
            Arc::clone(&health),
            dedupe,
            Arc::clone(&draining),
        );
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.server.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
        let (stop_sources, sources_stopped) = tokio::sync::watch::channel(false);
        let mut source_tasks = Vec::new();
        for (name, source) in &config.sources {
            if let SourceKind::Postgres(pg) = &source.kind {
                // Three quarters of the bound drain the events, the rest is for the final
                // status update and the webhooks' answers.
                let src = PostgresSource::new(
                    name,
                    pg.clone(),
                    Arc::clone(&pipeline),
                    Arc::clone(&dlq),
                    Arc::clone(&health),
                )
                .with_stop_bound(config.server.shutdown_timeout * 3 / 4);
                source_tasks.push(tokio::spawn(src.run(sources_stopped.clone())));
            }
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let server = crate::serve::start(listener, app, config.server.http_threads, stopped)
            .map_err(|source| StartError::Listen {
                addr: config.server.listen,
                source,
            })?;
        // Create the topics we already know, so that a permissions problem shows at start.
        let warm = Arc::clone(&pipeline);
        tokio::spawn(async move {
            for topic in warm.routes().static_topics() {
                if let Err(e) = warm.sink().ensure_topic(&topic).await {
                    warn!(topic, error = %e, "could not create topic yet; will retry on first event");
                }
            }
        });
        let reloader = tokio::spawn(reload_on_signal_or_change(
            Arc::clone(&pipeline),
            config.clone(),
        ));
        info!(%addr, sources = config.sources.len(), routes = config.routes.len(), "switchyard is listening");
        Ok(Daemon {
            addr,
            stop: Some(stop),
            server,
            pipeline,
            max_in_flight: config.kafka.max_in_flight,
            retention,
            stop_sources,
            reloader,
            source_tasks,
            draining,
            traces,
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers new webhooks 503, drains events in flight (up to `timeout` in all), sends the
    /// final slot positions, answers requests in progress, closes the listener, flushes Kafka.
    pub async fn shutdown(mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.draining.store(true, Ordering::Relaxed);
        self.reloader.abort();
        let _ = self.stop_sources.send(true);
        for task in self.source_tasks.drain(..) {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("a postgres source did not stop in time");
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.pipeline.drain(remaining, self.max_in_flight).await {
            warn!(
                "events still in flight at shutdown deadline; they were not acknowledged and will be delivered again by their sources"
            );
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Requests whose events are durable answer at once; give them a moment at least.
        let grace = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(grace, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                warn!("requests still open at shutdown deadline");
                self.server.abort();
            }
        }
        self.retention.abort();
        let traces = self.traces.clone();
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        info!("switchyard stopped");
    }
}

/// The HTTP application: one POST route per webhook source (taken before the router, see
/// [`crate::serve::Front`]), health, and JSON 404/405.
pub fn app(
    config: &Config,
    pipeline: Arc<Pipeline>,
    dlq: Arc<DlqStore>,
    health: Arc<SourceHealth>,
    dedupe: Option<Arc<Dedupe>>,
    draining: Arc<AtomicBool>,
) -> crate::serve::Front {
    let mut router = Router::new();
    let mut webhooks = Vec::new();
    let mut body_limit = config.server.max_body_bytes;
    for (name, source) in &config.sources {
        let SourceKind::Webhook(wh) = &source.kind else {
            continue;
        };
        let handler = WebhookSource::new(
            name,
            wh.clone(),
            Arc::clone(&pipeline),
            config.server.ack_timeout,
            dedupe.clone(),
            Arc::clone(&draining),
        );
        body_limit = body_limit.max(wh.max_body_bytes);
        webhooks.push(handler.clone());
        let path = handler.path().to_string();
        router = router.route(
            &path,
            post(move |request: axum::extract::Request| {
                let handler = handler.clone();
                async move { handler.receive_request(request).await }
            }),
        );
    }
    let ready = Arc::clone(&pipeline);
    let ready_dlq = Arc::clone(&dlq);
    let scraped = Arc::clone(&pipeline);
    let router = router
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let dlq = Arc::clone(&dlq);
                let p = Arc::clone(&scraped);
                async move { metrics(&dlq, &p).await }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let p = Arc::clone(&ready);
                let h = Arc::clone(&health);
                let d = Arc::clone(&ready_dlq);
                let stopping = draining.load(Ordering::Relaxed);
                async move { readiness(&p, &h, &d, stopping).await }
            }),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no webhook source listens on this path".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "webhook sources accept POST only".into(),
            )
        })
        .layer(DefaultBodyLimit::max(body_limit));
    crate::serve::Front::new(router, webhooks)
}

/// Ready means: not stopping, Kafka answers, the DLQ store takes a write, and every postgres
/// source is streaming (or snapshotting, or standing by for another instance). The body names each component's state and, when not
/// ready, which ones are not (`not_ready`), with the error that says what to fix.
async fn readiness(
    pipeline: &Pipeline,
    health: &SourceHealth,
    dlq: &DlqStore,
    stopping: bool,
) -> Response {
    let (kafka, dlq) = tokio::join!(
        pipeline.sink().is_reachable(Duration::from_secs(2)),
        dlq.check_writable()
    );
    let sources = health.all();
    let mut not_ready = Vec::new();
    let mut details = Vec::new();
    if stopping {
        not_ready.push("switchyard".to_string());
        details.push("switchyard is shutting down".to_string());
    }
    if let Err(e) = &kafka {
        not_ready.push("kafka".to_string());
        details.push(format!("Kafka is not reachable: {e}"));
    }
    if let Err(e) = &dlq {
        not_ready.push("dlq".to_string());
        details.push(format!("the dead-letter store is not writable: {e}"));
    }
    for (name, h) in &sources {
        // A standby is healthy: another instance streams the slot, and this one takes over
        // when that one dies.
        if !matches!(h.state, "streaming" | "snapshotting" | "standby") {
            not_ready.push(format!("source:{name}"));
            details.push(match &h.error {
                Some(e) => format!("source `{name}` is {}: {e}", h.state),
                None => format!("source `{name}` is {}", h.state),
            });
        }
    }
    let mut body = json!({
        "status": if not_ready.is_empty() { "ready" } else { "not_ready" },
        "kafka": kafka.err().unwrap_or_else(|| "ok".into()),
        "dlq": dlq.err().map(|e| e.to_string()).unwrap_or_else(|| "ok".into()),
        "sources": sources,
    });
    if not_ready.is_empty() {
        return axum::Json(body).into_response();
    }
    // The error fields every error answer has, beside the component states.
    let detail = details.join("; ");
    body["not_ready"] = json!(not_ready);
    body["error"] = json!("not_ready");
    body["detail"] = json!(detail);
    body["message"] = json!(detail);
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// Reloads the routes from the configuration file: a valid file replaces the route table
/// atomically (events already routed keep the old one, the next event uses the new one); an
/// invalid file is logged with every error and the running table stays. Sources and the
/// schema registry settings are not reloaded: a change to `[sources]` or `[schema_registry]`
/// is reported and needs a restart.
pub fn reload(pipeline: &Pipeline, running: &Config) -> Result<usize, String> {
    let new = Config::load(&running.path).map_err(|e| e.to_string())?;
    if format!("{:?}", new.sources) != format!("{:?}", running.sources) {
        warn!(
            "the [sources] section changed: source changes take effect after a restart; routes are reloaded now (routes of sources that do not run yet receive nothing)"
        );
    }
    if new.schema_registry != running.schema_registry {
        warn!(
            "the [schema_registry] section changed (URL, timeout or credentials): it takes effect after a restart; routes are reloaded now"
        );
    }
    pipeline.replace_routes(&new);
    Ok(new.routes.len())
}

fn count_reload(ok: bool) {
    if let Some(m) = crate::telemetry::metrics::metrics() {
        m.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }
}

/// Reloads on SIGHUP, and on file changes with `[router] watch = true`.
async fn reload_on_signal_or_change(pipeline: Arc<Pipeline>, running: Config) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; reload by restarting");
            None
        }
    };
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&running.path);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick(), if running.router.watch => {
                let now = stamp(&running.path);
                if now == last {
                    continue;
                }
                last = now;
                "file changed"
            }
        };
        match reload(&pipeline, &running) {
            Ok(n) => {
                count_reload(true);
                info!(
                    trigger = why,
                    routes = n,
                    "configuration reloaded: the new route table is in force"
                );
            }
            Err(errors) => {
                count_reload(false);
                error!(
                    trigger = why,
                    "configuration NOT reloaded, the running routes stay in force:\n{errors}"
                );
            }
        }
    }
}

/// Purges replayed and discarded dead letters older than `retain` (pending ones stay) and
/// webhook deduplication ids older than `window`, hourly.
async fn purge_periodically(dlq: Arc<DlqStore>, retain: Duration, window: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before =
            crate::event::now_micros() - i64::try_from(retain.as_micros()).unwrap_or(i64::MAX / 2);
        match dlq.purge(before).await {
            Ok(0) => {}
            Ok(n) => info!(purged = n, "purged old replayed/discarded dead letters"),
            Err(e) => warn!(error = %e, "dead-letter retention purge failed"),
        }
        let before =
            crate::event::now_micros() - i64::try_from(window.as_micros()).unwrap_or(i64::MAX / 2);
        if let Err(e) = dlq.purge_seen(before).await {
            warn!(error = %e, "purging old webhook deduplication ids failed");
        }
    }
}

/// Prometheus metrics; the DLQ depth and the events in flight are read at each scrape.
async fn metrics(dlq: &DlqStore, pipeline: &Pipeline) -> Response {
    if let Some(m) = crate::telemetry::metrics::metrics() {
        m.in_flight
            .set(i64::try_from(pipeline.in_flight()).unwrap_or(i64::MAX));
    }
    if let (Some(m), Ok(rows)) = (crate::telemetry::metrics::metrics(), dlq.stats().await) {
        m.dlq_depth.reset();
        for status in [
            crate::dlq::Status::Pending,
            crate::dlq::Status::Replayed,
            crate::dlq::Status::Discarded,
        ] {
            let n: i64 = rows
                .iter()
                .filter(|r| r.status == status)
                .map(|r| r.count)
                .sum();
            m.dlq_entries.with_label_values(&[status.as_str()]).set(n);
        }
        for r in rows
            .iter()
            .filter(|r| r.status == crate::dlq::Status::Pending)
        {
            m.dlq_depth
                .with_label_values(&[r.route.as_str(), r.class.as_str()])
                .set(r.count);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::metrics::render(),
    )
        .into_response()
}
