//! The admin API (issue #24): every endpoint refuses callers without a token (401) or with too
//! small a role (403) and serves the right one, each attempt in the audit trail with its
//! principal; viewers see masked payloads and admins' raw views are audited; a replay job runs,
//! reports progress, can be cancelled, and delivers each entry once (read back from Kafka).

use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use switchyard::config::{Config, DlqStoreConfig};
use switchyard::error::ErrorClass;
use switchyard::event::now_micros;
use switchyard::store::{NewDeadLetter, Store};

use crate::dlq_store::webhook_event_from;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::daemon;
use crate::support::{Stack, wait_for_async};

pub const VIEWER: &str = "sy_viewer_0123456789abcdef0123456789";
pub const OPERATOR: &str = "sy_operator_0123456789abcdef01234567";
pub const ADMIN: &str = "sy_admin_0123456789abcdef0123456789ab";

fn sha(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A daemon with an admin listener, three tokens, and a route that masks `email`.
pub async fn start(stack: &Stack, topic: &str) -> (switchyard::daemon::Daemon, String, Config) {
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[kafka]
bootstrap_servers = "{}"
partitions = 1
delivery_timeout = "5s"

[schema_registry]
url = "{}"

[sources.shop]
type = "webhook"
path = "/webhooks/shop"
provider = "none"
allow_unauthenticated = true

[[routes]]
name = "orders"
source = "shop"
topic = "{topic}"

[routes.transform]
mask = {{ email = "redact" }}

[admin.tokens.viewer]
role = "viewer"
sha256 = "{}"

[admin.tokens.operator]
role = "operator"
sha256 = "sha256:{}"

[admin.tokens.admin]
role = "admin"
sha256 = "{}"
"#,
            stack.broker.bootstrap(),
            stack.registry.url(),
            sha(VIEWER),
            sha(OPERATOR),
            sha(ADMIN),
        ),
    )
    .expect("config");
    let config = Config::load(&path).expect("valid config");
    let (sy, _) = daemon::start(config.clone()).await;
    let admin = format!("http://{}", sy.admin_addr().expect("admin listener"));
    (sy, admin, config)
}

/// Dead letters of source `shop`, route `orders`, with an email in their body: their ids.
pub async fn dead_letters(config: &Config, ids: &[&str]) -> Vec<i64> {
    let DlqStoreConfig::Sqlite(file) = &config.dlq.store else {
        panic!("the test uses the embedded store");
    };
    let store = Store::open(&DlqStoreConfig::Sqlite(file.clone()))
        .await
        .expect("store");
    let mut out = Vec::new();
    for id in ids {
        let body = format!(r#"{{"id":"{id}","email":"{id}@example.com","total":5}}"#);
        out.push(
            store
                .dead_letters()
                .put(&NewDeadLetter {
                    event: webhook_event_from("shop", id, &body),
                    route: Some("orders".into()),
                    topic: None,
                    key: Some(id.to_string()),
                    record: None,
                    class: ErrorClass::Produce,
                    message: "the broker refused it".into(),
                    attempts: 1,
                    failed_at: now_micros(),
                })
                .await
                .expect("put"),
        );
    }
    out
}

/// Calls the API: status and JSON answer.
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    call_from([127, 0, 0, 1], method, url, token, body).await
}

