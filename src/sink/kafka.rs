//! The Kafka sink: an idempotent rdkafka producer with `acks=all`.
//!
//! Invariant: [`KafkaSink::deliver`] returns `Ok` only after the broker's delivery report for
//! the record, i.e. once every in-sync replica has it. Transient failures (broker down, leader
//! moving, timeouts) are retried with exponential backoff until the caller abandons the event or
//! `retry_max_elapsed` passes; definite ones (too large, not allowed, invalid) are returned at
//! once with their [`ErrorClass`] so that one poison record never stalls the stream.
//!
//! Topics are created through the admin API the first time they are used, since brokers may not
//! auto-create them.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{debug, info, warn};

use super::context::KafkaLog;
use crate::config::KafkaConfig;
use crate::error::{ErrorClass, retry_policy};

/// A record ready for Kafka.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    /// Topic name (legal, already rendered).
    pub topic: String,
    /// Encoded key.
    pub key: Option<Vec<u8>>,
    /// Encoded value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers (names are mostly switchyard's own constants: not copied per record).
    pub headers: Vec<(std::borrow::Cow<'static, str>, Vec<u8>)>,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why a record was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The record itself cannot be produced; retrying will not help.
    #[error("{class}: {message}")]
    Definite {
        /// Error class for the DLQ.
        class: ErrorClass,
        /// What the broker or client said.
        message: String,
    },
    /// Transient failures went on for longer than `retry_max_elapsed`.
    #[error("gave up after retrying for {elapsed:?}: {last}")]
    RetriesExhausted {
        /// How long it was retried.
        elapsed: Duration,
        /// The last error.
        last: String,
    },
    /// The caller stopped waiting; the source will deliver the event again.
    #[error("abandoned by the source after: {last}")]
    Abandoned {
        /// The last error.
        last: String,
    },
    /// The sink could not be set up (bad librdkafka properties).
    #[error("kafka client configuration: {0}")]
    Config(String),
}

impl SinkError {
    /// The DLQ error class.
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Definite { class, .. } => *class,
            SinkError::RetriesExhausted { .. } => ErrorClass::RetriesExhausted,
            SinkError::Abandoned { .. } => ErrorClass::Unavailable,
            SinkError::Config(_) => ErrorClass::Internal,
        }
    }
}

/// What to do about one failed attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Transient: try again after a backoff.
    Retry(String),
    /// The delivery timed out: the broker is down, or up but refusing this producer's state.
    TimedOut(String),
    /// The broker does not know the topic (any more): create it again, then retry.
    RecreateTopic(String),
    /// The producer is unusable (fatal error, lost producer id): a new one, then retry.
    RebuildProducer(String),
    /// Definite: this record can never be produced.
    Fail(ErrorClass, String),
}

impl Attempt {
    /// What went wrong, in the client's or broker's words.
    pub(crate) fn message(&self) -> &str {
        match self {
            Attempt::Retry(m)
            | Attempt::TimedOut(m)
            | Attempt::RecreateTopic(m)
            | Attempt::RebuildProducer(m)
            | Attempt::Fail(_, m) => m,
        }
    }
}

/// A record handed to the producer: its delivery report, and the producer that has it.
pub(crate) struct Queued {
    /// The producer the record was given to (a report of a replaced producer is not acted on).
    pub(crate) producer: Arc<FutureProducer<KafkaLog>>,
    /// Resolves with the delivery report; `None` for the benchmark-only null sink.
    pub(crate) report: Option<rdkafka::producer::DeliveryFuture>,
    /// When it was handed over (for the produce latency).
    pub(crate) enqueued: Instant,
}

/// Why a record could not be handed to the producer.
pub(crate) enum Refused {
    /// librdkafka's queue is full: hand it over again once earlier records are reported.
    QueueFull,
    /// Any other refusal, classified.
    Failed(Attempt),
}

/// The Kafka sink.
pub(crate) struct KafkaSink {
    cfg: KafkaConfig,
    client_config: ClientConfig,
    producer: RwLock<Arc<FutureProducer<KafkaLog>>>,
    admin: Arc<AdminClient<KafkaLog>>,
    known_topics: Mutex<crate::FastSet<String>>,
    last_rebuild: Mutex<Option<Instant>>,
    /// Benchmarks only (feature `bench-sink`, `SWITCHYARD_BENCH_SINK=null`): records are
    /// acknowledged and discarded.
    null: bool,
}

