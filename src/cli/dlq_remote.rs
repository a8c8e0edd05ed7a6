//! `switchyard dlq … --admin-url URL`: the same commands through the admin API, so the audit
//! trail names the token's principal, not whoever can open the store.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::dlq::{DlqCommand, Filter, Format, Select, StatusFilter, confirm, time, usage_error};
use crate::store::dead_letters::select::format_time;

/// Where the API is and the token to call it with.
pub(super) struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    /// `url` (the admin listener) with the token of `token_file`, else of
    /// `$SWITCHYARD_ADMIN_TOKEN`.
    pub(super) fn new(url: &str, token_file: Option<&std::path::Path>) -> anyhow::Result<Remote> {
        let token = match token_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("reading the token from {}", f.display()))?,
            None => std::env::var("SWITCHYARD_ADMIN_TOKEN").map_err(|_| {
                anyhow::anyhow!(
                    "--admin-url needs a token: --token-file FILE, or SWITCHYARD_ADMIN_TOKEN"
                )
            })?,
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            bail!("the admin token is empty");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            token,
            client,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// `GET path`: the answer's JSON if 2xx.
    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.ok(reqwest::Method::GET, path, None).await
    }

    /// The answer's JSON if 2xx; otherwise the API's error, as an error.
    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        Err(unexpected(status, &v))
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn selection_body(select: &Select) -> Value {
    let s = select.selection();
    json!({
        "ids": s.ids,
        "route": s.route,
        "class": s.class,
        "all": s.all,
        "source": s.source,
        "since": s.since.map(format_time),
        "until": s.until.map(format_time),
        "limit": s.limit,
    })
}

fn print_rows(out: &mut dyn Write, rows: &[Value]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6}  {:<20} {:<16} {:<18} {:<9} {:>4}  {:<20}  MESSAGE",
        "ID", "LAST FAILED", "ROUTE", "CLASS", "STATUS", "TRY", "SOURCE"
    )?;
    for d in rows {
        let msg: String = d["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        writeln!(
            out,
            "{:>6}  {:<20} {:<16} {:<18} {:<9} {:>4}  {:<20}  {msg}",
            d["id"],
            d["last_failed_at"].as_str().unwrap_or(""),
            d["route"].as_str().unwrap_or("-"),
            d["class"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["attempts"],
            d["source"].as_str().unwrap_or(""),
        )?;
    }
    Ok(())
}

/// The path of one page of dead letters through the API: `filter`, `status` (one, or `all`),
/// at most `limit`, after the id `after`.
fn page_path(filter: &Filter, status: &str, limit: usize, after: Option<i64>) -> String {
    let q = query(&[
        ("source", filter.source.clone()),
        ("route", filter.route.clone()),
        ("class", filter.class.clone()),
        ("status", Some(status.to_string())),
        ("since", filter.since.map(format_time)),
        ("until", filter.until.map(format_time)),
        ("limit", Some(limit.to_string())),
        ("after_id", after.map(|a| a.to_string())),
    ]);
    format!("/api/v1/dead-letters{q}")
}

/// The API's `status` parameter for `--status`: the one given, or `all`.
fn status_param(status: &StatusFilter) -> String {
    match status.0.as_slice() {
        [s] => s.as_str().to_string(),
        _ => "all".to_string(),
    }
}

/// An answer the command did not expect: its status and the API's message (else the body).
fn unexpected(status: u16, answer: &Value) -> anyhow::Error {
    anyhow::anyhow!(
        "the admin API answered {status}: {}",
        answer["message"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_string)
    )
}

