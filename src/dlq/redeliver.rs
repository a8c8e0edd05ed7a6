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
//!    oldest pending `unavailable` entry of the source ──► claim it (owner, lease)
//!      ──► still the oldest? ──► confirm claim ──► deliver ──► ack ──► mark replayed ──► next
//!    none left: source un-queued (under its gate, so no store is in between)
//! ```
//!
//! Invariants (test: `tests/it/redeliver.rs`
//! `github_delivery_while_kafka_is_down_reaches_kafka_once_in_order_without_a_command`):
//! - An entry is delivered only while this task holds its claim and it is the oldest pending
//!   `unavailable` entry of its source, and the next one only after the previous was
//!   acknowledged by Kafka and marked `replayed`: stored events of a source reach Kafka in the
//!   order they were stored, and with a shared store several replicas never deliver an entry
//!   twice (claims) nor overtake one another (the oldest-entry check).
//! - While a source has such entries pending, each new event of that source that a route
//!   takes is stored behind them instead of being produced (answered 200 `dead_lettered`), so
//!   a request that starts after another was answered `dead_lettered` reaches Kafka after it.
//!   Requests in flight at the same moment have no order between them, as without the DLQ.
//!   Another replica learns that a source is queued from the store, within a second.
//! - An entry that fails for a reason of its own (encode, schema, unroutable) is marked with
//!   that class and left pending for on-call (`dlq replay`); the rest of its source goes on.
//! - Every round that delivered or failed entries is written to the audit log, as
//!   `dlq replay` is (actor `switchyard`, action `replay (automatic)`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::replay::{deliver_entry, owner_id};
use super::{AuditEntry, DeadLetter, DlqError, DlqStore, Selector, Status};
use crate::config::{Config, SourceKind, WhenUnavailable};
use crate::error::ErrorClass;
use crate::event::now_micros;
use crate::pipeline::Pipeline;

/// How often the task looks for stored entries when there is nothing to do.
const IDLE: Duration = Duration::from_secs(1);
/// The longest wait between attempts while Kafka stays unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long a claim holds; a delivery is given at most half of it.
const LEASE: Duration = Duration::from_secs(60);
/// Entries of one source delivered in one round before the next source's turn.
const ROUND: usize = 1_000;

/// Whether each webhook source has events waiting in the DLQ for Kafka (shared by the
/// sources' request handlers and the re-delivery task).
#[derive(Default)]
pub struct Queues {
    by_source: Mutex<HashMap<String, Arc<SourceQueue>>>,
}

impl Queues {
    /// The queue state of `source` (created on first use; one per configured source).
    pub fn get(&self, source: &str) -> Arc<SourceQueue> {
        let mut map = self
            .by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(source.to_string()).or_default())
    }
}

/// One source's queue state: `queued` while it has `unavailable` entries pending; `gate`
/// orders storing an event behind them against the task finding the queue empty.
#[derive(Default)]
pub struct SourceQueue {
    queued: AtomicBool,
    gate: tokio::sync::Mutex<()>,
}

impl SourceQueue {
    /// True while the source has events waiting in the DLQ for Kafka.
    pub fn is_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Stores an event with `store` (a DLQ write) while no un-queueing can happen, and marks
    /// the source queued if it succeeded.
    pub async fn store_behind<T, E>(
        &self,
        store: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let _gate = self.gate.lock().await;
        let stored = store.await;
        if stored.is_ok() {
            self.queued.store(true, Ordering::Release);
        }
        stored
    }

    /// Like [`SourceQueue::store_behind`], but only if the source is (still) queued; `None`
    /// if it is not, and the event should be delivered to Kafka directly.
    pub async fn store_if_queued<T, E>(
        &self,
        store: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<Result<T, E>> {
        let _gate = self.gate.lock().await;
        if !self.is_queued() {
            return None;
        }
        Some(store.await)
    }
}

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
    store: Arc<DlqStore>,
    pipeline: Arc<Pipeline>,
    sources: Vec<String>,
    owner: String,
}

