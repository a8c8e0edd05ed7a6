//! The publication follows `tables` (issue #25): selectors with globs and exclusions, a reload
//! that adds tables (their changes stream, and with `snapshot_new_tables` their existing rows
//! are backfilled) or removes one (its changes stop), and `check --live` showing the plan.
//! Read back from Kafka.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::cdc_order::{Change, changes_by_key};
use crate::support::cdc::{Db, wait_for_slot};
use crate::support::{Stack, run_cli_split, wait_for_async};

const DDL: &str = "
    CREATE TABLE counters (id int PRIMARY KEY, v bigint NOT NULL);
    CREATE TABLE orders_eu (id int PRIMARY KEY, v bigint NOT NULL);
    CREATE TABLE orders_us (id int PRIMARY KEY, v bigint NOT NULL);
    CREATE TABLE orders_archive (id int PRIMARY KEY, v bigint NOT NULL);
    INSERT INTO counters SELECT g, 0 FROM generate_series(1, 100) g;
    INSERT INTO orders_eu SELECT g, 0 FROM generate_series(1, 3000) g;
    INSERT INTO orders_us SELECT g, 0 FROM generate_series(1, 200) g;
    INSERT INTO orders_archive SELECT g, 0 FROM generate_series(1, 50) g;
";

/// A configuration of source `pg` capturing `tables` minus `exclude`, to topic `{table}`.
fn config(stack: &Stack, url: &str, port: u16, tables: &str, exclude: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[kafka]
bootstrap_servers = "{}"
[schema_registry]
url = "{}"
[sources.pg]
type = "postgres"
url = "{url}"
tables = [{tables}]
exclude_tables = [{exclude}]
snapshot_new_tables = true
heartbeat_interval = "1s"
[[routes]]
name = "r"
source = "pg"
topic = "{{table}}"
"#,
        stack.broker.bootstrap(),
        stack.registry.url()
    )
}

