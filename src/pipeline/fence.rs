//! The fence a CDC source's leadership lends its ordered lane: records are handed to Kafka and
//! the slot confirmed only while it holds (`source::postgres::leader` renews and revokes it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The permission of a source's current session to hand records to Kafka and confirm the slot:
/// it holds until a moment set by the last successful check of the leadership lock (see
/// `source::postgres::leader`). A session's ordered lane gets a [`Fence::pinned`] copy, which stops holding for
/// good once that session is over ([`Fence::end_session`]), even if a later session of the
/// same source renews the fence: a lane left behind by an abandoned session sends nothing.
#[derive(Clone, Debug)]
pub(crate) struct Fence {
    state: Arc<FenceState>,
    /// The session this copy belongs to (`None`: whichever is current).
    session: Option<u64>,
}

#[derive(Debug)]
struct FenceState {
    base: Instant,
    /// Milliseconds after `base` until which the fence holds (0: it does not).
    until_ms: AtomicU64,
    /// The current session's number.
    session: AtomicU64,
}

impl Default for Fence {
    fn default() -> Fence {
        Fence {
            state: Arc::new(FenceState {
                base: Instant::now(),
                until_ms: AtomicU64::new(0),
                session: AtomicU64::new(0),
            }),
            session: None,
        }
    }
}

impl Fence {
    /// True while this instance may send and confirm (and, for a pinned copy, while its
    /// session is the current one).
    pub(crate) fn holds(&self) -> bool {
        let current = self
            .session
            .is_none_or(|s| s == self.state.session.load(Ordering::Acquire));
        current && millis(self.state.base.elapsed()) < self.state.until_ms.load(Ordering::Acquire)
    }

    /// A copy for the session starting now: it holds only until [`Fence::end_session`].
    pub(crate) fn pinned(&self) -> Fence {
        Fence {
            state: Arc::clone(&self.state),
            session: Some(self.state.session.load(Ordering::Acquire)),
        }
    }

    /// Ends the current session: its pinned copies never hold again.
    pub(crate) fn end_session(&self) {
        self.state.session.fetch_add(1, Ordering::AcqRel);
    }

    /// Extends the fence to `checked + validity` (`checked`: when the check was sent).
    pub(crate) fn renew(&self, checked: Instant, validity: Duration) {
        let until = millis(checked.saturating_duration_since(self.state.base) + validity);
        self.state.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Lapses the fence at once.
    pub(crate) fn revoke(&self) {
        self.state.until_ms.store(0, Ordering::Release);
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