/// True when the benchmark-only null sink is on: in a binary built with the `bench-sink`
/// feature, `SWITCHYARD_BENCH_SINK=null` makes every record count as acknowledged without being
/// sent, to measure everything but Kafka (announced loudly at start). Without the feature (any
/// release build) the variable is ignored.
#[cfg(feature = "bench-sink")]
fn bench_null_sink() -> bool {
    let on = std::env::var("SWITCHYARD_BENCH_SINK").is_ok_and(|v| v == "null");
    if on {
        warn!(
            "SWITCHYARD_BENCH_SINK=null: BENCHMARK MODE, records are discarded, not sent to Kafka"
        );
    }
    on
}

#[cfg(not(feature = "bench-sink"))]
fn bench_null_sink() -> bool {
    if std::env::var_os("SWITCHYARD_BENCH_SINK").is_some() {
        warn!(
            "SWITCHYARD_BENCH_SINK is ignored: this binary is built without the bench-sink feature, so records go to Kafka"
        );
    }
    false
}

/// A producer is rebuilt at most this often, however many deliveries fail at once.
const REBUILD_INTERVAL: Duration = Duration::from_secs(10);

impl KafkaSink {
    /// Checks the producer properties (names and values) without creating a client, so
    /// nothing connects: for `switchyard check`.
    pub(crate) fn validate(cfg: &KafkaConfig) -> Result<(), SinkError> {
        client_config(cfg)
            .create_native_config()
            .map(|_| ())
            .map_err(|e| SinkError::Config(e.to_string()))
    }

    /// Builds the producer and admin client; no connection is made yet.
    pub(crate) fn new(cfg: &KafkaConfig) -> Result<KafkaSink, SinkError> {
        let client_config = client_config(cfg);
        let producer: FutureProducer<KafkaLog> = client_config
            .create_with_context(KafkaLog)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        let admin: AdminClient<KafkaLog> = admin_config(cfg)
            .create_with_context(KafkaLog)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        Ok(KafkaSink {
            cfg: cfg.clone(),
            client_config,
            producer: RwLock::new(Arc::new(producer)),
            admin: Arc::new(admin),
            known_topics: Mutex::new(crate::FastSet::default()),
            last_rebuild: Mutex::new(None),
            null: bench_null_sink(),
        })
    }