/// Starts the re-delivery task for the webhook sources with `when_unavailable =
/// "dead_letter"` (`None` if there are none). Before it returns, sources that have entries
/// pending from before (a restart) are marked queued.
pub async fn start(
    store: Arc<DlqStore>,
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
    async fn oldest(&self, source: &str) -> Result<Option<DeadLetter>, DlqError> {
        Ok(self
            .store
            .list(&Self::selector(source, Some(1)))
            .await?
            .into_iter()
            .next())
    }

    /// Delivers `source`'s stored entries, oldest first, each after the previous was acked.
    async fn round(&self, source: &str) -> Result<Round, DlqError> {
        let queue = self.pipeline.queues().get(source);
        let (mut delivered, mut failed) = (0usize, 0usize);
        let mut round = Round::More;
        let mut checked = false;
        for _ in 0..ROUND {
            // A stopping daemon starts no more deliveries (the rest waits for the next start).
            if self.pipeline.is_draining() {
                break;
            }
            let Some(oldest) = self.oldest(source).await? else {
                // Nothing pending: new events may go to Kafka directly again, unless one was
                // stored since (the gate keeps stores out while this is decided).
                let _gate = queue.gate.lock().await;
                if self.oldest(source).await?.is_none() {
                    queue.queued.store(false, Ordering::Release);
                    round = Round::Empty;
                    break;
                }
                continue;
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
            match self.deliver_oldest(source, &oldest).await? {
                Step::Delivered => delivered += 1,
                Step::Failed => failed += 1,
                Step::Busy => {
                    round = Round::Busy;
                    break;
                }
                Step::Blocked => {
                    round = Round::Blocked;
                    break;
                }
            }
        }
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
                .audit(&AuditEntry {
                    at: now_micros(),
                    actor: "switchyard".into(),
                    action: "replay (automatic)".into(),
                    selector: format!("--source {source} --class unavailable"),
                    count: i64::try_from(delivered + failed).unwrap_or(i64::MAX),
                    result: format!("delivered {delivered}, failed {failed}"),
                })
                .await?;
        }
        Ok(round)
    }

    /// Claims, delivers and marks the source's oldest entry, if this task can claim it and
    /// it is still the oldest.
    async fn deliver_oldest(&self, source: &str, oldest: &DeadLetter) -> Result<Step, DlqError> {
        let until = now_micros().saturating_add(i64::try_from(LEASE.as_micros()).unwrap_or(0));
        let mut only = Self::selector(source, None);
        only.ids = vec![oldest.id];
        let Some(dl) = self
            .store
            .claim(&only, &self.owner, until, 1)
            .await?
            .into_iter()
            .next()
        else {
            // Another replica claimed it (or it was replayed) meanwhile.
            return Ok(Step::Busy);
        };
        if !self.store.confirm_claim(dl.id, &self.owner, until).await? {
            return Ok(Step::Busy);
        }
        let abandoned = AtomicBool::new(false);
        let delivery = tokio::time::timeout(
            LEASE / 2,
            deliver_entry(&self.pipeline, &dl, &|| abandoned.load(Ordering::Relaxed)),
        )
        .await;
        abandoned.store(true, Ordering::Relaxed);
        let now = now_micros();
        match delivery {
            Ok(Ok(_topics)) => {
                let note = format!(
                    "replayed automatically by {} once Kafka took events again",
                    self.owner
                );
                if !self.store.mark_replayed(dl.id, &self.owner, &note).await? {
                    warn!(
                        id = dl.id,
                        "an automatically re-delivered entry was claimed by another instance meanwhile"
                    );
                }
                Ok(Step::Delivered)
            }
            Ok(Err(f)) if f.class.is_transient() && dl.attempts >= MAX_TRANSIENT_ATTEMPTS => {
                // Kafka takes other events but never this one (a topic it cannot create, …):
                // parked for on-call, so it does not hold its source's queue for ever.
                warn!(id = dl.id, source, attempts = dl.attempts, error = %f.message, "a stored event keeps failing while Kafka is reachable; left in the DLQ as retries_exhausted for on-call, its source goes on");
                self.store
                    .mark_failed(
                        dl.id,
                        &self.owner,
                        ErrorClass::RetriesExhausted.as_str(),
                        &f.message,
                        now,
                    )
                    .await?;
                Ok(Step::Failed)
            }
            Ok(Err(f)) if f.class.is_transient() => {
                // Still `unavailable`: it stays first in its source's queue.
                self.store
                    .mark_failed(
                        dl.id,
                        &self.owner,
                        ErrorClass::Unavailable.as_str(),
                        &f.message,
                        now,
                    )
                    .await?;
                Ok(Step::Blocked)
            }
            Ok(Err(f)) => {
                warn!(id = dl.id, source, class = %f.class, error = %f.message, "a stored event cannot be delivered; left in the DLQ for on-call, its source goes on");
                self.store
                    .mark_failed(dl.id, &self.owner, f.class.as_str(), &f.message, now)
                    .await?;
                Ok(Step::Failed)
            }
            Err(_) => {
                let why = format!(
                    "Kafka did not acknowledge the re-delivery within {:?}",
                    LEASE / 2
                );
                self.store
                    .mark_failed(
                        dl.id,
                        &self.owner,
                        ErrorClass::Unavailable.as_str(),
                        &why,
                        now,
                    )
                    .await?;
                Ok(Step::Blocked)
            }
        }
    }
}

/// Re-deliveries of one entry that may fail transiently while Kafka answers (each a round,
/// at most 8 s apart) before it is parked as `retries_exhausted`.
const MAX_TRANSIENT_ATTEMPTS: i64 = 30;

/// What became of one entry.
enum Step {
    Delivered,
    Failed,
    Busy,
    Blocked,
}
