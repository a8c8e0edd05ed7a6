//! Deduplication of provider retries: an event id accepted by a source within its window is
//! answered 200 again without a second Kafka record.
//!
//! - **Durable**: accepted ids are written to the embedded store (the DLQ store's
//!   `webhook_seen` table) *before* the 200 goes out, so they survive a restart, even kill -9
//!   (SQLite commits them without an fsync: only an OS crash or power loss can forget the last
//!   few, and a retry of one of those is then delivered again — at-least-once).
//!   Writes from concurrent requests share one transaction (group commit). With the embedded
//!   store, each HTTP thread commits the ids its requests accepted itself: once the requests
//!   of a few turns of its event loop have joined them (at most [`GATHER`]), when it has
//!   nothing else to run (tokio's `on_thread_park`, just before it would sleep), and at once
//!   when [`FLUSH_AT`] wait or the oldest has waited [`FLUSH_AFTER`]: a lone request waits for
//!   one commit, a busy thread gets batches without a timed gathering delay, and nothing
//!   crosses a thread (handing ids to a writer thread and being woken by it cost more than the
//!   commit — half the CPU of a request). The commit is a page or two written into SQLite's WAL, no
//!   fsync: WAL checkpoints (which fsync) and moves into the keyed index run on the
//!   `switchyard-dedupe` thread, and when that thread (or the other HTTP thread) holds the
//!   connection, the ids are handed to it instead of waiting. This is the one write on an event
//!   loop: normally microseconds of page-cache writes, though a kernel throttling dirty pages
//!   could hold that thread's connections for the length of one. Other stores (PostgreSQL) and
//!   requests outside the HTTP threads go through the writer, which commits whatever is queued.
//! - **Fast**: the newest ids are also kept in memory (bounded), and 64-bit fingerprints of the
//!   ones memory dropped (see [`Older`]); while these know every id of the window, a new id
//!   costs no store read (a request that waited for a pool thread to read SQLite cost twice as
//!   much CPU). After a restart, ids older than those reloaded are looked up in the store.
//! - **Shared**: with a PostgreSQL DLQ store several instances behind one address share the
//!   ids: an id memory does not know is then always looked up in the store, so a provider retry
//!   that lands on another instance is still answered as a duplicate.
//! - **Concurrent retries**: the first request for an id leads; copies arriving meanwhile wait
//!   for its outcome and answer the same, so five simultaneous deliveries make one record.
//! - **Bounded**: ids older than the window are purged hourly; memory holds at most
//!   [`MEMORY_CAP`] ids and [`OLDER_CAP`] fingerprints. The embedded store appends ids to a log
//!   (cheap) and moves them into its keyed index only when memory could no longer hold them
//!   all, after the answers went out.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::warn;

use crate::dlq::{DlqStore, SqliteStore};

/// Ids kept in memory at most.
pub const MEMORY_CAP: usize = 200_000;
/// Largest batch written in one transaction.
const BATCH: usize = 1024;
/// An HTTP thread commits its waiting ids once this many wait, even if it has more to run.
pub const FLUSH_AT: usize = 256;
/// … or once the oldest has waited this long.
pub const FLUSH_AFTER: Duration = Duration::from_millis(2);
/// An HTTP thread's ids wait for more to join them (see [`http_thread_runtime`]) until this
/// many wait, or the thread has looked for new requests [`GATHER_TURNS`] times. A commit
/// writes a WAL page whether it holds 2 ids or 50: committing whatever waited each time the
/// thread ran out of work (every few requests for a thread serving 32 busy connections) made
/// commits and their checkpoints cost more than the rest of the deduplication.
const GATHER: usize = 16;
/// Turns of the event loop (each polls the sockets without blocking and runs what arrived)
/// that waiting ids give new requests to join their commit. An idle thread spends a few
/// microseconds on them; a busy one gathers the requests of the next few turns.
const GATHER_TURNS: usize = 4;
/// How often the writer thread checkpoints the WAL and checks whether to index.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(250);
/// The embedded store appends ids to a log and indexes them later (see
/// `SqliteStore::remember_seen`): once more than this many are unindexed, the oldest are
/// indexed down to [`INDEX_KEEP`]. Below [`MEMORY_CAP`] with room for a batch, so every id the
/// memory has dropped is in the index, where lookups find it.
const INDEX_ABOVE: usize = MEMORY_CAP * 3 / 4;
const INDEX_KEEP: usize = MEMORY_CAP / 2;

