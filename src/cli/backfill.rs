//! `switchyard snapshot start|status|cancel`: backfills of one table while the source streams
//! (see `source::postgres::backfill`). The request goes to the state store; the instance that
//! leads the source's slot runs it within a second or two.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::dlq::{actor, usage_error};
use crate::config::{Config, SourceKind};
use crate::event::now_micros;
use crate::source::postgres::backfill::{self, DEFAULT_CHUNK_ROWS, Request, RequestError};
use crate::store::dead_letters::select::parse_rate;
use crate::store::{AuditEntry, Store};

/// The `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Copy a table again while the source streams (an incremental snapshot): op "r" records
    /// with source.snapshot = "incremental", never a key's read after a newer change of it.
    Start {
        /// The postgres source.
        #[arg(long)]
        source: String,
        /// The table: schema.table (or table, in public).
        #[arg(long)]
        table: String,
        /// Only rows matching this SQL condition, e.g. "created_at > now() - interval '7 days'"
        /// (checked by the database before anything runs).
        #[arg(long = "where")]
        filter: Option<String>,
        /// At most this many rows a second, e.g. 5000/s.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Rows read per chunk.
        #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS)]
        chunk_rows: usize,
        /// Who is doing this (default: the OS user), for the audit log.
        #[arg(long)]
        actor: Option<String>,
    },
    /// The source's backfill: state, rows, chunks, last key.
    Status {
        /// The postgres source.
        #[arg(long)]
        source: String,
    },
    /// Stop the source's backfill after the chunk in progress (what was copied stays).
    Cancel {
        /// The postgres source.
        #[arg(long)]
        source: String,
        /// Who is doing this (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
    },
}

/// Runs a `snapshot` subcommand.
pub(crate) async fn run(config: &Config, command: &SnapshotCommand) -> anyhow::Result<ExitCode> {
    let source = match command {
        SnapshotCommand::Start { source, .. }
        | SnapshotCommand::Status { source }
        | SnapshotCommand::Cancel { source, .. } => source,
    };
    if !matches!(
        config.sources.get(source).map(|s| &s.kind),
        Some(SourceKind::Postgres(_))
    ) {
        return Ok(usage_error(&format!(
            "`{source}` is not a postgres source in {}",
            config.path.display()
        )));
    }
    let store = Store::open(&config.dlq.store)
        .await
        .context("opening the state store")?;
    match command {
        SnapshotCommand::Status { .. } => {
            let status = backfill::status(&store, source).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        SnapshotCommand::Cancel { actor: who, .. } => {
            let cancelled = backfill::cancel(&store, source).await?;
            if cancelled.is_empty() {
                return Ok(usage_error(&format!(
                    "source `{source}` has no backfill running or queued"
                )));
            }
            let (table, rows) = cancelled.running.as_ref().map_or_else(
                || (String::from("(queued)"), 0),
                |b| (format!("{}.{}", b.schema, b.table), b.rows),
            );
            store
                .audit_trail()
                .append(&AuditEntry {
                    at: now_micros(),
                    actor: actor(who),
                    action: "backfill cancel".into(),
                    selector: format!("--source {source} --table {table}"),
                    count: i64::try_from(rows).unwrap_or(i64::MAX),
                    result: cancelled.describe(),
                    ..AuditEntry::default()
                })
                .await?;
            if cancelled.running.is_some() {
                eprintln!(
                    "{}: it stops after the chunk in progress",
                    cancelled.describe()
                );
            } else {
                eprintln!("{}", cancelled.describe());
            }
        }
        SnapshotCommand::Start {
            table,
            filter,
            rate,
            chunk_rows,
            actor: who,
            ..
        } => {
            let req = Request {
                source: source.clone(),
                table: table.clone(),
                filter: filter.clone(),
                rate: *rate,
                chunk_rows: *chunk_rows,
                by: actor(who),
            };
            let b = match backfill::request(config, &store, &req).await {
                Ok(b) => b,
                Err(e @ RequestError::Unavailable(_)) => return Err(e.into()),
                Err(e) => return Ok(usage_error(&e.to_string())),
            };
            store
                .audit_trail()
                .append(&AuditEntry {
                    at: now_micros(),
                    actor: b.requested_by.clone(),
                    action: "backfill start".into(),
                    selector: req.describe(),
                    count: 0,
                    result: format!("requested {}", b.id),
                    ..AuditEntry::default()
                })
                .await?;
            println!("{}", b.id);
            eprintln!(
                "requested {}: the instance leading source `{source}` starts it within seconds; follow it with `switchyard snapshot status --source {source}`",
                b.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
