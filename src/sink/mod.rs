//! Sinks: where events become durable. Only Kafka for now.

pub mod context;
pub mod kafka;