/// How the leading request for an id ended, as followers answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durable (in Kafka or the DLQ): followers answer 200 "duplicate".
    Accepted,
    /// Not durable: followers answer 503 too (the provider retries).
    Failed,
}

/// The newest accepted ids.
struct Recent {
    at: HashMap<String, i64>,
    order: VecDeque<(String, i64)>,
    /// Memory holds every id accepted since `complete_since` (micros).
    complete_since: i64,
    /// Fingerprints of the ids memory no longer holds.
    older: Older,
}

impl Recent {
    fn insert(&mut self, key: String, at: i64) {
        self.at.insert(key.clone(), at);
        self.order.push_back((key, at));
        while self.order.len() > MEMORY_CAP {
            if let Some((k, t)) = self.order.pop_front() {
                if self.at.get(&k) == Some(&t) {
                    self.at.remove(&k);
                    let fp = self.older.fingerprint(&k);
                    self.older.add(fp, t);
                }
                self.complete_since = self.complete_since.max(t + 1);
            }
        }
    }

    /// Whether `key` is certainly not among the ids accepted since `since`, without asking the
    /// store: memory holds every id since then, or the fingerprints of the ones it dropped
    /// do not include this one.
    fn surely_new(&self, key: &str, since: i64) -> bool {
        self.complete_since <= since
            || (self.older.complete_since <= since
                && !self.older.may_hold(self.older.fingerprint(key), since))
    }
}

/// Fingerprints of ids memory dropped: SipHash-1-3 (random keys) of the id, 64 bits, in one set
/// per hour of acceptance. A fingerprint not found means "not accepted" for certain; one found
/// means "perhaps" (a duplicate, or one chance in 2^64 / n of another id), which the store
/// then answers. So once memory is full, a new id still costs no store read: about 10 bytes
/// each, at most [`OLDER_CAP`] (the oldest hours are dropped beyond that, and ids of those
/// hours are looked up in the store again).
struct Older {
    hasher: std::collections::hash_map::RandomState,
    /// (first micro of the hour, fingerprints), oldest first.
    hours: VecDeque<(i64, HashSet<u64, BuildFingerprint>)>,
    len: usize,
    /// Memory and these fingerprints know every id accepted since then (micros).
    complete_since: i64,
    /// Hours older than this window are dropped (micros).
    window: i64,
}

/// Fingerprints kept at most (about 20 MiB).
pub const OLDER_CAP: usize = 2_000_000;
const HOUR: i64 = 3_600_000_000;

impl Older {
    fn new(complete_since: i64, window: i64) -> Older {
        Older {
            hasher: std::collections::hash_map::RandomState::new(),
            hours: VecDeque::new(),
            len: 0,
            complete_since,
            window,
        }
    }

