//! A topic per `{event_type}` is bounded (issue #23 item 5): a sender that makes up types
//! cannot create topics without end; beyond `max_topics` events go to the DLQ as unroutable.

use std::time::Duration;

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use switchyard::config::Config;

use crate::support::{Stack, daemon, run_cli, run_cli_split};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_event_types_against_max_topics_ten_make_ten_topics_and_the_rest_dead_letters() {
    let stack = Stack::start();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\npartitions = 1\n\
             [schema_registry]\nurl = \"{}\"\n\
             [sources.hooks]\ntype = \"webhook\"\nprovider = \"none\"\ntoken = \"tok\"\n\
             id_pointer = \"/id\"\ntype_pointer = \"/type\"\n\
             [[routes]]\nname = \"dyn\"\nsource = \"hooks\"\ntopic = \"dyn.{{event_type}}\"\nmax_topics = 10\n",
            stack.broker.bootstrap(),
            stack.registry.url()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = daemon::client(Duration::from_secs(60));
    let at = format!("{url}/webhooks/hooks");
    let answers: Vec<(u16, String)> = futures::stream::iter(0..1_000)
        .map(|n| {
            let (client, at) = (client.clone(), at.clone());
            async move {
                let resp = client
                    .post(&at)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer tok")
                    .body(format!(r#"{{"id":"e-{n}","type":"type{n}"}}"#))
                    .send()
                    .await
                    .expect("request completes");
                let status = resp.status().as_u16();
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                (status, v["status"].as_str().unwrap_or_default().to_string())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let count = |s: &str| answers.iter().filter(|(c, a)| *c == 200 && a == s).count();
    assert_eq!(
        (count("accepted"), count("dead_lettered")),
        (10, 990),
        "every event answered 200: ten produced, the rest stored"
    );

    let bootstrap = stack.broker.bootstrap();
    let topics = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("client");
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        md.topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|t| t.starts_with("dyn."))
            .count()
    })
    .await
    .expect("metadata");
    assert_eq!(topics, 10, "no topic beyond max_topics");

    let (code, stats, err) = run_cli_split(&path, &["dlq", "stats", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let unroutable: i64 = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["class"] == "unroutable" && r["status"] == "pending" && r["route"] == "dyn")
        .map(|r| r["count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(unroutable, 990, "{stats}");
    let (_, list) = run_cli(
        &path,
        &[
            "dlq",
            "list",
            "--class",
            "unroutable",
            "--limit",
            "1",
            "--format",
            "json",
        ],
    );
    assert!(
        list.contains("max_topics"),
        "the reason names the bound: {list}"
    );
    daemon::stop(sy).await;
}
