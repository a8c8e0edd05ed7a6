//! The dead-letter queue: where events that cannot be delivered wait for on-call.
//!
//! ```text
//!  pipeline ──definite failure──► DlqStore::put ──► ack DeadLettered (source may move on)
//!                                       │
//!  switchyard dlq list/show/stats ◄─────┤
//!  switchyard dlq replay ──claim──► router → encode → Kafka ──ack──► mark replayed
//!  switchyard dlq discard ─────────────►┘   (every replay/discard is written to the audit log)
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

pub mod audit;
mod postgres;
pub mod select;
mod sql;
mod sqlite;
pub mod view;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::DlqStoreConfig;
use crate::error::ErrorClass;
use crate::event::Event;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

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

/// One line of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When, micros since the epoch.
    pub at: i64,
    /// Who: `token:<name>` (the admin API, authenticated), `local:<user>` (the CLI straight on
    /// the store: break-glass), `switchyard` (the daemon itself).
    pub actor: String,
    /// The role the actor acted with (`viewer`, `operator`, `admin`; empty when not through
    /// the admin API).
    pub role: String,
    /// `replay`, `replay --dry-run`, `discard`, `view raw payload`, `denied`, …
    pub action: String,
    /// The selector as typed (or the request's method and path).
    pub selector: String,
    /// How many entries it applied to.
    pub count: i64,
    /// What happened.
    pub result: String,
    /// The peer address of the request (admin API), empty otherwise.
    pub peer: String,
    /// The request's id (admin API: also in its `x-request-id` answer header).
    pub request_id: String,
}

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

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// SQLite failed.
    #[error("sqlite dead-letter store {path}: {message}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// PostgreSQL failed, and the same call would fail again (bad SQL or data,
    /// authentication, TLS verification).
    #[error("postgres dead-letter store: {0}")]
    Postgres(String),
    /// PostgreSQL is unreachable or lost the connection, is restarting or shutting down, or
    /// aborted the statement for a moment (serialization failure, deadlock): transient, the
    /// same call may succeed later (the store connects anew on its next call).
    #[error("postgres dead-letter store unavailable: {0}")]
    PostgresUnavailable(String),
    /// A stored row could not be read back.
    #[error("dead letter {id} is unreadable: {message}")]
    Corrupt {
        /// Row id.
        id: i64,
        /// What is wrong.
        message: String,
    },
}

impl DlqError {
    /// True when the failure may pass by itself (the store's database restarting or out of
    /// reach): a caller answers "retry later" (a webhook 503) rather than failing for good.
    pub fn is_transient(&self) -> bool {
        matches!(self, DlqError::PostgresUnavailable(_))
    }
}

/// The configured store. An enum rather than a trait object: two backends, chosen by URL
/// scheme, with the same methods and one conformance suite.
pub enum DlqStore {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// Shared PostgreSQL.
    Postgres(PostgresStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            DlqStore::Sqlite($store) => $call,
            DlqStore::Postgres($store) => $call,
        }
    };
}

impl DlqStore {
    /// Opens (and on first use creates) the store named by `[dlq].url`.
    pub async fn open(config: &DlqStoreConfig) -> Result<DlqStore, DlqError> {
        Ok(match config {
            DlqStoreConfig::Sqlite(path) => DlqStore::Sqlite(SqliteStore::open(path).await?),
            DlqStoreConfig::Postgres(url) => DlqStore::Postgres(PostgresStore::connect(url).await?),
        })
    }

    /// Stores a dead letter; a pending one for the same event and route is updated instead
    /// (attempts + 1, last failure). Returns its id once committed.
    pub async fn put(&self, letter: &NewDeadLetter) -> Result<i64, DlqError> {
        dispatch!(self, s => s.put(letter).await)
    }

    /// Dead letters matching `selector`, oldest first.
    pub async fn list(&self, selector: &Selector) -> Result<Vec<DeadLetter>, DlqError> {
        dispatch!(self, s => s.list(selector).await)
    }

    /// One dead letter with its event and record.
    pub async fn get(&self, id: i64) -> Result<Option<DeadLetter>, DlqError> {
        dispatch!(self, s => s.get(id).await)
    }

    /// Claims up to `batch` pending entries matching `selector` for `owner` until
    /// `lease_until` (micros). Entries already claimed by someone else are skipped.
    pub async fn claim(
        &self,
        selector: &Selector,
        owner: &str,
        lease_until: i64,
        batch: usize,
    ) -> Result<Vec<DeadLetter>, DlqError> {
        dispatch!(self, s => s.claim(selector, owner, lease_until, batch).await)
    }

