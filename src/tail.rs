//! `switchyard tail`: print a topic's records as JSON, Avro decoded through the registry.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use serde_json::{Map, json};

use crate::config::Config;
use crate::sink::context::KafkaLog;

/// What to print.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Topic to read.
    pub topic: String,
    /// Stop after this many records.
    pub limit: Option<usize>,
    /// Keep waiting for new records instead of stopping at the end.
    pub follow: bool,
    /// Without `follow`: stop when nothing arrives for this long.
    pub idle: Duration,
}

/// Why tail stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Kafka refused or could not be reached.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The topic does not exist.
    #[error("topic `{0}` does not exist")]
    NoTopic(String),
    /// Output could not be written.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads `opts.topic` from the earliest offset and prints one JSON object per record.
pub async fn tail(
    config: &Config,
    opts: &TailOptions,
    out: &mut dyn Write,
) -> Result<usize, TailError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set(
            "group.id",
            format!("switchyard-tail-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("log_level", "3");
    for (k, v) in crate::sink::kafka::security_properties(&config.kafka) {
        cc.set(k, v);
    }
    let consumer: StreamConsumer<KafkaLog> = cc.create_with_context(KafkaLog)?;
    let topic = opts.topic.clone();
    let partitions = {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        md.topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| TailError::NoTopic(topic.clone()))?
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;

    let decoder = crate::encode::registry_settings(&config.schema_registry)
        .ok()
        .map(AvroDecoder::new);
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut printed = 0usize;
    let mut stream = consumer.stream();
    loop {
        if opts.limit.is_some_and(|l| printed >= l) {
            break;
        }
        let next = if opts.follow {
            stream.next().await
        } else {
            match tokio::time::timeout(opts.idle, stream.next()).await {
                Ok(n) => n,
                Err(_) => break,
            }
        };
        let Some(msg) = next else { break };
        match msg {
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if !opts.follow && partitions.iter().all(|p| at_end.contains(p)) {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
            Ok(m) => {
                at_end.remove(&m.partition());
                let mut headers = Map::new();
                if let Some(h) = m.headers() {
                    for hdr in h.iter() {
                        let v = hdr.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        headers.insert(hdr.key.to_string(), json!(v));
                    }
                }
                let line = json!({
                    "topic": m.topic(),
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "timestamp": m.timestamp().to_millis(),
                    "key": decode(decoder.as_ref(), m.key()).await,
                    "headers": headers,
                    "value": decode(decoder.as_ref(), m.payload()).await,
                });
                writeln!(out, "{line}")?;
                out.flush()?;
                printed += 1;
            }
        }
    }
    Ok(printed)
}

/// Decodes Confluent-framed Avro through the registry; other bytes print as text.
async fn decode(decoder: Option<&AvroDecoder>, bytes: Option<&[u8]>) -> serde_json::Value {
    let Some(bytes) = bytes else {
        return serde_json::Value::Null;
    };
    if let (Some(d), [0, _, _, _, _, ..]) = (decoder, bytes) {
        match d.decode_with_schema(Some(bytes)).await {
            Ok(Some(r)) => return avro_to_json_typed(r.value, &r.schema.parsed),
            Ok(None) => return serde_json::Value::Null,
            Err(e) => return json!({"undecodable": e.error, "bytes": hex::encode(bytes)}),
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Err(_) => json!({"bytes": hex::encode(bytes)}),
    }
}

/// An Avro value as JSON, read with its schema: decimals become exact decimal strings with
/// the schema's scale (`"12.50"`); everything else as [`avro_to_json`].
pub fn avro_to_json_typed(value: Value, schema: &Schema) -> serde_json::Value {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    typed(value, schema, &names)
}

fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<String, &'a Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema);
        }
        _ => {}
    }
}

