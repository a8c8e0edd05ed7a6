//! Sinks: where events become durable. Only Kafka for now.

pub(crate) mod context;
pub mod kafka;
