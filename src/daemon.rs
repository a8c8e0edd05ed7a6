//! The running daemon: the HTTP listeners (webhooks; health, metrics and readiness on the
//! admin listener, [`admin`]) on top of the pipeline.
//!
//! Shutdown, in order: new webhook requests are answered 503 and `/readyz` turns unready (the
//! listener stays open, so load balancers see why); the postgres sources stop reading, wait for
//! their events in flight and send the slot their final confirmed position; the pipeline drains
//! (events in flight reach Kafka or the DLQ, bounded by `[server] shutdown_timeout`); requests
//! in progress get their answers; then the listener closes and the producer is flushed. An
//! orderly stop acknowledges nothing it has not delivered and drops nothing it has acknowledged;
//! what is cut off by the bound is not acknowledged and is delivered again by its source.
//!
//! Ready ([`readiness`]) means: not stopping, Kafka answers, the DLQ store takes a write, and
//! every postgres source is streaming (or snapshotting, or standing by for another instance).

mod admin;
mod readiness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, SourceKind};
use crate::pipeline::health::SourceHealth;
use crate::pipeline::{Pipeline, PipelineError};
use crate::source::postgres::publication::Selections;
use crate::source::postgres::stream::PostgresSource;
use crate::source::webhook::dedupe::Dedupe;
use crate::source::webhook::{WebhookSource, error};
use crate::store::{Store, StoreError};
use crate::telemetry::traces::{Traces, TracesError};
use readiness::Readiness;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The dead-letter store could not be opened.
    #[error(transparent)]
    Dlq(#[from] StoreError),
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
    admin: Option<AdminListener>,
    readiness: JoinHandle<()>,
    pipeline: Arc<Pipeline>,
    max_in_flight: usize,
    retention: JoinHandle<()>,
    stop_sources: tokio::sync::watch::Sender<bool>,
    reloader: JoinHandle<()>,
    source_tasks: Vec<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    traces: Traces,
}

