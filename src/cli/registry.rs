//! `switchyard check --registry`: the schemas each route would register, asked of the
//! registry's compatibility check (`POST /compatibility/subjects/{subject}/versions/latest`)
//! without registering anything.
//!
//! Webhook routes: the CloudEvent envelope (typed when the route has `value_schema`) and the
//! string key. Postgres routes: the Debezium envelope and key of every table the source
//! streams, built from the live table shapes with the source's own catalog queries and
//! encoder ([`crate::source::postgres::catalog`], [`crate::encode::record_parts`]), so it
//! needs the database; without it those subjects cannot be checked (exit 2). Topics that
//! depend on the event type are only known at run time and are skipped (and said so).
//!
//! Exit codes: 0 every subject would be accepted (compatible or new), 1 a schema would be
//! rejected, 2 something could not be checked (registry or database unreachable).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::config::{Config, RouteConfig, SourceKind, TopicField};
use crate::encode::{AvroSchema, cloudevent, record_parts};
use crate::event::{ChangePayload, Event, EventId, Payload};
use crate::router::RouteMatch;
use crate::source::postgres::{catalog, envelope, stream};

/// One schema a subject would receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Planned {
    /// `<topic>-value` or `<topic>-key`.
    pub subject: String,
    /// The schema's JSON text, as the encoder would register it.
    pub schema: String,
    /// The routes (and tables) that would write it.
    pub writers: Vec<String>,
}

/// The registry's answer for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The latest version accepts the schema.
    Compatible,
    /// The schema is the subject's latest version already (nothing would change).
    Latest,
    /// The subject does not exist: the first version is always accepted.
    NewSubject,
    /// The registry would refuse it, with its reasons.
    Rejected(Vec<String>),
    /// The registry could not answer.
    CannotCheck(String),
}

/// What `check --registry` found before asking the registry.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Subjects and schemas, in a stable order.
    pub subjects: Vec<Planned>,
    /// Routes or sources whose schemas could not be built (database unreachable).
    pub cannot_check: Vec<String>,
    /// Routes whose subjects are only known at run time.
    pub skipped: Vec<String>,
}

/// Runs the registry check after the offline checks passed.
pub(super) fn run(config: &Config) -> ExitCode {
    super::on_runtime(check(config))
}

async fn check(config: &Config) -> ExitCode {
    let plan = plan(config).await;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(auth) = &config.schema_registry.auth {
        match reqwest::header::HeaderValue::from_str(&auth.header_value()) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Err(_) => {
                eprintln!(
                    "error: [schema_registry] credentials contain characters an HTTP header cannot carry"
                );
                return ExitCode::from(2);
            }
        }
    }
    let client = match reqwest::Client::builder()
        .timeout(config.schema_registry.timeout)
        .default_headers(headers)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot build an HTTP client: {e}");
            return ExitCode::from(2);
        }
    };
    println!("registry {}:", config.schema_registry.url);
    let (mut rejected, mut unknown) = (0, plan.cannot_check.len());
    for p in &plan.subjects {
        let verdict = compatibility(&client, &config.schema_registry.url, p).await;
        let verdict = match verdict {
            Verdict::CannotCheck(why) if why.contains("HTTP 401") || why.contains("HTTP 403") => {
                Verdict::CannotCheck(format!(
                    "{why}; {}",
                    if config.schema_registry.auth.is_some() {
                        "the registry refused switchyard's credentials: check [schema_registry] username/password (or token)"
                    } else {
                        "the registry wants credentials: set [schema_registry] username and password (or token)"
                    }
                ))
            }
            v => v,
        };
        let writers = p.writers.join(", ");
        match &verdict {
            Verdict::Compatible => println!("  {}: compatible ({writers})", p.subject),
            Verdict::Latest => println!(
                "  {}: compatible, already the latest version ({writers})",
                p.subject
            ),
            Verdict::NewSubject => println!("  {}: new subject ({writers})", p.subject),
            Verdict::Rejected(messages) => {
                rejected += 1;
                println!("  {}: would be rejected ({writers})", p.subject);
                for m in messages {
                    println!("      {m}");
                }
            }
            Verdict::CannotCheck(why) => {
                unknown += 1;
                println!("  {}: cannot check: {why}", p.subject);
            }
        }
    }
    for s in &plan.skipped {
        println!("  skipped: {s}");
    }
    for c in &plan.cannot_check {
        println!("  cannot check: {c}");
    }
    if rejected > 0 {
        eprintln!(
            "error: {rejected} schema{} would be rejected by the registry",
            if rejected == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    } else if unknown > 0 {
        eprintln!(
            "error: {unknown} check{} could not be made",
            if unknown == 1 { "" } else { "s" }
        );
        ExitCode::from(2)
    } else {
        println!("every schema would be accepted");
        ExitCode::SUCCESS
    }
}