    fn producer(&self) -> Arc<FutureProducer<KafkaLog>> {
        match self.producer.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// False while a rebuild happened less than [`REBUILD_INTERVAL`] ago.
    fn rebuild_due(&self) -> bool {
        self.last_rebuild
            .lock()
            .map(|last| !last.is_some_and(|t| t.elapsed() < REBUILD_INTERVAL))
            .unwrap_or(true)
    }

    fn rebuild_producer(&self, reason: &str) {
        if let Ok(mut last) = self.last_rebuild.lock() {
            if last.is_some_and(|t| t.elapsed() < REBUILD_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        warn!(reason, "rebuilding the Kafka producer");
        match self
            .client_config
            .create_with_context::<_, FutureProducer<KafkaLog>>(KafkaLog)
        {
            Ok(p) => {
                let mut guard = match self.producer.write() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = Arc::new(p);
                drop(guard);
                // A broker that forgot this producer's id usually forgot everything (restarted
                // without its storage): check every topic again before producing to it. A new
                // producer learns of a topic missing from the broker only after librdkafka's
                // `topic.metadata.propagation.max.ms` (30 s), and each rebuild would start that
                // wait over; created first, the topic is there when the new producer asks.
                if let Ok(mut t) = self.known_topics.lock() {
                    t.clear();
                }
            }
            Err(e) => warn!(error = %e, "could not rebuild the Kafka producer"),
        }
    }

    fn topic_known(&self, topic: &str) -> bool {
        self.known_topics
            .lock()
            .map(|t| t.contains(topic))
            .unwrap_or(false)
    }

    fn set_topic_known(&self, topic: &str, known: bool) {
        if let Ok(mut t) = self.known_topics.lock() {
            if known {
                t.insert(topic.to_string());
            } else {
                t.remove(topic);
            }
        }
    }

    /// Creates `topic` unless it exists; remembered, so each topic costs one call per process.
    /// A broker that refuses to create it (no `CREATE` permission for this principal, or no
    /// CreateTopics at all) is fine when it has the topic already.
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<(), SinkError> {
        if self.topic_known(topic) {
            return Ok(());
        }
        match self.create_topic(topic).await {
            Ok(()) => {}
            Err(e) if self.broker_has(topic).await => {
                info!(topic, error = %e, "could not create the topic, but it exists: using it");
            }
            Err(e) => return Err(e),
        }
        self.set_topic_known(topic, true);
        Ok(())
    }

    /// True when the broker's metadata lists `topic` with partitions and no error.
    async fn broker_has(&self, topic: &str) -> bool {
        let admin = Arc::clone(&self.admin);
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .is_ok_and(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
        .await
        .unwrap_or(false)
    }

    /// Asks the broker to create `topic` (already there is fine).
    async fn create_topic(&self, topic: &str) -> Result<(), SinkError> {
        let new = NewTopic::new(
            topic,
            self.cfg.partitions,
            TopicReplication::Fixed(self.cfg.replication_factor),
        );
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = self.admin.create_topics([&new], &opts).await.map_err(|e| {
            SinkError::RetriesExhausted {
                elapsed: Duration::ZERO,
                last: format!("creating topic {topic}: {e}"),
            }
        })?;
        for result in results {
            match result {
                Ok(_) => info!(topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => debug!(topic, "topic exists"),
                Err((
                    _,
                    code @ (RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::PolicyViolation
                    | RDKafkaErrorCode::InvalidReplicationFactor
                    | RDKafkaErrorCode::InvalidPartitions),
                )) => {
                    return Err(SinkError::Definite {
                        class: ErrorClass::Produce,
                        message: format!("cannot create topic {topic}: {code}"),
                    });
                }
                Err((_, code)) => {
                    return Err(SinkError::RetriesExhausted {
                        elapsed: Duration::ZERO,
                        last: format!("creating topic {topic}: {code}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Produces `record` and waits for its delivery report; see the module invariant.
    pub(crate) async fn deliver(
        &self,
        record: &Record,
        abandoned: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Placement, SinkError> {
        if self.null {
            return Ok(Placement {
                partition: 0,
                offset: -1,
            });
        }
        let mut backoff = retry_policy(self.cfg.retry_max_elapsed);
        let started = Instant::now();
        loop {
            let outcome = match self.ensure_topic(&record.topic).await {
                Err(SinkError::Definite { class, message }) => Attempt::Fail(class, message),
                Err(e) => Attempt::Retry(e.to_string()),
                Ok(()) => match self.produce_once(record).await {
                    Ok(placement) => return Ok(placement),
                    Err(attempt) => attempt,
                },
            };
            let last = match self.recover(&record.topic, outcome).await {
                Ok(last) => last,
                Err((class, message)) => return Err(SinkError::Definite { class, message }),
            };
            if abandoned() {
                return Err(SinkError::Abandoned { last });
            }
            match backoff.next_backoff() {
                Some(wait) => {
                    debug!(topic = %record.topic, error = %last, ?wait, "produce failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => {
                    return Err(SinkError::RetriesExhausted {
                        elapsed: started.elapsed(),
                        last,
                    });
                }
            }
        }
    }

    /// Acts on a failed attempt before the next one (a new producer, the topic checked
    /// again), and returns what went wrong; `Err` for a definite failure.
    pub(crate) async fn recover(
        &self,
        topic: &str,
        attempt: Attempt,
    ) -> Result<String, (ErrorClass, String)> {
        Ok(match attempt {
            Attempt::Fail(class, message) => return Err((class, message)),
            Attempt::Retry(m) => m,
            Attempt::TimedOut(m) => {
                // Reachable yet timing out: the broker lost this producer's id (e.g. a
                // restarted broker without its state) and librdkafka keeps retrying with it.
                // A new producer gets a new id; with the broker down this changes nothing.
                // Its topic may be gone with it: check again before the next attempt.
                if self.rebuild_due() && self.is_reachable(Duration::from_secs(1)).await.is_ok() {
                    self.rebuild_producer(&m);
                    self.set_topic_known(topic, false);
                }
                m
            }
            Attempt::RecreateTopic(m) => {
                self.set_topic_known(topic, false);
                m
            }
            Attempt::RebuildProducer(m) => {
                self.rebuild_producer(&m);
                m
            }
        })
    }

    /// Hands `record` to the producer without waiting for its report: records handed over
    /// one after another reach their partition in that order (the idempotent producer keeps
    /// it through its own retries). The topic must be ensured first ([`KafkaSink::ensure_topic`]).
    pub(crate) fn enqueue(&self, record: &Record) -> Result<Queued, Refused> {
        let producer = self.producer();
        let enqueued = Instant::now();
        if self.null {
            return Ok(Queued {
                producer,
                report: None,
                enqueued,
            });
        }
        match producer.send_result(future_record(record)) {
            Ok(report) => Ok(Queued {
                producer,
                report: Some(report),
                enqueued,
            }),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Refused::QueueFull)
            }
            Err((err, _)) => Err(Refused::Failed(self.classify_report(&producer, err))),
        }
    }

    /// What a failed delivery report of `producer` means now. Failures reported by a producer
    /// that was replaced while the record waited in it were already acted on: another rebuild
    /// would throw away the new producer (and restart its wait for the topic's metadata), so
    /// they only ask for another try.
    pub(crate) fn classify_report(
        &self,
        producer: &Arc<FutureProducer<KafkaLog>>,
        err: KafkaError,
    ) -> Attempt {
        let attempt = self.classify(producer, err);
        if Arc::ptr_eq(producer, &self.producer()) {
            return attempt;
        }
        match attempt {
            Attempt::TimedOut(m) | Attempt::RebuildProducer(m) => Attempt::Retry(m),
            other => other,
        }
    }

    /// Counts a delivered record (produce latency, records by topic).
    pub(crate) fn observe_delivered(topic: &str, enqueued: Instant) {
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.produce_latency.observe(enqueued.elapsed().as_secs_f64());
            m.records_produced.with(topic, |c| c.inc());
        }
    }

    async fn produce_once(&self, record: &Record) -> Result<Placement, Attempt> {
        let fr = future_record(record);
        let producer = self.producer();
        let enqueued = Instant::now();
        // Waits for queue space up to the delivery timeout: librdkafka's queue is the bound.
        match producer.send(fr, self.cfg.delivery_timeout).await {
            Ok(d) => {
                Self::observe_delivered(&record.topic, enqueued);
                Ok(Placement {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((err, _)) => Err(self.classify_report(&producer, err)),
        }
    }

    fn classify(&self, producer: &FutureProducer<KafkaLog>, err: KafkaError) -> Attempt {
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Attempt::RebuildProducer(format!("{code}: {reason}"));
        }
        let text = err.to_string();
        let Some(code) = err.rdkafka_error_code() else {
            return Attempt::Retry(text);
        };
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge | C::InvalidMessageSize => {
                Attempt::Fail(ErrorClass::Oversize, text)
            }
            C::InvalidRecord
            | C::InvalidMessage
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::PolicyViolation
            | C::InvalidTopic
            | C::UnsupportedForMessageFormat
            | C::InvalidRequiredAcks => Attempt::Fail(ErrorClass::Produce, text),
            C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => {
                Attempt::RecreateTopic(text)
            }
            C::MessageTimedOut => Attempt::TimedOut(text),
            // A broker that refuses this producer's id or epoch (e.g. one without KIP-360,
            // after librdkafka bumped the epoch following timed-out requests) takes records
            // again only from a new producer.
            C::Fatal
            | C::OutOfOrderSequenceNumber
            | C::UnknownProducerId
            | C::InvalidProducerEpoch
            | C::ProducerFenced => Attempt::RebuildProducer(text),
            _ => Attempt::Retry(text),
        }
    }

    /// How long one record may take from hand-over to its delivery report
    /// (`message.timeout.ms`): every report arrives within it.
    pub(crate) fn delivery_timeout(&self) -> Duration {
        self.cfg.delivery_timeout
    }

    /// The largest record librdkafka accepts (`message.max.bytes`, default 1,000,000).
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.cfg
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    /// True when a broker answers a metadata request within `timeout`.
    pub(crate) async fn is_reachable(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits up to `timeout` for records still queued in the producer.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer().flush(timeout) {
            warn!(error = %e, "records were still queued at shutdown");
        }
    }
}

/// The producer's view of `record` (borrowed: nothing is copied until librdkafka takes it).
fn future_record(record: &Record) -> FutureRecord<'_, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (k, v) in &record.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
    if let Some(v) = &record.value {
        fr = fr.payload(v.as_slice());
    }
    if let Some(k) = &record.key {
        fr = fr.key(k.as_slice());
    }
    fr
}

fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "switchyard")
        .set("log_level", "4");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// How long the producer gathers records into a batch, unless `[kafka.properties]` says
/// (`linger.ms`, alias `queue.buffering.max.ms`). librdkafka's own default, 5 ms, is added to
/// every webhook's answer; 2 ms measured 12.1k acknowledged webhooks/s against 8.4k with 5 ms
/// (64 connections, `benches/webhooks.sh`), with less CPU per request, while batches stay large
/// under load (records wait for each other while a request is in flight).
pub(crate) const DEFAULT_LINGER_MS: &str = "2";

/// Producer settings: idempotent, acks=all, one delivery attempt bounded by `delivery_timeout`.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(cfg);
    if !cfg.properties.contains_key("linger.ms")
        && !cfg.properties.contains_key("queue.buffering.max.ms")
    {
        c.set("linger.ms", DEFAULT_LINGER_MS);
    }
    c.set("enable.idempotence", "true").set("acks", "all").set(
        "message.timeout.ms",
        cfg.delivery_timeout.as_millis().to_string(),
    );
    c
}

fn admin_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "switchyard-admin")
        // Asking for a topic's metadata must not create it with the broker's defaults.
        .set("allow.auto.create.topics", "false")
        .set("log_level", "4");
    for (k, v) in security_properties(cfg) {
        c.set(k, v);
    }
    c
}

/// The `[kafka.properties]` every client needs (TLS and SASL), as opposed to producer tuning.
pub fn security_properties(cfg: &KafkaConfig) -> impl Iterator<Item = (&String, &String)> {
    cfg.properties.iter().filter(|(k, _)| {
        k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.")
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cfg(props: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            partitions: 1,
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(1),
            retry_max_elapsed: Duration::from_secs(1),
            max_in_flight: 1,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_existing_topic_is_used_when_the_broker_refuses_to_create_topics() {
        // librdkafka's mock cluster does not implement CreateTopics: like a cluster where this
        // principal may not create topics, it refuses every creation, existing topic or not.
        let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        mock.create_topic("existing", 1, 1).expect("topic");
        let mut c = cfg(&[]);
        c.bootstrap_servers = mock.bootstrap_servers();
        c.delivery_timeout = Duration::from_secs(5);
        let sink = KafkaSink::new(&c).expect("sink");
        sink.ensure_topic("existing")
            .await
            .expect("a topic the broker has is usable");
        let placed = sink
            .deliver(
                &Record {
                    topic: "existing".into(),
                    key: Some(b"k".to_vec()),
                    value: Some(b"v".to_vec()),
                    headers: Vec::new(),
                },
                &|| false,
            )
            .await
            .expect("delivered");
        assert_eq!(placed.partition, 0);
        assert!(
            sink.ensure_topic("missing").await.is_err(),
            "a topic that cannot be created and does not exist is an error"
        );
    }

    #[test]
    fn managed_kafka_security_settings_are_accepted_by_the_bundled_librdkafka() {
        // Fails at client creation if librdkafka was built without OpenSSL or SASL SCRAM.
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let c = cfg(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", mechanism),
                ("sasl.username", "user"),
                ("sasl.password", "secret"),
                ("compression.type", "zstd"),
            ]);
            if let Err(e) = KafkaSink::new(&c) {
                panic!("{mechanism}: {e}");
            }
        }
        assert!(KafkaSink::new(&cfg(&[("security.protocol", "SSL")])).is_ok());
    }

    #[test]
    fn the_producer_lingers_2ms_unless_the_properties_say_otherwise() {
        assert_eq!(client_config(&cfg(&[])).get("linger.ms"), Some("2"));
        let own = client_config(&cfg(&[("linger.ms", "20")]));
        assert_eq!(own.get("linger.ms"), Some("20"));
        let alias = client_config(&cfg(&[("queue.buffering.max.ms", "0")]));
        assert_eq!(alias.get("linger.ms"), None);
        assert_eq!(alias.get("queue.buffering.max.ms"), Some("0"));
    }

    #[test]
    fn an_unknown_librdkafka_property_is_a_configuration_error() {
        let err = KafkaSink::new(&cfg(&[("no.such.property", "1")]))
            .err()
            .expect("rejected");
        assert!(matches!(err, SinkError::Config(m) if m.contains("no.such.property")));
    }
}
