//! The command line: `switchyard run | check | tail | route | topics | lineage | slot | dlq |
//! audit | token`.

mod admin;
pub(crate) mod backfill;
pub(crate) mod catalog;
mod dlq;
mod dlq_remote;
mod openlineage;
mod publication;
mod registry;
mod route;
pub(crate) mod slot;
mod tail;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use self::tail::{TailOptions, tail};
use crate::config::{Config, SourceKind};
use crate::daemon::Daemon;
use crate::telemetry::{LogFormat, init_logging};

/// Switchyard routes PostgreSQL change events and SaaS webhooks into Kafka as Avro,
/// at-least-once, with a replayable dead-letter queue.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, propagate_version = true)]
#[command(
    after_help = "Start with `switchyard check` to validate routes.toml, then `switchyard run`.\n\
Log level: SWITCHYARD_LOG (e.g. info, switchyard=debug)."
)]
pub(crate) struct Cli {
    /// Configuration file; relative paths inside it are relative to its directory.
    #[arg(
        short,
        long,
        global = true,
        default_value = "routes.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    pub config: PathBuf,

    /// Log format on standard error: `auto` is text on a terminal and JSON otherwise.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "SWITCHYARD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve webhooks and forward events to Kafka until SIGINT/SIGTERM.
    Run,
    /// Validate the configuration file: exit 0 when valid, 1 with every error otherwise.
    ///
    /// Suitable for CI: errors name file:line:column and say how to fix them. With
    /// --registry, also ask the schema registry whether each route's schemas would be accepted
    /// (nothing is registered): exit 1 when one would be rejected, 2 when the registry (or, for
    /// postgres routes, the database) cannot be reached.
    Check {
        /// Also check every route's value and key schemas against the registry's
        /// compatibility endpoint, without registering them.
        #[arg(long)]
        registry: bool,
        /// Also connect to each postgres source's database: print how its publication would
        /// change to follow `tables` and `exclude_tables` (nothing is changed); exit 1 when a
        /// selector matches no table, 2 when a database cannot be reached.
        #[arg(long)]
        live: bool,
    },
    /// Print a topic's records as JSON lines (key, headers, value), Avro decoded through the
    /// schema registry. Reads from the earliest offset.
    Tail {
        /// The topic to read.
        topic: String,
        /// Stop after this many records.
        #[arg(short = 'n', long)]
        limit: Option<usize>,
        /// Keep waiting for new records (stop with Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// Without --follow: stop when no record arrives for this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        idle: Duration,
    },
    /// Dry-run the routes on a sample event, offline: for each route, the topic, key, headers
    /// and Avro value it would produce, or why it does not take the event.
    ///
    /// Webhook sample: {"headers": {...}, "body": {...}}. Change sample: {"table":
    /// "public.orders", "op": "insert", "after": {...}} with optional "before" and "columns":
    /// [{"name", "type", "key", "nullable"}]. Exit 0 when it ran, 1 invalid config, 2 bad sample.
    Route(route::RouteArgs),
    /// Every topic the configuration can produce, for product teams: source, route, what it
    /// carries, envelope, key and schema subjects.
    Topics {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: catalog::TopicsFormat,
    },
    /// The data flow from the configuration: source → table or event type → route → topic.
    ///
    /// Formats: json (nodes and edges), dot (Graphviz), openlineage (one OpenLineage JobEvent
    /// per route). With --live, postgres sources list the tables their database streams (the
    /// publication's, read-only) instead of the configured globs; exit 2 when a database
    /// cannot be reached.
    Lineage {
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: catalog::LineageFormat,
        /// Read each postgres source's real table list from its database.
        #[arg(long)]
        live: bool,
    },
    /// Backfills: copy one table of a postgres source again while it streams.
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        command: backfill::SnapshotCommand,
    },
    /// Inspect and reset the replication slots of postgres sources.
    Slot {
        /// What to do.
        #[command(subcommand)]
        command: slot::SlotCommand,
    },
    /// Inspect, replay and discard dead letters (on the store named by [dlq].url, or through
    /// a running instance's admin API with --admin-url).
    Dlq {
        /// Act through the admin API at this URL (the admin listener, e.g.
        /// http://127.0.0.1:9090): the audit trail names the token's principal.
        #[arg(long, global = true, env = "SWITCHYARD_ADMIN_URL")]
        admin_url: Option<String>,
        /// The admin API token, read from this file (default: $SWITCHYARD_ADMIN_TOKEN).
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        command: Box<dlq::DlqCommand>,
    },
    /// The audit trail: verify its hash chain.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: admin::AuditCommand,
    },
    /// Admin API tokens: make one, or hash one.
    Token {
        /// What to do.
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match &cli.command {
        Command::Check { registry, live } => check(&cli, *registry, *live),
        Command::Route(args) => match load(&cli) {
            Ok(config) => route::run(&config, args),
            Err(code) => code,
        },
        Command::Topics { format } => match load(&cli) {
            Ok(config) => catalog::topics(&config, *format),
            Err(code) => code,
        },
        Command::Lineage { format, live } => match load(&cli) {
            Ok(config) if *live => {
                let tables = tokio::runtime::Runtime::new()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))
                    .and_then(|rt| rt.block_on(catalog::live_tables(&config)));
                match tables {
                    Ok(tables) => catalog::lineage(&config, *format, Some(&tables)),
                    Err(e) => {
                        eprintln!("error: cannot read the live table list: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            Ok(config) => catalog::lineage(&config, *format, None),
            Err(code) => code,
        },
        Command::Token { command } => admin::token(command),
        Command::Dlq {
            admin_url: Some(url),
            token_file,
            command,
        } => block_on(async {
            let remote = dlq_remote::Remote::new(url, token_file.as_deref())?;
            dlq_remote::run(&remote, command).await
        }),
        Command::Audit {
            command:
                admin::AuditCommand::Verify {
                    admin_url: Some(url),
                    token_file,
                },
        } => block_on(admin::verify_remote(url, token_file.as_deref())),
        Command::Run
        | Command::Tail { .. }
        | Command::Dlq { .. }
        | Command::Slot { .. }
        | Command::Snapshot { .. }
        | Command::Audit { .. } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run_async(&cli)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs `f` on a new runtime: its exit code, or 1 with the error.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    Config::load(&cli.config).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

/// Runs a check that needs the network on a runtime of its own; exit 2 when none starts.
fn on_runtime(check: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(check),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(cli: &Cli, with_registry: bool, live: bool) -> ExitCode {
    let config = match load(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // librdkafka checks property names and values without connecting.
    if let Err(e) = crate::sink::kafka::KafkaSink::validate(&config.kafka) {
        eprintln!(
            "error: {}: [kafka.properties]: {e}\n  help: see librdkafka's CONFIGURATION.md for property names and values",
            cli.config.display()
        );
        return ExitCode::FAILURE;
    }
    println!("{}: OK", cli.config.display());
    for (name, source) in &config.sources {
        match &source.kind {
            SourceKind::Webhook(w) => {
                let auth = match &w.provider {
                    crate::config::WebhookProvider::None { token: Some(_) } => {
                        "bearer token".to_string()
                    }
                    crate::config::WebhookProvider::None { token: None } => {
                        "unauthenticated".to_string()
                    }
                    _ => format!(
                        "{} secret{}",
                        w.secrets.len(),
                        if w.secrets.len() == 1 { "" } else { "s" }
                    ),
                };
                println!(
                    "  source {name}: webhook POST {} (provider {}, {auth})",
                    w.path,
                    w.provider.name(),
                )
            }
            SourceKind::Postgres(p) => {
                let tables: Vec<String> = p
                    .selection
                    .tables
                    .iter()
                    .map(|t| format!("{}.{}", t.schema, t.table.as_deref().unwrap_or("*")))
                    .collect();
                let exclude: Vec<String> = p
                    .selection
                    .exclude
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let exclude = if exclude.is_empty() {
                    String::new()
                } else {
                    format!(" excluding {}", exclude.join(", "))
                };
                println!(
                    "  source {name}: postgres slot {} publication {} tables {}{exclude}",
                    p.slot,
                    p.publication,
                    tables.join(", ")
                );
            }
        }
    }
    for route in &config.routes {
        let topic = route
            .topic
            .render(|f| Some(format!("{{{}}}", f.name())))
            .unwrap_or_default();
        println!("  route {}: {} -> {topic}", route.name, route.source);
    }
    for (name, source) in &config.sources {
        if let SourceKind::Webhook(w) = &source.kind
            && matches!(
                w.provider,
                crate::config::WebhookProvider::None { token: None }
            )
        {
            eprintln!(
                "warning: source `{name}` takes unauthenticated requests (provider = \"none\", allow_unauthenticated = true): anyone who can reach POST {} can send events\n  help: use a signing provider with secrets, or token = \"${{WEBHOOK_TOKEN}}\", or restrict who can reach the path",
                w.path
            );
        }
    }
    if live {
        let code = publication::check_live(&config);
        if code != ExitCode::SUCCESS {
            return code;
        }
    }
    if with_registry {
        return registry::run(&config);
    }
    ExitCode::SUCCESS
}

async fn run_async(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = match load(cli) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match &cli.command {
        Command::Run => {
            let bound = config.server.shutdown_timeout;
            let daemon = Daemon::start(config).await.context("starting switchyard")?;
            shutdown_signal().await;
            tracing::info!(
                bound = ?bound,
                "shutting down: new webhooks get 503, events in flight are drained (a second signal exits at once)"
            );
            tokio::spawn(async {
                shutdown_signal().await;
                // Nothing unacknowledged is lost: sources deliver it again after the restart.
                tracing::warn!(
                    "second signal: exiting now; events in flight were not acknowledged and will be delivered again"
                );
                std::process::exit(130);
            });
            daemon.shutdown(bound).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            topic,
            limit,
            follow,
            idle,
        } => {
            let opts = TailOptions {
                topic: topic.clone(),
                limit: *limit,
                follow: *follow,
                idle: *idle,
            };
            let mut stdout = std::io::stdout().lock();
            let printed = tail(&config, &opts, &mut stdout).await?;
            if std::io::stderr().is_terminal() {
                eprintln!("{printed} record(s)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command, .. } => dlq::run(&config, command).await,
        Command::Audit { .. } => admin::verify(&config).await,
        Command::Slot { command } => slot::run(&config, command).await,
        Command::Snapshot { command } => backfill::run(&config, command).await,
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