    fn fingerprint(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    fn add(&mut self, fp: u64, at: i64) {
        let hour = at - at.rem_euclid(HOUR);
        // Ids leave memory in acceptance order: almost always the newest hour.
        let i = match self.hours.iter().rposition(|(h, _)| *h <= hour) {
            Some(i) if self.hours[i].0 == hour => i,
            found => {
                let i = found.map_or(0, |i| i + 1);
                self.hours.insert(i, (hour, HashSet::default()));
                // Hours past the window no longer matter to any claim.
                while self
                    .hours
                    .front()
                    .is_some_and(|(h, _)| h + HOUR < at - self.window)
                {
                    self.drop_oldest();
                }
                self.hours
                    .iter()
                    .rposition(|(h, _)| *h == hour)
                    .unwrap_or(0)
            }
        };
        if let Some((_, set)) = self.hours.get_mut(i)
            && set.insert(fp)
        {
            self.len += 1;
        }
        while self.len > OLDER_CAP && self.hours.len() > 1 {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((h, set)) = self.hours.pop_front() {
            self.len -= set.len();
            self.complete_since = self.complete_since.max(h + HOUR);
        }
    }

    fn may_hold(&self, fp: u64, since: i64) -> bool {
        self.hours
            .iter()
            .rev()
            .take_while(|(h, _)| h + HOUR > since)
            .any(|(_, set)| set.contains(&fp))
    }
}

/// Fingerprints are already uniform hashes: the set uses them as they are.
#[derive(Default, Clone, Copy)]
struct BuildFingerprint;

impl std::hash::BuildHasher for BuildFingerprint {
    type Hasher = FingerprintHasher;
    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(0)
    }
}

struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; any other input still gets a usable hash.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The claim on an id.
pub enum Claim {
    /// Accepted before, within the window.
    Seen,
    /// Another request is delivering it: wait for its outcome.
    Follow(watch::Receiver<Option<Outcome>>),
    /// This request delivers it; finish with [`Lead::finish`] (dropping it counts as failed).
    Lead(Lead),
}

/// The leading request for an id.
pub struct Lead {
    key: String,
    tx: watch::Sender<Option<Outcome>>,
    dedupe: Arc<Dedupe>,
}

impl Lead {
    /// Records the outcome: an accepted id is stored (durably) before this returns.
    pub async fn finish(self, outcome: Outcome) {
        if outcome == Outcome::Accepted {
            self.dedupe.remember(&self.key).await;
        }
        let _ = self.tx.send(Some(outcome));
        // Drop removes the in-flight entry.
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Ok(mut inflight) = self.dedupe.inflight.lock() {
            inflight.remove(&self.key);
        }
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(Outcome::Failed);
                true
            } else {
                false
            }
        });
    }
}

type WriteRequest = (String, i64, oneshot::Sender<bool>);

/// Where accepted ids are written.
enum Writes {
    /// The embedded store: committed by the HTTP thread that accepted them (see the module
    /// documentation), else by the writer thread.
    Embedded(Arc<Embedded>),
    /// Any other store: a writer task commits whatever is queued.
    Queued(mpsc::Sender<WriteRequest>),
}

/// The embedded store and its writer thread's queue.
struct Embedded {
    store: SqliteStore,
    queue: std::sync::mpsc::SyncSender<WriteRequest>,
}

impl Embedded {
    /// Commits `batch` on this thread if the connection is free, else queues it for the writer
    /// thread (or, with its queue full, waits for the connection: backpressure).
    fn commit(&self, batch: Vec<WriteRequest>) {
        let keys = batch.iter().map(|(k, at, _)| (k.as_str(), *at));
        if let Some(done) = self.store.try_remember_seen_now(keys) {
            tell(batch, done);
            return;
        }
        let mut rest = batch.into_iter();
        while let Some(w) = rest.next() {
            if let Err(
                std::sync::mpsc::TrySendError::Full(w)
                | std::sync::mpsc::TrySendError::Disconnected(w),
            ) = self.queue.try_send(w)
            {
                let left: Vec<WriteRequest> = std::iter::once(w).chain(rest).collect();
                let done = self
                    .store
                    .remember_seen_blocking(left.iter().map(|(k, at, _)| (k.as_str(), *at)));
                tell(left, done);
                return;
            }
        }
    }
}

