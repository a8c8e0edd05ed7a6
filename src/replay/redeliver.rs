//! Automatic re-delivery: the events a webhook source stored in the DLQ because Kafka was
//! unavailable (`when_unavailable = "dead_letter"`, class `unavailable`) go to Kafka once it
//! takes records again, without an operator, in each source's order.
//!
//! ```text
//!  webhook request ──Kafka down──► DLQ put (class unavailable) ──► 200 dead_lettered
//!        │                               ▲     source marked "queued"
//!        └── source queued? ─────────────┘     (new events of it are stored behind)
//!
//!  redeliver task (every second, one source at a time):
//!    oldest pending `unavailable` entry of the source ──► claim it and up to 255 after it
//!      ──► the oldest among them? ──► hand every record to the producer, in order
//!      ──► await every report ──► mark the acknowledged prefix replayed (one transaction)
//!      ──► next batch
//!    none left: source un-queued (under its gate, so no store is in between)
//! ```
//!
//! Invariants (test: `tests/it/redeliver.rs`
//! `github_delivery_while_kafka_is_down_reaches_kafka_once_in_order_without_a_command`):
//! - A batch is delivered only while this task holds the claims of its entries and the first
//!   is the oldest pending `unavailable` entry of its source; its records are handed to the
//!   producer in the entries' order (the idempotent producer keeps each partition in that
//!   order) and the next batch starts only once every report of this one is in and its
//!   entries are marked `replayed`: stored events of a source reach Kafka in the order they
//!   were stored, and with a shared store several replicas never deliver an entry twice
//!   (claims) nor overtake one another (the oldest-entry check). An entry after one that
//!   failed transiently stays pending behind it; its records may have landed already, and land
//!   again after the failed one (a re-sent suffix, in order, as in the CDC lanes).
//! - Batches, not one entry per round trip, so the queue drains faster than a busy source
//!   fills it (each new event costs one store write; a batch of 256 costs a claim, the
//!   records in flight together, and one update).
//! - While a source has such entries pending, each new event of that source that a route
//!   takes is stored behind them instead of being produced (answered 200 `dead_lettered`), so
//!   a request that starts after another was answered `dead_lettered` reaches Kafka after it.
//!   Requests in flight at the same moment have no order between them, as without the DLQ.
//!   Another replica learns that a source is queued from the store, within a second.
//! - An entry that fails for a reason of its own (encode, schema, unroutable) is marked with
//!   that class and left pending for on-call (`dlq replay`); the rest of its source goes on.
//! - Every round that delivered or failed entries is written to the audit log, as
//!   `dlq replay` is (actor `switchyard`, action `replay (automatic)`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::{owner_id, routes_for};
use crate::ack::Failure;
use crate::config::{Config, SourceKind, WhenUnavailable};
use crate::encode::EncodeError;
use crate::error::ErrorClass;
use crate::event::now_micros;
use crate::pipeline::{Pipeline, parts_of, route_failure};
use crate::sink::context::KafkaLog;
use crate::sink::kafka::{Attempt, KafkaSink, Queued, Refused, SinkError};
use crate::store::{AuditEntry, DeadLetter, Selector, Status, Store, StoreError};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

/// How often the task looks for stored entries when there is nothing to do.
const IDLE: Duration = Duration::from_secs(1);
/// The longest wait between attempts while Kafka stays unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long a claim holds; a delivery is given at most half of it.
const LEASE: Duration = Duration::from_secs(60);
/// Entries of one source delivered in one round before the next source's turn.
const ROUND: usize = 1_000;

/// What one round over a source came to.
enum Round {
    /// Nothing (left) to deliver.
    Empty,
    /// Another replica holds the source's oldest entry.
    Busy,
    /// Kafka is still unavailable.
    Blocked,
    /// The round's share was delivered; more may be left.
    More,
}

/// The re-delivery task of a daemon.
struct Redeliverer {
    store: Arc<Store>,
    pipeline: Arc<Pipeline>,
    sources: Vec<String>,
    owner: String,
}

