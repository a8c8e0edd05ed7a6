//! High availability of CDC: several instances with the same sources, one streams each slot.

use std::time::{Duration, Instant};

use crate::support::cdc::{Db, confirmed, items_config, read_items, source_state, wait_for_slot};
use crate::support::{Stack, daemon, wait_for_async};

/// Waits until instance `url` reports `state` for source `appdb`.
async fn wait_for_state(url: &str, state: &str, secs: u64) {
    wait_for_async(
        &format!("{url} to report appdb {state}"),
        Duration::from_secs(secs),
        || async { (source_state(url, "appdb").await?.0 == state).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_takes_over_the_slot_within_seconds_when_the_leader_is_killed() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start(
        "ha",
        "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL)",
    )
    .await;
    // Two instances with the same sources and routes; each has its own address and DLQ file.
    let instance = |n: usize| {
        let port = crate::support::free_port();
        let home = dir.path().join(format!("instance-{n}"));
        std::fs::create_dir_all(&home).expect("instance dir");
        let path = home.join("routes.toml");
        std::fs::write(
            &path,
            items_config(port, &broker.bootstrap(), &registry.url(), &pg.url(&db)),
        )
        .expect("config");
        (path, format!("http://127.0.0.1:{port}"))
    };
    let (a_path, a_url) = instance(0);
    let (b_path, b_url) = instance(1);
    let mut a = daemon::spawn_binary(&a_path, dir.path().join("a.log"));
    wait_for_slot(&client, "switchyard_appdb").await;
    wait_for_state(&a_url, "streaming", 60).await;
    let _b = daemon::spawn_binary(&b_path, dir.path().join("b.log"));
    wait_for_state(&b_url, "standby", 60).await;

    let rows = 20_000i64;
    let writer = {
        let url = pg.libpq(&db);
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("writer");
            tokio::spawn(conn);
            for batch in 0..rows / 10 {
                let values: Vec<String> = (0..10)
                    .map(|i| format!("({}, 'row {}')", batch * 10 + i, batch * 10 + i))
                    .collect();
                c.batch_execute(&format!("INSERT INTO items VALUES {}", values.join(",")))
                    .await
                    .expect("insert");
                if batch % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    // Kill the leader mid-stream, once it has confirmed part of the rows.
    wait_for_async(
        "the leader to stream part of the rows",
        Duration::from_secs(60),
        || async {
            let n: i64 = client
                .query_one("SELECT count(*) FROM items", &[])
                .await
                .ok()?
                .get(0);
            (n >= rows / 4).then_some(())
        },
    )
    .await;
    // Standby all along: the slot is the leader's alone.
    assert_eq!(
        source_state(&b_url, "appdb").await.map(|s| s.0).as_deref(),
        Some("standby")
    );
    let at_kill = confirmed(&client).await.expect("confirmed lsn");
    a.kill(); // SIGKILL
    let killed = Instant::now();
    wait_for_state(&b_url, "streaming", 30).await;
    wait_for_async(
        "the standby to move the slot on",
        Duration::from_secs(30),
        || async { (confirmed(&client).await? > at_kill).then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover: streaming and confirming again {takeover:?} after kill -9");
    assert!(
        takeover < Duration::from_secs(15),
        "the standby took {takeover:?} to take over"
    );
    writer.await.expect("writer done");

    let (records, ids) = read_items(&broker.bootstrap(), &registry.url(), rows, 120).await;
    let missing: Vec<i64> = (0..rows).filter(|i| !ids.contains(i)).take(10).collect();
    assert!(
        missing.is_empty(),
        "rows missing after the takeover: {missing:?}"
    );
    eprintln!(
        "{rows} rows, {} records after the takeover ({} delivered twice)",
        records.len(),
        records.len() as i64 - rows
    );
}

/// Two instances streaming table `counters` of `db` as source `frozen`, leader first; each has
/// its own directory (DLQ file), address and log. The lock is given up after 4 s without an
/// answer, Kafka's message timeout is 8 s: a takeover from a leader that stopped answering
/// waits `8 + 2 − 4` = 6 s before streaming (see `leader`).
pub(crate) struct Pair {
    pub(crate) urls: [String; 2],
    pub(crate) paths: [std::path::PathBuf; 2],
    pub(crate) store: switchyard::config::DlqStoreConfig,
}

pub(crate) const SOURCE: &str = "frozen";

pub(crate) fn pair(stack: &Stack, pg_url: &str, host: &str) -> Pair {
    let mut urls = Vec::new();
    let mut paths = Vec::new();
    let mut store = None;
    for n in 0..2 {
        let port = crate::support::free_port();
        let home = stack.dir.path().join(format!("instance-{n}"));
        std::fs::create_dir_all(&home).expect("instance dir");
        let path = crate::cdc_order::write_config(
            &home,
            &format!("{host}:{port}"),
            (&stack.broker.bootstrap(), &stack.registry.url()),
            pg_url,
            "\"public.counters\"",
            "delivery_timeout = \"8s\"",
            (SOURCE, "leader_timeout = \"4s\""),
        );
        store.get_or_insert_with(|| crate::cdc_order::load(&path).dlq.store.clone());
        urls.push(format!("http://{host}:{port}"));
        paths.push(path);
    }
    Pair {
        urls: [urls[0].clone(), urls[1].clone()],
        paths: [paths[0].clone(), paths[1].clone()],
        store: store.expect("store"),
    }
}

/// The state of source `frozen` at `url`, asked with a timeout (a frozen process never answers).
pub(crate) async fn state_of(http: &reqwest::Client, url: &str) -> Option<String> {
    let body: serde_json::Value = http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(body["sources"][SOURCE]["state"].as_str()?.to_string())
}

pub(crate) async fn wait_for_state_of(http: &reqwest::Client, url: &str, state: &str, secs: u64) {
    wait_for_async(
        &format!("{url} to report {SOURCE} {state}"),
        Duration::from_secs(secs),
        || async { (state_of(http, url).await? == state).then_some(()) },
    )
    .await;
}

/// The walsender streaming the slot now, if any.
pub(crate) async fn slot_pid(client: &tokio_postgres::Client) -> Option<i32> {
    client
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'switchyard_frozen'",
            &[],
        )
        .await
        .ok()?
        .get(0)
}

/// The WAL position now.
pub(crate) async fn wal_now(client: &tokio_postgres::Client) -> u64 {
    crate::support::cdc::lsn(client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("current wal lsn")
}

pub(crate) async fn slot_confirmed(client: &tokio_postgres::Client) -> Option<u64> {
    crate::support::cdc::lsn(
        client,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'switchyard_frozen'",
    )
    .await
}

/// Writes bursts of updates to `counters` until `stop` turns true.
fn keep_writing(
    url: String,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("writer");
        tokio::spawn(conn);
        let mut rng = crate::cdc_order::Rng(seed);
        while !*stop.borrow() {
            crate::cdc_order::bursts(&c, &mut rng, 20, 5, 20).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// After the run: every key ends in its row's final state, in per-key order (re-sent suffixes
/// only), nothing dead-lettered by either instance.
pub(crate) async fn assert_everything_arrived_in_order(
    stack: &Stack,
    client: &tokio_postgres::Client,
    store: &switchyard::config::DlqStoreConfig,
    what: &str,
) {
    let finals = crate::cdc_order::counters(client).await;
    let by_key = crate::cdc_order::read_until_final(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        &finals,
        120,
    )
    .await;
    let total = crate::cdc_order::assert_final_state_after_resent_suffixes(&by_key, &finals);
    eprintln!(
        "{what}: {total} records for {} versions",
        finals.values().map(|v| v + 1).sum::<i64>()
    );
    crate::cdc_order::assert_dlq_empty(store, what).await;
}

/// Waits until the standby at `url` leaves `standby` (it took the lock); how long after `fault`.
async fn wait_for_the_lock(http: &reqwest::Client, url: &str, fault: Instant) -> Duration {
    wait_for_async(
        "the standby to take the lock",
        Duration::from_secs(30),
        || async { (state_of(http, url).await? != "standby").then_some(()) },
    )
    .await;
    fault.elapsed()
}

/// After `what` at `fault` made the leader (walsender `old_pid`) stop answering, and the standby
/// took the lock `locked` later: rows committed after the fault (past `wal`) are confirmed
/// within the bound — leader_timeout 4 s + ~1 s, the takeover's wait 6 s, ~1 s to stream; more
/// allowed for a loaded machine — by a new walsender; returns its pid.
async fn assert_taken_over(
    client: &tokio_postgres::Client,
    (fault, locked): (Instant, Duration),
    wal: u64,
    old_pid: i32,
    what: &str,
) -> i32 {
    wait_for_async(
        "the new leader to confirm past the fault",
        Duration::from_secs(60),
        || async { (slot_confirmed(client).await? > wal).then_some(()) },
    )
    .await;
    let takeover = fault.elapsed();
    let new_pid = slot_pid(client).await.expect("the new leader's walsender");
    assert_ne!(new_pid, old_pid, "the old leader's walsender was ended");
    eprintln!("{what}: lock taken {locked:?}, confirming past the fault {takeover:?} after it");
    assert!(
        locked < Duration::from_secs(10),
        "the standby took {locked:?} to take the lock (bound ~5 s)"
    );
    assert!(
        takeover < Duration::from_secs(25),
        "rows written after the fault took {takeover:?} to be confirmed (bound ~12 s)"
    );
    new_pid
}

/// The old leader at `url` stands by, and the slot stays with walsender `new_pid`, which
/// confirms on.
async fn assert_stands_by(
    client: &tokio_postgres::Client,
    http: &reqwest::Client,
    url: &str,
    new_pid: i32,
) {
    wait_for_state_of(http, url, "standby", 60).await;
    let back = slot_confirmed(client).await.expect("confirmed");
    wait_for_async(
        "the new leader to confirm on",
        Duration::from_secs(30),
        || async { (slot_confirmed(client).await? > back).then_some(()) },
    )
    .await;
    assert_eq!(
        slot_pid(client).await,
        Some(new_pid),
        "the slot stays with the new leader's walsender"
    );
    assert_eq!(state_of(http, url).await.as_deref(), Some("standby"));
}

/// A leader that freezes mid-burst (SIGSTOP: its connections stay open, nothing answers) loses
/// the slot to the standby: every row committed after the freeze reaches Kafka within the
/// documented bound. It froze with records queued for Kafka (Kafka was cut off a moment before)
/// and is woken up (SIGCONT) after the standby took the lock, before those records timed out:
/// they land before the new leader streams, and the woken leader reads, sends and
/// confirms nothing more. The standby's
/// walsender streams on, the old leader stands by, and every key's records stay in commit order
/// (a record of the woken leader after the new one's would be an older version after a newer
/// one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_when_woken_neither_streams_nor_takes_the_slot_back() {
    let dir = crate::support::scratch();
    let (broker, kafka) = crate::support::broker::Broker::start_behind_proxy(dir.path());
    let registry = crate::support::registry::Registry::start(dir.path());
    let stack = Stack {
        dir,
        broker,
        registry,
    };
    let Db { pg, db, client } = crate::cdc_order::counters_db("frozen", 20).await;
    let p = pair(&stack, &pg.url(&db), "127.0.0.1");
    let http = daemon::client(Duration::from_secs(2));
    let a = daemon::spawn_binary(&p.paths[0], stack.dir.path().join("a.log"));
    wait_for_slot(&client, "switchyard_frozen").await;
    wait_for_state_of(&http, &p.urls[0], "streaming", 60).await;
    let _b = daemon::spawn_binary(&p.paths[1], stack.dir.path().join("b.log"));
    wait_for_state_of(&http, &p.urls[1], "standby", 60).await;
    let a_pid = slot_pid(&client).await.expect("the leader's walsender");

    let (stop_writing, stop) = tokio::sync::watch::channel(false);
    let mut rng = crate::cdc_order::Rng::seeded();
    let writer = keep_writing(pg.libpq(&db), rng.0 ^ 0x9e37_79b9, stop);
    // Freeze the leader in the middle of the bursts, once it has confirmed some of them.
    let start = slot_confirmed(&client).await.expect("confirmed");
    wait_for_async("the leader to confirm", Duration::from_secs(60), || async {
        (slot_confirmed(&client).await? > start).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
    // Kafka away for a moment: the leader's records pile up in its Kafka client's queue.
    kafka.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("STOP");
    let frozen = Instant::now();
    kafka.restore();
    let wal_at_freeze = wal_now(&client).await;
    // The standby takes the lock once the server ended the frozen leader's lock session…
    let locked = wait_for_the_lock(&http, &p.urls[1], frozen).await;
    // …and the frozen leader wakes up with records queued for Kafka younger than their 8 s
    // timeout, as late as that allows: a new leader streaming at once would have sent newer
    // versions of their keys by then.
    tokio::time::sleep_until((frozen + Duration::from_secs(6)).into()).await;
    a.signal("CONT");
    let b_pid = assert_taken_over(&client, (frozen, locked), wal_at_freeze, a_pid, "SIGSTOP").await;
    // Woken, the old leader stands by and the slot stays with the new one.
    assert_stands_by(&client, &http, &p.urls[0], b_pid).await;
    let _ = stop_writing.send(true);
    writer.await.expect("writer");
    assert_everything_arrived_in_order(&stack, &client, &p.store, "a frozen leader").await;
}

/// How a process inside `net` reaches the local service at `url` (`…127.0.0.1:PORT…`, PORT
/// read from `url` unless given): a proxy on the test's end of the link, and `url` pointing at
/// it.
pub(crate) fn through(
    net: &crate::support::netns::Netns,
    url: &str,
    port: Option<u16>,
) -> (crate::support::proxy::Proxy, String) {
    let port = port.unwrap_or_else(|| {
        url.rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("a port")
    });
    let proxy_port = crate::support::free_port();
    let proxy = crate::support::proxy::Proxy::start_on(
        net.outer_ip,
        proxy_port,
        ([127, 0, 0, 1], port).into(),
    );
    let url = url.replace(
        &format!("127.0.0.1:{port}"),
        &format!("{}:{proxy_port}", net.outer_ip),
    );
    (proxy, url)
}

/// A leader cut off from everything by a real network partition (it runs in a network namespace
/// of the test's own; the link is set down: packets are dropped, nothing is reset) loses the
/// slot to the standby: the server ends its idle lock session after `leader_timeout`, the
/// standby ends the stranded walsender, and every row committed after the cut reaches Kafka
/// within the documented bound. Once the link is back the old leader stands by, the slot stays
/// with the new leader, and every key's records are in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_by_a_network_partition_is_replaced_and_stands_by_once_the_link_is_back() {
    let net = crate::support::netns::Netns::create();
    // As docs/operations.md asks of a leader's host: the kernel gives up on unacknowledged data
    // within seconds, so produce requests a cut-off leader had sent are dropped, not delivered
    // when the link comes back (after the new leader's records).
    net.sysctl("net.ipv4.tcp_retries2", "3");
    let dir = crate::support::scratch();
    let (broker, _kafka) =
        crate::support::broker::Broker::start_behind_proxy_on(net.outer_ip, dir.path());
    let registry = crate::support::registry::Registry::start(dir.path());
    let stack = Stack {
        dir,
        broker,
        registry,
    };
    let Db { pg, db, client } = crate::cdc_order::counters_db("frozen", 20).await;
    // Inside the namespace the leader reaches Postgres and the registry through proxies on the
    // test's end of the link (Kafka advertises its proxy there for everyone).
    let (_pg_proxy, pg_inside) = through(&net, &pg.url(&db), Some(pg.port()));
    let (_registry_proxy, registry_inside) = through(&net, &stack.registry.url(), None);
    let p = pair(&stack, &pg.url(&db), "127.0.0.1");
    let a_port = crate::support::free_port();
    let a_url = format!("http://{}:{a_port}", net.inner_ip);
    let a_home = stack.dir.path().join("inside");
    std::fs::create_dir_all(&a_home).expect("dir");
    let a_path = crate::cdc_order::write_config(
        &a_home,
        &format!("{}:{a_port}", net.inner_ip),
        (&stack.broker.bootstrap(), &registry_inside),
        &pg_inside,
        "\"public.counters\"",
        "delivery_timeout = \"8s\"",
        (SOURCE, "leader_timeout = \"4s\""),
    );
    let a_store = crate::cdc_order::load(&a_path).dlq.store.clone();
    let http = daemon::client(Duration::from_secs(2));
    let mut cmd = net.command(std::path::Path::new(env!("CARGO_BIN_EXE_switchyard")));
    cmd.args(["run", "-c"]).arg(&a_path);
    let _a = crate::support::ChildGuard::spawn(
        "switchyard in a namespace",
        cmd,
        stack.dir.path().join("a.log"),
    );
    wait_for_slot(&client, "switchyard_frozen").await;
    wait_for_state_of(&http, &a_url, "streaming", 60).await;
    let _b = daemon::spawn_binary(&p.paths[1], stack.dir.path().join("b.log"));
    wait_for_state_of(&http, &p.urls[1], "standby", 60).await;
    let a_pid = slot_pid(&client).await.expect("the leader's walsender");

    let (stop_writing, stop) = tokio::sync::watch::channel(false);
    let mut rng = crate::cdc_order::Rng::seeded();
    let writer = keep_writing(pg.libpq(&db), rng.0 ^ 0x9e37_79b9, stop);
    let start = slot_confirmed(&client).await.expect("confirmed");
    wait_for_async("the leader to confirm", Duration::from_secs(60), || async {
        (slot_confirmed(&client).await? > start).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
    net.cut();
    let cut = Instant::now();
    let wal_at_cut = wal_now(&client).await;
    let locked = wait_for_the_lock(&http, &p.urls[1], cut).await;
    let b_pid = assert_taken_over(&client, (cut, locked), wal_at_cut, a_pid, "a partition").await;
    // The link is back: the old leader stands by, the slot stays with the new one.
    net.restore();
    assert_stands_by(&client, &http, &a_url, b_pid).await;
    let _ = stop_writing.send(true);
    writer.await.expect("writer");
    assert_everything_arrived_in_order(&stack, &client, &p.store, "a partitioned leader").await;
    crate::cdc_order::assert_dlq_empty(&a_store, "the partitioned leader").await;
}