impl Embedded {
    /// Queues `request` for the writer thread, waiting on a pool thread while its queue is full.
    async fn hand_over(&self, request: WriteRequest) -> bool {
        match self.queue.try_send(request) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(request)) => {
                let queue = self.queue.clone();
                tokio::task::spawn_blocking(move || queue.send(request).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Adds `request` to this HTTP thread's batch for `embedded` (committed once gathered, before
/// the thread sleeps, or now once the batch is due); gives it back on any other thread.
fn queue_on_this_thread(
    embedded: &Arc<Embedded>,
    request: WriteRequest,
) -> Result<(), WriteRequest> {
    let due = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.gatherer.is_none() {
            return Err(request);
        }
        match l.batches.iter_mut().find(|(e, _)| Arc::ptr_eq(e, embedded)) {
            Some((_, batch)) => batch.push(request),
            None => l.batches.push((Arc::clone(embedded), vec![request])),
        }
        l.waiting += 1;
        if l.waiting == 1
            && let Some(gatherer) = &l.gatherer
        {
            // The first of a batch: the thread's gathering task will commit it.
            gatherer.notify_one();
        }
        let oldest = *l.oldest.get_or_insert_with(Instant::now);
        Ok(l.waiting >= FLUSH_AT || oldest.elapsed() >= FLUSH_AFTER)
    })?;
    if due {
        // A thread that never runs out of work would never commit: commit now.
        commit_this_threads_ids();
    }
    Ok(())
}

/// Tells each waiter of `batch` whether its id is stored.
fn tell(batch: Vec<WriteRequest>, done: Result<(), crate::dlq::DlqError>) {
    let ok = match done {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "storing webhook deduplication ids failed");
            false
        }
    };
    for (_, _, tx) in batch {
        let _ = tx.send(ok);
    }
}

/// Ids accepted on this thread and not yet committed (HTTP threads only).
struct Local {
    /// When the oldest waiting id was queued.
    oldest: Option<Instant>,
    waiting: usize,
    /// Waiting ids by store (one in a daemon; tests may run several).
    batches: Vec<(Arc<Embedded>, Vec<WriteRequest>)>,
    /// Wakes the thread's gathering task; set on threads that commit their ids themselves
    /// (see [`http_thread_runtime`]).
    gatherer: Option<Arc<Notify>>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { oldest: None, waiting: 0, batches: Vec::new(), gatherer: None })
    };
}

/// The event loop of an HTTP thread, to be run on the calling thread: a current-thread
/// runtime whose requests' deduplication ids are committed by this thread itself, in batches
/// (see the module documentation). When the first id waits, a gathering task yields for up to
/// [`GATHER_TURNS`] turns of the event loop (tokio then polls the sockets without blocking and
/// runs the requests that arrived, whose ids join the batch) or until [`GATHER`] wait, and
/// commits. The thread never sleeps with ids waiting: a thread with no task to run commits
/// them first (`on_thread_park`).
pub fn http_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let gatherer = Arc::new(Notify::new());
    LOCAL.with(|l| {
        l.borrow_mut().gatherer = Some(Arc::clone(&gatherer));
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(commit_this_threads_ids)
        .build()?;
    rt.spawn(async move {
        loop {
            gatherer.notified().await;
            for _ in 0..GATHER_TURNS {
                if LOCAL.with(|l| l.borrow().waiting) >= GATHER {
                    break;
                }
                tokio::task::yield_now().await;
            }
            commit_this_threads_ids();
        }
    });
    Ok(rt)
}

/// Commits the ids accepted on this thread so far and wakes their requests (which run on this
/// thread, so the wake is a push onto its own run queue).
fn commit_this_threads_ids() {
    let batches = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.oldest = None;
        l.waiting = 0;
        std::mem::take(&mut l.batches)
    });
    for (embedded, batch) in batches {
        embedded.commit(batch);
    }
}

/// The deduplication memory of a daemon (all webhook sources; ids are prefixed by source).
pub struct Dedupe {
    store: Arc<DlqStore>,
    recent: Mutex<Recent>,
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
    writes: Writes,
}

