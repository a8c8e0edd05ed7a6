//! Switchyard routes PostgreSQL change events and SaaS webhooks into Kafka as Avro
//! (Confluent Schema Registry wire format), at-least-once, with a replayable dead-letter queue.
//!
//! ```text
//!  HTTP POST ──► source::webhook ──► pipeline: router ──► encode ──► sink::kafka ──► topics
//!                 (reply after ack)  (route table)       (Avro+SR)   (idempotent, acks=all)
//! ```
//!
//! The invariants every stage keeps are in `../shared/ARCHITECTURE.md` and at the top of each
//! pipeline module: nothing is acknowledged to a source before it is durable.

pub mod ack;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dlq;
pub mod encode;
pub mod error;
pub mod event;
pub mod pipeline;
pub mod router;
pub mod serve;
pub mod sink;
pub mod source;
pub mod tail;
pub mod telemetry;
