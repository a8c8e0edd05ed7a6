//! Raw structs → validated [`Config`]; every error is collected, none stops the others.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_spanned::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::diagnostic::Diagnostics;
use super::interpolate::{VarProblem, interpolate};
use super::raw::*;
use super::sections::*;
use super::*;

const SECTIONS: &str =
    "server, kafka, schema_registry, dlq, sources, routes, router, telemetry, admin";

pub(super) fn load(
    path: &Path,
    original: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let (interpolated, missing) = interpolate(original, env);
    let map = |offset: usize| interpolated.original_offset(offset);
    let mut diag = Diagnostics::new(path, original, &map);
    for var in &missing {
        let (message, help) = match var.problem {
            VarProblem::Unset => (
                format!("environment variable `{}` is not set", var.name),
                format!(
                    "set {} in the environment, or give a default: ${{{}:-value}}",
                    var.name, var.name
                ),
            ),
            VarProblem::Unterminated => (
                "`${` is not closed on this line".to_string(),
                "write ${NAME} or ${NAME:-default}; write $${ for a literal ${".to_string(),
            ),
            VarProblem::BadName => (
                format!("`{}` is not a valid environment variable name", var.name),
                "names use letters, digits and _ only".to_string(),
            ),
        };
        diag.variable(var.span.start, message, help);
    }

    let (doc, syntax) = toml::de::DeTable::parse_recoverable(&interpolated.text);
    if !syntax.is_empty() {
        for e in &syntax {
            diag.toml(e, Some("fix the TOML syntax here".into()));
        }
        return Err(ConfigErrors(diag.finish()));
    }
    let doc = doc.into_inner();

    let mut sections: HashMap<&'static str, Spanned<DeValue<'_>>> = HashMap::new();
    for (key, value) in doc {
        let name = match key.get_ref().as_ref() {
            "server" => "server",
            "kafka" => "kafka",
            "schema_registry" => "schema_registry",
            "dlq" => "dlq",
            "sources" => "sources",
            "routes" => "routes",
            "router" => "router",
            "telemetry" => "telemetry",
            "admin" => "admin",
            other => {
                diag.at(
                    key.span(),
                    format!("unknown section `{other}`"),
                    Some(format!("the sections are: {SECTIONS}")),
                );
                continue;
            }
        };
        sections.insert(name, value);
    }
    let whole = 0..0;

    let server = sections
        .remove("server")
        .map(|v| section::<RawServer>(v, &mut diag))
        .unwrap_or_else(|| Some(RawServer::default()));
    let kafka = required::<RawKafka>(&mut sections, "kafka", &mut diag, &whole);
    let registry =
        required::<RawSchemaRegistry>(&mut sections, "schema_registry", &mut diag, &whole);
    let dlq = sections
        .remove("dlq")
        .and_then(|v| section::<RawDlq>(v, &mut diag));
    let router = match sections.remove("router") {
        None => Some(RouterConfig::default()),
        Some(v) => section::<RawRouter>(v, &mut diag).and_then(|r| validate_router(r, &mut diag)),
    };
    let telemetry = match sections.remove("telemetry") {
        None => Some(TelemetryConfig::default()),
        Some(v) => {
            section::<RawTelemetry>(v, &mut diag).and_then(|t| validate_telemetry(t, &mut diag))
        }
    };
    let admin_span = sections.get("admin").map(|v| v.span());
    let admin = match sections.remove("admin") {
        None => Some(super::admin::AdminConfig::default()),
        Some(v) => section::<super::admin::RawAdmin>(v, &mut diag)
            .and_then(|a| super::admin::validate(a, &Config::base_dir(path), &mut diag)),
    };
    let sources = sections
        .remove("sources")
        .map(|v| sources(v, &mut diag))
        .unwrap_or_default();
    let routes = sections
        .remove("routes")
        .map(|v| routes(v, &mut diag))
        .unwrap_or_default();

    let buffered_span = server
        .as_ref()
        .and_then(|s| s.max_buffered_bytes.as_ref())
        .map(|v| v.span());
    let mut server = server.and_then(|s| validate_server(s, &mut diag));
    let kafka = kafka.and_then(|k| validate_kafka(k, &mut diag));
    let registry = registry.and_then(|r| validate_registry(r, &mut diag));
    let dlq = match dlq {
        Some(d) => validate_dlq(d, path, &mut diag),
        None => Some(DlqConfig {
            store: DlqStoreConfig::Sqlite(Config::base_dir(path).join("dlq/switchyard.db")),
            retain: DEFAULT_RETAIN,
            mask_payloads: false,
        }),
    };
    let default_body = server.as_ref().map_or(1024 * 1024, |s| s.max_body_bytes);
    let sources = validate_sources(sources, path, default_body, &mut diag);
    if let Some(server) = &mut server {
        let largest_body = sources
            .values()
            .filter_map(|s| match &s.kind {
                SourceKind::Webhook(w) => Some(w.max_body_bytes),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        match &buffered_span {
            // Left out: at least one body of every source fits.
            None => server.max_buffered_bytes = server.max_buffered_bytes.max(largest_body),
            // Set: a body the buffer budget cannot hold would be answered 503 for ever.
            Some(span) => {
                for (name, source) in &sources {
                    if let SourceKind::Webhook(w) = &source.kind
                        && w.max_body_bytes > server.max_buffered_bytes
                    {
                        diag.at(
                            span.clone(),
                            format!(
                                "[server] max_buffered_bytes ({} bytes) is smaller than the max_body_size of source `{name}` ({} bytes): its largest bodies could never be accepted",
                                server.max_buffered_bytes, w.max_body_bytes
                            ),
                            Some(
                                "raise max_buffered_bytes to at least the largest max_body_size, or lower that max_body_size"
                                    .into(),
                            ),
                        );
                    }
                }
            }
        }
    }
    // The admin API is served on the admin listener only, never beside the webhooks.
    if let (Some(admin), Some(server), Some(span)) = (&admin, &server, admin_span)
        && (admin.is_on() || admin.tls.is_some())
        && server.admin_listen.is_none()
    {
        diag.at(
            span,
            "[admin] tokens or clients are set, but the admin API and console are served on [server] admin_listen only, and it is not set",
            Some("add admin_listen = \"127.0.0.1:9090\" to [server] (an address only operators can reach)".into()),
        );
    }
    let mask_key = router.as_ref().and_then(|r| r.mask_key.clone());
    let routes =
        super::route::validate_routes(routes, &sources, mask_key.as_ref(), path, &mut diag);

    match (server, kafka, registry, dlq, router, telemetry, admin) {
        (
            Some(server),
            Some(kafka),
            Some(schema_registry),
            Some(dlq),
            Some(router),
            Some(telemetry),
            Some(admin),
        ) if diag.is_empty() => Ok(Config {
            router,
            telemetry,
            admin,
            path: path.to_path_buf(),
            server,
            kafka,
            schema_registry,
            dlq,
            sources,
            routes,
        }),
        _ => Err(ConfigErrors(diag.finish())),
    }
}

fn section<T: DeserializeOwned>(value: Spanned<DeValue<'_>>, diag: &mut Diagnostics) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            diag.toml(&e, None);
            None
        }
    }
}

