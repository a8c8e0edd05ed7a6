//! The floor of the webhook ack path (benches/webhooks.sh, kind `floor`): a minimal client that
//! produces what switchyard's acknowledged webhooks produce, with nothing else in the way.
//!
//! `--in-flight` tasks (default 64, like the 64 HTTP connections) each produce one record, wait
//! for its acknowledgement, and produce the next (closed loop). Records are `--record-bytes`
//! (default 1 KiB) values with a distinct key each (an event id, as switchyard keys webhooks),
//! to a topic created with the `[kafka]` partitions and replication factor of `--config`, by a
//! producer built from that same file with switchyard's own `client_config` (idempotent,
//! acks=all, its linger, message timeout and `[kafka.properties]`): the same settings by
//! construction. Switchyard's acknowledged webhooks per second can at best approach this
//! rate on the same broker; the script reports their ratio.
//!
//! The output has the fields of benches/webhook_load.rs's JSON line (one line to stdout, a
//! summary to stderr): `cpu_s.server` is this client's own CPU, `--cpu-pid` adds others (the
//! broker), percentiles are produce → acknowledgement latencies.
//!
//! ```text
//! produce_floor --config routes.toml --topic bench.floor --duration 10 --warmup 3 \
//!     --in-flight 64 --record-bytes 1024 --cpu-pid broker=1234
//! ```

#[path = "common/measure.rs"]
mod measure;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use measure::{clk_tck, percentile, sample};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

#[derive(Parser, Debug)]
#[command(about = "Acknowledged produce rate of a minimal client: the webhook ack path's floor")]
struct Args {
    /// A switchyard configuration: its [kafka] section gives the broker and the producer.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Topic (created with the configuration's partitions and replication factor).
    #[arg(long)]
    topic: String,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Records in flight at once, each awaiting its acknowledgement.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Prefix of the keys (default: from the clock).
    #[arg(long)]
    run_id: Option<String>,
    /// NAME=PID: CPU (utime+stime, all threads) of that process over the window is reported
    /// under NAME.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<String>,
    /// Ignored (`cargo bench` passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one task saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Produce → acknowledgement, µs, of the records acknowledged in the window.
    latencies: Vec<u32>,
    /// Records that failed in the window.
    failed_window: u64,
    /// Records that failed outside it.
    failed_outside: u64,
    /// The first failure.
    first_error: Option<String>,
}

/// One closed-loop task: produce, await the acknowledgement, again, until `stop`.
async fn task(
    producer: FutureProducer,
    topic: Arc<str>,
    value: Arc<Vec<u8>>,
    key_prefix: Arc<str>,
    n: usize,
    window: (Instant, Instant),
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut seq: u64 = 0;
    let mut key = String::with_capacity(key_prefix.len() + 16);
    while !stop.load(Ordering::Relaxed) {
        key.clear();
        key.push_str(&key_prefix);
        key.push_str(&format!("{:02x}_{seq:010}", n & 0xff));
        seq += 1;
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
            .key(key.as_bytes())
            .payload(value.as_slice());
        let sent = Instant::now();
        let outcome = producer.send(record, Duration::from_secs(5)).await;
        let done = Instant::now();
        let in_window = done >= window.0 && done < window.1;
        match outcome {
            Ok(_) if in_window => tally
                .latencies
                .push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX)),
            Ok(_) => {}
            Err((e, _)) => {
                if in_window {
                    tally.failed_window += 1;
                } else {
                    tally.failed_outside += 1;
                }
                tally.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        if done >= window.1 {
            break;
        }
    }
    tally
}

