//! Reading a topic back with a plain Kafka consumer, and decoding through the registry.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;

/// One record as read from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// True when the broker knows `topic` (switchyard creates a dynamic topic with its first
/// record, so a topic that does not exist never received one).
pub fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

/// Reads `topic` from the earliest offset until `want` records arrived or `timeout` passed,
/// then on while records keep coming: a read of everything (`want = usize::MAX`) stops only
/// at a pause (one empty poll of 200 ms), so a topic larger than one `timeout` can fetch is
/// still read whole on a slow machine. Bounded all the same, at 4 × `timeout`, for a topic
/// that a running producer keeps filling. Tansu's latest-offset answer is wrong, so this
/// never relies on watermarks.
pub fn read_topic(bootstrap: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "switchyard-tests")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    // The topic may not exist yet: switchyard creates it with the first record.
    let partitions: Vec<i32> = super::wait_for(&format!("topic {topic} to exist"), timeout, || {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(2))
            .ok()?;
        let p: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        (!p.is_empty()).then_some(p)
    });
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let deadline = started + timeout;
    let cap = started + timeout * 4;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < cap {
        let polled = consumer.poll(Duration::from_millis(200));
        if polled.is_none() && Instant::now() >= deadline {
            break;
        }
        match polled {
            Some(Ok(m)) => out.push(Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// A decoder that checks the Confluent framing and resolves schema ids at the registry.
pub fn decoder(registry_url: &str) -> AvroDecoder {
    AvroDecoder::new(SrSettings::new(registry_url.to_string()))
}

/// Decodes one Confluent-framed Avro value to JSON, asserting the magic byte.
pub async fn decode(decoder: &AvroDecoder, bytes: &[u8]) -> (u32, serde_json::Value) {
    assert!(
        bytes.len() > 5,
        "record too short for the Confluent wire format"
    );
    assert_eq!(bytes[0], 0, "magic byte must be 0");
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let decoded = decoder
        .decode_with_schema(Some(bytes))
        .await
        .unwrap_or_else(|e| panic!("schema id {id} does not decode at the registry: {e}"))
        .expect("a value");
    (
        id,
        switchyard::avro::json::avro_to_json_typed(decoded.value, &decoded.schema.parsed),
    )
}
