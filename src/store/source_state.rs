//! Sources' progress kept in the store, by key: a snapshot's (`snapshot/<source>`), a
//! backfill's (`backfill/<source>`) and the queue of tables waiting for one
//! (`backfill-queue/<source>`), each a JSON document the source owns.

use super::{Store, StoreError};

/// The source-state view of a [`Store`] ([`Store::source_state`]).
#[derive(Clone, Copy)]
pub struct SourceState<'a>(pub(super) &'a Store);

impl SourceState<'_> {
    /// Source state kept beside the dead letters (e.g. snapshot progress), by key.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self.0, s => s.get_state(key).await)
    }

    /// Stores source state under `key` (durable once this returns).
    pub async fn put(&self, key: &str, value: &str) -> Result<(), StoreError> {
        dispatch!(self.0, s => s.put_state(key, value).await)
    }
}
