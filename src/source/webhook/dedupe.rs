//! Deduplication of provider retries: an event id accepted by a source within its window is
//! answered 200 again without a second Kafka record.
//!
//! - **Durable**: accepted ids are written to the embedded store (the DLQ store's
//!   `webhook_seen` table) *before* the 200 goes out, so they survive a restart, even kill -9
//!   (SQLite commits them without an fsync: only an OS crash or power loss can forget the last
//!   few, and a retry of one of those is then delivered again — at-least-once).
//!   Writes from concurrent requests share one transaction (group commit). With the embedded
//!   store, each HTTP thread commits the ids its requests accepted itself: once the requests
//!   of a few turns of its event loop have joined them (at most 16), when it has
//!   nothing else to run (tokio's `on_thread_park`, just before it would sleep), and at once
//!   when [`FLUSH_AT`] wait or the oldest has waited [`FLUSH_AFTER`]: a lone request waits for
//!   one commit, a busy thread gets batches without a timed gathering delay, and nothing
//!   crosses a thread (handing ids to a writer thread and being woken by it cost more than the
//!   commit — half the CPU of a request). The commit is a page or two written into the WAL of the ids'
//!   log, a SQLite file of its own (its write lock is never held by a dead letter or an index
//!   move), no fsync: WAL checkpoints (which fsync) and moves into the keyed index in the store
//!   file run on the `switchyard-dedupe` thread, on a connection of their own; when that thread
//!   (deleting moved ids from the log) or the other HTTP thread holds the ids' connection, the
//!   ids are handed to it instead of waiting. This is the one write on an event
//!   loop: normally microseconds of page-cache writes, though a kernel throttling dirty pages
//!   could hold that thread's connections for the length of one. Other stores (PostgreSQL) and
//!   requests outside the HTTP threads go through the writer, which commits whatever is queued.
//! - **Fast**: the newest ids are also kept in memory (bounded), by a 128-bit keyed hash of the
//!   id ([`Print`]: no string copies, one hash per request), and 64-bit fingerprints of the
//!   ones memory dropped (see [`memory::Older`]); while these know every id of the window, a
//!   new id costs no store read (a request that waited for a pool thread to read SQLite cost
//!   twice as much CPU). After a restart, memory is reloaded from the store before serving, and
//!   the window's older ids are fingerprinted again in the background once it serves (read
//!   once, at most [`memory::OLDER_CAP`]; until then an id memory lacks is looked up in the
//!   store).
//! - **Shared**: with a PostgreSQL DLQ store several instances behind one address share the
//!   ids, and an id memory does not know is *claimed* in the store before it is delivered
//!   (`switchyard_webhook_claims`: an insert only one instance wins; the winner's commit that
//!   records the accepted id ends its claim, a failed delivery releases it, an abandoned one
//!   expires [`CLAIM_MARGIN`] after the request's `ack_timeout`). So copies landing on two
//!   instances at the same moment make one record: the loser waits for the winner's outcome
//!   (polling the store) and answers `duplicate` once the id is durable, or 503 if the winner
//!   failed, died or did not finish within `ack_timeout` (the provider retries). One round trip
//!   more per new id than a lookup; the embedded store (one instance) never claims.
//! - **Concurrent retries**: the first request for an id leads; copies arriving meanwhile wait
//!   for its outcome and answer the same, so five simultaneous deliveries make one record.
//! - **Bounded**: ids older than the window are purged hourly (a chunk per transaction); memory
//!   holds at most [`MEMORY_CAP`] ids and [`memory::OLDER_CAP`] fingerprints. The embedded
//!   store appends ids to a log (cheap) and moves them into its keyed index only when memory
//!   could no longer hold them all, after the answers went out.

mod memory;
mod writes;

pub(crate) use self::writes::http_thread_runtime;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use self::memory::{Memory, Older, Print, Printer};
use self::writes::Writes;
use crate::store::{LocalIds, SeenIds, SharedIds, Store, WebhookIdClaim, WebhookIdState};

/// Ids kept in memory at most.
pub(crate) const MEMORY_CAP: usize = 200_000;

