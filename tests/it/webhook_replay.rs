//! Replay resistance and credential hygiene of webhook sources (issue #23 items 3 and 4): a
//! captured delivery re-sent with a fresh id or another event type makes no second record, and
//! no credential or signature header is kept in the DLQ or copied into Kafka.

use std::time::Duration;

use switchyard::config::Config;
use switchyard::source::webhook::verify::sign;

use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, daemon, run_cli_split};

const GH_SECRET: &str = "gh-replay-secret";
const SHOP_SECRET: &str = "shp-replay-secret";

/// A GitHub and a Shopify source, each routed to its own topic; `extra` is added at the end.
fn config(stack: &Stack, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nack_timeout = \"10s\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
         delivery_timeout = \"5s\"\n[schema_registry]\nurl = \"{}\"\n\
         [sources.gh]\ntype = \"webhook\"\nprovider = \"github\"\nsecrets = [\"{GH_SECRET}\"]\n\
         headers = [\"X-GitHub-Hook-ID\"]\n\
         [sources.shop]\ntype = \"webhook\"\nprovider = \"shopify\"\nsecrets = [\"{SHOP_SECRET}\"]\n\
         [[routes]]\nname = \"gh\"\nsource = \"gh\"\ntopic = \"replay.gh\"\n\
         [[routes]]\nname = \"shop\"\nsource = \"shop\"\ntopic = \"replay.shop\"\n{extra}",
        stack.broker.bootstrap(),
        stack.registry.url()
    );
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// POSTs `body` with `headers`; (status, JSON answer).
async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut r = client
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30));
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r
        .body(body.to_string())
        .send()
        .await
        .expect("request completes");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// A GitHub delivery's headers: signature over `body`, delivery id, event type.
fn github(body: &str, delivery: &str, event: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-hub-signature-256",
            sign::github(GH_SECRET, body.as_bytes()),
        ),
        ("x-github-delivery", delivery.to_string()),
        ("x-github-event", event.to_string()),
    ]
}

