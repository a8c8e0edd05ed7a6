//! Deliveries a sender will not repeat (GitHub) survive a Kafka outage: answered 200
//! `dead_lettered` from the DLQ store, then delivered automatically, once and in order, when
//! the broker is reachable again (issue #23 item 6).

use std::time::{Duration, Instant};

use switchyard::config::Config;
use switchyard::source::webhook::verify::sign;

use crate::support::broker::Broker;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::registry::Registry;
use crate::support::{daemon, run_cli, scratch, wait_for_async};

const SECRET: &str = "gh-secret";

/// POSTs a signed GitHub delivery `id`; (status, JSON answer, time taken).
async fn github(
    client: &reqwest::Client,
    url: &str,
    id: &str,
) -> (u16, serde_json::Value, Duration) {
    let body =
        format!(r#"{{"action":"opened","delivery":"{id}","repository":{{"full_name":"o/r"}}}}"#);
    let started = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign::github(SECRET, body.as_bytes()))
        .header("x-github-delivery", id)
        .header("x-github-event", "issues")
        .timeout(Duration::from_secs(60))
        .body(body)
        .send()
        .await
        .expect("request completes");
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, v, started.elapsed())
}

/// The event ids on `topic` (created with one partition), in offset order.
async fn ids_on(
    bootstrap: &str,
    registry: &str,
    topic: &str,
    want: usize,
    wait: Duration,
) -> Vec<String> {
    let records = tokio::task::spawn_blocking({
        let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
        move || read_topic(&bootstrap, &topic, want, wait)
    })
    .await
    .expect("consumer");
    let dec = decoder(registry);
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

/// Waits (up to 90 s) until topic `gh` holds at least `want` records (`what`), then reads every
/// record there (a little longer, so a late duplicate would show): their event ids.
async fn all_ids_once_there(
    bootstrap: &str,
    registry: &str,
    want: usize,
    what: &str,
) -> Vec<String> {
    wait_for_async(what, Duration::from_secs(90), || async move {
        let ids = ids_on(bootstrap, registry, "gh", want, Duration::from_secs(3)).await;
        (ids.len() >= want).then_some(())
    })
    .await;
    ids_on(
        bootstrap,
        registry,
        "gh",
        usize::MAX,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_delivery_while_kafka_is_down_reaches_kafka_once_in_order_without_a_command() {
    let dir = scratch();
    let (broker, kafka) = Broker::start_behind_proxy(dir.path());
    let registry = Registry::start(dir.path());
    let path = dir.path().join("routes.toml");
    // No when_unavailable: GitHub's default is dead_letter. The server waits 30 s for Kafka,
    // the source 5 s (its own ack_timeout; room for a first delivery on a busy machine).
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nack_timeout = \"30s\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             delivery_timeout = \"1s\"\npartitions = 1\n[schema_registry]\nurl = \"{}\"\n\
             [sources.gh]\ntype = \"webhook\"\nprovider = \"github\"\nsecrets = [\"{SECRET}\"]\nack_timeout = \"5s\"\n\
             [[routes]]\nname = \"gh\"\nsource = \"gh\"\ntopic = \"gh\"\n",
            broker.bootstrap(),
            registry.url()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/gh");
    let (status, reply, _) = github(&client, &at, "g-0").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("accepted")),
        "{reply}"
    );

    kafka.cut();
    let (status, reply, took) = github(&client, &at, "g-1").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("dead_lettered")),
        "{reply}"
    );
    assert!(
        took < Duration::from_secs(10),
        "answered after the source's ack_timeout (5 s), not the server's (30 s): {took:?}"
    );
    // A later delivery of the same source goes behind it, also answered from the DLQ store.
    let (status, reply, _) = github(&client, &at, "g-2").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("dead_lettered")),
        "{reply}"
    );
    // GitHub's manual redelivery of an event already stored is a duplicate.
    let (_, reply, _) = github(&client, &at, "g-1").await;
    assert_eq!(reply["status"], "duplicate", "{reply}");

    kafka.restore();
    // Sent at once: stored behind g-1 and g-2 (or, if they are already out, produced).
    let (status, reply, _) = github(&client, &at, "g-3").await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        matches!(reply["status"].as_str(), Some("accepted" | "dead_lettered")),
        "{reply}"
    );

    // No command is run: the daemon delivers what it stored once Kafka is back.
    let ids = all_ids_once_there(
        &broker.bootstrap(),
        &registry.url(),
        4,
        "the stored deliveries in Kafka",
    )
    .await;
    assert_eq!(
        ids,
        ["g-0", "g-1", "g-2", "g-3"],
        "each delivery once, in the order the sender sent them"
    );
    // The DLQ holds nothing pending; the re-delivery is in the audit log like a replay.
    let (code, pending) = run_cli(&path, &["dlq", "list", "--format", "json"]);
    assert_eq!(code, Some(0), "{pending}");
    assert!(
        !pending.contains("g-1") && !pending.contains("g-2"),
        "{pending}"
    );
    let (_, audit) = run_cli(&path, &["dlq", "audit"]);
    assert!(audit.contains("replay (automatic)"), "{audit}");
    // And counted: g-1, g-2 and (if it was stored behind them) g-3.
    let metrics = daemon::metrics(&url).await;
    let redelivered: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_dlq_redelivered_total")
                && l.contains("source=\"gh\"")
                && l.contains("result=\"delivered\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!((2..=3).contains(&redelivered), "{metrics}");
    daemon::stop(sy).await;
}