/// With a shared store, how much longer than its request's `ack_timeout` the claim on an id
/// holds if its instance never ends it (it died): until then copies on other instances answer
/// 503, after it the id may be claimed again.
pub(crate) const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// How soon, then at most how often, a copy whose id another instance is delivering asks the
/// shared store how that delivery ended.
const FOLLOW_POLL_FIRST: Duration = Duration::from_millis(5);
const FOLLOW_POLL_MAX: Duration = Duration::from_millis(100);

/// How the leading request for an id ended, as followers answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Durable (in Kafka or the DLQ): followers answer 200 "duplicate".
    Accepted,
    /// Not durable: followers answer 503 too (the provider retries).
    Failed,
}

/// The claim on an id.
pub(crate) enum Claim {
    /// Accepted before, within the window.
    Seen,
    /// Another request is delivering it: wait for its outcome (an error: it ended without one).
    Follow(oneshot::Receiver<Outcome>),
    /// This request delivers it; finish with [`Lead::finish`] (dropping it counts as failed).
    Lead(Lead),
    /// A shared store cannot say whether another instance delivers it: answer 503 (the
    /// provider retries) rather than deliver a second copy.
    Unavailable,
}

/// An id marked in flight in memory while its claim is asked of the shared store: if the
/// request is cancelled during that wait, the mark is removed (and the copies following it
/// fail) instead of staying until the process ends.
struct Unclaimed<'a> {
    dedupe: &'a Dedupe,
    p: Print,
    armed: bool,
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.dedupe.end(self.p, None, Outcome::Failed);
        }
    }
}

/// The leading request for an id.
pub(crate) struct Lead {
    p: Print,
    /// The id's key for the store (`None` when memory was unusable: nothing to store).
    key: Option<String>,
    /// This instance holds the id's claim in a shared store (ended by storing the id, or
    /// released if the delivery fails).
    claimed: bool,
    /// Memory has been told how the delivery ended.
    ended: bool,
    dedupe: Arc<Dedupe>,
    /// A second key claimed for the same request (the digest of a body whose delivery id is
    /// not signed): it ends with this one, with the same outcome.
    also: Option<Box<Lead>>,
}

impl Lead {
    fn new(p: Print, key: Option<String>, dedupe: &Arc<Dedupe>) -> Lead {
        Lead {
            p,
            key,
            claimed: false,
            ended: false,
            dedupe: Arc::clone(dedupe),
            also: None,
        }
    }

    /// This lead, also ending `other` (a second key of the same request) as it ends.
    pub(crate) fn with(mut self, other: Option<Lead>) -> Lead {
        self.also = other.map(Box::new);
        self
    }

    /// Records the outcome: an accepted id is stored (durably) before this returns; then
    /// memory knows it and the copies waiting for it are told. A failed one's claim in a shared
    /// store is released, so that the provider's retry may land on any instance.
    pub(crate) async fn finish(mut self, outcome: Outcome) {
        // A second key is stored at the same time (one group commit), not after.
        let also = self.also.take();
        let second = async {
            if let Some(also) = also {
                Box::pin(also.finish(outcome.clone())).await;
            }
        };
        tokio::join!(self.finish_own(outcome.clone()), second);
    }

    async fn finish_own(&mut self, outcome: Outcome) {
        let at = match (outcome.clone(), self.key.take()) {
            (Outcome::Accepted, Some(key)) => Some(self.dedupe.remember(key).await),
            (Outcome::Failed, Some(key)) if self.claimed => {
                self.dedupe.release(&key).await;
                None
            }
            _ => None,
        };
        self.ended = true;
        self.dedupe.end(self.p, at, outcome);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        // Dropped before it ended (its request was cancelled, perhaps while the id was being
        // stored): the id is free again and the waiting copies fail (their senders retry).
        if !self.ended {
            if self.claimed
                && let Some(key) = self.key.take()
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                // Else the claim expires by itself (see [`CLAIM_MARGIN`]).
                let dedupe = Arc::clone(&self.dedupe);
                runtime.spawn(async move { dedupe.release(&key).await });
            }
            self.dedupe.end(self.p, None, Outcome::Failed);
        }
    }
}

