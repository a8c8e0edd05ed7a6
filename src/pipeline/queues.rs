//! Which webhook sources have events waiting in the DLQ for Kafka (`when_unavailable =
//! "dead_letter"`): shared by the sources' request handlers, which store new events behind
//! them, and the re-delivery task (`replay::redeliver`), which empties them in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether each webhook source has events waiting in the DLQ for Kafka (shared by the
/// sources' request handlers and the re-delivery task).
#[derive(Default)]
pub(crate) struct Queues {
    by_source: Mutex<HashMap<String, Arc<SourceQueue>>>,
}

impl Queues {
    /// The queue state of `source` (created on first use; one per configured source).
    pub(crate) fn get(&self, source: &str) -> Arc<SourceQueue> {
        let mut map = self
            .by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(source.to_string()).or_default())
    }
}

/// One source's queue state: `queued` while it has `unavailable` entries pending; `gate`
/// orders storing an event behind them against the task finding the queue empty: stores share
/// it (they run at once), the task's check takes it alone (tokio's lock is fair: it waits only
/// for the stores already under way, and new ones wait for it).
#[derive(Default)]
pub(crate) struct SourceQueue {
    pub(crate) queued: AtomicBool,
    pub(crate) gate: tokio::sync::RwLock<()>,
}

impl SourceQueue {
    /// True while the source has events waiting in the DLQ for Kafka.
    pub(crate) fn is_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Stores an event with `store` (a DLQ write) while no un-queueing can happen, and marks
    /// the source queued if it succeeded.
    pub(crate) async fn store_behind<T, E>(
        &self,
        store: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let _gate = self.gate.read().await;
        let stored = store.await;
        if stored.is_ok() {
            self.queued.store(true, Ordering::Release);
        }
        stored
    }

    /// Like [`SourceQueue::store_behind`], but only if the source is (still) queued; `None`
    /// if it is not, and the event should be delivered to Kafka directly.
    pub(crate) async fn store_if_queued<T, E>(
        &self,
        store: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<Result<T, E>> {
        let _gate = self.gate.read().await;
        if !self.is_queued() {
            return None;
        }
        Some(store.await)
    }
}
