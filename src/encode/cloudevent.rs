//! The CloudEvents-style Avro record switchyard writes for webhooks.

use std::sync::LazyLock;

use apache_avro::types::Value;

use super::AvroSchema;
use crate::event::{Event, WebhookPayload};

/// The value schema of webhook topics.
pub(crate) use crate::avro::CLOUDEVENT_SCHEMA_JSON as SCHEMA_JSON;

static SCHEMA: LazyLock<AvroSchema> = LazyLock::new(|| AvroSchema::from_json(SCHEMA_JSON));

/// The value schema of webhook topics.
pub(crate) fn schema() -> &'static AvroSchema {
    &SCHEMA
}

/// A webhook's body as JSON (or a form's `payload` field, as Slack sends); `None` when it is
/// neither.
pub(crate) fn body_json(webhook: &WebhookPayload) -> Option<serde_json::Value> {
    match serde_json::from_str(&webhook.body) {
        Ok(v) => Some(v),
        Err(_) => {
            let payload = form_urlencoded::parse(webhook.body.as_bytes())
                .find(|(k, _)| k == "payload")?
                .1;
            serde_json::from_str(&payload).ok()
        }
    }
}

/// The value at JSON Pointer `pointer` in a webhook's body (or in a form's `payload`), as text;
/// `None` when the body has nothing there (the key is then the event id).
pub(crate) fn body_pointer(webhook: &WebhookPayload, pointer: &str) -> Option<String> {
    // Read from the text in one pass (no tree of the body); a form's payload is parsed.
    let found = match crate::json::pointer::read(webhook.body.as_bytes(), pointer) {
        Ok(v) => v?,
        Err(_) => body_json(webhook)?.pointer(pointer)?.clone(),
    };
    match found {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The record for a webhook event (`data` is the body as text).
pub(crate) fn record(event: &Event, webhook: &WebhookPayload) -> Value {
    record_with_data(event, webhook, Value::String(webhook.body.clone()))
}

/// Appends the record of a webhook event (`data`: the body as text) in Avro binary, field by
/// field in the schema's order, without building it: the bytes
/// `datum::write_ordered(&record(event, webhook), out)` appends.
pub(crate) fn write(event: &Event, webhook: &WebhookPayload, out: &mut Vec<u8>) {
    use super::datum::{bytes, zigzag};
    const PREFIX: &str = "switchyard/";
    out.reserve(64 + webhook.body.len() + event.id.as_str().len() + event.event_type.len());
    bytes(b"1.0", out);
    bytes(event.id.as_str().as_bytes(), out);
    zigzag((PREFIX.len() + event.source.len()) as i64, out);
    out.extend_from_slice(PREFIX.as_bytes());
    out.extend_from_slice(event.source.as_bytes());
    bytes(event.event_type.as_bytes(), out);
    zigzag(event.received_at_micros, out);
    bytes(
        webhook
            .content_type
            .as_deref()
            .unwrap_or("application/json")
            .as_bytes(),
        out,
    );
    bytes(webhook.body.as_bytes(), out);
    match &webhook.subject {
        Some(s) => {
            zigzag(1, out);
            bytes(s.as_bytes(), out);
        }
        None => zigzag(0, out),
    }
    if !webhook.selected_headers.is_empty() {
        zigzag(webhook.selected_headers.len() as i64, out);
        for (k, v) in &webhook.selected_headers {
            bytes(k.as_bytes(), out);
            bytes(v.as_bytes(), out);
        }
    }
    out.push(0);
}

/// The record for a webhook event with `data` already built (a string, or the record of a
/// route's `value_schema`).
pub(crate) fn record_with_data(event: &Event, webhook: &WebhookPayload, data: Value) -> Value {
    let content_type = webhook
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".into());
    Value::Record(vec![
        ("specversion".into(), Value::String("1.0".into())),
        ("id".into(), Value::String(event.id.as_str().to_string())),
        (
            "source".into(),
            Value::String(format!("switchyard/{}", event.source)),
        ),
        ("type".into(), Value::String(event.event_type.clone())),
        (
            "time".into(),
            Value::TimestampMicros(event.received_at_micros),
        ),
        ("datacontenttype".into(), Value::String(content_type)),
        ("data".into(), data),
        (
            "subject".into(),
            match &webhook.subject {
                Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        (
            "headers".into(),
            Value::Map(
                webhook
                    .selected_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Payload};

    #[test]
    fn the_record_fits_the_schema() {
        let schema = apache_avro::Schema::parse_str(SCHEMA_JSON).expect("schema parses");
        let event = Event {
            id: EventId::from_provider("msg_1"),
            source: "orders".into(),
            event_type: "order.created".into(),
            received_at_micros: 1_700_000_000_000_000,
            payload: Payload::Webhook(WebhookPayload {
                path: "/webhooks/orders".into(),
                content_type: None,
                headers: Default::default(),
                body: "{\"a\":1}".into(),
                subject: None,
                selected_headers: Vec::new(),
            }),
        };
        let Payload::Webhook(w) = &event.payload else {
            unreachable!()
        };
        let value = record(&event, w);
        assert!(value.validate(&schema));
    }
}
