//! Row changes in PostgreSQL reach Kafka as Debezium-style envelopes, and the slot advances
//! only over what Kafka acknowledged.

use std::time::Duration;

use switchyard::config::Config;

use crate::support::consume::{decode, decoder, read_topic};
use crate::support::postgres::PgCluster;
use crate::support::{Stack, daemon, wait_for_async};

pub(crate) async fn connect(pg: &PgCluster, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.libpq(db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// A test's database: a private cluster, a fresh database with the test's tables, and a client.
pub(crate) struct Db {
    pub pg: PgCluster,
    /// The database's name.
    pub db: String,
    pub client: tokio_postgres::Client,
}

impl Db {
    /// Starts a cluster, creates database `name` in it and runs `ddl` there.
    pub(crate) async fn start(name: &str, ddl: &str) -> Db {
        let pg = PgCluster::start();
        let db = pg.fresh_database(name).await;
        let client = connect(&pg, &db).await;
        client.batch_execute(ddl).await.expect("schema");
        Db { pg, db, client }
    }
}

pub(crate) async fn lsn(client: &tokio_postgres::Client, sql: &str) -> Option<u64> {
    let row = client.query_opt(sql, &[]).await.expect("query")?;
    let text: Option<String> = row.get(0);
    text.and_then(|t| t.parse::<switchyard::source::postgres::lsn::Lsn>().ok())
        .map(|l| l.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_and_deletes_arrive_as_envelopes_and_the_slot_advances() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text, total numeric(10,2) NOT NULL,
                                  tags text[], created timestamptz);
             COMMENT ON TABLE orders IS 'Customer orders';
             COMMENT ON COLUMN orders.total IS 'Gross, in EUR';",
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
tables = ["public.orders"]
heartbeat_interval = "1s"
[[routes]]
name = "orders"
source = "appdb"
"#,
            pg.url(&db),
            head = crate::support::config_head("127.0.0.1:0", &broker.bootstrap(), &registry.url()),
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    wait_for_async("the slot lag metric", Duration::from_secs(30), || async {
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("switchyard_slot_lag_bytes{source=\"appdb\"}")
            .then_some(())
    })
    .await;

    client
        .batch_execute("INSERT INTO orders VALUES (1, 'café ✓', 12.50, '{a,\"b c\"}', '2024-11-05 08:49:37.5+00')")
        .await
        .expect("insert");
    client
        .batch_execute("UPDATE orders SET note = NULL, total = 13 WHERE id = 1")
        .await
        .expect("update");
    let before_delete = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    client
        .batch_execute("DELETE FROM orders WHERE id = 1")
        .await
        .expect("delete");
    client
        .batch_execute("TRUNCATE orders")
        .await
        .expect("truncate");

    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || {
            read_topic(
                &bootstrap,
                "appdb.public.orders",
                6,
                Duration::from_secs(10),
            )
        }
    })
    .await
    .expect("consumer");
    if std::env::var_os("SWITCHYARD_LOG").is_some() {
        eprintln!("{}", pg.log());
    }
    assert_eq!(
        records.len(),
        5,
        "insert, update, delete, its tombstone, truncate"
    );
    let dec = decoder(&registry.url());
    let tombstones: Vec<_> = records.iter().filter(|r| r.value.is_empty()).collect();
    assert_eq!(tombstones.len(), 1, "the delete is followed by a tombstone");
    let (_, k) = decode(&dec, tombstones[0].key.as_ref().expect("keyed")).await;
    assert_eq!(
        k,
        serde_json::json!({"id": 1}),
        "the tombstone has the deleted row's key"
    );
    let mut values = Vec::new();
    for r in records.iter().filter(|r| !r.value.is_empty()) {
        let (_, v) = decode(&dec, &r.value).await;
        if v["op"] == "t" {
            assert!(r.key.is_none(), "a truncate has no key");
            assert_eq!(
                (&v["before"], &v["after"]),
                (&serde_json::Value::Null, &serde_json::Value::Null)
            );
            assert_eq!(v["source"]["table"], "orders");
            continue;
        }
        let (_, k) = decode(&dec, r.key.as_ref().expect("keyed")).await;
        assert_eq!(k, serde_json::json!({"id": 1}), "keyed by the primary key");
        let id = r
            .headers
            .iter()
            .find(|(h, _)| h == "switchyard.event_id")
            .expect("event id header");
        assert!(
            String::from_utf8_lossy(&id.1).contains(':'),
            "commit LSN and ordinal"
        );
        values.push(v);
    }
    values.sort_by_key(|v| v["source"]["lsn"].as_i64());
    let ops: Vec<&str> = values
        .iter()
        .map(|v| v["op"].as_str().expect("op"))
        .collect();
    assert_eq!(ops, ["c", "u", "d"]);
    let insert = &values[0];
    assert_eq!(insert["before"], serde_json::Value::Null);
    assert_eq!(insert["after"]["id"], 1);
    assert_eq!(insert["after"]["note"], "café ✓");
    assert_eq!(insert["after"]["tags"], serde_json::json!(["a", "b c"]));
    assert_eq!(insert["after"]["created"], "2024-11-05T08:49:37.500000Z");
    assert_eq!(insert["source"]["connector"], "postgresql");
    assert_eq!(insert["source"]["name"], "appdb");
    assert_eq!(insert["source"]["db"], "app");
    assert_eq!(
        (
            insert["source"]["schema"].as_str(),
            insert["source"]["table"].as_str()
        ),
        (Some("public"), Some("orders"))
    );
    assert_eq!(insert["source"]["snapshot"], "false");
    assert!(
        insert["source"]["txId"].as_i64().is_some() && insert["source"]["lsn"].as_i64().is_some()
    );
    assert_eq!(values[1]["after"]["note"], serde_json::Value::Null);
    assert_eq!(values[2]["after"], serde_json::Value::Null);
    assert_eq!(values[2]["before"]["id"], 1);
    assert_eq!(values[2]["before"]["note"], serde_json::Value::Null);
    assert!(
        records.iter().any(|r| r
            .headers
            .iter()
            .any(|(h, v)| h == "switchyard.before" && v == b"key_only")),
        "the delete says its before image has only the key (REPLICA IDENTITY DEFAULT)"
    );

    // The registered schema is Debezium's shape, with the comments as docs.
    let schema: serde_json::Value = reqwest::get(format!(
        "{}/subjects/appdb.public.orders-value/versions/latest",
        registry.url()
    ))
    .await
    .expect("registry")
    .json()
    .await
    .expect("json");
    let schema: serde_json::Value =
        serde_json::from_str(schema["schema"].as_str().expect("schema text")).expect("schema json");
    assert_eq!(schema["name"], "Envelope");
    assert_eq!(schema["namespace"], "appdb.public.orders");
    let row = &schema["fields"][0]["type"][1];
    assert_eq!(row["doc"], "Customer orders");
    let total = row["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == "total")
        .expect("total");
    assert_eq!(total["doc"], "Gross, in EUR");
    assert_eq!(
        total["type"]["logicalType"], "decimal",
        "NOT NULL numeric(10,2) is a bare decimal"
    );

    // Everything was acknowledged, so the slot moves past the delete.
    wait_for_async(
        "the slot to confirm the delete",
        Duration::from_secs(30),
        || async { (confirmed(&client).await? > before_delete).then_some(()) },
    )
    .await;
    daemon::stop(sy).await;
}

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
async fn columns_added_and_dropped_mid_stream_register_new_schema_versions_and_lose_nothing() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start(
        "ddl",
        "CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL)",
    )
    .await;
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.shop]\ntype = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.*\"]\n[[routes]]\nname = \"all\"\nsource = \"shop\"\n",
            broker.bootstrap(),
            registry.url(),
            pg.url(&db)
        ),
    )
    .expect("config");
    // rivven-schema's BACKWARD check cannot resolve the named `Value` reference that `after`
    // shares with `before` (Debezium's layout) and calls an added optional column
    // incompatible; a Confluent registry accepts it. The registry's verdict is not what this
    // test is about (the DLQ tests cover rejections), so compatibility is NONE here.
    registry.set_compatibility(None, "NONE").await;
    let (sy, _) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_slot(&client, "switchyard_shop").await;
    for sql in [
        "INSERT INTO products VALUES (1, 'kettle')",
        "ALTER TABLE products ADD COLUMN price numeric(8,2) DEFAULT 9.99",
        "INSERT INTO products VALUES (2, 'teapot', 19.50)",
        "ALTER TABLE products DROP COLUMN price",
        "INSERT INTO products VALUES (3, 'cup')",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || {
            read_topic(
                &bootstrap,
                "shop.public.products",
                4,
                Duration::from_secs(10),
            )
        }
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 3, "every row, across both schema changes");
    let dec = decoder(&registry.url());
    let mut by_id = std::collections::BTreeMap::new();
    let mut schema_ids = std::collections::BTreeSet::new();
    for r in &records {
        let (schema_id, v) = decode(&dec, &r.value).await;
        schema_ids.insert(schema_id);
        by_id.insert(v["after"]["id"].as_i64().expect("id"), v["after"].clone());
    }
    assert_eq!(by_id[&1].get("price"), None, "before ADD COLUMN");
    assert!(by_id[&2].get("price").is_some(), "after ADD COLUMN");
    assert_eq!(by_id[&3].get("price"), None, "after DROP COLUMN");
    assert_eq!(by_id[&3]["name"], "cup");
    assert!(
        schema_ids.len() >= 2,
        "a new schema version per shape: {schema_ids:?}"
    );
    let versions: Vec<u32> = reqwest::get(format!(
        "{}/subjects/shop.public.products-value/versions",
        registry.url()
    ))
    .await
    .expect("registry")
    .json()
    .await
    .expect("versions");
    assert!(versions.len() >= 2, "{versions:?}");
    daemon::stop(sy).await;
}