fn required<T: DeserializeOwned>(
    sections: &mut HashMap<&'static str, Spanned<DeValue<'_>>>,
    name: &str,
    diag: &mut Diagnostics,
    whole: &Range<usize>,
) -> Option<T> {
    match sections.remove(name) {
        Some(v) => section(v, diag),
        None => {
            diag.at(
                whole.clone(),
                format!("the required section [{name}] is missing"),
                Some(format!("add a [{name}] table; README.md shows an example")),
            );
            None
        }
    }
}

fn sources(
    value: Spanned<DeValue<'_>>,
    diag: &mut Diagnostics,
) -> Vec<(Spanned<String>, RawSource)> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        diag.at(
            span,
            "`sources` must be a table of tables",
            Some("write [sources.<name>] followed by its keys".into()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, body) in table {
        let name = Spanned::new(name.span(), name.into_inner().into_owned());
        if !is_identifier(name.get_ref()) {
            diag.at(
                name.span(),
                format!("source name `{}` is not allowed", name.get_ref()),
                Some("use lowercase letters, digits, `_` and `-`".into()),
            );
        }
        let kind = body
            .get_ref()
            .get("type")
            .map(|v| (v.span(), v.get_ref().as_str().map(str::to_string)));
        match kind {
            Some((_, Some(k))) if k == "webhook" => {
                if let Some(raw) = section::<RawWebhookSource>(body, diag) {
                    out.push((name, RawSource::Webhook(Box::new(raw))));
                }
            }
            Some((_, Some(k))) if k == "postgres" => {
                if let Some(raw) = section::<RawPostgresSource>(body, diag) {
                    out.push((name, RawSource::Postgres(Box::new(raw))));
                }
            }
            Some((span, Some(k))) => diag.at(
                span,
                format!("source `{}` has unknown type \"{k}\"", name.get_ref()),
                Some("type is \"webhook\" or \"postgres\"".into()),
            ),
            Some((span, None)) => diag.at(
                span,
                "invalid type: `type` must be a string",
                Some("write type = \"webhook\"".into()),
            ),
            None => diag.at(
                body.span(),
                format!("source `{}` has no `type`", name.get_ref()),
                Some("add type = \"webhook\" (or \"postgres\")".into()),
            ),
        }
    }
    out
}