/// The decoded CloudEvents of `topic` (waits up to `timeout` for at least `want`, then reads
/// what else arrives within it).
async fn records(stack: &Stack, topic: &str, want: usize) -> Vec<serde_json::Value> {
    let consumed = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        let topic = topic.to_string();
        move || read_topic(&bootstrap, &topic, usize::MAX, Duration::from_secs(6))
    })
    .await
    .expect("consumer");
    assert!(
        consumed.len() >= want,
        "{topic}: {} records",
        consumed.len()
    );
    let dec = decoder(&stack.registry.url());
    let mut out = Vec::new();
    for r in &consumed {
        // switchyard's Kafka headers: its own, never one of the request's.
        for (k, v) in &r.headers {
            assert!(
                k.starts_with("switchyard.") || k == "traceparent",
                "request header {k} = {:?} copied into Kafka",
                String::from_utf8_lossy(v)
            );
        }
        out.push(decode(&dec, &r.value).await.1);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_capture_resent_with_a_new_delivery_id_and_another_event_type_is_one_record() {
    let stack = Stack::start();
    let path = config(&stack, "");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/gh");
    let a = r#"{"action":"opened","number":1,"repository":{"full_name":"o/r"}}"#;
    let (status, reply) = post(&client, &at, &github(a, "d-a", "pull_request"), a).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("accepted")));
    // The capture again, with a fresh delivery id and another event type (another route).
    let (status, reply) = post(&client, &at, &github(a, "d-forged", "issues"), a).await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("duplicate")),
        "{reply}"
    );
    // With the id of a delivery still to come: answered duplicate, and the id stays free.
    let (status, reply) = post(&client, &at, &github(a, "d-b", "push"), a).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")));
    let b = r#"{"action":"closed","number":2,"repository":{"full_name":"o/r"}}"#;
    let (status, reply) = post(&client, &at, &github(b, "d-b", "pull_request"), b).await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("accepted")),
        "the real delivery d-b is taken: {reply}"
    );
    // A provider's own retry (same id, same body) is still a duplicate.
    let (status, reply) = post(&client, &at, &github(b, "d-b", "pull_request"), b).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")));

    // Shopify sends one body under several topics: same topic, fresh id → duplicate;
    // another topic → its own event (the documented trade-off).
    let shop_at = format!("{url}/webhooks/shop");
    let order = r#"{"id":1001,"total":"9.99"}"#;
    let shop = |id: &str, topic: &str| {
        vec![
            (
                "x-shopify-hmac-sha256",
                sign::shopify(SHOP_SECRET, order.as_bytes()),
            ),
            ("x-shopify-webhook-id", id.to_string()),
            ("x-shopify-topic", topic.to_string()),
        ]
    };
    let answers = [
        ("w-1", "orders/create", "accepted"),
        ("w-2", "orders/create", "duplicate"),
        ("w-3", "orders/paid", "accepted"),
        ("w-3", "orders/paid", "duplicate"),
    ];
    for (id, topic, want) in answers {
        let (status, reply) = post(&client, &shop_at, &shop(id, topic), order).await;
        assert_eq!(
            (status, reply["status"].as_str()),
            (200, Some(want)),
            "{id} {topic}: {reply}"
        );
    }

    let gh = records(&stack, "replay.gh", 2).await;
    let mut seen: Vec<(String, String)> = gh
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("d-a".to_string(), "pull_request.opened".to_string()),
            ("d-b".to_string(), "pull_request.closed".to_string())
        ],
        "one record per real delivery"
    );
    let shop = records(&stack, "replay.shop", 2).await;
    let mut types: Vec<&str> = shop.iter().filter_map(|v| v["type"].as_str()).collect();
    types.sort();
    assert_eq!(types, vec!["orders/create", "orders/paid"]);
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_or_signature_header_is_kept_in_the_dlq_or_copied_into_kafka() {
    let stack = Stack::start();
    // Only pull requests are routed; anything else is unmatched and goes to the DLQ.
    let path = config(&stack, "[router]\nunmatched = \"dlq\"\n");
    let text = std::fs::read_to_string(&path).expect("config").replace(
        "topic = \"replay.gh\"\n",
        "topic = \"replay.gh\"\nevent_types = [\"pull_request.*\"]\n",
    );
    std::fs::write(&path, text).expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/gh");
    let secrets = [
        ("authorization", "Bearer bearer-secret-1"),
        ("proxy-authorization", "Basic proxy-secret-2"),
        ("cookie", "session=cookie-secret-3"),
        ("x-hub-signature", "sha1=sha1-secret-4"),
        ("x-api-token", "token-secret-5"),
        ("x-gitlab-token", "token-secret-6"),
    ];
    let mut sent_signatures = Vec::new();
    for (n, event) in [(1, "pull_request"), (2, "issues")] {
        let body = format!(r#"{{"action":"opened","number":{n}}}"#);
        let mut headers = github(&body, &format!("d-{n}"), event);
        sent_signatures.push(headers[0].1.clone());
        headers.push(("x-github-hook-id", "hook-77".to_string()));
        headers.extend(secrets.iter().map(|(k, v)| (*k, v.to_string())));
        let (status, reply) = post(&client, &at, &headers, &body).await;
        let want = if n == 1 { "accepted" } else { "dead_lettered" };
        assert_eq!(
            (status, reply["status"].as_str()),
            (200, Some(want)),
            "{event}: {reply}"
        );
    }
    let leaked = |text: &str| -> Vec<String> {
        secrets
            .iter()
            .map(|(_, v)| v.to_string())
            .chain(sent_signatures.iter().cloned())
            .filter(|s| text.contains(s.as_str()))
            .collect()
    };
    // The delivered event: its envelope holds the allow-listed header and nothing else.
    let gh = records(&stack, "replay.gh", 1).await;
    assert_eq!(gh.len(), 1, "{gh:?}");
    assert_eq!(
        gh[0]["headers"],
        serde_json::json!({"x-github-hook-id": "hook-77"})
    );
    assert_eq!(leaked(&gh[0].to_string()), Vec::<String>::new());
    // The dead-lettered one, as `dlq list`, `show` and `export` print it.
    let (code, list, err) = run_cli_split(&path, &["dlq", "list", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&list).expect("list is JSON");
    assert_eq!(entries.len(), 1, "{list}");
    let id = entries[0]["id"].as_i64().expect("id").to_string();
    let (code, show, err) = run_cli_split(&path, &["dlq", "show", &id]);
    assert_eq!(code, Some(0), "{err}");
    let shown: serde_json::Value = serde_json::from_str(&show).expect("show is JSON");
    let headers = shown["event"]["payload"]["headers"].to_string();
    // Headers are kept (the others), so their absence below is the filter's doing.
    for kept in ["x-github-event", "x-github-delivery", "x-github-hook-id"] {
        assert!(headers.contains(kept), "{kept} kept: {headers}");
    }
    for (name, _) in secrets
        .iter()
        .chain([("x-hub-signature-256", ""), ("x-hub-signature", "")].iter())
    {
        assert!(
            !headers.contains(&format!("\"{name}\"")),
            "{name} stored: {headers}"
        );
    }
    assert_eq!(leaked(&show), Vec::<String>::new(), "dlq show");
    let (code, export, err) = run_cli_split(&path, &["dlq", "export"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(export.contains("d-2"), "the entry is exported: {export}");
    assert_eq!(leaked(&export), Vec::<String>::new(), "dlq export");
    daemon::stop(sy).await;
}

#[test]
fn check_warns_about_a_source_that_takes_unauthenticated_requests() {
    let dir = crate::support::scratch();
    let path = dir.path().join("routes.toml");
    let head = "[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n[schema_registry]\nurl = \"http://127.0.0.1:8081\"\n";
    std::fs::write(
        &path,
        format!("{head}[sources.open]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n[sources.tok]\ntype = \"webhook\"\nprovider = \"none\"\ntoken = \"t\"\n"),
    )
    .expect("config");
    let (code, out, err) = run_cli_split(&path, &["check"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("warning: source `open` takes unauthenticated requests"),
        "{err}"
    );
    assert!(!err.contains("`tok`"), "a token authenticates: {err}");
    assert!(
        out.contains("source open: webhook POST /webhooks/open (provider none, unauthenticated)")
            && out.contains("source tok: webhook POST /webhooks/tok (provider none, bearer token)"),
        "{out}"
    );
    // The old form (no provider) is refused, saying what to write.
    std::fs::write(&path, format!("{head}[sources.open]\ntype = \"webhook\"\n")).expect("config");
    let (code, out, err) = run_cli_split(&path, &["check"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let all = out + &err;
    assert!(
        all.contains("routes.toml:6:8: webhook source `open` has no `provider`"),
        "{all}"
    );
    assert!(all.contains("allow_unauthenticated = true"), "{all}");
}
