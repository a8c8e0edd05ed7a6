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
//! Bounds (`[server]`, see [`Limits`]): at most `max_connections` connections are open (the
//! acceptor waits beyond it); a request's head must arrive within `body_timeout` (also the idle
//! time of a kept-alive connection) and be at most [`MAX_HEADER_BYTES`] (431); each connection
//! reads into at most 64 KiB; the bodies are bounded by `webhook::ingress` (408, 413, 503).
//!
//! Stopping: when `stop` fires, the acceptor stops accepting and every thread stops reading
//! new requests, answers the requests in progress, closes its connections and ends; the
//! returned task ends when all threads have.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::ServerConfig;
use crate::source::webhook::ingress::Ingress;
use crate::source::webhook::{WebhookSource, dedupe};

/// The HTTP application as served: a POST to a webhook source's path goes straight to that
/// source (its path looked up in a map), everything else through the axum router (health,
/// metrics, readiness, JSON 404 and 405). The router's own route for the path would cost a
/// webhook request about a tenth of its CPU (route matching, extensions, boxed services and
/// nested futures, the body extractor).
#[derive(Clone)]
pub(crate) struct Front {
    webhooks: Arc<crate::FastMap<String, WebhookSource>>,
    router: Router,
    ingress: Arc<Ingress>,
}

impl Front {
    /// `router`, with POSTs to the `webhooks` sources' paths taken before it.
    pub(crate) fn new(router: Router, webhooks: impl IntoIterator<Item = WebhookSource>) -> Front {
        let webhooks = webhooks
            .into_iter()
            .map(|w| (w.path().to_string(), w))
            .collect();
        Front {
            webhooks: Arc::new(webhooks),
            router,
            ingress: Arc::new(Ingress::default()),
        }
    }
}

/// The bounds of the HTTP front, from `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Threads serving HTTP.
    pub threads: usize,
    /// Connections open at once; the acceptor waits beyond it (see [`start_bounded`]).
    pub max_connections: usize,
    /// How long a request's headers, and then its body, may take to arrive.
    pub body_timeout: Duration,
    /// Bytes the bodies of all requests in flight may hold.
    pub max_buffered_bytes: usize,
    /// HTTPS: every connection's TLS handshake within `body_timeout` (the admin listener with
    /// `[admin.tls]`); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Limits {
    /// The bounds `server` sets.
    pub(crate) fn of(server: &ServerConfig) -> Limits {
        Limits {
            threads: server.http_threads,
            max_connections: server.max_connections,
            body_timeout: server.body_timeout,
            max_buffered_bytes: server.max_buffered_bytes,
            tls: None,
        }
    }
}

/// Largest request head (request line and headers); hyper answers 431 beyond it.
pub(crate) const MAX_HEADER_BYTES: usize = 32 << 10;
/// Largest read buffer of one connection (hyper's default is ~400 KiB): with
/// `max_connections` this bounds what open connections hold besides the bodies.
const MAX_CONNECTION_BUFFER: usize = 64 << 10;

type WebhookAnswer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The front as one connection sees it: it knows the sender's address.
struct Served {
    front: Front,
    peer: IpAddr,
    /// The subject common name of the client's verified certificate (TLS with client CAs).
    client: Option<Arc<str>>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Served {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<WebhookAnswer, <Router as tower_service::Service<Request>>::Future>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let request = request.map(axum::body::Body::new);
        if request.method() == Method::POST
            && let Some(source) = self.front.webhooks.get(request.uri().path())
        {
            let source = source.clone();
            let ingress = Arc::clone(&self.front.ingress);
            let peer = self.peer;
            return Either::Left(Box::pin(async move {
                Ok(source.receive_from(request, Some(peer), &ingress).await)
            }));
        }
        // The router is always ready.
        let mut router = self.front.router.clone();
        let mut request = request;
        request.extensions_mut().insert(Peer(self.peer));
        if let Some(cn) = &self.client {
            request
                .extensions_mut()
                .insert(ClientCertificate(Arc::clone(cn)));
        }
        Either::Right(tower_service::Service::call(&mut router, request))
    }
}

/// The subject common name of the verified client certificate a request came with (in the
/// extensions of requests the router serves over TLS with client CAs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCertificate(pub Arc<str>);

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let cert = openssl::x509::X509::from_der(der).ok()?;
    let mut names = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME);
    let cn = names.next()?;
    // A subject with several CNs names no one.
    if names.next().is_some() {
        return None;
    }
    cn.data().to_string().ok()
}

/// A connection, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The address of the peer a request came from (in the extensions of requests the router
/// serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer(pub std::net::IpAddr);

/// Connections waiting for their thread, per thread; the acceptor waits beyond that.
const DEAL_QUEUE: usize = 256;

/// Period of each HTTP thread's idle timer (see where it is spawned).
const TIMER_TICK: Duration = Duration::from_millis(250);

