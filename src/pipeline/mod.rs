//! The path every event takes after its source: route → encode → sink, then resolve its ack.
//!
//! ```text
//!  source ──deliver_waited / lane.submit──► route ──► encode ──► Kafka
//!     ▲                                                                          │
//!     └──────────────── ack.resolve(Delivered | Failed) ◄── delivery report ─────┘
//! ```
//!
//! Invariant: an event's [`AckToken`] is resolved `Delivered` only after every route it matched
//! has a Kafka delivery report. Webhooks ([`Pipeline::deliver_waited`]) wait for a permit
//! first, so at most `max_in_flight` are in flight; their transient failures (registry or
//! broker down) are retried with backoff until the sender stops waiting or `retry_max_elapsed`
//! passes, then answered or dead-lettered. Changes of postgres sources take an
//! [`OrderedLane`] instead ([`ordered`]): handed to the producer in source order, their
//! transient failures retried without limit, never dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::ack::{Delivery, Failure, Waiter};
use crate::config::{Config, OnError, Unmatched};
use crate::encode::{
    AvroSchema, EncodeError, Encoder, Part, RecordParts, cloudevent, datum, plain_webhook,
    record_parts,
};
use crate::error::{ErrorClass, retry_policy};
use crate::event::Event;
use crate::pipeline::fence::Fence;
use crate::pipeline::health::SourceHealth;
use crate::router::{RouteError, RouteMatch, RouteTable};
use crate::store::{EncodedRecord, NewDeadLetter, Store};

pub(crate) mod fence;
pub(crate) mod health;
pub(crate) mod ordered;
pub(crate) mod queues;
pub(crate) use ordered::OrderedLane;

/// What the route table made of an event: one entry per route that takes it.
pub(crate) type Matches = Vec<Result<RouteMatch, RouteError>>;
use crate::sink::kafka::{KafkaSink, Placement, Record, SinkError};
use crate::telemetry::traces::{TRACEPARENT, Traced, Traces};

/// Header names switchyard sets on every record.
pub(crate) mod headers {
    /// The event's stable id.
    pub(crate) const EVENT_ID: &str = "switchyard.event_id";
    /// The source name.
    pub(crate) const SOURCE: &str = "switchyard.source";
    /// The route name.
    pub(crate) const ROUTE: &str = "switchyard.route";
    /// `key_only` when `before` holds only the key columns (REPLICA IDENTITY DEFAULT).
    pub(crate) const BEFORE: &str = "switchyard.before";
    /// Columns sent as null because they were unchanged TOASTed values nobody could fill in.
    pub(crate) const UNCHANGED_TOAST: &str = "switchyard.unchanged_toast";
}

