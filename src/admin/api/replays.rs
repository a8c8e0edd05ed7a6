//! `/api/v1/replays`: replay jobs — the CLI's `dlq replay`, run by the daemon, polled and
//! cancelled through the API (and the console).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{S, SelectionBody, bad_request, body, known_ids, ok, reader, refused_if_bad};
use crate::admin::jobs::State as JobState;
use crate::admin::{AdminState, Call};
use crate::config::admin::Role;
use crate::replay::{ReplayOptions, replay};
use crate::source::webhook::error;
use crate::store::Status;

/// Starts a replay job (`operator`): the CLI's replay, run by the daemon.
pub(crate) async fn replay_selected(
    state: &Arc<AdminState>,
    call: &Call,
    b: &SelectionBody,
) -> Result<Value, Response> {
    let who = call
        .require(state, Role::Operator)
        .await
        .map_err(|r| r.response())?;
    let parsed = b.selection().and_then(|s| Ok((s, b.rate()?)));
    let (sel, rate) = refused_if_bad(state, call, &who, "replay", parsed).await?;
    known_ids(state, call, &who, "replay", &sel.ids).await?;
    let action = if b.dry_run {
        "replay --dry-run"
    } else {
        "replay"
    };
    let Some(job) = state
        .jobs
        .start(who.name.clone(), sel.clone(), b.dry_run, rate)
    else {
        let _ = call
            .audit(state, &who, action, 0, "429 too many jobs")
            .await;
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_jobs",
            format!(
                "{} replays are running; wait for one to end or cancel one",
                crate::admin::jobs::MAX_RUNNING
            ),
        ));
    };
    if let Err(r) = call
        .audit(
            state,
            &who,
            &format!("{action} started"),
            0,
            &format!("job {}: {}", job.id, sel.describe()),
        )
        .await
    {
        job.finish(
            JobState::Failed,
            Some("the audit log cannot be written".into()),
        );
        return Err(r);
    }
    let mut selector = sel.selector();
    if b.force {
        selector.statuses.push(Status::Replayed);
    }
    let opts = ReplayOptions {
        selector,
        dry_run: b.dry_run,
        rate,
        force: b.force,
        cancel: Some(Arc::clone(&job.cancel)),
        ..ReplayOptions::default()
    };
    let answer = job.to_json(false);
    let (state2, job2) = (Arc::clone(state), Arc::clone(&job));
    let (who2, action2) = (who.clone(), action.to_string());
    let call2 = Call {
        token: None,
        client: None,
        peer: call.peer.clone(),
        request_id: call.request_id.clone(),
        what: call.what.clone(),
    };
    state.runtime.spawn(async move {
        let mut out = job2.output();
        let done = replay(&state2.store, &state2.pipeline, &opts, &mut out).await;
        let (state, message, count) = match done {
            Ok(report) => {
                let cancelled = job2.cancel.load(std::sync::atomic::Ordering::Relaxed);
                let mut message =
                    format!("delivered {}, failed {}", report.delivered, report.failed);
                if let Some(why) = &report.stopped {
                    message.push_str(&format!(
                        "; stopped, {} not delivered: {why}",
                        report.not_delivered
                    ));
                }
                (
                    if cancelled {
                        JobState::Cancelled
                    } else {
                        JobState::Done
                    },
                    message,
                    report.delivered + report.failed,
                )
            }
            Err(e) => (JobState::Failed, e.to_string(), 0),
        };
        if !opts.dry_run {
            state2.pipeline.sink().flush(Duration::from_secs(10));
        }
        job2.finish(state, Some(message.clone()));
        let _ = call2
            .audit(
                &state2,
                &who2,
                &action2,
                i64::try_from(count).unwrap_or(i64::MAX),
                &format!("job {}: {message}", job2.id),
            )
            .await;
    });
    Ok(answer)
}

pub(super) async fn start(State(state): S, call: Call, bytes: Bytes) -> Response {
    let b: SelectionBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => {
            if let Err(r) = call.require(&state, Role::Operator).await {
                return r.response();
            }
            return bad_request(e);
        }
    };
    match replay_selected(&state, &call, &b).await {
        Ok(v) => (StatusCode::ACCEPTED, axum::Json(v)).into_response(),
        Err(r) => r,
    }
}

pub(super) async fn list(State(state): S, call: Call) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    ok(json!(
        state
            .jobs
            .list()
            .iter()
            .map(|j| j.to_json(false))
            .collect::<Vec<_>>()
    ))
}

pub(super) async fn show(State(state): S, call: Call, Path(id): Path<u64>) -> Response {
    if let Err(r) = reader(&state, &call, Role::Viewer).await {
        return r;
    }
    match state.jobs.get(id) {
        Some(j) => ok(j.to_json(true)),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no replay job {id}"),
        ),
    }
}

pub(super) async fn cancel(State(state): S, call: Call, Path(id): Path<u64>) -> Response {
    let who = match call.require(&state, Role::Operator).await {
        Ok(w) => w,
        Err(r) => return r.response(),
    };
    let Some(job) = state.jobs.get(id) else {
        let _ = call.audit(&state, &who, "cancel replay", 0, "404").await;
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no replay job {id}"),
        );
    };
    if job.state() != JobState::Running {
        let _ = call
            .audit(&state, &who, "cancel replay", 0, "409 not running")
            .await;
        return error(
            StatusCode::CONFLICT,
            "not_running",
            format!("replay job {id} has ended"),
        );
    }
    if let Err(r) = call
        .audit(&state, &who, "cancel replay", 0, &format!("job {id}"))
        .await
    {
        return r;
    }
    job.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    (StatusCode::ACCEPTED, axum::Json(job.to_json(false))).into_response()
}
