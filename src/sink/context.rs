//! How librdkafka's own errors reach switchyard's log.

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::warn;

/// A client context that logs librdkafka's client-wide errors once, as warnings (they are
/// transient by nature: switchyard retries), and ignores end-of-partition notices.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KafkaLog;

impl ClientContext for KafkaLog {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        warn!(target: "switchyard::kafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for KafkaLog {}
