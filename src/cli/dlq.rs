//! `switchyard dlq …`: on-call's view of the dead-letter queue, straight on the store.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::config::Config;
use crate::event::now_micros;
use crate::pipeline::Pipeline;
use crate::replay::{ReplayOptions, replay};
use crate::store::dead_letters::select::{Selection, parse_class, parse_rate, parse_time};
use crate::store::{AuditEntry, DeadLetter, Selector, Status, Store};

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (pending only unless --status says otherwise).
    List {
        #[command(flatten)]
        filter: Filter,
        /// pending, replayed, discarded or all.
        #[arg(long, default_value = "pending", value_parser = parse_status_filter)]
        status: StatusFilter,
        /// At most this many (oldest first).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one dead letter: the full error and the payload, pretty-printed.
    Show {
        /// The dead letter's id.
        id: i64,
        /// With --admin-url: the payload as stored, not masked (needs the admin role; each
        /// view is audited). Straight on the store it always is.
        #[arg(long)]
        raw: bool,
    },
    /// Put dead letters back through today's routes, schemas and sink.
    ///
    /// An entry is marked replayed only after Kafka acknowledged it; replaying twice produces
    /// no second record unless --force. Asks for confirmation on a terminal.
    Replay {
        #[command(flatten)]
        select: Select,
        /// Print what would be produced and what would fail; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many entries per second, e.g. 50/s.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Also replay entries that were already replayed.
        #[arg(long)]
        force: bool,
        /// How long the claim on entries being replayed holds if this replay stops renewing
        /// it (it is renewed every third of it while the replay runs): after that another
        /// replay may take the entries over. At least 1s.
        #[arg(long, default_value = "2m", value_parser = parse_lease)]
        lease: Duration,
        /// Who is doing this (default: the OS user), for the audit log.
        #[arg(long)]
        actor: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Give up on dead letters, with a reason (kept in the entry and the audit log).
    Discard {
        #[command(flatten)]
        select: Select,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who is doing this (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Counts by route × class × status.
    Stats {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Every matching dead letter as JSON lines, with its event (for backups and analysis).
    Export {
        #[command(flatten)]
        filter: Filter,
        /// pending, replayed, discarded or all.
        #[arg(long, default_value = "all", value_parser = parse_status_filter)]
        status: StatusFilter,
    },
    /// Who replayed or discarded what, and when (newest first).
    Audit {
        /// At most this many lines.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// A status filter: one status or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFilter(pub(super) Vec<Status>);

fn parse_status_filter(s: &str) -> Result<StatusFilter, String> {
    if s == "all" {
        return Ok(StatusFilter(Vec::new()));
    }
    s.parse::<Status>().map(|st| StatusFilter(vec![st]))
}

/// Filters shared by list and export.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Only this route.
    #[arg(long)]
    pub(super) route: Option<String>,
    /// Only this source.
    #[arg(long)]
    pub(super) source: Option<String>,
    /// Only this error class.
    #[arg(long, value_parser = parse_class)]
    pub(super) class: Option<String>,
    /// Failed at or after: a duration ago (1h, 2d) or a time (2026-11-21T10:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub(super) since: Option<i64>,
    /// Failed before: a duration ago or a time.
    #[arg(long, value_parser = parse_time)]
    pub(super) until: Option<i64>,
}

/// Which entries replay and discard act on: at least one selector is required.
#[derive(Debug, Clone, Args)]
#[group(id = "selector", required = true, multiple = true, args = ["ids", "route", "class", "all"])]
pub struct Select {
    /// These ids.
    #[arg(long = "id", num_args = 1.., value_name = "ID")]
    pub(super) ids: Vec<i64>,
    /// Every entry of this route.
    #[arg(long)]
    pub(super) route: Option<String>,
    /// Every entry of this error class.
    #[arg(long, value_parser = parse_class)]
    pub(super) class: Option<String>,
    /// Every pending entry.
    #[arg(long)]
    pub(super) all: bool,
    /// Only this source.
    #[arg(long)]
    pub(super) source: Option<String>,
    /// Failed at or after: a duration ago (1h) or a time.
    #[arg(long, value_parser = parse_time)]
    pub(super) since: Option<i64>,
    /// Failed before: a duration ago or a time.
    #[arg(long, value_parser = parse_time)]
    pub(super) until: Option<i64>,
    /// At most this many entries.
    #[arg(long)]
    pub(super) limit: Option<usize>,
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= crate::replay::MIN_LEASE => Ok(d),
        Ok(_) => Err(format!("`{s}` is shorter than the shortest lease, 1s")),
        Err(_) => Err(format!("`{s}` is not a duration; write e.g. 2m")),
    }
}

impl Filter {
    fn selector(&self, statuses: &StatusFilter) -> Selector {
        Selector {
            route: self.route.clone(),
            source: self.source.clone(),
            class: self.class.clone(),
            statuses: statuses.0.clone(),
            since: self.since,
            until: self.until,
            ..Selector::default()
        }
    }
}

impl Select {
    /// The shared meaning of these flags (the admin API takes the same).
    pub(super) fn selection(&self) -> Selection {
        Selection {
            ids: self.ids.clone(),
            route: self.route.clone(),
            class: self.class.clone(),
            all: self.all,
            source: self.source.clone(),
            since: self.since,
            until: self.until,
            limit: self.limit,
        }
    }

    fn selector(&self) -> Selector {
        self.selection().selector()
    }

    fn describe(&self) -> String {
        self.selection().describe()
    }
}

/// Who the audit log names for a command run straight on the store: `local:<user>` (the
/// OS user, or `--actor`), so break-glass use stands out from the admin API's `token:<name>`.
pub(super) fn actor(given: &Option<String>) -> String {
    let user = given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("local:{user}")
}

pub(super) fn time(micros: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(super) fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Exit status 2: the command was well-formed but named nothing that exists.
pub(super) fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Runs a `dlq` subcommand.
pub(super) async fn run(config: &Config, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.dlq.store)
        .await
        .context("opening the dead-letter store")?;
    let mut out = std::io::stdout();
    match command {
        DlqCommand::List {
            filter,
            status,
            limit,
            format,
        } => {
            let mut sel = filter.selector(status);
            sel.limit = Some(*limit);
            let letters = store.dead_letters().list(&sel).await?;
            match format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&letters.iter().map(summary).collect::<Vec<_>>())?
                )?,
                Format::Table => print_table(&mut out, &letters)?,
            }
        }
        DlqCommand::Show { id, .. } => {
            let Some(dl) = store.dead_letters().get(*id).await? else {
                return Ok(usage_error(&format!("no dead letter with id {id}")));
            };
            let v = crate::store::dead_letters::view::detail(&dl, dl.event.as_ref());
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        DlqCommand::Replay {
            select,
            dry_run,
            rate,
            force,
            lease,
            actor: who,
            yes,
        } => {
            let mut sel = select.selector();
            if *force {
                sel.statuses.push(Status::Replayed);
            }
            if let Some(missing) = first_unknown_id(&store, &select.ids).await? {
                return Ok(usage_error(&format!(
                    "no dead letter with id {missing}; nothing was replayed"
                )));
            }
            let count = store.dead_letters().list(&sel).await?.len();
            if !dry_run
                && count > 0
                && !confirm(&format!("Replay {count} dead letter(s) to Kafka?"), *yes)?
            {
                bail!("cancelled; nothing was replayed");
            }
            // A real replay is traced like the daemon's deliveries (`[telemetry] otlp_endpoint`):
            // a `dlq.replay` span per entry, whose `produce` children the records' `traceparent`
            // headers name.
            let traces = if *dry_run {
                crate::telemetry::traces::Traces::off()
            } else {
                crate::telemetry::traces::Traces::from_config(&config.telemetry)?
            };
            let pipeline = Arc::new(Pipeline::new(config)?.with_traces(traces));
            let action = if *dry_run {
                "replay --dry-run"
            } else {
                "replay"
            };
            let who = actor(who);
            if !dry_run {
                store
                    .audit_trail()
                    .append(&AuditEntry {
                        at: now_micros(),
                        actor: who.clone(),
                        action: "replay started".into(),
                        selector: select.describe(),
                        count: i64::try_from(count).unwrap_or(i64::MAX),
                        result: "started".into(),
                        ..AuditEntry::default()
                    })
                    .await?;
            }
            let opts = ReplayOptions {
                selector: select.selector(),
                dry_run: *dry_run,
                rate: *rate,
                force: *force,
                lease: *lease,
                ..ReplayOptions::default()
            };
            let report = replay(&store, &pipeline, &opts, &mut out).await?;
            let mut result = format!("delivered {}, failed {}", report.delivered, report.failed);
            if let Some(why) = &report.stopped {
                result.push_str(&format!(
                    "; stopped, {} claimed entries not delivered: {why}; rerun to replay what \
                     is left",
                    report.not_delivered
                ));
            }
            if !dry_run {
                pipeline.sink().flush(Duration::from_secs(10));
                pipeline.traces().shutdown();
                store
                    .audit_trail()
                    .append(&AuditEntry {
                        at: now_micros(),
                        actor: who,
                        action: action.into(),
                        selector: select.describe(),
                        count: i64::try_from(report.delivered + report.failed).unwrap_or(i64::MAX),
                        result: result.clone(),
                        ..AuditEntry::default()
                    })
                    .await?;
            }
            eprintln!("{action}: {result}");
            if (report.failed > 0 || report.stopped.is_some()) && !dry_run {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Discard {
            select,
            reason,
            actor: who,
            yes,
        } => {
            if reason.trim().is_empty() {
                return Ok(usage_error("--reason must say why"));
            }
            let sel = select.selector();
            if let Some(missing) = first_unknown_id(&store, &select.ids).await? {
                return Ok(usage_error(&format!(
                    "no dead letter with id {missing}; nothing was discarded"
                )));
            }
            let count = store.dead_letters().list(&sel).await?.len();
            if count > 0 && !confirm(&format!("Discard {count} dead letter(s)?"), *yes)? {
                bail!("cancelled; nothing was discarded");
            }
            let n = store.dead_letters().discard(&sel, reason).await?;
            store
                .audit_trail()
                .append(&AuditEntry {
                    at: now_micros(),
                    actor: actor(who),
                    action: "discard".into(),
                    selector: select.describe(),
                    count: i64::try_from(n).unwrap_or(i64::MAX),
                    result: format!("discarded {n}: {reason}"),
                    ..AuditEntry::default()
                })
                .await?;
            eprintln!("discarded {n}");
        }
        DlqCommand::Stats { format } => {
            let rows = store.dead_letters().stats().await?;
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
                Format::Table => {
                    writeln!(
                        out,
                        "{:<24} {:<18} {:<10} {:>8}",
                        "ROUTE", "CLASS", "STATUS", "COUNT"
                    )?;
                    for r in rows {
                        writeln!(
                            out,
                            "{:<24} {:<18} {:<10} {:>8}",
                            r.route, r.class, r.status, r.count
                        )?;
                    }
                }
            }
        }
        DlqCommand::Export { filter, status } => {
            for dl in store.dead_letters().list(&filter.selector(status)).await? {
                let mut v = summary(&dl);
                v["event"] = serde_json::to_value(&dl.event)?;
                writeln!(out, "{v}")?;
            }
        }
        DlqCommand::Audit { limit, format } => {
            let rows = store.audit_trail().newest(*limit).await?;
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
                Format::Table => {
                    for r in rows {
                        let e = &r.entry;
                        writeln!(
                            out,
                            "{}  {:<20} {:<18} {:<30} {:>6}  {}",
                            time(e.at),
                            e.actor,
                            e.action,
                            e.selector,
                            e.count,
                            e.result
                        )?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The first of `ids` that names no dead letter, if any.
async fn first_unknown_id(store: &Store, ids: &[i64]) -> anyhow::Result<Option<i64>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let found = store
        .dead_letters()
        .list(&Selector {
            ids: ids.to_vec(),
            ..Selector::default()
        })
        .await?;
    Ok(ids
        .iter()
        .copied()
        .find(|id| !found.iter().any(|d| d.id == *id)))
}

fn summary(dl: &DeadLetter) -> serde_json::Value {
    crate::store::dead_letters::view::summary(dl)
}

fn print_table(out: &mut dyn Write, letters: &[DeadLetter]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6}  {:<20} {:<16} {:<18} {:<9} {:>4}  {:<20}  MESSAGE",
        "ID", "LAST FAILED", "ROUTE", "CLASS", "STATUS", "TRY", "SOURCE"
    )?;
    for d in letters {
        let msg: String = d.message.chars().take(80).collect();
        writeln!(
            out,
            "{:>6}  {:<20} {:<16} {:<18} {:<9} {:>4}  {:<20}  {msg}",
            d.id,
            time(d.last_failed_at),
            d.route.as_deref().unwrap_or("-"),
            d.class,
            d.status,
            d.attempts,
            d.source,
        )?;
    }
    if letters.is_empty() {
        writeln!(out, "(no dead letters match)")?;
    }
    Ok(())
}
