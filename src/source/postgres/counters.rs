//! A postgres source's counters: events handed on, and the position confirmed to its slot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A postgres source's own metrics, resolved once so the hot path only increments, and the
/// highest position it confirmed to the slot.
#[derive(Default)]
pub(super) struct SourceCounters {
    pub(super) received: Option<prometheus::IntCounter>,
    confirmed_lsn: Option<prometheus::IntGauge>,
    applied: AtomicU64,
}

impl SourceCounters {
    pub(super) fn new(source: &str) -> SourceCounters {
        let Some(m) = crate::telemetry::metrics::metrics() else {
            return SourceCounters::default();
        };
        SourceCounters {
            received: m
                .events_received
                .get_metric_with_label_values(&[source])
                .ok(),
            confirmed_lsn: m.confirmed_lsn.get_metric_with_label_values(&[source]).ok(),
            applied: AtomicU64::new(0),
        }
    }

    /// Counts one event handed to the pipeline.
    pub(super) fn receive(&self) {
        if let Some(c) = &self.received {
            c.inc();
        }
    }

    /// The highest position confirmed to the slot so far (every event before it is durable).
    pub(super) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub(super) fn confirmed(&self, lsn: u64) {
        self.applied.fetch_max(lsn, Ordering::Relaxed);
        if let Some(g) = &self.confirmed_lsn {
            g.set(i64::try_from(lsn).unwrap_or(i64::MAX));
        }
    }
}
