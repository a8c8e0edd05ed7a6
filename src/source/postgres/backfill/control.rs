//! What operators do with backfills (`switchyard snapshot`, `/api/v1/backfills`): request one
//! (checked against the database first), read its state and the queue, cancel.

use super::{Backfill, Queued, State, queue_key, state_key};
use crate::event::now_micros;
use crate::source::postgres::snapshot::quote_ident;
use crate::source::postgres::stream::connect_sql;

/// Checks `filter` against `schema.table` on `conn` without reading a row: the database's
/// message if it is not a valid condition.
pub(crate) async fn check_filter(
    conn: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    filter: &str,
) -> Result<(), String> {
    let query = format!(
        "BEGIN READ ONLY; EXPLAIN SELECT 1 FROM {}.{} WHERE ({filter}); ROLLBACK",
        quote_ident(schema),
        quote_ident(table)
    );
    match conn.simple_query(&query).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = conn.simple_query("ROLLBACK").await;
            Err(e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string()))
        }
    }
}

/// Why a backfill request was refused (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Not a postgres source of the configuration.
    #[error("`{0}` is not a postgres source")]
    UnknownSource(String),
    /// One runs already.
    #[error("source `{name}` is backfilling {table} ({id}); cancel it first")]
    Busy {
        name: String,
        table: String,
        id: String,
    },
    /// The table is not there, has no primary key, or the condition is not one.
    #[error("{0}")]
    Invalid(String),
    /// The database or the store could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// What a backfill request asks for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub source: String,
    /// `schema.table`, or `table` in `public`.
    pub table: String,
    pub filter: Option<String>,
    pub rate: Option<f64>,
    pub chunk_rows: usize,
    /// The principal (`local:<user>`, `token:<name>`).
    pub by: String,
}

impl Request {
    /// A request as the CLI's flags, for the audit log.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("--source {} --table {}", self.source, self.table);
        if let Some(f) = &self.filter {
            s.push_str(&format!(" --where {f}"));
        }
        if let Some(r) = self.rate {
            s.push_str(&format!(" --rate {r}/s"));
        }
        s
    }
}

/// Checks `req` against the source's database (table, primary key, condition) and stores it
/// for the leader to run: the CLI's `snapshot start` and the admin API's `POST
/// /api/v1/backfills`.
pub(crate) async fn request(
    config: &crate::config::Config,
    store: &crate::store::Store,
    req: &Request,
) -> Result<Backfill, RequestError> {
    let Some(crate::config::SourceKind::Postgres(pg)) =
        config.sources.get(&req.source).map(|s| &s.kind)
    else {
        return Err(RequestError::UnknownSource(req.source.clone()));
    };
    let key = state_key(&req.source);
    let unavailable = |e: &dyn std::fmt::Display| RequestError::Unavailable(e.to_string());
    let current: Option<Backfill> = store
        .source_state()
        .get(&key)
        .await
        .map_err(|e| unavailable(&e))?
        .and_then(|v| serde_json::from_str(&v).ok());
    if let Some(b) = current.filter(Backfill::is_active) {
        return Err(RequestError::Busy {
            name: req.source.clone(),
            table: format!("{}.{}", b.schema, b.table),
            id: b.id,
        });
    }
    if !(1..=100_000).contains(&req.chunk_rows) {
        return Err(RequestError::Invalid(
            "chunk rows must be between 1 and 100000".into(),
        ));
    }
    let (schema, name) = req.table.split_once('.').unwrap_or(("public", &req.table));
    let conn = connect_sql(pg).await.map_err(|e| unavailable(&e))?;
    let has_key: Option<bool> = conn
        .query_opt(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = c.oid AND indisprimary)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &name],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .map(|r| r.get(0));
    match has_key {
        None => {
            return Err(RequestError::Invalid(format!(
                "no table {schema}.{name} in source `{}`'s database",
                req.source
            )));
        }
        Some(false) => {
            return Err(RequestError::Invalid(format!(
                "{schema}.{name} has no primary key: a backfill reads in key order"
            )));
        }
        Some(true) => {}
    }
    if let Some(f) = &req.filter
        && let Err(e) = check_filter(&conn, schema, name, f).await
    {
        return Err(RequestError::Invalid(format!(
            "the condition is not one on {schema}.{name}: {e}; nothing was started"
        )));
    }
    let b = Backfill::requested(
        schema,
        name,
        req.filter.clone(),
        req.rate,
        req.chunk_rows,
        &req.by,
    );
    let json = serde_json::to_string(&b).map_err(|e| unavailable(&e))?;
    store
        .source_state()
        .put(&key, &json)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(b)
}

/// The tables waiting for their backfill (`snapshot_new_tables`), next first.
pub(crate) async fn queued(
    store: &crate::store::Store,
    source: &str,
) -> Result<Vec<Queued>, crate::store::StoreError> {
    Ok(store
        .source_state()
        .get(&queue_key(source))
        .await?
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default())
}

/// The source's backfill, if it ever had one.
pub(crate) async fn current(
    store: &crate::store::Store,
    source: &str,
) -> Result<Option<Backfill>, crate::store::StoreError> {
    Ok(store
        .source_state()
        .get(&state_key(source))
        .await?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// What [`cancel`] stopped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancelled {
    /// The backfill that ran, as it stands.
    pub running: Option<Backfill>,
    /// Tables that were waiting (`snapshot_new_tables`): taken off the queue.
    pub queued: Vec<Queued>,
}

impl Cancelled {
    /// Nothing ran or waited.
    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_none() && self.queued.is_empty()
    }

    /// For the audit trail and the CLI: `cancelled bf-1 after 10 rows; 2 queued tables dropped`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = &self.running {
            parts.push(format!("cancelled {} after {} rows", b.id, b.rows));
        }
        if !self.queued.is_empty() {
            let names: Vec<String> = self
                .queued
                .iter()
                .map(|q| format!("{}.{}", q.schema, q.table))
                .collect();
            parts.push(format!("took {} off the queue", names.join(", ")));
        }
        parts.join("; ")
    }
}

/// Cancels the source's running backfill and empties its queue.
pub(crate) async fn cancel(
    store: &crate::store::Store,
    source: &str,
) -> Result<Cancelled, crate::store::StoreError> {
    let mut out = Cancelled {
        queued: queued(store, source).await?,
        ..Cancelled::default()
    };
    if !out.queued.is_empty() {
        store.source_state().put(&queue_key(source), "[]").await?;
    }
    if let Some(mut b) = current(store, source).await?.filter(Backfill::is_active) {
        b.state = State::Cancelled;
        b.finished_at = Some(now_micros());
        let json = serde_json::to_string(&b).unwrap_or_default();
        store.source_state().put(&state_key(source), &json).await?;
        out.running = Some(b);
    }
    Ok(out)
}

/// `snapshot status` and `GET /api/v1/backfills/{source}`: the last backfill's fields (or
/// `"state": "none"`) and `queued`, the tables waiting.
pub(crate) async fn status(
    store: &crate::store::Store,
    source: &str,
) -> Result<serde_json::Value, crate::store::StoreError> {
    let mut v = match current(store, source).await? {
        Some(b) => serde_json::to_value(&b).unwrap_or_default(),
        None => serde_json::json!({"state": "none"}),
    };
    let queued: Vec<String> = queued(store, source)
        .await?
        .iter()
        .map(|q| format!("{}.{}", q.schema, q.table))
        .collect();
    v["queued"] = serde_json::json!(queued);
    Ok(v)
}
