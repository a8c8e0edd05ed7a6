//! SIGTERM under load: every webhook answered 200 is in Kafka, the slot's confirmed position is
//! exactly the end of the last delivered commit, and the process exits 0.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::cdc::{Db, connect, lsn, wait_for_slot};
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, daemon, wait_for_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_webhook_and_confirms_the_last_delivered_commit() {
    let stack = Stack::start();
    let Db {
        pg,
        db,
        client: admin,
    } = Db::start(
        "drain",
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text)",
    )
    .await;
    let port = crate::support::free_port();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "20s"
[kafka]
bootstrap_servers = "{}"
delivery_timeout = "5s"
[schema_registry]
url = "{}"
[sources.hooks]
type = "webhook"
provider = "none"
allow_unauthenticated = true
[sources.appdb]
type = "postgres"
url = "{}"
tables = ["public.orders"]
publication = "drain_pub"
heartbeat_interval = "1h"
[[routes]]
name = "hooks"
source = "hooks"
topic = "hooks"
[[routes]]
name = "orders"
source = "appdb"
topic = "orders"
"#,
            stack.broker.bootstrap(),
            stack.registry.url(),
            pg.url(&db)
        ),
    )
    .expect("config");
    let mut sy = daemon::spawn_binary(&path, stack.dir.path().join("switchyard.log"));
    let url = format!("http://127.0.0.1:{port}");
    let client = daemon::client(Duration::from_secs(30));
    // Ready only once the postgres source streams.
    wait_for_async(
        "switchyard to be ready",
        Duration::from_secs(60),
        || async {
            let r = client.get(format!("{url}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    wait_for_slot(&admin, "switchyard_appdb").await;

    // Load: webhooks from 16 concurrent senders, and one insert per transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..16 {
        let (client, url, stop, accepted) = (
            client.clone(),
            url.clone(),
            Arc::clone(&stop),
            Arc::clone(&accepted),
        );
        senders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("w-{s}-{i}");
                i += 1;
                let status = client
                    .post(format!("{url}/webhooks/hooks"))
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .body(format!(r#"{{"id":"{id}"}}"#))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 200 {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                answers.push((id, status));
                if status == 0 {
                    break; // the listener closed
                }
            }
            answers
        }));
    }
    let writer = {
        let stop = Arc::clone(&stop);
        let conn = connect(&pg, &db).await;
        tokio::spawn(async move {
            let mut committed = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let row = conn
                    .query_one(
                        "INSERT INTO orders VALUES ($1, 'x') RETURNING txid_current()",
                        &[&i],
                    )
                    .await
                    .expect("insert");
                committed.push(row.get::<_, i64>(0));
                i += 1;
            }
            committed
        })
    };
    wait_for_async("300 webhooks answered 200", Duration::from_secs(60), || {
        let n = accepted.load(Ordering::SeqCst);
        async move { (n >= 300).then_some(()) }
    })
    .await;

    sy.signal("TERM");
    let status = sy.wait_exit(Duration::from_secs(40));
    stop.store(true, Ordering::SeqCst);
    assert_eq!(status.code(), Some(0), "an orderly stop exits 0");

    let mut answered: Vec<(String, u16)> = Vec::new();
    for s in senders {
        answered.extend(s.await.expect("sender"));
    }
    let inserted: BTreeSet<i64> = writer.await.expect("writer").into_iter().collect();
    let ok: BTreeSet<String> = answered
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id.clone())
        .collect();
    let refused = answered.iter().filter(|(_, s)| *s == 503).count();
    assert!(
        answered.iter().all(|(_, s)| [0, 200, 503].contains(s)),
        "only 200, 503 (stopping) or a closed listener"
    );

    let dec = decoder(&stack.registry.url());
    let hooks = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        let want = ok.len();
        move || read_topic(&bootstrap, "hooks", want, Duration::from_secs(30))
    })
    .await
    .expect("consumer");
    let mut in_kafka = BTreeSet::new();
    for r in &hooks {
        let (_, v) = decode(&dec, &r.value).await;
        in_kafka.insert(v["id"].as_str().expect("id").to_string());
    }
    let lost: Vec<&String> = ok.difference(&in_kafka).take(10).collect();
    assert!(lost.is_empty(), "answered 200 but not in Kafka: {lost:?}");

    // Transactions in Kafka, and what the slot still holds past its confirmed position.
    let changes = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "orders", usize::MAX, Duration::from_secs(5))
    })
    .await
    .expect("consumer");
    let mut delivered = BTreeSet::new();
    for r in &changes {
        let (_, v) = decode(&dec, &r.value).await;
        delivered.insert(v["source"]["txId"].as_i64().expect("txId"));
    }
    let confirmed = lsn(
        &admin,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
    )
    .await
    .expect("confirmed position");
    let pending: BTreeSet<i64> = admin
        .query(
            "SELECT DISTINCT xid::text::bigint FROM pg_logical_slot_peek_binary_changes(
                 'switchyard_appdb', NULL, NULL, 'proto_version', '1', 'publication_names', 'drain_pub')",
            &[],
        )
        .await
        .expect("peek")
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    let both: Vec<&i64> = delivered.intersection(&pending).take(10).collect();
    assert!(
        both.is_empty(),
        "delivered transactions left unconfirmed (the slot's position is behind the last delivered commit): {both:?}"
    );
    let unseen: Vec<&i64> = inserted
        .iter()
        .filter(|x| !delivered.contains(x) && !pending.contains(x))
        .take(10)
        .collect();
    assert!(
        unseen.is_empty(),
        "committed transactions neither delivered nor still in the slot: {unseen:?}"
    );
    assert!(!delivered.is_empty(), "changes flowed before the stop");
    eprintln!(
        "shutdown: {} webhooks 200, {refused} answered 503 while stopping; {} transactions delivered, {} left in the slot after {}",
        ok.len(),
        delivered.len(),
        pending.len(),
        switchyard::source::postgres::lsn::Lsn(confirmed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_while_the_drain_waits_for_kafka() {
    // Bound (not `..`): the scratch directory and the registry live until the test ends.
    let Stopping {
        _dir,
        _registry,
        mut broker,
        mut sy,
        url,
        client,
    } = start_warm("stuck", "").await;
    let post = |id: &'static str| post_order(client.clone(), url.clone(), id);

    // Kafka goes away: the next event stays in flight, so an orderly stop would wait for it.
    broker.stop();
    let pending = tokio::spawn(post("stuck"));
    wait_for_async(
        "the event to be in flight",
        Duration::from_secs(30),
        || async {
            let text = daemon::metrics(&url).await;
            text.lines()
                .any(|l| l == "switchyard_events_in_flight 1")
                .then_some(())
        },
    )
    .await;
    sy.signal("TERM");
    // Stopping: new requests are refused with 503 while the drain waits. Wait for the daemon to
    // say it is stopping first (the flag /readyz reads is the one that refuses webhooks): a post
    // sent before the signal is handled would be taken, and wait for Kafka like "stuck".
    wait_for_async(
        "/readyz to say stopping",
        Duration::from_secs(10),
        || async {
            let body = client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            body.contains("shutting down").then_some(())
        },
    )
    .await;
    assert_eq!(post("late").await, 503, "a new webhook while stopping");
    let started = std::time::Instant::now();
    sy.signal("TERM");
    let status = sy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "the second signal exits at once");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_ne!(
        pending.await.expect("request"),
        200,
        "the event in flight was never acknowledged"
    );
}

/// A webhook that was taken before the stop but is still waiting for room in flight (here: the
/// one slot is held by an event Kafka cannot take) is answered 503 when the drain starts, not
/// left waiting until the server is stopped under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_waiting_for_room_when_the_drain_starts_gets_503() {
    // Bound (not `..`): the scratch directory and the registry live until the test ends.
    let Stopping {
        _dir,
        _registry,
        mut broker,
        mut sy,
        url,
        client,
    } = start_warm("full", "max_in_flight = 1").await;
    let post = |id: &'static str| post_order(client.clone(), url.clone(), id);
    let metric = |line: &'static str| {
        let url = url.clone();
        async move {
            daemon::metrics(&url)
                .await
                .lines()
                .any(|l| l == line)
                .then_some(())
        }
    };

    broker.stop();
    let stuck = tokio::spawn(post("stuck"));
    wait_for_async("the one slot to be taken", Duration::from_secs(30), || {
        metric("switchyard_events_in_flight 1")
    })
    .await;
    let queued = tokio::spawn(post("queued"));
    wait_for_async(
        "the second webhook to wait for room",
        Duration::from_secs(30),
        || metric("switchyard_events_received_total{source=\"orders\"} 3"),
    )
    .await;
    sy.signal("TERM");
    let answered = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the waiting webhook is answered when the drain starts")
        .expect("request task");
    assert_eq!(answered, 503);
    sy.signal("TERM");
    let status = sy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    assert_ne!(stuck.await.expect("request"), 200);
}

