//! A webhook sender is told 200 only once its event is in Kafka; otherwise it retries later.

use std::time::Duration;

use crate::support::Stack;
use crate::support::broker::Broker;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{daemon, wait_for_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_a_post_gets_503_and_succeeds_when_retried_after_it_is_back() {
    let Stack {
        dir,
        mut broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "payments",
        "ack_timeout = \"2s\"",
    );
    let (sy, url) = daemon::start(config).await;
    let client = reqwest::Client::new();
    let post = |id: &'static str| {
        let client = client.clone();
        let url = format!("{url}/webhooks/orders");
        async move {
            client
                .post(url)
                .header("webhook-id", id)
                .body(format!(r#"{{"payment":"{id}"}}"#))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("request completes")
        }
    };

    // Warm: schema registered, topic created, producer connected.
    assert_eq!(post("p-0").await.status(), 200);

    broker.stop();
    let started = std::time::Instant::now();
    let resp = post("p-1").await;
    let waited = started.elapsed();
    assert_eq!(resp.status(), 503, "no 200 without a Kafka ack");
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(
        waited < Duration::from_secs(10),
        "503 within the ack bound, took {waited:?}"
    );
    let body: serde_json::Value = resp.json().await.expect("json error body");
    assert_eq!(body["error"], "unavailable");
    let ready = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "not ready while Kafka is down");

    // The broker comes back (empty: in-memory storage) on the same port.
    let broker = Broker::start_on(broker.port(), dir.path());
    let resp = wait_for_async(
        "a retried POST to be accepted",
        Duration::from_secs(60),
        || async {
            let r = post("p-1").await;
            (r.status() == 200).then_some(r)
        },
    )
    .await;
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["id"], "p-1");

    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || read_topic(&bootstrap, "payments", 1, Duration::from_secs(20))
    })
    .await
    .expect("consumer thread");
    assert!(!records.is_empty(), "the retried event is in Kafka");
    let dec = decoder(&registry.url());
    for r in &records {
        let (_, v) = decode(&dec, &r.value).await;
        assert_eq!(
            v["id"], "p-1",
            "only whole events, and only the retried one, are on the new broker"
        );
        assert_eq!(v["data"], r#"{"payment":"p-1"}"#);
    }
    daemon::stop(sy).await;
}
