//! The state store: what switchyard keeps beside Kafka, in one database (embedded SQLite, or a
//! PostgreSQL shared by every instance), seen through four views:
//!
//! ```text
//!            Store (one backend per database: sqlite/, postgres/)
//!   ┌───────────────┬────────────────┬────────────────┬─────────────┐
//!   dead_letters()  seen_ids()       source_state()   audit_trail()
//!   DLQ entries,    webhook ids a    snapshot and     hash-chained
//!   replay claims   source accepted  backfill         record of what
//!   and leases      (deduplication)  progress         on-call did
//! ```
//!
//! Each view is a borrowed handle with the methods of one concern; a backend implements every
//! method of every view, with the same semantics (one conformance suite, `tests/it/dlq_store.rs`)
//! except where the databases differ in kind: the seen ids of the embedded store serve one
//! instance ([`SeenIds::Local`]: a log indexed later), those of a shared store are claimed
//! before delivery ([`SeenIds::Shared`]). The deduplication that uses them lives beside the
//! webhook source (`source::webhook::dedupe`).

use std::path::PathBuf;

use crate::config::DlqStoreConfig;

/// Calls `$call` with `$store` bound to the backend of `$self` (a [`Store`]).
macro_rules! dispatch {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            $crate::store::Store::Sqlite($store) => $call,
            $crate::store::Store::Postgres($store) => $call,
        }
    };
}

pub(crate) mod audit;
pub(crate) mod dead_letters;
mod postgres;
pub(crate) mod seen_ids;
pub(crate) mod source_state;
mod sql;
mod sqlite;

pub use audit::{AuditEntry, AuditTrail};
pub use dead_letters::{
    DeadLetter, DeadLetters, EncodedRecord, NewDeadLetter, Selector, StatsRow, Status,
};
pub use postgres::PostgresStore;
pub use seen_ids::{LocalIds, SeenIds, SharedIds, WebhookIdClaim, WebhookIdState};
pub use source_state::SourceState;
pub use sqlite::SqliteStore;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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

impl StoreError {
    /// True when the failure may pass by itself (the store's database restarting or out of
    /// reach): a caller answers "retry later" (a webhook 503) rather than failing for good.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::PostgresUnavailable(_))
    }
}

/// The configured store. An enum rather than a trait object: two backends, chosen by URL
/// scheme, with the same views and one conformance suite.
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// Shared PostgreSQL.
    Postgres(PostgresStore),
}

impl Store {
    /// Opens (and on first use creates) the store named by `[dlq].url`.
    pub async fn open(config: &DlqStoreConfig) -> Result<Store, StoreError> {
        Ok(match config {
            DlqStoreConfig::Sqlite(path) => Store::Sqlite(SqliteStore::open(path).await?),
            DlqStoreConfig::Postgres(url) => Store::Postgres(PostgresStore::connect(url).await?),
        })
    }

    /// True when other switchyard instances may use the same store (PostgreSQL).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Dead letters: stored, listed, claimed and marked by replays, discarded, purged.
    pub fn dead_letters(&self) -> DeadLetters<'_> {
        DeadLetters(self)
    }

    /// The webhook event ids sources accepted (deduplication), and with a shared store the
    /// claims instances take on them.
    pub fn seen_ids(&self) -> SeenIds<'_> {
        match self {
            Store::Sqlite(s) => SeenIds::Local(s.ids()),
            Store::Postgres(s) => SeenIds::Shared(SharedIds(s)),
        }
    }

    /// Sources' progress (snapshots, backfills and their queue), by key.
    pub fn source_state(&self) -> SourceState<'_> {
        SourceState(self)
    }

    /// The audit trail of what on-call did (replays, discards, reads of raw payloads).
    pub fn audit_trail(&self) -> AuditTrail<'_> {
        AuditTrail(self)
    }

    /// Writes a timestamp to the source state: `/readyz` asks whether the store takes writes.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        self.source_state()
            .put("switchyard.readyz", &crate::event::now_micros().to_string())
            .await
    }
}

/// This machine's name (claim owners start with it).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