/// Two switchyard processes sharing one `postgres://` store, as two replicas: both store
/// deliveries while Kafka is cut, both run the re-delivery task; each stored event reaches
/// Kafka once (claims), in the order it was stored (only a source's oldest entry is sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_a_store_redeliver_each_stored_event_once_in_order() {
    let dir = scratch();
    let (broker, kafka) = Broker::start_behind_proxy(dir.path());
    let registry = Registry::start(dir.path());
    let pg = crate::support::postgres::PgCluster::start();
    let db = pg.fresh_database("redeliver_shared").await;
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let port = crate::support::free_port();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
                 delivery_timeout = \"1s\"\npartitions = 1\n[schema_registry]\nurl = \"{}\"\n\
                 [dlq]\nurl = \"{}\"\n\
                 [sources.gh]\ntype = \"webhook\"\nprovider = \"github\"\nsecrets = [\"{SECRET}\"]\nack_timeout = \"5s\"\n\
                 [[routes]]\nname = \"gh\"\nsource = \"gh\"\ntopic = \"gh\"\n",
                broker.bootstrap(),
                registry.url(),
                pg.url(&db)
            ),
        )
        .expect("config");
        let child = daemon::spawn_binary(&path, dir.path().join(format!("{name}.log")));
        replicas.push((child, format!("http://127.0.0.1:{port}/webhooks/gh")));
    }
    let client = reqwest::Client::new();
    for (_, at) in &replicas {
        let base = at.trim_end_matches("/webhooks/gh");
        daemon::wait_ready(&client, base).await;
    }
    let (status, reply, _) = github(&client, &replicas[0].1, "r-0").await;
    assert_eq!(
        (status, reply["status"].as_str()),
        (200, Some("accepted")),
        "{reply}"
    );

    kafka.cut();
    // Six deliveries, one after the other, alternating between the replicas.
    for n in 1..=6 {
        let at = &replicas[n % 2].1;
        let (status, reply, _) = github(&client, at, &format!("r-{n}")).await;
        assert_eq!(
            (status, reply["status"].as_str()),
            (200, Some("dead_lettered")),
            "r-{n}: {reply}"
        );
    }
    kafka.restore();

    let ids = all_ids_once_there(
        &broker.bootstrap(),
        &registry.url(),
        7,
        "the stored deliveries in Kafka",
    )
    .await;
    let want: Vec<String> = (0..=6).map(|n| format!("r-{n}")).collect();
    assert_eq!(ids, want, "each stored delivery once, in the order stored");
    for (mut child, _) in replicas {
        child.assert_running();
        child.kill();
    }
}

/// A GitHub sender that hangs up before its answer (GitHub gives up after 10 s) loses nothing:
/// the delivery runs on as a task of its own, the event is stored in the DLQ at the source's
/// default `ack_timeout` (5 s for GitHub, under the server's 30 s) and reaches Kafka once the
/// broker is back. Meanwhile the instance stays ready (`/readyz` 200 naming Kafka): it still
/// answers GitHub 200, so it must stay behind its Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_sender_that_hangs_up_loses_nothing_and_the_instance_stays_ready() {
    let dir = scratch();
    let (broker, kafka) = Broker::start_behind_proxy(dir.path());
    let registry = Registry::start(dir.path());
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nack_timeout = \"30s\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             delivery_timeout = \"1s\"\npartitions = 1\n[schema_registry]\nurl = \"{}\"\n\
             [sources.hangup]\ntype = \"webhook\"\nprovider = \"github\"\nsecrets = [\"{SECRET}\"]\n\
             [[routes]]\nname = \"gh\"\nsource = \"hangup\"\ntopic = \"gh\"\n",
            broker.bootstrap(),
            registry.url()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/hangup");
    assert_eq!(github(&client, &at, "h-0").await.0, 200);

    kafka.cut();
    // The sender hangs up after 1 s, long before the 5 s answer.
    let body = r#"{"action":"opened","delivery":"h-1","repository":{"full_name":"o/r"}}"#;
    let hung_up = client
        .post(&at)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign::github(SECRET, body.as_bytes()))
        .header("x-github-delivery", "h-1")
        .header("x-github-event", "issues")
        .timeout(Duration::from_secs(1))
        .body(body)
        .send()
        .await;
    assert!(hung_up.is_err(), "the sender gave up before an answer");
    // Ready all along, Kafka named in the body.
    let ready = wait_for_async(
        "/readyz to see Kafka gone",
        Duration::from_secs(30),
        || async {
            let r = client.get(format!("{url}/readyz")).send().await.ok()?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.ok()?;
            (body["kafka"] != "ok").then_some((status, body))
        },
    )
    .await;
    assert_eq!(ready.0, 200, "ready while Kafka is away: {}", ready.1);
    // Stored at the source's ack_timeout although nobody waits for the answer.
    wait_for_async(
        "the hung-up delivery in the DLQ",
        Duration::from_secs(30),
        || async {
            let (code, pending) = run_cli(&path, &["dlq", "list", "--format", "json"]);
            (code == Some(0) && pending.contains("h-1")).then_some(())
        },
    )
    .await;
    kafka.restore();
    let ids = all_ids_once_there(
        &broker.bootstrap(),
        &registry.url(),
        2,
        "the hung-up delivery in Kafka",
    )
    .await;
    assert_eq!(ids, ["h-0", "h-1"], "once each, in order");
    daemon::stop(sy).await;
}

