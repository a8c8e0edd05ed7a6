//! `switchyard snapshot start|status|cancel`: backfills of one table while the source streams
//! (see `source::postgres::backfill`). The request goes to the state store; the instance that
//! leads the source's slot runs it within a second or two.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::{Config, SourceKind};
use crate::dlq::select::parse_rate;
use crate::dlq::{AuditEntry, DlqStore};
use crate::event::now_micros;
use crate::source::postgres::backfill::{
    Backfill, DEFAULT_CHUNK_ROWS, State, check_filter, state_key,
};
use crate::source::postgres::stream::connect_sql;

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

fn actor(given: &Option<String>) -> String {
    let user = given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("local:{user}")
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Runs a `snapshot` subcommand.
pub async fn run(config: &Config, command: &SnapshotCommand) -> anyhow::Result<ExitCode> {
    let source = match command {
        SnapshotCommand::Start { source, .. }
        | SnapshotCommand::Status { source }
        | SnapshotCommand::Cancel { source, .. } => source,
    };
    let Some(SourceKind::Postgres(pg)) = config.sources.get(source).map(|s| &s.kind) else {
        return Ok(usage(&format!(
            "`{source}` is not a postgres source in {}",
            config.path.display()
        )));
    };
    let store = DlqStore::open(&config.dlq.store)
        .await
        .context("opening the state store")?;
    let key = state_key(source);
    let current: Option<Backfill> = store
        .get_state(&key)
        .await?
        .and_then(|v| serde_json::from_str(&v).ok());
    match command {
        SnapshotCommand::Status { .. } => match current {
            Some(b) => println!("{}", serde_json::to_string_pretty(&b)?),
            None => println!("{{\"state\": \"none\"}}"),
        },
        SnapshotCommand::Cancel { actor: who, .. } => {
            let Some(mut b) = current.filter(Backfill::is_active) else {
                return Ok(usage(&format!("source `{source}` has no backfill running")));
            };
            b.state = State::Cancelled;
            b.finished_at = Some(now_micros());
            store.put_state(&key, &serde_json::to_string(&b)?).await?;
            store
                .audit(&AuditEntry {
                    at: now_micros(),
                    actor: actor(who),
                    action: "backfill cancel".into(),
                    selector: format!("--source {source} --table {}.{}", b.schema, b.table),
                    count: i64::try_from(b.rows).unwrap_or(i64::MAX),
                    result: format!("cancelled {} after {} rows", b.id, b.rows),
                    ..AuditEntry::default()
                })
                .await?;
            eprintln!("cancelled {}: it stops after the chunk in progress", b.id);
        }
        SnapshotCommand::Start {
            table,
            filter,
            rate,
            chunk_rows,
            actor: who,
            ..
        } => {
            if let Some(b) = current.as_ref().filter(|b| b.is_active()) {
                return Ok(usage(&format!(
                    "source `{source}` is backfilling {}.{} ({}); cancel it first",
                    b.schema, b.table, b.id
                )));
            }
            let (schema, name) = table.split_once('.').unwrap_or(("public", table));
            if !(1..=100_000).contains(chunk_rows) {
                return Ok(usage("--chunk-rows must be between 1 and 100000"));
            }
            let conn = connect_sql(pg)
                .await
                .with_context(|| format!("connecting to source `{source}`'s database"))?;
            let has_key: Option<bool> = conn
                .query_opt(
                    "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = c.oid AND indisprimary)
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&schema, &name],
                )
                .await?
                .map(|r| r.get(0));
            match has_key {
                None => {
                    return Ok(usage(&format!(
                        "no table {schema}.{name} in source `{source}`'s database"
                    )));
                }
                Some(false) => {
                    return Ok(usage(&format!(
                        "{schema}.{name} has no primary key: a backfill reads in key order"
                    )));
                }
                Some(true) => {}
            }
            if let Some(f) = filter
                && let Err(e) = check_filter(&conn, schema, name, f).await
            {
                return Ok(usage(&format!(
                    "--where is not a condition on {schema}.{name}: {e}; nothing was started"
                )));
            }
            let b = Backfill {
                id: format!("bf-{:x}", now_micros()),
                schema: schema.to_string(),
                table: name.to_string(),
                filter: filter.clone(),
                rate: *rate,
                chunk_rows: *chunk_rows,
                last_key: None,
                rows: 0,
                chunks: 0,
                estimate: 0,
                state: State::Requested,
                message: None,
                requested_by: actor(who),
                requested_at: now_micros(),
                finished_at: None,
            };
            store.put_state(&key, &serde_json::to_string(&b)?).await?;
            let mut selector = format!("--source {source} --table {schema}.{name}");
            if let Some(f) = filter {
                selector.push_str(&format!(" --where {f}"));
            }
            store
                .audit(&AuditEntry {
                    at: now_micros(),
                    actor: b.requested_by.clone(),
                    action: "backfill start".into(),
                    selector,
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