fn routes(value: Spanned<DeValue<'_>>, diag: &mut Diagnostics) -> Vec<RawRoute> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        diag.at(
            span,
            "`routes` must be an array of tables",
            Some("write each route as a [[routes]] table".into()),
        );
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| section::<RawRoute>(item, diag))
        .collect()
}

pub(super) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The longest duration a file may give: beyond any sensible timeout, window or retention, and
/// short enough that a clock plus it, or it in microseconds (an `i64`), cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A `humantime` duration ("10s", "5m", "14d") of at most [`MAX_DURATION`].
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d > MAX_DURATION => Err("longer than 100 years".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn duration(v: &Spanned<String>, diag: &mut Diagnostics) -> Option<Duration> {
    match parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            diag.at(
                v.span(),
                "a duration of zero is not allowed",
                Some("use e.g. \"10s\"".into()),
            );
            None
        }
        Err(e) => {
            diag.at(
                v.span(),
                format!("invalid duration \"{}\": {e}", v.get_ref()),
                Some("write a number with a unit, e.g. \"500ms\", \"10s\", \"5m\"".into()),
            );
            None
        }
    }
}

fn validate_sources(
    raw: Vec<(Spanned<String>, RawSource)>,
    config_path: &Path,
    default_body: usize,
    diag: &mut Diagnostics,
) -> BTreeMap<String, SourceConfig> {
    let mut out = BTreeMap::new();
    let mut paths: HashMap<String, String> = HashMap::new();
    for (name, src) in raw {
        let name = name.into_inner();
        let src = match src {
            RawSource::Webhook(w) => w,
            RawSource::Postgres(p) => {
                if let Some(cfg) = super::postgres::validate(&name, *p, config_path, diag) {
                    out.insert(
                        name.clone(),
                        SourceConfig {
                            name,
                            kind: SourceKind::Postgres(cfg),
                        },
                    );
                }
                continue;
            }
        };
        let path = match &src.path {
            Some(p) => {
                let v = p.get_ref();
                if !v.starts_with('/') || v.contains(['?', '#', '{', '}', '*', ' ']) {
                    diag.at(
                        p.span(),
                        format!("webhook path `{v}` is not a plain absolute path"),
                        Some("write e.g. path = \"/webhooks/orders\"".into()),
                    );
                    continue;
                }
                if matches!(v.as_str(), "/metrics" | "/healthz" | "/readyz") {
                    diag.at(
                        p.span(),
                        format!("webhook path `{v}` is reserved"),
                        Some("pick another path, e.g. /webhooks/<name>".into()),
                    );
                    continue;
                }
                if let Some(other) = paths.get(v) {
                    diag.at(
                        p.span(),
                        format!("webhook path `{v}` is already used by source `{other}`"),
                        Some("give each webhook source its own path".into()),
                    );
                    continue;
                }
                v.clone()
            }
            None => format!("/webhooks/{name}"),
        };
        paths.insert(path.clone(), name.clone());
        let Some(cfg) = super::webhook::validate(&name, path, &src, default_body, diag) else {
            continue;
        };
        out.insert(
            name.clone(),
            SourceConfig {
                name,
                kind: SourceKind::Webhook(cfg),
            },
        );
    }
    out
}
