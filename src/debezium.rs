//! The Debezium mapping: PostgreSQL column types to Avro (`types`) and the change envelopes
//! product teams read (`envelope`), and what a table shape makes once per route (`shapes`). Below the Postgres source, the router (its filters type
//! column values with it) and the encoder; it reads pgoutput's values from the event model
//! (`event::{Datum, Tuple}`) and writes Avro with `avro::datum`.

pub mod envelope;
pub(crate) mod shapes;
pub mod types;
