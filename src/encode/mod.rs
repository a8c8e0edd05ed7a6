//! Avro encoding in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro
//! binary), with schemas registered in a Confluent-compatible registry.
//!
//! Each (subject, schema) is registered once and its id cached ([`Encoder`]);
//! the per-event work is encoding only. Subjects follow TopicNameStrategy: `<topic>-value` and
//! `<topic>-key`.

mod cache;
pub(crate) mod change;
pub(crate) mod cloudevent;

use std::sync::Arc;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SuppliedSchema;

pub use crate::avro::{AvroSchema, datum, typed};
use crate::config::{RegistryAuth, RegistryConfig};
pub use crate::debezium;
use crate::error::ErrorClass;

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The registry could not be reached or answered 5xx: retry.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused the schema (incompatible, invalid).
    #[error("schema rejected by the registry: {0}")]
    Schema(String),
    /// The value does not fit the schema.
    #[error("value does not fit the schema: {0}")]
    Encode(String),
}

impl EncodeError {
    /// The DLQ error class.
    pub fn class(&self) -> ErrorClass {
        match self {
            EncodeError::Unavailable(_) => ErrorClass::Unavailable,
            EncodeError::Schema(_) => ErrorClass::Schema,
            EncodeError::Encode(_) => ErrorClass::Encode,
        }
    }

    fn from_src(e: SRCError) -> EncodeError {
        let text = match &e.cause {
            Some(c) => format!("{}: {c}", e.error),
            None => e.error.clone(),
        };
        // The library retries only 502/503; other 5xx, throttling, timeouts and auth problems
        // are the registry's state too, not the event's: retry them rather than dead-letter
        // every event while the registry is unwell.
        let status = e
            .error
            .split("failed with status ")
            .nth(1)
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        let registry_unwell = matches!(status, Some(401 | 403 | 408 | 429 | 500..=599));
        if e.retriable || registry_unwell {
            EncodeError::Unavailable(text)
        } else {
            EncodeError::Schema(text)
        }
    }
}

/// What one event becomes: value and key, each with its schema.
pub(crate) struct RecordParts {
    /// Value schema.
    pub value_schema: AvroSchema,
    /// Value; `None` for a tombstone.
    pub value: Option<Value>,
    /// Key schema.
    pub key_schema: AvroSchema,
    /// Key; `None` for records without one (truncates).
    pub key: Option<Value>,
    /// Value and key were built field by field in their schemas' order (change envelopes,
    /// CloudEvents with a text `data`), so the positional writer ([`datum`]) may encode them.
    pub ordered: bool,
}