/// Follows replay job `id` until it ends, printing each of its lines once; its last state.
async fn follow_job(remote: &Remote, out: &mut impl Write, id: u64) -> anyhow::Result<Value> {
    use reqwest::Method;
    let mut printed = 0usize;
    loop {
        let j = remote
            .ok(Method::GET, &format!("/api/v1/replays/{id}"), None)
            .await?;
        let lines = j["lines"].as_array().cloned().unwrap_or_default();
        let done = j["delivered"].as_u64().unwrap_or(0)
            + j["failed"].as_u64().unwrap_or(0)
            + j["not_delivered"].as_u64().unwrap_or(0);
        // The job keeps its newest lines: print those not printed yet.
        let skip = lines
            .len()
            .saturating_sub((done as usize).saturating_sub(printed));
        for l in &lines[skip.min(lines.len())..] {
            writeln!(out, "{l}")?;
        }
        printed = done as usize;
        if j["state"] != "running" {
            return Ok(j);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a `dlq` subcommand through the admin API.
pub(super) async fn run(remote: &Remote, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let mut out = std::io::stdout();
    match command {
        DlqCommand::List {
            filter,
            status,
            limit,
            format,
        } => {
            let status = status_param(status);
            let mut rows: Vec<Value> = Vec::new();
            let mut after: Option<i64> = None;
            while rows.len() < *limit {
                let page = (*limit - rows.len()).min(1000);
                let v = remote
                    .ok(Method::GET, &page_path(filter, &status, page, after), None)
                    .await?;
                rows.extend(v["items"].as_array().cloned().unwrap_or_default());
                match v["next_after_id"].as_i64() {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            match format {
                Format::Json => {
                    for r in &rows {
                        writeln!(out, "{r}")?;
                    }
                }
                Format::Table => print_rows(&mut out, &rows)?,
            }
        }
        DlqCommand::Show { id, raw } => {
            let q = if *raw { "?raw=true" } else { "" };
            let (status, v) = remote
                .call(Method::GET, &format!("/api/v1/dead-letters/{id}{q}"), None)
                .await?;
            if status == 404 {
                return Ok(usage_error(&format!("no dead letter with id {id}")));
            }
            if status != 200 {
                return Err(unexpected(status, &v));
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        DlqCommand::Replay {
            select,
            dry_run,
            rate,
            force,
            actor,
            yes,
            ..
        } => {
            if actor.is_some() {
                return Ok(usage_error(
                    "--actor does not apply with --admin-url: the audit trail names the token's principal",
                ));
            }
            if !dry_run
                && !confirm(
                    &format!("Replay the selected dead letters through {}?", remote.base),
                    *yes,
                )?
            {
                bail!("cancelled; nothing was replayed");
            }
            let mut body = selection_body(select);
            body["dry_run"] = json!(dry_run);
            body["rate"] = json!(rate);
            body["force"] = json!(force);
            let (status, job) = remote
                .call(Method::POST, "/api/v1/replays", Some(body))
                .await?;
            if status == 404 || status == 400 {
                return Ok(usage_error(job["message"].as_str().unwrap_or("refused")));
            }
            if status != 202 {
                return Err(unexpected(status, &job));
            }
            let id = job["id"].as_u64().context("the job has no id")?;
            let job = follow_job(remote, &mut out, id).await?;
            let action = if *dry_run {
                "replay --dry-run"
            } else {
                "replay"
            };
            eprintln!(
                "{action} (job {id}, {}): {}",
                job["state"].as_str().unwrap_or(""),
                job["message"].as_str().unwrap_or("")
            );
            let failed = job["failed"].as_u64().unwrap_or(0) > 0
                || job["not_delivered"].as_u64().unwrap_or(0) > 0
                || job["state"] != "done";
            if failed && !dry_run {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Discard {
            select,
            reason,
            actor,
            yes,
        } => {
            if actor.is_some() {
                return Ok(usage_error(
                    "--actor does not apply with --admin-url: the audit trail names the token's principal",
                ));
            }
            if reason.trim().is_empty() {
                return Ok(usage_error("--reason must say why"));
            }
            if !confirm(
                &format!("Discard the selected dead letters through {}?", remote.base),
                *yes,
            )? {
                bail!("cancelled; nothing was discarded");
            }
            let mut body = selection_body(select);
            body["reason"] = json!(reason);
            let (status, v) = remote
                .call(Method::POST, "/api/v1/dead-letters/discard", Some(body))
                .await?;
            if status == 404 || status == 400 {
                return Ok(usage_error(v["message"].as_str().unwrap_or("refused")));
            }
            if status != 200 {
                return Err(unexpected(status, &v));
            }
            eprintln!("discarded {}", v["discarded"]);
        }
        DlqCommand::Stats { format } => {
            let rows = remote
                .ok(Method::GET, "/api/v1/dead-letters/stats", None)
                .await?;
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
                Format::Table => {
                    writeln!(
                        out,
                        "{:<24} {:<18} {:<10} {:>8}",
                        "ROUTE", "CLASS", "STATUS", "COUNT"
                    )?;
                    for r in rows.as_array().into_iter().flatten() {
                        writeln!(
                            out,
                            "{:<24} {:<18} {:<10} {:>8}",
                            r["route"].as_str().unwrap_or(""),
                            r["class"].as_str().unwrap_or(""),
                            r["status"].as_str().unwrap_or(""),
                            r["count"]
                        )?;
                    }
                }
            }
        }
        DlqCommand::Export { filter, status } => {
            let status = status_param(status);
            let mut after: Option<i64> = None;
            loop {
                let page = remote
                    .ok(Method::GET, &page_path(filter, &status, 1000, after), None)
                    .await?;
                for item in page["items"].as_array().into_iter().flatten() {
                    // Each entry with its event, as the API shows it to this token's role.
                    let v = remote
                        .ok(
                            Method::GET,
                            &format!("/api/v1/dead-letters/{}", item["id"]),
                            None,
                        )
                        .await?;
                    writeln!(out, "{v}")?;
                }
                match page["next_after_id"].as_i64() {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        DlqCommand::Audit { limit, format } => {
            let rows = remote
                .ok(
                    Method::GET,
                    &format!("/api/v1/audit?limit={}", (*limit).clamp(1, 1000)),
                    None,
                )
                .await?;
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
                Format::Table => {
                    for r in rows.as_array().into_iter().flatten() {
                        writeln!(
                            out,
                            "{}  {:<20} {:<18} {:<30} {:>6}  {}",
                            time(r["at"].as_i64().unwrap_or(0)),
                            r["actor"].as_str().unwrap_or(""),
                            r["action"].as_str().unwrap_or(""),
                            r["selector"].as_str().unwrap_or(""),
                            r["count"],
                            r["result"].as_str().unwrap_or("")
                        )?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
