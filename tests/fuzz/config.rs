//! Configuration loading (`Config::from_str_with_env`: `${VAR}` interpolation, TOML, every
//! section's validation, CEL filters, topic templates). Any text is a `Config` or errors that
//! each name a `file:line:column` inside the text, never a panic; a configuration that loads
//! can be run: its durations fit the clocks that add them and its rate limits answer.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchyard::config::{Config, ConfigErrors, SourceKind};
use switchyard::source::webhook::limit::RateLimit;

use crate::cases;

/// A valid file using most keys: every section, each provider, a postgres source, routes with
/// filters, transforms and templates, variables with defaults.
const BASE: &str = r#"# switchyard
[server]
listen = "${LISTEN:-127.0.0.1:8080}"
max_body_size = "1MiB"
ack_timeout = "10s"
shutdown_timeout = "30s"

[kafka]
bootstrap_servers = "${KAFKA:-127.0.0.1:9092}"
partitions = 3
replication_factor = 1
delivery_timeout = "30s"
retry_max_elapsed = "5m"
max_in_flight = 10000

[kafka.properties]
"compression.type" = "zstd"

[schema_registry]
url = "http://127.0.0.1:8081"
timeout = "10s"

[dlq]
url = "sqlite://dlq/switchyard.db"
retain = "14d"

[router]
unmatched = "drop"
mask_key = "k3y"

[sources.appdb]
type = "postgres"
url = "postgres://app:pw@127.0.0.1:5432/app?sslmode=prefer"
tables = ["public.orders", "public.*"]
heartbeat_interval = "30s"
tombstones = true

[sources.stripe]
type = "webhook"
provider = "stripe"
secrets = ["whsec_a", "${OLD:-whsec_b}"]
tolerance = "5m"
max_body_size = "512KiB"
rate_limit = "200/s"
dedupe_window = "24h"
headers = ["User-Agent"]
when_unavailable = "reject"

[sources.hooks]
type = "webhook"
provider = "hmac"
signature_header = "X-Signature"
algorithm = "sha512"
encoding = "base64"
prefix = "sha512="
timestamp_header = "X-Timestamp"
secrets = ["s"]
id_pointer = "/meta/id"
type_pointer = "/meta/type"

[sources.std]
type = "webhook"
provider = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[routes]]
name = "payments"
source = "stripe"
topic = "webhooks.{source}.{event_type}"
event_types = ["payment_intent.*", "charge.refunded"]
key = "/data/object/id"
filter = "data.data.object.amount > 1000 && type.startsWith('payment')"
on_error = "dlq"
[routes.transform]
mask = { email = "sha256", phone = "redact" }
drop = ["internal_notes"]
rename = { cust_id = "customer_id" }

[[routes]]
name = "orders"
source = "appdb"
tables = ["public.orders"]
ops = ["insert", "update", "delete"]
key = ["id"]
filter = "op == 'c' && after.total > 10"

[[routes]]
name = "hooks"
source = "hooks"
topic = "webhooks.hooks.{event_type}"
max_topics = 50

[[routes]]
name = "std"
source = "std"
topic = "webhooks.std"
"#;

