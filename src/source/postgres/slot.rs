//! Replication slot operations for on-call (`switchyard slot`, the admin API and console):
//! each postgres source's slot as the database reports it, and dropping a stopped one.

use anyhow::bail;

use super::stream::connect_sql;
use crate::config::{Config, PostgresSourceConfig, SourceKind};

fn postgres_sources(config: &Config) -> Vec<(&str, &PostgresSourceConfig)> {
    config
        .sources
        .iter()
        .filter_map(|(name, s)| match &s.kind {
            SourceKind::Postgres(p) => Some((name.as_str(), p)),
            SourceKind::Webhook(_) => None,
        })
        .collect()
}

/// One postgres source's slot, as `slot status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SlotStatus {
    pub source: String,
    pub slot: String,
    /// `None`: the slot does not exist (the next start creates it).
    pub active: Option<bool>,
    pub confirmed_lsn: Option<String>,
    pub lag_bytes: Option<i64>,
    pub wal_status: Option<String>,
}

/// The slot of every postgres source (each database asked, read-only).
pub(crate) async fn status(config: &Config) -> anyhow::Result<Vec<SlotStatus>> {
    let mut out = Vec::new();
    for (name, source) in postgres_sources(config) {
        let client = connect_sql(source).await?;
        let row = client
            .query_opt(
                "SELECT active, confirmed_flush_lsn::text,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                        wal_status
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&source.slot],
            )
            .await?;
        out.push(SlotStatus {
            source: name.to_string(),
            slot: source.slot.clone(),
            active: row.as_ref().map(|r| r.get::<_, bool>(0)),
            confirmed_lsn: row.as_ref().and_then(|r| r.get::<_, Option<String>>(1)),
            lag_bytes: row.as_ref().and_then(|r| r.get::<_, Option<i64>>(2)),
            wal_status: row.as_ref().and_then(|r| r.get::<_, Option<String>>(3)),
        });
    }
    Ok(out)
}

/// What resetting a slot came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reset {
    /// Not a postgres source of the configuration.
    UnknownSource,
    /// There was no slot (the next start creates it).
    Missing,
    /// The slot is in use: a running instance streams from it.
    InUse,
    /// Dropped; the message says what the next start does.
    Dropped(String),
}

/// Drops `source`'s slot unless it is in use (`confirm` is asked first, with the question).
pub(crate) async fn reset(
    config: &Config,
    source: &str,
    confirm: impl FnOnce(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<Reset> {
    let Some((_, pg)) = postgres_sources(config)
        .into_iter()
        .find(|(n, _)| *n == source)
    else {
        return Ok(Reset::UnknownSource);
    };
    let client = connect_sql(pg).await?;
    let row = client
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&pg.slot],
        )
        .await?;
    match row {
        None => return Ok(Reset::Missing),
        Some(r) if r.get::<_, bool>(0) => return Ok(Reset::InUse),
        Some(_) => {}
    }
    if !confirm(&format!(
        "Drop slot {}? Changes until the next start are not captured.",
        pg.slot
    ))? {
        bail!("cancelled; the slot was kept");
    }
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&pg.slot])
        .await?;
    Ok(Reset::Dropped(
        if pg.snapshot == crate::config::SnapshotMode::Initial {
            format!(
                "dropped slot {}; the next start creates it and takes a new snapshot (snapshot = \"initial\").",
                pg.slot
            )
        } else {
            format!(
                "dropped slot {}; the next start creates it at the current position. Changes made meanwhile are not captured: set snapshot = \"initial\" before the next start to copy the tables again.",
                pg.slot
            )
        },
    ))
}