/// Starts the re-delivery task for the webhook sources with `when_unavailable =
/// "dead_letter"` (`None` if there are none). Before it returns, sources that have entries
/// pending from before (a restart) are marked queued.
pub(crate) async fn start(
    store: Arc<Store>,
    pipeline: Arc<Pipeline>,
    config: &Config,
) -> Option<JoinHandle<()>> {
    let sources: Vec<String> = config
        .sources
        .iter()
        .filter(|(_, s)| {
            matches!(&s.kind, SourceKind::Webhook(w) if w.when_unavailable == WhenUnavailable::DeadLetter)
        })
        .map(|(name, _)| name.clone())
        .collect();
    if sources.is_empty() {
        return None;
    }
    let task = Redeliverer {
        store,
        pipeline,
        sources,
        owner: owner_id(),
    };
    // Bounded: a store that does not answer delays the start by at most this per source (the
    // task marks the sources once it answers).
    for source in &task.sources {
        match tokio::time::timeout(Duration::from_secs(2), task.oldest(source)).await {
            Err(_) => {
                warn!(
                    source,
                    "the DLQ store did not answer within 2 s; the re-delivery task looks again"
                );
            }
            Ok(Ok(Some(_))) => task
                .pipeline
                .queues()
                .get(source)
                .queued
                .store(true, Ordering::Release),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                warn!(source, error = %e, "could not look for events stored while Kafka was unavailable; will retry")
            }
        }
    }
    Some(tokio::spawn(task.run()))
}

