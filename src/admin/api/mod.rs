//! The admin API's handlers (`/api/v1`). Each checks the caller's role first
//! ([`super::Call::require`]) and records the call in the audit trail.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

mod backfills;
mod replays;

pub(crate) use replays::replay_selected;

use super::{AdminState, Call};
use crate::config::admin::Role;
use crate::event::Event;
use crate::source::webhook::error;
use crate::store::dead_letters::select::{Selection, parse_class, parse_rate, parse_time};
use crate::store::{DeadLetter, Selector, Status};

type S = State<Arc<AdminState>>;

/// The routes under `/api/v1`.
pub(crate) fn routes(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/dead-letters", get(list))
        .route("/api/v1/dead-letters/stats", get(stats))
        .route("/api/v1/dead-letters/discard", post(discard))
        .route("/api/v1/dead-letters/{id}", get(show))
        .route("/api/v1/replays", get(replays::list).post(replays::start))
        .route(
            "/api/v1/replays/{id}",
            get(replays::show).delete(replays::cancel),
        )
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/routes", get(topics))
        .route("/api/v1/lineage", get(lineage))
        .route("/api/v1/slots", get(slots))
        .route("/api/v1/slots/{source}/reset", post(reset_slot))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/backfills", post(backfills::start))
        .route(
            "/api/v1/backfills/{source}",
            get(backfills::status).delete(backfills::cancel),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn(guard))
}

/// The API authenticates by `Authorization: Bearer` or a client certificate, never by the
/// console's cookie; a request that changes something on the strength of a client certificate
/// alone (which a browser presents by itself) must be `application/json` from the same origin:
/// a page elsewhere cannot make a browser act.
async fn guard(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    request.headers_mut().remove(axum::http::header::COOKIE);
    let h = request.headers();
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    // A client certificate is the only credential a browser sends by itself (cookies are
    // removed above): a request that relies on one must be JSON from this origin.
    let ambient = request
        .extensions()
        .get::<crate::serve::ClientCertificate>()
        .is_some();
    if changes && ambient && !h.contains_key(axum::http::header::AUTHORIZATION) {
        let json = h
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let host = h
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let same_origin = h
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|o| o == format!("https://{host}") || o == format!("http://{host}"));
        if !json || !same_origin {
            return error(
                StatusCode::FORBIDDEN,
                "cross_site",
                "without a bearer token, a request that changes something must be application/json from this origin".into(),
            );
        }
    }
    next.run(request).await
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

fn store_error(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("the DLQ store: {e}"),
    )
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// Checks the role and records a read; the caller, or the answer to give.
async fn reader(
    state: &AdminState,
    call: &Call,
    needed: Role,
) -> Result<super::Principal, Response> {
    let who = call
        .require(state, needed)
        .await
        .map_err(|r| r.response())?;
    // A read is recorded but not refused when the log cannot be written.
    let _ = call.audit(state, &who, "read", 0, "200").await;
    Ok(who)
}

async fn openapi() -> Response {
    ok(super::openapi::document())
}

async fn whoami(State(state): S, call: Call) -> Response {
    match reader(&state, &call, Role::Viewer).await {
        Ok(who) => ok(json!({"name": who.name, "role": who.role.as_str()})),
        Err(r) => r,
    }
}

/// Query of `GET /api/v1/dead-letters`: the CLI's `dlq list` filters, and a page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub source: Option<String>,
    pub route: Option<String>,
    pub class: Option<String>,
    /// `pending` (default), `replayed`, `discarded` or `all`.
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Entries after this id (the `next_after_id` of the previous page).
    pub after_id: Option<i64>,
}

impl ListQuery {
    /// The store's selector, or what is wrong with the query.
    pub(crate) fn selector(&self) -> Result<Selector, String> {
        let statuses = match self.status.as_deref().unwrap_or("pending") {
            "all" => Vec::new(),
            s => vec![s.parse::<Status>().map_err(|e| e.to_string())?],
        };
        if let Some(c) = &self.class {
            parse_class(c)?;
        }
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(format!("limit {limit} is not between 1 and 1000"));
        }
        Ok(Selector {
            ids: Vec::new(),
            route: self.route.clone().filter(|s| !s.is_empty()),
            source: self.source.clone().filter(|s| !s.is_empty()),
            class: self.class.clone().filter(|s| !s.is_empty()),
            statuses,
            since: self
                .since
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()?,
            until: self
                .until
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()?,
            limit: Some(limit),
            after_id: self.after_id,
        })
    }
}