/// Writes a config with one postgres source `appdb` for `tables`, routed to `topic`.
/// The records of topic `items` once `rows` distinct keys are in (or after `secs`), and the
/// `id` of each key.
pub(crate) async fn read_items(
    bootstrap: &str,
    registry: &str,
    rows: i64,
    secs: u64,
) -> (
    Vec<crate::support::consume::Consumed>,
    std::collections::BTreeSet<i64>,
) {
    let records = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.to_string();
        move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(secs);
            loop {
                let records = read_topic(&bootstrap, "items", usize::MAX, Duration::from_secs(3));
                let mut keys: Vec<Vec<u8>> = records.iter().filter_map(|r| r.key.clone()).collect();
                keys.sort();
                keys.dedup();
                if keys.len() as i64 >= rows || std::time::Instant::now() > deadline {
                    return records;
                }
            }
        }
    })
    .await
    .expect("consumer");
    let dec = decoder(registry);
    let mut ids = std::collections::BTreeSet::new();
    for r in &records {
        let (_, k) = decode(&dec, r.key.as_ref().expect("key")).await;
        ids.insert(k["id"].as_i64().expect("id"));
    }
    (records, ids)
}

/// A daemon configuration on `port` streaming `public.items` of `pg_url` to topic `items`.
pub(crate) fn items_config(port: u16, bootstrap: &str, registry: &str, pg_url: &str) -> String {
    format!(
        r#"{head}
[sources.appdb]
type = "postgres"
url = "{pg_url}"
tables = ["public.items"]
[[routes]]
name = "items"
source = "appdb"
topic = "items"
"#,
        head = crate::support::config_head(&format!("127.0.0.1:{port}"), bootstrap, registry),
    )
}