impl Redeliverer {
    async fn run(self) {
        let mut backoff = IDLE;
        while !self.pipeline.is_draining() {
            let mut blocked = false;
            let mut more = false;
            for source in &self.sources {
                match self.round(source).await {
                    Ok(Round::Blocked) => blocked = true,
                    Ok(Round::More) => more = true,
                    Ok(Round::Empty | Round::Busy) => {}
                    Err(e) => {
                        warn!(source, error = %e, "automatic re-delivery: the DLQ store failed; retrying");
                        blocked = true;
                    }
                }
            }
            let wait = if blocked {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            } else {
                backoff = IDLE;
                if more { Duration::ZERO } else { IDLE }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn selector(source: &str, limit: Option<usize>) -> Selector {
        Selector {
            source: Some(source.to_string()),
            class: Some(ErrorClass::Unavailable.as_str().to_string()),
            statuses: vec![Status::Pending],
            limit,
            ..Selector::default()
        }
    }

    /// The oldest pending `unavailable` entry of `source`.
    async fn oldest(&self, source: &str) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self
            .store
            .dead_letters()
            .list(&Self::selector(source, Some(1)))
            .await?
            .into_iter()
            .next())
    }

    /// Delivers `source`'s stored entries, oldest first, in batches.
    ///
    /// A source that keeps receiving events keeps adding a few behind the last batch; waiting
    /// for a moment with none left would leave it queued for as long as they come. So once a
    /// batch comes back short (the backlog is gone), the rest is delivered under the gate:
    /// new events of the source wait for it (one batch, milliseconds) instead of being stored
    /// behind, and then go to Kafka directly.
    async fn round(&self, source: &str) -> Result<Round, StoreError> {
        let queue = self.pipeline.queues().get(source);
        let (mut delivered, mut failed) = (0usize, 0usize);
        let mut round = Round::More;
        let mut checked = false;
        let mut gate = None;
        while delivered + failed < ROUND {
            // A stopping daemon starts no more deliveries (the rest waits for the next start).
            if self.pipeline.is_draining() {
                break;
            }
            let Some(oldest) = self.oldest(source).await? else {
                // Nothing pending: new events may go to Kafka directly again, unless one was
                // stored since (the gate keeps stores out while this is decided).
                if gate.is_none() {
                    gate = Some(queue.gate.write().await);
                    continue;
                }
                queue.queued.store(false, Ordering::Release);
                round = Round::Empty;
                break;
            };
            queue.queued.store(true, Ordering::Release);
            // Not a claim, a delivery attempt nor a failure mark while Kafka is unreachable.
            if !checked {
                if let Err(e) = self
                    .pipeline
                    .sink()
                    .is_reachable(Duration::from_secs(2))
                    .await
                {
                    tracing::debug!(source, error = %e, "Kafka still unavailable; stored events wait");
                    round = Round::Blocked;
                    break;
                }
                checked = true;
            }
            let batch = self.deliver_batch(source, oldest.id).await?;
            delivered += batch.delivered;
            failed += batch.failed;
            if let Some(stop) = batch.stop {
                round = stop;
                break;
            }
            if batch.claimed < BATCH && gate.is_none() {
                gate = Some(queue.gate.write().await);
            }
        }
        drop(gate);
        if let Some(m) = crate::telemetry::metrics::metrics() {
            for (result, n) in [("delivered", delivered), ("failed", failed)] {
                if n > 0 {
                    m.dlq_redelivered
                        .with_label_values(&[source, result])
                        .inc_by(n as u64);
                }
            }
        }
        if delivered + failed > 0 {
            info!(
                source,
                delivered,
                failed,
                "automatic re-delivery of events stored while Kafka was unavailable"
            );
            self.store
                .audit_trail()
                .append(&AuditEntry {
                    at: now_micros(),
                    actor: "switchyard".into(),
                    action: "replay (automatic)".into(),
                    selector: format!("--source {source} --class unavailable"),
                    count: i64::try_from(delivered + failed).unwrap_or(i64::MAX),
                    result: format!("delivered {delivered}, failed {failed}"),
                    ..AuditEntry::default()
                })
                .await?;
        }
        Ok(round)
    }

    /// Claims up to [`BATCH`] of `source`'s oldest pending entries — the first must be
    /// `oldest`, the oldest pending one; if another replica holds it, this one lets go of its
    /// claims and waits its turn — hands their records to the producer one after another (so
    /// they reach each partition in that order), awaits every report, and marks the entries
    /// acknowledged before the first transient failure replayed, in one transaction. An entry
    /// after a transient failure stays pending behind it (its records may have landed: they
    /// land again after the failed one, a re-sent suffix in order).
    async fn deliver_batch(&self, source: &str, oldest: i64) -> Result<Batch, StoreError> {
        let until = now_micros().saturating_add(i64::try_from(LEASE.as_micros()).unwrap_or(0));
        let claimed = self
            .store
            .dead_letters()
            .claim(&Self::selector(source, None), &self.owner, until, BATCH)
            .await?;
        let mut out = Batch {
            claimed: claimed.len(),
            ..Batch::default()
        };
        if claimed.first().map(|d| d.id) != Some(oldest)
            || !self
                .store
                .dead_letters()
                .confirm_claim(oldest, &self.owner, until)
                .await?
        {
            // Another replica claimed the oldest (or it was replayed) meanwhile.
            self.store.dead_letters().release_owner(&self.owner).await?;
            out.stop = Some(Round::Busy);
            return Ok(out);
        }
        let deadline = tokio::time::Instant::now() + LEASE / 2;
        let mut fates: Vec<Fate> = Vec::with_capacity(claimed.len());
        let mut reports = FuturesOrdered::new();
        // Hand-over, in the entries' order; stops at the first transient failure.
        for (i, dl) in claimed.iter().enumerate() {
            let fate = self.hand_over(i, dl, &mut reports, &mut fates).await;
            let transient = matches!(fate, Fate::Transient(_));
            fates.push(fate);
            if transient {
                break;
            }
        }
        // Every report, in order: none of these records may land after a re-sent one.
        while !reports.is_empty() {
            match tokio::time::timeout_at(deadline, reports.next()).await {
                Ok(Some(r)) => self.reported(r, &mut fates).await,
                Ok(None) => break,
                Err(_) => {
                    let why = format!(
                        "Kafka did not acknowledge the re-delivery within {:?}",
                        LEASE / 2
                    );
                    for fate in &mut fates {
                        if let Fate::Sent(n) = fate
                            && *n > 0
                        {
                            *fate = Fate::Transient(why.clone());
                        }
                    }
                    break;
                }
            }
        }
        let note = format!(
            "replayed automatically by {} once Kafka took events again",
            self.owner
        );
        let mut replayed = Vec::new();
        let now = now_micros();
        for (dl, fate) in claimed.iter().zip(&fates) {
            match fate {
                Fate::Sent(_) => replayed.push(dl.id),
                Fate::Definite(f) => {
                    warn!(id = dl.id, source, class = %f.class, error = %f.message, "a stored event cannot be delivered; left in the DLQ for on-call, its source goes on");
                    self.store
                        .dead_letters()
                        .mark_failed(dl.id, &self.owner, f.class.as_str(), &f.message, now)
                        .await?;
                    out.failed += 1;
                }
                Fate::Transient(message) if dl.attempts >= MAX_TRANSIENT_ATTEMPTS => {
                    // Kafka takes other events but never this one (a topic it cannot create,
                    // …): parked for on-call, so it does not hold its source's queue for ever.
                    warn!(id = dl.id, source, attempts = dl.attempts, error = %message, "a stored event keeps failing while Kafka is reachable; left in the DLQ as retries_exhausted for on-call, its source goes on");
                    self.store
                        .dead_letters()
                        .mark_failed(
                            dl.id,
                            &self.owner,
                            ErrorClass::RetriesExhausted.as_str(),
                            message,
                            now,
                        )
                        .await?;
                    out.failed += 1;
                }
                Fate::Transient(message) => {
                    // Still `unavailable`: it stays first in its source's queue.
                    self.store
                        .dead_letters()
                        .mark_failed(
                            dl.id,
                            &self.owner,
                            ErrorClass::Unavailable.as_str(),
                            message,
                            now,
                        )
                        .await?;
                    out.stop = Some(Round::Blocked);
                    break;
                }
            }
        }
        if !replayed.is_empty() {
            let asked = replayed.len();
            let marked = self
                .store
                .dead_letters()
                .mark_replayed_all(replayed, &self.owner, &note)
                .await?;
            if marked < asked as u64 {
                warn!(
                    source,
                    asked,
                    marked,
                    "automatically re-delivered entries were claimed by another instance meanwhile"
                );
            }
            out.delivered += asked;
        }
        // Entries behind a transient failure (not handed over, or handed over again later).
        self.store.dead_letters().release_owner(&self.owner).await?;
        Ok(out)
    }

    /// Encodes entry `i`'s records (its routes of today) and hands them to the producer;
    /// their reports are pushed to `reports`. A full producer queue is made room in by
    /// awaiting earlier reports (acted on in `fates`).
    async fn hand_over(
        &self,
        i: usize,
        dl: &DeadLetter,
        reports: &mut FuturesOrdered<Report>,
        fates: &mut [Fate],
    ) -> Fate {
        let Some(event) = dl.event.as_ref() else {
            return Fate::Definite(Failure {
                class: ErrorClass::Decode,
                message: "the stored event is missing".into(),
            });
        };
        let routes = match routes_for(&self.pipeline, dl, event) {
            Ok(r) => r,
            Err(f) => return Fate::Definite(f),
        };
        let sink = self.pipeline.sink();
        let mut handed = 0usize;
        for m in routes {
            let mut parts = match parts_of(event, &m) {
                Ok(p) => p,
                Err(f) => return Fate::Definite(f),
            };
            let record = match self.pipeline.encode_parts(event, &m, &mut parts).await {
                Ok(r) => r,
                Err(e @ EncodeError::Unavailable(_)) => return Fate::Transient(e.to_string()),
                Err(e) => return Fate::Definite(route_failure(&m, &e)),
            };
            match sink.ensure_topic(&record.topic).await {
                Ok(()) => {}
                Err(SinkError::Definite { class, message }) => {
                    return Fate::Definite(Failure { class, message });
                }
                Err(e) => return Fate::Transient(e.to_string()),
            }
            loop {
                match sink.enqueue(&record) {
                    Ok(q) => {
                        handed += 1;
                        reports.push_back(Report {
                            entry: i,
                            topic: record.topic.clone(),
                            queued: Some(q),
                        });
                        break;
                    }
                    Err(Refused::QueueFull) => match reports.next().await {
                        Some(r) => self.reported(r, fates).await,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    },
                    Err(Refused::Failed(Attempt::Fail(class, message))) => {
                        return Fate::Definite(Failure { class, message });
                    }
                    Err(Refused::Failed(attempt)) => {
                        let message = self.act_on(&record.topic, attempt).await;
                        return Fate::Transient(message);
                    }
                }
            }
        }
        Fate::Sent(handed)
    }

    /// Acts on one delivery report: the record's entry is one record closer to delivered, or
    /// failed (definitely, or transiently: then it stops its source's queue).
    async fn reported(&self, r: Reported, fates: &mut [Fate]) {
        let Some(fate) = fates.get_mut(r.entry) else {
            return;
        };
        match r.result {
            Ok(()) => {}
            Err((producer, e)) => {
                let attempt = match producer {
                    Some(p) => self.pipeline.sink().classify_report(&p, e),
                    None => Attempt::Retry(e.to_string()),
                };
                let failed = match attempt {
                    Attempt::Fail(class, message) => Fate::Definite(Failure { class, message }),
                    other => Fate::Transient(self.act_on(&r.topic, other).await),
                };
                // The first failure of an entry is the one it is marked with.
                if matches!(fate, Fate::Sent(_)) {
                    *fate = failed;
                }
            }
        }
    }

    /// Acts on a transient failure (a new producer, the topic checked again); its message.
    async fn act_on(&self, topic: &str, attempt: Attempt) -> String {
        match self.pipeline.sink().recover(topic, attempt).await {
            Ok(m) => m,
            Err((_, m)) => m,
        }
    }
}

/// Entries of one source claimed and handed over at once.
const BATCH: usize = 256;

/// What one batch came to.
#[derive(Default)]
struct Batch {
    /// Entries claimed (fewer than [`BATCH`]: the backlog is gone).
    claimed: usize,
    delivered: usize,
    failed: usize,
    /// Why the round stops after it (`None`: it may go on).
    stop: Option<Round>,
}

/// What became of one entry of a batch.
enum Fate {
    /// Its records (this many) were handed over; no failure reported (yet).
    Sent(usize),
    /// It can never be delivered as it is: left for on-call, its source goes on.
    Definite(Failure),
    /// Kafka or the registry is unavailable: it and everything after it wait.
    Transient(String),
}

/// A record of a batch with the producer.
struct Report {
    entry: usize,
    topic: String,
    queued: Option<Queued>,
}

/// A record's delivery report.
struct Reported {
    entry: usize,
    topic: String,
    /// A failure, with the producer that reported it.
    result: Result<(), (Option<Producer>, KafkaError)>,
}

/// The producer a record was handed to.
type Producer = Arc<FutureProducer<KafkaLog>>;

impl std::future::Future for Report {
    type Output = Reported;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Reported> {
        use std::task::Poll;
        let result = match self.queued.as_mut() {
            None => Ok(()),
            Some(q) => match q.report.as_mut() {
                None => Ok(()),
                Some(report) => match std::pin::Pin::new(report).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(_))) => Ok(()),
                    Poll::Ready(Ok(Err((e, _)))) => Err(e),
                    Poll::Ready(Err(_)) => Err(KafkaError::Canceled),
                },
            },
        };
        let queued = self.queued.take();
        let topic = std::mem::take(&mut self.topic);
        let result = match (result, queued) {
            (Ok(()), Some(q)) => {
                KafkaSink::observe_delivered(&topic, q.enqueued);
                Ok(())
            }
            (Ok(()), None) => Ok(()),
            (Err(e), q) => Err((q.map(|q| q.producer), e)),
        };
        Poll::Ready(Reported {
            entry: self.entry,
            topic,
            result,
        })
    }
}

/// Re-deliveries of one entry that may fail transiently while Kafka answers (each a round,
/// at most 8 s apart) before it is parked as `retries_exhausted`.
const MAX_TRANSIENT_ATTEMPTS: i64 = 30;
