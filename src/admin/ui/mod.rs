//! The console under `/ui`: HTML pages on the admin API's code (same roles, same audit rows),
//! signed in with an admin token kept in an `HttpOnly`, `SameSite=Strict` cookie.
//!
//! Pages: overview (dead letters by route × class × status, failures per hour over a day, slot
//! lag per source, records per second), dead letters (filters, pages), an entry (its error and
//! payload, masked for viewers; replay as a dry run first, then confirm; discard with a reason),
//! a replay job (refreshes itself while it runs), the audit trail (with its chain checked),
//! routes, topics and lineage as a graph. No JavaScript; a form post from another origin is
//! refused. Tested in a real browser: `tests/it/console.rs`.

mod graph;
pub(crate) mod page;
mod replays;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::api::{self, ListQuery, SelectionBody};
use super::auth::{COOKIE, Principal};
use super::{AdminState, Call, Refusal};
use crate::config::admin::Role;
use crate::event::now_micros;
use crate::store::dead_letters::select::{CLASSES, format_time};
use crate::store::{Selector, Status};
use page::{Section, esc, hidden, html, input, layout, notice, select, status};

type S = State<Arc<AdminState>>;
type Fields = Form<HashMap<String, String>>;

/// Dead letters of the last day the overview counts by hour (at most).
const OVERVIEW_COUNTED: usize = 2000;

/// The console's routes.
pub(crate) fn routes(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/style.css", get(style))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/dead-letters", get(list))
        .route("/ui/dead-letters/{id}", get(entry))
        .route("/ui/dead-letters/{id}/discard", post(discard))
        .route("/ui/replays", post(replays::start))
        .route("/ui/replays/{id}", get(replays::show))
        .route("/ui/audit", get(audit))
        .route("/ui/routes", get(routes_page))
        .with_state(state)
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        page::STYLE,
    )
        .into_response()
}

fn who(p: &Principal) -> Option<(&str, &str)> {
    Some((p.name.as_str(), p.role.as_str()))
}

/// A refused page: sign in (303 to the login form), or why not.
fn refused(r: Refusal, who: Option<&Principal>) -> Response {
    match r {
        Refusal::Unauthenticated => Redirect::to("/ui/login").into_response(),
        Refusal::TooManyFailures => html(
            StatusCode::TOO_MANY_REQUESTS,
            layout(
                "Too many attempts",
                Section::None,
                None,
                &notice(
                    "bad",
                    "Too many failed sign-ins from this address; wait a minute.",
                ),
            ),
        ),
        Refusal::Forbidden(role) => html(
            StatusCode::FORBIDDEN,
            layout(
                "Not allowed",
                Section::None,
                who.and_then(self::who),
                &format!(
                    "<h1>Not allowed</h1>{}",
                    notice("bad", &format!("This needs the {} role.", role.as_str()))
                ),
            ),
        ),
    }
}

/// The caller of a page, or the page to answer instead.
async fn caller(state: &AdminState, call: &Call, needed: Role) -> Result<Principal, Response> {
    match call.require(state, needed).await {
        Ok(p) => Ok(p),
        Err(Refusal::Forbidden(role)) => {
            // Who it is, for the page (the refusal is audited already).
            let p = call.require(state, Role::Viewer).await.ok();
            Err(refused(Refusal::Forbidden(role), p.as_ref()))
        }
        Err(r) => Err(refused(r, None)),
    }
}

/// An API error answer (JSON) as a page.
async fn as_page(r: Response, p: &Principal, title: &str) -> Response {
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .unwrap_or("the request failed")
        .to_string();
    html(
        status,
        layout(
            title,
            Section::None,
            who(p),
            &format!("<h1>{}</h1>{}", esc(title), notice("bad", &message)),
        ),
    )
}

/// A form posted from another site is refused (with the `SameSite` cookie it would not be
/// signed in anyway).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

fn cross_site() -> Response {
    html(
        StatusCode::FORBIDDEN,
        layout(
            "Refused",
            Section::None,
            None,
            &notice("bad", "A form posted from another site is refused."),
        ),
    )
}

async fn login_form() -> Response {
    html(
        StatusCode::OK,
        layout("Sign in", Section::None, None, &login_body(None)),
    )
}

fn login_body(error: Option<&str>) -> String {
    format!(
        "<h1>Sign in</h1>{}<form method=\"post\" action=\"/ui/login\"><p><label>Admin token<input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label></p><p><button type=\"submit\">Sign in</button></p></form><p class=\"muted\">A token of <code>[admin.tokens]</code>: <code>switchyard token new</code> makes one.</p>",
        error.map(|e| notice("bad", e)).unwrap_or_default()
    )
}

