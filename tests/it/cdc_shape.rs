//! The shape of CDC records as a consumer reads them back: the key is the primary key whatever
//! the replica identity, nullability is the column's, and unchanged TOASTed values that cannot
//! be filled arrive as the source's placeholder, never as a dead letter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value as Json, json};
use switchyard::config::Config;

use crate::support::cdc::{Db, confirmed, lsn, wait_for_slot};
use crate::support::consume::{Consumed, decode, decoder, read_topic};
use crate::support::{Stack, daemon, wait_for_async};

/// Writes a configuration streaming `tables` of `pg_url` (source `appdb`, one route to topic
/// `{table}`, tombstones on) with `extra` lines in the source's table; returns its path.
fn write_config(dir: &Path, stack: &Stack, pg_url: &str, tables: &str, extra: &str) -> PathBuf {
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}
[sources.appdb]
type = "postgres"
url = "{pg_url}"
tables = [{tables}]
heartbeat_interval = "1s"
{extra}
[[routes]]
name = "rows"
source = "appdb"
topic = "{{table}}"
"#,
            head = crate::support::config_head(
                "127.0.0.1:0",
                &stack.broker.bootstrap(),
                &stack.registry.url()
            ),
        ),
    )
    .expect("config");
    path
}

/// Reads `want` records of `topic` (fewer if they do not come within 30 s), in offset order.
async fn read(stack: &Stack, topic: &str, want: usize) -> Vec<Consumed> {
    let bootstrap = stack.broker.bootstrap();
    let topic = topic.to_string();
    let mut records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &topic, want, Duration::from_secs(30))
    })
    .await
    .expect("consumer");
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// The latest schema registered under `subject`, parsed.
async fn latest_schema(registry: &str, subject: &str) -> Json {
    let body: Json = reqwest::get(format!("{registry}/subjects/{subject}/versions/latest"))
        .await
        .expect("registry")
        .json()
        .await
        .expect("json");
    serde_json::from_str(body["schema"].as_str().expect("a schema")).expect("schema json")
}

/// How many versions `subject` has.
async fn versions(registry: &str, subject: &str) -> usize {
    let body: Json = reqwest::get(format!("{registry}/subjects/{subject}/versions"))
        .await
        .expect("registry")
        .json()
        .await
        .expect("json");
    body.as_array().map_or(0, Vec::len)
}

/// The `(name, type)` of each field of a record schema; named types by their short name, so
/// two tables' schemas compare by shape, not by namespace.
fn fields(record: &Json) -> Vec<(String, Json)> {
    record["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["type"].clone(),
            )
        })
        .collect()
}

/// Waits until the slot is confirmed at or past `end`: every change before it is durable.
async fn wait_until_confirmed(client: &tokio_postgres::Client, end: u64) {
    wait_for_async(
        "the slot to be confirmed past the last change",
        Duration::from_secs(30),
        || async { (confirmed(client).await? >= end).then_some(()) },
    )
    .await;
}

/// The dead letters of the configuration at `path`.
async fn dead_letters(path: &Path) -> Vec<switchyard::store::DeadLetter> {
    let config = Config::load(path).expect("config");
    let dlq = switchyard::store::Store::open(&config.dlq.store)
        .await
        .expect("dlq");
    dlq.dead_letters()
        .list(&switchyard::store::Selector::default())
        .await
        .expect("list")
}

