//! A product team reads well-formed Avro CloudEvents for every webhook that was answered 200.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use crate::support::Stack;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_webhooks_each_land_once_intact_after_200() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "orders",
        "",
    );
    let (sy, url) = daemon::start(config).await;

    let client = reqwest::Client::new();
    let n = 1000usize;
    let statuses: Vec<(usize, u16)> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let url = format!("{url}/webhooks/orders");
            async move {
                let body = format!(r#"{{"order":{i},"note":"caf\u00e9 ✓ {i}"}}"#);
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", format!("evt-{i}"))
                    .header("ce-type", "order.created")
                    .body(body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("request completes");
                (i, resp.status().as_u16())
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let not_ok: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(
        not_ok.is_empty(),
        "{} requests were not answered 200: {:?}",
        not_ok.len(),
        &not_ok[..not_ok.len().min(5)]
    );

    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || read_topic(&bootstrap, "orders", n + 1, Duration::from_secs(20))
    })
    .await
    .expect("consumer thread");
    assert_eq!(records.len(), n, "exactly one record per accepted webhook");

    let dec = decoder(&registry.url());
    let mut ids = HashSet::new();
    for r in &records {
        let (_, value) = decode(&dec, &r.value).await;
        let id = value["id"].as_str().expect("id").to_string();
        let i: usize = id
            .strip_prefix("evt-")
            .expect("provider id kept")
            .parse()
            .expect("numeric");
        assert_eq!(
            value["data"].as_str().expect("data"),
            format!(r#"{{"order":{i},"note":"caf\u00e9 ✓ {i}"}}"#)
        );
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "order.created");
        assert_eq!(value["source"], "switchyard/orders");
        assert_eq!(value["datacontenttype"], "application/json");
        assert!(
            value["time"].as_i64().expect("time") > 1_600_000_000_000_000,
            "timestamp-micros"
        );
        let key = r.key.as_ref().expect("records are keyed");
        let (_, key) = decode(&dec, key).await;
        assert_eq!(key.as_str(), Some(id.as_str()), "key is the event id");
        let header = r
            .headers
            .iter()
            .find(|(k, _)| k == "switchyard.event_id")
            .expect("event id header");
        assert_eq!(header.1, id.as_bytes());
        assert!(ids.insert(id), "no duplicates");
    }
    assert_eq!(ids.len(), n);
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_id_the_event_id_is_a_hash_of_the_body() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "hashes",
        "",
    );
    let (sy, url) = daemon::start(config).await;
    let client = reqwest::Client::new();
    let first: serde_json::Value = client
        .post(format!("{url}/webhooks/orders"))
        .body(r#"{"a":1}"#)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let again: serde_json::Value = client
        .post(format!("{url}/webhooks/orders"))
        .body(r#"{"a":1}"#)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(first["status"], "accepted");
    assert_eq!(first["id"], again["id"], "the same body has the same id");
    assert!(first["id"].as_str().expect("id").starts_with("sha256:"));
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_each_record_decoded_as_one_json_line() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "tailed",
        "",
    );
    let config_path = config.path.clone();
    let (sy, url) = daemon::start(config).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = client
            .post(format!("{url}/webhooks/orders"))
            .header("webhook-id", format!("t-{i}"))
            .body(format!(r#"{{"n":{i}}}"#))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    let lines: Vec<serde_json::Value> = crate::support::tail(&config_path, "tailed", 3)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| l["value"]["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["t-0", "t-1", "t-2"]);
    for l in &lines {
        assert_eq!(
            l["key"], l["value"]["id"],
            "key decoded through the registry"
        );
        assert_eq!(l["headers"]["switchyard.route"], "orders-to-kafka");
        assert_eq!(l["topic"], "tailed");
    }
    daemon::stop(sy).await;
}