/// The deduplication memory of a daemon (all webhook sources; ids are prefixed by source).
pub(crate) struct Dedupe {
    store: Arc<Store>,
    printer: Printer,
    memory: Mutex<Memory>,
    writes: Writes,
}

impl Dedupe {
    /// Loads the ids of the last `window` (micros) and starts the group-commit writer.
    pub(crate) async fn start(store: Arc<Store>, window_micros: i64) -> Arc<Dedupe> {
        let now = crate::event::now_micros();
        let since = now - window_micros;
        let printer = Printer::new();
        let mut recent = Memory::new(since, window_micros);
        match store.seen_ids().recent(since, MEMORY_CAP + 1).await {
            Ok(mut rows) => {
                if rows.len() > MEMORY_CAP {
                    rows.truncate(MEMORY_CAP);
                    recent.complete_since = rows.last().map_or(now, |(_, at)| at + 1);
                    // Ids older than memory's are only in the store: looked up there.
                    recent.older.complete_since = recent.complete_since;
                }
                for (k, at) in rows.into_iter().rev() {
                    let p = printer.print(&k);
                    recent.at.insert(p, at);
                    recent.order.push_back((p, at));
                }
            }
            Err(e) => {
                // Unknown history: every lookup asks the store.
                warn!(error = %e, "could not load webhook deduplication ids; asking the store per request");
                recent.complete_since = i64::MAX;
                recent.older.complete_since = i64::MAX;
            }
        }
        // Memory could not hold every id of the window: the older ones are fingerprinted, so a
        // new id needs no store read after a restart either. That reads up to
        // `memory::OLDER_CAP` ids (seconds for a busy source), so it runs once the daemon
        // serves: until it is done, an id memory does not hold is looked up in the store.
        let fingerprint_older = match store.seen_ids() {
            SeenIds::Local(ids) if recent.complete_since > since => {
                Some((ids.clone(), recent.complete_since))
            }
            _ => None,
        };
        if store.is_shared() {
            // Other instances accept ids into the same store: memory never holds all of them.
            recent.complete_since = i64::MAX;
            recent.older.complete_since = i64::MAX;
        }
        let writes = Writes::start(&store);
        let dedupe = Arc::new(Dedupe {
            store,
            printer,
            memory: Mutex::new(recent),
            writes,
        });
        if let Some((ids, before)) = fingerprint_older {
            let weak = Arc::downgrade(&dedupe);
            let printer = dedupe.printer.clone();
            tokio::spawn(async move {
                let reading = weak.clone();
                let built = tokio::task::spawn_blocking(move || {
                    // Stops early once the daemon has let go of the deduplication (it is
                    // stopping): the process need not wait for the read to finish.
                    let wanted = || reading.strong_count() > 0;
                    fingerprint_stored(&ids, &printer, since, before, window_micros, wanted)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
                match built {
                    Ok(None) => {}
                    Ok(Some((older, n))) => {
                        // Stopped meanwhile: nothing to complete.
                        let Some(d) = weak.upgrade() else { return };
                        if let Ok(mut m) = d.memory.lock() {
                            m.older.absorb(older, before);
                        }
                        info!(
                            ids = n,
                            "fingerprinted the deduplication ids older than memory holds"
                        );
                    }
                    Err(e) => {
                        warn!(error = %e, "could not read older webhook deduplication ids; they are looked up in the store")
                    }
                }
            });
        }
        dedupe
    }

    /// Claims `key` for a request: seen within the window since `since` (micros), in flight,
    /// or this request's to deliver. `ack_timeout` is how long the request may deliver (a
    /// claim in a shared store holds [`CLAIM_MARGIN`] longer if its instance never ends it).
    pub(crate) async fn claim(
        self: &Arc<Self>,
        key: String,
        since: i64,
        ack_timeout: Duration,
    ) -> Claim {
        if let Some(ids) = self.shared() {
            return self.claim_shared(ids, key, since, ack_timeout).await;
        }
        let p = self.printer.print(&key);
        let mut asked = false;
        loop {
            {
                let Ok(mut m) = self.memory.lock() else {
                    // Memory is unusable: deliver (at-least-once).
                    return Claim::Lead(Lead::new(p, None, self));
                };
                if m.knows(p, since) {
                    return Claim::Seen;
                }
                if let Some(waiting) = m.inflight.get_mut(&p) {
                    let (tx, rx) = oneshot::channel();
                    waiting.push(tx);
                    return Claim::Follow(rx);
                }
                if asked || m.surely_new(p, since) {
                    m.inflight.insert(p, Vec::new());
                    return Claim::Lead(Lead::new(p, Some(key), self));
                }
            }
            // Memory cannot tell: the store decides (then memory is checked again, as a copy
            // may have started or finished meanwhile).
            match self.store.seen_ids().seen_since(&key, since).await {
                Ok(true) => return Claim::Seen,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "webhook deduplication lookup failed; delivering"),
            }
            asked = true;
        }
    }

    /// [`Dedupe::claim`] with a shared store: after memory (ids this instance accepted, copies
    /// in flight here), the store decides who delivers. The id is held in memory first, so
    /// copies arriving here meanwhile follow this request; then the store's claim is taken:
    /// won, this request leads; accepted already, a duplicate; held by another instance, the
    /// copies here follow that instance's outcome ([`Dedupe::follow_elsewhere`]).
    async fn claim_shared(
        self: &Arc<Self>,
        ids: SharedIds<'_>,
        key: String,
        since: i64,
        ack_timeout: Duration,
    ) -> Claim {
        let p = self.printer.print(&key);
        {
            let Ok(mut m) = self.memory.lock() else {
                return Claim::Lead(Lead::new(p, None, self));
            };
            if m.knows(p, since) {
                return Claim::Seen;
            }
            if let Some(waiting) = m.inflight.get_mut(&p) {
                let (tx, rx) = oneshot::channel();
                waiting.push(tx);
                return Claim::Follow(rx);
            }
            m.inflight.insert(p, Vec::new());
        }
        let mut unclaimed = Unclaimed {
            dedupe: self,
            p,
            armed: true,
        };
        let hold = ack_timeout.saturating_add(CLAIM_MARGIN);
        let until = crate::event::now_micros()
            .saturating_add(i64::try_from(hold.as_micros()).unwrap_or(i64::MAX / 2));
        let claim = ids.claim(&key, since, until).await;
        unclaimed.armed = false;
        match claim {
            Ok(WebhookIdClaim::Won) => {
                let mut lead = Lead::new(p, Some(key), self);
                lead.claimed = true;
                Claim::Lead(lead)
            }
            Ok(WebhookIdClaim::Accepted(at)) => {
                self.end(p, Some(at), Outcome::Accepted);
                Claim::Seen
            }
            Ok(WebhookIdClaim::ClaimedElsewhere) => {
                let (tx, rx) = oneshot::channel();
                if let Ok(mut m) = self.memory.lock()
                    && let Some(waiting) = m.inflight.get_mut(&p)
                {
                    waiting.push(tx);
                }
                let dedupe = Arc::clone(self);
                tokio::spawn(async move { dedupe.follow_elsewhere(p, key, since, hold).await });
                Claim::Follow(rx)
            }
            Err(e) => {
                // Unknown whether another instance delivers it: delivering here could make two
                // records answered 200 twice. The provider retries the 503.
                warn!(error = %e, "webhook deduplication claim failed (shared store unavailable); answering 503");
                self.end(p, None, Outcome::Failed);
                Claim::Unavailable
            }
        }
    }

    /// Waits (at most `hold`) for the instance that holds the claim on `key` to end it, and
    /// tells the copies here: accepted (they answer `duplicate`), or failed — the claim ended
    /// without an acceptance, expired, or outlasted `hold` (they answer 503; the provider
    /// retries). Polls the store, more slowly as it waits.
    async fn follow_elsewhere(&self, p: Print, key: String, since: i64, hold: Duration) {
        let Some(ids) = self.shared() else {
            // Only a shared store has claims another instance holds.
            return self.end(p, None, Outcome::Failed);
        };
        let deadline = tokio::time::Instant::now() + hold;
        let mut pause = FOLLOW_POLL_FIRST;
        let outcome = loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(FOLLOW_POLL_MAX);
            let out_of_time = tokio::time::Instant::now() >= deadline;
            match ids.state(&key, since).await {
                Ok(WebhookIdState::Accepted(at)) => break (Some(at), Outcome::Accepted),
                Ok(WebhookIdState::Free) => break (None, Outcome::Failed),
                Ok(WebhookIdState::Claimed) if out_of_time => break (None, Outcome::Failed),
                Ok(WebhookIdState::Claimed) => {}
                Err(e) if out_of_time => {
                    warn!(error = %e, "could not learn how another instance's delivery of a webhook ended");
                    break (None, Outcome::Failed);
                }
                Err(_) => {}
            }
        };
        self.end(p, outcome.0, outcome.1);
    }