fn cdc_config(
    dir: &std::path::Path,
    stack: (&str, &str),
    pg_url: &str,
    tables: &str,
    topic: &str,
) -> Config {
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.appdb]\ntype = \"postgres\"\nurl = \"{pg_url}\"\n\
             tables = [{tables}]\ntombstones = false\n[[routes]]\nname = \"r\"\nsource = \"appdb\"\ntopic = \"{topic}\"\n",
            stack.0, stack.1
        ),
    )
    .expect("config");
    Config::load(&path).expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toasted_values_are_filled_in_never_sent_as_null() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start(
        "toast",
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
             ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
             ALTER TABLE docs_full REPLICA IDENTITY FULL;",
    )
    .await;
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.docs\", \"public.docs_full\"",
        "{source}.{table}",
    );
    let (sy, _) = daemon::start(config).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    let body = "é".repeat(20_000);
    for table in ["docs", "docs_full"] {
        client
            .batch_execute(&format!(
                "INSERT INTO {table} VALUES (1, 'draft', '{body}')"
            ))
            .await
            .expect("insert");
        client
            .batch_execute(&format!("UPDATE {table} SET title = 'final' WHERE id = 1"))
            .await
            .expect("update");
    }
    let records = tokio::task::spawn_blocking({
        let bootstrap = broker.bootstrap();
        move || {
            let mut all = read_topic(&bootstrap, "appdb.docs", 3, Duration::from_secs(10));
            all.extend(read_topic(
                &bootstrap,
                "appdb.docs_full",
                3,
                Duration::from_secs(10),
            ));
            all
        }
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 4, "an insert and an update per table");
    let dec = decoder(&registry.url());
    for r in &records {
        assert!(
            !r.headers
                .iter()
                .any(|(h, _)| h == "switchyard.unchanged_toast"),
            "every unchanged value was filled in"
        );
        let (_, v) = decode(&dec, &r.value).await;
        assert_eq!(
            v["after"]["body"].as_str().map(str::len),
            Some(body.len()),
            "{} {}",
            v["source"]["table"],
            v["op"]
        );
    }
    daemon::stop(sy).await;
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
async fn on_an_idle_database_heartbeats_keep_the_slot_from_holding_wal() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let pg = PgCluster::start();
    let db = pg.fresh_database("idle").await;
    let busy = pg.fresh_database("busy").await;
    let client = connect(&pg, &db).await;
    client
        .batch_execute("CREATE TABLE quiet (id int PRIMARY KEY)")
        .await
        .expect("schema");
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.quiet\"",
        "quiet",
    );
    let text = std::fs::read_to_string(&config.path)
        .expect("read")
        .replace(
            "tombstones = false",
            "tombstones = false\nheartbeat_interval = \"500ms\"",
        );
    std::fs::write(&config.path, text).expect("write");
    let (sy, _) = daemon::start(Config::load(&config.path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    // Another database writes ~16 MB of WAL; nothing in the captured database changes.
    let other = connect(&pg, &busy).await;
    other
        .batch_execute("CREATE TABLE noise AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 60000) g")
        .await
        .expect("noise");
    let written = slot_lag(&client).await.expect("lag");
    assert!(
        written > 5_000_000,
        "the noise wrote WAL the slot holds: {written} bytes"
    );
    wait_for_async(
        "heartbeats to move the slot past the noise",
        Duration::from_secs(30),
        || async {
            slot_lag(&client)
                .await
                .filter(|l| *l < 1_000_000)
                .map(|_| ())
        },
    )
    .await;
    daemon::stop(sy).await;
}

async fn slot_lag(client: &tokio_postgres::Client) -> Option<i64> {
    let row = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
             FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
            &[],
        )
        .await
        .ok()?;
    row.get::<_, Option<i64>>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_and_verify_full_work_for_both_connections() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let pg = PgCluster::start_with_tls();
    let db = pg.fresh_database("secure").await;
    let client = connect(&pg, &db).await;
    client
        .batch_execute(
            "CREATE ROLE tls_only LOGIN SUPERUSER REPLICATION;
             CREATE TABLE secrets (id int PRIMARY KEY, v text)",
        )
        .await
        .expect("schema");
    let base = format!("postgres://tls_only@127.0.0.1:{}/{db}", pg.port());
    // verify-full checks the certificate against a host name.
    let host_base = format!("postgres://tls_only@localhost:{}/{db}", pg.port());
    let ca = pg.ca_cert();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[kafka]
bootstrap_servers = "{}"
[schema_registry]
url = "{}"
[sources.req]
type = "postgres"
url = "{base}?sslmode=require"
tables = ["public.secrets"]
[sources.full]
type = "postgres"
url = "{host_base}?sslmode=verify-full&sslrootcert={}"
tables = ["public.secrets"]
[[routes]]
name = "req"
source = "req"
topic = "{{source}}.{{table}}"
[[routes]]
name = "full"
source = "full"
topic = "{{source}}.{{table}}"
"#,
            broker.bootstrap(),
            registry.url(),
            ca.display()
        ),
    )
    .expect("config");
    let (sy, _) = daemon::start(Config::load(&path).expect("config")).await;
    for slot in ["switchyard_req", "switchyard_full"] {
        wait_for_async("the slots to be created over TLS", Duration::from_secs(30), || async {
            lsn(&client, &format!("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}' AND active")).await
        })
        .await;
    }
    client
        .batch_execute("INSERT INTO secrets VALUES (1, 'over TLS')")
        .await
        .expect("insert");
    for topic in ["req.secrets", "full.secrets"] {
        let records = tokio::task::spawn_blocking({
            let bootstrap = broker.bootstrap();
            let topic = topic.to_string();
            move || read_topic(&bootstrap, &topic, 1, Duration::from_secs(20))
        })
        .await
        .expect("consumer");
        assert_eq!(records.len(), 1, "{topic}");
    }
    let plain = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.usename = 'tls_only' AND NOT s.ssl",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get::<_, i64>(0);
    assert_eq!(plain, 0, "every connection of the source is encrypted");
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_sees_the_slot_and_can_reset_it_only_when_it_is_not_in_use() {
    let Stack {
        dir,
        broker,
        registry,
    } = Stack::start();
    let Db { pg, db, client } = Db::start("slots", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let config = cdc_config(
        dir.path(),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.t\"",
        "t",
    );
    let path = config.path.clone();
    let slot = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("slot")
            .args(args)
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run switchyard slot")
    };
    let (sy, _) = daemon::start(config).await;
    wait_for_async("the slot to be active", Duration::from_secs(30), || async {
        lsn(&client, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb' AND active").await
    })
    .await;
    let status = slot(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("switchyard_appdb") && text.contains("true"),
        "{text}"
    );
    let busy = slot(&["reset", "--source", "appdb"]);
    assert_eq!(
        busy.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    daemon::stop(sy).await;
    wait_for_async(
        "the slot to be released",
        Duration::from_secs(30),
        || async {
            let row = client
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
                    &[],
                )
                .await
                .ok()?;
            (!row.get::<_, bool>(0)).then_some(())
        },
    )
    .await;
    let unknown = slot(&["reset", "--source", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    let reset = slot(&["reset", "--source", "appdb"]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the slot is gone");
}

/// Each inserted row's id and the end LSN of its commit, from a `test_decoding` slot.
async fn commit_ends(client: &tokio_postgres::Client, slot: &str) -> Vec<(i64, u64)> {
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL)",
            &[&slot],
        )
        .await
        .expect("peek");
    let mut out = Vec::new();
    let mut open = Vec::new();
    for r in rows {
        let (at, data): (String, String) = (r.get(0), r.get(1));
        if let Some(rest) = data.split("id[bigint]:").nth(1) {
            let id: i64 = rest
                .split(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("id");
            open.push(id);
        } else if data.starts_with("COMMIT") {
            let end = at
                .parse::<switchyard::source::postgres::lsn::Lsn>()
                .expect("lsn")
                .0;
            out.extend(open.drain(..).map(|id| (id, end)));
        }
    }
    out
}

/// The confirmed position of switchyard's slot `switchyard_appdb`.
pub(crate) async fn confirmed(client: &tokio_postgres::Client) -> Option<u64> {
    lsn(
        client,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'switchyard_appdb'",
    )
    .await
}

/// Waits until switchyard's slot has confirmed `end` (everything before it is durable).
async fn wait_for_confirmed(client: &tokio_postgres::Client, end: u64, what: &str, secs: u64) {
    wait_for_async(what, Duration::from_secs(secs), || async {
        (confirmed(client).await? >= end).then_some(())
    })
    .await;
}

/// Waits until switchyard has created `slot`.
pub(crate) async fn wait_for_slot(client: &tokio_postgres::Client, slot: &str) {
    let sql = format!(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
    );
    wait_for_async(
        &format!("slot {slot} to be created"),
        Duration::from_secs(30),
        || lsn(client, &sql),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_decoding_messages_reach_their_route_and_heartbeats_do_not() {
    let stack = Stack::start();
    let Db { pg, db, client } = Db::start("msgs", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.appdb]\ntype = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.t\"]\nheartbeat_interval = \"1s\"\n\
             [[routes]]\nname = \"rows\"\nsource = \"appdb\"\ntopic = \"rows\"\n\
             [[routes]]\nname = \"outbox\"\nsource = \"appdb\"\nops = [\"message\"]\n",
            stack.broker.bootstrap(),
            stack.registry.url(),
            pg.url(&db)
        ),
    )
    .expect("config");
    let (sy, _) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO t VALUES (1);
             SELECT pg_logical_emit_message(true, 'outbox', 'in a transaction');
             COMMIT;
             SELECT pg_logical_emit_message(false, 'audit', '\\x00ff'::bytea);",
        )
        .await
        .expect("messages");
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        // Heartbeats run every second meanwhile: none may arrive.
        move || {
            read_topic(
                &bootstrap,
                "appdb.message",
                usize::MAX,
                Duration::from_secs(6),
            )
        }
    })
    .await
    .expect("consumer");
    let dec = decoder(&stack.registry.url());
    let mut seen = Vec::new();
    for r in &records {
        let (_, v) = decode(&dec, &r.value).await;
        let (_, k) = decode(&dec, r.key.as_ref().expect("keyed by prefix")).await;
        assert_eq!(v["op"], "m");
        assert_eq!(k["prefix"], v["message"]["prefix"]);
        assert_eq!(v["source"]["table"], "");
        seen.push((
            v["source"]["lsn"].as_i64().expect("lsn"),
            v["message"]["prefix"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["message"]["content"].clone(),
            v["source"]["txId"].is_null(),
        ));
    }
    // Prefixes are keys, so partitions differ: order by LSN.
    seen.sort_by_key(|s| s.0);
    let seen: Vec<_> = seen.into_iter().map(|(_, p, c, t)| (p, c, t)).collect();
    assert_eq!(
        seen,
        vec![
            (
                "outbox".to_string(),
                serde_json::json!(hex::encode("in a transaction")),
                false
            ),
            ("audit".to_string(), serde_json::json!("00ff"), true),
        ],
        "the two messages, in order, and no heartbeat"
    );
    let rows = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "rows", 1, Duration::from_secs(10))
    })
    .await
    .expect("consumer");
    let (_, v) = decode(&dec, &rows[0].value).await;
    assert_eq!(v["op"], "c", "the row route takes rows, not messages");
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

