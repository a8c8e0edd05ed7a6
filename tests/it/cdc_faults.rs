//! Row changes under faults lose nothing: kill -9 at random points, a PostgreSQL restart,
//! Kafka away, a schema the registry rejects, a 240 MB transaction in bounded memory.

use crate::support::cdc::*;
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, daemon, wait_for_async};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_while_50k_rows_are_written_loses_no_committed_row() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start(
        "crash",
        "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL)",
    )
    .await;
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('audit', 'test_decoding')")
        .await
        .expect("an audit slot that records each row's commit position");
    let port = crate::support::free_port();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        items_config(port, &broker.bootstrap(), &registry.url(), &pg.url(&db)),
    )
    .expect("config");
    let start =
        |n: usize| daemon::spawn_binary(&path, dir.path().join(format!("switchyard-{n}.log")));
    let mut sy = start(0);
    wait_for_slot(&client, "switchyard_appdb").await;

    // 50,000 rows in transactions of 10, while switchyard is killed (SIGKILL) at three random
    // points and restarted each time.
    let rows = 50_000i64;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    let mut x = u64::from(seed) | 1;
    let mut kill_at: Vec<i64> = (0..3)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rows / 10 + (x >> 33) as i64 % (rows * 8 / 10)
        })
        .collect();
    kill_at.sort();
    eprintln!("kill points (rows committed): {kill_at:?} (seed {seed})");
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
    let mut samples = Vec::new();
    for (round, at) in kill_at.iter().enumerate() {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let n: i64 = client
                .query_one("SELECT count(*) FROM items", &[])
                .await
                .expect("count")
                .get(0);
            if n >= *at || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sy.kill(); // SIGKILL
        // What the slot confirmed, and what Kafka holds, at the moment of the kill.
        let at_kill = confirmed(&client).await.expect("confirmed lsn");
        let held = tokio::task::spawn_blocking({
            let bootstrap = broker.bootstrap();
            move || read_topic(&bootstrap, "items", usize::MAX, Duration::from_secs(3))
        })
        .await
        .expect("consumer");
        let dec = decoder(&registry.url());
        let mut ids = std::collections::HashSet::new();
        for r in &held {
            let (_, k) = decode(&dec, r.key.as_ref().expect("key")).await;
            ids.insert(k["id"].as_i64().expect("id"));
        }
        samples.push((at_kill, ids));
        sy = start(round + 1);
        // The restarted process takes over the slot and moves it on before the next kill.
        let restarted = std::time::Instant::now();
        wait_for_async(
            "the restarted process to advance the slot",
            Duration::from_secs(60),
            || async {
                let now = confirmed(&client).await?;
                (now > at_kill).then_some(())
            },
        )
        .await;
        eprintln!(
            "restart {round}: slot advanced after {:?}",
            restarted.elapsed()
        );
    }
    writer.await.expect("writer done");

    let (records, ids) = read_items(&broker.bootstrap(), &registry.url(), rows, 180).await;
    let missing: Vec<i64> = (0..rows).filter(|i| !ids.contains(i)).take(10).collect();
    assert!(
        missing.is_empty(),
        "committed rows missing from Kafka after kill -9: {missing:?}"
    );
    eprintln!(
        "kill -9 three times during {rows} rows: {} records, {} duplicates (at-least-once)",
        records.len(),
        records.len() as i64 - rows
    );
    // At every kill, each row whose commit the slot had confirmed was already in Kafka: the
    // confirmed LSN never passed an event that was not acknowledged.
    let commits = commit_ends(&client, "audit").await;
    assert_eq!(commits.len() as i64, rows, "the audit slot saw every row");
    for (k, (confirmed, held)) in samples.iter().enumerate() {
        let covered: Vec<i64> = commits
            .iter()
            .filter(|(_, end)| *end <= *confirmed)
            .map(|(id, _)| *id)
            .collect();
        let unacked: Vec<&i64> = covered
            .iter()
            .filter(|id| !held.contains(id))
            .take(10)
            .collect();
        assert!(
            unacked.is_empty(),
            "kill {k}: the slot confirmed {} but rows of commits before it were not in Kafka: {unacked:?}",
            switchyard::source::postgres::lsn::Lsn(*confirmed)
        );
        eprintln!(
            "kill {k}: confirmed {} covered {} rows, all in Kafka ({} held)",
            switchyard::source::postgres::lsn::Lsn(*confirmed),
            covered.len(),
            held.len()
        );
    }
    let end = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    client
        .batch_execute("SELECT pg_logical_emit_message(false, 'test', 'x')")
        .await
        .expect("message");
    wait_for_confirmed(&client, end, "the slot to catch up", 60).await;
    drop(sy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_is_survived_without_loss() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } =
        Db::start("restart", "CREATE TABLE events (id int PRIMARY KEY)").await;
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.events\"",
        "events",
    );
    let (sy, _) = daemon::start(config).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    client
        .batch_execute("INSERT INTO events SELECT generate_series(1, 100)")
        .await
        .expect("first rows");
    drop(client);
    pg.restart();
    let client = connect(&pg, &db).await;
    client
        .batch_execute("INSERT INTO events SELECT generate_series(101, 200)")
        .await
        .expect("rows after the restart");
    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let r = read_topic(&bootstrap, "events", usize::MAX, Duration::from_secs(3));
                let mut keys: Vec<Vec<u8>> = r.iter().filter_map(|x| x.key.clone()).collect();
                keys.sort();
                keys.dedup();
                if keys.len() >= 200 || std::time::Instant::now() > deadline {
                    return r;
                }
            }
        }
    })
    .await
    .expect("consumer");
    let dec = decoder(&registry.url());
    let mut ids = std::collections::BTreeSet::new();
    for r in &records {
        let (_, k) = decode(&dec, r.key.as_ref().expect("key")).await;
        ids.insert(k["id"].as_i64().expect("id"));
    }
    assert_eq!(
        ids.len(),
        200,
        "every row from before and after the restart"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_240_mb_transaction_streams_through_in_bounded_memory() {
    let stack = Stack::start();
    let Db { pg, db, client } = Db::start(
        "bigtx",
        "CREATE TABLE blobs (id bigint PRIMARY KEY, body text NOT NULL)",
    )
    .await;
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.appdb]\ntype = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.blobs\"]\n[[routes]]\nname = \"r\"\nsource = \"appdb\"\ntopic = \"blobs\"\n",
            stack.broker.bootstrap(),
            stack.registry.url(),
            pg.url(&db)
        ),
    )
    .expect("config");
    let sy = daemon::spawn_binary(&path, stack.dir.path().join("switchyard.log"));
    wait_for_slot(&client, "switchyard_appdb").await;
    // One transaction of 120,000 rows of 1,920 bytes: about 240 MB of row data.
    let rows = 120_000;
    client
        .batch_execute(&format!(
            "INSERT INTO blobs SELECT g, repeat(md5(g::text), 60) FROM generate_series(1, {rows}) g"
        ))
        .await
        .expect("big transaction");
    let end = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    client
        .batch_execute("SELECT pg_logical_emit_message(false, 'test', 'after')")
        .await
        .expect("marker");
    // The slot passes the transaction only once every one of its rows is acknowledged.
    wait_for_confirmed(&client, end, "the slot to pass the big transaction", 300).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", sy.pid())).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM");
    eprintln!(
        "240 MB transaction: switchyard peak RSS {} MiB",
        peak_kib / 1024
    );
    assert!(
        peak_kib < 160 * 1024,
        "switchyard held {} MiB at its peak: the transaction was buffered, not streamed",
        peak_kib / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_the_registry_rejects_dead_letters_those_rows_and_the_stream_goes_on() {
    let stack = Stack::start();
    let Db { pg, db, client } = Db::start(
        "reject",
        "CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE audit (id int PRIMARY KEY);",
    )
    .await;
    stack.registry.set_compatibility(None, "BACKWARD").await;
    let config = cdc_config(
        stack.dir.path(),
        (&stack.broker.bootstrap(), &stack.registry.url()),
        &pg.url(&db),
        "\"public.products\", \"public.audit\"",
        "{table}",
    );
    let store = config.dlq.store.clone();
    let (sy, _) = daemon::start(config).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    for sql in [
        "INSERT INTO products VALUES (1, 'kettle')",
        // string → int is incompatible under BACKWARD in every registry.
        "ALTER TABLE products ALTER COLUMN name TYPE int USING length(name)",
        "INSERT INTO products VALUES (2, 6)",
        "INSERT INTO audit VALUES (1)",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let end = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    let audit = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "audit", 1, Duration::from_secs(30))
    })
    .await
    .expect("consumer");
    assert_eq!(audit.len(), 1, "the stream goes on past the rejected rows");
    let products = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "products", usize::MAX, Duration::from_secs(3))
    })
    .await
    .expect("consumer");
    assert_eq!(
        products.len(),
        1,
        "only the row of the first schema is in Kafka"
    );
    let dlq = switchyard::store::Store::open(&store).await.expect("dlq");
    let letters = dlq
        .dead_letters()
        .list(&switchyard::store::Selector::default())
        .await
        .expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].class, "schema", "{}", letters[0].message);
    assert_eq!(letters[0].topic.as_deref(), Some("products"));
    wait_for_confirmed(&client, end, "the slot to pass the rejected row", 30).await;
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_kafka_is_down_the_replication_connection_stays_alive_and_nothing_is_lost() {
    let Stack {
        dir,
        mut broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start("stall", "CREATE TABLE items (id int PRIMARY KEY)").await;
    for sql in [
        "ALTER SYSTEM SET wal_sender_timeout = '2s'",
        "SELECT pg_reload_conf()",
    ] {
        client
            .batch_execute(sql)
            .await
            .expect("a short walsender timeout");
    }
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.items\"",
        "items",
    );
    let (sy, _) = daemon::start(config).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    // The first row is sent to a frozen broker, which then dies with it unanswered: the
    // restarted broker knows neither the topic nor the producer's id (the producer's fatal
    // error path, as well as the topic's).
    broker.signal("STOP");
    client
        .batch_execute("INSERT INTO items VALUES (1)")
        .await
        .expect("insert");
    crate::support::wait_for(
        "the first row sent to the frozen broker",
        Duration::from_secs(30),
        || (broker.unread_bytes() > 0).then_some(()),
    );
    let walsender = || async {
        client
            .query_opt(
                "SELECT pid FROM pg_stat_replication WHERE application_name = 'switchyard-appdb'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get::<_, i32>(0))
    };
    let pid = wait_for_async("the walsender", Duration::from_secs(30), walsender).await;
    let port = broker.port();
    broker.stop();
    client
        .batch_execute("INSERT INTO items SELECT g FROM generate_series(2, 100) g")
        .await
        .expect("insert while Kafka is down");
    // Three walsender timeouts with the sink stalled: status updates keep the session alive.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        assert_eq!(
            walsender().await,
            Some(pid),
            "the walsender was not dropped for silence while Kafka was down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let broker = crate::support::broker::Broker::start_on(port, dir.path());
    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            // switchyard creates the topic again on the empty broker.
            read_topic(&bootstrap, "items", 1, Duration::from_secs(90));
            loop {
                let r = read_topic(&bootstrap, "items", usize::MAX, Duration::from_secs(3));
                let mut keys: Vec<Vec<u8>> = r.iter().filter_map(|x| x.key.clone()).collect();
                keys.sort();
                keys.dedup();
                if keys.len() >= 99 || std::time::Instant::now() > deadline {
                    return keys.len();
                }
            }
        }
    })
    .await
    .expect("consumer");
    // The restarted broker kept nothing (memory storage): rows 2..=100 arrive after it.
    assert!(
        records >= 99,
        "rows written while Kafka was down arrive: {records}"
    );
    daemon::stop(sy).await;
}
