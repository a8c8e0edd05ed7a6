//! The webhook source: HTTP POSTs to a source's path become events.
//!
//! Order of checks, cheapest first, so a flood of forged requests costs little: declared body
//! size (413, before reading), the body read within `[server] body_timeout` (408) and within
//! the bytes all requests may buffer (`max_buffered_bytes`, 503), content type (415), signature
//! over the raw bytes (401; 429 once the sender's address has failed too often, see
//! [`limit::PeerFailures`]), the source's rate limit (429, charged only by verified requests),
//! then the body is parsed (400). Nothing that fails a check is forwarded; every refusal is
//! counted in `switchyard_webhook_rejected_total{source,reason}`.
//!
//! Invariant: a request is answered 200 only after its event is durable (every matched route
//! acknowledged by Kafka, or the event stored in the DLQ) and, with deduplication on, after its
//! id is stored. If that does not happen within `[server].ack_timeout` the answer is 503 with
//! `Retry-After` and the event's retries stop (the provider delivers it again), or with
//! `when_unavailable = "dead_letter"` the event is stored in the DLQ and answered 200. Every
//! error answer is a precise status code with a JSON body `{"error", "detail", "message"}`.

pub(crate) mod dedupe;
pub mod identity;
pub(crate) mod ingress;
pub mod limit;
pub mod verify;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::json;
use tracing::{debug, warn};

use self::dedupe::{Claim, Dedupe, Outcome};
use self::identity::{Body, BodyError};
pub use self::ingress::BodyUnread;
use self::ingress::Ingress;
use self::limit::{PeerFailures, RateLimit};
use self::verify::Verifier;
use crate::ack::Delivery;
use crate::config::{WebhookSourceConfig, WhenUnavailable};
use crate::error::ErrorClass;
use crate::event::{Event, EventId, Payload, RequestHeaders, WebhookPayload, now_micros};
use crate::pipeline::Pipeline;
use crate::telemetry::traces::{self, Traced};

/// One webhook source's request handler state.
#[derive(Clone)]
pub(crate) struct WebhookSource {
    name: Arc<str>,
    config: Arc<WebhookSourceConfig>,
    pipeline: Arc<Pipeline>,
    ack_timeout: Duration,
    verifier: Arc<Verifier>,
    /// The body fields the provider's identity is read from (read while the body is checked).
    fields: Arc<identity::Fields>,
    limit: Option<Arc<RateLimit>>,
    /// Failed signature checks per sender address (verify, then charge).
    failures: Arc<PeerFailures>,
    dedupe: Option<Arc<Dedupe>>,
    /// With `when_unavailable = "dead_letter"`: whether events of this source wait in the DLQ
    /// for Kafka (new ones are then stored behind them, see `replay::redeliver`).
    queue: Option<Arc<crate::pipeline::queues::SourceQueue>>,
    /// `switchyard_events_received_total{source}` of this source, resolved once.
    received: Option<prometheus::IntCounter>,
    /// True once the daemon is stopping: new requests are answered 503.
    draining: Arc<AtomicBool>,
}

impl WebhookSource {
    /// A handler for the source `name`; `dedupe` remembers accepted ids (when the source's
    /// window is not zero); once `draining` is true every request is answered 503.
    pub(crate) fn new(
        name: &str,
        config: WebhookSourceConfig,
        pipeline: Arc<Pipeline>,
        ack_timeout: Duration,
        dedupe: Option<Arc<Dedupe>>,
        draining: Arc<AtomicBool>,
    ) -> WebhookSource {
        let verifier = Verifier::new(
            config.provider.clone(),
            config.secrets.clone(),
            config.tolerance,
        );
        if matches!(
            config.provider,
            crate::config::WebhookProvider::None { token: None }
        ) {
            warn!(source = %name, path = %config.path, "webhook source takes unauthenticated requests (allow_unauthenticated = true): anyone who can reach it can send events; prefer a signing provider or a token");
        }
        let received = crate::telemetry::metrics::metrics()
            .and_then(|m| m.events_received.get_metric_with_label_values(&[name]).ok());
        WebhookSource {
            fields: identity::Fields::for_json(
                &config.provider,
                config.id_pointer.as_deref(),
                config.type_pointer.as_deref(),
            ),
            received,
            draining,
            queue: (config.when_unavailable == WhenUnavailable::DeadLetter)
                .then(|| pipeline.queues().get(name)),
            name: Arc::from(name),
            limit: config.rate_limit.map(|r| Arc::new(RateLimit::new(r))),
            failures: Arc::new(PeerFailures::default()),
            dedupe: dedupe.filter(|_| !config.dedupe_window.is_zero()),
            verifier: Arc::new(verifier),
            ack_timeout: config.ack_timeout.unwrap_or(ack_timeout),
            config: Arc::new(config),
            pipeline,
        }
    }