    /// Extends every claim `owner` still holds on an entry a replay may deliver (pending or
    /// replayed) to `lease_until` (micros); returns the ids it extended. A claim another replay
    /// took over (after this owner's lease expired) is not among them.
    pub async fn renew_claims(&self, owner: &str, lease_until: i64) -> Result<Vec<i64>, DlqError> {
        dispatch!(self, s => s.renew_claims(owner, lease_until).await)
    }

    /// Atomically checks that `owner` still holds the claim on entry `id` (and the entry may
    /// still be delivered: pending or replayed) and extends it to `lease_until`; false if not.
    /// A replay asks this right before delivering an entry.
    pub async fn confirm_claim(
        &self,
        id: i64,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool, DlqError> {
        dispatch!(self, s => s.confirm_claim(id, owner, lease_until).await)
    }

    /// Owners holding live claims (for taking over from dead ones).
    pub async fn claim_owners(&self, now: i64) -> Result<Vec<String>, DlqError> {
        dispatch!(self, s => s.claim_owners(now).await)
    }

    /// Drops every claim of `owner` (a replay that died).
    pub async fn release_owner(&self, owner: &str) -> Result<u64, DlqError> {
        dispatch!(self, s => s.release_owner(owner).await)
    }

    /// Marks a claimed entry replayed (after its delivery ack).
    pub async fn mark_replayed(&self, id: i64, owner: &str, note: &str) -> Result<bool, DlqError> {
        dispatch!(self, s => s.mark_replayed(id, owner, note).await)
    }

    /// Marks the claimed entries `ids` replayed in one transaction; returns how many this
    /// owner still held (an entry whose claim was taken over is left alone).
    pub async fn mark_replayed_all(
        &self,
        ids: Vec<i64>,
        owner: &str,
        note: &str,
    ) -> Result<u64, DlqError> {
        dispatch!(self, s => s.mark_replayed_all(ids, owner, note).await)
    }

    /// Records a failed replay attempt and releases the claim; the entry stays pending.
    pub async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        class: &str,
        message: &str,
        at: i64,
    ) -> Result<(), DlqError> {
        dispatch!(self, s => s.mark_failed(id, owner, class, message, at).await)
    }

    /// Discards pending entries matching `selector` (unclaimed only); returns how many.
    pub async fn discard(&self, selector: &Selector, reason: &str) -> Result<u64, DlqError> {
        dispatch!(self, s => s.discard(selector, reason).await)
    }

    /// Counts by route × class × status.
    pub async fn stats(&self) -> Result<Vec<StatsRow>, DlqError> {
        dispatch!(self, s => s.stats().await)
    }

    /// True when the webhook event `key` was accepted at or after `since` (micros).
    pub async fn seen_since(&self, key: &str, since: i64) -> Result<bool, DlqError> {
        dispatch!(self, s => s.seen_since(key, since).await)
    }

    /// Claims the webhook event id `key` for this instance until `until` (micros), unless it
    /// was accepted since `since` or another instance holds a live claim. The embedded store
    /// serves one instance: it only looks the id up.
    pub async fn claim_webhook_id(
        &self,
        key: &str,
        since: i64,
        until: i64,
    ) -> Result<WebhookIdClaim, DlqError> {
        match self {
            DlqStore::Postgres(s) => s.claim_webhook_id(key, since, until).await,
            DlqStore::Sqlite(s) => Ok(if s.seen_since(key, since).await? {
                WebhookIdClaim::Accepted(since)
            } else {
                WebhookIdClaim::Won
            }),
        }
    }

    /// Whether `key` was accepted since `since`, is claimed by a live instance, or neither.
    pub async fn webhook_id_state(
        &self,
        key: &str,
        since: i64,
    ) -> Result<WebhookIdState, DlqError> {
        match self {
            DlqStore::Postgres(s) => s.webhook_id_state(key, since).await,
            DlqStore::Sqlite(s) => Ok(if s.seen_since(key, since).await? {
                WebhookIdState::Accepted(since)
            } else {
                WebhookIdState::Free
            }),
        }
    }

    /// Ends this instance's claim on `key` without accepting it (its delivery failed).
    /// Accepting ends it by itself ([`DlqStore::remember_seen`]).
    pub async fn release_webhook_id(&self, key: &str) -> Result<(), DlqError> {
        match self {
            DlqStore::Postgres(s) => s.release_webhook_id(key).await,
            DlqStore::Sqlite(_) => Ok(()),
        }
    }