/// Runs `sql` on `client`.
async fn run(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn published(client: &tokio_postgres::Client) -> BTreeSet<String> {
    client
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'switchyard_pg'",
            &[],
        )
        .await
        .expect("publication tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Writes a marker row into `counters` and waits until it is in Kafka: every change committed
/// before it has been streamed (one source's records are handed over in commit order).
async fn barrier(db: &Db, stack: &Stack, id: i32) {
    db.client
        .execute("INSERT INTO counters VALUES ($1, 1)", &[&id])
        .await
        .expect("marker");
    wait_for_async("the marker in Kafka", Duration::from_secs(60), || async {
        changes_by_key(
            &stack.broker.bootstrap(),
            &stack.registry.url(),
            "counters",
            usize::MAX,
            2,
        )
        .await
        .contains_key(&i64::from(id))
        .then_some(())
    })
    .await;
}

/// Each key's records of `topic`.
async fn records(stack: &Stack, topic: &str) -> std::collections::BTreeMap<i64, Vec<Change>> {
    changes_by_key(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        topic,
        usize::MAX,
        3,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publication_follows_a_reload_new_tables_are_backfilled_in_key_order_and_removed_ones_stop()
 {
    let db = Db::start("follow", DDL).await;
    let stack = Stack::start();
    let url = db.pg.url(&db.db);
    let port = crate::support::free_port();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(&path, config(&stack, &url, port, "\"public.counters\"", "")).expect("config");
    let log = stack.dir.path().join("switchyard.log");
    let sy = crate::support::daemon::spawn_binary(&path, log.clone());
    wait_for_slot(&db.client, "switchyard_pg").await;
    assert_eq!(published(&db.client).await, ["counters".to_string()].into());

    // `check --live` shows what a reload would do, and changes nothing.
    let grown = config(
        &stack,
        &url,
        port,
        "\"public.counters\", \"public.orders_*\"",
        "\"public.orders_archive\"",
    );
    std::fs::write(&path, &grown).expect("config");
    let (code, out, err) = run_cli_split(&path, &["check", "--live"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("publication switchyard_pg: would add public.orders_eu, public.orders_us"),
        "{out}"
    );
    assert_eq!(published(&db.client).await.len(), 1);

    // The reload adds the tables the glob matches, not the excluded one.
    sy.signal("HUP");
    wait_for_async(
        "the publication to follow",
        Duration::from_secs(30),
        || async {
            let p = published(&db.client).await;
            (p.len() == 3).then_some(p)
        },
    )
    .await;
    assert_eq!(
        published(&db.client).await,
        ["counters", "orders_eu", "orders_us"]
            .map(String::from)
            .into()
    );
    // Writers change rows of the new table while its backfill runs.
    let writer = {
        let client = crate::support::cdc::connect(&db.pg, &db.db).await;
        tokio::spawn(async move {
            for i in 0..300i32 {
                let id = 1 + (i * 37) % 3000;
                client
                    .execute("UPDATE orders_eu SET v = v + 1 WHERE id = $1", &[&id])
                    .await
                    .expect("update");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            run(&client, "INSERT INTO orders_eu VALUES (5000, 7)").await;
        })
    };
    run(&db.client, "UPDATE orders_archive SET v = 99 WHERE id = 1").await;
    writer.await.expect("writer");
    let done = wait_for_async(
        "both new tables backfilled",
        Duration::from_secs(120),
        || async {
            let (_, out, _) = run_cli_split(&path, &["snapshot", "status", "--source", "pg"]);
            let s: serde_json::Value = serde_json::from_str(&out).ok()?;
            (s["state"] == "done" && s["queued"] == serde_json::json!([])).then_some(s)
        },
    )
    .await;
    assert_eq!(done["requested_by"], "config:snapshot_new_tables", "{done}");
    barrier(&db, &stack, -1).await;

    let finals: std::collections::BTreeMap<i64, i64> = db
        .client
        .query("SELECT id::bigint, v FROM orders_eu", &[])
        .await
        .expect("finals")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let eu = wait_for_async("orders_eu in Kafka", Duration::from_secs(60), || async {
        let by_key = records(&stack, "orders_eu").await;
        finals
            .iter()
            .all(|(id, v)| by_key.get(id).and_then(|c| c.last()).and_then(|c| c.v) == Some(*v))
            .then_some(by_key)
    })
    .await;
    assert_eq!(eu.len(), finals.len(), "every row of the new table");
    for (id, changes) in &eu {
        let mut newest = i64::MIN;
        for c in changes {
            let v = c.v.expect("no deletes");
            if c.op == "r" {
                assert_eq!(c.snapshot.as_deref(), Some("incremental"), "{id}: {c:?}");
                assert!(
                    v >= newest,
                    "key {id}: a backfill read after a newer change: {changes:?}"
                );
            }
            newest = newest.max(v);
        }
    }
    assert!(
        eu.values().flatten().any(|c| c.op == "u"),
        "the updates streamed"
    );
    let us = records(&stack, "orders_us").await;
    assert_eq!(us.len(), 200, "orders_us backfilled");
    assert!(us.values().flatten().all(|c| c.op == "r"));
    assert!(
        !crate::support::consume::topic_exists(&stack.broker.bootstrap(), "orders_archive"),
        "the excluded table streams nothing"
    );
    assert!(crate::support::consume::topic_exists(
        &stack.broker.bootstrap(),
        "orders_us"
    ));

    // Removing a table: its changes stop.
    std::fs::write(
        &path,
        config(
            &stack,
            &url,
            port,
            "\"public.counters\", \"public.orders_eu\"",
            "",
        ),
    )
    .expect("config");
    let (code, out, _) = run_cli_split(&path, &["check", "--live"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("would drop public.orders_us"), "{out}");
    sy.signal("HUP");
    wait_for_async("orders_us to leave", Duration::from_secs(30), || async {
        (!published(&db.client).await.contains("orders_us")).then_some(())
    })
    .await;
    run(&db.client, "UPDATE orders_us SET v = 999 WHERE id = 1").await;
    run(&db.client, "UPDATE orders_eu SET v = 999 WHERE id = 1").await;
    barrier(&db, &stack, -2).await;
    let us = records(&stack, "orders_us").await;
    assert!(
        us[&1].iter().all(|c| c.v != Some(999)),
        "a removed table's change streamed: {:?}",
        us[&1]
    );
    assert_eq!(
        records(&stack, "orders_eu").await[&1]
            .last()
            .and_then(|c| c.v),
        Some(999),
        "the table that stays still streams"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("publication follows the configuration"),
        "{text}"
    );
    drop(sy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_refuses_a_selector_that_matches_nothing_start_warns_and_new_tables_a_glob_selects_join()
 {
    let db = Db::start("selectors", DDL).await;
    let stack = Stack::start();
    let url = db.pg.url(&db.db);
    let port = crate::support::free_port();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        config(
            &stack,
            &url,
            port,
            "\"public.orders_*\", \"public.invoices\"",
            "\"public.orders_archive\"",
        ),
    )
    .expect("config");
    let (code, out, err) = run_cli_split(&path, &["check", "--live"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(
            "publication switchyard_pg: would be created with public.orders_eu, public.orders_us"
        ),
        "{out}"
    );
    assert!(
        err.contains("error: source `pg`: `public.invoices` in `tables` matches no table"),
        "{err}"
    );

    // The daemon starts anyway, warns, and publishes what matches.
    let log = stack.dir.path().join("switchyard.log");
    let sy = crate::support::daemon::spawn_binary(&path, log.clone());
    wait_for_slot(&db.client, "switchyard_pg").await;
    assert_eq!(
        published(&db.client).await,
        ["orders_eu", "orders_us"].map(String::from).into()
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("`public.invoices` in `tables` matches no table"),
        "{text}"
    );
    // A table created later that the glob selects joins at a heartbeat (the exclusion makes
    // the publication a list of tables), and its rows from before are backfilled.
    db.client
        .batch_execute(
            "CREATE TABLE orders_jp (id int PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO orders_jp SELECT g, 1 FROM generate_series(1, 20) g;
             CREATE TABLE orders_archive_2 (id int PRIMARY KEY, v bigint NOT NULL);",
        )
        .await
        .expect("new tables");
    wait_for_async("orders_jp to join", Duration::from_secs(30), || async {
        published(&db.client)
            .await
            .contains("orders_jp")
            .then_some(())
    })
    .await;
    run(&db.client, "UPDATE orders_jp SET v = 2 WHERE id = 20").await;
    let jp = wait_for_async("orders_jp in Kafka", Duration::from_secs(60), || async {
        let by_key = records(&stack, "orders_jp").await;
        (by_key.len() == 20 && by_key[&20].last().and_then(|c| c.v) == Some(2)).then_some(by_key)
    })
    .await;
    assert!(jp[&1].iter().all(|c| c.op == "r"), "{:?}", jp[&1]);
    assert!(
        published(&db.client).await.contains("orders_archive_2"),
        "the exclusion names orders_archive only"
    );
    drop(sy);

    // A database that does not answer: exit 2.
    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/x",
        crate::support::free_port()
    );
    std::fs::write(&path, config(&stack, &dead, port, "\"public.a\"", "")).expect("config");
    let (code, _, err) = run_cli_split(&path, &["check", "--live"]);
    assert_eq!(code, Some(2), "{err}");
}
