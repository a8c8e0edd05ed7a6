//! `/api/v1/backfills`: the CLI's `switchyard snapshot start|status|cancel`, through the API
//! (the same [`crate::source::postgres::backfill`] functions).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{S, bad_request, ok, reader, store_error};
use crate::admin::Call;
use crate::config::admin::Role;
use crate::source::webhook::error;
use crate::store::dead_letters::select::parse_rate;

/// `POST /api/v1/backfills` body: `switchyard snapshot start`'s flags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    source: String,
    table: String,
    #[serde(rename = "where")]
    filter: Option<String>,
    rate: Option<Value>,
    chunk_rows: Option<usize>,
}

pub(super) async fn start(State(state): S, call: Call, bytes: Bytes) -> Response {
    use crate::source::postgres::backfill::{self, RequestError};
    let who = match call.require(&state, Role::Operator).await {
        Ok(w) => w,
        Err(r) => return r.response(),
    };
    let b: BackfillBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            let _ = call.audit(&state, &who, "backfill start", 0, "400").await;
            return bad_request(format!(
                "the JSON body: {e} (fields: source, table, where, rate, chunk_rows)"
            ));
        }
    };
    let rate = match &b.rate {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => parse_rate(&n.to_string()).ok(),
        Some(Value::String(r)) => match parse_rate(r) {
            Ok(r) => Some(r),
            Err(e) => return bad_request(e),
        },
        Some(other) => return bad_request(format!("rate {other} is not a rate")),
    };
    let req = backfill::Request {
        source: b.source,
        table: b.table,
        filter: b.filter.filter(|f| !f.trim().is_empty()),
        rate,
        chunk_rows: b.chunk_rows.unwrap_or(backfill::DEFAULT_CHUNK_ROWS),
        by: who.name.clone(),
    };
    let described = req.describe();
    if let Err(r) = call
        .audit(&state, &who, "backfill start requested", 0, &described)
        .await
    {
        return r;
    }
    let config = state.config();
    match backfill::request(&config, &state.store, &req).await {
        Ok(started) => {
            let _ = call
                .audit(
                    &state,
                    &who,
                    "backfill start",
                    0,
                    &format!("requested {}", started.id),
                )
                .await;
            (StatusCode::ACCEPTED, axum::Json(json!(started))).into_response()
        }
        Err(e) => {
            let status = match &e {
                RequestError::UnknownSource(_) => StatusCode::NOT_FOUND,
                RequestError::Busy { .. } => StatusCode::CONFLICT,
                RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
                RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let _ = call
                .audit(
                    &state,
                    &who,
                    "backfill start",
                    0,
                    &format!("{} {e}", status.as_u16()),
                )
                .await;
            error(status, "backfill_refused", e.to_string())
        }
    }
}

pub(super) async fn status(State(state): S, call: Call, Path(source): Path<String>) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    match crate::source::postgres::backfill::status(&state.store, &source).await {
        Ok(v) => ok(v),
        Err(e) => store_error(e),
    }
}

pub(super) async fn cancel(State(state): S, call: Call, Path(source): Path<String>) -> Response {
    let who = match call.require(&state, Role::Operator).await {
        Ok(w) => w,
        Err(r) => return r.response(),
    };
    if let Err(r) = call
        .audit(&state, &who, "backfill cancel requested", 0, &source)
        .await
    {
        return r;
    }
    match crate::source::postgres::backfill::cancel(&state.store, &source).await {
        Ok(c) if c.is_empty() => error(
            StatusCode::CONFLICT,
            "not_running",
            format!("source `{source}` has no backfill running or queued"),
        ),
        Ok(c) => {
            let rows = c.running.as_ref().map_or(0, |b| b.rows);
            let _ = call
                .audit(
                    &state,
                    &who,
                    "backfill cancel",
                    i64::try_from(rows).unwrap_or(0),
                    &c.describe(),
                )
                .await;
            let mut v = c
                .running
                .as_ref()
                .map_or_else(|| json!({"state": "none"}), |b| json!(b));
            let queued: Vec<String> = c
                .queued
                .iter()
                .map(|q| format!("{}.{}", q.schema, q.table))
                .collect();
            v["unqueued"] = json!(queued);
            (StatusCode::ACCEPTED, axum::Json(v)).into_response()
        }
        Err(e) => store_error(e),
    }
}