    /// The path it listens on.
    pub(crate) fn path(&self) -> &str {
        &self.config.path
    }

    /// Reads the body of `request` (at most the source's `max_body_size`) within the default
    /// `[server]` bounds and answers it (the HTTP front calls [`Self::receive_from`]).
    pub(crate) async fn receive_request(&self, request: axum::extract::Request) -> Response {
        static DEFAULT: LazyLock<Ingress> = LazyLock::new(Ingress::default);
        self.receive_from(request, None, &DEFAULT).await
    }

    /// Reads the body of `request`, sent from `peer`, within `ingress`'s bounds (at most the
    /// source's `max_body_size`) and answers it.
    pub(crate) async fn receive_from(
        &self,
        request: axum::extract::Request,
        peer: Option<IpAddr>,
        ingress: &Ingress,
    ) -> Response {
        let (parts, body) = request.into_parts();
        // The body's share of the buffer budget is held until the request is answered.
        let (body, _share) = match ingress
            .read_body(&parts.headers, body, self.config.max_body_bytes)
            .await
        {
            Ok((b, share)) => (Ok(b), Some(share)),
            Err(e) => (Err(e), None),
        };
        self.answer_from(parts.headers, body, peer).await
    }

    async fn answer_from(
        &self,
        headers: HeaderMap,
        body: Result<Bytes, BodyUnread>,
        peer: Option<IpAddr>,
    ) -> Response {
        // A span per request, continuing the sender's trace when it sent a `traceparent`.
        let span = {
            let traces = self.pipeline.traces();
            if traces.is_on() {
                traces.root(
                    "webhook",
                    SpanKind::Server,
                    traces::extract(&headers).as_ref(),
                    vec![KeyValue::new("switchyard.source", self.name.to_string())],
                )
            } else {
                Traced::none()
            }
        };
        let response = self.handle(headers, body, peer, &span).await;
        let status = response.status();
        span.set(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.fail(status.as_str());
        }
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.webhook_requests
                .with_label_values(&[&*self.name, response.status().as_str()])
                .inc();
        }
        response
    }

    async fn handle(
        &self,
        headers: HeaderMap,
        body: Result<Bytes, BodyUnread>,
        peer: Option<IpAddr>,
        span: &Traced,
    ) -> Response {
        if self.draining.load(Ordering::Relaxed) {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "switchyard is stopping; send this request again (to another instance)".into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        let body = match body {
            Ok(b) if b.len() > self.config.max_body_bytes => return self.too_large(),
            Ok(b) => b,
            Err(BodyUnread::TooLarge) => return self.too_large(),
            Err(BodyUnread::TimedOut(limit)) => {
                self.rejected("body_timeout");
                let mut r = error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {limit:?} (body_timeout); send it again, faster"
                    ),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            Err(BodyUnread::Overloaded) => {
                self.rejected("overloaded");
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the requests in progress hold all the memory switchyard may buffer (max_buffered_bytes); retry later".into(),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            Err(BodyUnread::Failed(why)) => {
                return error(StatusCode::BAD_REQUEST, "bad_body", why);
            }
        };
        let content_type = headers.get(header::CONTENT_TYPE);
        if identity::is_form(content_type) && !identity::accepts_form(&self.config.provider) {
            return unsupported("application/x-www-form-urlencoded");
        }
        // Verify the raw bytes before anything parses them, and before the source's rate limit
        // is charged: a failed check is charged to the sender's address.
        if let Err(rejection) = self
            .verifier
            .verify(&headers, &body, now_micros() / 1_000_000)
        {
            if !self.failures.take(peer) {
                // This address fails too often: answered without a log line.
                self.rejected("failure_budget");
                return with_retry_after(
                    error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_failures",
                        "too many requests from this address failed the signature check; retry later".into(),
                    ),
                    Duration::from_secs(1),
                );
            }
            self.rejected(rejection.reason());
            warn!(source = %self.name, provider = self.config.provider.name(), reason = rejection.reason(), detail = %rejection, "webhook refused: signature check failed");
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                rejection.to_string(),
            );
        }
        if let Some(limit) = &self.limit
            && let Err(wait) = limit.take()
        {
            self.rejected("rate_limited");
            return with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "source `{}` takes at most its rate_limit; retry later",
                        self.name
                    ),
                ),
                wait,
            );
        }
        let parsed = match identity::parse_body_reading(&body, content_type, &self.fields) {
            Ok(b) => b,
            Err(BodyError::Unsupported(t)) => return unsupported(&t),
            Err(BodyError::InvalidJson(detail)) => {
                return error(StatusCode::BAD_REQUEST, "invalid_json", detail);
            }
            Err(BodyError::InvalidForm(detail)) => {
                return error(StatusCode::BAD_REQUEST, "invalid_form", detail);
            }
        };
        if matches!(self.config.provider, crate::config::WebhookProvider::Slack)
            && let Some(challenge) = identity::slack_challenge(&parsed)
        {
            return (StatusCode::OK, Json(json!({"challenge": challenge}))).into_response();
        }
        // A JSON body was checked as UTF-8 by its parse (serde_json alone may take one that is
        // not, with invalid UTF-8 in a string it skipped); a form's is checked here.
        let text = match &parsed {
            identity::Body::Json(doc) => doc.text(),
            identity::Body::Form { .. } => std::str::from_utf8(&body).ok(),
        };
        let Some(text) = text else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body is not UTF-8".into(),
            );
        };
        // Replay resistance: where the delivery id is not signed, the signed body is claimed too.
        let digest = self
            .dedupe
            .as_ref()
            .and_then(|_| identity::replay_digest(&self.config.provider, &headers, &body));
        let event = self.event(headers, text.to_string(), &body, &parsed);
        let id = event.id.clone();
        if span.is_on() {
            span.set(KeyValue::new(
                "switchyard.event_id",
                id.as_str().to_string(),
            ));
        }
        let Some(dedupe) = &self.dedupe else {
            return self.deliver_to_the_end(event, None, span.context()).await;
        };
        let mut key = String::with_capacity(self.name.len() + 1 + id.as_str().len());
        key.push_str(&self.name);
        key.push('\u{1f}');
        key.push_str(id.as_str());
        let window = i64::try_from(self.config.dedupe_window.as_micros()).unwrap_or(i64::MAX);
        let since = now_micros().saturating_sub(window);
        // The body first: a capture re-sent with a fresh (or another pending) id is answered
        // `duplicate` without touching that id. Its claim ends with the id's (as it ends).
        let mut body_lead = None;
        if let Some(digest) = digest {
            let mut body_key = String::with_capacity(self.name.len() + 1 + digest.len());
            body_key.push_str(&self.name);
            body_key.push('\u{1f}');
            body_key.push_str(&digest);
            // A delivery without an id is known by this digest already: one key.
            if body_key != key {
                match dedupe.claim(body_key, since, self.ack_timeout).await {
                    Claim::Seen => return self.duplicate(&id),
                    Claim::Follow(rx) => {
                        return match tokio::time::timeout(self.ack_timeout, rx).await {
                            Ok(Ok(Outcome::Accepted)) => self.duplicate(&id),
                            _ => unavailable(
                                "an earlier delivery of this body is not yet acknowledged; retry later",
                            ),
                        };
                    }
                    Claim::Lead(lead) => body_lead = Some(lead),
                    Claim::Unavailable => {
                        return unavailable(
                            "the shared deduplication store is unavailable, so this event cannot be accepted exactly once; retry later",
                        );
                    }
                }
            }
        }
        match dedupe.claim(key, since, self.ack_timeout).await {
            Claim::Seen => self.duplicate(&id),
            Claim::Follow(rx) => match tokio::time::timeout(self.ack_timeout, rx).await {
                Ok(Ok(Outcome::Accepted)) => self.duplicate(&id),
                _ => unavailable(
                    "an earlier delivery of this event is not yet acknowledged; retry later",
                ),
            },
            Claim::Lead(lead) => {
                self.deliver_to_the_end(event, Some(lead.with(body_lead)), span.context())
                    .await
            }
            Claim::Unavailable => unavailable(
                "the shared deduplication store is unavailable, so this event cannot be accepted exactly once; retry later",
            ),
        }
    }

    /// Counts a refused request in `switchyard_webhook_rejected_total{source,reason}`.
    fn rejected(&self, reason: &str) {
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.webhook_rejected
                .with_label_values(&[&*self.name, reason])
                .inc();
        }
    }

    fn too_large(&self) -> Response {
        self.rejected("too_large");
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than the {} bytes source `{}` accepts (max_body_size)",
                self.config.max_body_bytes, self.name
            ),
        )
    }

    fn duplicate(&self, id: &EventId) -> Response {
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.webhook_duplicates.with_label_values(&[&*self.name]).inc();
        }
        debug!(source = %self.name, event_id = %id, "duplicate delivery answered without a second record");
        answer("duplicate", id)
    }

    /// [`WebhookSource::deliver`], finished even if the sender hangs up while it waits (GitHub
    /// gives up after 10 s, Shopify after 5 s): the event is still delivered or stored in the
    /// DLQ, and its claim ended, rather than lost. It runs in the request's own task, and only
    /// a request dropped before the answer hands what is left of it to a task of its own
    /// ([`FinishOnDrop`]): a task per request would cost a spawn and a cross-thread wake-up of
    /// the waiting request for every delivery.
    async fn deliver_to_the_end(
        &self,
        event: Event,
        lead: Option<dedupe::Lead>,
        trace: Option<opentelemetry::Context>,
    ) -> Response {
        let this = self.clone();
        FinishOnDrop::new(async move { this.deliver(event, lead, trace).await }).await
    }

    /// Hands the event to the pipeline and answers once it is durable (or not in time).
    async fn deliver(
        &self,
        event: Event,
        lead: Option<dedupe::Lead>,
        trace: Option<opentelemetry::Context>,
    ) -> Response {
        let id = event.id.clone();
        let spare =
            (self.config.when_unavailable == WhenUnavailable::DeadLetter).then(|| event.clone());
        if let Some(c) = &self.received {
            c.inc();
        }
        // Events of this source wait in the DLQ for Kafka: this one goes behind them (unless
        // no route takes it), so it cannot overtake them.
        if let Some(queue) = &self.queue
            && queue.is_queued()
            && !self.pipeline.routes().route(&event).is_empty()
            && let Some(stored) = queue
                .store_if_queued(self.pipeline.dead_letter_unavailable(&event, QUEUED_BEHIND))
                .await
        {
            return self
                .stored_or_unavailable(stored, lead, &id, QUEUED_BEHIND)
                .await;
        }
        // The delivery runs in this request's task; when the answer times out it goes on as a
        // task of its own (on this thread's event loop), so a failing produce is still
        // classified and acted on (producer rebuilt, topic recreated) and the next retry finds
        // Kafka ready. `waiting` tells it whether this request still waits.
        let (waiter, waiting) = crate::ack::waiter();
        let mut delivery =
            Box::pin(Arc::clone(&self.pipeline).deliver_waited(event, waiter, trace));
        let outcome = tokio::time::timeout(self.ack_timeout, &mut delivery).await;
        if outcome.is_err() {
            tokio::spawn(delivery);
        }
        drop(waiting);
        let failure = match outcome {
            Ok(Delivery::Delivered) => {
                if let Some(l) = lead {
                    l.finish(Outcome::Accepted).await;
                }
                debug!(source = %self.name, event_id = %id, "webhook accepted");
                return answer("accepted", &id);
            }
            Ok(Delivery::DeadLettered) => {
                if let Some(l) = lead {
                    l.finish(Outcome::Accepted).await;
                }
                return answer("dead_lettered", &id);
            }
            Ok(Delivery::Dropped) => {
                if let Some(l) = lead {
                    l.finish(Outcome::Accepted).await;
                }
                return answer("unmatched", &id);
            }
            Ok(Delivery::Failed(f)) if !f.class.is_transient() => {
                if let Some(l) = lead {
                    l.finish(Outcome::Failed).await;
                }
                let status = match f.class {
                    ErrorClass::Unroutable | ErrorClass::Encode | ErrorClass::Oversize => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                return error(status, f.class.as_str(), f.message);
            }
            Ok(Delivery::Failed(f)) => f.message,
            Err(_) => format!(
                "Kafka did not acknowledge the event within {:?}; retry later (a retry keeps the event id, so a consumer can recognise a duplicate)",
                self.ack_timeout
            ),
        };
        if let (Some(event), Some(queue)) = (spare, &self.queue) {
            let stored = queue
                .store_behind(self.pipeline.dead_letter_unavailable(&event, &failure))
                .await;
            return self
                .stored_or_unavailable(stored, lead, &id, &failure)
                .await;
        }
        if let Some(l) = lead {
            l.finish(Outcome::Failed).await;
        }
        unavailable(&failure)
    }

    /// The answer once the event was (or could not be) stored in the DLQ to wait for Kafka:
    /// 200 `dead_lettered`, or 503 if the store failed too.
    async fn stored_or_unavailable(
        &self,
        stored: Result<(), crate::ack::Failure>,
        lead: Option<dedupe::Lead>,
        id: &EventId,
        failure: &str,
    ) -> Response {
        match stored {
            Ok(()) => {
                if let Some(l) = lead {
                    l.finish(Outcome::Accepted).await;
                }
                answer("dead_lettered", id)
            }
            Err(e) => {
                warn!(source = %self.name, event_id = %id, error = %e.message, "could not store the event in the DLQ either");
                if let Some(l) = lead {
                    l.finish(Outcome::Failed).await;
                }
                unavailable(failure)
            }
        }
    }

    fn event(&self, headers: HeaderMap, text: String, raw: &[u8], parsed: &Body) -> Event {
        event_from_request(&self.name, &self.config, headers, text, raw, parsed)
    }
}