/// A connection dealt to a thread, with its place among the open connections.
type Dealt = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// Serves `app` on `listener` within `limits` until `stop` fires (or its sender is dropped).
/// The task's result is the first thread's error, if any.
///
/// Beyond `max_connections` open connections the acceptor stops accepting: new connections
/// wait in the kernel's listen queue and are taken as others close (every connection closes
/// within `body_timeout` unless it keeps sending requests, so a slow sender holds its place for
/// seconds only). Waiting rather than refusing absorbs a burst without an error, and a refusal
/// would cost as much as an answer.
pub(crate) fn start_bounded(
    listener: TcpListener,
    mut app: Front,
    limits: Limits,
    stop: oneshot::Receiver<()>,
) -> io::Result<JoinHandle<io::Result<()>>> {
    app.ingress = Arc::new(Ingress::new(limits.body_timeout, limits.max_buffered_bytes));
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut deal = Vec::with_capacity(limits.threads);
    let mut done = Vec::with_capacity(limits.threads);
    for i in 0..limits.threads.max(1) {
        let (tx, rx) = mpsc::channel(DEAL_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let app = app.clone();
        let stop = stop_rx.clone();
        let body_timeout = limits.body_timeout;
        let tls = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
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
                    rt.block_on(serve_dealt(rx, app, body_timeout, tls, stop, addr))
                });
                let _ = done_tx.send(served);
            })?;
        deal.push(tx);
        done.push(done_rx);
    }
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    Ok(tokio::spawn(async move {
        let accepted = accept(&listener, &deal, &open, stop).await;
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

/// Serves the connections dealt to this thread until `stop` fires, then lets each finish the
/// request in progress and close.
async fn serve_dealt(
    mut rx: mpsc::Receiver<Dealt>,
    app: Front,
    body_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    addr: SocketAddr,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // The head of each request (the first, and the next on a kept-alive connection,
        // idle time included) within the body timeout; hyper closes the connection otherwise.
        .header_read_timeout(body_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_CONNECTION_BUFFER);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer, place) = tokio::select! {
            dealt = rx.recv() => match dealt {
                Some(d) => d,
                // The acceptor stopped: nothing more comes.
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Registered with this thread's event loop from here on.
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, %peer, %addr, "could not take over a connection; closed");
                continue;
            }
        };
        let (front, http, tls) = (app.clone(), http.clone(), tls.clone());
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _place = place;
            // With TLS, the handshake first (within the body timeout, like a request's head).
            let (io, client) = match tls {
                None => (Io::Plain(stream), None),
                Some(acceptor) => {
                    match tokio::time::timeout(body_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let client = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|leaf| common_name(leaf.as_ref()));
                            (Io::Tls(Box::new(tls)), client)
                        }
                        Ok(Err(e)) => {
                            debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "no TLS handshake within the body timeout");
                            return;
                        }
                    }
                }
            };
            let connection = http.serve_connection(
                TokioIo::new(io),
                Served {
                    front,
                    peer: peer.ip(),
                    client: client.map(Arc::from),
                },
            );
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        debug!(error = %e, %peer, "HTTP connection ended with an error");
                        count_closed(&e);
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => {}
            }
            // Stopping: the request in progress is answered, then the connection closes.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    let _ = stop.wait_for(|s| *s).await;
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Counts a connection hyper ended before a request reached the handler
/// (`switchyard_http_connections_closed_total`); a peer that went away is not counted.
fn count_closed(e: &hyper::Error) {
    let reason = if e.is_timeout() {
        "head_timeout"
    } else if e.is_parse_too_large() {
        "head_too_large"
    } else if e.is_parse() {
        "bad_request"
    } else {
        return;
    };
    if let Some(m) = crate::telemetry::metrics::metrics() {
        m.http_connections_closed.with_label_values(&[reason]).inc();
    }
}

/// How often, at most, a warning says the connection cap is reached.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Accepts connections and deals them to the threads in turn until `stop` fires, with at
/// most `open`'s permits of them open at once.
async fn accept(
    listener: &TcpListener,
    deal: &[mpsc::Sender<Dealt>],
    open: &Arc<Semaphore>,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let mut next = 0;
    let mut warned: Option<Instant> = None;
    loop {
        if open.available_permits() == 0 && warned.is_none_or(|w| w.elapsed() >= CAP_WARNING_EVERY)
        {
            warned = Some(Instant::now());
            warn!("max_connections connections are open; new connections wait until some close");
        }
        let place = tokio::select! {
            p = Arc::clone(open).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = &mut stop => return Ok(()),
        };
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
        let mut place = place;
        let mut dealt = false;
        for k in 0..deal.len() {
            let i = (next + k) % deal.len();
            match deal[i].send((stream, peer, place)).await {
                Ok(()) => {
                    next = i + 1;
                    dealt = true;
                    break;
                }
                // That thread is gone: the next one takes it.
                Err(mpsc::error::SendError((s, _, p))) => {
                    stream = s;
                    place = p;
                }
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