impl Dedupe {
    /// Loads the ids of the last `window` (micros) and starts the group-commit writer.
    pub async fn start(store: Arc<DlqStore>, window_micros: i64) -> Arc<Dedupe> {
        let now = crate::event::now_micros();
        let since = now - window_micros;
        let mut recent = Recent {
            at: HashMap::new(),
            order: VecDeque::new(),
            complete_since: since,
            older: Older::new(since, window_micros),
        };
        match store.recent_seen(since, MEMORY_CAP + 1).await {
            Ok(mut rows) => {
                if rows.len() > MEMORY_CAP {
                    rows.truncate(MEMORY_CAP);
                    recent.complete_since = rows.last().map_or(now, |(_, at)| at + 1);
                    // Ids older than memory's are only in the store: looked up there.
                    recent.older.complete_since = recent.complete_since;
                }
                for (k, at) in rows.into_iter().rev() {
                    recent.at.insert(k.clone(), at);
                    recent.order.push_back((k, at));
                }
            }
            Err(e) => {
                // Unknown history: every lookup asks the store.
                warn!(error = %e, "could not load webhook deduplication ids; asking the store per request");
                recent.complete_since = i64::MAX;
                recent.older.complete_since = i64::MAX;
            }
        }
        if store.is_shared() {
            // Other instances accept ids into the same store: memory never holds all of them.
            recent.complete_since = i64::MAX;
            recent.older.complete_since = i64::MAX;
        }
        let writes = if let Some(sqlite) = store.as_sqlite().cloned() {
            // The embedded store's writer thread: ids handed over by requests off the HTTP
            // threads or while the connection was busy, checkpoints and indexing.
            let (queue, rx) = std::sync::mpsc::sync_channel(BATCH * 4);
            let writer = sqlite.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("switchyard-dedupe".into())
                .spawn(move || write_batches_blocking(&writer, &rx))
            {
                warn!(error = %e, "could not start the deduplication writer thread; ids are committed by the HTTP threads only");
            }
            Writes::Embedded(Arc::new(Embedded {
                store: sqlite,
                queue,
            }))
        } else {
            let (queue, rx) = mpsc::channel(BATCH * 4);
            tokio::spawn(write_batches(Arc::clone(&store), rx));
            Writes::Queued(queue)
        };
        Arc::new(Dedupe {
            store,
            recent: Mutex::new(recent),
            inflight: Mutex::new(HashMap::new()),
            writes,
        })
    }

    /// Claims `key` for a request: seen within the window since `since` (micros), in flight,
    /// or this request's to deliver.
    pub async fn claim(self: &Arc<Self>, key: &str, since: i64) -> Claim {
        let (known, complete) = match self.recent.lock() {
            Ok(r) => (
                r.at.get(key).is_some_and(|at| *at >= since),
                r.surely_new(key, since),
            ),
            Err(_) => (false, false),
        };
        if known {
            return Claim::Seen;
        }
        if !complete {
            match self.store.seen_since(key, since).await {
                Ok(true) => return Claim::Seen,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "webhook deduplication lookup failed; delivering"),
            }
        }
        let Ok(mut inflight) = self.inflight.lock() else {
            let (tx, _) = watch::channel(None);
            return Claim::Lead(Lead {
                key: key.to_string(),
                tx,
                dedupe: Arc::clone(self),
            });
        };
        if let Some(rx) = inflight.get(key) {
            return Claim::Follow(rx.clone());
        }
        // Accepted between the lookup and now (its lead just finished)?
        if self
            .recent
            .lock()
            .is_ok_and(|r| r.at.get(key).is_some_and(|at| *at >= since))
        {
            return Claim::Seen;
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.to_string(), rx);
        Claim::Lead(Lead {
            key: key.to_string(),
            tx,
            dedupe: Arc::clone(self),
        })
    }

    /// Stores `key` as accepted now; returns once it is durable (or the store failed).
    async fn remember(&self, key: &str) {
        let at = crate::event::now_micros();
        let (tx, rx) = oneshot::channel();
        let request = (key.to_string(), at, tx);
        let queued = match &self.writes {
            Writes::Embedded(embedded) => match queue_on_this_thread(embedded, request) {
                Ok(()) => true,
                // Not an HTTP thread: the writer thread commits it.
                Err(request) => embedded.hand_over(request).await,
            },
            Writes::Queued(queue) => queue.send(request).await.is_ok(),
        };
        let durable = queued && rx.await.unwrap_or(false);
        if !durable {
            warn!(
                "could not store a webhook deduplication id; a provider retry of it would be delivered again"
            );
        }
        if let Ok(mut r) = self.recent.lock() {
            r.insert(key.to_string(), at);
        }
    }
}

