//! `switchyard route`: an offline dry run of the route table on a sample event. Nothing is
//! sent, registered or stored; signatures are not checked.
//!
//! A webhook sample is `{"headers": {"name": "value"}, "body": <JSON or text>}`, optionally
//! with `"content_type"`. A change sample is `{"table": "public.orders", "op": "insert",
//! "before": {...}, "after": {...}}`, optionally with `"columns": [{"name", "type", "key",
//! "nullable"}]` (PostgreSQL type names); without it columns are inferred from the values
//! (integers → int8, other numbers → float8, booleans → bool, objects/arrays → jsonb, the
//! rest text) and `id` is the key.

use std::path::PathBuf;
use std::process::ExitCode;

use apache_avro::Schema;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value as Json, json};

use crate::avro::json::avro_to_json_typed;
use crate::config::{Config, SourceKind};
use crate::encode::record_parts;
use crate::event::{ChangeColumn, ChangeOp, ChangePayload, Event, EventId, Payload, now_micros};
use crate::router::RouteTable;
use crate::source::webhook::{event_from_request, identity};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `switchyard route` arguments.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The source the sample event comes from.
    #[arg(long)]
    source: String,
    /// A JSON file describing the event (see `switchyard route --help`).
    #[arg(long)]
    event: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Runs the dry run: 0 when it ran, 2 when the sample cannot be used.
pub(super) fn run(config: &Config, args: &RouteArgs) -> ExitCode {
    match dry_run(config, args) {
        Ok(out) => {
            match args.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default())
                }
                Format::Text => print_text(&out),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn dry_run(config: &Config, args: &RouteArgs) -> Result<Json, String> {
    let text = std::fs::read_to_string(&args.event)
        .map_err(|e| format!("cannot read {}: {e}", args.event.display()))?;
    let sample: Json = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}", args.event.display()))?;
    let Some(source) = config.sources.get(&args.source) else {
        let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        return Err(format!(
            "no source named `{}` in {} (sources: {})",
            args.source,
            config.path.display(),
            known.join(", ")
        ));
    };
    let event = match &source.kind {
        SourceKind::Webhook(w) => webhook_event(&args.source, w, &sample)?,
        SourceKind::Postgres(_) => change_event(&args.source, &sample)?,
    };
    let table = RouteTable::compile(config);
    let mut routes = Vec::new();
    for (name, outcome) in table.explain(&event) {
        let m = match outcome {
            Err(why) => {
                routes.push(json!({"route": &*name, "matched": false, "reason": why}));
                continue;
            }
            Ok(m) => m,
        };
        let parts = match record_parts(&event, &m) {
            Ok(p) => p,
            Err(e) => {
                routes.push(json!({
                    "route": &*name, "matched": true, "topic": m.topic,
                    "error": format!("would be dead-lettered (class encode): {e}"),
                }));
                continue;
            }
        };
        let render = |schema: &str, value: Option<apache_avro::types::Value>| match value {
            None => Json::Null,
            Some(v) => match Schema::parse_str(schema) {
                Ok(s) => avro_to_json_typed(v, &s),
                Err(_) => crate::avro::json::avro_to_json(v),
            },
        };
        let mut headers = vec![
            ("switchyard.event_id", event.id.as_str().to_string()),
            ("switchyard.source", event.source.clone()),
            ("switchyard.route", name.to_string()),
        ];
        if let Payload::Change(c) = &event.payload
            && c.before_key_only
        {
            headers.push(("switchyard.before", "key_only".into()));
        }
        routes.push(json!({
            "route": &*name,
            "matched": true,
            "topic": m.topic,
            "key": render(parts.key_schema.json(), parts.key.clone()),
            "headers": headers.into_iter().map(|(k, v)| (k.to_string(), Json::String(v))).collect::<serde_json::Map<_, _>>(),
            "value": render(parts.value_schema.json(), parts.value.clone()),
            "value_subject": format!("{}-value", m.topic),
        }));
    }
    let unmatched = routes.iter().all(|r| r["matched"] == false);
    Ok(json!({
        "source": args.source,
        "event": {"id": event.id.as_str(), "type": event.event_type},
        "routes": routes,
        "unmatched": if unmatched { Json::String(format!("{:?}", config.router.unmatched).to_lowercase()) } else { Json::Null },
    }))
}

