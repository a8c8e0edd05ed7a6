//! Dead letters: where events that cannot be delivered wait for on-call.
//!
//! ```text
//!  pipeline ──definite failure──► DeadLetters::put ──► ack DeadLettered (source may move on)
//!                                       │
//!  switchyard dlq list/show/stats ◄─────┤
//!  switchyard dlq replay ──claim──► router → encode → Kafka ──ack──► mark replayed
//!  switchyard dlq discard ─────────────►┘   (every replay/discard is written to the audit trail)
//! ```
//!
//! Invariants: an event is acknowledged `DeadLettered` only after `put` committed. A replayed
//! entry is marked `replayed` only after its Kafka delivery report; until then it stays
//! `pending`, so a crash mid-replay loses nothing. Replays claim entries (with an owner and a
//! lease, renewed while they work) before delivering them and confirm each claim right before
//! its delivery, so two replays of one selection never deliver an entry twice; a claim whose
//! owner died (same host, process gone) or whose lease expired is taken over. Pending dead
//! letters are unique per (source, event id, route).
//! Pending entries are never purged automatically.

pub(crate) mod select;
pub(crate) mod view;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::error::ErrorClass;
use crate::event::Event;

/// The state of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for on-call.
    Pending,
    /// Delivered by a replay.
    Replayed,
    /// Given up on, with a reason.
    Discarded,
}

impl Status {
    /// As stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Replayed => "replayed",
            Status::Discarded => "discarded",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Status::Pending),
            "replayed" => Ok(Status::Replayed),
            "discarded" => Ok(Status::Discarded),
            other => Err(format!(
                "unknown status `{other}` (pending, replayed, discarded)"
            )),
        }
    }
}

/// The Kafka record that was built before delivery failed, if one was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedRecord {
    /// Encoded key.
    pub key: Option<Vec<u8>>,
    /// Encoded value.
    pub value: Vec<u8>,
}

/// A failure to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The event as received: enough to route it again.
    pub event: Event,
    /// The route that failed; `None` when no route could take the event.
    pub route: Option<String>,
    /// The topic it was meant for.
    pub topic: Option<String>,
    /// The record key as text (for on-call), if known.
    pub key: Option<String>,
    /// The encoded record, if one was made.
    pub record: Option<EncodedRecord>,
    /// Error class.
    pub class: ErrorClass,
    /// Error message (no secrets).
    pub message: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it failed, microseconds since the epoch.
    pub failed_at: i64,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Store id.
    pub id: i64,
    /// The event's id.
    pub event_id: String,
    /// Source name.
    pub source: String,
    /// Route name, if a route took it.
    pub route: Option<String>,
    /// Topic it was meant for.
    pub topic: Option<String>,
    /// Record key as text.
    pub key: Option<String>,
    /// Error class (as stored; see [`ErrorClass::as_str`]).
    pub class: String,
    /// Last error message.
    pub message: String,
    /// Delivery attempts, replays included.
    pub attempts: i64,
    /// First failure, micros since the epoch.
    pub first_failed_at: i64,
    /// Last failure, micros since the epoch.
    pub last_failed_at: i64,
    /// State.
    pub status: Status,
    /// How often it was replayed successfully.
    pub replay_count: i64,
    /// Why it was discarded, or which replay delivered it.
    pub resolution: Option<String>,
    /// The original event.
    #[serde(skip)]
    pub event: Option<Event>,
    /// The encoded record, if one was made.
    #[serde(skip)]
    pub record: Option<EncodedRecord>,
}

/// Which dead letters a command applies to. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only these ids.
    pub ids: Vec<i64>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this class.
    pub class: Option<String>,
    /// Only these statuses (empty: any).
    pub statuses: Vec<Status>,
    /// Last failure at or after (micros).
    pub since: Option<i64>,
    /// Last failure before (micros).
    pub until: Option<i64>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Only ids greater than this (a replay's cursor, so one run visits each entry once).
    pub after_id: Option<i64>,
}

/// Counts by route, class and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsRow {
    /// Route (`-` when none).
    pub route: String,
    /// Error class.
    pub class: String,
    /// Status.
    pub status: Status,
    /// Count.
    pub count: i64,
}

/// The dead-letter view of a [`Store`] ([`Store::dead_letters`]).
#[derive(Clone, Copy)]
pub struct DeadLetters<'a>(pub(super) &'a Store);