/// Adds one schema for a subject, merging writers of identical schemas.
fn add(plan: &mut Plan, subject: String, schema: &AvroSchema, writer: String) {
    match plan
        .subjects
        .iter_mut()
        .find(|p| p.subject == subject && p.schema == schema.json())
    {
        Some(p) => {
            if !p.writers.contains(&writer) {
                p.writers.push(writer);
            }
        }
        None => plan.subjects.push(Planned {
            subject,
            schema: schema.json().to_string(),
            writers: vec![writer],
        }),
    }
}

/// The subjects and schemas every route would register.
pub(super) async fn plan(config: &Config) -> Plan {
    let mut plan = Plan::default();
    let mut by_source: BTreeMap<&str, Vec<&RouteConfig>> = BTreeMap::new();
    for route in &config.routes {
        by_source
            .entry(route.source.as_str())
            .or_default()
            .push(route);
    }
    for (source, routes) in by_source {
        let Some(cfg) = config.sources.get(source) else {
            continue;
        };
        match &cfg.kind {
            SourceKind::Webhook(_) => {
                for route in routes {
                    let topic = route.topic.render(|f| match f {
                        TopicField::Source => Some(route.source.clone()),
                        _ => None,
                    });
                    let Some(topic) = topic else {
                        plan.skipped.push(format!(
                            "route `{}`: its topic depends on the event type, known only at run time",
                            route.name
                        ));
                        continue;
                    };
                    let value = match &route.value_schema {
                        Some(v) => v.envelope().clone(),
                        None => cloudevent::schema().clone(),
                    };
                    let writer = format!("route {}", route.name);
                    add(&mut plan, format!("{topic}-value"), &value, writer.clone());
                    add(
                        &mut plan,
                        format!("{topic}-key"),
                        &AvroSchema::string(),
                        writer,
                    );
                }
            }
            SourceKind::Postgres(pg) => {
                let (messages, rows): (Vec<&RouteConfig>, Vec<&RouteConfig>) = routes
                    .into_iter()
                    .partition(|r| !r.ops.is_empty() && r.ops.iter().all(|o| o == "m"));
                for route in messages {
                    let Some(topic) = route.topic.render(|f| match f {
                        TopicField::Source => Some(route.source.clone()),
                        _ => None,
                    }) else {
                        continue;
                    };
                    let writer = format!("route {}", route.name);
                    let value =
                        AvroSchema::from_json(&envelope::message_value_schema().to_string());
                    let key = AvroSchema::from_json(&envelope::message_key_schema().to_string());
                    add(&mut plan, format!("{topic}-value"), &value, writer.clone());
                    add(&mut plan, format!("{topic}-key"), &key, writer);
                }
                if rows.is_empty() {
                    continue;
                }
                if let Err(e) = postgres_subjects(source, pg, &rows, &mut plan).await {
                    plan.cannot_check.push(format!(
                        "source `{source}`: the change schemas of route{} {} need the table shapes, and the database could not be read: {e}",
                        if rows.len() == 1 { "" } else { "s" },
                        rows.iter().map(|r| format!("`{}`", r.name)).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    plan
}

/// True when a postgres route takes row changes of `schema.table`.
fn takes_table(route: &RouteConfig, schema: &str, table: &str) -> bool {
    let table_ok = route.tables.is_empty()
        || route.tables.iter().any(|t| match t.split_once('.') {
            Some((s, t)) => s == schema && t == table,
            None => t == table,
        });
    let ops_ok = route.ops.is_empty()
        || route
            .ops
            .iter()
            .any(|o| matches!(o.as_str(), "c" | "u" | "d" | "r"));
    table_ok && ops_ok
}

async fn postgres_subjects(
    source: &str,
    pg: &crate::config::PostgresSourceConfig,
    routes: &[&RouteConfig],
    plan: &mut Plan,
) -> Result<(), String> {
    let conn = tokio::time::timeout(Duration::from_secs(10), stream::connect_sql(pg))
        .await
        .map_err(|_| "no answer within 10s".to_string())?
        .map_err(|e| e.to_string())?;
    let database = catalog::database(&conn).await.map_err(|e| e.to_string())?;
    let (_, tables) = catalog::live_tables(&conn, pg)
        .await
        .map_err(|e| e.to_string())?;
    for (schema, table) in tables {
        let takers: Vec<&&RouteConfig> = routes
            .iter()
            .filter(|r| takes_table(r, &schema, &table))
            .collect();
        if takers.is_empty() {
            continue;
        }
        let described = catalog::describe(&conn, &pg.publication, &schema, &table)
            .await
            .map_err(|e| e.to_string())?;
        let event = Event {
            id: EventId::from_lsn(0, 0),
            source: source.to_string(),
            event_type: "c".into(),
            received_at_micros: 0,
            payload: Payload::Change(ChangePayload {
                database: database.clone(),
                schema: schema.clone(),
                table: table.clone(),
                table_doc: described.relation.table_doc.clone(),
                op: crate::event::ChangeOp::Create,
                columns: described.relation.columns.clone(),
                before: None,
                after: None,
                commit_lsn: 0,
                tx_id: 0,
                commit_time_ms: 0,
                unchanged_toast: Vec::new(),
                before_key_only: false,
                position: Default::default(),
            }),
        };
        for route in takers {
            let Some(topic) = route.topic.render(|f| event.topic_field(f)) else {
                continue;
            };
            let m = RouteMatch {
                route: Arc::from(route.name.as_str()),
                topic: topic.clone(),
                key: Arc::from(route.key.clone()),
                key_pointer: None,
                transform: route.transform.clone(),
                columns: Default::default(),
                shapes: Default::default(),
                on_error: route.on_error,
                value_schema: None,
            };
            let writer = format!("route {} ({schema}.{table})", route.name);
            match record_parts(&event, &m) {
                Ok(parts) => {
                    add(
                        plan,
                        format!("{topic}-value"),
                        &parts.value_schema,
                        writer.clone(),
                    );
                    add(plan, format!("{topic}-key"), &parts.key_schema, writer);
                }
                Err(e) => plan.cannot_check.push(format!("{writer}: {e}")),
            }
        }
    }
    Ok(())
}

/// True when the subject's latest version is `p.schema` (same Avro canonical form). Checked
/// before the compatibility endpoint, which some registries (rivven-schema 0.0.22) answer
/// wrongly for an unchanged schema with logical types.
async fn is_latest(client: &reqwest::Client, base: &str, p: &Planned) -> bool {
    let Ok(r) = client
        .get(format!("{base}/subjects/{}/versions/latest", p.subject))
        .send()
        .await
    else {
        return false;
    };
    let latest: Json = r.json().await.unwrap_or(Json::Null);
    let canonical = |text: &str| {
        apache_avro::Schema::parse_str(text)
            .ok()
            .map(|s| s.canonical_form())
    };
    match (
        latest["schema"].as_str().and_then(canonical),
        canonical(&p.schema),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The text of an HTTP client error with its causes (reqwest's own text omits them).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Asks the registry whether `p.schema` would be accepted as the next version of `p.subject`.
///
/// A subject without versions is new (Confluent answers 404 40401; rivven-schema answers `[]`
/// and would call anything compatible), so the versions are listed first.
pub(super) async fn compatibility(client: &reqwest::Client, base: &str, p: &Planned) -> Verdict {
    let versions = match client
        .get(format!("{base}/subjects/{}/versions", p.subject))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Verdict::CannotCheck(format!("registry unreachable: {}", error_chain(&e)));
        }
    };
    match versions.status().as_u16() {
        404 => return Verdict::NewSubject,
        200 => {
            let list: Json = versions.json().await.unwrap_or(Json::Null);
            if list.as_array().is_some_and(Vec::is_empty) {
                return Verdict::NewSubject;
            }
            if is_latest(client, base, p).await {
                return Verdict::Latest;
            }
        }
        status => {
            let text = versions.text().await.unwrap_or_default();
            return Verdict::CannotCheck(format!("listing versions: HTTP {status}: {text}"));
        }
    }
    let url = format!(
        "{base}/compatibility/subjects/{}/versions/latest?verbose=true",
        p.subject
    );
    let body = serde_json::json!({"schema": p.schema, "schemaType": "AVRO"});
    let response = match client
        .post(&url)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Verdict::CannotCheck(format!("registry unreachable: {}", error_chain(&e)));
        }
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let answer: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    let code = answer["error_code"].as_i64();
    let message = answer["message"].as_str().unwrap_or(&text).to_string();
    match status {
        200 => match answer["is_compatible"].as_bool() {
            Some(true) => Verdict::Compatible,
            Some(false) => {
                let mut messages: Vec<String> = answer["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                    .collect();
                if messages.is_empty() {
                    messages.push("the registry gave no reason".into());
                }
                Verdict::Rejected(messages)
            }
            None => Verdict::CannotCheck(format!("unexpected answer: {text}")),
        },
        // 40401 subject not found, 40402 version not found: nothing to be compatible with.
        404 if matches!(code, Some(40401 | 40402))
            || (message.to_lowercase().contains("subject")
                && message.to_lowercase().contains("not found")) =>
        {
            Verdict::NewSubject
        }
        409 | 422 => Verdict::Rejected(vec![message]),
        _ => Verdict::CannotCheck(format!("HTTP {status}: {message}")),
    }
}
