//! Logging setup, metric names defined once ([`metrics`]), and OpenTelemetry traces ([`traces`]).

pub(crate) mod metrics;
pub mod traces;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise (a container, a file, a pipe).
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `Text` or `Json`: `Auto` decided by whether standard error is a terminal.
    pub fn resolve(self, stderr_is_terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_terminal => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

/// The level filter: `SWITCHYARD_LOG`, else `RUST_LOG` (e.g. `info`, `switchyard=debug`), else
/// `info` (librdkafka's own messages from `warn`).
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"))
}

/// Installs the global logger (see [`filter`] for the level). Logs go to standard error.
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let result = match format.resolve(std::io::stderr().is_terminal()) {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text | LogFormat::Auto => builder.try_init(),
    };
    // A second init (tests) keeps the first logger.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn auto_logs_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
    }
}
