//! The PostgreSQL CDC source (in progress): so far the pgoutput decoder and LSNs. The
//! replication stream, snapshot and slot management build on these.

pub mod envelope;
pub mod lsn;
pub mod pgoutput;
pub mod stream;
pub mod tls;
pub mod types;