/// The embedded store's writer thread: commits the ids queued for it, checkpoints the WAL and
/// moves ids into the keyed index one short transaction at a time (the HTTP threads find the
/// connection busy meanwhile and queue their ids here).
fn write_batches_blocking(store: &SqliteStore, rx: &std::sync::mpsc::Receiver<WriteRequest>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut indexing = false;
    let mut last_checkpoint = Instant::now();
    loop {
        let wait = if indexing {
            Duration::ZERO
        } else {
            MAINTENANCE_EVERY
        };
        match rx.recv_timeout(wait) {
            Ok(first) => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(w) => batch.push(w),
                        Err(_) => break,
                    }
                }
                let done =
                    store.remember_seen_blocking(batch.iter().map(|(k, at, _)| (k.as_str(), *at)));
                tell(batch, done);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        indexing = indexing || store.unindexed_seen() > INDEX_ABOVE;
        if indexing {
            match store.index_seen_chunk_blocking(INDEX_KEEP) {
                Ok(left) => indexing = left > INDEX_KEEP,
                Err(e) => {
                    warn!(error = %e, "indexing webhook deduplication ids failed; retrying shortly");
                    indexing = false;
                }
            }
        }
        if last_checkpoint.elapsed() >= MAINTENANCE_EVERY {
            last_checkpoint = Instant::now();
            if let Err(e) = store.checkpoint_blocking() {
                warn!(error = %e, "checkpointing the deduplication store failed; retrying shortly");
            }
        }
    }
}