async fn login(State(state): S, headers: HeaderMap, call: Call, Form(f): Fields) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let token = f
        .get("token")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let checked = Call {
        token: Some(token.clone()),
        ..call
    };
    match checked.require(&state, Role::Viewer).await {
        Ok(p) => {
            let _ = checked
                .audit(&state, &p, "sign in (console)", 0, "ok")
                .await;
            let mut r = Redirect::to("/ui").into_response();
            let secure = if state.config().admin.tls.is_some() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}"
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(Refusal::TooManyFailures) => refused(Refusal::TooManyFailures, None),
        Err(_) => html(
            StatusCode::UNAUTHORIZED,
            layout(
                "Sign in",
                Section::None,
                None,
                &login_body(Some(
                    "That token is not one of this instance's admin tokens.",
                )),
            ),
        ),
    }
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("switchyard_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// Records produced per second, from the daemon's counters (between two looks, at least 1 s
/// apart).
fn records_per_second(state: &AdminState) -> Option<f64> {
    let total: f64 = crate::telemetry::metrics::render()
        .lines()
        .filter(|l| l.starts_with(crate::telemetry::metrics::RECORDS_PRODUCED_TOTAL))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let now = std::time::Instant::now();
    let mut last = state
        .rate
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rate = match *last {
        Some((at, before, _)) if now.duration_since(at) >= Duration::from_secs(1) => {
            Some((total - before).max(0.0) / now.duration_since(at).as_secs_f64())
        }
        Some((_, _, rate)) => rate,
        None => None,
    };
    if last.is_none_or(|(at, _, _)| now.duration_since(at) >= Duration::from_secs(1)) {
        *last = Some((now, total, rate));
    }
    rate
}

async fn overview(State(state): S, call: Call) -> Response {
    let p = match caller(&state, &call, Role::Viewer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let _ = call.audit(&state, &p, "read", 0, "200").await;
    let mut body = String::from("<h1>Overview</h1>");
    let stats = state.store.dead_letters().stats().await.unwrap_or_default();
    let count = |s: Status| {
        stats
            .iter()
            .filter(|r| r.status == s)
            .map(|r| r.count)
            .sum::<i64>()
    };
    let rate = records_per_second(&state);
    let _ = write!(
        body,
        "<div class=\"cards\"><div class=\"card\"><div class=\"n\">{}</div><a href=\"/ui/dead-letters\">pending dead letters</a></div><div class=\"card\"><div class=\"n\">{}</div>replayed</div><div class=\"card\"><div class=\"n\">{}</div>discarded</div><div class=\"card\"><div class=\"n\">{}</div>records per second to Kafka</div></div>",
        count(Status::Pending),
        count(Status::Replayed),
        count(Status::Discarded),
        rate.map_or_else(|| "–".to_string(), |r| format!("{r:.1}")),
    );
    // Failures per hour over the last day (dead letters by the time of their last failure).
    let day = now_micros() - 24 * 3_600_000_000;
    let recent = state
        .store
        .dead_letters()
        .list(&Selector {
            since: Some(day),
            limit: Some(OVERVIEW_COUNTED),
            ..Selector::default()
        })
        .await
        .unwrap_or_default();
    let mut counts = vec![0u64; 24];
    for d in &recent {
        let hour = usize::try_from((d.last_failed_at - day) / 3_600_000_000)
            .unwrap_or(0)
            .min(23);
        counts[hour] += 1;
    }
    let labels: Vec<String> = (0..24).map(|h| format!("{} h ago", 24 - h)).collect();
    let _ = write!(
        body,
        "<h2>Dead letters in the last 24 hours</h2><figure>{}<figcaption class=\"muted\">By the hour of their last failure, oldest on the left: {}{} in all.</figcaption></figure>",
        graph::bars(
            "Dead letters per hour over the last 24 hours",
            &labels,
            &counts
        ),
        if recent.len() == OVERVIEW_COUNTED {
            "at least "
        } else {
            ""
        },
        recent.len()
    );
    body.push_str("<h2>By route, class and status</h2><table><thead><tr><th scope=\"col\">Route</th><th scope=\"col\">Class</th><th scope=\"col\">Status</th><th scope=\"col\" class=\"num\">Count</th></tr></thead><tbody>");
    for r in &stats {
        let link = format!(
            "/ui/dead-letters?route={}&class={}&status={}",
            esc(&r.route),
            esc(&r.class),
            r.status.as_str()
        );
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\"><a href=\"{link}\">{}</a></td></tr>",
            esc(&r.route),
            esc(&r.class),
            status(r.status.as_str()),
            r.count
        );
    }
    if stats.is_empty() {
        body.push_str("<tr><td colspan=\"4\" class=\"muted\">No dead letters.</td></tr>");
    }
    body.push_str("</tbody></table>");
    let config = state.config();
    if config
        .sources
        .values()
        .any(|s| matches!(s.kind, crate::config::SourceKind::Postgres(_)))
    {
        body.push_str("<h2>Replication slots</h2>");
        match tokio::time::timeout(
            Duration::from_secs(3),
            crate::source::postgres::slot::status(&config),
        )
        .await
        {
            Ok(Ok(slots)) => {
                body.push_str("<table><thead><tr><th scope=\"col\">Source</th><th scope=\"col\">Slot</th><th scope=\"col\">Active</th><th scope=\"col\">Confirmed</th><th scope=\"col\" class=\"num\">Lag (bytes)</th><th scope=\"col\">WAL</th></tr></thead><tbody>");
                for s in slots {
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                        esc(&s.source),
                        esc(&s.slot),
                        s.active.map_or("missing".to_string(), |a| a.to_string()),
                        esc(s.confirmed_lsn.as_deref().unwrap_or("–")),
                        s.lag_bytes.map_or("–".to_string(), |l| l.to_string()),
                        esc(s.wal_status.as_deref().unwrap_or("–"))
                    );
                }
                body.push_str("</tbody></table>");
            }
            Ok(Err(e)) => body.push_str(&notice(
                "bad",
                &format!("The slots could not be read: {e:#}"),
            )),
            Err(_) => body.push_str(&notice(
                "bad",
                "A source's database did not answer within 3 s.",
            )),
        }
    }
    html(
        StatusCode::OK,
        layout("Overview", Section::Overview, who(&p), &body),
    )
}

