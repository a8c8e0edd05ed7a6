//! Signed SaaS webhooks: each provider's documented signature is accepted, forgeries are
//! refused with 401 and forward nothing, retries of an accepted event make no second record.

use std::time::Duration;

use futures::StreamExt;
use switchyard::config::{Config, HmacAlgorithm, SignatureEncoding};
use switchyard::source::webhook::verify::sign;

use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, daemon};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const STANDARD_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STANDARD_OLD: &str = "whsec_c2VjcmV0LW9sZC1rZXktMTIzNDU2Nzg=";

/// One source per provider, each with two secrets (a rotation), each routed to its own topic.
fn providers_config(stack: &Stack, extra: &str) -> std::path::PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nack_timeout = \"10s\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
         delivery_timeout = \"5s\"\n[schema_registry]\nurl = \"{}\"\n{extra}\n",
        stack.broker.bootstrap(),
        stack.registry.url()
    );
    let sources = [
        (
            "stripe",
            "provider = \"stripe\"\nsecrets = [\"whsec_new\", \"whsec_old\"]",
        ),
        (
            "github",
            "provider = \"github\"\nsecrets = [\"gh-new\", \"gh-old\"]",
        ),
        (
            "shopify",
            "provider = \"shopify\"\nsecrets = [\"shp-new\", \"shp-old\"]\nheaders = [\"X-Shopify-Shop-Domain\"]",
        ),
        (
            "slack",
            // The server's 10 s, not Slack's 2 s default: a first record (topic created, schema
            // registered) on a busy test machine may take longer than 2 s.
            "provider = \"slack\"\nsecrets = [\"slack-new\", \"slack-old\"]\nack_timeout = \"10s\"",
        ),
        (
            "standard",
            &format!("provider = \"standard\"\nsecrets = [\"{STANDARD_NEW}\", \"{STANDARD_OLD}\"]"),
        ),
        (
            "custom",
            "provider = \"hmac\"\nsecrets = [\"hm-new\", \"hm-old\"]\nsignature_header = \"X-Sig\"\n\
                    algorithm = \"sha512\"\nencoding = \"base64\"\nprefix = \"sha512=\"\n\
                    timestamp_header = \"X-Sig-Time\"\nid_pointer = \"/meta/uid\"\ntype_pointer = \"/meta/kind\"",
        ),
        ("plain", "provider = \"none\"\ntoken = \"t0ken\""),
    ];
    for (name, keys) in sources {
        text.push_str(&format!(
            "[sources.{name}]\ntype = \"webhook\"\n{keys}\n[[routes]]\nname = \"{name}\"\nsource = \"{name}\"\ntopic = \"wh.{name}\"\n"
        ));
    }
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// A request for `provider` with id `n`, signed with `secret` at `t`.
fn request(provider: &str, n: u32, secret: &str, t: i64) -> (Vec<(String, String)>, String) {
    let h = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>()
    };
    match provider {
        "stripe" => {
            let body = format!(
                r#"{{"id":"evt_{n}","type":"charge.refunded","data":{{"object":{{"id":"ch_{n}"}}}}}}"#
            );
            (
                h(&[("stripe-signature", sign::stripe(secret, t, body.as_bytes()))]),
                body,
            )
        }
        "github" => {
            let body =
                format!(r#"{{"action":"opened","number":{n},"repository":{{"full_name":"o/r"}}}}"#);
            (
                h(&[
                    ("x-hub-signature-256", sign::github(secret, body.as_bytes())),
                    ("x-github-delivery", format!("gh-{n}")),
                    ("x-github-event", "pull_request".into()),
                ]),
                body,
            )
        }
        "shopify" => {
            let body = format!(r#"{{"id":{n},"total":"9.99"}}"#);
            (
                h(&[
                    (
                        "x-shopify-hmac-sha256",
                        sign::shopify(secret, body.as_bytes()),
                    ),
                    ("x-shopify-webhook-id", format!("shp-{n}")),
                    ("x-shopify-topic", "orders/create".into()),
                    ("x-shopify-shop-domain", "shop.example".into()),
                ]),
                body,
            )
        }
        "slack" => {
            let body = format!(
                r#"{{"type":"event_callback","event_id":"Ev{n}","team_id":"T1","event":{{"type":"app_mention"}}}}"#
            );
            (
                h(&[
                    ("x-slack-request-timestamp", t.to_string()),
                    ("x-slack-signature", sign::slack(secret, t, body.as_bytes())),
                ]),
                body,
            )
        }
        "standard" => {
            let body = format!(r#"{{"type":"user.created","data":{{"n":{n}}}}}"#);
            let id = format!("msg_{n}");
            (
                h(&[
                    ("webhook-id", id.clone()),
                    ("webhook-timestamp", t.to_string()),
                    (
                        "webhook-signature",
                        sign::standard(secret, &id, t, body.as_bytes()),
                    ),
                ]),
                body,
            )
        }
        "custom" => {
            let body = format!(r#"{{"meta":{{"uid":"u-{n}","kind":"order.paid"}}}}"#);
            let ts = t.to_string();
            let sig = sign::hmac(
                HmacAlgorithm::Sha512,
                SignatureEncoding::Base64,
                secret,
                &[ts.as_bytes(), b".", body.as_bytes()],
            );
            (
                h(&[("x-sig", format!("sha512={sig}")), ("x-sig-time", ts)]),
                body,
            )
        }
        _ => {
            let body = format!(r#"{{"n":{n}}}"#);
            (
                h(&[
                    ("authorization", format!("Bearer {secret}")),
                    ("webhook-id", format!("plain-{n}")),
                ]),
                body,
            )
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: String,
    content_type: &str,
) -> (u16, serde_json::Value) {
    let mut r = client
        .post(url)
        .header("content-type", content_type)
        .timeout(Duration::from_secs(30));
    for (k, v) in headers {
        r = r.header(k, v);
    }
    let resp = r.body(body).send().await.expect("request completes");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_accepts_its_signature_and_refuses_forgeries_with_401() {
    let stack = Stack::start();
    let path = providers_config(&stack, "");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let secrets = [
        ("stripe", "whsec_new", "whsec_old"),
        ("github", "gh-new", "gh-old"),
        ("shopify", "shp-new", "shp-old"),
        ("slack", "slack-new", "slack-old"),
        ("standard", STANDARD_NEW, STANDARD_OLD),
        ("custom", "hm-new", "hm-old"),
        ("plain", "t0ken", "t0ken"),
    ];
    let timestamped = ["stripe", "slack", "standard", "custom"];
    for (provider, new, old) in secrets {
        let at = format!("{url}/webhooks/{provider}");
        // Either secret of the rotation is accepted.
        for (n, secret) in [(1, new), (2, old)] {
            let (h, body) = request(provider, n, secret, now());
            let (status, reply) = post(&client, &at, &h, body, "application/json").await;
            assert_eq!(status, 200, "{provider} signed with {secret}: {reply}");
            assert_eq!(reply["status"], "accepted", "{provider}");
        }
        // Forgeries: wrong secret, tampered body, missing signature header, stale timestamp.
        let (h, body) = request(provider, 3, "wrong-secret", now());
        let (status, reply) = post(&client, &at, &h, body, "application/json").await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (401, Some("invalid_signature")),
            "{provider}: wrong secret"
        );
        if provider != "plain" {
            // A bearer token signs nothing: only signed schemes detect a changed body.
            let (h, body) = request(provider, 4, new, now());
            let (status, _) = post(
                &client,
                &at,
                &h,
                body.replace('}', " }"),
                "application/json",
            )
            .await;
            assert_eq!(status, 401, "{provider}: tampered body");
        }
        let (h, body) = request(provider, 5, new, now());
        let stripped: Vec<_> = h
            .into_iter()
            .filter(|(k, _)| {
                !k.contains("sig") && k != "authorization" && k != "x-shopify-hmac-sha256"
            })
            .collect();
        let (status, reply) = post(&client, &at, &stripped, body, "application/json").await;
        assert_eq!(status, 401, "{provider}: no signature: {reply}");
        if timestamped.contains(&provider) {
            let (h, body) = request(provider, 6, new, now() - 600);
            let (status, reply) = post(&client, &at, &h, body, "application/json").await;
            assert_eq!(status, 401, "{provider}: stale");
            assert!(
                reply["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("tolerance"),
                "{reply}"
            );
        }
    }
    // Exactly the two accepted deliveries per provider reached Kafka, with the provider's names.
    let dec = decoder(&stack.registry.url());
    for (provider, _, _) in secrets {
        let topic = format!("wh.{provider}");
        let records = tokio::task::spawn_blocking({
            let bootstrap = stack.broker.bootstrap();
            move || read_topic(&bootstrap, &topic, usize::MAX, Duration::from_secs(4))
        })
        .await
        .expect("consumer");
        assert_eq!(
            records.len(),
            2,
            "{provider}: only the signed deliveries are forwarded"
        );
        let mut values = Vec::new();
        for r in &records {
            values.push(decode(&dec, &r.value).await.1);
        }
        values.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
        let v = &values[0];
        assert_eq!(v["source"], format!("switchyard/{provider}"));
        let (id, ty, subject) = match provider {
            "stripe" => ("evt_1", "charge.refunded", serde_json::json!("ch_1")),
            "github" => ("gh-1", "pull_request.opened", serde_json::json!("o/r")),
            "shopify" => ("shp-1", "orders/create", serde_json::json!("shop.example")),
            "slack" => ("Ev1", "app_mention", serde_json::json!("T1")),
            "standard" => ("msg_1", "user.created", serde_json::Value::Null),
            "custom" => ("u-1", "order.paid", serde_json::Value::Null),
            _ => ("plain-1", "webhook", serde_json::Value::Null),
        };
        assert_eq!(
            (v["id"].as_str(), v["type"].as_str()),
            (Some(id), Some(ty)),
            "{provider}"
        );
        assert_eq!(v["subject"], subject, "{provider}");
        if provider == "shopify" {
            assert_eq!(
                v["headers"],
                serde_json::json!({"x-shopify-shop-domain": "shop.example"})
            );
        } else {
            assert_eq!(
                v["headers"],
                serde_json::json!({}),
                "{provider}: no header unless allow-listed"
            );
        }
    }
    let metrics = daemon::metrics(&url).await;
    assert!(
        metrics
            .contains("switchyard_webhook_rejected_total{reason=\"mismatch\",source=\"stripe\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("whsec_new") && !metrics.contains("gh-new"),
        "no secret in metrics"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_sent_five_times_in_a_row_concurrently_and_across_a_restart_is_one_record() {
    let stack = Stack::start();
    let path = providers_config(&stack, "");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/stripe");
    let t = now();
    // Five in a row.
    let (h, body) = request("stripe", 7, "whsec_new", t);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post(&client, &at, &h, body.clone(), "application/json").await);
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(statuses[0].1["status"], "accepted");
    assert!(
        statuses[1..]
            .iter()
            .all(|(_, r)| r["status"] == "duplicate"),
        "{statuses:?}"
    );
    // Five at once.
    let (h, body) = request("stripe", 8, "whsec_new", t);
    let concurrent: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..5)
        .map(|_| post(&client, &at, &h, body.clone(), "application/json"))
        .buffer_unordered(5)
        .collect()
        .await;
    assert!(concurrent.iter().all(|(s, _)| *s == 200), "{concurrent:?}");
    assert_eq!(
        concurrent
            .iter()
            .filter(|(_, r)| r["status"] == "accepted")
            .count(),
        1,
        "{concurrent:?}"
    );
    // Across a restart: the ids are in the store.
    daemon::stop(sy).await;
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let at = format!("{url}/webhooks/stripe");
    for n in [7, 8] {
        let (h, body) = request("stripe", n, "whsec_new", now());
        let (status, reply) = post(&client, &at, &h, body, "application/json").await;
        assert_eq!(
            (status, reply["status"].as_str()),
            (200, Some("duplicate")),
            "evt_{n} after restart"
        );
    }
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "wh.stripe", usize::MAX, Duration::from_secs(4))
    })
    .await
    .expect("consumer");
    assert_eq!(
        records.len(),
        2,
        "one record per event, whatever the retries"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_type_parse_and_rate_errors_and_slack_handshakes() {
    let stack = Stack::start();
    let extra = "[sources.limited]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\nrate_limit = \"3/s\"\nmax_body_size = \"64B\"\n\
                 [[routes]]\nname = \"limited\"\nsource = \"limited\"\ntopic = \"wh.limited\"\n";
    let path = providers_config(&stack, "");
    let text = std::fs::read_to_string(&path).expect("config") + extra;
    std::fs::write(&path, text).expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let limited = format!("{url}/webhooks/limited");
    let (status, reply) = post(&client, &limited, &[], "x".repeat(65), "application/json").await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, reply) = post(&client, &limited, &[], "<a/>".into(), "application/xml").await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, reply) = post(&client, &limited, &[], "{".into(), "application/json").await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_json"))
    );
    assert!(
        reply["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{reply}"
    );
    // More than 3 per second: some are refused with 429 and Retry-After.
    let mut limited_seen = false;
    for i in 0..10 {
        let resp = client
            .post(&limited)
            .header("content-type", "application/json")
            .body(format!(r#"{{"i":{i}}}"#))
            .send()
            .await
            .expect("send");
        if resp.status() == 429 {
            assert!(resp.headers().get("retry-after").is_some());
            limited_seen = true;
        }
    }
    assert!(limited_seen, "10 requests at once exceed 3/s");
    // Slack: the url_verification handshake, and a form-encoded slash command.
    let slack = format!("{url}/webhooks/slack");
    let t = now();
    let body = r#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","token":"x"}"#;
    let h = vec![
        ("x-slack-request-timestamp".to_string(), t.to_string()),
        (
            "x-slack-signature".to_string(),
            sign::slack("slack-new", t, body.as_bytes()),
        ),
    ];
    let (status, reply) = post(&client, &slack, &h, body.into(), "application/json").await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    let form = "command=%2Fdeploy&text=prod&team_id=T1&trigger_id=13345224609.738474920.8088930838";
    let h = vec![
        ("x-slack-request-timestamp".to_string(), t.to_string()),
        (
            "x-slack-signature".to_string(),
            sign::slack("slack-new", t, form.as_bytes()),
        ),
    ];
    let (status, reply) = post(
        &client,
        &slack,
        &h,
        form.into(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("accepted")),
        "{reply}"
    );
    // Form bodies are for Slack (and GitHub) only.
    let (status, _) = post(
        &client,
        &limited,
        &[],
        "a=b".into(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert!(status == 415 || status == 429, "{status}");
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "wh.slack", usize::MAX, Duration::from_secs(4))
    })
    .await
    .expect("consumer");
    assert_eq!(
        records.len(),
        1,
        "the handshake is not an event; the slash command is"
    );
    let (_, v) = decode(&decoder(&stack.registry.url()), &records[0].value).await;
    assert_eq!(v["type"], "slash_command");
    assert_eq!(v["datacontenttype"], "application/x-www-form-urlencoded");
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letter_on_unavailable_a_broker_outage_is_answered_200_and_replayed_once() {
    let Stack {
        dir,
        mut broker,
        registry,
    } = Stack::start();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nack_timeout = \"5s\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             delivery_timeout = \"1s\"\n[schema_registry]\nurl = \"{}\"\n\
             [sources.hooks]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\nwhen_unavailable = \"dead_letter\"\n\
             [[routes]]\nname = \"hooks\"\nsource = \"hooks\"\ntopic = \"hooks\"\n",
            broker.bootstrap(),
            registry.url()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/hooks");
    let send = |id: &'static str| {
        let client = client.clone();
        let at = at.clone();
        async move {
            let h = vec![("webhook-id".to_string(), id.to_string())];
            post(
                &client,
                &at,
                &h,
                format!(r#"{{"id":"{id}"}}"#),
                "application/json",
            )
            .await
        }
    };
    // 5 s of ack budget: this first delivery (schema registered, producer connected) must be
    // accepted, not dead-lettered, on a busy machine too.
    assert_eq!(send("h-0").await.1["status"], "accepted", "warm");
    broker.stop();
    let started = std::time::Instant::now();
    let (status, reply) = send("h-1").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("dead_lettered")),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within the bound"
    );
    // The provider's retry is a duplicate: the event is durable in the DLQ.
    assert_eq!(send("h-1").await.1["status"], "duplicate");
    let broker = crate::support::broker::Broker::start_on(broker.port(), dir.path());
    daemon::stop(sy).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["-c"])
        .arg(&path)
        .args(["dlq", "replay", "--all", "--yes"])
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || read_topic(&bootstrap, "hooks", usize::MAX, Duration::from_secs(4))
    })
    .await
    .expect("consumer");
    let dec = decoder(&registry.url());
    let mut ids = Vec::new();
    for r in &records {
        ids.push(
            decode(&dec, &r.value).await.1["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(
        ids,
        vec!["h-1".to_string()],
        "after recovery: the outage's event once, nothing doubled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_routes_pick_event_types_by_glob_and_key_by_json_pointer() {
    let stack = Stack::start();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n\
             [sources.stripe]\ntype = \"webhook\"\nprovider = \"stripe\"\nsecrets = [\"whsec_new\"]\n\
             [[routes]]\nname = \"payments\"\nsource = \"stripe\"\ntopic = \"payments\"\n\
             event_types = [\"payment_intent.*\"]\nkey = \"/data/object/id\"\n\
             [[routes]]\nname = \"refunds\"\nsource = \"stripe\"\ntopic = \"refunds\"\n\
             event_types = [\"charge.refunded\"]\n\
             [[routes]]\nname = \"big\"\nsource = \"stripe\"\ntopic = \"big\"\n\
             filter = \"type.startsWith('payment_intent.') && data.data.object.amount > 1000\"\n",
            stack.broker.bootstrap(),
            stack.registry.url()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/stripe");
    let send = |id: &str, ty: &str, object: &str| {
        let amount = if id == "evt_1" { 5000 } else { 10 };
        let body = format!(
            r#"{{"id":"{id}","type":"{ty}","data":{{"object":{{"id":"{object}","amount":{amount}}}}}}}"#
        );
        let h = vec![(
            "stripe-signature".to_string(),
            sign::stripe("whsec_new", now(), body.as_bytes()),
        )];
        let client = client.clone();
        let at = at.clone();
        async move { post(&client, &at, &h, body, "application/json").await }
    };
    assert_eq!(
        send("evt_1", "payment_intent.succeeded", "pi_1").await.0,
        200
    );
    assert_eq!(send("evt_2", "payment_intent.created", "pi_1").await.0, 200);
    assert_eq!(send("evt_3", "charge.refunded", "ch_1").await.0, 200);
    let (status, reply) = send("evt_4", "customer.created", "cus_1").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("unmatched")),
        "no route takes it: dropped by the default policy, and counted"
    );
    let dec = decoder(&stack.registry.url());
    let read = |topic: &'static str| {
        let bootstrap = stack.broker.bootstrap();
        tokio::task::spawn_blocking(move || {
            read_topic(&bootstrap, topic, usize::MAX, Duration::from_secs(4))
        })
    };
    let payments = read("payments").await.expect("consumer");
    assert_eq!(payments.len(), 2);
    for r in &payments {
        let (_, key) = decode(&dec, r.key.as_ref().expect("key")).await;
        assert_eq!(
            key, "pi_1",
            "keyed by the payment intent, so its events share a partition"
        );
    }
    let refunds = read("refunds").await.expect("consumer");
    assert_eq!(refunds.len(), 1);
    let (_, key) = decode(&dec, refunds[0].key.as_ref().expect("key")).await;
    assert_eq!(
        key, "evt_3",
        "without a key pointer the key is the event id"
    );
    // Fan-out: the big payment went to `payments` and, through the CEL filter, to `big`.
    let big = read("big").await.expect("consumer");
    assert_eq!(big.len(), 1, "only the payment over 1000");
    let (_, v) = decode(&dec, &big[0].value).await;
    assert_eq!(v["id"], "evt_1");
    let metrics = daemon::metrics(&url).await;
    assert!(
        metrics.contains("switchyard_unmatched_total{source=\"stripe\"} 1"),
        "{metrics}"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_id_is_remembered_across_kill_9() {
    let stack = Stack::start();
    let port = crate::support::free_port();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n\
             [sources.stripe]\ntype = \"webhook\"\nprovider = \"stripe\"\nsecrets = [\"whsec_new\"]\n\
             [[routes]]\nname = \"stripe\"\nsource = \"stripe\"\ntopic = \"wh.stripe\"\n",
            stack.broker.bootstrap(),
            stack.registry.url()
        ),
    )
    .expect("config");
    let start = |n: usize| {
        daemon::spawn_binary(&path, stack.dir.path().join(format!("switchyard-{n}.log")))
    };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let ready = || async {
        crate::support::wait_for_async("switchyard to listen", Duration::from_secs(30), || async {
            client
                .get(format!("{url}/healthz"))
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await
    };
    let mut sy = start(0);
    ready().await;
    let at = format!("{url}/webhooks/stripe");
    let (h, body) = request("stripe", 9, "whsec_new", now());
    let (status, reply) = post(&client, &at, &h, body.clone(), "application/json").await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("accepted")));
    sy.kill(); // SIGKILL right after the 200
    let _sy = start(1);
    ready().await;
    let (status, reply) = post(&client, &at, &h, body, "application/json").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("duplicate")),
        "{reply}"
    );
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "wh.stripe", usize::MAX, Duration::from_secs(4))
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halting_route_stops_at_a_failing_event_instead_of_dead_lettering_it() {
    let stack = Stack::start();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [kafka.properties]\n\"message.max.bytes\" = 1000\n\
             [schema_registry]\nurl = \"{}\"\n\
             [sources.strict]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n[sources.lenient]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n\
             [[routes]]\nname = \"strict\"\nsource = \"strict\"\ntopic = \"strict\"\non_error = \"halt\"\n\
             [[routes]]\nname = \"lenient\"\nsource = \"lenient\"\ntopic = \"lenient\"\n",
            stack.broker.bootstrap(),
            stack.registry.url()
        ),
    )
    .expect("config");
    let config = Config::load(&path).expect("config");
    let store = config.dlq.store.clone();
    let (sy, url) = daemon::start(config).await;
    let client = reqwest::Client::new();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3000));
    let (status, reply) = post(
        &client,
        &format!("{url}/webhooks/strict"),
        &[],
        big.clone(),
        "application/json",
    )
    .await;
    assert_eq!(
        status, 503,
        "halted: the provider is asked to retry: {reply}"
    );
    assert!(
        reply["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("halts on errors"),
        "{reply}"
    );
    let (status, reply) = post(
        &client,
        &format!("{url}/webhooks/lenient"),
        &[],
        big,
        "application/json",
    )
    .await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("dead_lettered"))
    );
    let dlq = switchyard::store::Store::open(&store).await.expect("dlq");
    let letters = dlq
        .dead_letters()
        .list(&switchyard::store::Selector::default())
        .await
        .expect("list");
    assert_eq!(letters.len(), 1, "only the lenient route dead-letters");
    assert_eq!(letters[0].route.as_deref(), Some("lenient"));
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_postgres_dlq_deduplicate_each_others_events() {
    let stack = Stack::start();
    let pg = crate::support::postgres::PgCluster::start();
    let db = pg.fresh_database("shared_dlq").await;
    let path = providers_config(&stack, &format!("[dlq]\nurl = \"{}\"\n", pg.url(&db)));
    // Two instances (two ports) with one configuration, as behind one load balancer.
    let (a, a_url) = daemon::start(Config::load(&path).expect("config")).await;
    let (b, b_url) = daemon::start(Config::load(&path).expect("config")).await;
    assert_ne!(a_url, b_url);
    let client = reqwest::Client::new();
    let t = now();
    for (n, first, retry) in [(21, &a_url, &b_url), (22, &b_url, &a_url)] {
        let (h, body) = request("stripe", n, "whsec_new", t);
        let at = |url: &String| format!("{url}/webhooks/stripe");
        let (status, reply) = post(&client, &at(first), &h, body.clone(), "application/json").await;
        assert_eq!((status, reply["status"].as_str()), (200, Some("accepted")));
        // The provider's retry lands on the other instance.
        let (status, reply) = post(&client, &at(retry), &h, body, "application/json").await;
        assert_eq!(
            (status, reply["status"].as_str()),
            (200, Some("duplicate")),
            "evt_{n} retried on the other instance"
        );
    }
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "wh.stripe", usize::MAX, Duration::from_secs(4))
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 2, "one record per event across instances");
    daemon::stop(a).await;
    daemon::stop(b).await;
}

