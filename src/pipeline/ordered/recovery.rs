//! How the ordered lane waits out a transient failure: it reports the source `blocked`, lets
//! the producer report every record it holds, backs off, and hands over again everything from
//! the first undelivered record on, in order (see the parent module's doc).

use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::{OutState, Position, Worker};

/// Since when the source has been held by a transient failure, by what, and the state to go
/// back to.
pub(super) struct Blocked {
    pub(super) since: Instant,
    pub(super) cause: Cause,
    pub(super) resume: &'static str,
}

/// What holds a blocked source: only its own success unblocks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The schema registry (an encode waits).
    Registry,
    /// Kafka (records wait to be handed over again).
    Kafka,
}

impl Worker {
    /// Hands over again everything from the earliest failed record on, once the producer has
    /// reported every record it holds; retried without limit (the source is `blocked`
    /// meanwhile). False when the lane closed.
    pub(super) async fn recover(&mut self) -> bool {
        loop {
            // 1. Every record still with the producer is reported first: none may land after
            //    a record handed over again.
            while !self.sent.is_empty() {
                let next = tokio::select! {
                    r = self.sent.next() => r,
                    _ = self.closing.changed() => return false,
                };
                if let Some(r) = next {
                    self.reported(r).await;
                }
            }
            let Some((from, attempt)) = self.resend_from.take() else {
                return true;
            };
            let topic = self
                .out(from)
                .map(|o| o.record.topic.clone())
                .unwrap_or_default();
            // 2. Act on it (a new producer, the topic created again). Definite failures never
            //    get here ([`Worker::failed`] handles them).
            let reason = match self.pipeline.sink().recover(&topic, attempt).await {
                Ok(reason) | Err((_, reason)) => reason,
            };
            let reason = format!("Kafka does not take records (topic `{topic}`): {reason}");
            // 3. Back off.
            let mut backoff = std::mem::replace(&mut self.kafka_backoff, unbounded_backoff());
            let waited = self.wait_blocked(Cause::Kafka, &reason, &mut backoff).await;
            self.kafka_backoff = backoff;
            if !waited {
                return false;
            }
            // 4. Everything from the failed record on, in order.
            self.resend_everything_after(from);
            let positions: Vec<Position> = self.waiting_from(from);
            info!(source = %self.source, records = positions.len(), "handing records over to Kafka again, in order");
            for at in positions {
                self.hand_over(at).await;
                if self.resend_from.is_some() {
                    break;
                }
            }
            if self.resend_from.is_none() {
                return true;
            }
        }
    }

    /// Marks every record from `from` on that is not in the DLQ as waiting for a hand-over.
    fn resend_everything_after(&mut self, from: Position) {
        let Some(first) = self.index(from.0) else {
            return;
        };
        for (k, p) in self.window.iter_mut().enumerate().skip(first) {
            for (i, o) in p.outs.iter_mut().enumerate() {
                if k == first && i < from.1 {
                    continue;
                }
                if matches!(o.state, OutState::Queued | OutState::Delivered) {
                    o.state = OutState::Waiting;
                }
            }
        }
    }

    fn waiting_from(&self, from: Position) -> Vec<Position> {
        let mut out = Vec::new();
        for (k, p) in self.window.iter().enumerate() {
            let seq = self.base + k as u64;
            if seq < from.0 {
                continue;
            }
            for (i, o) in p.outs.iter().enumerate() {
                if (seq, i) >= from && o.state == OutState::Waiting {
                    out.push((seq, i));
                }
            }
        }
        out
    }

    /// Reports the source blocked by `reason` and waits one backoff; false when the lane
    /// closed meanwhile.
    pub(super) async fn wait_blocked(
        &mut self,
        cause: Cause,
        reason: &str,
        backoff: &mut impl Backoff,
    ) -> bool {
        if self.is_closing() {
            return false;
        }
        match &self.blocked {
            None => {
                let resume = self.health.state_of(&self.source).unwrap_or("streaming");
                let resume = if resume == "blocked" {
                    "streaming"
                } else {
                    resume
                };
                warn!(source = %self.source, reason, "source blocked: a transient failure holds its changes (retried until it passes; the slot holds)");
                self.blocked = Some(Blocked {
                    since: Instant::now(),
                    cause,
                    resume,
                });
            }
            Some(b) => {
                debug!(source = %self.source, reason, blocked_for = ?b.since.elapsed(), "still blocked");
                if let Some(b) = self.blocked.as_mut() {
                    b.cause = cause;
                }
            }
        }
        self.health
            .set(&self.source, "blocked", Some(reason.to_string()));
        if let (Some(g), Some(b)) = (&self.blocked_gauge, &self.blocked) {
            g.set(b.since.elapsed().as_secs_f64());
        }
        let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = self.closing.changed() => false,
        }
    }

    /// Ends a block by `cause` (`None`: any).
    pub(super) fn unblock(&mut self, cause: impl Into<Option<Cause>>) {
        let cause = cause.into();
        if self
            .blocked
            .as_ref()
            .is_some_and(|b| cause.is_some_and(|c| c != b.cause))
        {
            return;
        }
        if cause != Some(Cause::Registry) {
            self.kafka_backoff.reset();
        }
        if let Some(b) = self.blocked.take() {
            info!(source = %self.source, blocked_for = ?b.since.elapsed(), "source unblocked: records flow again");
            self.health.set(&self.source, b.resume, None);
            if let Some(g) = &self.blocked_gauge {
                g.set(0.0);
            }
        }
    }
}

/// Exponential backoff from 100 ms to 5 s, without an end: transient failures of a change
/// stream are waited out, never turned into dead letters.
pub(super) fn unbounded_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(5),
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    }
}
