//! The Avro schema model, below the configuration: a schema as given to the registry
//! ([`AvroSchema`]), the CloudEvent record webhooks are written as, and the typed `data` a route
//! declares with `value_schema` ([`typed`]: loaded and checked when the configuration loads,
//! used by the encoder). It imports nothing of the crate.

pub mod datum;
pub mod json;
pub mod typed;

use std::sync::{Arc, LazyLock};

use apache_avro::types::Value;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

/// The value schema of webhook topics.
pub(crate) const CLOUDEVENT_SCHEMA_JSON: &str = r#"{
  "type": "record",
  "name": "CloudEvent",
  "namespace": "io.switchyard.webhook",
  "doc": "A webhook as received by switchyard, in CloudEvents 1.0 attribute names",
  "fields": [
    {"name": "specversion", "type": "string", "doc": "Always 1.0"},
    {"name": "id", "type": "string", "doc": "The provider's delivery id, else sha256 of the body"},
    {"name": "source", "type": "string", "doc": "The switchyard source, as switchyard/<name>"},
    {"name": "type", "type": "string", "doc": "The event type"},
    {"name": "time", "type": {"type": "long", "logicalType": "timestamp-micros"}, "doc": "When switchyard received it"},
    {"name": "datacontenttype", "type": "string", "doc": "Media type of data"},
    {"name": "data", "type": "string", "doc": "The raw request body"},
    {"name": "subject", "type": ["null", "string"], "default": null, "doc": "What the event is about, when the provider says (e.g. Stripe's data.object.id)"},
    {"name": "headers", "type": {"type": "map", "values": "string"}, "default": {}, "doc": "Request headers on the source's allow-list"}
  ]
}"#;

/// A schema given to the registry: its canonical JSON text.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    /// Shared: a schema is cloned into every record's parts, and compared by pointer first.
    pub(crate) supplied: Arc<SuppliedSchema>,
}

impl AvroSchema {
    /// A schema from its JSON text (checked when the schema is registered).
    pub fn from_json(json: &str) -> AvroSchema {
        AvroSchema {
            supplied: Arc::new(SuppliedSchema::new(
                None,
                SchemaType::Avro,
                json.to_string(),
            )),
        }
    }

    /// The schema's JSON text.
    pub fn json(&self) -> &str {
        &self.supplied.schema
    }

    /// The Avro binary encoding of `value` (without the Confluent framing), for checks that
    /// must not touch the registry, such as a replay dry run.
    pub(crate) fn encode_locally(&self, value: Value) -> Result<Vec<u8>, String> {
        let schema = apache_avro::Schema::parse_str(self.json()).map_err(|e| e.to_string())?;
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .map_err(|e| e.to_string())?;
        writer.write_value_to_vec(value).map_err(|e| e.to_string())
    }

    /// The Avro `"string"` schema, used for keys (one shared instance: the encoder's cache
    /// finds it by pointer).
    pub fn string() -> AvroSchema {
        static STRING: LazyLock<AvroSchema> = LazyLock::new(|| AvroSchema::from_json("\"string\""));
        STRING.clone()
    }
}
