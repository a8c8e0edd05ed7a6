//! Acknowledgements: how a source learns that its event is durable.
//!
//! Two entry points, two shapes (see `pipeline`):
//! - **submit** (CDC changes, snapshot and backfill reads, through an ordered lane): the source
//!   hands the event over with an [`AckToken`] and goes on; the lane resolves it.
//! - **deliver and wait** (webhooks, replay): the caller awaits the [`Delivery`] itself and
//!   passes a [`Waiter`], which only says whether it still waits (a cancellation signal, not an
//!   acknowledgement: nothing is resolved through it).
//!
//! Invariant: an [`AckToken`] is resolved exactly once, and only with [`Delivery::Delivered`]
//! after the Kafka delivery report (acks=all), or [`Delivery::DeadLettered`] after the DLQ write
//! committed. Dropping a token unresolved reads as "not durable" on the source side, so a panic
//! or a lost task can never be mistaken for success.
//!
//! [`Checkpoint`] turns out-of-order acknowledgements into an ordered position (the CDC source's
//! confirmed LSN): it advances only over a contiguous prefix of durable events, and never past
//! an event that failed.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::error::ErrorClass;

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Acknowledged by Kafka (every matched route).
    Delivered,
    /// Stored in the dead-letter queue.
    DeadLettered,
    /// No route takes it and `[router] unmatched = "drop"`: acknowledged without a record.
    Dropped,
    /// None of these: the source must not acknowledge it.
    Failed(Failure),
}

impl Delivery {
    /// True when the source may acknowledge the event: it is in Kafka, in the DLQ, or was
    /// dropped by policy.
    pub(crate) fn is_durable(&self) -> bool {
        !matches!(self, Delivery::Failed(_))
    }
}

/// Why an event was not made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The error class.
    pub class: ErrorClass,
    /// A message for the operator (never contains secrets).
    pub message: String,
}

/// Completion only: resolved once with the event's [`Delivery`] by the ordered lane the event
/// was submitted to; see the module invariant.
#[derive(Debug)]
pub(crate) struct AckToken {
    tx: Option<oneshot::Sender<Delivery>>,
}

/// The source's side of an [`AckToken`].
#[derive(Debug)]
pub(crate) struct AckReceiver {
    rx: oneshot::Receiver<Delivery>,
}

impl AckToken {
    /// A token and the receiver its resolution arrives on.
    pub(crate) fn new() -> (AckToken, AckReceiver) {
        let (tx, rx) = oneshot::channel();
        (AckToken { tx: Some(tx) }, AckReceiver { rx })
    }

    /// Resolves the token; consumes it so it cannot be resolved twice.
    pub(crate) fn resolve(mut self, delivery: Delivery) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(delivery);
        }
    }
}

/// Whether the caller of a deliver-and-wait delivery still waits for it (a webhook request
/// that timed out or hung up does not): retrying past that point is pointless, the sender will
/// deliver the event again. Made by [`waiter`]; [`Waiter::forever`] never gives up.
#[derive(Debug, Clone)]
pub(crate) struct Waiter(Option<std::sync::Weak<()>>);

/// Held by the caller while it waits; dropping it tells the [`Waiter`].
#[derive(Debug)]
pub(crate) struct StillWaiting(#[allow(dead_code)] std::sync::Arc<()>);

/// A waiter and the guard whose drop abandons it.
pub(crate) fn waiter() -> (Waiter, StillWaiting) {
    let guard = std::sync::Arc::new(());
    (
        Waiter(Some(std::sync::Arc::downgrade(&guard))),
        StillWaiting(guard),
    )
}

impl Waiter {
    /// A waiter that never gives up (replay, dry runs: the caller waits to the end).
    pub(crate) fn forever() -> Waiter {
        Waiter(None)
    }

    /// True once the caller stopped waiting.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.0.as_ref().is_some_and(|w| w.strong_count() == 0)
    }
}

impl AckReceiver {
    /// Waits for the resolution; a dropped token reads as a failure.
    pub(crate) async fn wait(self) -> Delivery {
        self.rx.await.unwrap_or_else(|_| {
            Delivery::Failed(Failure {
                class: ErrorClass::Internal,
                message: "the event was dropped before it was delivered".into(),
            })
        })
    }
}

/// Ordered positions (e.g. LSNs) whose events are acknowledged out of order.
#[derive(Debug)]
pub(crate) struct Checkpoint<P> {
    /// Tracked positions from oldest to newest, with their state.
    pending: VecDeque<(P, SlotState)>,
    /// Sequence number of `pending[0]`.
    base_seq: u64,
    /// Highest position whose events, and all before it, are durable.
    confirmed: Option<P>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    InFlight,
    Durable,
    Failed,
}