/// Route, encode and deliver events.
pub(crate) struct Pipeline {
    /// Replaced whole on reload; each event is routed by one table.
    routes: std::sync::RwLock<(Arc<RouteTable>, Unmatched)>,
    encoder: Encoder,
    sink: KafkaSink,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Events in the ordered lanes of postgres sources ([`ordered`]).
    lane_in_flight: std::sync::atomic::AtomicUsize,
    /// Set when [`Pipeline::drain`] starts; `drain_started` wakes deliveries waiting for room.
    draining: std::sync::atomic::AtomicBool,
    drain_started: tokio::sync::Notify,
    retry_max_elapsed: Duration,
    dlq: Option<Arc<Store>>,
    /// `[dlq] mask_payloads`.
    mask_payloads: bool,
    traces: Traces,
    /// Webhook sources with events waiting in the DLQ for Kafka ([`crate::replay::redeliver`]).
    queues: queues::Queues,
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The Kafka client configuration is invalid.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The registry client could not be built.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Pipeline {
    /// Builds the route table, registry client and Kafka producer from a configuration.
    pub(crate) fn new(config: &Config) -> Result<Pipeline, PipelineError> {
        Ok(Pipeline {
            routes: std::sync::RwLock::new((
                Arc::new(RouteTable::compile(config)),
                config.router.unmatched,
            )),
            encoder: Encoder::new(&config.schema_registry)?,
            sink: KafkaSink::new(&config.kafka)?,
            in_flight: Arc::new(Semaphore::new(config.kafka.max_in_flight)),
            max_in_flight: config.kafka.max_in_flight,
            lane_in_flight: std::sync::atomic::AtomicUsize::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
            retry_max_elapsed: config.kafka.retry_max_elapsed,
            dlq: None,
            mask_payloads: config.dlq.mask_payloads,
            traces: Traces::off(),
            queues: queues::Queues::default(),
        })
    }

    /// Sends events that fail for good to `dlq` instead of failing them back to the source.
    pub(crate) fn with_dlq(mut self, dlq: Arc<Store>) -> Pipeline {
        self.dlq = Some(dlq);
        self
    }

    /// Records spans of the events that come with a trace context (a webhook request's, a CDC transaction's).
    pub(crate) fn with_traces(mut self, traces: Traces) -> Pipeline {
        self.traces = traces;
        self
    }

    /// Where spans go (off unless `[telemetry] otlp_endpoint` is set).
    pub(crate) fn traces(&self) -> &Traces {
        &self.traces
    }

    /// True once [`Pipeline::drain`] started (the daemon is stopping).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Which webhook sources have events waiting in the DLQ for Kafka, in order.
    pub(crate) fn queues(&self) -> &queues::Queues {
        &self.queues
    }

    /// The Kafka sink (readiness checks, topic creation, flush).
    pub(crate) fn sink(&self) -> &KafkaSink {
        &self.sink
    }

    /// The compiled routes in force now.
    pub(crate) fn routes(&self) -> Arc<RouteTable> {
        match self.routes.read() {
            Ok(r) => Arc::clone(&r.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// The route table and the policy for events it does not route, read together (a reload
    /// replaces both at once).
    pub(crate) fn routing(&self) -> (Arc<RouteTable>, Unmatched) {
        match self.routes.read() {
            Ok(r) => (Arc::clone(&r.0), r.1),
            Err(poisoned) => {
                let r = poisoned.into_inner();
                (Arc::clone(&r.0), r.1)
            }
        }
    }

    /// What happens to events no route takes.
    pub(crate) fn unmatched(&self) -> Unmatched {
        match self.routes.read() {
            Ok(r) => r.1,
            Err(poisoned) => poisoned.into_inner().1,
        }
    }

    /// Replaces the route table and unmatched policy at once (a configuration reload): events
    /// routed from now on use the new table; events already routed keep theirs.
    pub(crate) fn replace_routes(&self, config: &Config) {
        // Routes keep the topics they have named (their `max_topics` bound holds across reloads).
        let new = (
            Arc::new(RouteTable::recompile(config, &self.routes())),
            config.router.unmatched,
        );
        match self.routes.write() {
            Ok(mut r) => *r = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Events taken and not yet resolved (for `switchyard_events_in_flight`).
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.in_flight.available_permits())
            + self
                .lane_in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An ordered lane for one session of postgres source `source`: its events reach Kafka in
    /// the order submitted (see [`ordered`]).
    /// It hands records to the producer only while `fence` holds (the source leads its slot).
    pub(crate) fn lane(
        self: &Arc<Self>,
        source: &str,
        health: Arc<SourceHealth>,
        fence: Fence,
    ) -> OrderedLane {
        OrderedLane::start(Arc::clone(self), source, health, fence)
    }

    /// Counts an event dropped because no route takes it.
    pub(crate) fn count_unmatched(&self, source: &str) {
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.unmatched.with_label_values(&[source]).inc();
        }
    }

    /// Deliver and wait, the entry point of sources that wait for the outcome themselves (a
    /// webhook request): the work of a delivery (room in flight, route, encode, deliver, log),
    /// returning the outcome. `waiter` only tells the delivery whether its caller still waits
    /// ([`Waiter::is_abandoned`]). The caller polls it in its own task and spawns it if it stops
    /// waiting, so the delivery still ends then (a failing produce is classified and acted on):
    /// no task per event, whose creation, scheduling and wake-up of the waiting request cost
    /// about as much as routing and encoding it. (The other entry point, submit, is
    /// [`Pipeline::lane`]'s `OrderedLane::submit`.)
    pub(crate) async fn deliver_waited(
        self: Arc<Self>,
        event: Event,
        waiter: Waiter,
        parent: Option<opentelemetry::Context>,
    ) -> Delivery {
        // Once the drain has started (it waits for every permit, ahead of any later request for
        // one), a delivery that has no room yet is refused as unavailable (the source answers
        // 503, the sender retries) rather than waiting until the server is stopped under it.
        let started = self.drain_started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return failed(ErrorClass::Unavailable, SHUTTING_DOWN);
        }
        let permit = tokio::select! {
            p = Arc::clone(&self.in_flight).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return failed(ErrorClass::Unavailable, SHUTTING_DOWN),
            },
            () = &mut started => return failed(ErrorClass::Unavailable, SHUTTING_DOWN),
        };
        let delivery = self.deliver_event(&event, None, &waiter, parent).await;
        drop(permit);
        delivery
    }

    /// Routes (unless `matches` says) and delivers `event`, logging a failure and observing the
    /// end-to-end latency of a delivery.
    async fn deliver_event(
        &self,
        event: &Event,
        matches: Option<Matches>,
        waiter: &Waiter,
        parent: Option<opentelemetry::Context>,
    ) -> Delivery {
        let matches = matches.unwrap_or_else(|| self.routes().route(event));
        let delivery = self
            .deliver_matches(event, matches, waiter, parent.as_ref())
            .await;
        match &delivery {
            Delivery::Failed(f) => {
                warn!(event_id = %event.id, source = %event.source, class = %f.class, error = %f.message, "event not delivered");
            }
            Delivery::Delivered => observe_end_to_end(event),
            Delivery::DeadLettered | Delivery::Dropped => {}
        }
        delivery
    }

    /// Encodes and delivers one event to each of its matching routes, in route order.
    ///
    /// A route that fails for good (a dead-letter class) is written to the DLQ and the others
    /// go on; the event is then `DeadLettered`. A transient failure fails the whole event back
    /// to its source, which delivers it again (routes already delivered get a duplicate:
    /// at-least-once).
    async fn deliver_matches(
        &self,
        event: &Event,
        matches: Matches,
        waiter: &Waiter,
        parent: Option<&opentelemetry::Context>,
    ) -> Delivery {
        if matches.is_empty() {
            let f = no_route(event);
            return match self.unmatched() {
                Unmatched::Drop => {
                    self.count_unmatched(&event.source);
                    Delivery::Dropped
                }
                Unmatched::Dlq => {
                    match Box::pin(self.dead_letter(event, None, None, None, f)).await {
                        Ok(()) => Delivery::DeadLettered,
                        Err(f) => Delivery::Failed(f),
                    }
                }
            };
        }
        let mut dead_lettered = false;
        for m in matches {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    let f = unroutable(&e);
                    if let Err(f) =
                        Box::pin(self.dead_letter(event, Some(&e.route), None, None, f)).await
                    {
                        return Delivery::Failed(f);
                    }
                    dead_lettered = true;
                    continue;
                }
            };
            if let Some(metrics) = crate::telemetry::metrics::metrics() {
                metrics.events_routed.with(&m.route, |c| c.inc());
            }
            let route_span = route_span(parent, &self.traces, event, &m);
            let abandoned = || waiter.is_abandoned();
            let delivered = self
                .deliver_route(event, &m, waiter, &abandoned, &route_span)
                .await;
            drop(route_span);
            let RouteFailed { failure: f, record } = match delivered {
                Ok(_) => continue,
                Err(failed) => failed,
            };
            if !f.class.is_dead_letter() {
                return Delivery::Failed(f);
            }
            if m.on_error == OnError::Halt {
                return Delivery::Failed(halted(&m.route, f));
            }
            if let Err(f) =
                Box::pin(self.dead_letter(event, Some(&m.route), Some(&m.topic), record, f)).await
            {
                return Delivery::Failed(f);
            }
            dead_lettered = true;
        }
        if dead_lettered {
            Delivery::DeadLettered
        } else {
            Delivery::Delivered
        }
    }

