//! Deduplication of provider retries: an event id accepted by a source within its window is
//! answered 200 again without a second Kafka record.
//!
//! - **Durable**: accepted ids are written to the embedded store (the DLQ store's
//!   `webhook_seen` table) *before* the 200 goes out, so they survive a restart, even kill -9
//!   (SQLite commits them without an fsync: only an OS crash or power loss can forget the last
//!   few, and a retry of one of those is then delivered again — at-least-once).
//!   Writes from concurrent requests share one transaction (group commit): the writer commits
//!   at once whatever is queued, and ids that arrive during a commit go together in the next
//!   one, so a lone request waits for one commit and a busy source gets large batches without
//!   a gathering delay.
//! - **Fast**: the newest ids are also kept in memory (bounded); while memory holds every id of
//!   the window, a new id costs no store read.
//! - **Shared**: with a PostgreSQL DLQ store several instances behind one address share the
//!   ids: an id memory does not know is then always looked up in the store, so a provider retry
//!   that lands on another instance is still answered as a duplicate.
//! - **Concurrent retries**: the first request for an id leads; copies arriving meanwhile wait
//!   for its outcome and answer the same, so five simultaneous deliveries make one record.
//! - **Bounded**: ids older than the window are purged hourly; memory holds at most
//!   [`MEMORY_CAP`] ids. The embedded store appends ids to a log (cheap) and moves them into
//!   its keyed index only when memory could no longer hold them all, after the answers went out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use crate::dlq::DlqStore;

/// Ids kept in memory at most.
pub const MEMORY_CAP: usize = 200_000;
/// Largest batch written in one transaction.
const BATCH: usize = 1024;
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
}

impl Recent {
    fn insert(&mut self, key: String, at: i64) {
        self.at.insert(key.clone(), at);
        self.order.push_back((key, at));
        while self.order.len() > MEMORY_CAP {
            if let Some((k, t)) = self.order.pop_front() {
                if self.at.get(&k) == Some(&t) {
                    self.at.remove(&k);
                }
                self.complete_since = self.complete_since.max(t + 1);
            }
        }
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

/// The deduplication memory of a daemon (all webhook sources; ids are prefixed by source).
pub struct Dedupe {
    store: Arc<DlqStore>,
    recent: Mutex<Recent>,
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
    writes: mpsc::Sender<WriteRequest>,
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
        };
        match store.recent_seen(since, MEMORY_CAP + 1).await {
            Ok(mut rows) => {
                if rows.len() > MEMORY_CAP {
                    rows.truncate(MEMORY_CAP);
                    recent.complete_since = rows.last().map_or(now, |(_, at)| at + 1);
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
            }
        }
        if store.is_shared() {
            // Other instances accept ids into the same store: memory never holds all of them.
            recent.complete_since = i64::MAX;
        }
        let (writes, rx) = mpsc::channel(BATCH * 4);
        // The embedded store is written from a thread of its own: requests hand it their ids
        // and are woken by the commit, with no task or pool thread in between.
        if let Some(sqlite) = store.as_sqlite().cloned() {
            if let Err(e) = std::thread::Builder::new()
                .name("switchyard-dedupe".into())
                .spawn(move || write_batches_blocking(&sqlite, rx))
            {
                warn!(error = %e, "could not start the deduplication writer thread; ids are not stored");
            }
        } else {
            tokio::spawn(write_batches(Arc::clone(&store), rx));
        }
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
                r.complete_since <= since,
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
        let durable = match self.writes.send((key.to_string(), at, tx)).await {
            Ok(()) => rx.await.unwrap_or(false),
            Err(_) => false,
        };
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

/// [`write_batches`] for the embedded store, on a thread of its own.
fn write_batches_blocking(store: &crate::dlq::SqliteStore, mut rx: mpsc::Receiver<WriteRequest>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let entries: Vec<(String, i64)> = batch.iter().map(|(k, at, _)| (k.clone(), *at)).collect();
        let ok = match store.remember_seen_blocking(&entries) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "storing webhook deduplication ids failed");
                false
            }
        };
        for (_, _, tx) in batch {
            let _ = tx.send(ok);
        }
        if store.unindexed_seen() > INDEX_ABOVE
            && let Err(e) = store.index_seen_blocking(INDEX_KEEP)
        {
            warn!(error = %e, "indexing webhook deduplication ids failed; retrying after the next batch");
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
        let ok = match store.remember_seen(entries).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "storing webhook deduplication ids failed");
                false
            }
        };
        for (_, _, tx) in batch {
            let _ = tx.send(ok);
        }
        if store.unindexed_seen() > INDEX_ABOVE
            && let Err(e) = store.index_seen(INDEX_KEEP).await
        {
            warn!(error = %e, "indexing webhook deduplication ids failed; retrying after the next batch");
        }
    }
}
