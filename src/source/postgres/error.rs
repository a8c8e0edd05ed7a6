//! Why a Postgres source's session ended: typed, with the cause kept, and whether retrying can
//! help.

/// Why a session ended. Each variant keeps its cause ([`std::error::Error::source`]) and says
/// whether retrying can help ([`SourceError::is_transient`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The SQL connection or a query failed (the server's message shown).
    #[error("postgres: {}", sql_message(.0))]
    Sql(#[source] tokio_postgres::Error),
    /// The database has no such table (dropped or renamed since).
    #[error("postgres: table {0} does not exist")]
    NoTable(String),
    /// The server is not set up for logical replication; the message says how to fix it.
    #[error("{0}")]
    Preflight(String),
    /// The replication connection failed.
    #[error("replication stream: {0}")]
    Replication(#[source] pgwire_replication::PgWireError),
    /// The stream ended or must stop (the message says why: lost leadership, a session that
    /// ended, the server closing it).
    #[error("replication stream: {0}")]
    Stream(String),
    /// A message could not be decoded.
    #[error(transparent)]
    Decode(#[from] super::pgoutput::DecodeError),
    /// The state store (snapshot and backfill progress) failed.
    #[error("state store: {0}")]
    State(#[source] crate::store::StoreError),
    /// Progress could not be written as JSON.
    #[error("state store: {0}")]
    StateJson(#[source] serde_json::Error),
    /// An event was neither delivered nor dead-lettered: restart from the confirmed position.
    #[error("event {0} was not made durable; restarting from the slot's confirmed position")]
    NotDurable(String),
}

impl SourceError {
    /// True when the session may succeed if tried again unchanged (a connection, the stream,
    /// the store, Kafka); false when something must be fixed first (the server's setup, a
    /// message that cannot be decoded, a table that is gone).
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Sql(_)
            | SourceError::Replication(_)
            | SourceError::Stream(_)
            | SourceError::State(_)
            | SourceError::StateJson(_)
            | SourceError::NotDurable(_) => true,
            SourceError::Preflight(_) | SourceError::Decode(_) | SourceError::NoTable(_) => false,
        }
    }
}

/// The server's message for a database error, else the client's.
fn sql_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

pub(super) fn sql(e: tokio_postgres::Error) -> SourceError {
    SourceError::Sql(e)
}

#[cfg(test)]
mod tests {
    use super::SourceError;

    #[test]
    fn setup_and_decoding_problems_are_definite_the_rest_transient_and_causes_are_kept() {
        assert!(!SourceError::Preflight("wal_level is replica".into()).is_transient());
        assert!(!SourceError::NoTable("public.gone".into()).is_transient());
        assert!(SourceError::Stream("the server ended the stream".into()).is_transient());
        assert!(SourceError::NotDurable("0/1:0".into()).is_transient());
        let json = serde_json::from_str::<u8>("x").expect_err("not json");
        let e = SourceError::StateJson(json);
        assert!(e.is_transient());
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        assert!(
            e.to_string().starts_with("state store: expected value"),
            "{e}"
        );
    }
}
