//! A dead letter as JSON, one shape for `switchyard dlq list/show/export`, the admin API and
//! the console.

use serde_json::{Value, json};

use super::DeadLetter;
use super::select::format_time;
use crate::event::{Event, Payload};

/// The entry without its event: what a list shows.
pub(crate) fn summary(dl: &DeadLetter) -> Value {
    json!({
        "id": dl.id,
        "event_id": dl.event_id,
        "source": dl.source,
        "route": dl.route,
        "topic": dl.topic,
        "key": dl.key,
        "class": dl.class,
        "message": dl.message,
        "attempts": dl.attempts,
        "status": dl.status,
        "first_failed_at": format_time(dl.first_failed_at),
        "last_failed_at": format_time(dl.last_failed_at),
        "replay_count": dl.replay_count,
        "resolution": dl.resolution,
    })
}

/// The entry with `event` (its own, or a masked copy), a webhook's JSON body parsed so it
/// prints as JSON, and the size of the stored record.
pub(crate) fn detail(dl: &DeadLetter, event: Option<&Event>) -> Value {
    let mut v = summary(dl);
    if let Some(e) = event {
        v["event"] = serde_json::to_value(e).unwrap_or(Value::Null);
        if let Payload::Webhook(w) = &e.payload
            && let Ok(body) = serde_json::from_str::<Value>(&w.body)
        {
            v["event"]["payload"]["body"] = body;
        }
    }
    v["record_bytes"] = json!(dl.record.as_ref().map(|r| r.value.len()));
    v
}