/// Two switchyard processes sharing one `postgres://` store, as two replicas behind one
/// address: each copy of a webhook is sent to both at the same moment. Only one instance may
/// accept an id; the other answers `duplicate` once the first is durable (or 503 if it is
/// not in time): one Kafka record per id, never two `accepted` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_sent_to_two_replicas_at_once_is_accepted_once() {
    let stack = Stack::start();
    let pg = crate::support::postgres::PgCluster::start();
    let db = pg.fresh_database("shared_claims").await;
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for name in ["a", "b"] {
        let dir = stack.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("replica dir");
        let (setup, url) = daemon::Setup {
            dlq_url: Some(pg.url(&db)),
            ..daemon::Setup::new(&stack.broker, &stack.registry, "wh.raced")
        }
        .on_free_port();
        let config = daemon::write_config(&dir, &setup);
        replicas.push(daemon::spawn_binary(
            &config,
            stack.dir.path().join(format!("{name}.log")),
        ));
        urls.push(url);
    }
    let client = daemon::client(Duration::from_secs(30));
    for url in &urls {
        daemon::wait_ready(&client, url).await;
    }
    let ids: Vec<String> = (0..50).map(|i| format!("raced-{i}")).collect();
    // Ten ids at a time, each id's two copies at once.
    let answers: Vec<(String, Vec<(u16, String)>)> = futures::stream::iter(ids.clone())
        .map(|id| {
            let (client, urls) = (client.clone(), urls.clone());
            async move {
                let send = |url: String| {
                    let (client, id) = (client.clone(), id.clone());
                    async move {
                        let r = client
                            .post(format!("{url}/webhooks/orders"))
                            .header("webhook-id", &id)
                            .header("content-type", "application/json")
                            .body(format!(r#"{{"id":"{id}"}}"#))
                            .send()
                            .await
                            .expect("send");
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        (status, body["status"].as_str().unwrap_or("").to_string())
                    }
                };
                let (a, b) = tokio::join!(send(urls[0].clone()), send(urls[1].clone()));
                (id, vec![a, b])
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    for (id, got) in &answers {
        for (status, what) in got {
            assert!(
                matches!(
                    (*status, what.as_str()),
                    (200, "accepted" | "duplicate") | (503, _)
                ),
                "{id}: answered {status} {what}"
            );
        }
        let accepted = got.iter().filter(|(_, w)| w == "accepted").count();
        assert_eq!(accepted, 1, "{id}: {got:?}");
    }
    for r in &mut replicas {
        r.assert_running();
    }
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || {
            read_topic(
                &bootstrap,
                "wh.raced",
                ids.len() + 1,
                Duration::from_secs(10),
            )
        }
    })
    .await
    .expect("consumer");
    let dec = decoder(&stack.registry.url());
    let mut per_id = std::collections::BTreeMap::<String, usize>::new();
    for r in &records {
        let (_, v) = decode(&dec, &r.value).await;
        *per_id
            .entry(v["id"].as_str().expect("id").to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "more than one record: {twice:?}");
    assert_eq!(per_id.len(), 50, "one record per id");

    // A replica that claimed an id and died before storing it: the copy that lands here is
    // answered 503 (no second record while the claim might still be delivered), and the
    // provider's retry after the claim expired is accepted.
    let dead =
        switchyard::store::Store::open(&switchyard::config::DlqStoreConfig::Postgres(pg.url(&db)))
            .await
            .expect("open the store as a third instance");
    // 10 s: the first post below must land before the claim expires, on a loaded machine too.
    let expires = switchyard::event::now_micros() + 10_000_000;
    assert_eq!(
        match dead.seen_ids() {
            switchyard::store::SeenIds::Shared(ids) => ids,
            switchyard::store::SeenIds::Local(_) => panic!("a shared store"),
        }
        .claim("orders\u{1f}orphan", 0, expires)
        .await
        .expect("claim"),
        switchyard::store::WebhookIdClaim::Won
    );
    drop(dead);
    let post_orphan = || async {
        let r = client
            .post(format!("{}/webhooks/orders", urls[0]))
            .header("webhook-id", "orphan")
            .body(r#"{"id":"orphan"}"#)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        (status, body["status"].as_str().unwrap_or("").to_string())
    };
    let (status, _) = post_orphan().await;
    assert_eq!(status, 503, "the dead instance's claim is not yet expired");
    let retried = crate::support::wait_for_async(
        "the orphaned claim to expire",
        Duration::from_secs(60),
        || async {
            let (status, what) = post_orphan().await;
            (status == 200).then_some(what)
        },
    )
    .await;
    assert_eq!(retried, "accepted");
}
