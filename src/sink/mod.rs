//! Sinks: where events become durable. Only Kafka for now.

pub mod kafka;