/// The Avro value and key of an event on one route, by payload kind: CloudEvents for webhooks
/// (keyed by event id, or the route's JSON Pointer into the body; `data` typed when the route
/// has a `value_schema`), Debezium envelopes for changes (keyed by the key columns). The
/// route's transforms apply first, so a typed `data` is built from the transformed body.
pub(crate) fn record_parts(
    event: &crate::event::Event,
    route: &crate::router::RouteMatch,
) -> Result<RecordParts, EncodeError> {
    use crate::event::Payload;
    use crate::router::transform as tf;
    let key_columns: &[String] = &route.key;
    let key_pointer = route.key_pointer.as_deref();
    let transform = route.transform.as_deref();
    let transformed;
    let payload = match (transform, &event.payload) {
        (Some(t), Payload::Webhook(w)) => {
            transformed = Payload::Webhook(tf::webhook(w, t));
            &transformed
        }
        (Some(t), Payload::Change(c)) => {
            transformed = Payload::Change(tf::change(c, t, &route.columns));
            &transformed
        }
        (_, p) => p,
    };
    let renamed_keys;
    let key_columns = match transform {
        Some(t) => {
            renamed_keys = tf::key_columns(key_columns, t);
            renamed_keys.as_slice()
        }
        None => key_columns,
    };
    match payload {
        Payload::Webhook(w) => Ok(RecordParts {
            value_schema: match &route.value_schema {
                Some(typed) => typed.envelope().clone(),
                None => cloudevent::schema().clone(),
            },
            value: Some(match &route.value_schema {
                Some(typed) => {
                    let body = cloudevent::body_json(w).ok_or_else(|| {
                        EncodeError::Encode(format!(
                            "the body is not JSON, so it cannot be converted to {} ({})",
                            typed.record_name,
                            typed.path.display()
                        ))
                    })?;
                    let data = typed
                        .convert(&body)
                        .map_err(|e| EncodeError::Encode(format!("{}: {e}", typed.record_name)))?;
                    cloudevent::record_with_data(event, w, data)
                }
                None => cloudevent::record(event, w),
            }),
            key_schema: AvroSchema::string(),
            key: Some(Value::String(
                key_pointer
                    .and_then(|p| cloudevent::body_pointer(w, p))
                    .unwrap_or_else(|| event.id.as_str().to_string()),
            )),
            // The CloudEvent record is built in its schema's order; a route's typed `data` is
            // converted by apache-avro's rules and left to its writer.
            ordered: route.value_schema.is_none(),
        }),
        Payload::Message(m) => {
            let (value_schema, value, key_schema, key) = change::message_parts(event, m);
            Ok(RecordParts {
                value_schema,
                value,
                key_schema,
                key,
                ordered: false,
            })
        }
        Payload::Change(c) => {
            let (value_schema, value, key_schema, key) =
                change::parts(event, c, key_columns, &route.shapes)
                    .map_err(|e| EncodeError::Encode(e.to_string()))?;
            Ok(RecordParts {
                value_schema,
                value,
                key_schema,
                key,
                ordered: true,
            })
        }
    }
}

/// A buffer holding the Confluent framing of `r` (magic byte, schema id), for the datum to
/// follow: one buffer, no copy.
/// The Confluent wire format's header: the magic byte 0 and the schema id (big endian).
pub(crate) const FRAME: usize = 5;

/// Writes the Confluent header of schema `id` into the first [`FRAME`] bytes of `datum`, left
/// for it: the datum itself is neither copied nor moved.
pub(crate) fn frame_in_place(id: u32, datum: &mut [u8]) {
    if let Some(header) = datum.get_mut(..FRAME) {
        header[0] = 0;
        header[1..].copy_from_slice(&id.to_be_bytes());
    }
}

fn framed(r: &Registered) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(0);
    out.extend_from_slice(&r.borrow_id().to_be_bytes());
    out
}

/// A webhook event on a route without a `value_schema`, ready to be written straight
/// ([`cloudevent::write`]) instead of through a record tree ([`record_parts`]): its key (the
/// event id, or the route's JSON Pointer into the body) and its payload after the route's
/// transforms. `None` for any other event or route.
pub(crate) fn plain_webhook<'e>(
    event: &'e crate::event::Event,
    route: &crate::router::RouteMatch,
) -> Option<(String, std::borrow::Cow<'e, crate::event::WebhookPayload>)> {
    let crate::event::Payload::Webhook(w) = &event.payload else {
        return None;
    };
    if route.value_schema.is_some() {
        return None;
    }
    let payload = match route.transform.as_deref() {
        Some(t) => std::borrow::Cow::Owned(crate::router::transform::webhook(w, t)),
        None => std::borrow::Cow::Borrowed(w),
    };
    let key = route
        .key_pointer
        .as_deref()
        .and_then(|p| cloudevent::body_pointer(&payload, p))
        .unwrap_or_else(|| event.id.as_str().to_string());
    Some((key, payload))
}

/// A schema the registry knows, with its id, and a writer with the schema's names resolved
/// once, not per record. The writer borrows the parsed schema it owns, so both are freed
/// together when the encoder's cache ([`cache`]) drops the entry and no encoding holds it.
#[ouroboros::self_referencing]
struct Registered {
    /// The schema as first seen (its text is what identifies it).
    schema: Arc<SuppliedSchema>,
    id: u32,
    parsed: Box<apache_avro::Schema>,
    #[borrows(parsed)]
    #[covariant]
    writer: apache_avro::writer::datum::GenericDatumWriter<'this>,
}