fn webhook_event(
    name: &str,
    config: &crate::config::WebhookSourceConfig,
    sample: &Json,
) -> Result<Event, String> {
    let mut headers = HeaderMap::new();
    if let Some(h) = sample.get("headers").and_then(Json::as_object) {
        for (k, v) in h {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("header `{k}`: invalid value"))?;
            headers.insert(name, value);
        }
    }
    let content_type = sample
        .get("content_type")
        .and_then(Json::as_str)
        .unwrap_or("application/json");
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.entry(axum::http::header::CONTENT_TYPE).or_insert(v);
    }
    let body = match sample.get("body") {
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => return Err("a webhook sample needs \"body\"".into()),
    };
    let fields = identity::Fields::for_json(
        &config.provider,
        config.id_pointer.as_deref(),
        config.type_pointer.as_deref(),
    );
    let parsed = identity::parse_body_reading(
        body.as_bytes(),
        headers.get(axum::http::header::CONTENT_TYPE),
        &fields,
    )
    .map_err(|e| format!("the body would be refused: {e:?}"))?;
    Ok(event_from_request(
        name,
        config,
        headers,
        body.clone(),
        body.as_bytes(),
        &parsed,
    ))
}

/// PostgreSQL type name → (OID, type modifier).
fn pg_type(name: &str) -> Option<(u32, i32)> {
    let n = name.trim().to_ascii_lowercase();
    if let Some(args) = n.strip_prefix("numeric(").and_then(|r| r.strip_suffix(')')) {
        let (p, s) = args.split_once(',').unwrap_or((args, "0"));
        let (p, s): (i32, i32) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
        return Some((1700, ((p << 16) | s) + 4));
    }
    Some(match n.as_str() {
        "smallint" | "int2" => (21, -1),
        "integer" | "int" | "int4" => (23, -1),
        "bigint" | "int8" => (20, -1),
        "real" | "float4" => (700, -1),
        "double precision" | "float8" => (701, -1),
        "boolean" | "bool" => (16, -1),
        "text" => (25, -1),
        "varchar" | "character varying" => (1043, -1),
        "numeric" | "decimal" => (1700, -1),
        "date" => (1082, -1),
        "time" => (1083, -1),
        "timestamp" => (1114, -1),
        "timestamptz" | "timestamp with time zone" => (1184, -1),
        "uuid" => (2950, -1),
        "json" => (114, -1),
        "jsonb" => (3802, -1),
        "bytea" => (17, -1),
        _ => return None,
    })
}

