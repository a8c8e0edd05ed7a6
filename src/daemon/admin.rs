//! The admin paths: `/healthz`, `/metrics` and `/readyz`. With `[server] admin_listen` they
//! are served there and only there (the public listener answers them 404); without it they
//! stay on `listen` beside the webhooks, and the daemon warns at start.
//!
//! The admin listener runs on a thread of its own with at most [`MAX_CONNECTIONS`] connections
//! open (beyond that the next one waits in the kernel's backlog), request heads and bodies
//! within 5 s. `/readyz` answers from
//! memory ([`super::readiness`]); `/metrics` reads the dead-letter counts at each scrape.
//!
//! Tested by `admin::metrics_and_probes_move_to_the_admin_listener`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::readiness::Readiness;
use crate::pipeline::Pipeline;
use crate::pipeline::health::SourceHealth;
use crate::source::webhook::error;
use crate::store::Store;

/// Connections the admin listener keeps open at once (probes and scrapers need a handful).
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// `/healthz`, `/metrics` and `/readyz`, without fallbacks (the listener that serves them adds
/// its own).
pub(super) fn routes(
    pipeline: Arc<Pipeline>,
    dlq: Arc<Store>,
    health: Arc<SourceHealth>,
    draining: Arc<AtomicBool>,
    readiness: Readiness,
) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let dlq = Arc::clone(&dlq);
                let p = Arc::clone(&pipeline);
                async move { metrics(&dlq, &p).await }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let answer = readiness.answer(&health, draining.load(Ordering::Relaxed));
                async move { answer }
            }),
        )
}

/// The admin listener's application: `routes` and JSON 404/405 for anything else.
pub(crate) fn app(routes: Router) -> Router {
    routes
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the admin listener serves /healthz, /metrics and /readyz, and with [admin] tokens the admin API under /api/v1 and the console under /ui".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method (see /api/v1/openapi.json)".into(),
            )
        })
}

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped), then answers the
/// requests in progress and ends. On the bounded front of the webhook listener (one thread of
/// its own, at most [`MAX_CONNECTIONS`] connections, request heads and bodies within 5 s), so
/// idle or trickling connections cannot hold the probes' places for long.
pub(crate) fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    stop: oneshot::Receiver<()>,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let limits = crate::serve::Limits {
        threads: 1,
        max_connections: MAX_CONNECTIONS,
        body_timeout: Duration::from_secs(5),
        max_buffered_bytes: 1 << 20,
        tls,
    };
    crate::serve::start_bounded(listener, crate::serve::Front::new(app, []), limits, stop)
}

/// Prometheus metrics; the DLQ depth and the events in flight are read at each scrape.
async fn metrics(dlq: &Store, pipeline: &Pipeline) -> Response {
    if let Some(m) = crate::telemetry::metrics::metrics() {
        m.in_flight
            .set(i64::try_from(pipeline.in_flight()).unwrap_or(i64::MAX));
    }
    if let (Some(m), Ok(rows)) = (
        crate::telemetry::metrics::metrics(),
        dlq.dead_letters().stats().await,
    ) {
        m.dlq_depth.reset();
        for status in [
            crate::store::Status::Pending,
            crate::store::Status::Replayed,
            crate::store::Status::Discarded,
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
            .filter(|r| r.status == crate::store::Status::Pending)
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
