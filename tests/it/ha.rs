//! High availability of CDC: several instances with the same sources, one streams each slot.

use std::time::{Duration, Instant};

use crate::cdc::{Db, confirmed, items_config, read_items, source_state, wait_for_slot};
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