/// The state and error `/readyz` reports for `source`.
pub(crate) async fn source_state(url: &str, source: &str) -> Option<(String, String)> {
    let body: serde_json::Value = reqwest::get(format!("{url}/readyz"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let s = &body["sources"][source];
    Some((
        s["state"].as_str()?.to_string(),
        s["error"].as_str().unwrap_or_default().to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_errors_say_what_to_fix_and_the_source_recovers_once_fixed() {
    let stack = Stack::start();
    let pg = PgCluster::start();
    let db = pg.fresh_database("preflight").await;
    let admin = connect(&pg, &db).await;
    admin
        .batch_execute(
            "CREATE ROLE cdc LOGIN;
             CREATE TABLE t (id int PRIMARY KEY);
             CREATE TABLE nokey (v text);
             CREATE PUBLICATION pub FOR TABLE t, nokey;",
        )
        .await
        .expect("setup");
    admin
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('switchyard_preflight', 'test_decoding')",
        )
        .await
        .expect("a slot of another plugin");
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.preflight]\ntype = \"postgres\"\n\
             url = \"postgres://cdc@127.0.0.1:{}/{db}\"\npublication = \"pub\"\n\
             tables = [\"public.t\", \"public.nokey\"]\n[[routes]]\nname = \"r\"\nsource = \"preflight\"\n",
            stack.broker.bootstrap(),
            stack.registry.url(),
            pg.port()
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;

    // Each problem in turn: the error names the fix; once it is applied the source goes on.
    let steps: [(&str, &str); 4] = [
        ("ALTER ROLE cdc REPLICATION", "ALTER ROLE cdc REPLICATION"),
        (
            "GRANT SELECT ON public.",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc",
        ),
        (
            "ALTER TABLE public.nokey REPLICA IDENTITY FULL",
            "ALTER TABLE nokey REPLICA IDENTITY FULL",
        ),
        (
            "uses plugin Some(\"test_decoding\"), not pgoutput",
            "SELECT pg_drop_replication_slot('switchyard_preflight')",
        ),
    ];
    for (says, fix) in steps {
        let (state, error) = wait_for_async(
            &format!("the source to fail with `{says}`"),
            Duration::from_secs(90),
            || async {
                let (state, error) = source_state(&url, "preflight").await?;
                error.contains(says).then_some((state, error))
            },
        )
        .await;
        assert_eq!(state, "failing", "{error}");
        admin.batch_execute(fix).await.expect("fix");
    }
    wait_for_async("the source to stream", Duration::from_secs(90), || async {
        let (state, _) = source_state(&url, "preflight").await?;
        (state == "streaming").then_some(())
    })
    .await;
    let metrics = daemon::metrics(&url).await;
    assert!(
        metrics.contains("switchyard_source_up{source=\"preflight\"} 1"),
        "{metrics}"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_decodes_to_the_right_value_from_snapshot_and_stream_alike() {
    let stack = Stack::start();
    let pg = PgCluster::start();
    let db = pg.fresh_database("types").await;
    let client = connect(&pg, &db).await;
    let values = "-32768, 2147483647, -9223372036854775808, 1.5, -2.25e-300, true,
        'naïve café ✓ 日本', 'x', 'ab', -99999999.9999, 12345678901234567890.123456789,
        '2024-02-29', '23:59:59.999999', '2024-11-05 08:49:37.123456',
        '2024-11-05 08:49:37.5+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}', '\\x00ff10', '{1,NULL,3}',
        '{\"a b\",\"c,d\",NULL}', 'happy', '1 day 02:03:04',
        (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g)";
    client
        .batch_execute(&format!(
            "CREATE TYPE mood AS ENUM ('sad', 'happy');
             CREATE TABLE every_type (
                id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real,
                f8 double precision, b boolean, t text, vc varchar(20), ch char(3),
                n numeric(12,4), nu numeric, d date, tm time, ts timestamp, tz timestamptz,
                u uuid, j json, jb jsonb, by bytea, ai int[], at text[], e mood, iv interval,
                big text);
             ALTER TABLE every_type ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO every_type VALUES (1, {values});"
        ))
        .await
        .expect("schema and a row for the snapshot");
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
             [schema_registry]\nurl = \"{}\"\n[sources.appdb]\ntype = \"postgres\"\nurl = \"{}\"\n\
             tables = [\"public.every_type\"]\nsnapshot = \"initial\"\n\
             [[routes]]\nname = \"r\"\nsource = \"appdb\"\ntopic = \"types\"\n",
            stack.broker.bootstrap(),
            stack.registry.url(),
            pg.url(&db)
        ),
    )
    .expect("config");
    let (sy, url) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_async(
        "the snapshot to finish",
        Duration::from_secs(60),
        || async {
            let (state, _) = source_state(&url, "appdb").await?;
            (state == "streaming").then_some(())
        },
    )
    .await;
    for sql in [
        format!("INSERT INTO every_type VALUES (2, {values})"),
        "INSERT INTO every_type (id) VALUES (3)".to_string(),
        // `big` is TOASTed and unchanged: it must still arrive in full.
        "UPDATE every_type SET i4 = 0 WHERE id = 2".to_string(),
        "DELETE FROM every_type WHERE id = 3".to_string(),
    ] {
        client.batch_execute(&sql).await.expect("change");
    }
    // Truncate only once the update is through: the TOAST fill reads row 2 by key.
    tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "types", 6, Duration::from_secs(20))
    })
    .await
    .expect("consumer");
    client
        .batch_execute("TRUNCATE every_type")
        .await
        .expect("truncate");
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "types", 7, Duration::from_secs(20))
    })
    .await
    .expect("consumer");
    let dec = decoder(&stack.registry.url());
    // Partitions interleave: order by event id (commit LSN, then ordinal).
    let mut records = records;
    records.sort_by_key(|r| {
        let id = r
            .headers
            .iter()
            .find(|(h, _)| h == "switchyard.event_id")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let lsn = id
            .split(':')
            .next()
            .and_then(|l| l.parse::<switchyard::source::postgres::lsn::Lsn>().ok())
            .map_or(0, |l| l.0);
        let ordinal: u64 = id
            .rsplit(':')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        (lsn, ordinal)
    });
    let mut seen = Vec::new();
    for r in &records {
        let key = match &r.key {
            Some(k) => decode(&dec, k).await.1,
            None => serde_json::Value::Null,
        };
        let value = if r.value.is_empty() {
            serde_json::Value::Null
        } else {
            decode(&dec, &r.value).await.1
        };
        seen.push((key, value));
    }
    let ops: Vec<&str> = seen
        .iter()
        .map(|(_, v)| v["op"].as_str().unwrap_or("tombstone"))
        .collect();
    assert_eq!(ops, ["r", "c", "c", "u", "d", "tombstone", "t"]);
    let big: String = client
        .query_one(
            "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g",
            &[],
        )
        .await
        .expect("big")
        .get(0);
    let expected = |id: i64, i4: i64| {
        serde_json::json!({
            "id": id, "i2": -32768, "i4": i4, "i8": i64::MIN, "f4": 1.5, "f8": -2.25e-300,
            "b": true, "t": "naïve café ✓ 日本", "vc": "x", "ch": "ab ",
            "n": "-99999999.9999", "nu": "12345678901234567890.123456789",
            "d": 19782, "tm": 86_399_999_999i64, "ts": 1_730_796_577_123_456i64,
            "tz": "2024-11-05T06:49:37.500000Z", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "j": "{\"a\": [1, 2]}", "jb": "{\"b\": {\"c\": null}}", "by": "00ff10",
            "ai": [1, null, 3], "at": ["a b", "c,d", null], "e": "happy",
            "iv": "1 day 02:03:04", "big": big,
        })
    };
    assert_eq!(
        seen[0].1["after"],
        expected(1, 2147483647),
        "the snapshot read"
    );
    assert_eq!(
        seen[1].1["after"],
        expected(2, 2147483647),
        "the streamed insert"
    );
    let nulls = &seen[2].1["after"];
    assert_eq!(nulls["id"], 3);
    for (name, v) in nulls.as_object().expect("row") {
        assert!(name == "id" || v.is_null(), "{name} is NULL: {v}");
    }
    assert_eq!(
        seen[3].1["after"],
        expected(2, 0),
        "the update carries the unchanged TOASTed column in full"
    );
    assert_eq!(seen[4].1["before"]["id"], 3);
    assert_eq!(
        seen[5].0,
        serde_json::json!({"id": 3}),
        "the tombstone's key"
    );
    assert_eq!(seen[6].0, serde_json::Value::Null, "a truncate has no key");
    for (k, (key, _)) in seen.iter().enumerate().take(4) {
        assert!(key["id"].is_i64(), "record {k} is keyed by id: {key}");
    }
    daemon::stop(sy).await;
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
    let dlq = switchyard::dlq::DlqStore::open(&store).await.expect("dlq");
    let letters = dlq
        .list(&switchyard::dlq::Selector::default())
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
