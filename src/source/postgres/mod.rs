//! The PostgreSQL CDC source: pgoutput decoding, Debezium envelopes, the replication stream and
//! the initial snapshot.

pub mod backfill;
pub mod catalog;
mod connect;
mod counters;
pub mod error;
pub mod leader;
pub mod lsn;
pub mod pgoutput;
mod preflight;
pub mod publication;
mod rows;
pub mod slot;
pub mod snapshot;
pub mod stream;
mod txn;

// The Debezium mapping lives in `encode::debezium`; these paths stay for callers of the crate.
pub use crate::debezium::{envelope, types};