/// The DLQ message of an event stored behind earlier ones of its source that wait for Kafka.
const QUEUED_BEHIND: &str = "stored behind earlier events of this source that wait for Kafka; delivered automatically, in order";

/// The event of a verified request with `parsed` body, as source `name` makes it (also used
/// by `switchyard route` dry runs).
pub(crate) fn event_from_request(
    name: &str,
    config: &WebhookSourceConfig,
    headers: HeaderMap,
    text: String,
    raw: &[u8],
    parsed: &Body,
) -> Event {
    let who = identity::identify(
        &config.provider,
        config.id_pointer.as_deref(),
        config.type_pointer.as_deref(),
        &headers,
        parsed,
    );
    let id = match who.id {
        Some(id) => EventId::from_provider_owned(id),
        None => EventId::from_content(raw),
    };
    // A custom signature header is not kept either (nor any credential: see `RequestHeaders`).
    let mut headers = headers;
    if let crate::config::WebhookProvider::Hmac(spec) = &config.provider {
        headers.remove(spec.header.as_str());
    }
    let selected = config
        .headers
        .iter()
        .filter_map(|name| {
            let v = headers.get(name.as_str())?.to_str().ok()?;
            Some((name.clone(), v.to_string()))
        })
        .collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Event {
        id,
        source: name.to_string(),
        event_type: who.event_type.unwrap_or_else(|| "webhook".into()),
        received_at_micros: now_micros(),
        payload: Payload::Webhook(WebhookPayload {
            path: config.path.clone(),
            content_type,
            headers: RequestHeaders::from_request(headers),
            body: text,
            subject: who.subject,
            selected_headers: selected,
        }),
    }
}

