//! `switchyard dlq replay`: dead letters back through today's routes, schemas and sink.
//!
//! Invariant: an entry is marked `replayed` only after the Kafka delivery report for it, so a
//! replay killed at any instant leaves every undelivered entry `pending` (delivered-but-unmarked
//! entries are the at-least-once window: the deliveries in flight). Entries are claimed in
//! batches with an owner (`host:pid`) and a lease before delivery, so concurrent replays of the
//! same selection never deliver an entry twice:
//!
//! ```text
//!  claim batch (owner, lease) ──► per entry: wait for --rate ──► confirm claim ──► deliver ──► mark
//!        │                                     (atomic: still ours? extend)        (only if ours)
//!        └── keep_leases: every lease/3 renew every claim still ours
//!            (an open entry not renewed, or no renewal for a whole lease: lost → stop)
//! ```
//!
//! A replay that lost a claim (it stalled past its lease and another replay took the entry
//! over) starts no more deliveries, releases what it still holds and reports why. Claims of a
//! dead owner on this host are taken over at once, others when their lease expires. Dry runs
//! touch neither the store, the registry nor Kafka.

pub(crate) mod redeliver;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::json;
use tracing::warn;

use crate::ack::{Failure, Waiter};
use crate::encode::record_parts;
use crate::error::ErrorClass;
use crate::event::{Event, now_micros};
use crate::pipeline::Pipeline;
use crate::router::RouteMatch;
use crate::store::{DeadLetter, Selector, Status, Store, StoreError};
use crate::telemetry::traces::Traced;