    /// Encodes `event` for route `m` and hands the record to Kafka, waiting for its delivery
    /// report: the deliver-and-wait path of a record to Kafka, the same for live webhook
    /// deliveries ([`Pipeline::deliver_waited`]) and for replays of dead letters
    /// (`replay::deliver_entry`), which differ only in what they do with a failure (a live
    /// event's becomes a dead letter, a replay's stays on its entry). The ordered lanes
    /// (CDC, snapshots) submit records without waiting for each: `ordered`. The
    /// `encode` and `produce` spans are children of `span` (the event's `route` span, or a
    /// replay's own), and the record's `traceparent` names its `produce` span. `waiter` ends
    /// the registry's retries once the caller stopped waiting; `abandoned` the producer's.
    pub(crate) async fn deliver_route(
        &self,
        event: &Event,
        m: &RouteMatch,
        waiter: &Waiter,
        abandoned: &(dyn Fn() -> bool + Send + Sync),
        span: &Traced,
    ) -> Result<Placement, RouteFailed> {
        let encode_span = span.child("encode", Vec::new());
        let encoded = self.encode(event, m, waiter).await;
        if let Err(f) = &encoded {
            encode_span.fail(&f.message);
            span.fail(&f.message);
        }
        drop(encode_span);
        let mut record = encoded.map_err(|failure| RouteFailed {
            failure,
            record: None,
        })?;
        let produce_span = produce_span(span, &m.route, &mut record);
        let produced = self.sink.deliver(&record, abandoned).await;
        match &produced {
            Ok(p) => {
                produce_span.set(KeyValue::new(
                    "messaging.destination.partition.id",
                    p.partition.to_string(),
                ));
                produce_span.set(KeyValue::new("messaging.kafka.offset", p.offset));
                debug!(event_id = %event.id, route = %m.route, topic = %m.topic, partition = p.partition, offset = p.offset, "delivered");
            }
            Err(e) => {
                produce_span.fail(&e.to_string());
                span.fail(&e.to_string());
            }
        }
        produced.map_err(|e| RouteFailed {
            failure: Failure {
                class: e.class(),
                message: format!("route `{}`, topic `{}`: {e}", m.route, m.topic),
            },
            record: Some(EncodedRecord {
                key: record.key.clone(),
                value: record.value.clone().unwrap_or_default(),
            }),
        })
    }