/// Pieces that matter to TOML, to interpolation, to the values' own parsers.
const PIECES: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    "#",
    "\\",
    "\\u{0}",
    "\"\"\"",
    "${",
    "${X",
    "${X}",
    "${X:-",
    "}",
    "$${",
    "${:-}",
    "${é}",
    "é",
    "\u{0}",
    "\t",
    "-1",
    "0",
    "1e400",
    "inf",
    "nan",
    "99999999999999999999",
    "9223372036854775807",
    "\"0s\"",
    "\"99999999999999999999s\"",
    "\"500000000000y\"",
    "\"1ns\"",
    "\"18446744073709551615GiB\"",
    "\"1e-300/h\"",
    "\"inf/s\"",
    "\"NaN/s\"",
    "\"-1/s\"",
    "\"1e308/s\"",
    "\"/\"",
    "\"\"",
    "\"((((((((((\"",
    "\"{source}.{\"",
    "\"a.b.c\"",
    "true",
    "[]",
    "{}",
    "sources",
    "routes",
    "type",
    "provider",
    "filter",
    "topic",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    /// Replace the value after the `=` on the line at this offset.
    Value(usize, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0..BASE.len();
    prop_oneof![
        (at.clone(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (at.clone(), proptest::sample::select(PIECES)).prop_map(|(a, p)| Edit::Insert(a, p)),
        (at, proptest::sample::select(PIECES)).prop_map(|(a, p)| Edit::Value(a, p)),
    ]
}

/// The largest char boundary of `s` not past `i`.
fn floor(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, e: &Edit) {
    match *e {
        Edit::Delete(at, n) => {
            let from = floor(text, at);
            let to = floor(text, from + n);
            text.replace_range(from..to, "");
        }
        Edit::Insert(at, piece) => {
            let at = floor(text, at);
            text.insert_str(at, piece);
        }
        Edit::Value(at, piece) => {
            let at = floor(text, at);
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            if let Some(eq) = text[line_start..line_end].find('=') {
                text.replace_range(line_start + eq + 1..line_end, &format!(" {piece}"));
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "X" => Some("\"x\" = 1\n[".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// Loads `text` and checks the answer: errors inside the text, a loaded file usable.
fn load_checked(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("conf/routes.toml");
    match Config::from_str_with_env(path, text, env) {
        Ok(config) => usable(&config),
        Err(ConfigErrors(errors)) => {
            prop_assert!(!errors.is_empty(), "no error for a refused file");
            let lines = text.split('\n').count();
            for e in &errors {
                prop_assert_eq!(&e.file, path);
                prop_assert!(
                    (1..=lines).contains(&e.line) && e.column >= 1,
                    "{}:{} outside the text ({} lines): {}",
                    e.line,
                    e.column,
                    lines,
                    e.message
                );
                let line = text.split('\n').nth(e.line - 1).unwrap_or("");
                prop_assert!(
                    e.column <= line.chars().count() + 1,
                    "column {} past line {:?}",
                    e.column,
                    line
                );
                prop_assert!(!e.message.trim().is_empty());
                let shown = e.to_string();
                let place = format!("conf/routes.toml:{}:{}: ", e.line, e.column);
                prop_assert!(shown.starts_with(&place), "{}", shown);
            }
            Ok(())
        }
    }
}

/// What running a loaded file does with its numbers: durations added to clocks and converted
/// to microseconds, rate limits asked for a wait.
fn usable(config: &Config) -> Result<(), TestCaseError> {
    let mut durations = vec![
        config.server.ack_timeout,
        config.server.shutdown_timeout,
        config.kafka.delivery_timeout,
        config.kafka.retry_max_elapsed,
        config.schema_registry.timeout,
        config.dlq.retain,
    ];
    for source in config.sources.values() {
        match &source.kind {
            SourceKind::Webhook(w) => {
                durations.extend([w.tolerance, w.dedupe_window]);
                if let Some(rate) = w.rate_limit {
                    let limit = RateLimit::new(rate);
                    for _ in 0..3 {
                        if let Err(wait) = limit.take() {
                            prop_assert!(wait > Duration::ZERO, "rate {}: wait {:?}", rate, wait);
                        }
                    }
                }
            }
            SourceKind::Postgres(p) => durations.push(p.heartbeat_interval),
        }
    }
    for d in durations {
        prop_assert!(
            Instant::now().checked_add(d).is_some(),
            "{:?} overflows a clock",
            d
        );
        prop_assert!(
            i64::try_from(d.as_micros()).is_ok(),
            "{:?} in microseconds",
            d
        );
    }
    Ok(())
}

#[test]
fn the_base_file_loads() {
    let config = Config::from_str_with_env(Path::new("conf/routes.toml"), BASE, env);
    assert!(
        config.is_ok(),
        "{}",
        config.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

proptest! {
    #![proptest_config(cases(1000))]

    /// The example file with a few edits: syntax broken, values out of range, variables odd.
    #[test]
    fn an_edited_file_loads_or_names_where_it_is_wrong(edits in proptest::collection::vec(edit(), 1..4)) {
        let mut text = BASE.to_string();
        for e in &edits {
            apply(&mut text, e);
        }
        load_checked(&text)?;
    }

    /// Any text at all (mostly not TOML).
    #[test]
    fn any_text_loads_or_names_where_it_is_wrong(text in prop_oneof!["\\PC{0,200}", ".{0,200}"]) {
        load_checked(&text)?;
    }

    /// Every value a duration, size or rate key may be given.
    #[test]
    fn any_duration_size_or_rate_is_usable_or_refused(
        key in proptest::sample::select(vec![
            ("[server]", "ack_timeout"), ("[server]", "shutdown_timeout"),
            ("[server]", "max_body_size"), ("[kafka]", "delivery_timeout"),
            ("[kafka]", "retry_max_elapsed"), ("[schema_registry]", "timeout"),
            ("[dlq]", "retain"), ("[sources.stripe]", "tolerance"),
            ("[sources.stripe]", "dedupe_window"), ("[sources.stripe]", "rate_limit"),
            ("[sources.stripe]", "max_body_size"), ("[sources.appdb]", "heartbeat_interval"),
        ]),
        value in prop_oneof![
            "[0-9]{1,22}(ns|us|ms|s|m|h|d|w|M|y)",
            "[0-9]{1,22}(\\.[0-9]{1,5})?(e-?[0-9]{1,3})?/(s|m|h)",
            "(inf|NaN|-1|0)/(s|m|h)",
            "[0-9]{1,22}(B|KiB|MiB|GiB|KB|MB|GB)",
            "\\PC{0,12}",
        ],
    ) {
        let (section, name) = key;
        let line = format!("{name} = {value:?}");
        let text = match BASE.find(&format!("\n{name} = ")) {
            // Keys already in the file are replaced in their section.
            Some(_) => {
                let start = BASE.find(section).ok_or_else(|| TestCaseError::fail("section"))?;
                let key_at = start + BASE[start..].find(&format!("\n{name} = ")).ok_or_else(|| TestCaseError::fail("key"))? + 1;
                let end = key_at + BASE[key_at..].find('\n').unwrap_or(BASE.len() - key_at);
                format!("{}{line}{}", &BASE[..key_at], &BASE[end..])
            }
            None => BASE.replacen(&format!("{section}\n"), &format!("{section}\n{line}\n"), 1),
        };
        load_checked(&text)?;
    }
}

/// Regressions: values that loaded but could not run.
#[test]
fn rates_and_durations_that_cannot_run_are_refused_where_they_are_written() {
    for (find, replace) in [
        ("rate_limit = \"200/s\"", "rate_limit = \"1e-300/h\""),
        ("rate_limit = \"200/s\"", "rate_limit = \"inf/s\""),
        (
            "shutdown_timeout = \"30s\"",
            "shutdown_timeout = \"500000000000y\"",
        ),
        (
            "dedupe_window = \"24h\"",
            "dedupe_window = \"300000000000y\"",
        ),
        ("retain = \"14d\"", "retain = \"18446744073709551615s\""),
    ] {
        assert!(BASE.contains(find), "{find}");
        let text = BASE.replace(find, replace);
        let errors = match Config::from_str_with_env(Path::new("conf/routes.toml"), &text, env) {
            Ok(_) => panic!("{replace} was taken"),
            Err(ConfigErrors(errors)) => errors,
        };
        let line = text.lines().position(|l| l == replace).expect("the line") + 1;
        // The first error is at the value (a route of the refused source follows it).
        assert_eq!(errors[0].line, line, "{replace}: {}", errors[0]);
        assert!(
            errors[0]
                .message
                .contains(replace.split('"').nth(1).unwrap_or("?"))
        );
    }
}

/// The filter line of [`BASE`] and a file with `filter` in its place.
fn with_filter(filter: &str) -> (String, usize) {
    let old = "filter = \"op == 'c' && after.total > 10\"";
    let line = BASE
        .lines()
        .position(|l| l == old)
        .expect("the filter line")
        + 1;
    (BASE.replace(old, &format!("filter = \"{filter}\"")), line)
}

/// Chains and nests of each kind, `n` levels deep.
fn deep_filters(n: usize) -> Vec<String> {
    vec![
        format!("after{} == 1", ".a".repeat(n)),
        format!("after{} == 1", "[0]".repeat(n)),
        format!("{}1 == 1", "1 + ".repeat(n)),
        format!("{}true", "op == 'c' && ".repeat(n / 4)),
        format!("{}true", "op == 'c' ? false : ".repeat(n / 3)),
        format!("{}true", "!".repeat(n)),
        format!("{}1 == 1", "-".repeat(n)),
        format!("{}1{} == 1", "(".repeat(n), ")".repeat(n)),
    ]
}

/// Regressions: a filter chained or nested thousands deep overflowed the stack (an abort of
/// `switchyard check`, of a reload, of the daemon evaluating it), and a filter of more than
/// 64 KiB with a syntax error at its end panicked in the CEL parser showing the error. Both are
/// errors at the filter's line now.
#[test]
fn filters_too_deep_or_long_to_run_are_errors_at_their_line() {
    let long = format!("type == '{}' &&", "a".repeat(70_000));
    for filter in deep_filters(600).into_iter().chain([long]) {
        let shown: String = filter.chars().take(24).collect();
        let (text, line) = with_filter(&filter);
        let errors = match Config::from_str_with_env(Path::new("conf/routes.toml"), &text, env) {
            Ok(_) => panic!("{shown}… was taken"),
            Err(ConfigErrors(errors)) => errors,
        };
        assert_eq!(errors.len(), 1, "{shown}…: {errors:?}");
        assert_eq!(errors[0].line, line, "{shown}…: {}", errors[0]);
        assert!(
            errors[0].message.contains("a filter may have"),
            "{shown}…: {}",
            errors[0].message
        );
    }
}

/// What the bound lets through compiles and runs on a 2 MiB thread stack (a tokio worker's):
/// chains and nests as deep as a filter may be, evaluated.
#[test]
fn the_deepest_filters_allowed_compile_and_run_on_a_small_stack() {
    for filter in deep_filters(500) {
        let shown: String = filter.chars().take(24).collect();
        let (text, line) = with_filter(&filter);
        if let Err(ConfigErrors(errors)) =
            Config::from_str_with_env(Path::new("conf/routes.toml"), &text, env)
        {
            // Refused for what it says (a type, the parser's own nesting limit), not its size.
            assert!(
                errors
                    .iter()
                    .all(|e| e.line == line && !e.message.contains("may have")),
                "{shown}…: {errors:?}"
            );
            continue;
        }
        let ran = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let program = switchyard::router::filter::compile(&filter, true)?;
                let mut context = cel::Context::default();
                context.add_variable_from_value("op", "c");
                context
                    .add_variable_from_value("after", std::collections::HashMap::from([("a", 1)]));
                let _ = program.execute(&context);
                Ok::<(), String>(())
            })
            .expect("a thread")
            .join();
        assert!(matches!(ran, Ok(Ok(()))), "{shown}…: {ran:?}");
    }
}
