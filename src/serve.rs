//! HTTP serving: one acceptor deals the connections, in turn, to `[server] http_threads`
//! threads, each running its own single-threaded event loop (a current-thread tokio runtime)
//! that serves the connections it was given, from first request to close.
//!
//! Why not one work-stealing runtime for everything: a webhook request is a few tens of
//! microseconds of work, and on the shared runtime every request also paid for waking,
//! parking and stealing between worker threads (futex calls and context switches measured at
//! about a third of a request's CPU time). A connection never changes thread here, so the
//! wake-ups of its request (socket readiness, the dedupe commit, the Kafka acknowledgement)
//! land on the thread that runs it. The rest of the daemon (CDC sources, the dedupe writer,
//! retention, reloads) stays on the main runtime.
//!
//! Stopping: when `stop` fires, the acceptor stops accepting and every thread stops reading
//! new requests, answers the requests in progress, closes its connections and ends; the
//! returned task ends when all threads have.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use futures::future::Either;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::source::webhook::{WebhookSource, dedupe};

/// The HTTP application as served: a POST to a webhook source's path goes straight to that
/// source (its path looked up in a map), everything else through the axum router (health,
/// metrics, readiness, JSON 404 and 405). The router's own route for the path would cost a
/// webhook request about a tenth of its CPU (route matching, extensions, boxed services and
/// nested futures, the body extractor).
#[derive(Clone)]
pub struct Front {
    webhooks: Arc<crate::FastMap<String, WebhookSource>>,
    router: Router,
}

impl Front {
    /// `router`, with POSTs to the `webhooks` sources' paths taken before it.
    pub fn new(router: Router, webhooks: impl IntoIterator<Item = WebhookSource>) -> Front {
        let webhooks = webhooks
            .into_iter()
            .map(|w| (w.path().to_string(), w))
            .collect();
        Front {
            webhooks: Arc::new(webhooks),
            router,
        }
    }
}

type WebhookAnswer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl tower_service::Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<WebhookAnswer, <Router as tower_service::Service<Request>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is a webhook source.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() == Method::POST
            && let Some(source) = self.webhooks.get(request.uri().path())
        {
            let source = source.clone();
            return Either::Left(Box::pin(async move {
                Ok(source.receive_request(request).await)
            }));
        }
        Either::Right(tower_service::Service::call(&mut self.router, request))
    }
}

/// Connections waiting for their thread, per thread; the acceptor waits beyond that.
const DEAL_QUEUE: usize = 256;

/// Period of each HTTP thread's idle timer (see where it is spawned).
const TIMER_TICK: Duration = Duration::from_millis(250);

/// The connections dealt to one thread, as an axum listener.
struct Dealt {
    rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for Dealt {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.rx.recv().await else {
                // The acceptor stopped: nothing more comes; the stop signal ends the server.
                return std::future::pending().await;
            };
            // Registered with this thread's event loop from here on.
            match TcpStream::from_std(stream) {
                Ok(s) => return (s, peer),
                Err(e) => warn!(error = %e, %peer, "could not take over a connection; closed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Serves `app` on `listener` with `threads` threads until `stop` fires (or its sender is
/// dropped). The task's result is the first thread's error, if any.
pub fn start(
    listener: TcpListener,
    app: Front,
    threads: usize,
    stop: oneshot::Receiver<()>,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut deal = Vec::with_capacity(threads);
    let mut done = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let (tx, rx) = mpsc::channel(DEAL_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        std::thread::Builder::new()
            .name(format!("switchyard-http-{i}"))
            .spawn(move || {
                // This thread commits the deduplication ids its requests accept itself, in
                // batches (see `webhook::dedupe::http_thread_runtime`).
                let served = dedupe::http_thread_runtime().and_then(|rt| {
                    // Every request arms a timer (its ack timeout). Registering a timer
                    // that expires before the time driver's next wake-up wakes the driver
                    // (a syscall, and a spurious turn of the event loop); with this
                    // ticker's sub-second timer always pending, request timers (seconds)
                    // never do.
                    rt.spawn(async {
                        let mut tick = tokio::time::interval(TIMER_TICK);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tick.tick().await;
                        }
                    });
                    rt.block_on(
                        axum::serve(
                            Dealt { rx, addr },
                            axum::ServiceExt::<Request>::into_make_service(app),
                        )
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .into_future(),
                    )
                });
                let _ = done_tx.send(served);
            })?;
        deal.push(tx);
        done.push(done_rx);
    }
    Ok(tokio::spawn(async move {
        let accepted = accept(&listener, &deal, stop).await;
        drop(deal);
        drop(listener);
        let _ = stop_tx.send(true);
        let mut result = accepted;
        for d in done {
            let served = d
                .await
                .unwrap_or_else(|_| Err(io::Error::other("an HTTP thread panicked")));
            if result.is_ok() {
                result = served;
            }
        }
        result
    }))
}

/// Accepts connections and deals them to the threads in turn until `stop` fires.
async fn accept(
    listener: &TcpListener,
    deal: &[mpsc::Sender<(std::net::TcpStream, SocketAddr)>],
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let mut next = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: wait a little rather than spin.
                    warn!(error = %e, "accepting an HTTP connection failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let mut stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, %peer, "could not hand over a connection; closed");
                continue;
            }
        };
        let mut dealt = false;
        for k in 0..deal.len() {
            let i = (next + k) % deal.len();
            match deal[i].send((stream, peer)).await {
                Ok(()) => {
                    next = i + 1;
                    dealt = true;
                    break;
                }
                // That thread is gone: the next one takes it.
                Err(mpsc::error::SendError((s, _))) => stream = s,
            }
        }
        if !dealt {
            return Err(io::Error::other("every HTTP thread has stopped"));
        }
    }
}

/// Errors of one connection (the peer gave up before it was accepted), not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
