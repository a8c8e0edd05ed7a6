//! The lineage graph as an SVG drawn on the server: sources, tables or event types, routes and
//! topics in four columns, edges between them. The topics table beside it says the same in text.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;

use super::page::esc;

const COLUMN: f64 = 250.0;
const ROW: f64 = 34.0;
const BOX_W: f64 = 210.0;
const BOX_H: f64 = 24.0;

fn column(kind: &str) -> usize {
    match kind {
        "webhook source" | "postgres source" => 0,
        "table" | "event type" => 1,
        "route" => 2,
        _ => 3,
    }
}

fn short(label: &str) -> String {
    let chars: Vec<char> = label.chars().collect();
    if chars.len() <= 30 {
        label.to_string()
    } else {
        format!("{}…", chars[..29].iter().collect::<String>())
    }
}

/// The SVG of `graph` (`{nodes: [{id, kind, label}], edges: [{from, to}]}`).
pub(super) fn svg(graph: &Value) -> String {
    let empty = Vec::new();
    let nodes = graph["nodes"].as_array().unwrap_or(&empty);
    let edges = graph["edges"].as_array().unwrap_or(&empty);
    let mut rows = [0usize; 4];
    let mut at: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut boxes = String::new();
    for n in nodes {
        let (Some(id), Some(kind)) = (n["id"].as_str(), n["kind"].as_str()) else {
            continue;
        };
        let label = n["label"].as_str().unwrap_or(id);
        let c = column(kind);
        let (x, y) = (10.0 + c as f64 * COLUMN, 30.0 + rows[c] as f64 * ROW);
        rows[c] += 1;
        at.insert(id, (x, y));
        let _ = write!(
            boxes,
            "<g class=\"node\"><title>{kind}: {label}</title><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"4\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
            x + 6.0,
            y + 16.0,
            esc(&short(label)),
            kind = esc(kind),
            label = esc(label),
        );
    }
    let mut lines = String::new();
    for e in edges {
        let (Some(from), Some(to)) = (
            e["from"].as_str().and_then(|f| at.get(f)),
            e["to"].as_str().and_then(|t| at.get(t)),
        ) else {
            continue;
        };
        let (x1, y1) = (from.0 + BOX_W, from.1 + BOX_H / 2.0);
        let (x2, y2) = (to.0, to.1 + BOX_H / 2.0);
        let mid = (x1 + x2) / 2.0;
        let _ = write!(
            lines,
            "<path class=\"edge\" d=\"M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}\"/>"
        );
    }
    let height = 40.0 + rows.iter().copied().max().unwrap_or(1) as f64 * ROW;
    let width = 20.0 + 3.0 * COLUMN + BOX_W;
    let mut heads = String::new();
    for (c, h) in ["Sources", "Tables and event types", "Routes", "Topics"]
        .iter()
        .enumerate()
    {
        let _ = write!(
            heads,
            "<text x=\"{}\" y=\"16\" font-weight=\"600\">{h}</text>",
            10.0 + c as f64 * COLUMN
        );
    }
    format!(
        "<svg role=\"img\" aria-labelledby=\"lineage-title\" viewBox=\"0 0 {width} {height}\" width=\"100%\" preserveAspectRatio=\"xMinYMin meet\"><title id=\"lineage-title\">Lineage: sources, tables and event types, routes and topics ({} nodes, {} edges)</title>{heads}{lines}{boxes}</svg>",
        nodes.len(),
        edges.len()
    )
}

/// A bar chart of `counts` (oldest first) labelled by `labels`, with a caption.
pub(super) fn bars(caption: &str, labels: &[String], counts: &[u64]) -> String {
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (w, h) = (12.0, 60.0);
    let mut out = format!(
        "<svg role=\"img\" aria-labelledby=\"bars-title\" viewBox=\"0 0 {} {}\" width=\"{}\" height=\"{}\"><title id=\"bars-title\">{}</title>",
        counts.len() as f64 * (w + 2.0),
        h + 2.0,
        counts.len() as f64 * (w + 2.0),
        h + 2.0,
        esc(caption)
    );
    for (i, (n, l)) in counts.iter().zip(labels).enumerate() {
        let bh = (*n as f64 / max) * h;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{w}\" height=\"{bh}\"><title>{}: {n}</title></rect>",
            i as f64 * (w + 2.0),
            h - bh + 1.0,
            esc(l)
        );
    }
    out.push_str("</svg>");
    out
}
