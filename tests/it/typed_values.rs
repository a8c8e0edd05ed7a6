//! A webhook route with `value_schema`: the body arrives in Kafka as a typed Avro record, and
//! a body that does not fit goes to the DLQ (class `encode`) while the stream goes on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use switchyard::config::Config;

use crate::support::Stack;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::daemon;

const PAYMENT: &str = r#"{
  "type": "record", "name": "Payment", "namespace": "com.acme",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "customer", "type": "string"},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "attempts", "type": "int", "default": 1}
  ]
}"#;

/// Writes `routes.toml` (one webhook source `payments`, one typed route) and the schema.
fn typed_config(dir: &Path, bootstrap: &str, registry: &str, schema: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("schemas")).expect("mkdir");
    std::fs::write(dir.join("schemas/payment.avsc"), schema).expect("write schema");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[kafka]
bootstrap_servers = "{bootstrap}"
delivery_timeout = "5s"
retry_max_elapsed = "20s"

[schema_registry]
url = "{registry}"

[dlq]
url = "sqlite://dlq/switchyard.db"

[sources.payments]
type = "webhook"
provider = "none"
allow_unauthenticated = true

[[routes]]
name = "typed-payments"
source = "payments"
topic = "payments"
value_schema = "schemas/payment.avsc"
[routes.transform]
rename = {{ cust = "customer" }}
"#
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn switchyard(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run switchyard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fitting_body_arrives_typed_and_a_misfit_is_dead_lettered_as_encode() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let path = typed_config(dir.path(), &broker.bootstrap(), &registry.url(), PAYMENT);
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let http = reqwest::Client::new();
    let post = |id: &'static str, body: &'static str| {
        let http = http.clone();
        let url = format!("{url}/webhooks/payments");
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("ce-type", "payment.succeeded")
                .body(body)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.expect("json answer");
            (status, body["status"].as_str().unwrap_or("").to_string())
        }
    };
    // `cust` is renamed to `customer` first (transforms apply to the JSON), then converted.
    let fits = post(
        "pay-1",
        r#"{"id":"pi_1","amount":"12.50","cust":"Zoë ✓","extra":{"ignored":true}}"#,
    )
    .await;
    assert_eq!(fits, (200, "accepted".to_string()));
    let misfit = post("pay-2", r#"{"id":"pi_2","amount":"1.005","cust":"x"}"#).await;
    assert_eq!(misfit, (200, "dead_lettered".to_string()));
    let missing = post("pay-3", r#"{"amount":"1.00","cust":"x"}"#).await;
    assert_eq!(missing, (200, "dead_lettered".to_string()));
    // The stream goes on after the misfits.
    let after = post(
        "pay-4",
        r#"{"id":"pi_4","amount":7,"cust":"y","note":"ok"}"#,
    )
    .await;
    assert_eq!(after, (200, "accepted".to_string()));
    daemon::stop(sy).await;

    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || read_topic(&bootstrap, "payments", 3, Duration::from_secs(20))
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 2, "only the fitting events are on the topic");
    let dec = decoder(&registry.url());
    let mut values = Vec::new();
    for r in &records {
        values.push(decode(&dec, &r.value).await.1);
    }
    values.sort_by_key(|v| v["id"].as_str().unwrap_or("").to_string());
    assert_eq!(values[0]["id"], "pay-1");
    assert_eq!(values[0]["type"], "payment.succeeded");
    assert_eq!(
        values[0]["data"],
        serde_json::json!({"id": "pi_1", "amount": "12.50", "customer": "Zoë ✓", "note": null, "attempts": 1}),
        "data is the typed record, decoded through the registry"
    );
    assert_eq!(values[1]["data"]["amount"], "7.00");
    assert_eq!(values[1]["data"]["note"], "ok");

    // The registry holds the typed envelope under the topic's value subject.
    let latest: serde_json::Value = http
        .get(format!(
            "{}/subjects/payments-value/versions/latest",
            registry.url()
        ))
        .send()
        .await
        .expect("registry")
        .json()
        .await
        .expect("json");
    let schema = latest["schema"].as_str().expect("schema text");
    assert!(
        schema.contains(r#""name":"Payment","namespace":"com.acme""#)
            && schema.contains(r#""name":"CloudEvent""#),
        "{schema}"
    );

    let out = switchyard(
        &path,
        &["dlq", "list", "--format", "json", "--status", "pending"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pending: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("json array");
    pending.sort_by_key(|d| d["event_id"].as_str().unwrap_or("").to_string());
    assert_eq!(pending.len(), 2, "{pending:#?}");
    for d in &pending {
        assert_eq!(d["class"], "encode", "{d}");
    }
    let messages: Vec<&str> = pending
        .iter()
        .map(|d| d["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("/amount") && m.contains("fraction digits")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("/id: missing required field")),
        "{messages:?}"
    );
}