fn header<'r>(r: &'r Consumed, name: &str) -> Option<&'r [u8]> {
    r.headers
        .iter()
        .find(|(h, _)| h == name)
        .map(|(_, v)| v.as_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_keeps_the_primary_key_and_the_columns_nullability() {
    let stack = Stack::start();
    let ddl = |t: &str| {
        format!(
            "CREATE TABLE {t} (id int, region text, note text, qty int NOT NULL,
                               PRIMARY KEY (id, region));"
        )
    };
    let Db { pg, db, client } = Db::start(
        "shape",
        &format!(
            "{}{}ALTER TABLE ident_full REPLICA IDENTITY FULL;",
            ddl("ident_default"),
            ddl("ident_full")
        ),
    )
    .await;
    let path = write_config(
        stack.dir.path(),
        &stack,
        &pg.url(&db),
        "\"public.ident_default\", \"public.ident_full\"",
        "",
    );
    let (sy, _) = daemon::start(Config::load(&path).expect("config")).await;
    wait_for_slot(&client, "switchyard_appdb").await;
    for table in ["ident_default", "ident_full"] {
        for sql in [
            format!("INSERT INTO {table} VALUES (1, 'eu', 'first', 1)"),
            // A nullable column set to null, a NOT NULL one changed.
            format!("UPDATE {table} SET note = NULL, qty = 2 WHERE id = 1"),
            format!("UPDATE {table} SET note = 'again' WHERE id = 1"),
            format!("DELETE FROM {table} WHERE id = 1"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    let end = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    let registry = stack.registry.url();
    let dec = decoder(&registry);
    let mut shapes = Vec::new();
    for table in ["ident_default", "ident_full"] {
        let records = read(&stack, table, 5).await;
        assert_eq!(
            records.len(),
            5,
            "{table}: insert, two updates, delete and tombstone"
        );
        let first_key = records[0].key.clone().expect("keyed");
        let mut ops = Vec::new();
        for r in &records {
            assert_eq!(
                r.key.as_deref(),
                Some(first_key.as_slice()),
                "{table}: every record of the row has the same key bytes"
            );
            assert_eq!(r.partition, records[0].partition, "{table}: one partition");
            let (_, key) = decode(&dec, r.key.as_deref().expect("keyed")).await;
            assert_eq!(
                key,
                json!({"id": 1, "region": "eu"}),
                "{table}: the key is the primary key"
            );
            if r.value.is_empty() {
                ops.push("tombstone".to_string());
                continue;
            }
            let (_, v) = decode(&dec, &r.value).await;
            ops.push(v["op"].as_str().expect("op").to_string());
            if ops.len() == 2 {
                assert_eq!(
                    (&v["after"]["note"], &v["after"]["qty"]),
                    (&Json::Null, &json!(2)),
                    "{table}: a null arrives as null"
                );
            }
        }
        assert_eq!(ops, ["c", "u", "u", "d", "tombstone"], "{table}");
        assert_eq!(
            versions(&registry, &format!("{table}-key")).await,
            1,
            "{table}: one key schema"
        );
        let key_schema = latest_schema(&registry, &format!("{table}-key")).await;
        let value_schema = latest_schema(&registry, &format!("{table}-value")).await;
        let before = value_schema["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["name"] == "before")
            .expect("before")["type"][1]
            .clone();
        shapes.push((fields(&key_schema), fields(&before)));
    }
    assert_eq!(
        shapes[0], shapes[1],
        "the same key and value shapes under DEFAULT and FULL"
    );
    let (key, value) = &shapes[0];
    assert_eq!(
        key,
        &vec![
            ("id".to_string(), json!("int")),
            ("region".to_string(), json!("string"))
        ],
        "the key holds the primary key only"
    );
    let ty = |name: &str| {
        value
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .expect(name)
    };
    assert_eq!(
        ty("note"),
        json!(["null", "string"]),
        "nullable stays nullable"
    );
    assert_eq!(ty("qty"), json!("int"), "NOT NULL is required");
    assert_eq!(ty("id"), json!("int"));
    wait_until_confirmed(&client, end).await;
    let letters = dead_letters(&path).await;
    assert!(letters.is_empty(), "{letters:?}");
    daemon::stop(sy).await;

    // `check --registry` builds the schemas from the catalog alone: the same ones the running
    // source registered.
    let (code, out) = crate::support::run_cli(&path, &["check", "--registry"]);
    for table in ["ident_default", "ident_full"] {
        for part in ["key", "value"] {
            assert!(
                out.contains(&format!(
                    "{table}-{part}: compatible, already the latest version"
                )),
                "{out}"
            );
        }
    }
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_that_cannot_be_filled_arrives_as_the_placeholder_never_in_the_dlq() {
    let stack = Stack::start();
    let ddl = |t: &str| {
        format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, title text, body text NOT NULL, blob bytea);"
        )
    };
    let Db { pg, db, client } = Db::start(
        "toastgone",
        &format!(
            "{}{}ALTER TABLE docs_full REPLICA IDENTITY FULL;
             CREATE PUBLICATION switchyard_appdb FOR TABLE docs, docs_full;",
            ddl("docs"),
            ddl("docs_full")
        ),
    )
    .await;
    // The slot (switchyard's default name) exists before the changes, so it holds them.
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('switchyard_appdb', 'pgoutput')")
        .await
        .expect("slot");
    // Everything is written before switchyard starts: when it reads the update, the row is
    // already gone, so the unchanged values cannot be read back (REPLICA IDENTITY DEFAULT).
    // md5 text and random bytes do not compress: both values are stored out of line.
    for table in ["docs", "docs_full"] {
        for sql in [
            format!(
                "INSERT INTO {table}
                 SELECT 1, 'draft',
                        (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)),
                        (SELECT decode(string_agg(md5(random()::text), ''), 'hex')
                         FROM generate_series(1, 300))"
            ),
            format!("UPDATE {table} SET title = 'final' WHERE id = 1"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // Before the delete, which deletes the TOAST chunks too.
        let chunks: i64 = client
            .query_one(
                &format!(
                    "SELECT count(DISTINCT chunk_id) FROM pg_toast.pg_toast_{}",
                    client
                        .query_one(&format!("SELECT '{table}'::regclass::oid::int8"), &[])
                        .await
                        .expect("oid")
                        .get::<_, i64>(0)
                ),
                &[],
            )
            .await
            .expect("toast table")
            .get(0);
        assert!(
            chunks >= 2,
            "{table}: body and blob are stored out of line ({chunks} TOAST values)"
        );
        client
            .batch_execute(&format!("DELETE FROM {table} WHERE id = 1"))
            .await
            .expect("delete");
    }
    let end = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    // Preflight names the table whose unchanged values can go missing, with the fix.
    let risks = switchyard::source::postgres::catalog::toast_risks(&client, "switchyard_appdb")
        .await
        .expect("toast risks");
    assert_eq!(
        risks,
        [switchyard::source::postgres::catalog::ToastRisk {
            table: "public.docs".into(),
            columns: vec!["title".into(), "body".into(), "blob".into()],
            fix: "ALTER TABLE public.docs REPLICA IDENTITY FULL".into(),
        }]
    );

    let path = write_config(
        stack.dir.path(),
        &stack,
        &pg.url(&db),
        "\"public.docs\", \"public.docs_full\"",
        "unavailable_value_placeholder = \"~unavailable~\"",
    );
    let (sy, _) = daemon::start(Config::load(&path).expect("config")).await;
    let dec = decoder(&stack.registry.url());
    for table in ["docs", "docs_full"] {
        let records = read(&stack, table, 4).await;
        assert_eq!(
            records.len(),
            4,
            "{table}: insert, update, delete and tombstone, none dead-lettered"
        );
        let mut values = Vec::new();
        for r in &records[..3] {
            values.push((
                decode(&dec, &r.value).await.1,
                header(r, "switchyard.unchanged_toast"),
            ));
        }
        assert!(
            records[3].value.is_empty(),
            "{table}: the tombstone is last"
        );
        let ops: Vec<&Json> = values.iter().map(|(v, _)| &v["op"]).collect();
        assert_eq!(ops, ["c", "u", "d"], "{table}: in commit order");
        let (insert, update) = (&values[0].0, &values[1]);
        let body = insert["after"]["body"].as_str().expect("body").to_string();
        let blob = insert["after"]["blob"].as_str().expect("blob").to_string();
        assert!(
            body.len() >= 12_800 && blob.len() >= 9_600,
            "{table}: in full"
        );
        assert_eq!(update.0["after"]["title"], "final", "{table}");
        if table == "docs" {
            assert_eq!(
                update.1,
                Some(&b"body,blob"[..]),
                "the header names the columns that got the placeholder"
            );
            assert_eq!(update.0["after"]["body"], "~unavailable~", "NOT NULL text");
            assert_eq!(
                update.0["after"]["blob"],
                hex::encode("~unavailable~"),
                "bytea gets the placeholder's bytes"
            );
        } else {
            assert_eq!(update.1, None, "REPLICA IDENTITY FULL fills every column");
            assert_eq!(update.0["after"]["body"].as_str(), Some(body.as_str()));
            assert_eq!(update.0["after"]["blob"].as_str(), Some(blob.as_str()));
            assert_eq!(update.0["before"]["body"].as_str(), Some(body.as_str()));
            assert_eq!(update.0["before"]["title"], "draft");
        }
    }
    wait_until_confirmed(&client, end).await;
    let letters = dead_letters(&path).await;
    assert!(letters.is_empty(), "{letters:?}");
    daemon::stop(sy).await;
}
