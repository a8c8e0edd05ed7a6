//! `snapshot = "initial"`: the rows that exist before the slot arrive once as "r", everything
//! after as changes; an interrupted snapshot resumes from its last durable chunk.

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard::config::Config;

use crate::support::cdc::{Db, wait_for_slot};
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, daemon, wait_for_async};

/// A table `items` with `rows` rows, ids 0 to `rows - 1`.
fn items_with_rows(rows: i64) -> String {
    format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO items SELECT g, 'row ' || g FROM generate_series(0, {}) g;",
        rows - 1
    )
}

fn snapshot_config(stack: &Stack, pg_url: &str, listen: &str, chunk: usize) -> std::path::PathBuf {
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\n[kafka]\nbootstrap_servers = \"{}\"\ndelivery_timeout = \"5s\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.appdb]\ntype = \"postgres\"\nurl = \"{pg_url}\"\n\
             tables = [\"public.items\"]\nsnapshot = \"initial\"\nsnapshot_chunk_rows = {chunk}\n\
             [[routes]]\nname = \"items\"\nsource = \"appdb\"\ntopic = \"items\"\n",
            stack.broker.bootstrap(),
            stack.registry.url(),
        ),
    )
    .expect("config");
    path
}

/// Every record of `topic` as (id, op, snapshot flag), in topic order.
async fn records(stack: &Stack, topic: &str, want_ids: usize) -> Vec<(i64, String, String)> {
    let raw = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        let topic = topic.to_string();
        move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(240);
            loop {
                let records = read_topic(&bootstrap, &topic, usize::MAX, Duration::from_secs(3));
                let mut keys: Vec<&Vec<u8>> =
                    records.iter().filter_map(|r| r.key.as_ref()).collect();
                keys.sort();
                keys.dedup();
                if keys.len() >= want_ids || std::time::Instant::now() > deadline {
                    return records;
                }
            }
        }
    })
    .await
    .expect("consumer");
    let dec = decoder(&stack.registry.url());
    let mut out = Vec::with_capacity(raw.len());
    for r in &raw {
        let (_, v) = decode(&dec, &r.value).await;
        out.push((
            v["after"]["id"]
                .as_i64()
                .or(v["before"]["id"].as_i64())
                .expect("id"),
            v["op"].as_str().expect("op").to_string(),
            v["source"]["snapshot"]
                .as_str()
                .expect("snapshot")
                .to_string(),
        ));
    }
    out
}

