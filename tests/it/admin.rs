//! The admin listener: with `[server] admin_listen`, `/metrics`, `/healthz` and `/readyz` are
//! served there and not on the webhook port; `/readyz` answers from memory (a burst of probes
//! costs Kafka and the store nothing) and still follows Kafka going away and coming back.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::config::{Config, ConfigErrors};

use crate::support::daemon::{self, Setup, write_config};
use crate::support::{Stack, wait_for_async};

/// Status and JSON body of `GET {base}{path}`.
async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, serde_json::Value) {
    let r = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_move_to_the_admin_listener() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "admin-split",
        "admin_listen = \"127.0.0.1:0\"",
    );
    let (sy, url) = daemon::start(config).await;
    let admin = format!(
        "http://{}",
        sy.admin_addr().expect("an admin listener is bound")
    );
    assert_ne!(admin, url, "two listeners");
    let client = daemon::client(Duration::from_secs(10));
    wait_for_async(
        "ready on the admin port",
        Duration::from_secs(30),
        || async { (get(&client, &admin, "/readyz").await.0 == 200).then_some(()) },
    )
    .await;

    // A delivery on the webhook port, counted on the admin port.
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", "admin-1")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "webhooks stay on the public port");

    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, body) = get(&client, &url, path).await;
        assert_eq!(status, 404, "{path} on the webhook port: {body}");
        assert_eq!(body["error"], "not_found", "{path}: {body}");
    }
    let (status, metrics) = get(&client, &admin, "/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("Prometheus text").to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_webhook_requests_total{")
                && l.contains("source=\"orders\"")),
        "the delivery is counted on the admin port:\n{metrics}"
    );
    assert_eq!(get(&client, &admin, "/healthz").await.0, 200);
    let (status, ready) = get(&client, &admin, "/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &"ready".into()),
        "{ready}"
    );
    assert_eq!(ready["kafka"], "ok");
    assert_eq!(ready["dlq"], "ok");
    // The admin port takes no webhooks.
    let r = client
        .post(format!("{admin}/webhooks/orders"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404, "no webhooks on the admin port");
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_bursts_do_not_wait_on_kafka_and_still_follow_it() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "admin-burst",
        "admin_listen = \"127.0.0.1:0\"",
    );
    let (sy, _url) = daemon::start(config).await;
    let admin = format!("http://{}", sy.admin_addr().expect("admin listener"));
    let client = daemon::client(Duration::from_secs(30));
    let burst = |expect: u16| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            let started = Instant::now();
            let answers: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..200)
                .map(|_| {
                    let client = client.clone();
                    let admin = admin.clone();
                    async move { get(&client, &admin, "/readyz").await }
                })
                .buffer_unordered(20)
                .collect()
                .await;
            let took = started.elapsed();
            for (status, body) in &answers {
                assert_eq!(*status, expect, "{body}");
            }
            (took, answers)
        }
    };
    wait_for_async("ready", Duration::from_secs(30), || async {
        (get(&client, &admin, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (took, _) = burst(200).await;
    assert!(took < Duration::from_secs(5), "200 probes took {took:?}");

    // A frozen broker keeps its connections open and answers nothing: a metadata request
    // waits out its 2 s timeout. Probes that asked Kafka would take 200 / 20 × 2 s = 20 s.
    broker.signal("STOP");
    let body = wait_for_async("not ready", Duration::from_secs(30), || async {
        let (status, body) = get(&client, &admin, "/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["not_ready"], serde_json::json!(["kafka"]), "{body}");
    let (took, answers) = burst(503).await;
    assert!(
        took < Duration::from_secs(5),
        "200 probes while Kafka hangs took {took:?}: a probe waited on Kafka"
    );
    assert!(
        answers
            .iter()
            .all(|(_, b)| b["not_ready"] == serde_json::json!(["kafka"])),
        "every probe names Kafka"
    );

    broker.signal("CONT");
    wait_for_async("ready again", Duration::from_secs(30), || async {
        (get(&client, &admin, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_listen_the_probes_stay_on_the_webhook_port_and_a_warning_says_so() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let (setup, url) = Setup::new(&broker, &registry, "admin-shared").on_free_port();
    let path = write_config(dir.path(), &setup);
    let log = dir.path().join("switchyard.log");
    let _sy = daemon::spawn_binary(&path, log.clone());
    let client = daemon::client(Duration::from_secs(10));
    wait_for_async(
        "ready on the webhook port",
        Duration::from_secs(60),
        || async {
            let r = client.get(format!("{url}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    assert_eq!(get(&client, &url, "/metrics").await.0, 200);
    assert_eq!(get(&client, &url, "/healthz").await.0, 200);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("set [server] admin_listen")),
        "a warning recommends the admin listener:\n{text}"
    );
}

#[test]
fn admin_listen_on_the_webhook_address_is_an_error_at_its_line() {
    let text = r#"[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8080"

[kafka]
bootstrap_servers = "127.0.0.1:9092"

[schema_registry]
url = "http://127.0.0.1:8081"
"#;
    let errs = match Config::from_str_with_env(Path::new("conf/routes.toml"), text, |_| None) {
        Ok(_) => panic!("admin_listen equal to listen loaded"),
        Err(ConfigErrors(errs)) => errs,
    };
    let err = errs
        .iter()
        .map(ToString::to_string)
        .find(|e| e.contains("admin_listen"))
        .unwrap_or_else(|| panic!("no admin_listen error in {errs:?}"));
    assert!(err.starts_with("conf/routes.toml:3:16:"), "{err}");
    assert!(
        err.contains("127.0.0.1:9090"),
        "the fix names a port: {err}"
    );

    let bad = text.replace(
        "admin_listen = \"127.0.0.1:8080\"",
        "admin_listen = \"9090\"",
    );
    let errs = match Config::from_str_with_env(Path::new("conf/routes.toml"), &bad, |_| None) {
        Ok(_) => panic!("admin_listen without an address loaded"),
        Err(ConfigErrors(errs)) => errs,
    };
    assert!(
        errs.iter()
            .map(ToString::to_string)
            .any(|e| e.starts_with("conf/routes.toml:3:16:") && e.contains("not an IP address")),
        "{errs:?}"
    );
}

/// Connections that hold every place of the admin listener and send nothing are closed after
/// 5 s, so a probe waits seconds, not for ever (a liveness probe failing three times restarts
/// the pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_keep_the_probes_out_of_the_admin_listener() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let config = daemon::webhook_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        "admin-idle",
        "admin_listen = \"127.0.0.1:0\"",
    );
    let (sy, _url) = daemon::start(config).await;
    let at = sy.admin_addr().expect("an admin listener is bound");
    // Every place taken by a connection that says nothing.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(tokio::net::TcpStream::connect(at).await.expect("connect"));
    }
    let client = daemon::client(Duration::from_secs(20));
    let started = Instant::now();
    let (status, _) = get(&client, &format!("http://{at}"), "/healthz").await;
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_secs(12),
        "the probe waited {waited:?} for an idle connection to be closed (5 s)"
    );
    drop(idle);
    daemon::stop(sy).await;
}