fn typed(value: Value, schema: &Schema, names: &HashMap<String, &Schema>) -> serde_json::Value {
    let schema = match schema {
        Schema::Ref { name } => match names.get(&name.fullname(None)) {
            Some(s) => *s,
            None => return avro_to_json(value),
        },
        s => s,
    };
    match (value, schema) {
        (Value::Decimal(d), Schema::Decimal(ds)) => decimal_text(&d, ds.scale),
        (Value::Union(i, v), Schema::Union(u)) => match u.variants().get(i as usize) {
            Some(s) => typed(*v, s, names),
            None => avro_to_json(*v),
        },
        (Value::Record(fields), Schema::Record(r)) => serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| {
                    let field = r.lookup.get(&k).and_then(|i| r.fields.get(*i));
                    let v = match field {
                        Some(f) => typed(v, &f.schema, names),
                        None => avro_to_json(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        (Value::Map(entries), Schema::Map(m)) => serde_json::Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, typed(v, &m.types, names)))
                .collect(),
        ),
        (Value::Array(items), Schema::Array(a)) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|v| typed(v, &a.items, names))
                .collect(),
        ),
        (v, _) => avro_to_json(v),
    }
}

/// A two's-complement unscaled decimal as text with `scale` fraction digits.
fn decimal_text(d: &apache_avro::Decimal, scale: usize) -> serde_json::Value {
    let Ok(bytes) = Vec::<u8>::try_from(d) else {
        return serde_json::Value::Null;
    };
    if bytes.len() > 16 {
        return json!({"unscaled_hex": hex::encode(&bytes), "scale": scale});
    }
    let mut v: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in &bytes {
        v = (v << 8) | i128::from(*b);
    }
    let digits = format!("{:0>width$}", v.unsigned_abs(), width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let sign = if v < 0 { "-" } else { "" };
    if scale == 0 {
        json!(format!("{sign}{int}"))
    } else {
        json!(format!("{sign}{int}.{frac}"))
    }
}

/// An Avro value as JSON; byte arrays as hex strings, unions as their branch.
pub(crate) fn avro_to_json(value: Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => json!(i),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => json!(l),
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Bytes(b) | Value::Fixed(_, b) => json!(hex::encode(b)),
        Value::String(s) | Value::Enum(_, s) => json!(s),
        Value::Uuid(u) => json!(u.to_string()),
        Value::Union(_, v) => avro_to_json(*v),
        Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(avro_to_json).collect())
        }
        Value::Map(m) => {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, avro_to_json(v))).collect())
        }
        Value::Record(fields) => serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .collect(),
        ),
        other => json!(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_exactly_with_their_scale() {
        let text = |unscaled: i64, scale| {
            let bytes = unscaled.to_be_bytes().to_vec();
            decimal_text(&apache_avro::Decimal::from(bytes), scale)
        };
        assert_eq!(text(1250, 2), json!("12.50"));
        assert_eq!(text(-999_999_999_999, 4), json!("-99999999.9999"));
        assert_eq!(text(5, 3), json!("0.005"));
        assert_eq!(text(-5, 3), json!("-0.005"));
        assert_eq!(text(42, 0), json!("42"));
    }

    #[test]
    fn values_are_read_through_named_references() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "E", "fields": [
                {"name": "before", "type": ["null", {"type": "record", "name": "V", "fields": [
                    {"name": "n", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}}]}]},
                {"name": "after", "type": ["null", "V"]}]}"#,
        )
        .expect("schema");
        let row = |n: Vec<u8>| {
            Value::Union(
                1,
                Box::new(Value::Record(vec![(
                    "n".into(),
                    Value::Decimal(apache_avro::Decimal::from(n)),
                )])),
            )
        };
        let value = Value::Record(vec![
            ("before".into(), row(vec![0x04, 0xe2])),
            ("after".into(), row(vec![0xfb, 0x1e])),
        ]);
        assert_eq!(
            avro_to_json_typed(value, &schema),
            json!({"before": {"n": "12.50"}, "after": {"n": "-12.50"}})
        );
    }
}
