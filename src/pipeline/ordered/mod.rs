//! The ordered lane of a postgres source: its events reach the Kafka producer in the order the
//! source read them, and a failure never lets a later record overtake an earlier one.
//!
//! ```text
//!  session ──submit(event, ack)──► [channel] ──► worker (one task): route → encode → enqueue ──► producer
//!     ▲          (bounded)                          │ window: events in flight, in order        │
//!     └──────────── ack.resolve, in order ◄─────────┴──────── delivery reports, in order ◄─────┘
//! ```
//!
//! **Order (ARCHITECTURE invariant 3), enforced here and nowhere else.**
//! 1. One worker task per source session takes the events in the order they were submitted
//!    (commit order, ordinal order inside a transaction, a tombstone right after its delete,
//!    snapshot chunks before the stream), encodes them one after another and hands their records
//!    to the producer in that order. No task per event, no other path to the producer for
//!    changes. The idempotent producer keeps each partition in the order it was handed records,
//!    through its own retries.
//! 2. A transient failure of a record (broker away, producer fenced, topic gone) stops the
//!    hand-over. The worker first waits until every record still in the producer is reported,
//!    acts on the failure (a new producer, the topic created again), waits a backoff, and then
//!    hands over again *every* record from the failed one on, in their order — also those after
//!    it that were delivered meanwhile. A later record may thus land once before the failed one,
//!    but it is followed again by the failed one and everything after it (a re-sent suffix, in
//!    order): never an older version alone after a newer one.
//! 3. Transient failures — Kafka or the schema registry unavailable — are retried without limit:
//!    a change is never dead-lettered for them. Meanwhile the source is reported `blocked`
//!    (`/readyz` unready with the reason, `switchyard_source_blocked_seconds`), the window and
//!    then the channel fill, and the source stops reading: the slot holds.
//! 4. A definite failure (bad payload, schema rejected, too large) affects one record: with
//!    `on_error = "dlq"` it goes to the DLQ (that record gives up its key's order, nothing else
//!    does); with `"halt"` the event fails, nothing after it is acknowledged, and the session
//!    restarts from the slot's confirmed position.
//!
//! **Acknowledgement (invariant 1).** An event's token resolves `Delivered` only once every one
//! of its records has a successful delivery report, `DeadLettered` once the rest are in the DLQ;
//! tokens resolve in window order. The source confirms the slot only past commits whose events
//! are all resolved durable.
//!
//! Tests that fail when this breaks (they read Kafka back): `cdc_order::*`, among them
//! `updates_of_the_same_keys_reach_kafka_in_commit_order`,
//! `deletes_are_followed_by_their_tombstone_and_snapshot_reads_precede_later_changes`,
//! `a_broker_outage_longer_than_the_retry_budget_dead_letters_nothing_and_keeps_order`,
//! `a_registry_outage_blocks_the_source_and_dead_letters_nothing` and
//! `kill_and_broker_outages_during_bursts_resend_only_suffixes_in_order`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use opentelemetry::KeyValue;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

mod recovery;

use recovery::{Blocked, Cause, unbounded_backoff};

use super::{
    Matches, Pipeline, halted, no_route, observe_end_to_end, parts_of, produce_span, route_failure,
    route_span, unroutable,
};
use crate::ack::{AckToken, Delivery, Failure};
use crate::config::{OnError, Unmatched};
use crate::encode::EncodeError;
use crate::error::ErrorClass;
use crate::event::Event;
use crate::pipeline::fence::Fence;
use crate::pipeline::health::SourceHealth;
use crate::router::RouteMatch;
use crate::sink::context::KafkaLog;
use crate::sink::kafka::{Attempt, KafkaSink, Placement, Record, Refused};
use crate::store::EncodedRecord;
use crate::telemetry::traces::Traced;

/// One event for the lane, as the source submitted it.
struct Job {
    event: Event,
    matches: Option<Matches>,
    ack: AckToken,
    parent: Option<opentelemetry::Context>,
}

/// The ordered lane of one source session (see the module doc).
pub(crate) struct OrderedLane {
    tx: mpsc::Sender<Job>,
    /// Set by [`OrderedLane::close`]: until when the worker may wait for reports.
    closing: watch::Sender<Option<tokio::time::Instant>>,
    worker: tokio::task::JoinHandle<()>,
}

