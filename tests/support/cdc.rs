//! CDC test helpers: a private cluster with the test's tables, slot positions, reading a
//! change topic back, and the daemon configurations the CDC tests share.

use super::consume::{decode, decoder, read_topic};
use super::postgres::PgCluster;
use super::wait_for_async;
use std::time::Duration;
use switchyard::config::Config;

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

pub(crate) fn cdc_config(
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

/// Each inserted row's id and the end LSN of its commit, from a `test_decoding` slot.
pub(crate) async fn commit_ends(client: &tokio_postgres::Client, slot: &str) -> Vec<(i64, u64)> {
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
pub(crate) async fn wait_for_confirmed(
    client: &tokio_postgres::Client,
    end: u64,
    what: &str,
    secs: u64,
) {
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
