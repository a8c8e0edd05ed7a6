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

    // Warm: schema registered, topic created, producer connected. A first delivery on a busy
    // machine may take longer than the 2 s ack budget: its 503 asks the sender to retry.
    wait_for_async(
        "a first post to be accepted",
        Duration::from_secs(60),
        || async { (post("p-0").await.status() == 200).then_some(()) },
    )
    .await;

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
    // Readiness is checked in the background every second (each check bounded by 2 s).
    wait_for_async(
        "/readyz to say not ready while Kafka is down",
        Duration::from_secs(10),
        || async {
            let r = client.get(format!("{url}/readyz")).send().await.ok()?;
            (r.status() == 503).then_some(())
        },
    )
    .await;

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

/// Every webhook answered 200 before a kill -9 was durable, its deduplication id too: after the
/// restart a retry of each is answered `duplicate`, and Kafka holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_answered_before_a_kill_9_are_duplicates_after_the_restart() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let (setup, url) = daemon::Setup::new(&broker, &registry, "once").on_free_port();
    let path = daemon::write_config(dir.path(), &setup);
    let client = daemon::client(Duration::from_secs(30));
    let post = {
        let (client, url) = (client.clone(), url.clone());
        move |id: String| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client
                    .post(format!("{url}/webhooks/orders"))
                    .header("webhook-id", &id)
                    .body(format!(r#"{{"order":"{id}"}}"#))
                    .send()
                    .await
                    .ok()?;
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.ok()?;
                Some((
                    status,
                    body["status"].as_str().unwrap_or_default().to_string(),
                ))
            }
        }
    };

    let mut sy = daemon::spawn_binary(&path, dir.path().join("switchyard-1.log"));
    daemon::wait_ready(&client, &url).await;
    // Many requests in flight; the daemon is killed after the first 100 answers.
    let (tx, mut rx) = tokio::sync::mpsc::channel(600);
    for i in 0..600 {
        let (tx, post) = (tx.clone(), post.clone());
        tokio::spawn(async move {
            let id = format!("once-{i}");
            let answer = post(id.clone()).await;
            let _ = tx.send((id, answer)).await;
        });
    }
    drop(tx);
    let mut accepted = Vec::new();
    let mut answered = 0;
    while let Some((id, answer)) = rx.recv().await {
        answered += 1;
        if answer == Some((200, "accepted".to_string())) {
            accepted.push(id);
        }
        if answered == 100 {
            sy.kill(); // SIGKILL, then reaped
        }
    }
    assert!(accepted.len() >= 90, "only {} accepted", accepted.len());
    assert!(
        accepted.len() < 600,
        "the kill came too late to test anything"
    );

    let _sy = daemon::spawn_binary(&path, dir.path().join("switchyard-2.log"));
    daemon::wait_ready(&client, &url).await;
    for id in &accepted {
        assert_eq!(
            post(id.clone()).await,
            Some((200, "duplicate".to_string())),
            "{id} was answered 200 before the kill"
        );
    }
    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || read_topic(&bootstrap, "once", usize::MAX, Duration::from_secs(5))
    })
    .await
    .expect("consumer thread");
    let mut per_id = std::collections::HashMap::<String, usize>::new();
    for r in &records {
        if let Some((_, v)) = r.headers.iter().find(|(k, _)| k == "switchyard.event_id") {
            *per_id
                .entry(String::from_utf8_lossy(v).into_owned())
                .or_default() += 1;
        }
    }
    for id in &accepted {
        assert_eq!(per_id.get(id), Some(&1), "{id}: one record");
    }
}
