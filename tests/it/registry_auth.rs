//! A registry that requires credentials (Confluent Cloud, a gateway): switchyard sends
//! `[schema_registry]` username/password with every request, from the daemon, `tail` and
//! `check --registry`; wrong credentials are retried as the registry's fault (never a schema
//! rejection), the event waits in the DLQ to be replayed once they are fixed, and the password
//! shows nowhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::Stack;
use crate::support::daemon;
use crate::support::registry::AuthProxy;
use crate::support::run_cli as cli;

const KEY: &str = "SRKEY";
const SECRET: &str = "sr-secret-93f1";

/// The `[schema_registry]` lines of basic authentication with `password`.
fn password_lines(password: &str) -> String {
    format!("username = \"{KEY}\"\npassword = \"{password}\"")
}

/// A broker and a registry behind a proxy that lets `expected` through, and switchyard
/// running on `routes-<name>.toml` with the `[schema_registry]` lines `auth`.
async fn running(
    expected: &str,
    name: &str,
    auth: &str,
) -> (
    Stack,
    AuthProxy,
    PathBuf,
    switchyard::daemon::Daemon,
    String,
) {
    let stack = Stack::start();
    let proxy = AuthProxy::start(&stack.registry.url(), expected);
    let path = config_with(
        stack.dir.path(),
        &stack.broker.bootstrap(),
        &proxy.url(),
        name,
        auth,
    );
    let cfg = switchyard::config::Config::load(&path).expect("valid config");
    let (sy, url) = daemon::start(cfg).await;
    (stack, proxy, path, sy, url)
}

fn config_with(dir: &Path, bootstrap: &str, registry: &str, name: &str, auth: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
ack_timeout = "10s"

[kafka]
bootstrap_servers = "{bootstrap}"
delivery_timeout = "5s"
retry_max_elapsed = "2s"

[schema_registry]
url = "{registry}"
timeout = "3s"
{auth}

[sources.orders]
type = "webhook"
provider = "none"
allow_unauthenticated = true

[[routes]]
name = "orders-to-kafka"
source = "orders"
topic = "authed"
"#
    );
    let path = dir.join(format!("routes-{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn basic() -> String {
    basic_with(SECRET)
}

fn basic_with(password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{password}"))
    )
}

/// POSTs webhook `id` to the daemon at `url`; (status, body).
async fn post(url: &str, id: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", id)
        .body(format!(r#"{{"id":"{id}"}}"#))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_credentials_events_are_encoded_tailed_and_checked_through_an_authenticating_registry()
{
    let (_stack, proxy, path, sy, url) = running(&basic(), "good", &password_lines(SECRET)).await;
    for i in 0..3 {
        let (status, body) = post(&url, &format!("a-{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("\"accepted\""),
            "delivered, not dead-lettered: {body}"
        );
    }
    // A consumer's view: `tail` decodes each record through the same registry.
    let mut ids: Vec<String> = crate::support::tail(&path, "authed", 3)
        .await
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["value"]["id"].as_str().expect("decoded id").to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["a-0", "a-1", "a-2"]);
    // `check --registry` asks the registry about the route's subjects with the credentials.
    let (code, text) = cli(&path, &["check", "--registry"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("authed-value"), "{text}");
    let (forwarded, refused) = proxy.seen();
    assert!(
        forwarded >= 3,
        "registration, lookups and the check went through: {forwarded}"
    );
    assert_eq!(refused, 0, "every request carried the credentials");
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_retried_as_the_registry_s_fault_and_the_event_replays_once_fixed() {
    let (stack, proxy, wrong, sy, url) =
        running(&basic(), "bad", &password_lines("wrong-password-77")).await;
    let (status, body) = post(&url, "w-1").await;
    // Retried as a registry problem (not the event's) until retry_max_elapsed (2 s here, under
    // the 10 s ack_timeout), then kept in the DLQ, so the answer is 200.
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("dead_lettered"), "{body}");
    daemon::stop(sy).await;
    let (code, listed) = cli(&wrong, &["dlq", "list", "--format", "json"]);
    assert_eq!(code, Some(0), "{listed}");
    let letters: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("JSON list");
    assert_eq!(letters.len(), 1, "{listed}");
    // The on-call engineer sees why: the registry refused the credentials (not a schema problem).
    assert_eq!(letters[0]["class"], "retries_exhausted", "{listed}");
    let why = letters[0]["message"].as_str().unwrap_or_default();
    assert!(why.contains("401 Unauthorized"), "{listed}");
    let encoded = basic_with("wrong-password-77");
    let encoded = encoded.trim_start_matches("Basic ");
    assert!(!listed.contains("wrong-password-77") && !listed.contains(encoded));
    // `check --registry` says so too, without the password.
    let (code, text) = cli(&wrong, &["check", "--registry"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("[schema_registry] username/password"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-password-77") && !text.contains(encoded),
        "{text}"
    );
    assert!(
        proxy.seen().1 >= 2,
        "refused requests reached the registry's gate"
    );

    // Credentials fixed: the replay encodes and delivers the event.
    let fixed = config_with(
        stack.dir.path(),
        &stack.broker.bootstrap(),
        &proxy.url(),
        "good",
        &password_lines(SECRET),
    );
    let (code, replayed) = cli(&fixed, &["dlq", "replay", "--all"]);
    assert_eq!(code, Some(0), "{replayed}");
    let (code, tailed) = cli(&fixed, &["tail", "authed", "--limit", "1", "--idle", "20s"]);
    assert_eq!(code, Some(0), "{tailed}");
    assert!(tailed.contains("\"w-1\""), "{tailed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_is_sent_by_the_daemon_and_by_tail() {
    let (_stack, proxy, path, sy, url) =
        running("Bearer tok-5150", "token", "token = \"tok-5150\"").await;
    let (status, body) = post(&url, "b-1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"accepted\""), "{body}");
    let (code, tailed) = cli(&path, &["tail", "authed", "--limit", "1", "--idle", "20s"]);
    assert_eq!(code, Some(0), "{tailed}");
    assert!(tailed.contains("\"b-1\""), "{tailed}");
    assert_eq!(proxy.seen().1, 0, "every request carried the token");
    daemon::stop(sy).await;
}