fn change_event(name: &str, sample: &Json) -> Result<Event, String> {
    let table = sample
        .get("table")
        .and_then(Json::as_str)
        .ok_or("a change sample needs \"table\": \"schema.table\"")?;
    let (schema, table) = table.split_once('.').unwrap_or(("public", table));
    let op = match sample.get("op").and_then(Json::as_str).unwrap_or("insert") {
        "insert" | "c" => ChangeOp::Create,
        "update" | "u" => ChangeOp::Update,
        "delete" | "d" => ChangeOp::Delete,
        "read" | "r" => ChangeOp::Read,
        "truncate" | "t" => ChangeOp::Truncate,
        other => {
            return Err(format!(
                "unknown op `{other}` (insert, update, delete, read, truncate)"
            ));
        }
    };
    let before = sample.get("before").and_then(Json::as_object);
    let after = sample.get("after").and_then(Json::as_object);
    let columns: Vec<ChangeColumn> = match sample.get("columns").and_then(Json::as_array) {
        Some(cols) => cols
            .iter()
            .map(|c| {
                let name = c
                    .get("name")
                    .and_then(Json::as_str)
                    .ok_or("every column needs \"name\"")?;
                let ty = c.get("type").and_then(Json::as_str).unwrap_or("text");
                let (oid, typmod) =
                    pg_type(ty).ok_or_else(|| format!("column `{name}`: unknown type `{ty}`"))?;
                let is_key = c.get("key").and_then(Json::as_bool).unwrap_or(name == "id");
                Ok(ChangeColumn {
                    name: name.to_string(),
                    type_oid: oid,
                    type_modifier: typmod,
                    nullable: c.get("nullable").and_then(Json::as_bool).unwrap_or(!is_key),
                    is_key,
                    doc: None,
                })
            })
            .collect::<Result<_, String>>()?,
        None => {
            let mut names: Vec<&String> = after
                .or(before)
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    let v = after
                        .and_then(|a| a.get(n))
                        .or_else(|| before.and_then(|b| b.get(n)));
                    let oid = match v {
                        Some(Json::Number(x)) if x.is_i64() => 20,
                        Some(Json::Number(_)) => 701,
                        Some(Json::Bool(_)) => 16,
                        Some(Json::Object(_)) | Some(Json::Array(_)) => 3802,
                        _ => 25,
                    };
                    ChangeColumn {
                        name: n.clone(),
                        type_oid: oid,
                        type_modifier: -1,
                        nullable: n != "id",
                        is_key: n == "id",
                        doc: None,
                    }
                })
                .collect()
        }
    };
    let text = |v: &Json| match v {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(if *b { "t".into() } else { "f".into() }),
        other => Some(other.to_string()),
    };
    let values = |m: Option<&serde_json::Map<String, Json>>| {
        m.map(|m| {
            columns
                .iter()
                .map(|c| m.get(&c.name).and_then(text))
                .collect::<Vec<_>>()
        })
    };
    Ok(Event {
        id: EventId::from_lsn(0, 0),
        source: name.to_string(),
        event_type: op.code().to_string(),
        received_at_micros: now_micros(),
        payload: Payload::Change(ChangePayload {
            database: "sample".into(),
            schema: schema.to_string(),
            table: table.to_string(),
            table_doc: None,
            op,
            before: values(before),
            after: values(after),
            columns: columns.into(),
            commit_lsn: 0,
            tx_id: 0,
            commit_time_ms: now_micros() / 1000,
            unchanged_toast: Vec::new(),
            before_key_only: false,
            position: Default::default(),
        }),
    })
}

fn print_text(out: &Json) {
    println!(
        "event {} (type {}) from source {}",
        out["event"]["id"].as_str().unwrap_or(""),
        out["event"]["type"].as_str().unwrap_or(""),
        out["source"].as_str().unwrap_or("")
    );
    for r in out["routes"].as_array().into_iter().flatten() {
        let name = r["route"].as_str().unwrap_or("");
        if r["matched"] == false {
            println!(
                "\nroute {name}: no — {}",
                r["reason"].as_str().unwrap_or("")
            );
            continue;
        }
        println!("\nroute {name}: yes");
        println!("  topic:   {}", r["topic"].as_str().unwrap_or(""));
        if let Some(e) = r["error"].as_str() {
            println!("  error:   {e}");
            continue;
        }
        println!("  key:     {}", r["key"]);
        if let Some(h) = r["headers"].as_object() {
            let h: Vec<String> = h
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            println!("  headers: {}", h.join(" "));
        }
        let value = serde_json::to_string_pretty(&r["value"]).unwrap_or_default();
        println!("  value:   {}", value.replace('\n', "\n           "));
    }
    if let Some(policy) = out["unmatched"].as_str() {
        println!("\nno route takes this event: [router] unmatched = \"{policy}\"");
    }
}