    /// Stores an event Kafka could not take in time (class `unavailable`), for a source that
    /// prefers the DLQ to a 503; `dlq replay` delivers it later.
    pub(crate) async fn dead_letter_unavailable(
        &self,
        event: &Event,
        message: &str,
    ) -> Result<(), Failure> {
        let f = Failure {
            class: ErrorClass::Unavailable,
            message: message.to_string(),
        };
        Box::pin(self.dead_letter(event, None, None, None, f)).await
    }

    /// Writes a dead letter; without a DLQ (or if the write fails) the failure stands.
    pub(crate) async fn dead_letter(
        &self,
        event: &Event,
        route: Option<&str>,
        topic: Option<&str>,
        record: Option<EncodedRecord>,
        failure: Failure,
    ) -> Result<(), Failure> {
        let Some(dlq) = &self.dlq else {
            return Err(failure);
        };
        // `[dlq] mask_payloads`: the raw values of masked fields never reach the store.
        let stored = if self.mask_payloads {
            let masks = self.routes().masks(&event.source, route);
            crate::router::transform::mask_event(event, &masks, true)
        } else {
            event.clone()
        };
        let letter = NewDeadLetter {
            event: stored,
            route: route.map(str::to_string),
            topic: topic.map(str::to_string),
            key: Some(event.id.as_str().to_string()),
            record,
            class: failure.class,
            message: failure.message.clone(),
            attempts: 1,
            failed_at: crate::event::now_micros(),
        };
        match dlq.dead_letters().put(&letter).await {
            Ok(id) => {
                if let Some(m) = crate::telemetry::metrics::metrics() {
                    m.dead_letters
                        .with_label_values(&[route.unwrap_or("-"), failure.class.as_str()])
                        .inc();
                }
                warn!(event_id = %event.id, dead_letter = id, class = %failure.class, error = %failure.message, "dead-lettered");
                Ok(())
            }
            Err(e) => Err(Failure {
                class: ErrorClass::Unavailable,
                message: format!(
                    "{} (and the dead-letter store failed: {e})",
                    failure.message
                ),
            }),
        }
    }

    /// Builds the Kafka record for one route, retrying while the registry is unavailable (until
    /// `retry_max_elapsed`, or until the caller stops waiting).
    pub(crate) async fn encode(
        &self,
        event: &Event,
        m: &RouteMatch,
        waiter: &Waiter,
    ) -> Result<Record, Failure> {
        let mut parts = parts_of(event, m)?;
        let mut backoff = retry_policy(self.retry_max_elapsed);
        let started = Instant::now();
        loop {
            match self.encode_parts(event, m, &mut parts).await {
                Ok(record) => return Ok(record),
                Err(e @ EncodeError::Unavailable(_)) => {
                    if waiter.is_abandoned() {
                        return Err(Failure {
                            class: ErrorClass::Unavailable,
                            message: e.to_string(),
                        });
                    }
                    match backoff.next_backoff() {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => {
                            return Err(Failure {
                                class: ErrorClass::RetriesExhausted,
                                message: format!("after {:?}: {e}", started.elapsed()),
                            });
                        }
                    }
                }
                Err(e) => return Err(route_failure(m, &e)),
            }
        }
    }

