//! The admin paths: `/healthz`, `/metrics` and `/readyz`. With `[server] admin_listen` they
//! are served there and only there (the public listener answers them 404); without it they
//! stay on `listen` beside the webhooks, and the daemon warns at start.
//!
//! The admin listener runs on the main runtime with at most [`MAX_CONNECTIONS`] connections
//! open (beyond that the next one waits in the kernel's backlog). `/readyz` answers from
//! memory ([`super::readiness`]); `/metrics` reads the dead-letter counts at each scrape.
//!
//! Tested by `admin::metrics_and_probes_move_to_the_admin_listener`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use super::readiness::Readiness;
use crate::dlq::DlqStore;
use crate::pipeline::Pipeline;
use crate::source::health::SourceHealth;
use crate::source::webhook::error;

/// Connections the admin listener keeps open at once (probes and scrapers need a handful).
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// `/healthz`, `/metrics` and `/readyz`, without fallbacks (the listener that serves them adds
/// its own).
pub(crate) fn routes(
    pipeline: Arc<Pipeline>,
    dlq: Arc<DlqStore>,
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
                "the admin listener serves /healthz, /metrics and /readyz".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the admin paths accept GET only".into(),
            )
        })
}

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped), then answers the
/// requests in progress and ends.
pub(crate) fn serve(
    listener: TcpListener,
    app: Router,
    stop: oneshot::Receiver<()>,
) -> JoinHandle<io::Result<()>> {
    let capped = Capped {
        listener,
        open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    tokio::spawn(async move {
        axum::serve(capped, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await
    })
}

/// A listener that holds one of a bounded number of permits per open connection.
struct Capped {
    listener: TcpListener,
    open: Arc<Semaphore>,
}

impl axum::serve::Listener for Capped {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Held, SocketAddr) {
        loop {
            let Ok(permit) = Arc::clone(&self.open).acquire_owned().await else {
                // The semaphore is never closed.
                return std::future::pending().await;
            };
            match self.listener.accept().await {
                Ok((io, peer)) => {
                    return (
                        Held {
                            io,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    // Out of file descriptors, or a peer that gave up: wait a little rather
                    // than spin.
                    warn!(error = %e, "accepting an admin connection failed; retrying in 100ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection and its permit (given back when the connection is dropped).
struct Held {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