    /// The embedded store, for work done on a thread of its own (blocking calls).
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        match self {
            DlqStore::Sqlite(s) => Some(s),
            DlqStore::Postgres(_) => None,
        }
    }

    /// True when other switchyard instances may use the same store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, DlqStore::Postgres(_))
    }

    /// Remembers accepted webhook events (one transaction for the batch); on a shared store
    /// the same commit ends this instance's claims on them.
    pub async fn remember_seen(&self, entries: Vec<(String, i64)>) -> Result<(), DlqError> {
        dispatch!(self, s => s.remember_seen(entries).await)
    }

    /// Remembered webhook events not yet in the store's keyed index (SQLite appends them to a
    /// log first; PostgreSQL indexes every one at once: always 0).
    pub fn unindexed_seen(&self) -> usize {
        match self {
            DlqStore::Sqlite(s) => s.unindexed_seen(),
            DlqStore::Postgres(_) => 0,
        }
    }

    /// Indexes remembered webhook events until at most `keep` are unindexed (the oldest
    /// first); returns how many remain unindexed. Lookups ([`DlqStore::seen_since`]) see only
    /// indexed ones.
    pub async fn index_seen(&self, keep: usize) -> Result<usize, DlqError> {
        match self {
            DlqStore::Sqlite(s) => s.index_seen(keep).await,
            DlqStore::Postgres(_) => Ok(0),
        }
    }

    /// The newest remembered webhook events since `since`, at most `limit`.
    pub async fn recent_seen(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, DlqError> {
        dispatch!(self, s => s.recent_seen(since, limit).await)
    }

    /// Forgets webhook events accepted before `before`; returns how many.
    pub async fn purge_seen(&self, before: i64) -> Result<u64, DlqError> {
        dispatch!(self, s => s.purge_seen(before).await)
    }

    /// Source state kept beside the dead letters (e.g. snapshot progress), by key.
    pub async fn get_state(&self, key: &str) -> Result<Option<String>, DlqError> {
        dispatch!(self, s => s.get_state(key).await)
    }

    /// Writes a timestamp to the state table: `/readyz` asks whether the store takes writes.
    pub async fn check_writable(&self) -> Result<(), DlqError> {
        self.put_state("switchyard.readyz", &crate::event::now_micros().to_string())
            .await
    }

    /// Stores source state under `key` (durable once this returns).
    pub async fn put_state(&self, key: &str, value: &str) -> Result<(), DlqError> {
        dispatch!(self, s => s.put_state(key, value).await)
    }

    /// Appends to the audit log, chained to the row before ([`audit::link`]).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), DlqError> {
        dispatch!(self, s => s.audit(entry).await)
    }

    /// Audit rows after `after_id`, oldest first, at most `limit`.
    pub async fn audit_page(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<audit::AuditRecord>, DlqError> {
        dispatch!(self, s => s.audit_page(after_id, limit).await)
    }

    /// Walks the whole audit log and checks its chain ([`audit::Verifier`]).
    pub async fn verify_audit(&self) -> Result<audit::Verification, DlqError> {
        let mut v = audit::Verifier::default();
        let mut after = 0;
        'pages: loop {
            let page = self.audit_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for r in &page {
                if !v.push(r) {
                    break 'pages;
                }
            }
        }
        Ok(v.finish())
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<audit::AuditRecord>, DlqError> {
        dispatch!(self, s => s.audit_log(limit).await)
    }

    /// Deletes replayed and discarded entries whose last change is older than `before`
    /// (micros). Pending entries are never purged.
    pub async fn purge(&self, before: i64) -> Result<u64, DlqError> {
        dispatch!(self, s => s.purge(before).await)
    }
}

/// A stats row as both stores read it (`route` '' is "no route", shown as `-`).
pub(crate) fn stats_row(
    route: String,
    class: String,
    status: &str,
    count: i64,
) -> Result<StatsRow, DlqError> {
    Ok(StatsRow {
        route: if route.is_empty() { "-".into() } else { route },
        class,
        status: status
            .parse()
            .map_err(|m| DlqError::Corrupt { id: 0, message: m })?,
        count,
    })
}

/// Decodes the stored event JSON.
pub(crate) fn decode_event(id: i64, json: &str) -> Result<Event, DlqError> {
    serde_json::from_str(json).map_err(|e| DlqError::Corrupt {
        id,
        message: format!("event JSON: {e}"),
    })
}

/// Encodes an event for storage.
pub(crate) fn encode_event(event: &Event) -> String {
    // Serialising plain data to a String cannot fail.
    serde_json::to_string(event).unwrap_or_default()
}

/// This machine's name (claim owners start with it).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
