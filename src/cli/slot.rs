//! `switchyard slot …`: the replication slots of postgres sources, for on-call.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::source::postgres::slot::{Reset, reset, status};

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

/// Runs a `slot` subcommand.
pub(crate) async fn run(config: &Config, command: &SlotCommand) -> anyhow::Result<ExitCode> {
    match command {
        SlotCommand::Status => {
            println!(
                "{:<16} {:<28} {:<7} {:<14} {:>14}  STATUS",
                "SOURCE", "SLOT", "ACTIVE", "CONFIRMED", "LAG BYTES"
            );
            for s in status(config).await? {
                match s.active {
                    Some(active) => println!(
                        "{:<16} {:<28} {:<7} {:<14} {:>14}  {}",
                        s.source,
                        s.slot,
                        active,
                        s.confirmed_lsn.unwrap_or_default(),
                        s.lag_bytes.unwrap_or_default(),
                        s.wal_status.unwrap_or_default()
                    ),
                    None => println!(
                        "{:<16} {:<28} {:<7} {:<14} {:>14}  missing (created at next start)",
                        s.source, s.slot, "-", "-", "-"
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SlotCommand::Reset { source, yes } => {
            let ask = |question: &str| -> anyhow::Result<bool> {
                if *yes || !std::io::stdin().is_terminal() {
                    return Ok(true);
                }
                eprint!("{question} [y/N] ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Ok(matches!(line.trim(), "y" | "Y" | "yes"))
            };
            match reset(config, source, ask).await? {
                Reset::UnknownSource => {
                    eprintln!(
                        "error: `{source}` is not a postgres source in {}",
                        config.path.display()
                    );
                    return Ok(ExitCode::from(2));
                }
                Reset::Missing => {
                    eprintln!("the slot of `{source}` does not exist; the next start creates it");
                }
                Reset::InUse => {
                    eprintln!("error: the slot of `{source}` is in use; stop switchyard first");
                    return Ok(ExitCode::from(2));
                }
                Reset::Dropped(message) => eprintln!("{message}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
