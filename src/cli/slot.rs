//! `switchyard slot …`: the replication slots of postgres sources, for on-call.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use crate::config::{Config, PostgresSourceConfig, SourceKind};
use crate::source::postgres::stream::connect_sql;

/// The `slot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SlotCommand {
    /// Show each postgres source's slot: active, confirmed position, WAL held back, status.
    Status,
    /// Drop a source's slot so that the next start creates it afresh at the current position.
    ///
    /// Changes committed while the slot is gone are not captured: use it to recover from a
    /// `lost` slot, then re-snapshot the tables. Refuses while the slot is in use.
    Reset {
        /// The postgres source.
        #[arg(long)]
        source: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
}

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

/// Runs a `slot` subcommand.
pub async fn run(config: &Config, command: &SlotCommand) -> anyhow::Result<ExitCode> {
    match command {
        SlotCommand::Status => {
            println!(
                "{:<16} {:<28} {:<7} {:<14} {:>14}  STATUS",
                "SOURCE", "SLOT", "ACTIVE", "CONFIRMED", "LAG BYTES"
            );
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
                match row {
                    Some(r) => println!(
                        "{name:<16} {:<28} {:<7} {:<14} {:>14}  {}",
                        source.slot,
                        r.get::<_, bool>(0),
                        r.get::<_, Option<String>>(1).unwrap_or_default(),
                        r.get::<_, Option<i64>>(2).unwrap_or_default(),
                        r.get::<_, Option<String>>(3).unwrap_or_default()
                    ),
                    None => println!(
                        "{name:<16} {:<28} {:<7} {:<14} {:>14}  missing (created at next start)",
                        source.slot, "-", "-", "-"
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SlotCommand::Reset { source, yes } => {
            let Some((_, pg)) = postgres_sources(config)
                .into_iter()
                .find(|(n, _)| n == source)
            else {
                eprintln!(
                    "error: `{source}` is not a postgres source in {}",
                    config.path.display()
                );
                return Ok(ExitCode::from(2));
            };
            let client = connect_sql(pg).await?;
            let row = client
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&pg.slot],
                )
                .await?;
            match row {
                None => {
                    eprintln!("slot {} does not exist; the next start creates it", pg.slot);
                    return Ok(ExitCode::SUCCESS);
                }
                Some(r) if r.get::<_, bool>(0) => {
                    eprintln!("error: slot {} is in use; stop switchyard first", pg.slot);
                    return Ok(ExitCode::from(2));
                }
                Some(_) => {}
            }
            if !yes && std::io::stdin().is_terminal() {
                eprint!(
                    "Drop slot {}? Changes until the next start are not captured. [y/N] ",
                    pg.slot
                );
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    bail!("cancelled; the slot was kept");
                }
            }
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&pg.slot])
                .await?;
            if pg.snapshot == crate::config::SnapshotMode::Initial {
                eprintln!(
                    "dropped slot {}; the next start creates it and takes a new snapshot (snapshot = \"initial\").",
                    pg.slot
                );
            } else {
                eprintln!(
                    "dropped slot {}; the next start creates it at the current position. Changes made meanwhile are not captured: set snapshot = \"initial\" before the next start to copy the tables again.",
                    pg.slot
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
