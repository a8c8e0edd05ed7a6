//! The webhook event ids sources accepted, which deduplication (`source::webhook::dedupe`)
//! asks before delivering a provider's retry again.
//!
//! The two databases keep them differently, and the view says so in its type rather than with
//! methods that mean nothing on one of them:
//! - [`SeenIds::Local`] (the embedded store, one instance): ids are appended to a log of their
//!   own, cheap enough for an HTTP thread to commit itself, and moved into a keyed index only
//!   once the deduplication memory could no longer hold them all ([`LocalIds`]);
//! - [`SeenIds::Shared`] (PostgreSQL, several instances behind one address): an id nobody
//!   accepted yet is *claimed* before it is delivered, so copies landing on two instances at
//!   once make one record ([`SharedIds`]).

use super::StoreError;
use super::postgres::PostgresStore;

pub use super::sqlite::LocalIds;

/// The answer of a shared store to an instance claiming a webhook event id before delivering
/// it (see `source::webhook::dedupe`): only one instance wins an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookIdClaim {
    /// Accepted (by any instance) at this time (micros), within the window asked about.
    Accepted(i64),
    /// This instance holds the claim: it delivers the event.
    Won,
    /// Another instance holds a live claim: it is delivering the event now.
    ClaimedElsewhere,
}

/// What a shared store knows of a webhook event id another instance claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookIdState {
    /// Accepted at this time (micros).
    Accepted(i64),
    /// An instance holds a live claim on it.
    Claimed,
    /// Neither: the claim ended without an acceptance (the delivery failed) or expired.
    Free,
}

/// The seen-ids view of a [`super::Store`] ([`super::Store::seen_ids`]).
#[derive(Clone, Copy)]
pub enum SeenIds<'a> {
    /// The embedded store's: one instance, a log indexed later.
    Local(&'a LocalIds),
    /// A shared store's: claimed before delivery.
    Shared(SharedIds<'a>),
}

/// Calls `$call` with `$ids` bound to the backend of a [`SeenIds`].
macro_rules! each_backend {
    ($self:expr, $ids:ident => $call:expr) => {
        match $self {
            SeenIds::Local($ids) => $call,
            SeenIds::Shared(SharedIds($ids)) => $call,
        }
    };
}

impl SeenIds<'_> {
    /// True when the webhook event `key` was accepted at or after `since` (micros).
    pub async fn seen_since(&self, key: &str, since: i64) -> Result<bool, StoreError> {
        each_backend!(self, s => s.seen_since(key, since).await)
    }

    /// Remembers accepted webhook events (one transaction for the batch); on a shared store
    /// the same commit ends this instance's claims on them.
    pub async fn remember(&self, entries: Vec<(String, i64)>) -> Result<(), StoreError> {
        each_backend!(self, s => s.remember_seen(entries).await)
    }

    /// The newest remembered webhook events since `since`, at most `limit`.
    pub async fn recent(&self, since: i64, limit: usize) -> Result<Vec<(String, i64)>, StoreError> {
        each_backend!(self, s => s.recent_seen(since, limit).await)
    }

    /// Forgets webhook events accepted before `before`; returns how many.
    pub async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        each_backend!(self, s => s.purge_seen(before).await)
    }
}

/// The seen ids of a shared store, with the claims instances take on ids before delivering.
#[derive(Clone, Copy)]
pub struct SharedIds<'a>(pub(super) &'a PostgresStore);

impl SharedIds<'_> {
    /// Claims the webhook event id `key` for this instance until `until` (micros), unless it
    /// was accepted since `since` or another instance holds a live claim.
    pub async fn claim(
        &self,
        key: &str,
        since: i64,
        until: i64,
    ) -> Result<WebhookIdClaim, StoreError> {
        self.0.claim_webhook_id(key, since, until).await
    }

    /// Whether `key` was accepted since `since`, is claimed by a live instance, or neither.
    pub async fn state(&self, key: &str, since: i64) -> Result<WebhookIdState, StoreError> {
        self.0.webhook_id_state(key, since).await
    }

    /// Ends this instance's claim on `key` without accepting it (its delivery failed).
    /// Accepting ends it by itself ([`SeenIds::remember`]).
    pub async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.0.release_webhook_id(key).await
    }
}
