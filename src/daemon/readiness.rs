//! Readiness, computed in the background and served from memory.
//!
//! A task asks Kafka for metadata and writes a timestamp to the dead-letter store every
//! [`PERIOD`] (each check bounded by [`CHECK_TIMEOUT`]) and keeps the latest outcome; a request
//! to `/readyz` reads that outcome with the in-memory states (stopping, sources) and never
//! touches Kafka or the store itself, so a burst of requests costs the store and the broker
//! nothing. A change is seen within `PERIOD + CHECK_TIMEOUT` (3 s); an outcome older than
//! [`STALE_AFTER`] (the checks themselves stuck) reads as not ready.
//!
//! Tested by `admin::readyz_bursts_do_not_write_to_the_store_and_still_follow_kafka`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::Pipeline;
use crate::pipeline::health::SourceHealth;
use crate::store::Store;

/// How often Kafka and the store are checked.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// The longest one check may take before it counts as failed.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The age past which the latest outcome is not trusted (the checks are stuck).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(10);

/// The outcome of one round of checks.
#[derive(Debug, Clone)]
struct Checked {
    /// `Err` with what Kafka's client said.
    kafka: Result<(), String>,
    /// `Err` with what the store said.
    dlq: Result<(), String>,
    /// When the round finished; `None` before the first one.
    at: Option<Instant>,
}

/// The latest readiness checks, shared by the listeners; cheap to clone.
#[derive(Clone)]
pub(crate) struct Readiness {
    latest: watch::Receiver<Checked>,
    /// Kafka away does not make this instance unready: a webhook source of it stores its
    /// events in the DLQ meanwhile (`when_unavailable = "dead_letter"`) and answers 200 — taken
    /// out of its Service it would leave senders that never retry (GitHub) with 503s instead.
    kafka_optional: bool,
}

impl Readiness {
    /// Starts checking `pipeline`'s Kafka and `dlq` in the background; the task runs until
    /// aborted.
    pub(crate) fn start(pipeline: Arc<Pipeline>, dlq: Arc<Store>) -> (Readiness, JoinHandle<()>) {
        let (tx, rx) = watch::channel(Checked {
            kafka: Err("not checked yet".into()),
            dlq: Err("not checked yet".into()),
            at: None,
        });
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let checked = check(&pipeline, &dlq).await;
                tx.send_replace(checked);
            }
        });
        (
            Readiness {
                latest: rx,
                kafka_optional: false,
            },
            task,
        )
    }

    /// Kafka away does not make this instance unready (see the field).
    pub(crate) fn with_kafka_optional(mut self, optional: bool) -> Readiness {
        self.kafka_optional = optional;
        self
    }

    /// Waits (up to `bound`) for the first round of checks, so that a daemon that has started
    /// answers from real outcomes.
    pub(crate) async fn first_round(&self, bound: Duration) {
        let mut latest = self.latest.clone();
        let _ = tokio::time::timeout(bound, latest.wait_for(|c| c.at.is_some())).await;
    }

    /// The `/readyz` answer: 200 when ready, else 503 naming what is not (see
    /// [`crate::daemon`] for what ready means).
    pub(crate) fn answer(&self, health: &SourceHealth, stopping: bool) -> Response {
        let Checked { kafka, dlq, at } = self.latest.borrow().clone();
        let (kafka, dlq) = match at.map(|at| at.elapsed()) {
            Some(age) if age > STALE_AFTER => {
                let stale = format!(
                    "the last check finished {}s ago (the readiness checks are stuck)",
                    age.as_secs()
                );
                (Err(stale.clone()), Err(stale))
            }
            _ => (kafka, dlq),
        };
        let sources = health.all();
        let mut not_ready = Vec::new();
        let mut details = Vec::new();
        if stopping {
            not_ready.push("switchyard".to_string());
            details.push("switchyard is shutting down".to_string());
        }
        if let Err(e) = &kafka
            && !self.kafka_optional
        {
            not_ready.push("kafka".to_string());
            details.push(format!("Kafka is not reachable: {e}"));
        }
        if let Err(e) = &dlq {
            not_ready.push("dlq".to_string());
            details.push(format!("the dead-letter store is not writable: {e}"));
        }
        for (name, h) in &sources {
            // A standby is healthy: another instance streams the slot, and this one takes over
            // when that one dies.
            if !matches!(h.state, "streaming" | "snapshotting" | "standby") {
                not_ready.push(format!("source:{name}"));
                details.push(match &h.error {
                    Some(e) => format!("source `{name}` is {}: {e}", h.state),
                    None => format!("source `{name}` is {}", h.state),
                });
            }
        }
        let mut body = json!({
            "status": if not_ready.is_empty() { "ready" } else { "not_ready" },
            "kafka": kafka.err().unwrap_or_else(|| "ok".into()),
            "dlq": dlq.err().unwrap_or_else(|| "ok".into()),
            "sources": sources,
        });
        if not_ready.is_empty() {
            return axum::Json(body).into_response();
        }
        // The error fields every error answer has, beside the component states.
        let detail = details.join("; ");
        body["not_ready"] = json!(not_ready);
        body["error"] = json!("not_ready");
        body["detail"] = json!(detail);
        body["message"] = json!(detail);
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// One round: Kafka answers a metadata request and the store takes a write, each within
/// [`CHECK_TIMEOUT`].
async fn check(pipeline: &Pipeline, dlq: &Store) -> Checked {
    // The metadata request has its own timeout; the outer one is a guard against a blocking
    // pool too busy to run it.
    let (kafka, dlq) = tokio::join!(
        tokio::time::timeout(
            CHECK_TIMEOUT + Duration::from_secs(1),
            pipeline.sink().is_reachable(CHECK_TIMEOUT)
        ),
        tokio::time::timeout(CHECK_TIMEOUT, dlq.check_writable())
    );
    let kafka = kafka.unwrap_or_else(|_| {
        Err(format!(
            "no answer within {}s",
            (CHECK_TIMEOUT + Duration::from_secs(1)).as_secs()
        ))
    });
    let dlq = match dlq {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    };
    Checked {
        kafka,
        dlq,
        at: Some(Instant::now()),
    }
}
