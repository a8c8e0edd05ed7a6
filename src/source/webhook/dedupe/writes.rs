//! Where accepted deduplication ids are written (see the parent module): by the HTTP thread
//! that accepted them, in batches gathered over a few turns of its event loop, or by the
//! `switchyard-dedupe` writer thread, which also checkpoints the WAL and moves ids into the
//! keyed index; any other store through a writer task.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;

use super::MEMORY_CAP;
use crate::store::{LocalIds, SeenIds, Store};

/// Largest batch written in one transaction.
const BATCH: usize = 1024;
/// An HTTP thread commits its waiting ids once this many wait, even if it has more to run.
pub(crate) const FLUSH_AT: usize = 256;
/// … or once the oldest has waited this long.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(2);
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
/// `LocalIds::remember_seen`): once more than this many are unindexed, the oldest are
/// indexed down to [`INDEX_KEEP`]. Below [`MEMORY_CAP`] with room for a batch, so every id the
/// memory has dropped is in the index, where lookups find it.
const INDEX_ABOVE: usize = MEMORY_CAP * 3 / 4;
const INDEX_KEEP: usize = MEMORY_CAP / 2;

type WriteRequest = (String, i64, oneshot::Sender<bool>);

/// Where accepted ids are written.
pub(super) enum Writes {
    /// The embedded store: committed by the HTTP thread that accepted them (see the module
    /// documentation), else by the writer thread.
    Embedded(Arc<Embedded>),
    /// Any other store: a writer task commits whatever is queued.
    Queued(mpsc::Sender<WriteRequest>),
}

/// The embedded store and its writer thread's queue.
pub(super) struct Embedded {
    store: LocalIds,
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
fn tell(batch: Vec<WriteRequest>, done: Result<(), crate::store::StoreError>) {
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
pub(crate) fn http_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
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

impl Writes {
    /// Starts the writer for `store`: the embedded store's writer thread, or a writer task.
    pub(super) fn start(store: &Arc<Store>) -> Writes {
        if let SeenIds::Local(ids) = store.seen_ids() {
            let ids = ids.clone();
            // The embedded store's writer thread: ids handed over by requests off the HTTP
            // threads or while the connection was busy, checkpoints and indexing.
            let (queue, rx) = std::sync::mpsc::sync_channel(BATCH * 4);
            let writer = ids.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("switchyard-dedupe".into())
                .spawn(move || {
                    supervised("deduplication writer", RESTART_AFTER, || {
                        write_batches_blocking(&writer, &rx);
                    });
                })
            {
                warn!(error = %e, "could not start the deduplication writer thread; ids are committed by the HTTP threads only");
            }
            Writes::Embedded(Arc::new(Embedded { store: ids, queue }))
        } else {
            let (queue, rx) = mpsc::channel(BATCH * 4);
            tokio::spawn(write_batches(Arc::clone(store), rx));
            Writes::Queued(queue)
        }
    }

    /// Stores `key`, accepted at `at`; true once it is durable (false: the store failed).
    pub(super) async fn store(&self, key: String, at: i64) -> bool {
        let (tx, rx) = oneshot::channel();
        let request = (key, at, tx);
        let queued = match self {
            Writes::Embedded(embedded) => match queue_on_this_thread(embedded, request) {
                Ok(()) => true,
                // Not an HTTP thread: the writer thread commits it.
                Err(request) => embedded.hand_over(request).await,
            },
            Writes::Queued(queue) => queue.send(request).await.is_ok(),
        };
        queued && rx.await.unwrap_or(false)
    }
}

/// The embedded store's writer thread: commits the ids queued for it, checkpoints the WALs and
/// moves ids into the keyed index one transaction at a time (on the index connection: the HTTP
/// threads go on committing new ids to the log meanwhile).
fn write_batches_blocking(store: &LocalIds, rx: &std::sync::mpsc::Receiver<WriteRequest>) {
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

/// Runs `body` until it returns; if it panics, logs it and runs it again after `pause` (a
/// bug must not leave the ids' WAL without checkpoints and the index without new ids for the
/// rest of the process).
fn supervised(what: &str, pause: Duration, mut body: impl FnMut()) {
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut body)) {
            Ok(()) => return,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(thread = what, panic = %why, "a switchyard thread failed; restarting it in {pause:?}");
                std::thread::sleep(pause);
            }
        }
    }
}

/// Pause before a failed writer thread runs again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Writes queued ids in batches: each batch one transaction, then every waiter is told.
async fn write_batches(store: Arc<Store>, mut rx: mpsc::Receiver<WriteRequest>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let entries = batch.iter().map(|(k, at, _)| (k.clone(), *at)).collect();
        let done = store.seen_ids().remember(entries).await;
        tell(batch, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervised_thread_body_that_panics_runs_again() {
        let mut runs = 0;
        supervised("test", Duration::ZERO, || {
            runs += 1;
            assert!(runs >= 3, "failing run {runs}");
        });
        assert_eq!(runs, 3);
    }
}
