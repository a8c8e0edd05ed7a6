//! Bad requests get precise status codes with a JSON body, and nothing reaches Kafka.

use std::time::Duration;

use crate::support::Stack;
use crate::support::{daemon, scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_json_errors() {
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
        "max_body_size = \"1KiB\"",
    );
    let (sy, url) = daemon::start(config).await;
    let client = daemon::client(Duration::from_secs(20));

    let r = client
        .post(format!("{url}/webhooks/orders"))
        .body("not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json body");
    assert_eq!(body["error"], "invalid_json");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("must be JSON")
    );

    // JSON that serde_json would take (the invalid UTF-8 is in a string it skips) but whose
    // text is not UTF-8: refused as such, nothing delivered.
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .body(b"{\"id\":\"e\",\"n\":\"\xff\"}".to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json body");
    assert_eq!(body["error"], "invalid_body");

    let r = client
        .post(format!("{url}/webhooks/nope"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("json body");
    assert_eq!(body["error"], "not_found");

    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.expect("json body");
    assert_eq!(body["error"], "payload_too_large");

    let r = client
        .get(format!("{url}/webhooks/orders"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);

    let r = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);

    let small = format!(r#"{{"pad":"{}"}}"#, "x".repeat(500));
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .body(small)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "a body under the limit is accepted");
    daemon::stop(sy).await;
}

#[test]
fn the_default_body_limit_is_one_mebibyte() {
    let dir = scratch();
    let cfg = daemon::webhook_config(dir.path(), "127.0.0.1:1", "http://127.0.0.1:1", "t", "");
    assert_eq!(cfg.server.max_body_bytes, 1024 * 1024);
}
