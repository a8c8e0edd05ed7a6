//! On-call sees what failed and why, fixes it, and replays: once, safely, with an audit trail.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use switchyard::config::Config;
use switchyard::error::ErrorClass;
use switchyard::store::{Selector, Status, Store};

use crate::dlq_store::letter;
use crate::support::Stack;
use crate::support::broker::Broker;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::daemon::{self, Setup, write_config};
use crate::support::registry::Registry;
use crate::support::scratch;

fn switchyard(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("-c")
        .arg(config)
        .env("USER", "oncall-test")
        .output()
        .expect("run switchyard")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn list(config: &Path, status: &str) -> Vec<serde_json::Value> {
    let out = switchyard(
        config,
        &["dlq", "list", "--format", "json", "--status", status],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("json array")
}

async fn ids_on_topic(
    broker: &Broker,
    registry: &Registry,
    topic: &str,
    at_least: usize,
) -> Vec<String> {
    let bootstrap = broker.bootstrap();
    let t = topic.to_string();
    // Ask for one more than expected, so that a duplicate would be seen.
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &t, at_least + 1, Duration::from_secs(5))
    })
    .await
    .expect("consumer");
    let dec = decoder(&registry.url());
    let mut ids = Vec::new();
    for r in records {
        let (_, v) = decode(&dec, &r.value).await;
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_event_is_dead_lettered_then_replayed_exactly_once_after_the_fix() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let mut setup = Setup {
        kafka_properties: "\"message.max.bytes\" = 1000".into(),
        ..Setup::new(&broker, &registry, "orders")
    };
    let path = write_config(dir.path(), &setup);
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3000));
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", "big-1")
        .body(big.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status(),
        200,
        "dead-lettered events are acknowledged: they are durable in the DLQ"
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["status"], "dead_lettered");
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", "small-1")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"switchyard_dlq_depth{class="oversize",route="orders-to-kafka"} 1"#),
        "DLQ depth by route and class:\n{metrics}"
    );
    daemon::stop(sy).await;

    // On-call sees what failed and why.
    let pending = list(&path, "pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let entry = &pending[0];
    assert_eq!(entry["class"], "oversize");
    assert_eq!(entry["route"], "orders-to-kafka");
    assert_eq!(entry["topic"], "orders");
    assert_eq!(entry["event_id"], "big-1");
    assert_eq!(entry["attempts"], 1);
    assert_eq!(entry["status"], "pending");
    for field in [
        "id",
        "source",
        "message",
        "first_failed_at",
        "last_failed_at",
        "replay_count",
    ] {
        assert!(entry.get(field).is_some(), "list --format json has {field}");
    }
    let id = entry["id"].as_i64().expect("id").to_string();
    let show = switchyard(&path, &["dlq", "show", &id]);
    assert!(show.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("show is JSON");
    assert_eq!(
        shown["event"]["payload"]["body"]["pad"]
            .as_str()
            .map(str::len),
        Some(3000),
        "payload pretty-printed"
    );
    assert!(
        shown["message"]
            .as_str()
            .expect("message")
            .contains("too large"),
        "{shown}"
    );

    // Before the fix, a dry run says it would fail again, and why.
    let dry = switchyard(
        &path,
        &["dlq", "replay", "--class", "oversize", "--dry-run"],
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let lines = json_lines(&dry);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["would_fail"], "oversize");

    // Fix the cause (the size limit). A dry run now shows the record and changes nothing.
    setup.kafka_properties.clear();
    write_config(dir.path(), &setup);
    let dry = switchyard(
        &path,
        &["dlq", "replay", "--class", "oversize", "--dry-run"],
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let lines = json_lines(&dry);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["would_produce"]["topic"], "orders");
    assert_eq!(lines[0]["would_produce"]["key"], "big-1");
    assert_eq!(lines[0]["would_produce"]["value"]["id"], "big-1");
    assert_eq!(list(&path, "pending").len(), 1);
    assert_eq!(
        ids_on_topic(&broker, &registry, "orders", 1).await,
        ["small-1"]
    );

    // Replay.
    let replay = switchyard(&path, &["dlq", "replay", "--class", "oversize"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(list(&path, "pending").is_empty());
    let replayed = list(&path, "replayed");
    assert_eq!(
        (replayed.len(), &replayed[0]["replay_count"]),
        (1, &serde_json::json!(1))
    );
    assert_eq!(
        ids_on_topic(&broker, &registry, "orders", 2).await,
        ["big-1", "small-1"]
    );

    // Replaying the same entry again produces nothing new, unless forced.
    let again = switchyard(&path, &["dlq", "replay", "--id", &id]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("delivered 0"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        ids_on_topic(&broker, &registry, "orders", 2).await,
        ["big-1", "small-1"]
    );
    let forced = switchyard(&path, &["dlq", "replay", "--id", &id, "--force"]);
    assert!(forced.status.success());
    assert_eq!(
        ids_on_topic(&broker, &registry, "orders", 3).await,
        ["big-1", "big-1", "small-1"]
    );

    // Every replay is in the audit log, with who did it.
    let audit = switchyard(&path, &["dlq", "audit", "--format", "json"]);
    let log: Vec<serde_json::Value> = serde_json::from_slice(&audit.stdout).expect("audit json");
    let replays: Vec<_> = log.iter().filter(|e| e["action"] == "replay").collect();
    assert_eq!(replays.len(), 3, "{log:?}");
    assert!(replays.iter().all(|e| e["actor"] == "local:oncall-test"));
    assert_eq!(
        replays.last().map(|e| e["result"].clone()),
        Some(serde_json::json!("delivered 1, failed 0"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_the_registry_rejects_is_dead_lettered_and_replays_once_compatibility_is_fixed() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let setup = Setup::new(&broker, &registry, "invoices");
    let path = write_config(dir.path(), &setup);
    // Someone else already owns the subject with an incompatible schema (BACKWARD by default).
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/subjects/invoices-value/versions", registry.url()))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"schema":"{\"type\":\"record\",\"name\":\"Legacy\",\"fields\":[{\"name\":\"amount\",\"type\":\"long\"}]}"}"#)
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success());
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let r = http
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", "inv-1")
        .body(r#"{"amount":5}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["status"],
        "dead_lettered"
    );
    daemon::stop(sy).await;
    let pending = list(&path, "pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["class"], "schema");
    assert!(
        pending[0]["message"]
            .as_str()
            .expect("message")
            .contains("ncompatible"),
        "{}",
        pending[0]["message"]
    );

    // Fix: the subject's owner relaxes compatibility.
    registry
        .set_compatibility(Some("invoices-value"), "NONE")
        .await;
    let replay = switchyard(&path, &["dlq", "replay", "--class", "schema"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(
        ids_on_topic(&broker, &registry, "invoices", 1).await,
        ["inv-1"]
    );
    assert_eq!(list(&path, "replayed").len(), 1);
}

/// Two webhook sources whose events no route takes (`[router] unmatched = "dlq"`): with
/// `filtered`, each source's route asks for an event type that never comes.
fn two_sources_config(dir: &Path, setup: &Setup, filtered: bool) -> std::path::PathBuf {
    let path = write_config(dir, setup);
    let filter = if filtered {
        "event_types = [\"never.*\"]"
    } else {
        ""
    };
    let text = std::fs::read_to_string(&path).expect("read").replace(
        "topic = \"merged\"\n",
        &format!("topic = \"merged\"\n{filter}\n"),
    );
    let text = format!(
        "{text}
[sources.billing]
type = \"webhook\"
provider = \"none\"
allow_unauthenticated = true

[[routes]]
name = \"billing-to-kafka\"
source = \"billing\"
topic = \"merged\"
{filter}

[router]
unmatched = \"dlq\"
"
    );
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_dead_lettering_the_same_event_id_keep_two_entries_and_both_replay() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let setup = Setup::new(&broker, &registry, "merged");
    let path = two_sources_config(dir.path(), &setup, true);
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = daemon::client(Duration::from_secs(30));
    for source in ["orders", "billing"] {
        let r = client
            .post(format!("{url}/webhooks/{source}"))
            .header("webhook-id", "same-1")
            .body(format!(r#"{{"from":"{source}"}}"#))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<serde_json::Value>().await.expect("json")["status"],
            "dead_lettered",
            "{source}"
        );
    }
    daemon::stop(sy).await;
    let pending = list(&path, "pending");
    let mut entries: Vec<(String, String, String)> = pending
        .iter()
        .map(|e| {
            (
                e["source"].as_str().expect("source").to_string(),
                e["event_id"].as_str().expect("event_id").to_string(),
                e["class"].as_str().expect("class").to_string(),
            )
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("billing".into(), "same-1".into(), "unroutable".into()),
            ("orders".into(), "same-1".into(), "unroutable".into()),
        ],
        "one entry per source: {pending:?}"
    );

    // The routes take every event type again: both entries replay, each with its own body.
    two_sources_config(dir.path(), &setup, false);
    let replay = switchyard(&path, &["dlq", "replay", "--class", "unroutable"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(list(&path, "pending").is_empty());
    let bootstrap = broker.bootstrap();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, "merged", 3, Duration::from_secs(5))
    })
    .await
    .expect("consumer");
    let dec = decoder(&registry.url());
    let mut delivered = Vec::new();
    for r in records {
        let (_, v) = decode(&dec, &r.value).await;
        delivered.push((
            v["source"].as_str().expect("source").to_string(),
            v["id"].as_str().expect("id").to_string(),
            v["data"].as_str().expect("data").to_string(),
        ));
    }
    delivered.sort();
    assert_eq!(
        delivered,
        [
            (
                "switchyard/billing".into(),
                "same-1".into(),
                r#"{"from":"billing"}"#.into()
            ),
            (
                "switchyard/orders".into(),
                "same-1".into(),
                r#"{"from":"orders"}"#.into()
            ),
        ]
    );
}

async fn fill(path: &Path, n: usize) -> Store {
    let config = Config::load(path).expect("config");
    let store = Store::open(&config.dlq.store).await.expect("store");
    for i in 0..n {
        store
            .dead_letters()
            .put(&letter(
                &format!("ev-{i:05}"),
                "orders-to-kafka",
                ErrorClass::RetriesExhausted,
            ))
            .await
            .expect("put");
    }
    store
}

async fn count(store: &Store, status: Status) -> i64 {
    store
        .dead_letters()
        .stats()
        .await
        .expect("stats")
        .iter()
        .filter(|r| r.status == status)
        .map(|r| r.count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_the_rate_limit() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let path = write_config(dir.path(), &Setup::new(&broker, &registry, "rated"));
    let store = fill(&path, 20).await;
    let started = Instant::now();
    let out = switchyard(&path, &["dlq", "replay", "--all", "--rate", "10/s"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&store, Status::Replayed).await, 20);
    // 20 entries at 10/s: the last one starts 1.9 s after the first.
    assert!(
        took >= Duration::from_millis(1900),
        "20 entries at 10/s took only {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_of_one_selection_deliver_each_entry_once() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let path = write_config(dir.path(), &Setup::new(&broker, &registry, "twice"));
    let store = fill(&path, 400).await;
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["dlq", "replay", "--all", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn replay")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(count(&store, Status::Replayed).await, 400);
    let ids = ids_on_topic(&broker, &registry, "twice", 400).await;
    assert_eq!(ids.len(), 400, "no entry delivered twice");
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 400);
}

/// `switchyard dlq replay --all --rate 8/s --lease 1s` on `path`, logging to `log`.
fn slow_replay(path: &Path, log: std::path::PathBuf) -> crate::support::ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args([
        "dlq", "replay", "--all", "--rate", "8/s", "--lease", "1s", "-c",
    ])
    .arg(path);
    crate::support::ChildGuard::spawn("switchyard dlq replay", cmd, log)
}

/// Waits (up to 60 s) until at least `n` entries are replayed.
async fn wait_replayed(store: &Store, n: i64) {
    crate::support::wait_for_async(
        &format!("{n} entries replayed"),
        Duration::from_secs(60),
        || async { (count(store, Status::Replayed).await >= n).then_some(()) },
    )
    .await;
}

/// Each id read back from `topic` (all of them, at least `n`) with how often it was delivered.
async fn deliveries(
    broker: &Broker,
    registry: &Registry,
    topic: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut per_id = std::collections::BTreeMap::new();
    for id in ids_on_topic(broker, registry, topic, n).await {
        *per_id.entry(id).or_insert(0) += 1;
    }
    per_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slow_replays_over_more_entries_than_one_lease_covers_deliver_each_entry_once() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let path = write_config(dir.path(), &Setup::new(&broker, &registry, "leased"));
    let n = 40;
    let store = fill(&path, n).await;
    // 40 entries at 8/s take 5 s: one replay claims them all, with a lease of 1 s.
    let mut first = slow_replay(&path, dir.path().join("first.log"));
    // The second starts once the first has worked past its lease: without renewal it would
    // take over the first's remaining entries and deliver them a second time.
    wait_replayed(&store, 12).await;
    let mut second = slow_replay(&path, dir.path().join("second.log"));
    for (name, replay) in [("first", &mut first), ("second", &mut second)] {
        let status = replay.wait_exit(Duration::from_secs(60));
        assert!(
            status.success(),
            "{name} replay: {status}\n{}",
            std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default()
        );
    }
    assert_eq!(count(&store, Status::Replayed).await, n as i64);
    let per_id = deliveries(&broker, &registry, "leased", n).await;
    assert_eq!(per_id.len(), n, "every entry delivered");
    let twice: Vec<_> = per_id.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_frozen_past_its_lease_stops_before_delivering_what_another_replay_took_over() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let path = write_config(dir.path(), &Setup::new(&broker, &registry, "frozen"));
    let n = 40;
    let store = fill(&path, n).await;
    let mut first = slow_replay(&path, dir.path().join("first.log"));
    wait_replayed(&store, 8).await;
    first.signal("STOP");
    // Frozen: its lease expires (nothing renews it) and no live claim is left.
    crate::support::wait_for_async(
        "the frozen replay's lease to expire",
        Duration::from_secs(30),
        || async {
            let owners = store
                .dead_letters()
                .claim_owners(switchyard::event::now_micros())
                .await
                .expect("owners");
            owners.is_empty().then_some(())
        },
    )
    .await;
    let frozen_at = count(&store, Status::Replayed).await;
    let mut second = slow_replay(&path, dir.path().join("second.log"));
    let second_owner = format!(":{}", second.pid());
    crate::support::wait_for_async(
        "the second replay to claim the rest",
        Duration::from_secs(30),
        || async {
            let owners = store
                .dead_letters()
                .claim_owners(switchyard::event::now_micros())
                .await
                .expect("owners");
            owners
                .iter()
                .any(|o| o.ends_with(&second_owner))
                .then_some(())
        },
    )
    .await;
    first.signal("CONT");

    // The woken replay finds its claims taken over and stops, saying why; the second
    // delivers the rest.
    let status = first.wait_exit(Duration::from_secs(60));
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default();
    assert!(
        !status.success(),
        "the woken replay reports it stopped:\n{log}"
    );
    assert!(
        log.contains("stopped") && log.contains("another replay took"),
        "{log}"
    );
    let status = second.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "second replay: {status}\n{}",
        std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default()
    );
    assert_eq!(count(&store, Status::Replayed).await, n as i64);
    assert_eq!(count(&store, Status::Pending).await, 0);
    let per_id = deliveries(&broker, &registry, "frozen", n).await;
    assert_eq!(per_id.len(), n, "every entry delivered");
    // At most the one delivery the freeze may have caught in flight is repeated (the woken
    // replay starts none): without the check, every entry left at the freeze would be.
    let twice: Vec<_> = per_id.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.len() <= 1,
        "{} entries delivered twice ({} were left at the freeze): {twice:?}",
        twice.len(),
        n as i64 - frozen_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_midway_is_completed_by_a_rerun_without_loss() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let path = write_config(dir.path(), &Setup::new(&broker, &registry, "bulk"));
    let n = 10_000;
    let store = fill(&path, n).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["dlq", "replay", "--all", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn replay");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = count(&store, Status::Replayed).await;
        if done >= 1500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replay made no progress: {done} replayed"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "replay finished before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let after_kill = count(&store, Status::Replayed).await;
    assert!(after_kill < n as i64, "killed midway");

    let rerun = switchyard(&path, &["dlq", "replay", "--all"]);
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(count(&store, Status::Replayed).await, n as i64);
    assert_eq!(count(&store, Status::Pending).await, 0);

    let ids = ids_on_topic(&broker, &registry, "bulk", n + 400).await;
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), n, "every entry reached Kafka");
    let duplicates = ids.len() - unique.len();
    assert!(
        duplicates <= 232,
        "{duplicates} duplicates: more than one batch in flight"
    );
    assert!(
        store
            .dead_letters()
            .list(&Selector::default())
            .await
            .expect("list")
            .iter()
            .all(|d| d.status == Status::Replayed)
    );
}

#[test]
fn bad_dlq_commands_exit_2_and_change_nothing() {
    let dir = scratch();
    let path = write_config(
        dir.path(),
        &Setup {
            bootstrap: "127.0.0.1:1".into(),
            registry: "http://127.0.0.1:1".into(),
            topic: "t".into(),
            ..Setup::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt.block_on(fill(&path, 3));
    for (args, expect) in [
        (vec!["dlq", "replay"], "required"),
        (vec!["dlq", "discard", "--reason", "x"], "required"),
        (
            vec!["dlq", "replay", "--id", "999"],
            "no dead letter with id 999",
        ),
        (vec!["dlq", "show", "999"], "no dead letter with id 999"),
        (vec!["dlq", "list", "--since", "5x"], "neither a duration"),
        (
            vec!["dlq", "replay", "--class", "bogus"],
            "unknown class `bogus`",
        ),
        (
            vec!["dlq", "replay", "--all", "--rate", "fast"],
            "not a rate",
        ),
        (
            vec!["dlq", "discard", "--all", "--reason", " "],
            "--reason must say why",
        ),
        (vec!["dlq", "list", "--status", "gone"], "unknown status"),
        (
            vec!["dlq", "replay", "--all", "--lease", "500ms"],
            "shorter than the shortest lease",
        ),
    ] {
        let out = switchyard(&path, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    let pending = rt.block_on(count(&store, Status::Pending));
    assert_eq!(pending, 3, "nothing changed");
    let audit = switchyard(&path, &["dlq", "audit", "--format", "json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&audit.stdout)
            .expect("json")
            .len(),
        0
    );
}

#[test]
fn discard_needs_a_reason_and_is_audited() {
    let dir = scratch();
    let path = write_config(
        dir.path(),
        &Setup {
            bootstrap: "127.0.0.1:1".into(),
            registry: "http://127.0.0.1:1".into(),
            topic: "t".into(),
            ..Setup::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt.block_on(fill(&path, 3));
    let out = switchyard(
        &path,
        &[
            "dlq",
            "discard",
            "--all",
            "--limit",
            "2",
            "--reason",
            "test traffic",
            "--actor",
            "alice",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rt.block_on(count(&store, Status::Discarded)), 2);
    assert_eq!(rt.block_on(count(&store, Status::Pending)), 1);
    let audit = switchyard(&path, &["dlq", "audit", "--format", "json"]);
    let log: Vec<serde_json::Value> = serde_json::from_slice(&audit.stdout).expect("json");
    assert_eq!(
        log[0]["actor"], "local:alice",
        "break-glass use of the store stands out"
    );
    assert_eq!(log[0]["action"], "discard");
    assert_eq!(log[0]["count"], 2);
    let stats = switchyard(&path, &["dlq", "stats", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&stats.stdout).expect("json");
    assert!(rows.iter().any(|r| r["status"] == "discarded"
        && r["count"] == 2
        && r["class"] == "retries_exhausted"));
    let export = switchyard(&path, &["dlq", "export"]);
    let lines = json_lines(&export);
    assert_eq!(lines.len(), 3, "export covers every status by default");
    assert!(
        lines
            .iter()
            .all(|l| l["event"]["payload"]["body"].is_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_while_it_dead_letters_loses_no_acknowledged_event_and_corrupts_nothing()
{
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let (setup, url) = Setup {
        kafka_properties: "\"message.max.bytes\" = 1000".into(),
        ..Setup::new(&broker, &registry, "crash")
    }
    .on_free_port();
    let path = write_config(dir.path(), &setup);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["run", "-c"]).arg(&path);
    let mut daemon =
        crate::support::ChildGuard::spawn("switchyard", cmd, dir.path().join("switchyard.log"));
    let client = daemon::client(Duration::from_secs(30));
    crate::support::daemon::wait_ready(&client, &url).await;

    // Every event is too large for the broker, so every one is a dead-letter write.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, u16)>(1000);
    let big = format!(r#"{{"pad":"{}"}}"#, "y".repeat(2000));
    for i in 0..600 {
        let (tx, client, url, body) = (tx.clone(), client.clone(), url.clone(), big.clone());
        tokio::spawn(async move {
            let id = format!("crash-{i}");
            let status = match client
                .post(format!("{url}/webhooks/orders"))
                .header("webhook-id", &id)
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            let _ = tx.send((id, status)).await;
        });
    }
    drop(tx);
    let mut answered = Vec::new();
    while let Some((id, status)) = rx.recv().await {
        answered.push((id, status));
        if answered.len() == 150 {
            daemon.kill(); // SIGKILL, then reaped
        }
    }
    let acked: Vec<&String> = answered
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id)
        .collect();
    assert!(
        acked.len() >= 100,
        "only {} acknowledged before the kill",
        acked.len()
    );
    assert!(acked.len() < 600, "the kill came too late to test anything");

    let config = Config::load(&path).expect("config");
    let switchyard::config::DlqStoreConfig::Sqlite(db) = &config.dlq.store else {
        panic!("sqlite store expected");
    };
    let conn = rusqlite::Connection::open(db).expect("open after crash");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
    drop(conn);
    let store = Store::open(&config.dlq.store).await.expect("store");
    let stored = store
        .dead_letters()
        .list(&Selector::default())
        .await
        .expect("every row reads back");
    for id in acked {
        assert!(
            stored
                .iter()
                .any(|d| &d.event_id == id && d.class == "oversize"),
            "{id} was acknowledged but is not in the DLQ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_past_the_retry_limit_dead_letters_and_replays_when_it_is_back() {
    let Stack {
        dir,
        mut broker,
        registry,
    } = Stack::start();
    let path = write_config(
        dir.path(),
        &Setup {
            server: "ack_timeout = \"30s\"".into(),
            ..Setup::new(&broker, &registry, "outage")
        },
    );
    // A short retry limit: the outage outlasts it.
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("retry_max_elapsed = \"20s\"", "retry_max_elapsed = \"1s\"");
    std::fs::write(&path, text).expect("write");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", "warm")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    broker.stop();
    let r = client
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", "during-outage")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["status"],
        "dead_lettered"
    );
    daemon::stop(sy).await;
    let pending = list(&path, "pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["class"], "retries_exhausted");

    let broker = Broker::start_on(broker.port(), dir.path());
    let replay = switchyard(&path, &["dlq", "replay", "--class", "retries_exhausted"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(
        ids_on_topic(&broker, &registry, "outage", 1).await,
        ["during-outage"]
    );
}