    /// Releases this instance's claim on `key` in a shared store (a failed delivery): a retry
    /// may then land on any instance. If it cannot, the claim expires by itself.
    async fn release(&self, key: &str) {
        if let Some(ids) = self.shared()
            && let Err(e) = ids.release(key).await
        {
            warn!(error = %e, "could not release a webhook deduplication claim; it expires by itself");
        }
    }

    /// The store's ids when other instances share them (and claims decide who delivers).
    fn shared(&self) -> Option<SharedIds<'_>> {
        match self.store.seen_ids() {
            SeenIds::Shared(ids) => Some(ids),
            SeenIds::Local(_) => None,
        }
    }

    /// Ends the delivery of `p` (accepted at `at`, if it was) and tells the waiting copies.
    fn end(&self, p: Print, at: Option<i64>, outcome: Outcome) {
        let waiting = match self.memory.lock() {
            Ok(mut m) => {
                if let Some(at) = at {
                    m.insert(p, at);
                }
                m.finish(p)
            }
            Err(_) => Vec::new(),
        };
        for w in waiting {
            let _ = w.send(outcome.clone());
        }
    }

    /// Stores `key` as accepted now; returns once it is durable (or the store failed), with
    /// the time it was accepted at.
    async fn remember(&self, key: String) -> i64 {
        let at = crate::event::now_micros();
        let durable = self.writes.store(key, at).await;
        if !durable {
            warn!(
                "could not store a webhook deduplication id; a provider retry of it would be delivered again"
            );
        }
        at
    }
}