/// Writes queued ids in batches: each batch one transaction, then every waiter is told.
async fn write_batches(store: Arc<DlqStore>, mut rx: mpsc::Receiver<WriteRequest>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let entries = batch.iter().map(|(k, at, _)| (k.clone(), *at)).collect();
        let done = store.remember_seen(entries).await;
        tell(batch, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(window: i64) -> Recent {
        Recent {
            at: HashMap::new(),
            order: VecDeque::new(),
            complete_since: 0,
            older: Older::new(0, window),
        }
    }

    #[test]
    fn ids_memory_dropped_are_known_by_fingerprint_so_new_ids_need_no_store_read() {
        let mut r = recent(24 * HOUR);
        let t0 = 10 * HOUR;
        let n = MEMORY_CAP + 5_000;
        for i in 0..n {
            r.insert(format!("s\u{1f}evt_{i}"), t0 + i as i64);
        }
        // Memory alone no longer knows everything since the window's start...
        assert!(r.complete_since > 0);
        // ...but with the fingerprints a new id is certainly new,
        assert!(r.surely_new("s\u{1f}evt_new", 0));
        // a dropped id is "perhaps" (the store decides), and a kept one is in memory.
        assert!(!r.surely_new("s\u{1f}evt_3", 0));
        assert_eq!(r.older.len, 5_000);
        assert!(r.at.contains_key(&format!("s\u{1f}evt_{}", n - 1)));
    }

    /// Claims `key` and finishes it as accepted; true if this call led (a new id).
    async fn accept(d: &Arc<Dedupe>, key: &str) -> bool {
        match d.claim(key, 0).await {
            Claim::Lead(lead) => {
                lead.finish(Outcome::Accepted).await;
                true
            }
            _ => false,
        }
    }

    #[test]
    fn ids_committed_by_an_http_thread_and_by_the_writer_thread_are_durable_when_accepted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dlq.db");
        let main = tokio::runtime::Runtime::new().expect("runtime");
        let store = main.block_on(async {
            Arc::new(DlqStore::Sqlite(
                SqliteStore::open(&path).await.expect("open"),
            ))
        });
        let dedupe = main.block_on(Dedupe::start(Arc::clone(&store), i64::MAX / 4));
        // An HTTP thread: commits its ids itself, before it would sleep.
        let http = {
            let dedupe = Arc::clone(&dedupe);
            std::thread::spawn(move || {
                let rt = http_thread_runtime().expect("runtime");
                rt.block_on(async move {
                    // Committed by this thread (gathered, or before it sleeps), else never answered.
                    let all = futures::future::join_all((0..50).map(|i| {
                        let d = Arc::clone(&dedupe);
                        async move { accept(&d, &format!("s\u{1f}http_{i}")).await }
                    }));
                    let led = tokio::time::timeout(Duration::from_secs(10), all)
                        .await
                        .expect("ids committed within 10 s");
                    assert!(led.iter().all(|l| *l));
                    // Accepted ids are known: a retry is `Seen`.
                    assert!(!accept(&dedupe, "s\u{1f}http_7").await);
                    // A lone id is committed too (after its gathering turns, or before sleeping).
                    let lone = tokio::time::timeout(
                        Duration::from_secs(10),
                        accept(&dedupe, "s\u{1f}http_lone"),
                    )
                    .await
                    .expect("a lone id committed within 10 s");
                    assert!(lone);
                })
            })
        };
        http.join().expect("http thread");
        // Any other thread: the writer thread commits them.
        main.block_on(async {
            for i in 0..20 {
                let led = tokio::time::timeout(
                    Duration::from_secs(10),
                    accept(&dedupe, &format!("s\u{1f}main_{i}")),
                )
                .await
                .expect("id committed within 10 s");
                assert!(led);
            }
        });
        // Each accepted id is in the store the moment its request was answered.
        let stored = main
            .block_on(store.recent_seen(0, 1_000))
            .expect("read ids");
        let mut keys: Vec<String> = stored.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys.len(), 71, "{keys:?}");
        assert!(keys.contains(&"s\u{1f}http_49".to_string()));
        assert!(keys.contains(&"s\u{1f}main_19".to_string()));
    }

    #[test]
    fn fingerprints_of_hours_past_the_window_are_dropped_and_the_claim_falls_back_to_the_store() {
        let window = 2 * HOUR;
        let mut o = Older::new(0, window);
        let fp = o.fingerprint("a");
        o.add(fp, HOUR + 5);
        assert!(o.may_hold(fp, 0));
        assert!(!o.may_hold(o.fingerprint("b"), 0));
        // An id accepted four hours later: the first hour is past the window.
        o.add(o.fingerprint("c"), 5 * HOUR + 1);
        assert_eq!(o.hours.len(), 1);
        assert!(!o.may_hold(fp, 0));
        // What the dropped hour knew is now only in the store: claims since then must ask it.
        assert_eq!(o.complete_since, 2 * HOUR);
        // A late eviction of an older hour goes into its own, ordered, set.
        o.add(o.fingerprint("d"), 4 * HOUR + 1);
        let hours: Vec<i64> = o.hours.iter().map(|(h, _)| *h).collect();
        assert_eq!(hours, vec![4 * HOUR, 5 * HOUR]);
        assert!(o.may_hold(o.fingerprint("d"), 4 * HOUR));
        assert!(!o.may_hold(o.fingerprint("d"), 5 * HOUR));
    }
}
