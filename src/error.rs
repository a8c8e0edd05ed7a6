//! Error classes shared by every stage: the line between "retry" and "dead-letter".

use std::fmt;
use std::time::Duration;

use backoff::ExponentialBackoff;

use serde::{Deserialize, Serialize};

/// Why an event could not be delivered. Definite classes belong to the event (retrying cannot
/// help, it goes to the DLQ); [`ErrorClass::is_transient`] ones belong to the world (retry with
/// backoff, apply backpressure, never drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// The source payload could not be decoded.
    Decode,
    /// A webhook signature did not verify.
    Verify,
    /// The registry rejected the schema (incompatible or invalid).
    Schema,
    /// The event could not be encoded to its route's schema.
    Encode,
    /// The record is too large for the broker.
    Oversize,
    /// No route matched (or the route could not name a topic).
    Unroutable,
    /// The broker refused the record for good.
    Produce,
    /// Transient failures went on past the retry limit.
    RetriesExhausted,
    /// Broker, registry or network unavailable: retried, never dead-lettered by itself.
    Unavailable,
    /// A bug or a lost task inside switchyard.
    Internal,
}

impl ErrorClass {
    /// The class as written in the DLQ, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Decode => "decode",
            ErrorClass::Verify => "verify",
            ErrorClass::Schema => "schema",
            ErrorClass::Encode => "encode",
            ErrorClass::Oversize => "oversize",
            ErrorClass::Unroutable => "unroutable",
            ErrorClass::Produce => "produce",
            ErrorClass::RetriesExhausted => "retries_exhausted",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        }
    }

    /// True for the classes that go to the dead-letter queue: the event, not the world, is
    /// at fault, or the world stayed broken past the retry limit.
    pub(crate) fn is_dead_letter(self) -> bool {
        !matches!(self, ErrorClass::Unavailable | ErrorClass::Internal)
    }

    /// True for failures of the surroundings that a later attempt may get past.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::Unavailable | ErrorClass::RetriesExhausted | ErrorClass::Internal
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backoff for transient failures: 100 ms doubling to 5 s, for at most `max_elapsed`.
pub(crate) fn retry_policy(max_elapsed: Duration) -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(5),
        max_elapsed_time: Some(max_elapsed),
        ..ExponentialBackoff::default()
    }
}