/// Fingerprints of the ids the store holds from `since` up to (not including) `before`, newest
/// first, at most [`memory::OLDER_CAP`]; with how many were read. Blocks the calling thread.
/// `None` if `wanted` said no more (asked every [`CHECK_WANTED_EVERY`] ids): what was read
/// so far would not cover the range, so it is not returned.
fn fingerprint_stored(
    ids: &LocalIds,
    printer: &Printer,
    since: i64,
    before: i64,
    window: i64,
    wanted: impl Fn() -> bool,
) -> Result<Option<(Older, usize)>, crate::store::StoreError> {
    let mut older = Older::new(since, window);
    let mut oldest = before;
    let mut read = 0usize;
    let mut stopped = false;
    let n = ids.each_seen_blocking(since, before, memory::OLDER_CAP, |k, at| {
        read += 1;
        if read.is_multiple_of(CHECK_WANTED_EVERY) && !wanted() {
            stopped = true;
            return std::ops::ControlFlow::Break(());
        }
        older.add(memory::fingerprint(printer.print(k)), at);
        oldest = oldest.min(at);
        std::ops::ControlFlow::Continue(())
    })?;
    if stopped {
        return Ok(None);
    }
    // At the cap, ids older than the last one read are only in the store.
    older.complete_since = older.complete_since.max(if n >= memory::OLDER_CAP {
        oldest + 1
    } else {
        since
    });
    Ok(Some((older, n)))
}

/// How often the start-up fingerprinting checks whether it is still wanted (ids read).
const CHECK_WANTED_EVERY: usize = 4096;

#[cfg(test)]
mod tests;