/// Creates `topic` as switchyard would (its partitions and replication factor); an existing
/// topic is fine.
async fn create_topic(kafka: &switchyard::config::KafkaConfig, topic: &str) -> anyhow::Result<()> {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in switchyard::sink::kafka::security_properties(kafka) {
        c.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = c.create()?;
    let new = NewTopic::new(
        topic,
        kafka.partitions,
        TopicReplication::Fixed(kafka.replication_factor),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics([&new], &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench targets without arguments: nothing to load then.
    if !std::env::args().any(|a| a.starts_with("--config")) {
        eprintln!(
            "produce_floor: the floor contender of benches/webhooks.sh; give --config to run it"
        );
        return Ok(());
    }
    let args = Args::parse();
    let config = switchyard::config::Config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let pids: Vec<(String, String)> = args
        .cpu_pids
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--cpu-pid wants NAME=PID, got {s}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:012x}", now.as_nanos() as u64 & 0xffff_ffff_ffff)
    });
    // One event loop, like one of switchyard's HTTP threads; the producer's own threads
    // (librdkafka's) do the network work, as they do in switchyard.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let producer: FutureProducer =
        switchyard::sink::kafka::client_config(&config.kafka).create()?;
    runtime.block_on(create_topic(&config.kafka, &args.topic))?;

    let start = Instant::now();
    let window = (
        start + Duration::from_secs_f64(args.warmup),
        start + Duration::from_secs_f64(args.warmup + args.duration),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let value = Arc::new(vec![b'x'; args.record_bytes]);
    let key_prefix: Arc<str> = Arc::from(format!("evt_{run_id}_").as_str());
    let (before, after, tallies) = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.in_flight)
            .map(|n| {
                tokio::spawn(task(
                    producer.clone(),
                    Arc::clone(&topic),
                    Arc::clone(&value),
                    Arc::clone(&key_prefix),
                    n,
                    window,
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.0)).await;
        let before = sample(&pids);
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.1)).await;
        let after = sample(&pids);
        stop.store(true, Ordering::Relaxed);
        // A record unacknowledged for 30 s after the window must not hang the run.
        let deadline = tokio::time::Instant::from_std(window.1 + Duration::from_secs(30));
        let mut tallies = Vec::new();
        for t in tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(tally)) => tallies.push(tally),
                Ok(Err(e)) => anyhow::bail!("produce task failed: {e}"),
                Err(_) => {
                    anyhow::bail!("a record was not acknowledged within 30 s of the window's end")
                }
            }
        }
        Ok::<_, anyhow::Error>((before, after, tallies))
    })?;

    let hz = clk_tck();
    let seconds = args.duration;
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let acked = latencies.len() as u64;
    let failed_window: u64 = tallies.iter().map(|t| t.failed_window).sum();
    let failed_outside: u64 = tallies.iter().map(|t| t.failed_outside).sum();
    let mut cpu = BTreeMap::new();
    cpu.insert(
        "server".to_string(),
        after.own.saturating_sub(before.own) as f64 / hz,
    );
    for (i, (name, _)) in pids.iter().enumerate() {
        if let (Some(a), Some(b)) = (before.procs[i], after.procs[i]) {
            *cpu.entry(name.clone()).or_insert(0.0) += b.saturating_sub(a) as f64 / hz;
        }
    }
    let rps = acked as f64 / seconds;
    let first_error = tallies.iter().find_map(|t| t.first_error.clone());
    let out = serde_json::json!({
        "kind": "floor",
        "seconds": seconds,
        "in_flight": args.in_flight,
        "record_bytes": args.record_bytes,
        "requests": acked,
        "accepted_total": acked,
        "rps": rps,
        "p50_us": percentile(&latencies, 50.0),
        "p99_us": percentile(&latencies, 99.0),
        "p999_us": percentile(&latencies, 99.9),
        "bad_window": failed_window,
        "bad_outside_window": failed_outside,
        "bodies": serde_json::json!({}),
        "io_errors": 0,
        "first_error": first_error,
        "cpu_s": cpu,
        "generator_cpu_s": 0.0,
        "machine_busy_s": (after.machine.0.saturating_sub(before.machine.0)) as f64 / hz,
        "steal_s": (after.machine.1.saturating_sub(before.machine.1)) as f64 / hz,
        "load1_start": before.load1,
        "load1_end": after.load1,
    });
    println!("{out}");
    eprintln!(
        "{rps:.0} acked records/s, p50 {:.2} ms, p99 {:.2} ms, failed {}{}",
        percentile(&latencies, 50.0) / 1000.0,
        percentile(&latencies, 99.0) / 1000.0,
        failed_window + failed_outside,
        first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