    /// One attempt at the Kafka record of `event` on route `m`, from its [`parts_of`]: the
    /// registry's framing (a cached schema id, or a registration) and switchyard's headers.
    /// `EncodeError::Unavailable` is transient (the registry is away); the rest are definite.
    pub(crate) async fn encode_parts(
        &self,
        event: &Event,
        m: &RouteMatch,
        parts: &mut Parts<'_>,
    ) -> Result<Record, EncodeError> {
        let (key, value) = self.encode_once(&m.topic, event, parts).await?;
        let mut record_headers = vec![
            (
                headers::EVENT_ID.into(),
                event.id.as_str().as_bytes().to_vec(),
            ),
            (headers::SOURCE.into(), event.source.as_bytes().to_vec()),
            (headers::ROUTE.into(), m.route.as_bytes().to_vec()),
        ];
        if let crate::event::Payload::Change(c) = &event.payload {
            if !c.unchanged_toast.is_empty() {
                record_headers.push((
                    headers::UNCHANGED_TOAST.into(),
                    c.unchanged_toast.join(",").into_bytes(),
                ));
            }
            if c.before_key_only {
                record_headers.push((headers::BEFORE.into(), b"key_only".to_vec()));
            }
        }
        Ok(Record {
            topic: m.topic.clone(),
            key,
            value,
            headers: record_headers,
        })
    }

    async fn encode_once(
        &self,
        topic: &str,
        event: &Event,
        parts: &mut Parts<'_>,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), EncodeError> {
        let parts = match parts {
            Parts::Tree(parts) => parts,
            Parts::Change(w) => {
                // Registered (or found in the cache) first: once both ids are known nothing can
                // fail, so the written datums are taken, framed in place, not copied.
                let key_id = match &w.key {
                    Some(_) => Some(
                        self.encoder
                            .schema_id(topic, Part::Key, &w.key_schema)
                            .await?,
                    ),
                    None => None,
                };
                let value_id = match &w.value {
                    Some(_) => Some(
                        self.encoder
                            .schema_id(topic, Part::Value, &w.value_schema)
                            .await?,
                    ),
                    None => None,
                };
                let frame = |id: Option<u32>, datum: &mut Option<Vec<u8>>| {
                    let mut datum = datum.take()?;
                    crate::encode::frame_in_place(id?, &mut datum);
                    Some(datum)
                };
                let key = frame(key_id, &mut w.key);
                let value = frame(value_id, &mut w.value);
                return Ok((key, value));
            }
            Parts::Written(key, payload) => {
                let key = self
                    .encoder
                    .encode_written(topic, Part::Key, &AvroSchema::string(), |out| {
                        datum::bytes(key.as_bytes(), out)
                    })
                    .await?;
                let value = self
                    .encoder
                    .encode_written(topic, Part::Value, cloudevent::schema(), |out| {
                        cloudevent::write(event, payload, out)
                    })
                    .await?;
                return Ok((Some(key), Some(value)));
            }
        };
        let key = match &parts.key {
            Some(k) => Some(
                self.encoder
                    .key(topic, &parts.key_schema, k, parts.ordered)
                    .await?,
            ),
            None => None,
        };
        let value = match &parts.value {
            Some(v) => Some(
                self.encoder
                    .value(topic, &parts.value_schema, v, parts.ordered)
                    .await?,
            ),
            None => None,
        };
        Ok((key, value))
    }

    /// Waits until no event is in flight, up to `timeout`; true when all finished.
    pub(crate) async fn drain(&self, timeout: Duration, max_in_flight: usize) -> bool {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.drain_started.notify_waiters();
        let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        let ok = tokio::time::timeout(timeout, self.in_flight.acquire_many(all))
            .await
            .is_ok();
        self.sink.flush(Duration::from_secs(5));
        ok
    }
}

/// Why a delivery that found no room was refused once the drain started.
const SHUTTING_DOWN: &str = "switchyard is shutting down; send this event again";

/// What `event` becomes on route `m` before the registry's framing; a definite failure when
/// the event does not fit the route's schema.
pub(crate) fn parts_of<'e>(event: &'e Event, m: &RouteMatch) -> Result<Parts<'e>, Failure> {
    // A change on a route without transforms: written straight from its rows.
    if m.transform.is_none()
        && let crate::event::Payload::Change(c) = &event.payload
        && let Some(w) = crate::encode::change::written(event, c, &m.key, &m.shapes)
    {
        return Ok(Parts::Change(w));
    }
    Ok(match plain_webhook(event, m) {
        Some((key, payload)) => Parts::Written(key, payload),
        None => Parts::Tree(record_parts(event, m).map_err(|e| Failure {
            class: e.class(),
            message: format!("route `{}`, topic `{}`: {e}", m.route, m.topic),
        })?),
    })
}