async fn list(State(state): S, call: Call, Query(q): Query<HashMap<String, String>>) -> Response {
    let p = match caller(&state, &call, Role::Viewer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let get = |k: &str| q.get(k).cloned().filter(|v| !v.is_empty());
    let query = ListQuery {
        source: get("source"),
        route: get("route"),
        class: get("class"),
        status: get("status"),
        since: get("since"),
        until: None,
        limit: Some(50),
        after_id: get("after_id").and_then(|a| a.parse().ok()),
    };
    let _ = call.audit(&state, &p, "read", 0, "200").await;
    let mut body = String::from("<h1>Dead letters</h1>");
    let config = state.config();
    let sources: Vec<&str> = config.sources.keys().map(String::as_str).collect();
    let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    let status_now = query.status.clone().unwrap_or_else(|| "pending".into());
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/ui/dead-letters\" role=\"search\" aria-label=\"Filter dead letters\">{}{}{}<label>Status<select name=\"status\">{}</select></label>{}<button type=\"submit\">Filter</button></form>",
        select(
            "source",
            "Source",
            &sources,
            query.source.as_deref().unwrap_or("")
        ),
        select(
            "route",
            "Route",
            &routes,
            query.route.as_deref().unwrap_or("")
        ),
        select(
            "class",
            "Class",
            CLASSES,
            query.class.as_deref().unwrap_or("")
        ),
        ["pending", "replayed", "discarded", "all"]
            .iter()
            .map(|s| format!(
                "<option{}>{s}</option>",
                if *s == status_now { " selected" } else { "" }
            ))
            .collect::<String>(),
        input(
            "since",
            "Since (1h, 2d or a time)",
            query.since.as_deref().unwrap_or("")
        ),
    );
    let selector = match query.selector() {
        Ok(s) => s,
        Err(e) => {
            body.push_str(&notice("bad", &e));
            return html(
                StatusCode::BAD_REQUEST,
                layout("Dead letters", Section::DeadLetters, who(&p), &body),
            );
        }
    };
    let page = match api::page(&state, &selector).await {
        Ok(v) => v,
        Err(r) => return as_page(r, &p, "Dead letters").await,
    };
    let items = page["items"].as_array().cloned().unwrap_or_default();
    body.push_str("<table><thead><tr><th scope=\"col\" class=\"num\">Id</th><th scope=\"col\">Last failed</th><th scope=\"col\">Source</th><th scope=\"col\">Route</th><th scope=\"col\">Class</th><th scope=\"col\">Status</th><th scope=\"col\" class=\"num\">Tries</th><th scope=\"col\">Error</th></tr></thead><tbody>");
    for d in &items {
        let msg: String = d["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(100)
            .collect();
        let _ = write!(
            body,
            "<tr><td class=\"num\"><a href=\"/ui/dead-letters/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(d["last_failed_at"].as_str().unwrap_or("")),
            esc(d["source"].as_str().unwrap_or("")),
            esc(d["route"].as_str().unwrap_or("–")),
            esc(d["class"].as_str().unwrap_or("")),
            status(d["status"].as_str().unwrap_or("")),
            d["attempts"],
            esc(&msg),
            id = d["id"],
        );
    }
    if items.is_empty() {
        body.push_str("<tr><td colspan=\"8\" class=\"muted\">No dead letters match.</td></tr>");
    }
    body.push_str("</tbody></table>");
    if let Some(next) = page["next_after_id"].as_i64() {
        let mut link = format!(
            "/ui/dead-letters?after_id={next}&status={}",
            esc(&status_now)
        );
        for k in ["source", "route", "class", "since"] {
            if let Some(v) = get(k) {
                let _ = write!(link, "&{k}={}", esc(&v));
            }
        }
        let _ = write!(body, "<p><a href=\"{link}\" rel=\"next\">Next page</a></p>");
    }
    // A dry run of the whole selection (pending entries only), for operators.
    if p.role >= Role::Operator && status_now == "pending" && !items.is_empty() {
        let _ = write!(
            body,
            "<h2>Replay this selection</h2><form method=\"post\" action=\"/ui/replays\">{}{}{}{}{}{}<button type=\"submit\">Dry run…</button> <span class=\"muted\">shows what would be produced and what would fail; nothing is sent until you confirm</span></form>",
            hidden("all", "true"),
            hidden("dry_run", "true"),
            hidden("source", query.source.as_deref().unwrap_or("")),
            hidden("route", query.route.as_deref().unwrap_or("")),
            hidden("class", query.class.as_deref().unwrap_or("")),
            hidden("since", query.since.as_deref().unwrap_or("")),
        );
    }
    html(
        StatusCode::OK,
        layout("Dead letters", Section::DeadLetters, who(&p), &body),
    )
}

async fn entry(
    State(state): S,
    call: Call,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let raw = q.get("raw").is_some_and(|v| v == "true");
    let p = match caller(&state, &call, if raw { Role::Admin } else { Role::Viewer }).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let v = match api::entry(&state, &call, id, raw).await {
        Ok(v) => v,
        Err(r) => return as_page(r, &p, &format!("Dead letter {id}")).await,
    };
    let mut body = format!("<h1>Dead letter {id}</h1>");
    // Fixed texts only: a link cannot put words in the console's mouth.
    if q.get("notice").is_some_and(|m| m == "discarded") {
        body.push_str(&notice("ok", "Discarded."));
    }
    let _ = write!(
        body,
        "<dl class=\"kv\"><dt>Status</dt><dd>{}</dd><dt>Source</dt><dd>{}</dd><dt>Route</dt><dd>{}</dd><dt>Event id</dt><dd>{}</dd><dt>Class</dt><dd>{}</dd><dt>Attempts</dt><dd>{}</dd><dt>First failed</dt><dd>{}</dd><dt>Last failed</dt><dd>{}</dd><dt>Replayed</dt><dd>{} times</dd><dt>Resolution</dt><dd>{}</dd></dl><h2>Error</h2><pre>{}</pre>",
        status(v["status"].as_str().unwrap_or("")),
        esc(v["source"].as_str().unwrap_or("")),
        esc(v["route"].as_str().unwrap_or("–")),
        esc(v["event_id"].as_str().unwrap_or("")),
        esc(v["class"].as_str().unwrap_or("")),
        v["attempts"],
        esc(v["first_failed_at"].as_str().unwrap_or("")),
        esc(v["last_failed_at"].as_str().unwrap_or("")),
        v["replay_count"],
        esc(v["resolution"].as_str().unwrap_or("–")),
        esc(v["message"].as_str().unwrap_or("")),
    );
    let payload = serde_json::to_string_pretty(&v["event"]).unwrap_or_default();
    let which = if raw {
        "as stored (raw; this view is in the audit trail)".to_string()
    } else {
        "with the masks of its source's routes applied".to_string()
    };
    let _ = write!(
        body,
        "<h2>Payload</h2><p class=\"muted\">{}</p><pre>{}</pre>",
        esc(&which),
        esc(&payload)
    );
    if !raw && p.role >= Role::Admin {
        let _ = write!(
            body,
            "<p><a href=\"/ui/dead-letters/{id}?raw=true\">Show the raw payload</a> <span class=\"muted\">(recorded in the audit trail)</span></p>"
        );
    }
    if p.role >= Role::Operator && v["status"] == "pending" {
        let _ = write!(
            body,
            "<h2>Act on it</h2><form method=\"post\" action=\"/ui/replays\">{}{}<button type=\"submit\">Replay (dry run first)…</button></form>\
             <form method=\"post\" action=\"/ui/dead-letters/{id}/discard\"><p><label>Reason to discard<input name=\"reason\" required></label></p><p><button class=\"danger\" type=\"submit\">Discard</button></p></form>",
            hidden("ids", &id.to_string()),
            hidden("dry_run", "true"),
        );
    }
    html(
        StatusCode::OK,
        layout(
            &format!("Dead letter {id}"),
            Section::DeadLetters,
            who(&p),
            &body,
        ),
    )
}

async fn discard(
    State(state): S,
    headers: HeaderMap,
    call: Call,
    Path(id): Path<i64>,
    Form(f): Fields,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let p = match caller(&state, &call, Role::Operator).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let b = SelectionBody {
        ids: vec![id],
        reason: f.get("reason").cloned(),
        ..SelectionBody::default()
    };
    match api::discard_selected(&state, &call, &b).await {
        Ok(_) => Redirect::to(&format!("/ui/dead-letters/{id}?notice=discarded")).into_response(),
        Err(r) => as_page(r, &p, "Discard").await,
    }
}

async fn audit(State(state): S, call: Call) -> Response {
    let p = match caller(&state, &call, Role::Viewer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let _ = call.audit(&state, &p, "read", 0, "200").await;
    let mut body = String::from("<h1>Audit trail</h1>");
    match state.store.audit_trail().verify().await {
        Ok(v) if v.broken.is_none() => body.push_str(&notice(
            "ok",
            &format!(
                "The chain is intact: {} rows verified ({} from before the chain). Last hash {}.",
                v.verified, v.unchained, v.last_hash
            ),
        )),
        Ok(v) => {
            let b = v.broken.unwrap_or(crate::store::audit::BrokenLink {
                id: 0,
                reason: String::new(),
            });
            body.push_str(&notice(
                "bad",
                &format!("The chain is BROKEN at row {}: {}", b.id, b.reason),
            ));
        }
        Err(e) => body.push_str(&notice("bad", &format!("The trail could not be read: {e}"))),
    }
    let rows = state
        .store
        .audit_trail()
        .newest(200)
        .await
        .unwrap_or_default();
    body.push_str("<table><thead><tr><th scope=\"col\" class=\"num\">Row</th><th scope=\"col\">When</th><th scope=\"col\">Who</th><th scope=\"col\">Role</th><th scope=\"col\">Action</th><th scope=\"col\">On</th><th scope=\"col\" class=\"num\">Count</th><th scope=\"col\">Result</th><th scope=\"col\">From</th></tr></thead><tbody>");
    for r in &rows {
        let e = &r.entry;
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            r.id,
            esc(&format_time(e.at)),
            esc(&e.actor),
            esc(&e.role),
            esc(&e.action),
            esc(&e.selector),
            e.count,
            esc(&e.result),
            esc(&e.peer),
        );
    }
    body.push_str("</tbody></table><p class=\"muted\">The newest 200 rows. All of them: <code>GET /api/v1/audit?limit=1000</code> or <code>switchyard dlq audit</code>.</p>");
    html(
        StatusCode::OK,
        layout("Audit trail", Section::Audit, who(&p), &body),
    )
}

async fn routes_page(State(state): S, call: Call) -> Response {
    let p = match caller(&state, &call, Role::Viewer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let _ = call.audit(&state, &p, "read", 0, "200").await;
    let config = state.config();
    let mut body = String::from("<h1>Routes and lineage</h1>");
    body.push_str(&graph::svg(&crate::catalog::lineage_json(&config, None)));
    body.push_str("<h2>Topics</h2><table><thead><tr><th scope=\"col\">Topic</th><th scope=\"col\">Source</th><th scope=\"col\">Route</th><th scope=\"col\">Carries</th><th scope=\"col\">Key</th></tr></thead><tbody>");
    for t in crate::catalog::topics_json(&config) {
        let carries: Vec<&str> = t["carries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(t["topic"].as_str().unwrap_or("")),
            esc(t["source"].as_str().unwrap_or("")),
            esc(t["route"].as_str().unwrap_or("")),
            esc(&carries.join(", ")),
            esc(t["key"].as_str().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table>");
    html(
        StatusCode::OK,
        layout("Routes and lineage", Section::Routes, who(&p), &body),
    )
}