/// A handle for one tracked position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seq(u64);

impl<P: Copy + Ord> Checkpoint<P> {
    /// A checkpoint that starts at `confirmed`.
    pub(crate) fn new(confirmed: Option<P>) -> Self {
        Self {
            pending: VecDeque::new(),
            base_seq: 0,
            confirmed,
        }
    }

    /// Starts tracking `position`; positions must be tracked in non-decreasing order.
    pub(crate) fn track(&mut self, position: P) -> Seq {
        debug_assert!(self.pending.back().is_none_or(|(p, _)| *p <= position));
        self.pending.push_back((position, SlotState::InFlight));
        Seq(self.base_seq + self.pending.len() as u64 - 1)
    }

    /// Records the outcome of a tracked position and returns the new confirmed position.
    pub(crate) fn resolve(&mut self, seq: Seq, durable: bool) -> Option<P> {
        if let Some(idx) = seq.0.checked_sub(self.base_seq)
            && let Some(slot) = usize::try_from(idx)
                .ok()
                .and_then(|i| self.pending.get_mut(i))
            && slot.1 == SlotState::InFlight
        {
            slot.1 = if durable {
                SlotState::Durable
            } else {
                SlotState::Failed
            };
        }
        while let Some((pos, SlotState::Durable)) = self.pending.front().copied() {
            self.pending.pop_front();
            self.base_seq += 1;
            // A later position with events still in flight must not be passed: keep the
            // confirmed position at the last one whose every event is durable.
            let same_position_pending = self.pending.front().is_some_and(|(p, _)| *p == pos);
            if !same_position_pending {
                self.confirmed = Some(self.confirmed.map_or(pos, |c| c.max(pos)));
            }
        }
        self.confirmed
    }

    /// True when a failed event blocks the checkpoint (the source must restart from it).
    #[cfg(test)]
    fn is_blocked(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|(_, s)| *s == SlotState::Failed)
    }

    /// Positions still tracked.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_advance_one_by_one() {
        let mut c = Checkpoint::new(None);
        let a = c.track(10u64);
        let b = c.track(20);
        assert_eq!(c.resolve(a, true), Some(10));
        assert_eq!(c.resolve(b, true), Some(20));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn out_of_order_acks_advance_only_over_a_contiguous_prefix() {
        let mut c = Checkpoint::new(Some(5u64));
        let a = c.track(10u64);
        let b = c.track(20);
        let d = c.track(30);
        assert_eq!(
            c.resolve(d, true),
            Some(5),
            "30 is durable but 10 and 20 are not"
        );
        assert_eq!(c.resolve(b, true), Some(5), "10 is still in flight");
        assert_eq!(
            c.resolve(a, true),
            Some(30),
            "now 10, 20, 30 are all durable"
        );
    }

    #[test]
    fn a_failed_event_blocks_the_checkpoint() {
        let mut c = Checkpoint::new(None);
        let a = c.track(10u64);
        let b = c.track(20);
        assert_eq!(c.resolve(b, true), None);
        assert_eq!(c.resolve(a, false), None);
        assert!(c.is_blocked());
    }

    #[test]
    fn a_position_is_confirmed_only_when_all_its_events_are_durable() {
        // Several events of one transaction share its commit LSN.
        let mut c = Checkpoint::new(None);
        let a = c.track(10u64);
        let b = c.track(10);
        assert_eq!(
            c.resolve(a, true),
            None,
            "the second event at 10 is in flight"
        );
        assert_eq!(c.resolve(b, true), Some(10));
    }

    #[test]
    fn resolving_twice_or_unknown_sequences_changes_nothing() {
        let mut c = Checkpoint::new(None);
        let a = c.track(1u64);
        assert_eq!(c.resolve(a, true), Some(1));
        assert_eq!(c.resolve(a, false), Some(1));
        assert_eq!(c.resolve(Seq(99), true), Some(1));
        assert!(!c.is_blocked());
    }

    #[tokio::test]
    async fn a_dropped_token_reads_as_failed() {
        let (token, rx) = AckToken::new();
        drop(token);
        assert!(matches!(rx.wait().await, Delivery::Failed(_)));
    }

    #[tokio::test]
    async fn a_resolved_token_delivers_its_status() {
        let (token, rx) = AckToken::new();
        token.resolve(Delivery::Delivered);
        assert_eq!(rx.wait().await, Delivery::Delivered);
    }
}