/// How a replay runs.
#[derive(Debug, Clone)]
pub(crate) struct ReplayOptions {
    /// Which entries.
    pub selector: Selector,
    /// Print what would happen; change nothing.
    pub dry_run: bool,
    /// At most this many entries per second.
    pub rate: Option<f64>,
    /// Also replay entries already replayed.
    pub force: bool,
    /// Entries claimed at once.
    pub batch: usize,
    /// How long a claim holds without renewal (at least [`MIN_LEASE`]); renewed every third
    /// of it while the replay works.
    pub lease: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Set to stop the replay: no delivery starts after it (the entries left stay pending;
    /// deliveries in progress finish). For the admin API's jobs.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl ReplayOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Why entries of a cancelled replay were not delivered.
pub(crate) const CANCELLED: &str = "the replay was cancelled";

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            selector: Selector::default(),
            dry_run: false,
            rate: None,
            force: false,
            batch: 200,
            lease: Duration::from_secs(120),
            concurrency: 32,
            cancel: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplayReport {
    /// Entries delivered and marked replayed (or, dry run: that would be produced).
    pub delivered: usize,
    /// Entries that failed again (still pending, attempts + 1).
    pub failed: usize,
    /// Claimed entries not delivered because this replay lost their claim (still pending).
    pub not_delivered: usize,
    /// Why the replay stopped before the end of its selection: it lost its claims (another
    /// replay took them over after its lease expired, or the store could not renew them).
    pub stopped: Option<String>,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Output could not be written.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// This process's claim owner: `host:pid`.
pub(crate) fn owner_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

use crate::store::hostname;

/// Releases claims held by replays on this host whose process is gone.
pub(crate) async fn take_over_dead_claims(store: &Store) -> Result<u64, StoreError> {
    let host = hostname();
    let mut released = 0;
    for owner in store.dead_letters().claim_owners(now_micros()).await? {
        let Some((h, pid)) = owner.rsplit_once(':') else {
            continue;
        };
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if h == host && pid != std::process::id().to_string() && !alive {
            released += store.dead_letters().release_owner(&owner).await?;
        }
    }
    Ok(released)
}

/// Runs a replay, writing one JSON line per entry to `out`.
pub(crate) async fn replay(
    store: &Store,
    pipeline: &Arc<Pipeline>,
    opts: &ReplayOptions,
    out: &mut (dyn Write + Send),
) -> Result<ReplayReport, ReplayError> {
    let mut selector = opts.selector.clone();
    selector.statuses = if opts.force {
        vec![Status::Pending, Status::Replayed]
    } else {
        vec![Status::Pending]
    };
    if opts.dry_run {
        return dry_run(store, pipeline, &selector, out).await;
    }
    take_over_dead_claims(store).await?;
    let owner = owner_id();
    let lease = Lease::new(opts.lease);
    let started = Instant::now();
    let mut sent = 0usize;
    let mut report = ReplayReport::default();
    let mut remaining = selector.limit;
    loop {
        let batch = remaining.map_or(opts.batch, |r| r.min(opts.batch));
        if batch == 0 || opts.cancelled() {
            break;
        }
        let mut claim_sel = selector.clone();
        claim_sel.limit = None;
        let claimed_at = Instant::now();
        let claimed = store
            .dead_letters()
            .claim(&claim_sel, &owner, lease.until(), batch)
            .await?;
        if claimed.is_empty() {
            break;
        }
        // Each entry once per run: failed ones stay pending for the next run, and with
        // --force replayed ones would otherwise be claimed again and again.
        selector.after_id = claimed.iter().map(|d| d.id).max();
        if let Some(r) = remaining.as_mut() {
            *r = r.saturating_sub(claimed.len());
        }
        let mut pace = Vec::with_capacity(claimed.len());
        for _ in &claimed {
            pace.push(
                opts.rate
                    .map(|r| started + Duration::from_secs_f64(sent as f64 / r)),
            );
            sent += 1;
        }
        let held = Held::new(claimed.iter().map(|d| d.id));
        let entries = futures::stream::iter(claimed.into_iter().zip(pace))
            .map(|(dl, at)| {
                let (held, owner) = (&held, owner.as_str());
                async move {
                    if let Some(at) = at {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    if opts.cancelled() {
                        held.lose(CANCELLED.into());
                    }
                    let outcome = replay_entry(store, pipeline, &dl, owner, lease, held).await;
                    outcome.map(|o| (dl, o))
                }
            })
            .buffered(opts.concurrency.max(1));
        let work = async {
            futures::pin_mut!(entries);
            while let Some(entry) = entries.next().await {
                let (dl, outcome) = entry?;
                report.write(out, &dl, outcome)?;
            }
            Ok::<(), ReplayError>(())
        };
        tokio::select! {
            done = work => done?,
            never = keep_leases(store, &owner, lease, &held, claimed_at) => match never {},
        }
        if let Some(why) = held.lost() {
            // What this replay still holds goes back at once, for the replay that took the
            // rest (or a rerun).
            store.dead_letters().release_owner(&owner).await?;
            report.stopped = Some(why);
            break;
        }
    }
    Ok(report)
}

/// How long a replay's claims hold without renewal.
#[derive(Debug, Clone, Copy)]
struct Lease(Duration);

impl Lease {
    fn new(d: Duration) -> Lease {
        Lease(d.max(MIN_LEASE))
    }

    /// A claim made or renewed now holds until (micros).
    fn until(self) -> i64 {
        now_micros().saturating_add(i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX / 2))
    }
}

/// The shortest lease a replay takes (renewed every third of it).
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(1);

/// The claims of the batch a replay works on, shared by its deliveries and the renewal of
/// their lease ([`keep_leases`]).
struct Held {
    /// Claimed entries not yet finished (a finished entry is marked, which ends the claim).
    open: Mutex<BTreeSet<i64>>,
    /// Why this replay lost (some of) its claims, once it did: it starts no more deliveries.
    lost: Mutex<Option<String>>,
}

impl Held {
    fn new(ids: impl IntoIterator<Item = i64>) -> Held {
        Held {
            open: Mutex::new(ids.into_iter().collect()),
            lost: Mutex::new(None),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `id` is finished (about to be marked): its claim ends with the mark.
    fn close(&self, id: i64) {
        self.open().remove(&id);
    }

    fn lost(&self) -> Option<String> {
        self.lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn lose(&self, why: String) {
        let mut lost = self
            .lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lost.is_none() {
            warn!(reason = %why, "this replay lost its claim; it stops");
            *lost = Some(why);
        }
    }
}

/// Renews the lease of the claims `held` every third of it, for as long as it is polled (the
/// replay drops it once the batch is done). A renewal that finds an open entry no longer
/// claimed by `owner` (another replay took it over), or no renewal for a whole lease (the
/// store unreachable), means the claims are lost: the replay starts no more deliveries.
async fn keep_leases(
    store: &Store,
    owner: &str,
    lease: Lease,
    held: &Held,
    claimed_at: Instant,
) -> std::convert::Infallible {
    let mut renewed_at = claimed_at;
    loop {
        tokio::time::sleep(lease.0 / 3).await;
        if held.lost().is_some() {
            continue;
        }
        let open: Vec<i64> = held.open().iter().copied().collect();
        if open.is_empty() {
            continue;
        }
        match store
            .dead_letters()
            .renew_claims(owner, lease.until())
            .await
        {
            Ok(renewed) => {
                renewed_at = Instant::now();
                let renewed: BTreeSet<i64> = renewed.into_iter().collect();
                // Entries finished meanwhile are no longer claimed and no longer open.
                let still_open = held.open();
                let taken: Vec<i64> = open
                    .into_iter()
                    .filter(|id| !renewed.contains(id) && still_open.contains(id))
                    .collect();
                drop(still_open);
                if let Some(first) = taken.first() {
                    held.lose(format!(
                        "{} claimed entries (the first: id {first}) are no longer claimed by this \
                         replay: its lease ({}) expired before it was renewed and another replay \
                         took them over",
                        taken.len(),
                        humantime::format_duration(lease.0)
                    ));
                }
            }
            Err(e) if renewed_at.elapsed() >= lease.0 => held.lose(format!(
                "the claims could not be renewed for a whole lease ({}): {e}",
                humantime::format_duration(lease.0)
            )),
            Err(e) => warn!(error = %e, "renewing the replay's claims failed; retrying"),
        }
    }
}

/// What became of one claimed entry.
enum EntryOutcome {
    /// Delivered; `marked` false if its claim had been taken over meanwhile.
    Delivered { topic: String, marked: bool },
    /// Failed again (still pending, attempts + 1).
    Failed(Failure),
    /// Not delivered: this replay no longer holds its claim.
    NotDelivered(String),
}

/// Delivers one claimed entry if this replay still holds its claim (checked, and extended,
/// atomically right before the delivery), then marks it (only if still its owner).
async fn replay_entry(
    store: &Store,
    pipeline: &Pipeline,
    dl: &DeadLetter,
    owner: &str,
    lease: Lease,
    held: &Held,
) -> Result<EntryOutcome, StoreError> {
    if let Some(why) = held.lost() {
        return Ok(EntryOutcome::NotDelivered(why));
    }
    if !store
        .dead_letters()
        .confirm_claim(dl.id, owner, lease.until())
        .await?
    {
        held.close(dl.id);
        let why = format!(
            "entry {} is no longer claimed by this replay: its lease ({}) expired and another \
             replay took it over",
            dl.id,
            humantime::format_duration(lease.0)
        );
        held.lose(why.clone());
        return Ok(EntryOutcome::NotDelivered(why));
    }
    // Retries stop once the claim may be another replay's (the renewal lost it): no delivery
    // may land after that replay's.
    let delivered = deliver_entry(pipeline, dl, &|| held.lost().is_some()).await;
    held.close(dl.id);
    Ok(match delivered {
        Ok(topic) => {
            let marked = store
                .dead_letters()
                .mark_replayed(dl.id, owner, &format!("replayed by {owner}"))
                .await?;
            if !marked {
                held.lose(format!(
                    "entry {} was delivered after another replay took its claim over",
                    dl.id
                ));
            }
            EntryOutcome::Delivered { topic, marked }
        }
        Err(f) => {
            store
                .dead_letters()
                .mark_failed(dl.id, owner, f.class.as_str(), &f.message, now_micros())
                .await?;
            EntryOutcome::Failed(f)
        }
    })
}

impl ReplayReport {
    /// Counts `outcome` and writes its JSON line.
    fn write(
        &mut self,
        out: &mut (dyn Write + Send),
        dl: &DeadLetter,
        outcome: EntryOutcome,
    ) -> std::io::Result<()> {
        let line = match outcome {
            EntryOutcome::Delivered { topic, marked } => {
                self.delivered += 1;
                json!({"id": dl.id, "result": "delivered", "topic": topic, "marked": marked})
            }
            EntryOutcome::Failed(f) => {
                self.failed += 1;
                json!({"id": dl.id, "result": "failed", "class": f.class.as_str(), "message": f.message})
            }
            EntryOutcome::NotDelivered(why) => {
                self.not_delivered += 1;
                json!({"id": dl.id, "result": "not_delivered", "message": why})
            }
        };
        writeln!(out, "{line}")
    }
}

/// The routes an entry goes to today: its own route if it had one, else every match.
pub(super) fn routes_for(
    pipeline: &Pipeline,
    dl: &DeadLetter,
    event: &Event,
) -> Result<Vec<RouteMatch>, Failure> {
    let matches: Vec<RouteMatch> = pipeline
        .routes()
        .route(event)
        .into_iter()
        .map(|m| {
            m.map_err(|e| Failure {
                class: ErrorClass::Unroutable,
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    let chosen: Vec<RouteMatch> = match &dl.route {
        Some(r) => matches.into_iter().filter(|m| &*m.route == r).collect(),
        None => matches,
    };
    if chosen.is_empty() {
        return Err(Failure {
            class: ErrorClass::Unroutable,
            message: match &dl.route {
                Some(r) => format!(
                    "route `{r}` no longer takes events from source `{}`",
                    event.source
                ),
                None => format!("no route takes events from source `{}`", event.source),
            },
        });
    }
    Ok(chosen)
}

pub(crate) async fn deliver_entry(
    pipeline: &Pipeline,
    dl: &DeadLetter,
    abandoned: &(dyn Fn() -> bool + Send + Sync),
) -> Result<String, Failure> {
    let traces = pipeline.traces();
    let span = traces.root(
        "dlq.replay",
        SpanKind::Producer,
        None,
        if traces.is_on() {
            vec![
                KeyValue::new("switchyard.dead_letter.id", dl.id),
                KeyValue::new("switchyard.event_id", dl.event_id.clone()),
                KeyValue::new("switchyard.source", dl.source.clone()),
                KeyValue::new("error.type", dl.class.clone()),
            ]
        } else {
            Vec::new()
        },
    );
    let delivered = deliver_entry_traced(pipeline, dl, &span, abandoned).await;
    if let Err(f) = &delivered {
        span.fail(&f.message);
    }
    delivered
}

async fn deliver_entry_traced(
    pipeline: &Pipeline,
    dl: &DeadLetter,
    span: &Traced,
    abandoned: &(dyn Fn() -> bool + Send + Sync),
) -> Result<String, Failure> {
    let event = dl.event.as_ref().ok_or_else(|| Failure {
        class: ErrorClass::Decode,
        message: "the stored event is missing".into(),
    })?;
    let mut topics = Vec::new();
    for m in routes_for(pipeline, dl, event)? {
        // The live path's delivery of one route (encode, produce, wait for the report); a
        // failure is the entry's to record, never a new dead letter.
        pipeline
            .deliver_route(event, &m, &Waiter::forever(), abandoned, span)
            .await
            .map_err(|failed| failed.failure)?;
        topics.push(m.topic);
    }
    Ok(topics.join(","))
}

async fn dry_run(
    store: &Store,
    pipeline: &Pipeline,
    selector: &Selector,
    out: &mut (dyn Write + Send),
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    for dl in store.dead_letters().list(selector).await? {
        let Some(event) = dl.event.as_ref() else {
            continue;
        };
        match routes_for(pipeline, &dl, event) {
            Err(f) => {
                report.failed += 1;
                writeln!(
                    out,
                    "{}",
                    json!({"id": dl.id, "would_fail": f.class.as_str(), "message": f.message})
                )?;
            }
            Ok(matches) => {
                let mut would_fail = None;
                for m in &matches {
                    let parts = match record_parts(event, m) {
                        Ok(p) => p,
                        Err(e) => {
                            writeln!(
                                out,
                                "{}",
                                json!({"id": dl.id, "route": &*m.route, "would_fail": e.class().as_str(), "message": e.to_string()})
                            )?;
                            would_fail = Some(e.class());
                            continue;
                        }
                    };
                    let key_json = parts.key.clone().map(crate::avro::json::avro_to_json);
                    let Some(value) = parts.value else {
                        writeln!(
                            out,
                            "{}",
                            json!({"id": dl.id, "would_produce": {"topic": m.topic, "route": &*m.route, "key": key_json, "value": null}})
                        )?;
                        continue;
                    };
                    // Checked locally: a dry run registers nothing and produces nothing.
                    let problem = match parts.value_schema.encode_locally(value.clone()) {
                        Err(e) => Some((ErrorClass::Encode, e)),
                        Ok(bytes) => {
                            // Confluent framing (5 bytes) on the value and the string key.
                            let size = bytes.len() + 5 + event.id.as_str().len() + 7;
                            let max = pipeline.sink().max_message_bytes();
                            (size > max).then(|| {
                                (ErrorClass::Oversize, format!("record of about {size} bytes, over message.max.bytes = {max}"))
                            })
                        }
                    };
                    if let Some((class, message)) = problem {
                        writeln!(
                            out,
                            "{}",
                            json!({"id": dl.id, "route": &*m.route, "would_fail": class.as_str(), "message": message})
                        )?;
                        would_fail = Some(class);
                        continue;
                    }
                    writeln!(
                        out,
                        "{}",
                        json!({
                            "id": dl.id,
                            "would_produce": {
                                "topic": m.topic,
                                "route": &*m.route,
                                "key": key_json,
                                "value": crate::avro::json::avro_to_json(value),
                            }
                        })
                    )?;
                }
                if would_fail.is_some() {
                    report.failed += 1;
                } else {
                    report.delivered += 1;
                }
            }
        }
    }
    Ok(report)
}