/// Settings for talking to the registry of `[schema_registry]`: its URL, timeout and
/// credentials (sent with every request).
pub(crate) fn registry_settings(registry: &RegistryConfig) -> Result<SrSettings, SRCError> {
    let mut builder = SrSettings::new_builder(registry.url.clone());
    builder.set_timeout(registry.timeout);
    match &registry.auth {
        Some(RegistryAuth::Basic { username, password }) => {
            builder.set_basic_authorization(username, Some(&String::from_utf8_lossy(&password.0)));
        }
        Some(RegistryAuth::Bearer(token)) => {
            builder.set_token_authorization(&String::from_utf8_lossy(&token.0));
        }
        None => {}
    }
    builder.build()
}

/// Encodes keys and values for topics in the Confluent wire format.
///
/// Each (subject, schema) is registered once and cached with its id; a changed schema for a
/// subject (a table that gained a column) is registered as a new version before the first
/// record that needs it. The per-record work is encoding only.
pub(crate) struct Encoder {
    settings: SrSettings,
    /// Registered schemas by topic, of record values and of keys (looked up by topic: no
    /// subject name is built per record).
    /// Bounded ([`cache`]): the least recently used topics are dropped.
    values: cache::TopicCache<Registered>,
    keys: cache::TopicCache<Registered>,
    registering: tokio::sync::Mutex<()>,
}

/// Which part of a record a schema is for: subjects `<topic>-value` and `<topic>-key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The record's value.
    Value,
    /// The record's key.
    Key,
}

impl Part {
    fn subject(self, topic: &str) -> String {
        match self {
            Part::Value => format!("{topic}-value"),
            Part::Key => format!("{topic}-key"),
        }
    }
}

impl Encoder {
    /// An encoder talking to the registry of `[schema_registry]`.
    pub(crate) fn new(registry: &RegistryConfig) -> Result<Encoder, EncodeError> {
        let settings = registry_settings(registry)
            .map_err(|e| EncodeError::Schema(format!("registry settings: {e}")))?;
        Ok(Encoder {
            settings,
            values: cache::TopicCache::new(cache::MAX_TOPICS, cache::MAX_VERSIONS),
            keys: cache::TopicCache::new(cache::MAX_TOPICS, cache::MAX_VERSIONS),
            registering: tokio::sync::Mutex::new(()),
        })
    }

    /// Encodes a record value for `topic` (subject `<topic>-value`).
    pub(crate) async fn value(
        &self,
        topic: &str,
        schema: &AvroSchema,
        value: &Value,
        ordered: bool,
    ) -> Result<Vec<u8>, EncodeError> {
        self.encode(topic, Part::Value, schema, value, ordered)
            .await
    }

    /// Encodes a record key for `topic` (subject `<topic>-key`).
    pub(crate) async fn key(
        &self,
        topic: &str,
        schema: &AvroSchema,
        value: &Value,
        ordered: bool,
    ) -> Result<Vec<u8>, EncodeError> {
        self.encode(topic, Part::Key, schema, value, ordered).await
    }

    /// The registry's id of `schema` as the `part` of `topic`'s records (registered once, then
    /// cached), for [`frame_in_place`].
    pub(crate) async fn schema_id(
        &self,
        topic: &str,
        part: Part,
        schema: &AvroSchema,
    ) -> Result<u32, EncodeError> {
        Ok(*self.registered(topic, part, schema).await?.borrow_id())
    }