/// The failure of an event no route takes.
pub(crate) fn no_route(event: &Event) -> Failure {
    Failure {
        class: ErrorClass::Unroutable,
        message: format!(
            "no route takes this {} event from source `{}`",
            event.event_type, event.source
        ),
    }
}

/// The failure of a route that took an event but could not name its topic.
pub(crate) fn unroutable(e: &RouteError) -> Failure {
    Failure {
        class: ErrorClass::Unroutable,
        message: e.to_string(),
    }
}

/// A definite encoding failure of route `m`, classified.
pub(crate) fn route_failure(m: &RouteMatch, e: &EncodeError) -> Failure {
    Failure {
        class: e.class(),
        message: format!("route `{}`, topic `{}`: {e}", m.route, m.topic),
    }
}

/// What one event becomes on one route, before the registry's framing.
pub(crate) enum Parts<'e> {
    /// Key and value as Avro values ([`record_parts`]).
    Tree(RecordParts),
    /// A change's key and value, already written ([`crate::encode::change::written`]).
    Change(crate::encode::change::Written),
    /// A webhook's CloudEvent, written straight from the event ([`plain_webhook`]): the key, and
    /// the payload after the route's transforms.
    Written(String, std::borrow::Cow<'e, crate::event::WebhookPayload>),
}

/// Why an event did not reach Kafka on one route ([`Pipeline::deliver_route`]), with the
/// record that was built, if one was (kept with a dead letter).
#[derive(Debug)]
pub(crate) struct RouteFailed {
    /// The failure, classified.
    pub failure: Failure,
    /// The record Kafka refused.
    pub record: Option<EncodedRecord>,
}

/// The `route` span of one event on one route (none without a parent).
fn route_span(
    parent: Option<&opentelemetry::Context>,
    traces: &Traces,
    event: &Event,
    m: &RouteMatch,
) -> Traced {
    // Attributes only for a span that records: no allocations per event with tracing off.
    if parent.is_none() || !traces.is_on() {
        return Traced::none();
    }
    Traced::child_of(
        parent,
        traces,
        "route",
        vec![
            KeyValue::new("switchyard.route", m.route.to_string()),
            KeyValue::new("switchyard.event_id", event.id.as_str().to_string()),
            KeyValue::new("messaging.destination.name", m.topic.clone()),
        ],
    )
}

/// The `produce` span of `record` under `route_span`, named in the record's `traceparent`
/// header. Attributes only for a recording span: no allocations per event with tracing off.
fn produce_span(route_span: &Traced, route: &str, record: &mut Record) -> Traced {
    if !route_span.is_on() {
        return Traced::none();
    }
    let span = route_span.child(
        "produce",
        vec![
            KeyValue::new("switchyard.route", route.to_string()),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", record.topic.clone()),
        ],
    );
    if let Some(tp) = span.traceparent() {
        // One traceparent: the record names this delivery (a replayed record, the replay).
        record.headers.retain(|(k, _)| k != TRACEPARENT);
        record.headers.push((TRACEPARENT.into(), tp.into_bytes()));
    }
    span
}

/// Records how long a delivered event took from its source's commit (or receipt) to Kafka.
fn observe_end_to_end(event: &Event) {
    let (Some(origin), Some(m)) = (event.origin_micros(), crate::telemetry::metrics::metrics())
    else {
        return;
    };
    // Clocks of the database and this host may disagree slightly: never a negative latency.
    let micros = (crate::event::now_micros() - origin).max(0);
    #[allow(clippy::cast_precision_loss)]
    let seconds = micros as f64 / 1e6;
    m.end_to_end_latency
        .with(&event.source, |h| h.observe(seconds));
}

fn failed(class: ErrorClass, message: &str) -> Delivery {
    Delivery::Failed(Failure {
        class,
        message: message.to_string(),
    })
}

/// A definite failure on an `on_error = "halt"` route: the source must stop at the event and
/// try again later (CDC: the slot holds; webhooks: 503), so it is reported as unavailable.
fn halted(route: &str, f: Failure) -> Failure {
    warn!(route, class = %f.class, error = %f.message, "route halts on error: the source stops at this event until the cause is fixed");
    Failure {
        class: ErrorClass::Unavailable,
        message: format!(
            "route `{route}` halts on errors ({}: {}); fix the cause, the event is retried",
            f.class, f.message
        ),
    }
}