/// One page of dead letters and the cursor of the next.
pub(crate) async fn page(state: &AdminState, selector: &Selector) -> Result<Value, Response> {
    let items = state
        .store
        .dead_letters()
        .list(selector)
        .await
        .map_err(store_error)?;
    let next = (Some(items.len()) == selector.limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(json!({
        "items": items.iter().map(crate::store::dead_letters::view::summary).collect::<Vec<_>>(),
        "next_after_id": next,
    }))
}

async fn list(
    State(state): S,
    call: Call,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    let Ok(Query(q)) = query else {
        return bad_request(
            "unknown or malformed query parameter; the parameters are source, route, class, status, since, until, limit, after_id",
        );
    };
    let selector = match q.selector() {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    match page(&state, &selector).await {
        Ok(v) => ok(v),
        Err(r) => r,
    }
}

async fn stats(State(state): S, call: Call) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    match state.store.dead_letters().stats().await {
        Ok(rows) => ok(json!(rows)),
        Err(e) => store_error(e),
    }
}

/// The masks of every route of the entry's source applied to its event (drops and renames
/// are not: a viewer sees every field, masked where any route masks it).
pub(crate) fn masked(state: &AdminState, dl: &DeadLetter) -> Option<Event> {
    let event = dl.event.as_ref()?;
    let masks = state.pipeline.routes().masks(&dl.source, None);
    let mut out = crate::router::transform::mask_event(event, &masks, false);
    // Masks name JSON fields: a body they cannot apply to (not JSON) is not shown at all.
    if !masks.is_empty()
        && let crate::event::Payload::Webhook(w) = &mut out.payload
        && serde_json::from_str::<Value>(&w.body).is_err()
    {
        w.body = "[hidden: the body is not JSON, so its source's masks cannot apply; admins see it with raw=true]".into();
    }
    Some(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// The payload as stored, unmasked (`admin` only; audited).
    #[serde(default)]
    raw: bool,
}

/// One dead letter: masked for viewers and operators; raw for admins who ask (audited first).
pub(crate) async fn entry(
    state: &AdminState,
    call: &Call,
    id: i64,
    raw: bool,
) -> Result<Value, Response> {
    let needed = if raw { Role::Admin } else { Role::Viewer };
    let who = call
        .require(state, needed)
        .await
        .map_err(|r| r.response())?;
    let dl = state
        .store
        .dead_letters()
        .get(id)
        .await
        .map_err(store_error)?;
    let Some(dl) = dl else {
        let _ = call.audit(state, &who, "read", 0, "404").await;
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead letter with id {id}"),
        ));
    };
    if raw {
        call.audit(
            state,
            &who,
            "view raw payload",
            1,
            &format!("dead letter {id}"),
        )
        .await?;
        return Ok(crate::store::dead_letters::view::detail(
            &dl,
            dl.event.as_ref(),
        ));
    }
    let _ = call.audit(state, &who, "read", 1, "200 masked").await;
    let mut v = crate::store::dead_letters::view::detail(&dl, masked(state, &dl).as_ref());
    v["masked"] = json!(true);
    Ok(v)
}

async fn show(
    State(state): S,
    call: Call,
    Path(id): Path<i64>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let raw = query.map(|Query(q)| q.raw).unwrap_or(false);
    match entry(&state, &call, id, raw).await {
        Ok(v) => ok(v),
        Err(r) => r,
    }
}

/// Ids one request may name.
const MAX_IDS: usize = 1000;

/// A selection as JSON (`POST` bodies): the CLI's `--id`, `--route`, … with times as
/// durations ago or RFC 3339.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelectionBody {
    #[serde(default)]
    pub ids: Vec<i64>,
    pub route: Option<String>,
    pub class: Option<String>,
    #[serde(default)]
    pub all: bool,
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    /// Replay: change nothing, say what would happen.
    #[serde(default)]
    pub dry_run: bool,
    /// Replay: entries per second (`50/s` or a number).
    pub rate: Option<Value>,
    /// Replay: also entries already replayed.
    #[serde(default)]
    pub force: bool,
    /// Discard: why (required).
    pub reason: Option<String>,
}