/// [`call`] from a loopback address of its own (each address has its own failure budget).
pub async fn call_from(
    from: [u8; 4],
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .expect("client");
    let mut req = client.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_missing_tokens_and_small_roles_and_audits_each_attempt() {
    let stack = Stack::start();
    let (sy, admin, config) = start(&stack, "admin-api-roles").await;
    let ids = dead_letters(&config, &["r-1", "r-2"]).await;
    let one = ids[0];
    // (method, path, body, the role it needs, the status the right role gets)
    let endpoints: Vec<(&str, String, Option<Value>, &str, u16)> = vec![
        ("GET", "/api/v1/whoami".into(), None, "viewer", 200),
        (
            "GET",
            "/api/v1/dead-letters?status=all&limit=10".into(),
            None,
            "viewer",
            200,
        ),
        (
            "GET",
            "/api/v1/dead-letters/stats".into(),
            None,
            "viewer",
            200,
        ),
        (
            "GET",
            format!("/api/v1/dead-letters/{one}"),
            None,
            "viewer",
            200,
        ),
        (
            "GET",
            format!("/api/v1/dead-letters/{one}?raw=true"),
            None,
            "admin",
            200,
        ),
        ("GET", "/api/v1/replays".into(), None, "viewer", 200),
        ("GET", "/api/v1/audit?limit=5".into(), None, "viewer", 200),
        ("GET", "/api/v1/audit/verify".into(), None, "viewer", 200),
        ("GET", "/api/v1/routes".into(), None, "viewer", 200),
        ("GET", "/api/v1/lineage".into(), None, "viewer", 200),
        ("GET", "/api/v1/slots".into(), None, "viewer", 200),
        (
            "POST",
            "/api/v1/replays".into(),
            Some(json!({"ids": [one], "dry_run": true})),
            "operator",
            202,
        ),
        (
            "POST",
            "/api/v1/dead-letters/discard".into(),
            Some(json!({"ids": [ids[1]], "reason": "test traffic"})),
            "operator",
            200,
        ),
        // No postgres source of that name: past the role check, the answer is 404.
        (
            "POST",
            "/api/v1/slots/none/reset".into(),
            None,
            "admin",
            404,
        ),
        ("POST", "/api/v1/reload".into(), None, "admin", 200),
        ("GET", "/api/v1/backfills/shop".into(), None, "viewer", 200),
        // No postgres source of that name: past the role check, 404 and 409.
        (
            "POST",
            "/api/v1/backfills".into(),
            Some(json!({"source": "none", "table": "t"})),
            "operator",
            404,
        ),
        (
            "DELETE",
            "/api/v1/backfills/shop".into(),
            None,
            "operator",
            409,
        ),
    ];
    let rank = |r: &str| ["viewer", "operator", "admin"].iter().position(|x| *x == r);
    let tokens = [("viewer", VIEWER), ("operator", OPERATOR), ("admin", ADMIN)];
    let mut forbidden = 0;
    for (n, (method, path, body, needs, want)) in endpoints.iter().enumerate() {
        let url = format!("{admin}{path}");
        // Failures from an address of their own: a dozen from one would exhaust its budget.
        let from = [127, 0, 1, u8::try_from(n).expect("few endpoints")];
        let (status, answer) = call_from(from, method, &url, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {path} without a token: {answer}");
        assert_eq!(answer["error"], "unauthenticated", "{answer}");
        let (status, _) = call_from(from, method, &url, Some("sy_not_a_token"), body.clone()).await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        for (role, token) in tokens {
            if rank(role) < rank(needs) {
                let (status, answer) = call(method, &url, Some(token), body.clone()).await;
                assert_eq!(status, 403, "{method} {path} as {role}: {answer}");
                assert_eq!(answer["error"], "forbidden", "{answer}");
                forbidden += 1;
            }
        }
        let token = tokens[rank(needs).expect("role")].1;
        let (status, answer) = call(method, &url, Some(token), body.clone()).await;
        assert_eq!(status, *want, "{method} {path} as {needs}: {answer}");
    }
    // What the reads said.
    let (_, me) = call(
        "GET",
        &format!("{admin}/api/v1/whoami"),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(me, json!({"name": "token:operator", "role": "operator"}));
    let (_, masked) = call(
        "GET",
        &format!("{admin}/api/v1/dead-letters/{one}"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        masked["event"]["payload"]["body"]["email"], "[redacted]",
        "{masked}"
    );
    assert_eq!(masked["event"]["payload"]["body"]["total"], 5);
    let (_, raw) = call(
        "GET",
        &format!("{admin}/api/v1/dead-letters/{one}?raw=true"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        raw["event"]["payload"]["body"]["email"], "r-1@example.com",
        "{raw}"
    );
    let (_, page) = call(
        "GET",
        &format!("{admin}/api/v1/dead-letters?status=discarded"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(page["items"][0]["id"], ids[1], "{page}");
    let (status, bad) = call(
        "GET",
        &format!("{admin}/api/v1/dead-letters?class=nonsense"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("bad_request")),
        "{bad}"
    );
    // The OpenAPI document needs no token.
    let (status, doc) = call("GET", &format!("{admin}/api/v1/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/replays"]["post"].is_object(), "{doc}");

    // Every attempt is in the trail, with who and from where; the chain verifies.
    let (_, log) = call(
        "GET",
        &format!("{admin}/api/v1/audit?limit=1000"),
        Some(ADMIN),
        None,
    )
    .await;
    let rows = log.as_array().expect("rows");
    let count = |actor: &str, result: &str| {
        rows.iter()
            .filter(|r| {
                r["actor"] == actor && r["result"].as_str().is_some_and(|x| x.starts_with(result))
            })
            .count()
    };
    assert_eq!(
        count("anonymous", "401"),
        endpoints.len() * 2,
        "each unauthenticated attempt"
    );
    let denied = rows
        .iter()
        .filter(|r| r["result"].as_str().is_some_and(|x| x.starts_with("403")))
        .count();
    assert_eq!(denied, forbidden, "each attempt with too small a role");
    assert!(
        rows.iter()
            .all(|r| r["peer"].as_str().is_some_and(|p| p.starts_with("127.0."))),
        "{log}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["actor"] == "anonymous" && r["peer"] == "127.0.1.3")
            .count(),
        2,
        "the peer address is the caller's"
    );
    assert!(
        rows.iter()
            .all(|r| !r["request_id"].as_str().unwrap_or("").is_empty())
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["action"] == "view raw payload" && r["actor"] == "token:admin")
            .count(),
        2,
        "each raw view, by the admin"
    );
    assert!(
        rows.iter()
            .any(|r| r["action"] == "discard" && r["actor"] == "token:operator" && r["count"] == 1)
    );
    let (_, v) = call(
        "GET",
        &format!("{admin}/api/v1/audit/verify"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(v["broken"], Value::Null, "{v}");

    // Guessing tokens is slow: past 10 failures a minute an address gets 429.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            call(
                "GET",
                &format!("{admin}/api/v1/whoami"),
                Some("sy_guess"),
                None,
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    daemon::stop(sy).await;
}

/// The event ids on `topic` (one partition), in order.
async fn ids_on(stack: &Stack, topic: &str, want: usize) -> Vec<String> {
    let bootstrap = stack.broker.bootstrap();
    let t = topic.to_string();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &t, want, Duration::from_secs(15))
    })
    .await
    .expect("consumer");
    let dec = decoder(&stack.registry.url());
    let mut ids = Vec::new();
    for r in &records {
        ids.push(
            decode(&dec, &r.value).await.1["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    ids
}

/// Polls job `id` until it is no longer running.
async fn finished(admin: &str, id: u64) -> Value {
    wait_for_async(
        "the replay job to end",
        Duration::from_secs(60),
        || async move {
            let (_, job) = call(
                "GET",
                &format!("{admin}/api/v1/replays/{id}"),
                Some(VIEWER),
                None,
            )
            .await;
            (job["state"] != "running").then_some(job)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_job_runs_dry_then_paced_is_cancelled_and_delivers_each_entry_once() {
    let stack = Stack::start();
    let topic = "admin-api-replay";
    let (sy, admin, config) = start(&stack, topic).await;
    let ids = dead_letters(&config, &["j-1", "j-2", "j-3", "j-4"]).await;

    // Dry run: what would be produced, nothing is.
    let (status, job) = call(
        "POST",
        &format!("{admin}/api/v1/replays"),
        Some(OPERATOR),
        Some(json!({"all": true, "dry_run": true})),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let dry = finished(&admin, job["id"].as_u64().expect("job id")).await;
    assert_eq!(
        (dry["state"].as_str(), dry["delivered"].as_u64()),
        (Some("done"), Some(4)),
        "{dry}"
    );
    assert_eq!(dry["lines"][0]["would_produce"]["topic"], topic, "{dry}");
    assert!(
        dry["lines"][0]["would_produce"].get("value").is_none()
            && dry["lines"][0]["would_produce"].get("key").is_none(),
        "a job's output, open to viewers, holds no payload: {dry}"
    );

    // Paced at one per 5 s (a slow first delivery, registry and topic cold, must not let the
    // paced ones catch up before the cancel), cancelled once the first is delivered: the rest
    // stay pending.
    let (status, job) = call(
        "POST",
        &format!("{admin}/api/v1/replays"),
        Some(OPERATOR),
        Some(json!({"all": true, "rate": "0.2/s"})),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_u64().expect("job id");
    wait_for_async("the first delivery", Duration::from_secs(30), || async {
        let (_, j) = call(
            "GET",
            &format!("{admin}/api/v1/replays/{id}"),
            Some(VIEWER),
            None,
        )
        .await;
        (j["delivered"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let (status, answer) = call(
        "DELETE",
        &format!("{admin}/api/v1/replays/{id}"),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let cancelled = finished(&admin, id).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let delivered = cancelled["delivered"].as_u64().expect("count");
    assert!(
        (1..4).contains(&delivered),
        "cancelled before the end: {cancelled}"
    );
    let (_, pending) = call(
        "GET",
        &format!("{admin}/api/v1/dead-letters"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        pending["items"].as_array().map(Vec::len),
        Some(4 - delivered as usize),
        "what was not delivered stays pending: {pending}"
    );
    let (status, _) = call(
        "DELETE",
        &format!("{admin}/api/v1/replays/{id}"),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(status, 409, "an ended job cannot be cancelled");

    // The rest, unpaced.
    let (_, job) = call(
        "POST",
        &format!("{admin}/api/v1/replays"),
        Some(OPERATOR),
        Some(json!({"all": true})),
    )
    .await;
    let rest = finished(&admin, job["id"].as_u64().expect("job id")).await;
    assert_eq!(rest["state"], "done", "{rest}");
    assert_eq!(rest["delivered"].as_u64(), Some(4 - delivered), "{rest}");

    // In Kafka: each entry once.
    let mut got = ids_on(&stack, topic, 4).await;
    got.sort();
    assert_eq!(got, ["j-1", "j-2", "j-3", "j-4"]);
    let (_, page) = call(
        "GET",
        &format!("{admin}/api/v1/dead-letters?status=replayed"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(ids.len()),
        "{page}"
    );
    // Both replays are in the trail, by the operator.
    let (_, log) = call(
        "GET",
        &format!("{admin}/api/v1/audit?limit=1000"),
        Some(VIEWER),
        None,
    )
    .await;
    let replays: Vec<&Value> = log
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["action"] == "replay" && r["actor"] == "token:operator")
        .collect();
    assert_eq!(replays.len(), 2, "{log}");
    daemon::stop(sy).await;
}

/// Runs `switchyard ARGS` (no config file: everything through the API) with the token file.
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .expect("run switchyard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `switchyard dlq … --admin-url` does what `dlq` does, as the token's principal: list,
/// replay (each entry once in Kafka), audit; a viewer's token cannot replay; `audit verify`
/// through the API; and `token new` makes a token the daemon takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_through_the_admin_api_acts_as_the_tokens_principal() {
    let stack = Stack::start();
    let topic = "admin-api-cli";
    let (sy, admin, config) = start(&stack, topic).await;
    dead_letters(&config, &["c-1", "c-2"]).await;
    let dir = stack.dir.path();
    let (op_file, viewer_file) = (dir.join("operator.token"), dir.join("viewer.token"));
    std::fs::write(&op_file, format!("{OPERATOR}\n")).expect("token file");
    std::fs::write(&viewer_file, VIEWER).expect("token file");
    let (op, viewer) = (
        op_file.to_str().expect("path"),
        viewer_file.to_str().expect("path"),
    );

    let (code, out, err) = cli(&[
        "dlq",
        "list",
        "--format",
        "json",
        "--admin-url",
        &admin,
        "--token-file",
        viewer,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, _, err) = cli(&[
        "dlq",
        "replay",
        "--all",
        "--yes",
        "--admin-url",
        &admin,
        "--token-file",
        viewer,
    ]);
    assert_eq!(code, Some(1), "a viewer cannot replay: {err}");
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = cli(&[
        "dlq",
        "replay",
        "--all",
        "--yes",
        "--admin-url",
        &admin,
        "--token-file",
        op,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("\"delivered\"")).count(),
        2,
        "{out}"
    );
    let mut got = ids_on(&stack, topic, 2).await;
    got.sort();
    assert_eq!(got, ["c-1", "c-2"], "each once");
    // Filters go through the API's query; export walks its pages; stats count by status.
    let remote = |args: &[&str]| {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--admin-url", &admin, "--token-file", viewer]);
        let (code, out, err) = cli(&all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    let out = remote(&["list", "--format", "json"]);
    assert_eq!(out.lines().count(), 0, "none pending: {out}");
    let out = remote(&["list", "--status", "replayed", "--format", "json"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = remote(&["export", "--status", "all"]);
    let exported: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(exported.len(), 2, "{out}");
    assert!(exported.iter().all(|e| e["status"] == "replayed"), "{out}");
    let stats: Value = serde_json::from_str(&remote(&["stats", "--format", "json"])).expect("json");
    assert!(
        stats
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["status"] == "replayed" && r["count"] == 2),
        "{stats}"
    );
    let (code, out, err) = cli(&[
        "dlq",
        "audit",
        "--format",
        "json",
        "--admin-url",
        &admin,
        "--token-file",
        op,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let log: Value = serde_json::from_str(&out).expect("json");
    assert!(
        log.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["action"] == "replay" && r["actor"] == "token:operator"),
        "the replay is the operator's: {out}"
    );
    let (code, out, err) = cli(&[
        "audit",
        "verify",
        "--admin-url",
        &admin,
        "--token-file",
        viewer,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");

    // A token made by `token new`, configured by its digest, is taken.
    let (code, token, err) = cli(&["token", "new", "--name", "carol", "--role", "viewer"]);
    assert_eq!(code, Some(0), "{err}");
    let digest = err
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the config lines");
    assert_eq!(digest, sha(token.trim()));
    daemon::stop(sy).await;

    // Straight on the store: intact, then a row changed behind its back is named.
    let path = config.path.to_str().expect("path");
    let (code, _, err) = cli(&["audit", "verify", "-c", path]);
    assert_eq!(code, Some(0), "{err}");
    let switchyard::config::DlqStoreConfig::Sqlite(file) = &config.dlq.store else {
        panic!("embedded store");
    };
    rusqlite::Connection::open(file)
        .expect("open the store")
        .execute(
            "UPDATE audit_log SET actor = 'token:someone-else' WHERE action = 'replay'",
            [],
        )
        .expect("tamper");
    let (code, out, err) = cli(&["audit", "verify", "-c", path]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("BROKEN at row"), "{err}");
}

/// `[dlq] mask_payloads = true`: a webhook stored while Kafka is away is kept with its route's
/// masks applied (the raw email never reaches the store), and once re-delivered its record
/// carries the same hash a direct delivery does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_masked_at_rest_never_hold_the_raw_value_and_replay_to_the_same_hash() {
    let dir = crate::support::scratch();
    let (broker, kafka) = crate::support::broker::Broker::start_behind_proxy(dir.path());
    let registry = crate::support::registry::Registry::start(dir.path());
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
ack_timeout = "30s"

[kafka]
bootstrap_servers = "{}"
partitions = 1
delivery_timeout = "1s"

[schema_registry]
url = "{}"

[dlq]
url = "sqlite://dlq/switchyard.db"
mask_payloads = true

[router]
mask_key = "a-long-random-key-for-the-test"

[sources.shop]
type = "webhook"
path = "/webhooks/shop"
provider = "none"
allow_unauthenticated = true
when_unavailable = "dead_letter"
ack_timeout = "5s"

[[routes]]
name = "orders"
source = "shop"
topic = "masked-at-rest"

[routes.transform]
mask = {{ email = "sha256" }}
"#,
            broker.bootstrap(),
            registry.url()
        ),
    )
    .expect("config");
    let config = Config::load(&path).expect("valid config");
    let (sy, url) = daemon::start(config.clone()).await;
    let client = reqwest::Client::new();
    let send = |id: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(format!("{url}/webhooks/shop"))
                .header("webhook-id", id)
                .json(&json!({"id": id, "email": "ann@example.com"}))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(send("m-1").await.1["status"], "accepted");
    kafka.cut();
    let (status, answer) = send("m-2").await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("dead_lettered")),
        "{answer}"
    );

    // In the store: masked, not raw.
    let store = Store::open(&config.dlq.store).await.expect("store");
    let stored = store
        .dead_letters()
        .list(&switchyard::store::Selector::default())
        .await
        .expect("list");
    let event = stored[0].event.as_ref().expect("the stored event");
    let json = serde_json::to_string(event).expect("json");
    assert!(
        !json.contains("ann@example.com"),
        "the raw email is in the store: {json}"
    );
    assert!(json.contains("switchyard:masked:sha256:"), "{json}");
    let raw_file = std::fs::read(match &config.dlq.store {
        DlqStoreConfig::Sqlite(f) => f.clone(),
        DlqStoreConfig::Postgres(_) => unreachable!(),
    })
    .expect("store file");
    assert!(
        !raw_file.windows(15).any(|w| w == b"ann@example.com"),
        "nor anywhere in the file"
    );

    // Re-delivered once Kafka is back: the same hash as the direct delivery.
    kafka.restore();
    let bootstrap = broker.bootstrap();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, "masked-at-rest", 2, Duration::from_secs(60))
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 2);
    let dec = decoder(&registry.url());
    let mut emails = Vec::new();
    for r in &records {
        let v = decode(&dec, &r.value).await.1;
        // `data` is the body as a JSON string (no value_schema).
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap_or("null")).expect("data");
        emails.push(data["email"].clone());
    }
    assert_eq!(emails[0], emails[1], "{emails:?}");
    assert!(
        emails[0]
            .as_str()
            .is_some_and(|e| e.len() == 64 && !e.contains("switchyard")),
        "{emails:?}"
    );
    daemon::stop(sy).await;
}

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}-ca.pem`, key `{name}-ca.key`) and certificates it signs.
fn ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} CA"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
}

fn signed(dir: &std::path::Path, ca: &str, name: &str, cn: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// `[admin.tls]` with a client CA: the admin listener speaks HTTPS; a client certificate the CA
/// signed, whose CN is an `[admin.clients]` entry, acts as `cert:<name>` with its role (and is
/// audited so); without one a token still works and probes need neither; a certificate of
/// another CA is refused at the handshake. Misconfigurations are config errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_of_the_configured_ca_act_with_their_role() {
    let stack = Stack::start();
    let dir = stack.dir.path();
    ca(dir, "server");
    ca(dir, "operators");
    ca(dir, "other");
    signed(
        dir,
        "server",
        "admin",
        "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    signed(
        dir,
        "operators",
        "alice",
        "alice",
        "extendedKeyUsage=clientAuth\n",
    );
    signed(
        dir,
        "other",
        "mallory",
        "alice",
        "extendedKeyUsage=clientAuth\n",
    );
    let base = |extra: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[kafka]
bootstrap_servers = "{}"
[schema_registry]
url = "{}"
[sources.shop]
type = "webhook"
path = "/webhooks/shop"
provider = "none"
allow_unauthenticated = true
[[routes]]
name = "orders"
source = "shop"
topic = "mtls"
[admin.tokens.viewer]
role = "viewer"
sha256 = "{}"
{extra}
"#,
            stack.broker.bootstrap(),
            stack.registry.url(),
            sha(VIEWER)
        )
    };
    let path = dir.join("routes.toml");
    // A client without a CA to verify it, and a key that is not the certificate's: errors.
    std::fs::write(
        &path,
        base("[admin.clients.alice]\ncommon_name = \"alice\"\nrole = \"admin\"\n"),
    )
    .expect("config");
    let e = Config::load(&path)
        .expect_err("clients need a client CA")
        .to_string();
    assert!(e.contains("client_ca") && e.contains("routes.toml:"), "{e}");
    std::fs::write(
        &path,
        base("[admin.tls]\ncert = \"admin.pem\"\nkey = \"alice.key\"\n"),
    )
    .expect("config");
    let e = Config::load(&path)
        .expect_err("a key of another certificate")
        .to_string();
    assert!(e.contains("[admin.tls] cannot be used"), "{e}");

    std::fs::write(
        &path,
        base("[admin.tls]\ncert = \"admin.pem\"\nkey = \"admin.key\"\nclient_ca = \"operators-ca.pem\"\n[admin.clients.alice]\ncommon_name = \"alice\"\nrole = \"admin\"\n"),
    )
    .expect("config");
    let config = Config::load(&path).expect("valid config");
    let (sy, _) = daemon::start(config).await;
    let admin = format!(
        "https://localhost:{}",
        sy.admin_addr().expect("admin").port()
    );
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(dir.join("server-ca.pem")).expect("ca"))
            .expect("root");
    let client = |identity: Option<&str>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .resolve("localhost", ([127, 0, 0, 1], 0).into())
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            let cert = std::fs::read(dir.join(format!("{name}.pem"))).expect("cert");
            let key = std::fs::read(dir.join(format!("{name}.key"))).expect("key");
            b = b.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).expect("identity"));
        }
        b.build().expect("client")
    };
    let get = |c: reqwest::Client, path: &str, token: Option<&'static str>| {
        let url = format!("{admin}{path}");
        async move {
            let mut r = c.get(&url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let (status, me) = get(client(Some("alice")), "/api/v1/whoami", None)
        .await
        .expect("https");
    assert_eq!(
        (status, me),
        (200, json!({"name": "cert:alice", "role": "admin"}))
    );
    let (status, _) = get(client(None), "/api/v1/whoami", None)
        .await
        .expect("https");
    assert_eq!(status, 401, "no certificate, no token");
    let (status, me) = get(client(None), "/api/v1/whoami", Some(VIEWER))
        .await
        .expect("https");
    assert_eq!((status, me["name"].as_str()), (200, Some("token:viewer")));
    let (status, _) = get(client(None), "/healthz", None).await.expect("https");
    assert_eq!(status, 200, "probes need no certificate");
    assert!(
        get(client(Some("mallory")), "/healthz", None)
            .await
            .is_err(),
        "a certificate of another CA is refused at the handshake"
    );
    // A client certificate is sent by a browser on its own: a change on its strength alone must
    // be JSON from this origin (a form on another site cannot reload or replay).
    let post = |c: reqwest::Client, json: bool, origin: Option<&'static str>| {
        let url = format!("{admin}/api/v1/reload");
        async move {
            let mut r = c.post(&url);
            if json {
                r = r.header("content-type", "application/json").body("{}");
            } else {
                r = r.header("content-type", "text/plain").body("x");
            }
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            r.send().await.expect("https").status().as_u16()
        }
    };
    assert_eq!(
        post(client(Some("alice")), false, None).await,
        403,
        "not JSON"
    );
    assert_eq!(
        post(client(Some("alice")), true, Some("https://evil.example")).await,
        403,
        "another origin"
    );
    assert_eq!(post(client(Some("alice")), true, None).await, 200);
    // The console's cookie is not a credential of the API.
    let (status, _) = {
        let r = client(None)
            .get(format!("{admin}/api/v1/whoami"))
            .header("cookie", format!("switchyard_admin={VIEWER}"))
            .send()
            .await
            .expect("https");
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 401, "the API ignores the console's cookie");
    let (_, log) = get(client(Some("alice")), "/api/v1/audit?limit=50", None)
        .await
        .expect("https");
    assert!(
        log.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["actor"] == "cert:alice" && r["role"] == "admin"),
        "{log}"
    );
    daemon::stop(sy).await;
}
