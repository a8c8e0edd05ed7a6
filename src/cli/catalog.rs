//! `switchyard topics` and `switchyard lineage`: [`crate::catalog`] printed for people or
//! scripts.

use std::process::ExitCode;

use serde_json::Value as Json;

pub(crate) use crate::catalog::{LiveTables, lineage_json, live_tables, topics_json};
use crate::config::Config;

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

/// `switchyard topics`.
pub(crate) fn topics(config: &Config, format: TopicsFormat) -> ExitCode {
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

/// `switchyard lineage`; with `live`, postgres sources list the tables their database streams.
pub(crate) fn lineage(
    config: &Config,
    format: LineageFormat,
    live: Option<&LiveTables>,
) -> ExitCode {
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
