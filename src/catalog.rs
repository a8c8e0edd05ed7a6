//! What a configuration produces: its topics (what product teams can subscribe to) and its
//! lineage (source → table or event type → route → topic), from the configuration alone or
//! with each postgres source's real tables. `switchyard topics` and `lineage` print them; the
//! admin API and console serve them.

use std::collections::HashMap;

use serde_json::{Value as Json, json};

use crate::config::{Config, RouteConfig, SourceKind, TopicField};

/// The tables each postgres source streams, read from its database (`lineage --live`).
pub(crate) type LiveTables = HashMap<String, Vec<(String, String)>>;

/// What one route publishes on one topic (pattern).
pub(crate) struct Entry<'a> {
    /// The topic, or its template where a part is only known at run time.
    pub topic: String,
    /// The route.
    pub route: &'a RouteConfig,
    /// The tables (CDC) or event types (webhooks) it carries.
    pub inputs: Vec<String>,
}

fn render(route: &RouteConfig, source: &str, schema: &str, table: &str) -> String {
    route
        .topic
        .render(|f| {
            Some(match f {
                TopicField::Source => source,
                TopicField::Schema => schema,
                TopicField::Table => table,
                TopicField::EventType => "{event_type}",
            })
        })
        .unwrap_or_default()
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

/// Every topic the configuration can produce, as `switchyard topics --format json` prints it
/// (and `GET /api/v1/routes` answers).
pub(crate) fn topics_json(config: &Config) -> Vec<Json> {
    entries(config, None)
        .iter()
        .map(|e| describe(config, e))
        .collect()
}

/// The tables each postgres source streams, read-only from its database: the publication's
/// tables, or the tables its `tables` select when the publication does not exist yet.
pub(crate) async fn live_tables(config: &Config) -> Result<LiveTables, String> {
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