async fn metric(url: &str, line_prefix: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_100k_rows_under_concurrent_writes_delivers_every_row_exactly_once() {
    let stack = Stack::start();
    let existing = 100_000i64;
    let Db { pg, db, client } = Db::start("snap", &items_with_rows(existing)).await;

    // Writes go on while switchyard creates its slot and copies: new rows, and updates of rows
    // the snapshot may or may not have read yet.
    let added = 3_000i64;
    let writer = {
        let url = pg.libpq(&db);
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("writer");
            tokio::spawn(conn);
            for i in 0..added {
                let id = existing + i;
                c.batch_execute(&format!(
                    "INSERT INTO items VALUES ({id}, 'new {id}'); UPDATE items SET v = 'changed' WHERE id = {}",
                    (i * 37) % existing
                ))
                .await
                .expect("write");
            }
        })
    };
    let path = snapshot_config(&stack, &pg.url(&db), "127.0.0.1:0", 5_000);
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    writer.await.expect("writer done");

    let all = records(&stack, "items", (existing + added) as usize).await;
    // The first record of every row is its creation: "r" from the snapshot or "c" from the
    // stream, never both, never twice.
    let mut first: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (id, op, snap) in &all {
        if op == "r" || op == "c" {
            first.entry(*id).or_default().push(op);
        }
        assert_eq!(
            snap == "true",
            op == "r",
            "source.snapshot is \"true\" exactly for reads"
        );
    }
    let missing: Vec<i64> = (0..existing + added)
        .filter(|i| !first.contains_key(i))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "rows never delivered: {missing:?}");
    let twice: Vec<(&i64, &Vec<&str>)> =
        first.iter().filter(|(_, v)| v.len() > 1).take(10).collect();
    assert!(twice.is_empty(), "rows delivered more than once: {twice:?}");
    let reads = all.iter().filter(|(_, op, _)| op == "r").count() as i64;
    assert!(reads >= existing, "every pre-existing row is read: {reads}");
    let updates = all.iter().filter(|(_, op, _)| op == "u").count() as i64;
    assert!(updates <= added, "no update is delivered twice: {updates}");
    eprintln!(
        "snapshot: {reads} reads, {} creates, {updates} updates after the consistent point",
        all.iter().filter(|(_, op, _)| op == "c").count()
    );
    // A row's snapshot read precedes its changes (one partition per key).
    for (id, ops) in &first {
        assert!(ops[0] == "r" || ops[0] == "c", "row {id}");
    }

    let progress = metric(&url, "switchyard_snapshot_progress_ratio{source=\"appdb\"}").await;
    assert_eq!(progress, Some(1.0), "the progress metric reaches 1");
    let copied = metric(
        &url,
        "switchyard_snapshot_rows_total{source=\"appdb\",table=\"public.items\"}",
    )
    .await
    .expect("rows metric");
    assert_eq!(copied as i64, reads, "the rows metric counts the reads");
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_killed_mid_copy_resumes_from_its_last_durable_chunk() {
    let stack = Stack::start();
    let rows = 40_000i64;
    let chunk = 1_000usize;
    let Db { pg, db, client } = Db::start("resume", &items_with_rows(rows)).await;
    let port = crate::support::free_port();
    let path = snapshot_config(&stack, &pg.url(&db), &format!("127.0.0.1:{port}"), chunk);
    let url = format!("http://127.0.0.1:{port}");
    let start = |n: usize| {
        daemon::spawn_binary(&path, stack.dir.path().join(format!("switchyard-{n}.log")))
    };
    let mut sy = start(0);
    let copied_before = wait_for_async(
        "a quarter of the snapshot",
        Duration::from_secs(120),
        || async {
            let n = metric(&url, "switchyard_snapshot_rows_total{source=\"appdb\"").await?;
            (n >= (rows / 4) as f64).then_some(n)
        },
    )
    .await;
    sy.kill(); // SIGKILL, mid-copy
    assert!(
        copied_before < rows as f64,
        "killed before the copy finished"
    );
    client
        .batch_execute(&format!(
            "INSERT INTO items VALUES ({rows}, 'after the slot')"
        ))
        .await
        .expect("insert");
    let sy = start(1);
    // The resumed copy may read the new row too (it reads the table as it is now), so every id
    // can be there before the change itself has streamed in: wait for the change.
    let all = wait_for_async(
        "the row inserted after the slot to arrive as a change",
        Duration::from_secs(120),
        || async {
            let all = records(&stack, "items", rows as usize + 1).await;
            all.iter()
                .any(|(id, op, _)| *id == rows && op == "c")
                .then_some(all)
        },
    )
    .await;
    drop(sy);
    let mut reads: BTreeMap<i64, usize> = BTreeMap::new();
    for (id, op, _) in &all {
        if op == "r" {
            *reads.entry(*id).or_default() += 1;
        }
    }
    let missing: Vec<i64> = (0..rows)
        .filter(|i| !reads.contains_key(i))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "rows never read: {missing:?}");
    let again: usize = reads.values().map(|n| n - 1).sum();
    assert!(
        again <= chunk,
        "the resumed copy repeats at most the chunk in flight at the kill, not the {copied_before} rows before it: {again} read twice"
    );
    assert!(
        all.iter().any(|(id, op, _)| *id == rows && op == "c"),
        "the row inserted after the slot arrives as a change"
    );
    let log =
        std::fs::read_to_string(stack.dir.path().join("switchyard-1.log")).unwrap_or_default();
    assert!(
        log.contains("resuming an interrupted snapshot"),
        "the restart says it resumes:\n{log}"
    );
    assert!(
        log.contains("snapshot progress") && log.contains("percent"),
        "progress is logged:\n{log}"
    );
    eprintln!(
        "resumed snapshot: {} rows read twice after kill -9 at {copied_before}",
        again
    );
}
