//! On-call sees what happened: `/metrics` counts exactly the events that were sent and parses
//! as Prometheus text; `/readyz` says which component is not ready.

use std::time::Duration;

use futures::StreamExt;
use prometheus_parse::{LineInfo, Scrape, Value};

use crate::support::daemon::{self, Setup, write_config};
use crate::support::{Stack, wait_for_async};

/// The exposition parsed; panics (with the offending line) if any sample line does not parse.
fn parse(text: &str) -> Scrape {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match LineInfo::parse(line) {
            LineInfo::Sample { value, .. } => assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "sample value does not parse: {line}"
            ),
            _ => panic!("not a sample line: {line}"),
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition parses")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        })
}

async fn ready(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = client.get(format!("{url}/readyz")).send().await.ok()?;
    (r.status() == 200).then_some(())?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_webhooks_sent_and_parse_as_prometheus_text() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let (setup, url) = Setup::new(&broker, &registry, "metered").on_free_port();
    let path = write_config(dir.path(), &setup);
    // Its own process: the metrics registry is process-wide.
    let _sy = daemon::spawn_binary(&path, dir.path().join("switchyard.log"));
    let client = daemon::client(Duration::from_secs(30));
    wait_for_async("switchyard to be ready", Duration::from_secs(60), || {
        ready(&client, &url)
    })
    .await;

    let sent = 40usize;
    let statuses: Vec<u16> = futures::stream::iter(0..sent)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .post(format!("{url}/webhooks/orders"))
                    .header("content-type", "application/json")
                    .header("webhook-id", format!("m-{i}"))
                    .header("authorization", "Bearer secret-canary")
                    .body(format!(r#"{{"n":{i},"card":"payload-canary"}}"#))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for _ in 0..3 {
        let r = client
            .post(format!("{url}/webhooks/orders"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400);
    }

    let text = daemon::metrics(&url).await;
    let scrape = parse(&text);
    let n = sent as f64;
    let source = [("source", "orders")];
    assert_eq!(
        value(&scrape, "switchyard_events_received_total", &source),
        Some(n),
        "{text}"
    );
    assert_eq!(
        value(
            &scrape,
            "switchyard_events_routed_total",
            &[("route", "orders-to-kafka")]
        ),
        Some(n)
    );
    assert_eq!(
        value(
            &scrape,
            "switchyard_records_produced_total",
            &[("topic", "metered")]
        ),
        Some(n)
    );
    assert_eq!(
        value(
            &scrape,
            "switchyard_webhook_requests_total",
            &[("source", "orders"), ("status", "200")]
        ),
        Some(n)
    );
    assert_eq!(
        value(
            &scrape,
            "switchyard_webhook_requests_total",
            &[("source", "orders"), ("status", "400")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scrape,
            "switchyard_end_to_end_latency_seconds_count",
            &source
        ),
        Some(n)
    );
    assert_eq!(
        value(&scrape, "switchyard_produce_latency_seconds_count", &[]),
        Some(n)
    );
    assert_eq!(
        value(&scrape, "switchyard_events_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "switchyard_dlq_entries", &[("status", "pending")]),
        Some(0.0)
    );
    // Key and value schemas are registered once each; every other encoding hits the cache.
    let registered = value(
        &scrape,
        "switchyard_registry_requests_total",
        &[("result", "ok")],
    );
    let hits = value(&scrape, "switchyard_schema_cache_hits_total", &[]);
    assert_eq!(registered, Some(2.0));
    assert_eq!(hits, Some(2.0 * n - 2.0));
    let build = scrape
        .samples
        .iter()
        .find(|s| s.metric == "switchyard_build_info")
        .expect("build info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build.labels.get("git_sha").is_some_and(|s| !s.is_empty()));
    // Every family is prefixed and has help text.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(line["# TYPE ".len()..].starts_with("switchyard_"), "{line}");
    }

    // Not a terminal: one JSON object per line; at info level no payload and no credential.
    let log = std::fs::read_to_string(dir.path().join("switchyard.log")).expect("log");
    assert!(log.contains("switchyard is listening"), "{log}");
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(entry["level"].is_string() && entry["fields"]["message"].is_string());
    }
    assert!(
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.starts_with('{')),
        "JSON lines only:\n{log}"
    );
    assert!(!log.contains("payload-canary") && !log.contains("secret-canary"));
}

/// The readiness answer: status code and JSON body.
async fn readiness(client: &reqwest::Client, url: &str) -> Option<(u16, serde_json::Value)> {
    let r = client.get(format!("{url}/readyz")).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_kafka_while_the_broker_is_down_and_is_ready_again_when_it_returns() {
    let Stack {
        dir,
        mut broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "ready",
        "",
    );
    let (sy, url) = daemon::start(config).await;
    let client = daemon::client(Duration::from_secs(10));
    let body = wait_for_async("ready", Duration::from_secs(30), || ready(&client, &url)).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["kafka"], "ok");
    assert_eq!(body["dlq"], "ok");

    broker.stop();
    let body = wait_for_async("unready", Duration::from_secs(30), || async {
        let (status, body) = readiness(&client, &url).await?;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["not_ready"], serde_json::json!(["kafka"]), "{body}");
    assert_eq!(body["dlq"], "ok", "only Kafka is named: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Kafka is not reachable")),
        "{body}"
    );

    let _broker = crate::support::broker::Broker::start_on(broker.port(), dir.path());
    wait_for_async("ready again", Duration::from_secs(60), || {
        ready(&client, &url)
    })
    .await;
    daemon::stop(sy).await;
}
