//! The PostgreSQL CDC source: pgoutput decoding, Debezium envelopes, the replication stream and
//! the initial snapshot.

pub(crate) mod backfill;
pub mod catalog;
mod connect;
mod counters;
pub(crate) mod error;
pub(crate) mod leader;
pub mod lsn;
pub mod pgoutput;
mod preflight;
pub(crate) mod publication;
mod rows;
mod session;
pub(crate) mod slot;
pub(crate) mod snapshot;
pub(crate) mod stream;
mod txn;

// The Debezium mapping lives in `encode::debezium`; these paths stay for callers of the crate.
pub use crate::debezium::{envelope, types};
