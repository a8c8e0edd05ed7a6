//! The fault campaign of `benches/chaos.sh` (not run in CI: `#[ignore]`; the CI-sized checks of
//! each fault are in `ha`, `cdc_order`, `cdc` and `shutdown`). Two instances stream one slot —
//! one inside a network namespace of the test's own — while bursts of updates are written, and
//! `CHAOS_FAULTS` faults (default 50) are injected one after another, each drawn from: kill -9
//! of the leader, SIGSTOP/SIGCONT of the leader, a network partition of the namespaced
//! instance, Kafka cut off (proxy), the registry cut off (proxy), a Postgres restart. Between
//! faults the campaign waits for the slot to move on (a stuck pipeline fails it). At the end,
//! read back from Kafka: every key ends in its row's final state (no committed change missing),
//! per-key order holds (re-sent suffixes only), nothing was dead-lettered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cdc::{Db, wait_for_slot};
use crate::cdc_order::Rng;
use crate::ha::{SOURCE, slot_confirmed, state_of};
use crate::support::proxy::Proxy;
use crate::support::{ChildGuard, Stack, daemon, wait_for_async};

/// Writes bursts of updates until `stop`, reconnecting through Postgres restarts; counts
/// committed transactions.
fn writer(
    url: String,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        let mut committed = 0u64;
        while !*stop.borrow() {
            let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            tokio::spawn(conn);
            while !*stop.borrow() {
                let mut sql = String::from("BEGIN;");
                for _ in 0..10 {
                    sql.push_str(&format!(
                        "UPDATE counters SET v = v + 1 WHERE id = {};",
                        1 + rng.below(50)
                    ));
                }
                sql.push_str("COMMIT;");
                if c.batch_execute(&sql).await.is_err() {
                    break;
                }
                committed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        committed
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long fault campaign: benches/chaos.sh"]
async fn chaos_campaign() {
    let faults: usize = std::env::var("CHAOS_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let net = crate::support::netns::Netns::create();
    let dir = crate::support::scratch();
    let (broker, kafka) =
        crate::support::broker::Broker::start_behind_proxy_on(net.outer_ip, dir.path());
    let registry = crate::support::registry::Registry::start(dir.path());
    let stack = Stack {
        dir,
        broker,
        registry,
    };
    let Db { pg, db, client } = crate::cdc_order::counters_db("frozen", 50).await;
    // The test's own connection, made again after each Postgres restart.
    let mut client = client;
    let connect = || async {
        let (c, conn) = tokio_postgres::connect(&pg.libpq(&db), tokio_postgres::NoTls)
            .await
            .expect("connect to the source database");
        tokio::spawn(conn);
        c
    };
    let (pg_port, registry_port) = (crate::support::free_port(), crate::support::free_port());
    let _pg_proxy = Proxy::start_on(net.outer_ip, pg_port, ([127, 0, 0, 1], pg.port()).into());
    let registry_proxy = Proxy::start_on(
        net.outer_ip,
        registry_port,
        ([127, 0, 0, 1], crate::ha::port_of(&stack.registry.url())).into(),
    );
    let registry_url = format!("http://{}:{registry_port}", net.outer_ip);
    let pg_url = pg.url(&db).replace(
        &format!("127.0.0.1:{}", pg.port()),
        &format!("{}:{pg_port}", net.outer_ip),
    );
    // Instance 0 inside the namespace, instance 1 outside; both through the proxies.
    let mut urls = Vec::new();
    let mut paths = Vec::new();
    let mut stores = Vec::new();
    for (n, host) in [net.inner_ip, std::net::Ipv4Addr::LOCALHOST]
        .iter()
        .enumerate()
    {
        let port = crate::support::free_port();
        let home = stack.dir.path().join(format!("instance-{n}"));
        std::fs::create_dir_all(&home).expect("dir");
        let path = crate::cdc_order::write_config(
            &home,
            &format!("{host}:{port}"),
            (&stack.broker.bootstrap(), &registry_url),
            &pg_url,
            "\"public.counters\"",
            "delivery_timeout = \"8s\"",
            (SOURCE, "leader_timeout = \"4s\""),
        );
        stores.push(crate::cdc_order::load(&path).dlq.store.clone());
        urls.push(format!("http://{host}:{port}"));
        paths.push(path);
    }
    let spawn = |n: usize, round: usize| -> ChildGuard {
        let log = stack.dir.path().join(format!("sy-{n}-{round}.log"));
        if n == 0 {
            let mut cmd = net.command(std::path::Path::new(env!("CARGO_BIN_EXE_switchyard")));
            cmd.args(["run", "-c"]).arg(&paths[0]);
            ChildGuard::spawn("switchyard in a namespace", cmd, log)
        } else {
            daemon::spawn_binary(&paths[1], log)
        }
    };
    let mut sy = [spawn(0, 0), spawn(1, 0)];
    wait_for_slot(&client, "switchyard_frozen").await;
    let http = daemon::client(Duration::from_secs(2));
    let mut rng = Rng::seeded();
    let (stop_writing, stop) = tokio::sync::watch::channel(false);
    let writing = writer(pg.libpq(&db), rng.0 ^ 0x9e37_79b9, stop);
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    let started = Instant::now();
    for round in 1..=faults {
        // Progress first: some instance streams and the slot moves on.
        let before = slot_confirmed(&client).await.unwrap_or(0);
        wait_for_async(
            &format!("the slot to move on before fault {round}"),
            Duration::from_secs(120),
            || async { (slot_confirmed(&client).await? > before).then_some(()) },
        )
        .await;
        let mut leader = None;
        for (n, url) in urls.iter().enumerate() {
            if state_of(&http, url).await.as_deref() == Some("streaming") {
                leader = Some(n);
            }
        }
        let hold = Duration::from_millis(1000 + rng.below(9000));
        let kind = match (rng.below(6), leader) {
            (0, Some(n)) => {
                sy[n].kill();
                sy[n] = spawn(n, round);
                "kill -9 of the leader"
            }
            (1, Some(n)) => {
                sy[n].signal("STOP");
                tokio::time::sleep(hold).await;
                sy[n].signal("CONT");
                "SIGSTOP/SIGCONT of the leader"
            }
            (2, _) => {
                net.cut();
                tokio::time::sleep(hold + Duration::from_secs(3)).await;
                net.restore();
                "partition of the namespaced instance"
            }
            (3, _) => {
                kafka.cut();
                tokio::time::sleep(hold).await;
                kafka.restore();
                "Kafka cut off"
            }
            (4, _) => {
                registry_proxy.cut();
                tokio::time::sleep(hold).await;
                registry_proxy.restore();
                "registry cut off"
            }
            _ => {
                pg.restart();
                client = connect().await;
                "Postgres restart"
            }
        };
        *injected.entry(kind).or_default() += 1;
        eprintln!(
            "chaos: fault {round}/{faults} at {:?}: {kind}",
            started.elapsed()
        );
    }
    let _ = stop_writing.send(true);
    let transactions = writing.await.expect("writer");
    // Every committed change is in Kafka once the slot is confirmed past the end of the WAL.
    let end = crate::ha::wal_now(&client).await;
    wait_for_async(
        "the slot to be confirmed past the last commit",
        Duration::from_secs(600),
        || async { (slot_confirmed(&client).await? >= end).then_some(()) },
    )
    .await;
    eprintln!("chaos: every commit confirmed at {:?}", started.elapsed());
    let finals = crate::cdc_order::counters(&client).await;
    let by_key = crate::cdc_order::read_until_final(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        &finals,
        300,
    )
    .await;
    let records = crate::cdc_order::assert_final_state_after_resent_suffixes(&by_key, &finals);
    for store in &stores {
        crate::cdc_order::assert_dlq_empty(store, "the chaos campaign").await;
    }
    let versions: i64 = finals.values().map(|v| v + 1).sum();
    eprintln!(
        "chaos: {faults} faults in {:?} ({injected:?}); {transactions} transactions, {versions} versions of {} keys checked from Kafka in {records} records: lost 0, out of order 0, dead-lettered 0",
        started.elapsed(),
        finals.len()
    );
}
