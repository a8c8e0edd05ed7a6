//! `switchyard topics` (what product teams can subscribe to) and `switchyard lineage` (source →
//! table or event type → route → topic), both from the configuration alone.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::{Value as Json, json};

use crate::config::{Config, RouteConfig, SourceKind, TopicField, TopicPart};

/// Output formats of `topics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopicsFormat {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Output formats of `lineage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineageFormat {
    /// `{"nodes": [...], "edges": [...]}`.
    Json,
    /// Graphviz DOT.
    Dot,
    /// OpenLineage JobEvents: one job per route, its input and output datasets.
    Openlineage,
}

/// The tables each postgres source streams, read from its database (`lineage --live`).
pub type LiveTables = HashMap<String, Vec<(String, String)>>;

/// What one route publishes on one topic (pattern).
pub(crate) struct Entry<'a> {
    /// The topic, or its template where a part is only known at run time.
    pub(crate) topic: String,
    /// The route.
    pub(crate) route: &'a RouteConfig,
    /// The tables (CDC) or event types (webhooks) it carries.
    pub(crate) inputs: Vec<String>,
}

fn render(route: &RouteConfig, source: &str, schema: &str, table: &str) -> String {
    route
        .topic
        .parts()
        .iter()
        .map(|p| match p {
            TopicPart::Literal(s) => s.clone(),
            TopicPart::Field(TopicField::Source) => source.to_string(),
            TopicPart::Field(TopicField::Schema) => schema.to_string(),
            TopicPart::Field(TopicField::Table) => table.to_string(),
            TopicPart::Field(TopicField::EventType) => "{event_type}".to_string(),
        })
        .collect()
}

/// Every topic each route can produce: templates are expanded over the tables a postgres route
/// takes; a `*` stays where the tables are only known at run time, unless `live` lists the
/// source's real tables.
pub(crate) fn entries<'a>(config: &'a Config, live: Option<&LiveTables>) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    for route in &config.routes {
        let Some(source) = config.sources.get(&route.source) else {
            continue;
        };
        match &source.kind {
            SourceKind::Postgres(pg) => {
                let real = live.and_then(|l| l.get(&route.source));
                let tables: Vec<(String, String)> = if let Some(real) = real {
                    real.iter()
                        .filter(|(schema, table)| {
                            route.tables.is_empty()
                                || route.tables.iter().any(|t| match t.split_once('.') {
                                    Some((s, t)) => s == schema && t == table,
                                    None => t == table,
                                })
                        })
                        .cloned()
                        .collect()
                } else if route.tables.is_empty() {
                    pg.selection
                        .tables
                        .iter()
                        .map(|t| {
                            (
                                t.schema.clone(),
                                t.table.clone().unwrap_or_else(|| "*".into()),
                            )
                        })
                        .collect()
                } else {
                    route
                        .tables
                        .iter()
                        .map(|t| match t.split_once('.') {
                            Some((s, t)) => (s.to_string(), t.to_string()),
                            None => ("*".to_string(), t.clone()),
                        })
                        .collect()
                };
                if route.ops.iter().all(|o| o == "m") && !route.ops.is_empty() {
                    out.push(Entry {
                        topic: render(route, &route.source, "", ""),
                        route,
                        inputs: vec!["logical decoding messages".into()],
                    });
                    continue;
                }
                for (schema, table) in tables {
                    let topic = render(route, &route.source, &schema, &table);
                    let input = format!("{schema}.{table}");
                    match out
                        .iter_mut()
                        .find(|e: &&mut Entry| e.topic == topic && e.route.name == route.name)
                    {
                        Some(e) => e.inputs.push(input),
                        None => out.push(Entry {
                            topic,
                            route,
                            inputs: vec![input],
                        }),
                    }
                }
            }
            SourceKind::Webhook(_) => out.push(Entry {
                topic: render(route, &route.source, "", ""),
                route,
                inputs: if route.event_types.is_empty() {
                    vec!["*".into()]
                } else {
                    route.event_types.clone()
                },
            }),
        }
    }
    out
}