/// A 200 with body `{"status": …, "id": …}`, written directly (serde's writer and axum's
/// `Json` cost more than the rest of building the answer): `status` is one of a few fixed
/// words, the id is escaped by serde_json only when it needs escaping.
fn answer(status: &'static str, id: &EventId) -> Response {
    let id = id.as_str();
    let mut body = Vec::with_capacity(32 + status.len() + id.len());
    body.extend_from_slice(b"{\"status\":\"");
    body.extend_from_slice(status.as_bytes());
    body.extend_from_slice(b"\",\"id\":");
    if id.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        body.push(b'"');
        body.extend_from_slice(id.as_bytes());
        body.push(b'"');
    } else if serde_json::to_writer(&mut body, id).is_err() {
        body.extend_from_slice(b"null");
    }
    body.push(b'}');
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A JSON error response: `{"error": code, "detail": text, "message": text}` (`message` is
/// kept for clients of the first release).
pub fn error(status: StatusCode, code: &str, detail: String) -> Response {
    (
        status,
        Json(json!({"error": code, "detail": detail, "message": detail})),
    )
        .into_response()
}

fn unsupported(content_type: &str) -> Response {
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("content type `{content_type}` is not accepted here; send application/json"),
    )
}

/// `r` with `Retry-After: <wait in whole seconds, at least 1>`.
fn with_retry_after(mut r: Response, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn unavailable(message: &str) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        message.to_string(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// A future that, when dropped before it finished (the request was cancelled), spawns the rest
/// of itself so that it still runs to the end.
struct FinishOnDrop<F: std::future::Future<Output = Response> + Send + 'static> {
    inner: Option<std::pin::Pin<Box<F>>>,
}

impl<F: std::future::Future<Output = Response> + Send + 'static> FinishOnDrop<F> {
    fn new(f: F) -> Self {
        FinishOnDrop {
            inner: Some(Box::pin(f)),
        }
    }
}

impl<F: std::future::Future<Output = Response> + Send + 'static> std::future::Future
    for FinishOnDrop<F>
{
    type Output = Response;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the delivery was polled after it finished".into(),
            ));
        };
        let answer = inner.as_mut().poll(cx);
        if answer.is_ready() {
            self.inner = None;
        }
        answer
    }
}

impl<F: std::future::Future<Output = Response> + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(rest)),
                Err(_) => warn!(
                    "a cancelled webhook delivery could not be finished: no runtime (shutting down)"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of a 200, read back as JSON.
    fn read(r: Response) -> (Option<String>, serde_json::Value) {
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 16))
            .expect("body");
        (ct, serde_json::from_slice(&body).expect("JSON"))
    }

    #[test]
    fn answers_are_json_whatever_the_id_holds() {
        for id in [
            "evt_1",
            "a\"quoted\" id",
            "back\\slash",
            "tab\there",
            "ünï ✓",
            "",
        ] {
            let r = answer("accepted", &EventId::from_provider(id));
            assert_eq!(r.status(), StatusCode::OK);
            let (ct, v) = read(r);
            assert_eq!(ct.as_deref(), Some("application/json"));
            assert_eq!(v, json!({"status": "accepted", "id": id}), "{id:?}");
        }
    }
}