impl OrderedLane {
    /// Starts the lane's worker for source `source` (which reports `blocked` through `health`);
    /// it hands records over only while `fence` holds.
    pub(crate) fn start(
        pipeline: Arc<Pipeline>,
        source: &str,
        health: Arc<SourceHealth>,
        fence: Fence,
    ) -> OrderedLane {
        let window = pipeline.max_in_flight;
        let (tx, rx) = mpsc::channel(window.clamp(1, 1024));
        let (closing, closing_rx) = watch::channel(None);
        let blocked_gauge = crate::telemetry::metrics::metrics().and_then(|m| {
            m.source_blocked_seconds
                .get_metric_with_label_values(&[source])
                .ok()
        });
        let worker = Worker {
            pipeline,
            source: source.to_string(),
            health,
            window: VecDeque::new(),
            base: 0,
            capacity: window,
            sent: FuturesOrdered::new(),
            resend_from: None,
            halted: None,
            blocked: None,
            kafka_backoff: unbounded_backoff(),
            blocked_gauge,
            closing: closing_rx,
            fence,
        };
        OrderedLane {
            tx,
            closing,
            worker: tokio::spawn(worker.run(rx)),
        }
    }

    /// Hands `event` to the lane once there is room (so a fast source is slowed, never buffered
    /// without bound); `matches`: its routes, already evaluated (`None`: route it here). `ack`
    /// resolves once the event is durable or has failed.
    pub(crate) async fn submit(
        &self,
        event: Event,
        matches: Option<Matches>,
        ack: AckToken,
        parent: Option<opentelemetry::Context>,
    ) {
        let job = Job {
            event,
            matches,
            ack,
            parent,
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job).await {
            job.ack.resolve(Delivery::Failed(Failure {
                class: ErrorClass::Internal,
                message: "the source's delivery lane has stopped".into(),
            }));
        }
    }

    /// Stops the lane: no more events; a retry in progress is given up; the records still in
    /// the producer are waited for up to `wait` (a session that restarts waits for all of them,
    /// so none of its records can land after the next session's), and every event not durable
    /// by then is resolved as failed.
    pub(crate) async fn close(self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        let _ = self.closing.send(Some(deadline));
        drop(self.tx);
        let mut worker = self.worker;
        if tokio::time::timeout_at(deadline + Duration::from_secs(5), &mut worker)
            .await
            .is_err()
        {
            worker.abort();
        }
    }
}

/// A record of an event in the window.
struct Out {
    route: RouteMatch,
    record: Record,
    state: OutState,
    route_span: Traced,
    produce_span: Traced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Not handed to the producer (yet, or again after a failure).
    Waiting,
    /// With the producer; its report is awaited.
    Queued,
    /// Reported delivered.
    Delivered,
    /// Written to the DLQ.
    DeadLettered,
}

/// An event in flight, in source order.
struct Pending {
    event: Event,
    ack: Option<AckToken>,
    outs: Vec<Out>,
    dead_lettered: bool,
    failed: Option<Failure>,
}

impl Pending {
    fn is_complete(&self) -> bool {
        self.failed.is_some()
            || self
                .outs
                .iter()
                .all(|o| matches!(o.state, OutState::Delivered | OutState::DeadLettered))
    }
}

/// A record's place in the window: the event's sequence number and the record's index.
type Position = (u64, usize);

/// What the producer reported for one record.
struct Reported {
    at: Position,
    producer: Arc<FutureProducer<KafkaLog>>,
    enqueued: Instant,
    result: Result<Placement, KafkaError>,
}

/// The delivery report of one record handed over (ready at once for the null sink).
struct ReportFuture {
    at: Position,
    producer: Option<Arc<FutureProducer<KafkaLog>>>,
    enqueued: Instant,
    report: Option<rdkafka::producer::DeliveryFuture>,
}

impl Future for ReportFuture {
    type Output = Reported;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reported> {
        let result = match self.report.as_mut() {
            None => Ok(Placement {
                partition: 0,
                offset: -1,
            }),
            Some(report) => match Pin::new(report).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(d))) => Ok(Placement {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Poll::Ready(Ok(Err((e, _)))) => Err(e),
                Poll::Ready(Err(_)) => Err(KafkaError::Canceled),
            },
        };
        let Some(producer) = self.producer.take() else {
            return Poll::Pending;
        };
        Poll::Ready(Reported {
            at: self.at,
            producer,
            enqueued: self.enqueued,
            result,
        })
    }
}