/// POSTs `{"n":1}` with webhook id `id` to the `orders` source at `url`; the status (0: no answer).
async fn post_order(client: reqwest::Client, url: String, id: &'static str) -> u16 {
    client
        .post(format!("{url}/webhooks/orders"))
        .header("webhook-id", id)
        .body(r#"{"n":1}"#)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A switchyard binary whose webhooks wait up to 60 s for Kafka and whose stop drains for up to
/// 60 s, once it has accepted a first webhook.
struct Stopping {
    _dir: tempfile::TempDir,
    broker: crate::support::broker::Broker,
    _registry: crate::support::registry::Registry,
    sy: crate::support::ChildGuard,
    url: String,
    client: reqwest::Client,
}

/// Starts [`Stopping`] with `kafka` (lines under `[kafka]`) on topic `topic`.
async fn start_warm(topic: &str, kafka: &str) -> Stopping {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let (setup, url) = daemon::Setup {
        server: "ack_timeout = \"60s\"\nshutdown_timeout = \"60s\"".into(),
        ..daemon::Setup::new(&broker, &registry, topic)
    }
    .on_free_port();
    let path = daemon::write_config(dir.path(), &setup);
    if !kafka.is_empty() {
        let text = std::fs::read_to_string(&path).expect("config");
        let at = "retry_max_elapsed = \"20s\"";
        std::fs::write(&path, text.replace(at, &format!("{at}\n{kafka}"))).expect("config");
    }
    let sy = daemon::spawn_binary(&path, dir.path().join("switchyard.log"));
    let client = daemon::client(Duration::from_secs(90));
    wait_for_async(
        "a first webhook accepted",
        Duration::from_secs(60),
        || async { (post_order(client.clone(), url.clone(), "warm").await == 200).then_some(()) },
    )
    .await;
    Stopping {
        _dir: dir,
        broker,
        _registry: registry,
        sy,
        url,
        client,
    }
}
