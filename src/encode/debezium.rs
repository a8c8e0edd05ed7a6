//! The Debezium mapping: PostgreSQL column types to Avro (`types`) and the change envelopes
//! product teams read (`envelope`). Below the Postgres source and the router, which use it;
//! it reads pgoutput's values from the event model (`event::{Datum, Tuple}`).

pub mod envelope;
pub mod types;
