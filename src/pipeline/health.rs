//! What each source is doing right now, for `/readyz` and on-call: connecting, snapshotting,
//! streaming, or failing with the error that says how to fix it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Health {
    /// `connecting`, `standby` (another instance streams the slot), `snapshotting`, `streaming`,
    /// `blocked` (Kafka or the schema registry is unavailable: changes wait, the slot holds,
    /// nothing is dead-lettered) or `failing`.
    pub state: &'static str,
    /// Why it is failing (retried with backoff meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it entered this state, ms since the epoch.
    pub since_ms: i64,
}

/// The states of a daemon's sources.
#[derive(Debug, Default)]
pub(crate) struct SourceHealth(Mutex<BTreeMap<String, Health>>);

impl SourceHealth {
    /// Records that `source` is now in `state`.
    pub(crate) fn set(&self, source: &str, state: &'static str, error: Option<String>) {
        if let Ok(mut map) = self.0.lock() {
            let changed = map
                .get(source)
                .is_none_or(|h| h.state != state || h.error != error);
            if changed {
                map.insert(
                    source.to_string(),
                    Health {
                        state,
                        error,
                        since_ms: crate::event::now_micros() / 1000,
                    },
                );
            }
        }
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.source_up
                .with_label_values(&[source])
                .set(i64::from(state != "failing"));
        }
    }

    /// The state `source` is in now.
    pub(crate) fn state_of(&self, source: &str) -> Option<&'static str> {
        self.0.lock().ok()?.get(source).map(|h| h.state)
    }

    /// Every source's state.
    pub(crate) fn all(&self) -> BTreeMap<String, Health> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}