impl DeadLetters<'_> {
    /// Stores a dead letter; a pending one for the same event and route is updated instead
    /// (attempts + 1, last failure). Returns its id once committed.
    pub async fn put(&self, letter: &NewDeadLetter) -> Result<i64, StoreError> {
        dispatch!(self.0, s => s.put(letter).await)
    }

    /// Dead letters matching `selector`, oldest first.
    pub async fn list(&self, selector: &Selector) -> Result<Vec<DeadLetter>, StoreError> {
        dispatch!(self.0, s => s.list(selector).await)
    }

    /// One dead letter with its event and record.
    pub async fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        dispatch!(self.0, s => s.get(id).await)
    }

    /// Claims up to `batch` pending entries matching `selector` for `owner` until
    /// `lease_until` (micros). Entries already claimed by someone else are skipped.
    pub async fn claim(
        &self,
        selector: &Selector,
        owner: &str,
        lease_until: i64,
        batch: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        dispatch!(self.0, s => s.claim(selector, owner, lease_until, batch).await)
    }

    /// Extends every claim `owner` still holds on an entry a replay may deliver (pending or
    /// replayed) to `lease_until` (micros); returns the ids it extended. A claim another replay
    /// took over (after this owner's lease expired) is not among them.
    pub async fn renew_claims(
        &self,
        owner: &str,
        lease_until: i64,
    ) -> Result<Vec<i64>, StoreError> {
        dispatch!(self.0, s => s.renew_claims(owner, lease_until).await)
    }

    /// Atomically checks that `owner` still holds the claim on entry `id` (and the entry may
    /// still be delivered: pending or replayed) and extends it to `lease_until`; false if not.
    /// A replay asks this right before delivering an entry.
    pub async fn confirm_claim(
        &self,
        id: i64,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self.0, s => s.confirm_claim(id, owner, lease_until).await)
    }

    /// Owners holding live claims (for taking over from dead ones).
    pub async fn claim_owners(&self, now: i64) -> Result<Vec<String>, StoreError> {
        dispatch!(self.0, s => s.claim_owners(now).await)
    }

    /// Drops every claim of `owner` (a replay that died).
    pub async fn release_owner(&self, owner: &str) -> Result<u64, StoreError> {
        dispatch!(self.0, s => s.release_owner(owner).await)
    }

    /// Marks a claimed entry replayed (after its delivery ack).
    pub async fn mark_replayed(
        &self,
        id: i64,
        owner: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self.0, s => s.mark_replayed(id, owner, note).await)
    }

    /// Marks the claimed entries `ids` replayed in one transaction; returns how many this
    /// owner still held (an entry whose claim was taken over is left alone).
    pub async fn mark_replayed_all(
        &self,
        ids: Vec<i64>,
        owner: &str,
        note: &str,
    ) -> Result<u64, StoreError> {
        dispatch!(self.0, s => s.mark_replayed_all(ids, owner, note).await)
    }

    /// Records a failed replay attempt and releases the claim; the entry stays pending.
    pub async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        class: &str,
        message: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.0, s => s.mark_failed(id, owner, class, message, at).await)
    }

    /// Discards pending entries matching `selector` (unclaimed only); returns how many.
    pub async fn discard(&self, selector: &Selector, reason: &str) -> Result<u64, StoreError> {
        dispatch!(self.0, s => s.discard(selector, reason).await)
    }

    /// Counts by route × class × status.
    pub async fn stats(&self) -> Result<Vec<StatsRow>, StoreError> {
        dispatch!(self.0, s => s.stats().await)
    }

    /// Deletes replayed and discarded entries whose last change is older than `before`
    /// (micros). Pending entries are never purged.
    pub async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        dispatch!(self.0, s => s.purge(before).await)
    }
}

/// A stats row as both stores read it (`route` '' is "no route", shown as `-`).
pub(crate) fn stats_row(
    route: String,
    class: String,
    status: &str,
    count: i64,
) -> Result<StatsRow, StoreError> {
    Ok(StatsRow {
        route: if route.is_empty() { "-".into() } else { route },
        class,
        status: status
            .parse()
            .map_err(|m| StoreError::Corrupt { id: 0, message: m })?,
        count,
    })
}

/// Decodes the stored event JSON.
pub(crate) fn decode_event(id: i64, json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        id,
        message: format!("event JSON: {e}"),
    })
}

/// Encodes an event for storage.
pub(crate) fn encode_event(event: &Event) -> String {
    // Serialising plain data to a String cannot fail.
    serde_json::to_string(event).unwrap_or_default()
}
