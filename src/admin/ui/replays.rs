//! The console's replays: a dry run first (its page refreshes itself while it runs), then
//! "Confirm replay" with the same selection.

use std::collections::HashMap;
use std::fmt::Write;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use super::page::{Section, esc, hidden, html, layout, notice};
use super::{Fields, S, as_page, caller, cross_site, same_origin, who};
use crate::admin::Call;
use crate::admin::api::{self, SelectionBody};
use crate::config::admin::Role;
use crate::store::dead_letters::select::format_time;

/// The selection of a posted form.
fn selection(f: &HashMap<String, String>) -> SelectionBody {
    let get = |k: &str| f.get(k).cloned().filter(|v| !v.is_empty());
    SelectionBody {
        ids: get("ids")
            .map(|s| s.split(',').filter_map(|i| i.trim().parse().ok()).collect())
            .unwrap_or_default(),
        route: get("route"),
        class: get("class"),
        all: get("all").is_some_and(|v| v == "true"),
        source: get("source"),
        since: get("since"),
        until: get("until"),
        limit: get("limit").and_then(|l| l.parse().ok()),
        dry_run: get("dry_run").is_some_and(|v| v == "true"),
        rate: get("rate").map(Value::String),
        force: false,
        reason: None,
    }
}

pub(super) async fn start(
    State(state): S,
    headers: HeaderMap,
    call: Call,
    Form(f): Fields,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let p = match caller(&state, &call, Role::Operator).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b = selection(&f);
    match api::replay_selected(&state, &call, &b).await {
        Ok(job) => Redirect::to(&format!("/ui/replays/{}", job["id"])).into_response(),
        Err(r) => as_page(r, &p, "Replay").await,
    }
}

pub(super) async fn show(State(state): S, call: Call, Path(id): Path<u64>) -> Response {
    let p = match caller(&state, &call, Role::Viewer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let _ = call.audit(&state, &p, "read", 0, "200").await;
    let Some(job) = state.jobs.get(id) else {
        return html(
            StatusCode::NOT_FOUND,
            layout(
                "Replay",
                Section::None,
                who(&p),
                &notice(
                    "bad",
                    &format!(
                        "No replay job {id} (jobs are kept until 50 newer ones ran, or a restart)."
                    ),
                ),
            ),
        );
    };
    let j = job.to_json(true);
    let running = j["state"] == "running";
    let kind = if job.dry_run { "Dry run" } else { "Replay" };
    let mut body = format!("<h1>{kind} {id}</h1>");
    let _ = write!(
        body,
        "<dl class=\"kv\"><dt>State</dt><dd role=\"status\" class=\"status\">{}</dd><dt>Selection</dt><dd><code>{}</code></dd><dt>By</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>Not delivered</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd></dl>",
        esc(j["state"].as_str().unwrap_or("")),
        esc(&job.selector),
        esc(&job.by),
        if job.dry_run {
            "Would be produced"
        } else {
            "Delivered"
        },
        j["delivered"],
        if job.dry_run {
            "Would fail"
        } else {
            "Failed again"
        },
        j["failed"],
        j["not_delivered"],
        esc(j["started_at"].as_str().unwrap_or("")),
    );
    if let Some(m) = j["message"].as_str() {
        body.push_str(&notice(if j["failed"] == 0 { "ok" } else { "bad" }, m));
    }
    body.push_str("<h2>Entries</h2><table><thead><tr><th scope=\"col\" class=\"num\">Id</th><th scope=\"col\">Outcome</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
    for l in j["lines"].as_array().into_iter().flatten() {
        let (outcome, detail) = if let Some(w) = l.get("would_produce") {
            (
                "would produce".to_string(),
                format!(
                    "topic {}, route {}",
                    w["topic"].as_str().unwrap_or(""),
                    w["route"].as_str().unwrap_or("")
                ),
            )
        } else if let Some(w) = l.get("would_fail") {
            (
                format!("would fail: {}", w.as_str().unwrap_or("")),
                l["message"].as_str().unwrap_or("").to_string(),
            )
        } else {
            (
                l["result"].as_str().unwrap_or("").to_string(),
                l["topic"]
                    .as_str()
                    .or(l["message"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        };
        let _ = write!(
            body,
            "<tr><td class=\"num\"><a href=\"/ui/dead-letters/{id}\">{id}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&outcome),
            esc(&detail),
            id = l["id"],
        );
    }
    body.push_str("</tbody></table>");
    if running {
        let _ = write!(
            body,
            "<p class=\"muted\">This page refreshes every second while the job runs. <a href=\"/ui/replays/{id}\">Refresh now</a></p>"
        );
        if p.role >= Role::Operator {
            body.push_str(
                "<p class=\"muted\">(To cancel: <code>DELETE /api/v1/replays/ID</code>.)</p>",
            );
        }
    } else if job.dry_run
        && j["state"] == "done"
        && p.role >= Role::Operator
        && j["delivered"].as_u64() > Some(0)
    {
        // Confirm: the same selection, for real.
        let _ = write!(
            body,
            "<h2>Confirm</h2><p>Replay these entries to Kafka now? Each is marked replayed once Kafka acknowledged it.</p><form method=\"post\" action=\"/ui/replays\">{}<button type=\"submit\">Confirm replay</button></form>",
            confirm_fields(&job.selection),
        );
    }
    let mut r = html(
        StatusCode::OK,
        layout(
            &format!("{kind} {id}"),
            Section::DeadLetters,
            who(&p),
            &body,
        ),
    );
    if running && let Ok(v) = HeaderValue::from_str("1") {
        r.headers_mut().insert("refresh", v);
    }
    r
}

/// Hidden fields that select again what a dry run selected.
fn confirm_fields(sel: &crate::store::dead_letters::select::Selection) -> String {
    let mut fields = String::new();
    if !sel.ids.is_empty() {
        let ids: Vec<String> = sel.ids.iter().map(i64::to_string).collect();
        fields.push_str(&hidden("ids", &ids.join(",")));
    }
    if sel.all {
        fields.push_str(&hidden("all", "true"));
    }
    for (name, v) in [
        ("route", &sel.route),
        ("class", &sel.class),
        ("source", &sel.source),
    ] {
        if let Some(v) = v {
            fields.push_str(&hidden(name, v));
        }
    }
    for (name, v) in [("since", sel.since), ("until", sel.until)] {
        if let Some(t) = v {
            fields.push_str(&hidden(name, &format_time(t)));
        }
    }
    if let Some(l) = sel.limit {
        fields.push_str(&hidden("limit", &l.to_string()));
    }
    fields
}