    /// Encodes the `part` of a record for `topic` whose Avro binary datum `write` appends
    /// (a value built straight from the event, in `schema`'s layout; see
    /// [`cloudevent::write`]).
    pub(crate) async fn encode_written(
        &self,
        topic: &str,
        part: Part,
        schema: &AvroSchema,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, EncodeError> {
        let r = self.registered(topic, part, schema).await?;
        let mut out = framed(&r);
        write(&mut out);
        Ok(out)
    }

    fn known(&self, part: Part) -> &cache::TopicCache<Registered> {
        match part {
            Part::Value => &self.values,
            Part::Key => &self.keys,
        }
    }

    fn cached(&self, topic: &str, part: Part, schema: &AvroSchema) -> Option<Arc<Registered>> {
        self.known(part).find(topic, |versions| {
            versions
                .iter()
                .find(|r| Arc::ptr_eq(r.borrow_schema(), &schema.supplied))
                .or_else(|| {
                    versions
                        .iter()
                        .find(|r| r.borrow_schema().schema == schema.json())
                })
                .cloned()
        })
    }

    async fn registered(
        &self,
        topic: &str,
        part: Part,
        schema: &AvroSchema,
    ) -> Result<Arc<Registered>, EncodeError> {
        if let Some(r) = self.cached(topic, part, schema) {
            if let Some(m) = crate::telemetry::metrics::metrics() {
                m.schema_cache_hits.inc();
            }
            return Ok(r);
        }
        // One registration at a time: concurrent first records wait for it instead of
        // posting the same schema again.
        let _guard = self.registering.lock().await;
        if let Some(r) = self.cached(topic, part, schema) {
            if let Some(m) = crate::telemetry::metrics::metrics() {
                m.schema_cache_hits.inc();
            }
            return Ok(r);
        }
        let subject = part.subject(topic);
        let parsed = apache_avro::Schema::parse_str(schema.json())
            .map_err(|e| EncodeError::Schema(format!("invalid schema for {subject}: {e}")))?;
        // Boxed: registering is rare (once per schema version), and its HTTP future is large;
        // inline it would size every record's encoding future, which each event's task copies.
        let registered = Box::pin(post_schema(
            &self.settings,
            subject.clone(),
            SuppliedSchema::clone(&schema.supplied),
        ))
        .await;
        if let Some(m) = crate::telemetry::metrics::metrics() {
            let result = if registered.is_ok() { "ok" } else { "error" };
            m.registry_requests.with_label_values(&[result]).inc();
        }
        let registered = registered.map_err(EncodeError::from_src)?;
        // No separate validation pass per record: the values are built from this schema (change
        // envelopes, CloudEvents, typed webhook data converted against it), and the encoder
        // still refuses a value whose kind does not fit its schema (class `encode`).
        let entry = Registered::try_new(
            Arc::clone(&schema.supplied),
            registered.id,
            Box::new(parsed),
            |parsed| {
                apache_avro::writer::datum::GenericDatumWriter::builder(parsed)
                    .validate(false)
                    .build()
                    .map_err(|e| EncodeError::Encode(e.to_string()))
            },
        )?;
        let entry = Arc::new(entry);
        self.known(part).insert(topic, Arc::clone(&entry));
        Ok(entry)
    }

    async fn encode(
        &self,
        topic: &str,
        part: Part,
        schema: &AvroSchema,
        value: &Value,
        ordered: bool,
    ) -> Result<Vec<u8>, EncodeError> {
        let r = self.registered(topic, part, schema).await?;
        let mut out = framed(&r);
        if ordered && datum::write_ordered(value, &mut out) {
            return Ok(out);
        }
        out.truncate(5);
        r.borrow_writer()
            .write_value_ref(&mut out, value)
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: &str) -> SRCError {
        SRCError::new(
            &format!("HTTP request to schema registry failed with status {status}"),
            Some("body".into()),
            false,
        )
    }

    #[test]
    fn registry_outages_are_transient_and_rejections_are_definite() {
        for s in [
            "500 Internal Server Error",
            "504 Gateway Timeout",
            "429 Too Many Requests",
            "401 Unauthorized",
        ] {
            assert!(
                matches!(EncodeError::from_src(http(s)), EncodeError::Unavailable(_)),
                "{s}"
            );
        }
        for s in ["409 Conflict", "422 Unprocessable Entity"] {
            assert!(
                matches!(EncodeError::from_src(http(s)), EncodeError::Schema(_)),
                "{s}"
            );
        }
        let net = SRCError::new("http call to schema registry failed", None, true);
        assert!(matches!(
            EncodeError::from_src(net),
            EncodeError::Unavailable(_)
        ));
    }
}