impl SelectionBody {
    fn selection(&self) -> Result<Selection, String> {
        if self.ids.len() > MAX_IDS {
            return Err(format!(
                "{} ids: at most {MAX_IDS} at once (select by route, class or source for more)",
                self.ids.len()
            ));
        }
        let s = Selection {
            ids: self.ids.clone(),
            route: self.route.clone().filter(|s| !s.is_empty()),
            class: self.class.clone().filter(|s| !s.is_empty()),
            all: self.all,
            source: self.source.clone().filter(|s| !s.is_empty()),
            since: self
                .since
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()?,
            until: self
                .until
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()?,
            limit: self.limit,
        };
        s.check()?;
        Ok(s)
    }

    fn rate(&self) -> Result<Option<f64>, String> {
        match &self.rate {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => parse_rate(&n.to_string()).map(Some),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => parse_rate(s).map(Some),
            Some(other) => Err(format!("rate {other} is not a rate; write e.g. \"50/s\"")),
        }
    }
}

fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> Result<T, String> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("the JSON body: {e}"))
}

/// `parsed`, or a 400 (audited as `action`'s refusal).
async fn refused_if_bad<T>(
    state: &AdminState,
    call: &Call,
    who: &super::Principal,
    action: &str,
    parsed: Result<T, String>,
) -> Result<T, Response> {
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => {
            let _ = call.audit(state, who, action, 0, &format!("400 {e}")).await;
            Err(bad_request(e))
        }
    }
}

/// A 404 (audited) if one of `ids` names no dead letter: nothing of `action` is done then.
async fn known_ids(
    state: &AdminState,
    call: &Call,
    who: &super::Principal,
    action: &str,
    ids: &[i64],
) -> Result<(), Response> {
    let Some(missing) = first_unknown(state, ids).await? else {
        return Ok(());
    };
    let _ = call.audit(state, who, action, 0, "404").await;
    Err(error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no dead letter with id {missing}; nothing was done ({action})"),
    ))
}

/// The first of `ids` that names no dead letter.
async fn first_unknown(state: &AdminState, ids: &[i64]) -> Result<Option<i64>, Response> {
    if ids.is_empty() {
        return Ok(None);
    }
    let found = state
        .store
        .dead_letters()
        .list(&Selector {
            ids: ids.to_vec(),
            ..Selector::default()
        })
        .await
        .map_err(store_error)?;
    let found: std::collections::HashSet<i64> = found.iter().map(|d| d.id).collect();
    Ok(ids.iter().copied().find(|id| !found.contains(id)))
}

/// Discards the selected entries with a reason (`operator`).
pub(crate) async fn discard_selected(
    state: &AdminState,
    call: &Call,
    b: &SelectionBody,
) -> Result<Value, Response> {
    let who = call
        .require(state, Role::Operator)
        .await
        .map_err(|r| r.response())?;
    let reason = b.reason.clone().unwrap_or_default();
    if reason.trim().is_empty() {
        let _ = call.audit(state, &who, "discard", 0, "400 no reason").await;
        return Err(bad_request("a discard needs a reason: {\"reason\": \"…\"}"));
    }
    let sel = refused_if_bad(state, call, &who, "discard", b.selection()).await?;
    known_ids(state, call, &who, "discard", &sel.ids).await?;
    call.audit(state, &who, "discard requested", 0, &sel.describe())
        .await?;
    let n = state
        .store
        .dead_letters()
        .discard(&sel.selector(), &reason)
        .await
        .map_err(store_error)?;
    let _ = call
        .audit(
            state,
            &who,
            "discard",
            i64::try_from(n).unwrap_or(i64::MAX),
            &format!("discarded {n}: {reason} ({})", sel.describe()),
        )
        .await;
    Ok(json!({"discarded": n}))
}