/// The admin listener, when `[server] admin_listen` is set.
struct AdminListener {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Daemon {
    /// Builds the pipeline, binds the listeners and starts serving; spans go to
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
    pub(crate) async fn start_with_traces(
        config: Config,
        traces: Traces,
    ) -> Result<Daemon, StartError> {
        let dlq = Arc::new(Store::open(&config.dlq.store).await?);
        let pipeline = Arc::new(
            Pipeline::new(&config)?
                .with_dlq(Arc::clone(&dlq))
                .with_traces(traces.clone()),
        );
        // Webhook events stored while Kafka was unavailable go to Kafka once it is back, in
        // order, without an operator (the task ends when the pipeline drains).
        drop(
            crate::replay::redeliver::start(Arc::clone(&dlq), Arc::clone(&pipeline), &config).await,
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
        let selections = Selections::for_config(&config);
        let draining = Arc::new(AtomicBool::new(false));
        let (ready, readiness) = Readiness::start(Arc::clone(&pipeline), Arc::clone(&dlq));
        let stores_while_kafka_is_away = config.sources.values().any(|s| {
            matches!(&s.kind, SourceKind::Webhook(wh)
                if wh.when_unavailable == crate::config::WhenUnavailable::DeadLetter)
        });
        let ready = ready.with_kafka_optional(stores_while_kafka_is_away);
        let admin_routes = admin::routes(
            Arc::clone(&pipeline),
            Arc::clone(&dlq),
            Arc::clone(&health),
            Arc::clone(&draining),
            ready.clone(),
        );
        let (public_admin, admin_app) = match config.server.admin_listen {
            // The admin API and console: on the admin listener only, with tokens only.
            Some(_) if config.admin.is_on() => {
                let state = Arc::new(crate::admin::AdminState::new(
                    &config,
                    Arc::clone(&dlq),
                    Arc::clone(&pipeline),
                    selections.clone(),
                ));
                (
                    None,
                    Some(admin::app(admin_routes.merge(crate::admin::routes(state)))),
                )
            }
            Some(_) => (None, Some(admin::app(admin_routes))),
            None => {
                warn!(
                    listen = %config.server.listen,
                    "/metrics, /healthz and /readyz are served on the webhook listener: set [server] admin_listen (e.g. \"127.0.0.1:9090\") to serve them apart from the webhooks, out of the senders' reach"
                );
                (Some(admin_routes), None)
            }
        };
        let app = app(
            &config,
            Arc::clone(&pipeline),
            dedupe,
            Arc::clone(&draining),
            public_admin,
        );
        let admin = match (config.server.admin_listen, admin_app) {
            (Some(at), Some(admin_app)) => {
                let listener = TcpListener::bind(at)
                    .await
                    .map_err(|source| StartError::Listen { addr: at, source })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| StartError::Listen { addr: at, source })?;
                let (stop, stopped) = oneshot::channel::<()>();
                // `[admin.tls]`: HTTPS (checked at load; a failure here is one more reason to
                // refuse to start).
                let tls = match &config.admin.tls {
                    None => None,
                    Some(t) => Some(t.server_config().map_err(|e| StartError::Listen {
                        addr: at,
                        source: std::io::Error::other(format!("[admin.tls]: {e}")),
                    })?),
                };
                let server = admin::serve(listener, admin_app, tls, stopped)
                    .map_err(|source| StartError::Listen { addr: at, source })?;
                Some(AdminListener {
                    addr,
                    stop: Some(stop),
                    server,
                })
            }
            _ => None,
        };
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
                let mut src = PostgresSource::new(
                    name,
                    pg.clone(),
                    Arc::clone(&pipeline),
                    Arc::clone(&dlq),
                    Arc::clone(&health),
                )
                .with_stop_bound(config.server.shutdown_timeout * 3 / 4);
                if let Some(selection) = selections.get(name) {
                    src = src.with_selection(selection);
                }
                source_tasks.push(tokio::spawn(src.run(sources_stopped.clone())));
            }
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let server = crate::serve::start_bounded(
            listener,
            app,
            crate::serve::Limits::of(&config.server),
            stopped,
        )
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
            selections,
        ));
        // Answer /readyz from real outcomes from the first request on (bounded: each check
        // gives up after a few seconds).
        ready.first_round(readiness::CHECK_TIMEOUT * 2).await;
        let admin_addr = admin.as_ref().map(|a| a.addr);
        info!(%addr, admin = ?admin_addr, sources = config.sources.len(), routes = config.routes.len(), "switchyard is listening");
        Ok(Daemon {
            addr,
            stop: Some(stop),
            server,
            admin,
            readiness,
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

    /// The address the admin listener is bound to (`[server] admin_listen`), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
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
        if let Some(stop) = self.admin.as_mut().and_then(|a| a.stop.take()) {
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
        if let Some(mut admin) = self.admin.take() {
            let grace = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(1));
            match tokio::time::timeout(grace, &mut admin.server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "admin listener stopped with an error"),
                Ok(Err(e)) => warn!(error = %e, "admin listener task failed"),
                Err(_) => admin.server.abort(),
            }
        }
        self.readiness.abort();
        self.retention.abort();
        let traces = self.traces.clone();
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        info!("switchyard stopped");
    }
}

/// The public HTTP application: one POST route per webhook source (taken before the router,
/// see [`crate::serve::Front`]), the `admin` paths when there is no admin listener, and JSON
/// 404/405 for anything else.
fn app(
    config: &Config,
    pipeline: Arc<Pipeline>,
    dedupe: Option<Arc<Dedupe>>,
    draining: Arc<AtomicBool>,
    admin: Option<Router>,
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
    if let Some(admin) = admin {
        router = router.merge(admin);
    }
    let router = router
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

fn count_reload(ok: bool) {
    if let Some(m) = crate::telemetry::metrics::metrics() {
        m.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }
}

/// Reloads on SIGHUP, and on file changes with `[router] watch = true`.
async fn reload_on_signal_or_change(
    pipeline: Arc<Pipeline>,
    running: Config,
    selections: Selections,
) {
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
        match crate::reload::reload(&pipeline, &running, &selections) {
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
async fn purge_periodically(dlq: Arc<Store>, retain: Duration, window: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before =
            crate::event::now_micros() - i64::try_from(retain.as_micros()).unwrap_or(i64::MAX / 2);
        match dlq.dead_letters().purge(before).await {
            Ok(0) => {}
            Ok(n) => info!(purged = n, "purged old replayed/discarded dead letters"),
            Err(e) => warn!(error = %e, "dead-letter retention purge failed"),
        }
        let before =
            crate::event::now_micros() - i64::try_from(window.as_micros()).unwrap_or(i64::MAX / 2);
        if let Err(e) = dlq.seen_ids().purge(before).await {
            warn!(error = %e, "purging old webhook deduplication ids failed");
        }
    }
}