/// A source that keeps receiving deliveries while its stored ones are re-delivered still
/// drains: the DLQ is emptied faster than new deliveries queue up behind it, the source goes
/// back to producing directly, and every delivery is in Kafka — each sender's in the order it
/// sent them. (Delivering one stored entry per round trip, the queue never emptied at this
/// rate: every new delivery was stored behind it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_keeps_receiving_deliveries_drains_its_stored_ones_and_keeps_order() {
    // 8 senders, 25 deliveries a second each, on a schedule (as providers send: their rate
    // does not follow our answers), each waiting for its previous answer.
    const SENDERS: usize = 8;
    const EVERY: Duration = Duration::from_millis(40);
    const STORED: usize = 100; // per sender, while Kafka is cut
    let dir = scratch();
    let (broker, kafka) = Broker::start_behind_proxy(dir.path());
    let registry = Registry::start(dir.path());
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             delivery_timeout = \"1s\"\npartitions = 1\n[schema_registry]\nurl = \"{}\"\n\
             [sources.busy]\ntype = \"webhook\"\nprovider = \"github\"\nsecrets = [\"{SECRET}\"]\nack_timeout = \"2s\"\n\
             [[routes]]\nname = \"gh\"\nsource = \"busy\"\ntopic = \"gh\"\n",
            broker.bootstrap(),
            registry.url()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    let client = reqwest::Client::new();
    let at = format!("{url}/webhooks/busy");
    assert_eq!(github(&client, &at, "first").await.0, 200);

    kafka.cut();
    let mut first = Vec::new();
    for s in 0..SENDERS {
        let (client, at) = (client.clone(), at.clone());
        first.push(tokio::spawn(async move {
            for n in 0..STORED {
                let (status, reply, _) = github(&client, &at, &format!("s{s}-{n:05}")).await;
                assert_eq!(
                    (status, reply["status"].as_str()),
                    (200, Some("dead_lettered")),
                    "{reply}"
                );
            }
        }));
    }
    for t in first {
        t.await.expect("sender");
    }

    // Kafka is back; the senders go on until the source produces directly again (a delivery
    // answered `accepted`), or for 60 s.
    kafka.restore();
    let restored = tokio::time::Instant::now();
    let drained = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (client, at, drained) = (client.clone(), at.clone(), drained.clone());
        senders.push(tokio::spawn(async move {
            let mut n = STORED;
            let mut next = restored + EVERY * s as u32 / SENDERS as u32;
            while !drained.load(std::sync::atomic::Ordering::Relaxed)
                && restored.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep_until(next).await;
                next += EVERY;
                let (status, reply, _) = github(&client, &at, &format!("s{s}-{n:05}")).await;
                assert_eq!(status, 200, "{reply}");
                n += 1;
                if reply["status"] == "accepted" {
                    drained.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            n
        }));
    }
    let mut sent = Vec::new();
    for t in senders {
        sent.push(t.await.expect("sender"));
    }
    let took = restored.elapsed();
    let later: usize = sent.iter().map(|n| n - STORED).sum();
    assert!(
        drained.load(std::sync::atomic::Ordering::Relaxed),
        "the source was still storing new deliveries behind its queue 60 s after Kafka came \
         back ({later} deliveries sent meanwhile)"
    );
    let total = 1 + sent.iter().sum::<usize>();
    let ids = all_ids_once_there(
        &broker.bootstrap(),
        &registry.url(),
        total,
        "every delivery in Kafka",
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    let dupes: Vec<&String> = ids.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(dupes.is_empty(), "delivered twice: {dupes:?}");
    assert_eq!(
        ids.len(),
        total,
        "every delivery answered 200 is in Kafka once"
    );
    // A sender's deliveries, each sent after the previous was answered, in its order.
    for s in 0..SENDERS {
        let prefix = format!("s{s}-");
        let mine: Vec<&String> = ids.iter().filter(|id| id.starts_with(&prefix)).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "sender {s}'s deliveries out of order");
    }
    eprintln!(
        "drained {} stored and {later} later deliveries in {took:?}",
        SENDERS * STORED
    );
    daemon::stop(sy).await;
}
