//! Switchyard routes PostgreSQL change events and SaaS webhooks into Kafka as Avro
//! (Confluent Schema Registry wire format), at-least-once, with a replayable dead-letter queue.
//!
//! ```text
//!  HTTP POST ──► source::webhook ──► pipeline: router ──► encode ──► sink::kafka ──► topics
//!                 (reply after ack)  (route table)       (Avro+SR)   (idempotent, acks=all)
//!  WAL ────────► source::postgres ──► pipeline::ordered (per-source commit order) ──┘
//!                 (slot confirmed up to the newest fully durable commit)
//! ```
//!
//! The modules, bottom up (each imports only modules of its own layer or below; the graph has
//! no cycle: `scripts/module-graph`):
//! - leaves: [`error`], [`json`], [`avro`] (the schema model), [`event`], [`ack`];
//! - configuration: [`config`], [`pg_tls`], [`debezium`] (the Debezium mapping); then
//!   [`telemetry`];
//! - the state store: [`store`], seen through views (dead letters, seen webhook ids, source
//!   state, the audit trail);
//! - stages: [`router`], [`encode`] (with the Debezium mapping), [`sink`];
//! - [`pipeline`]: route → encode → deliver, ordered lanes, queues, the leadership fence;
//! - sources and replay: [`source`], [`replay`], [`serve`];
//! - what a configuration does: [`catalog`] (topics, lineage), [`reload`];
//! - the process: [`daemon`], [`admin`], [`cli`].
//!
//! `docs/architecture.md` follows a webhook and a row change through them, naming the function
//! where each is acknowledged; the invariants are written at the top of the modules that keep
//! them: nothing is acknowledged to a source before it is durable.

// Items are `pub(crate)` unless the crate's callers (the binary, tests, benches) use them, so the
// compiler finds dead code: `pub` where nothing outside can reach it is a warning.
#![warn(unreachable_pub)]

/// A hash map for the hot path's lookups by name (webhook paths, routes by source, schema
/// subjects, metric labels): foldhash, seeded per process, instead of the standard SipHash
/// (about 150 instructions per lookup of a short name against 30). Its keys come from the
/// configuration, or are bounded where they do not.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The set of [`FastMap`] (the Kafka sink's topics known to exist, looked up per record).
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub(crate) mod ack;
pub(crate) mod admin;
pub mod avro;
pub(crate) mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod debezium;
pub mod encode;
pub mod error;
pub mod event;
pub mod json;
pub(crate) mod pg_tls;
pub(crate) mod pipeline;
pub(crate) mod reload;
pub(crate) mod replay;
pub mod router;
pub(crate) mod serve;
pub mod sink;
pub mod source;
pub mod store;
pub mod telemetry;