async fn discard(State(state): S, call: Call, bytes: Bytes) -> Response {
    let b: SelectionBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => {
            // Refused for its body, but only after the caller was checked.
            if let Err(r) = call.require(&state, Role::Operator).await {
                return r.response();
            }
            return bad_request(e);
        }
    };
    match discard_selected(&state, &call, &b).await {
        Ok(v) => ok(v),
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit_log(
    State(state): S,
    call: Call,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    let limit = query
        .ok()
        .and_then(|Query(q)| q.limit)
        .unwrap_or(50)
        .clamp(1, 1000);
    match state.store.audit_trail().newest(limit).await {
        Ok(rows) => ok(json!(rows)),
        Err(e) => store_error(e),
    }
}

async fn audit_verify(State(state): S, call: Call) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    match state.store.audit_trail().verify().await {
        Ok(v) => ok(json!(v)),
        Err(e) => store_error(e),
    }
}

async fn topics(State(state): S, call: Call) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    ok(json!(crate::catalog::topics_json(&state.config())))
}

async fn lineage(State(state): S, call: Call) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    ok(crate::catalog::lineage_json(&state.config(), None))
}

async fn slots(State(state): S, call: Call) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    match tokio::time::timeout(
        Duration::from_secs(10),
        crate::source::postgres::slot::status(&state.config()),
    )
    .await
    {
        Ok(Ok(s)) => ok(json!(s)),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!("{e:#}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "a source's database did not answer within 10 s".into(),
        ),
    }
}

async fn reset_slot(State(state): S, call: Call, Path(source): Path<String>) -> Response {
    use crate::source::postgres::slot::Reset;
    let who = match call.require(&state, Role::Admin).await {
        Ok(w) => w,
        Err(r) => return r.response(),
    };
    if let Err(r) = call
        .audit(&state, &who, "slot reset requested", 0, &source)
        .await
    {
        return r;
    }
    let config = state.config();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        crate::source::postgres::slot::reset(&config, &source, |_| Ok(true)),
    )
    .await;
    let (status, v, result) = match outcome {
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "database_unavailable", "message": "the database did not answer within 30 s"}),
            "503".to_string(),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "database_unavailable", "message": format!("{e:#}")}),
            "503".to_string(),
        ),
        Ok(Ok(Reset::UnknownSource)) => (
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "message": format!("`{source}` is not a postgres source")}),
            "404".into(),
        ),
        Ok(Ok(Reset::InUse)) => (
            StatusCode::CONFLICT,
            json!({"error": "slot_in_use", "message": format!("the slot of `{source}` is in use: stop the instances streaming from it first")}),
            "409 in use".into(),
        ),
        Ok(Ok(Reset::Missing)) => (
            StatusCode::OK,
            json!({"dropped": false, "message": format!("the slot of `{source}` does not exist; the next start creates it")}),
            "missing".into(),
        ),
        Ok(Ok(Reset::Dropped(m))) => (
            StatusCode::OK,
            json!({"dropped": true, "message": m}),
            "dropped".into(),
        ),
    };
    let _ = call
        .audit(
            &state,
            &who,
            "slot reset",
            i64::from(v["dropped"] == true),
            &format!("{source}: {result}"),
        )
        .await;
    (status, axum::Json(v)).into_response()
}

async fn reload(State(state): S, call: Call) -> Response {
    let who = match call.require(&state, Role::Admin).await {
        Ok(w) => w,
        Err(r) => return r.response(),
    };
    if let Err(r) = call.audit(&state, &who, "reload requested", 0, "").await {
        return r;
    }
    let running = state.config();
    match crate::reload::reload_to(&state.pipeline, &running, &state.selections) {
        Ok(new) => {
            let n = new.routes.len();
            // Tokens and clients stay as at start (see operations.md).
            if let Ok(mut c) = state.config.write() {
                *c = Arc::new(Config {
                    admin: running.admin.clone(),
                    ..new
                });
            }
            let _ = call
                .audit(&state, &who, "reload", i64::try_from(n).unwrap_or(0), "ok")
                .await;
            ok(json!({"reloaded": true, "routes": n}))
        }
        Err(errors) => {
            let _ = call
                .audit(&state, &who, "reload", 0, "422 invalid configuration")
                .await;
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(
                    json!({"error": "invalid_configuration", "message": errors, "reloaded": false}),
                ),
            )
                .into_response()
        }
    }
}

use crate::config::Config;