fn describe(config: &Config, e: &Entry) -> Json {
    let r = e.route;
    let kind = config.sources.get(&r.source).map(|s| &s.kind);
    let (envelope, key) = match kind {
        Some(SourceKind::Webhook(_)) => (
            match &r.value_schema {
                Some(v) => format!("io.switchyard.webhook.CloudEvent (data: {})", v.record_name),
                None => "io.switchyard.webhook.CloudEvent (data: string)".into(),
            },
            match &r.key_pointer {
                Some(p) => format!("string: body at {p}"),
                None => "string: event id".into(),
            },
        ),
        _ if r.ops.iter().all(|o| o == "m") && !r.ops.is_empty() => (
            "io.debezium.connector.postgresql.MessageValue".into(),
            "MessageKey: prefix".into(),
        ),
        _ => (
            "Debezium Envelope (<source>.<schema>.<table>.Envelope)".into(),
            if r.key.is_empty() {
                "Key: primary key columns".into()
            } else {
                format!("Key: {}", r.key.join(", "))
            },
        ),
    };
    json!({
        "topic": e.topic,
        "source": r.source,
        "source_kind": match kind { Some(SourceKind::Webhook(_)) => "webhook", _ => "postgres" },
        "route": r.name,
        "carries": e.inputs,
        "ops": r.ops,
        "filter": r.filter,
        "envelope": envelope,
        "key": key,
        "subjects": [format!("{}-key", e.topic), format!("{}-value", e.topic)],
        "value_schema": r.value_schema.as_ref().map(|v| v.path.display().to_string()),
        "masked": r.transform.as_ref().map(|t| t.mask.iter().map(|(f, k)| format!("{f} ({})", match k { crate::config::MaskKind::Sha256 => "sha256", crate::config::MaskKind::Redact => "redacted" })).collect::<Vec<_>>()).unwrap_or_default(),
        "dropped": r.transform.as_ref().map(|t| t.drop.clone()).unwrap_or_default(),
        "renamed": r.transform.as_ref().map(|t| t.rename.iter().map(|(a, b)| format!("{a} -> {b}")).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// `switchyard topics`.
/// Every topic the configuration can produce, as `switchyard topics --format json` prints it
/// (and `GET /api/v1/routes` answers).
pub(crate) fn topics_json(config: &Config) -> Vec<Json> {
    entries(config, None)
        .iter()
        .map(|e| describe(config, e))
        .collect()
}

pub fn topics(config: &Config, format: TopicsFormat) -> ExitCode {
    let list = topics_json(config);
    match format {
        TopicsFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        ),
        TopicsFormat::Table => {
            println!(
                "{:<40} {:<16} {:<20} {:<36} KEY",
                "TOPIC", "SOURCE", "ROUTE", "CARRIES"
            );
            for t in &list {
                let carries: Vec<&str> = t["carries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                    .collect();
                println!(
                    "{:<40} {:<16} {:<20} {:<36} {}",
                    t["topic"].as_str().unwrap_or(""),
                    t["source"].as_str().unwrap_or(""),
                    t["route"].as_str().unwrap_or(""),
                    carries.join(","),
                    t["key"].as_str().unwrap_or("")
                );
            }
            println!(
                "\n`{{event_type}}` and `*` are filled at run time. Value subjects are <topic>-value, keys <topic>-key."
            );
        }
    }
    ExitCode::SUCCESS
}

/// The tables each postgres source streams, read-only from its database: the publication's
/// tables, or the tables its `tables` select when the publication does not exist yet.
pub async fn live_tables(config: &Config) -> Result<LiveTables, String> {
    use crate::source::postgres::{catalog, stream};
    let mut out = LiveTables::new();
    for (name, source) in &config.sources {
        let SourceKind::Postgres(pg) = &source.kind else {
            continue;
        };
        let conn =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream::connect_sql(pg))
                .await
                .map_err(|_| format!("source `{name}`: the database did not answer within 10s"))?
                .map_err(|e| format!("source `{name}`: {e}"))?;
        let (from, tables) = catalog::live_tables(&conn, pg)
            .await
            .map_err(|e| format!("source `{name}`: {e}"))?;
        if from == catalog::TablesFrom::Configuration {
            eprintln!(
                "note: source `{name}`: publication {} does not exist yet; listing the tables `tables` selects today",
                pg.publication
            );
        }
        out.insert(name.clone(), tables);
    }
    Ok(out)
}

/// `switchyard lineage`; with `live`, postgres sources list the tables their database streams.
pub fn lineage(config: &Config, format: LineageFormat, live: Option<&LiveTables>) -> ExitCode {
    if format == LineageFormat::Openlineage {
        let events = super::openlineage::job_events(config, live, std::time::SystemTime::now());
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let graph = lineage_json(config, live);
    let empty = Vec::new();
    let nodes = graph["nodes"].as_array().unwrap_or(&empty);
    let edges = graph["edges"].as_array().unwrap_or(&empty);
    match format {
        LineageFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&graph).unwrap_or_default()
        ),
        LineageFormat::Dot => {
            println!("digraph switchyard {{\n  rankdir=LR;");
            for n in nodes {
                let shape = match n["kind"].as_str().unwrap_or("") {
                    "route" => "box",
                    "topic" => "cylinder",
                    "table" | "event type" => "note",
                    _ => "ellipse",
                };
                println!(
                    "  {:?} [label={:?}, shape={shape}];",
                    n["id"].as_str().unwrap_or(""),
                    n["label"].as_str().unwrap_or("")
                );
            }
            for e in edges {
                println!(
                    "  {:?} -> {:?};",
                    e["from"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or("")
                );
            }
            println!("}}");
        }
        LineageFormat::Openlineage => {}
    }
    ExitCode::SUCCESS
}

/// The data flow as nodes and edges (`switchyard lineage --format json`, `GET
/// /api/v1/lineage`, the console's graph).
pub(crate) fn lineage_json(config: &Config, live: Option<&LiveTables>) -> Json {
    let mut nodes: Vec<Json> = Vec::new();
    let mut edges: Vec<Json> = Vec::new();
    let mut add_node = |id: String, kind: &str, label: &str| {
        if !nodes.iter().any(|n| n["id"] == id.as_str()) {
            nodes.push(json!({"id": id, "kind": kind, "label": label}));
        }
    };
    for (name, s) in &config.sources {
        let kind = match s.kind {
            SourceKind::Webhook(_) => "webhook source",
            SourceKind::Postgres(_) => "postgres source",
        };
        add_node(format!("source:{name}"), kind, name);
    }
    for e in entries(config, live) {
        let r = e.route;
        add_node(format!("route:{}", r.name), "route", &r.name);
        add_node(format!("topic:{}", e.topic), "topic", &e.topic);
        for input in &e.inputs {
            let id = format!("input:{}:{input}", r.source);
            let kind = match config.sources.get(&r.source).map(|s| &s.kind) {
                Some(SourceKind::Webhook(_)) => "event type",
                _ => "table",
            };
            add_node(id.clone(), kind, input);
            for (from, to) in [
                (format!("source:{}", r.source), id.clone()),
                (id.clone(), format!("route:{}", r.name)),
            ] {
                if !edges
                    .iter()
                    .any(|x| x["from"] == from.as_str() && x["to"] == to.as_str())
                {
                    edges.push(json!({"from": from, "to": to}));
                }
            }
        }
        edges
            .push(json!({"from": format!("route:{}", r.name), "to": format!("topic:{}", e.topic)}));
    }
    json!({"nodes": nodes, "edges": edges, "live": live.is_some()})
}
