//! The envelope carries what Debezium 3.6 writes (see docs/envelope.md), read back through the
//! registry by a stock decoder: `source.sequence`, `ts_us`/`ts_ns`, `xmin`/`origin`/`origin_lsn`
//! and the `transaction` block, with values that follow the WAL and the transactions.

use std::time::Duration;

use serde_json::Value as Json;
use switchyard::config::Config;

use crate::support::cdc::{Db, wait_for_slot};
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, daemon};

/// `source.sequence` as two LSNs.
fn sequence(v: &Json) -> (Option<u64>, u64) {
    let text = v["source"]["sequence"]
        .as_str()
        .expect("sequence is a string");
    let parts: Vec<Option<String>> = serde_json::from_str(text).expect("a JSON array");
    assert_eq!(parts.len(), 2, "{text}");
    let lsn = |p: &Option<String>| p.as_ref().map(|s| s.parse::<u64>().expect("decimal LSN"));
    (lsn(&parts[0]), lsn(&parts[1]).expect("the change's LSN"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_carries_debezium_3_sequence_timestamps_and_transaction_blocks() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start(
        "envelope",
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);
         CREATE TABLE items (id int PRIMARY KEY, name text);",
    )
    .await;
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}
[sources.appdb]
type = "postgres"
url = "{}"
tables = ["public.orders", "public.items"]
heartbeat_interval = "1h"
[[routes]]
name = "all"
source = "appdb"
"#,
            pg.url(&db),
            head = crate::support::config_head("127.0.0.1:0", &broker.bootstrap(), &registry.url()),
        ),
    )
    .expect("config");
    let (sy, _url) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;

    // One transaction over two tables (Debezium's own probe: c, c, u, c, d), then a second one.
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO orders VALUES (1, 'a'), (2, 'b');
             INSERT INTO items VALUES (1, 'x');
             UPDATE orders SET note = 'c' WHERE id = 1;
             INSERT INTO items VALUES (2, 'y');
             DELETE FROM orders WHERE id = 2;
             COMMIT;",
        )
        .await
        .expect("first transaction");
    client
        .batch_execute("UPDATE items SET name = 'z' WHERE id = 1")
        .await
        .expect("second transaction");

    // orders: c, c, u, d and the delete's tombstone; items: c, c, then u in the second.
    let dec = decoder(&registry.url());
    let mut values = Vec::new();
    for (topic, want) in [("appdb.public.orders", 5), ("appdb.public.items", 3)] {
        let records = tokio::task::spawn_blocking({
            let bootstrap = broker.bootstrap();
            move || read_topic(&bootstrap, topic, want, Duration::from_secs(20))
        })
        .await
        .expect("consumer");
        for r in records.iter().filter(|r| !r.value.is_empty()) {
            values.push(decode(&dec, &r.value).await.1);
        }
    }
    assert_eq!(values.len(), 7, "{values:#?}");
    // Partitions are per key: put them back in WAL order.
    values.sort_by_key(|v| sequence(v).1);

    for v in &values {
        let s = &v["source"];
        let (ts_ms, ts_us, ts_ns) = (
            s["ts_ms"].as_i64().expect("ts_ms"),
            s["ts_us"].as_i64().expect("source.ts_us"),
            s["ts_ns"].as_i64().expect("source.ts_ns"),
        );
        assert_eq!(ts_us / 1000, ts_ms, "commit time in µs: {s}");
        assert_eq!(ts_ns, ts_us * 1000);
        let (ms, us, ns) = (
            v["ts_ms"].as_i64().expect("ts_ms"),
            v["ts_us"].as_i64().expect("ts_us"),
            v["ts_ns"].as_i64().expect("ts_ns"),
        );
        assert_eq!((us / 1000, ns), (ms, us * 1000), "processing time");
        for field in ["xmin", "origin", "origin_lsn"] {
            assert_eq!(s[field], Json::Null, "{field}");
        }
        let (last_commit, lsn) = sequence(v);
        if let Some(c) = last_commit {
            assert!(c <= lsn, "the last commit precedes the change: {s}");
        }
        let tx = &v["transaction"];
        assert_eq!(
            tx["id"].as_str(),
            Some(format!("{}:{lsn}", s["txId"]).as_str()),
            "Debezium's id: txId and the change's LSN"
        );
    }

    let (first, second) = values.split_at(6);
    let tables: Vec<&str> = first
        .iter()
        .map(|v| v["source"]["table"].as_str().expect("table"))
        .collect();
    assert_eq!(
        tables,
        ["orders", "orders", "items", "orders", "items", "orders"]
    );
    let order = |v: &Json, f: &str| v["transaction"][f].as_i64().expect(f);
    assert_eq!(
        first
            .iter()
            .map(|v| order(v, "total_order"))
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        first
            .iter()
            .map(|v| order(v, "data_collection_order"))
            .collect::<Vec<_>>(),
        [1, 2, 1, 3, 2, 4]
    );
    let tx_ids: Vec<&Json> = first.iter().map(|v| &v["source"]["txId"]).collect();
    assert!(tx_ids.iter().all(|t| *t == tx_ids[0]), "one transaction");
    let lsns: Vec<u64> = first.iter().map(|v| sequence(v).1).collect();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "each change has its own, increasing LSN: {lsns:?}"
    );

    let v = &second[0];
    assert_eq!(order(v, "total_order"), 1);
    assert_eq!(order(v, "data_collection_order"), 1);
    let (last_commit, lsn) = sequence(v);
    let last_commit = last_commit.expect("a commit was read before the second transaction");
    assert!(
        last_commit > lsns[5] && last_commit <= lsn,
        "the last commit is the first transaction's end: {last_commit} after {} and not after {lsn}",
        lsns[5]
    );
    assert_ne!(v["source"]["txId"], first[0]["source"]["txId"]);

    // The registered schema has Debezium's field order.
    let names = |record: &Json| -> Vec<String> {
        record["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["name"].as_str().expect("name").to_string())
            .collect()
    };
    let latest: Json = reqwest::get(format!(
        "{}/subjects/appdb.public.items-value/versions/latest",
        registry.url()
    ))
    .await
    .expect("registry")
    .json()
    .await
    .expect("json");
    let schema: Json =
        serde_json::from_str(latest["schema"].as_str().expect("schema text")).expect("schema");
    assert_eq!(
        names(&schema),
        [
            "before",
            "after",
            "source",
            "transaction",
            "op",
            "ts_ms",
            "ts_us",
            "ts_ns"
        ]
    );
    daemon::stop(sy).await;
}