struct Worker {
    pipeline: Arc<Pipeline>,
    source: String,
    health: Arc<SourceHealth>,
    /// Events in flight, oldest first; `base` is the sequence number of the first.
    window: VecDeque<Pending>,
    base: u64,
    capacity: usize,
    /// Reports of the records with the producer, in hand-over order.
    sent: FuturesOrdered<ReportFuture>,
    /// The earliest record that failed transiently, and why: everything from it on is handed
    /// over again once the producer has reported every record it holds.
    resend_from: Option<(Position, Attempt)>,
    /// Set once an event failed: nothing after it is taken (the session restarts).
    halted: Option<Failure>,
    blocked: Option<Blocked>,
    /// Waits between hand-overs to Kafka again; reset once Kafka takes records.
    kafka_backoff: backoff::ExponentialBackoff,
    blocked_gauge: Option<prometheus::Gauge>,
    closing: watch::Receiver<Option<tokio::time::Instant>>,
    /// The source's leadership: no record is handed over once it lapsed.
    fence: Fence,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            if self.resend_from.is_some() {
                if !self.recover().await {
                    break;
                }
                continue;
            }
            let room = self.window.len() < self.capacity;
            tokio::select! {
                biased;
                Some(r) = self.sent.next(), if !self.sent.is_empty() => self.reported(r).await,
                job = rx.recv(), if room => match job {
                    Some(job) => self.take(job).await,
                    None => break,
                },
                _ = self.closing.changed() => break,
            }
        }
        rx.close();
        // Jobs never taken fail (their tokens are dropped: read as failed).
        while rx.try_recv().is_ok() {}
        self.finish().await;
    }

    fn is_closing(&self) -> bool {
        self.closing.borrow().is_some()
    }

    /// Waits for the records still with the producer until the close's deadline, then
    /// resolves what is complete; the rest fail (their tokens are dropped).
    async fn finish(&mut self) {
        let deadline = (*self.closing.borrow())
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(5));
        // Also after a failure: none of these may land after a record of the next session.
        while !self.sent.is_empty() {
            match tokio::time::timeout_at(deadline, self.sent.next()).await {
                Ok(Some(r)) => self.reported(r).await,
                _ => break,
            }
        }
        if !self.sent.is_empty() {
            warn!(source = %self.source, records = self.sent.len(), "records still unreported when the lane stopped; their events are delivered again after the restart");
        }
        self.advance();
        self.unblock(None);
        let left = self.window.len();
        self.pipeline
            .lane_in_flight
            .fetch_sub(left, Ordering::Relaxed);
        self.window.clear();
    }

    /// Routes and encodes one event and hands its records over, in route order.
    async fn take(&mut self, job: Job) {
        let Job {
            event,
            matches,
            ack,
            parent,
        } = job;
        if let Some(f) = &self.halted {
            ack.resolve(Delivery::Failed(f.clone()));
            return;
        }
        let pipeline = Arc::clone(&self.pipeline);
        let (matches, unmatched) = match matches {
            Some(m) => (m, pipeline.unmatched()),
            None => {
                let (routes, unmatched) = pipeline.routing();
                (routes.route(&event), unmatched)
            }
        };
        let mut pending = Pending {
            event,
            ack: Some(ack),
            outs: Vec::with_capacity(matches.len()),
            dead_lettered: false,
            failed: None,
        };
        if matches.is_empty() {
            let f = no_route(&pending.event);
            match unmatched {
                Unmatched::Drop => pipeline.count_unmatched(&pending.event.source),
                Unmatched::Dlq => self.dead_letter(&mut pending, None, None, f).await,
            }
        }
        for m in matches {
            if pending.failed.is_some() {
                break;
            }
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    let f = unroutable(&e);
                    let route = Arc::clone(&e.route);
                    self.dead_letter(&mut pending, Some((&route, None)), None, f)
                        .await;
                    continue;
                }
            };
            if let Some(metrics) = crate::telemetry::metrics::metrics() {
                metrics.events_routed.with(&m.route, |c| c.inc());
            }
            let route_span = route_span(parent.as_ref(), &pipeline.traces, &pending.event, &m);
            let encoded = {
                let encode_span = route_span.child("encode", Vec::new());
                let encoded = self.encode(&pending.event, &m).await;
                if let Err(Some(f)) = &encoded {
                    encode_span.fail(&f.message);
                    route_span.fail(&f.message);
                }
                encoded
            };
            let mut record = match encoded {
                Ok(record) => record,
                // The lane is closing while the registry is away: the event is not durable.
                Err(None) => {
                    pending.failed = Some(Failure {
                        class: ErrorClass::Unavailable,
                        message: "the schema registry is unavailable and the source stopped".into(),
                    });
                    break;
                }
                Err(Some(f)) => {
                    self.definite(&mut pending, &m, None, f).await;
                    continue;
                }
            };
            let produce_span = produce_span(&route_span, &m.route, &mut record);
            pending.outs.push(Out {
                route: m,
                record,
                state: OutState::Waiting,
                route_span,
                produce_span,
            });
        }
        if pending.failed.is_some() {
            self.halted.clone_from(&pending.failed);
        }
        let seq = self.base + self.window.len() as u64;
        let outs = pending.outs.len();
        self.window.push_back(pending);
        self.pipeline.lane_in_flight.fetch_add(1, Ordering::Relaxed);
        for i in 0..outs {
            self.hand_over((seq, i)).await;
        }
        self.advance();
    }

    /// Encodes `event` for route `m`, retrying without limit while the registry is away.
    /// `Err(None)`: the lane closed meanwhile; `Err(Some(f))`: a definite failure.
    async fn encode(&mut self, event: &Event, m: &RouteMatch) -> Result<Record, Option<Failure>> {
        let pipeline = Arc::clone(&self.pipeline);
        let mut parts = parts_of(event, m).map_err(Some)?;
        let mut backoff = unbounded_backoff();
        loop {
            match pipeline.encode_parts(event, m, &mut parts).await {
                Ok(record) => {
                    self.unblock(Cause::Registry);
                    return Ok(record);
                }
                Err(e @ EncodeError::Unavailable(_)) => {
                    let reason = format!("the schema registry is unavailable: {e}");
                    if !self
                        .wait_blocked(Cause::Registry, &reason, &mut backoff)
                        .await
                    {
                        return Err(None);
                    }
                }
                Err(e) => return Err(Some(route_failure(m, &e))),
            }
        }
    }

    /// Hands the record at `at` to the producer (its topic ensured first). With a resend
    /// pending, or when the producer refuses it for a transient reason, it waits for the
    /// recovery ([`Worker::recover`]).
    async fn hand_over(&mut self, at: Position) {
        loop {
            if self.resend_from.is_some() {
                return;
            }
            let pipeline = Arc::clone(&self.pipeline);
            let sink: &KafkaSink = pipeline.sink();
            if !self.fence.holds() {
                self.lapse(at);
                return;
            }
            let Some(out) = self.out(at) else { return };
            if out.state != OutState::Waiting {
                return;
            }
            let attempt = match sink.ensure_topic(&out.record.topic).await {
                Err(crate::sink::kafka::SinkError::Definite { class, message }) => {
                    Attempt::Fail(class, message)
                }
                Err(e) => Attempt::Retry(e.to_string()),
                Ok(()) => match sink.enqueue(&out.record) {
                    Ok(q) => {
                        out.state = OutState::Queued;
                        self.sent.push_back(ReportFuture {
                            at,
                            producer: Some(q.producer),
                            enqueued: q.enqueued,
                            report: q.report,
                        });
                        return;
                    }
                    Err(Refused::QueueFull) => {
                        // Earlier records leave the queue as they are reported.
                        match self.sent.next().await {
                            Some(r) => self.reported(r).await,
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                        continue;
                    }
                    Err(Refused::Failed(attempt)) => attempt,
                },
            };
            self.failed(at, attempt).await;
            return;
        }
    }

    /// The source's leadership lapsed before the record at `at` was handed over: its event
    /// fails and nothing after it is taken (another instance sends them).
    fn lapse(&mut self, (seq, _): Position) {
        let f = Failure {
            class: ErrorClass::Unavailable,
            message: "this instance no longer leads the source's slot: the record was not sent"
                .into(),
        };
        if let Some(p) = self.index(seq).and_then(|i| self.window.get_mut(i)) {
            p.failed.get_or_insert_with(|| f.clone());
        }
        self.halted.get_or_insert(f);
    }

    fn out(&mut self, (seq, i): Position) -> Option<&mut Out> {
        let idx = self.index(seq)?;
        self.window.get_mut(idx)?.outs.get_mut(i)
    }

    /// A record at `at` failed: definite → DLQ or halt; transient → resend from it.
    async fn failed(&mut self, at: Position, attempt: Attempt) {
        let Attempt::Fail(class, message) = attempt else {
            match &self.resend_from {
                Some((from, _)) if *from <= at => {}
                _ => {
                    debug!(source = %self.source, error = %attempt.message(), "a record was not delivered; handing it and everything after it over again");
                    self.resend_from = Some((at, attempt));
                }
            }
            return;
        };
        let Some(idx) = self.index(at.0) else { return };
        let Some((event, route, record)) = self.window.get(idx).and_then(|p| {
            let o = p.outs.get(at.1)?;
            Some((p.event.clone(), o.route.clone(), o.record.clone()))
        }) else {
            return;
        };
        let f = Failure {
            class,
            message: format!(
                "route `{}`, topic `{}`: {message}",
                route.route, route.topic
            ),
        };
        if let Some(o) = self.out(at) {
            o.produce_span.fail(&f.message);
            o.route_span.fail(&f.message);
        }
        let outcome = if route.on_error == OnError::Halt {
            Err(halted(&route.route, f))
        } else {
            let encoded = EncodedRecord {
                key: record.key,
                value: record.value.unwrap_or_default(),
            };
            self.pipeline
                .dead_letter(
                    &event,
                    Some(&route.route),
                    Some(&route.topic),
                    Some(encoded),
                    f,
                )
                .await
        };
        let Some(p) = self.window.get_mut(idx) else {
            return;
        };
        match outcome {
            Ok(()) => {
                p.dead_lettered = true;
                if let Some(o) = p.outs.get_mut(at.1) {
                    o.state = OutState::DeadLettered;
                }
            }
            Err(f) => {
                // A halt, or the store refused the letter: the event is not durable and
                // nothing after it is taken; the session restarts from the confirmed position.
                p.failed = Some(f);
                self.halted.clone_from(&p.failed);
            }
        }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base)?).ok()
    }

    /// A definite failure of `event` on route `m`: the DLQ, or a halt (see the module doc).
    async fn definite(
        &mut self,
        pending: &mut Pending,
        m: &RouteMatch,
        record: Option<EncodedRecord>,
        f: Failure,
    ) {
        if m.on_error == OnError::Halt {
            pending.failed = Some(halted(&m.route, f));
            self.halted.clone_from(&pending.failed);
            return;
        }
        self.dead_letter(pending, Some((&m.route, Some(&m.topic))), record, f)
            .await;
    }

    async fn dead_letter(
        &mut self,
        pending: &mut Pending,
        route: Option<(&str, Option<&str>)>,
        record: Option<EncodedRecord>,
        f: Failure,
    ) {
        let (route, topic) = route.map_or((None, None), |(r, t)| (Some(r), t));
        match self
            .pipeline
            .dead_letter(&pending.event, route, topic, record, f)
            .await
        {
            Ok(()) => pending.dead_lettered = true,
            Err(f) => {
                // The store refused it: the event is not durable, the session restarts.
                pending.failed = Some(f);
                self.halted.clone_from(&pending.failed);
            }
        }
    }

    /// Acts on one delivery report.
    async fn reported(&mut self, r: Reported) {
        let Reported {
            at,
            producer,
            enqueued,
            result,
        } = r;
        match result {
            Ok(p) => {
                // Reports of records after a failed one (awaited before the resend) do not
                // mean that Kafka takes records again.
                if self.resend_from.is_none() {
                    self.unblock(Cause::Kafka);
                }
                if let Some(o) = self.out(at) {
                    if o.state == OutState::Queued {
                        o.state = OutState::Delivered;
                    }
                    KafkaSink::observe_delivered(&o.record.topic, enqueued);
                    o.produce_span.set(KeyValue::new(
                        "messaging.destination.partition.id",
                        p.partition.to_string(),
                    ));
                    o.produce_span
                        .set(KeyValue::new("messaging.kafka.offset", p.offset));
                    // Ends the spans (a re-sent record gets none).
                    o.produce_span = Traced::none();
                    o.route_span = Traced::none();
                }
            }
            Err(e) => {
                let attempt = self.pipeline.sink().classify_report(&producer, e);
                if let Some(o) = self.out(at)
                    && o.state == OutState::Queued
                {
                    o.state = OutState::Waiting;
                }
                self.failed(at, attempt).await;
            }
        }
        self.advance();
    }

    /// Resolves the complete events at the front of the window, in order.
    fn advance(&mut self) {
        while self.window.front().is_some_and(Pending::is_complete) {
            let Some(mut p) = self.window.pop_front() else {
                break;
            };
            self.base += 1;
            self.pipeline.lane_in_flight.fetch_sub(1, Ordering::Relaxed);
            let delivery = match p.failed.take() {
                Some(f) => {
                    warn!(event_id = %p.event.id, source = %p.event.source, class = %f.class, error = %f.message, "event not delivered");
                    Delivery::Failed(f)
                }
                None if p.dead_lettered => Delivery::DeadLettered,
                None if p.outs.is_empty() => Delivery::Dropped,
                None => {
                    observe_end_to_end(&p.event);
                    Delivery::Delivered
                }
            };
            if let Some(ack) = p.ack.take() {
                ack.resolve(delivery);
            }
        }
    }
}
