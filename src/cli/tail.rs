//! `switchyard tail`: print a topic's records as JSON, Avro decoded through the registry
//! ([`crate::avro::json`]).

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use serde_json::{Map, json};

use crate::avro::json::avro_to_json_typed;

use crate::config::Config;
use crate::sink::context::KafkaLog;

/// What to print.
#[derive(Debug, Clone)]
pub(super) struct TailOptions {
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
pub(super) enum TailError {
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
pub(super) async fn tail(
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
