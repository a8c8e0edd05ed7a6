//! Per-key order of change events, read back from Kafka by an independent consumer: for one key,
//! Kafka holds the changes in commit order (one partition per key), deletes are followed by
//! their tombstone, snapshot reads come before the changes after them, and neither a broker
//! outage nor a kill -9 leaves an older version alone after a newer one or a hole.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard::config::Config;

use crate::support::broker::Broker;
use crate::support::cdc::{Db, lsn, wait_for_slot};
use crate::support::consume::{Consumed, decode, decoder, read_topic};
use crate::support::registry::Registry;
use crate::support::{Stack, daemon, scratch, wait_for_async};

/// A configuration streaming `tables` of `pg_url` to topic `{table}`, with `kafka` lines added
/// to the `[kafka]` section and source `name` with lines `source`; written to
/// `dir/routes.toml`. Each test names its source apart: metrics are per process.
pub(crate) fn write_config(
    dir: &Path,
    listen: &str,
    (bootstrap, registry): (&str, &str),
    pg_url: &str,
    tables: &str,
    kafka: &str,
    (name, source): (&str, &str),
) -> PathBuf {
    let path = dir.join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "{listen}"
[kafka]
bootstrap_servers = "{bootstrap}"
partitions = 3
{kafka}
[schema_registry]
url = "{registry}"
[sources.{name}]
type = "postgres"
url = "{pg_url}"
tables = [{tables}]
snapshot = "initial"
{source}
[[routes]]
name = "r"
source = "{name}"
topic = "{{table}}"
"#
        ),
    )
    .expect("config");
    path
}

pub(crate) fn load(path: &Path) -> Config {
    Config::load(path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// A small deterministic generator (tests print their seed).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// Seeded from the clock; the seed is printed, to replay a failure.
    pub(crate) fn seeded() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(7);
        eprintln!("seed {seed}");
        Rng(seed | 1)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One change record of a key as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// `r`, `c`, `u`, `d`, or `tombstone` (a record without value).
    pub(crate) op: String,
    /// `after.v` (none for deletes and tombstones).
    pub(crate) v: Option<i64>,
    /// `source.snapshot`: `true`, `incremental` or `false` (`None` for tombstones).
    pub(crate) snapshot: Option<String>,
}

/// Reads `topic` until `want` records arrived (or `secs` passed), and groups them by the
/// key's `id`, each key's records in offset order.
pub(crate) async fn changes_by_key(
    bootstrap: &str,
    registry: &str,
    topic: &str,
    want: usize,
    secs: u64,
) -> BTreeMap<i64, Vec<Change>> {
    let records: Vec<Consumed> = tokio::task::spawn_blocking({
        let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
        move || read_topic(&bootstrap, &topic, want, Duration::from_secs(secs))
    })
    .await
    .expect("consumer");
    let dec = decoder(registry);
    let mut by_key: BTreeMap<i64, Vec<Change>> = BTreeMap::new();
    for r in &records {
        let (_, k) = decode(&dec, r.key.as_ref().expect("every change has a key")).await;
        let id = k["id"].as_i64().expect("key id");
        let (op, v, snapshot) = if r.value.is_empty() {
            ("tombstone".to_string(), None, None)
        } else {
            let (_, value) = decode(&dec, &r.value).await;
            (
                value["op"].as_str().expect("op").to_string(),
                value["after"]["v"].as_i64(),
                value["source"]["snapshot"].as_str().map(str::to_string),
            )
        };
        by_key.entry(id).or_default().push(Change {
            partition: r.partition,
            offset: r.offset,
            op,
            v,
            snapshot,
        });
    }
    for changes in by_key.values_mut() {
        changes.sort_by_key(|c| (c.partition, c.offset));
    }
    by_key
}

/// Reads topic `counters` until each key's last record carries the row's final value (or
/// `secs` passed).
pub(crate) async fn read_until_final(
    bootstrap: &str,
    registry: &str,
    finals: &BTreeMap<i64, i64>,
    secs: u64,
) -> BTreeMap<i64, Vec<Change>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let by_key = changes_by_key(bootstrap, registry, "counters", usize::MAX, 3).await;
        let done = finals.iter().all(|(id, v)| {
            by_key
                .get(id)
                .and_then(|cs| cs.last())
                .is_some_and(|c| c.v == Some(*v))
        });
        if done || Instant::now() > deadline {
            return by_key;
        }
    }
}

/// Every record of a key is in one partition; returns its values in offset order.
fn values_in_one_partition(id: i64, changes: &[Change]) -> Vec<i64> {
    let partitions: std::collections::BTreeSet<i32> = changes.iter().map(|c| c.partition).collect();
    assert_eq!(
        partitions.len(),
        1,
        "key {id} is spread over partitions {partitions:?}: its order is lost"
    );
    changes
        .iter()
        .map(|c| {
            c.v.unwrap_or_else(|| panic!("key {id}: a change without after.v: {c:?}"))
        })
        .collect()
}

/// The rows of `counters` now: id → v.
pub(crate) async fn counters(client: &tokio_postgres::Client) -> BTreeMap<i64, i64> {
    client
        .query("SELECT id::bigint, v FROM counters", &[])
        .await
        .expect("counters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A private cluster whose fresh database `name` has `counters (id int PRIMARY KEY, v bigint
/// NOT NULL)` with rows 1..=`rows` at `v` 0.
pub(crate) async fn counters_db(name: &str, rows: i64) -> Db {
    Db::start(
        name,
        &format!(
            "CREATE TABLE counters (id int PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO counters SELECT g, 0 FROM generate_series(1, {rows}) g;"
        ),
    )
    .await
}

/// Starts switchyard in-process on `stack`, streaming table `counters` of `pg_url` as source
/// `name` (with `source` lines added), and waits until its slot exists.
async fn stream_counters(
    stack: &Stack,
    pg_url: &str,
    client: &tokio_postgres::Client,
    name: &str,
    source: &str,
) -> switchyard::daemon::Daemon {
    let path = write_config(
        stack.dir.path(),
        "127.0.0.1:0",
        (&stack.broker.bootstrap(), &stack.registry.url()),
        pg_url,
        "\"public.counters\"",
        "",
        (name, source),
    );
    let (sy, _) = daemon::start(load(&path)).await;
    wait_for_slot(client, &format!("switchyard_{name}")).await;
    sy
}

/// `n` transactions of `per` updates `v = v + 1` of keys drawn from 1..=keys (a key often
/// several times in one transaction).
pub(crate) async fn bursts(
    client: &tokio_postgres::Client,
    rng: &mut Rng,
    keys: u64,
    n: usize,
    per: usize,
) {
    for _ in 0..n {
        // Keys in ascending order within a transaction: two writers at once (a test's own
        // bursts beside a background writer) never deadlock.
        let mut ids: Vec<u64> = (0..per).map(|_| 1 + rng.below(keys)).collect();
        ids.sort_unstable();
        let mut sql = String::from("BEGIN;");
        for id in ids {
            sql.push_str(&format!("UPDATE counters SET v = v + 1 WHERE id = {id};"));
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("burst");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_the_same_keys_reach_kafka_in_commit_order() {
    let stack = Stack::start();
    let Db { pg, db, client } = counters_db("order", 20).await;
    let sy = stream_counters(&stack, &pg.url(&db), &client, "order", "").await;
    let mut rng = Rng::seeded();
    // 400 transactions of 50 updates of 20 keys, then 1,000 transactions of one update.
    bursts(&client, &mut rng, 20, 400, 50).await;
    bursts(&client, &mut rng, 20, 1000, 1).await;
    let finals = counters(&client).await;
    let want = 20 + 400 * 50 + 1000;
    let by_key = changes_by_key(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        "counters",
        want,
        180,
    )
    .await;
    assert_eq!(by_key.len(), 20, "every key has records");
    for (id, changes) in &by_key {
        let values = values_in_one_partition(*id, changes);
        let fin = finals[id];
        let out_of_order = values.windows(2).filter(|w| w[1] <= w[0]).count();
        assert_eq!(
            out_of_order,
            0,
            "key {id}: {out_of_order} records carry a value not above the one before it: {:?}",
            &values[..values.len().min(40)]
        );
        let expected: Vec<i64> = (0..=fin).collect();
        assert_eq!(
            values, expected,
            "key {id}: every version, once, in commit order (snapshot read first)"
        );
        assert_eq!(
            changes[0].op, "r",
            "key {id}: the snapshot read comes first"
        );
    }
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_followed_by_their_tombstone_and_snapshot_reads_precede_later_changes() {
    let stack = Stack::start();
    let Db { pg, db, client } = counters_db("tombstones", 2000).await;
    // Small snapshot chunks: the changes below are written while the snapshot still copies.
    let sy = stream_counters(
        &stack,
        &pg.url(&db),
        &client,
        "tomb",
        "snapshot_chunk_rows = 100",
    )
    .await;
    let mut rng = Rng::seeded();
    // What each key must show, in order: its snapshot read, then every change of it.
    let mut expected: HashMap<i64, Vec<(String, Option<i64>)>> = (1..=2000)
        .map(|id| (id, vec![("r".to_string(), Some(0))]))
        .collect();
    let mut version: HashMap<i64, i64> = (1..=2000).map(|id| (id, 0)).collect();
    let mut present: HashMap<i64, bool> = (1..=2000).map(|id| (id, true)).collect();
    for _ in 0..300 {
        let mut sql = String::from("BEGIN;");
        for _ in 0..5 {
            // Keys 1..=40 see most of the traffic: several changes per key and transaction.
            let id = 1 + rng.below(40) as i64;
            let e = expected.entry(id).or_default();
            let v = version.entry(id).or_default();
            if present[&id] {
                if rng.below(3) == 0 {
                    sql.push_str(&format!("DELETE FROM counters WHERE id = {id};"));
                    e.push(("d".into(), None));
                    e.push(("tombstone".into(), None));
                    present.insert(id, false);
                } else {
                    *v += 1;
                    sql.push_str(&format!("UPDATE counters SET v = {v} WHERE id = {id};"));
                    e.push(("u".into(), Some(*v)));
                }
            } else {
                *v += 1;
                sql.push_str(&format!("INSERT INTO counters VALUES ({id}, {v});"));
                e.push(("c".into(), Some(*v)));
                present.insert(id, true);
            }
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("changes");
    }
    let want: usize = expected.values().map(Vec::len).sum();
    let by_key = changes_by_key(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        "counters",
        want,
        180,
    )
    .await;
    let mut by_partition: BTreeMap<i32, Vec<(i64, &Change)>> = BTreeMap::new();
    for (id, changes) in &by_key {
        for c in changes {
            by_partition.entry(c.partition).or_default().push((*id, c));
        }
    }
    for (id, want) in &expected {
        let got: Vec<(String, Option<i64>)> = by_key
            .get(id)
            .map(|cs| cs.iter().map(|c| (c.op.clone(), c.v)).collect())
            .unwrap_or_default();
        assert_eq!(&got, want, "key {id}: its records in commit order");
    }
    // The tombstone is the record right after its delete in the partition.
    for records in by_partition.values_mut() {
        records.sort_by_key(|(_, c)| c.offset);
        for (i, (id, c)) in records.iter().enumerate() {
            if c.op == "d" {
                let next = records.get(i + 1);
                assert!(
                    next.is_some_and(|(nid, n)| nid == id && n.op == "tombstone"),
                    "key {id}: the delete at offset {} is followed by {next:?}, not its tombstone",
                    c.offset
                );
            }
        }
    }
    daemon::stop(sy).await;
}

/// The position slot `slot` confirmed.
async fn confirmed(client: &tokio_postgres::Client, slot: &str) -> Option<u64> {
    lsn(
        client,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await
}

/// The metric `name{source="<source>"}` from the text of `/metrics`.
pub(crate) fn metric(text: &str, name: &str, source: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{source=\"{source}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_longer_than_the_retry_budget_dead_letters_nothing_and_keeps_order() {
    let dir = scratch();
    let (broker, proxy) = Broker::start_behind_proxy(dir.path());
    let registry = Registry::start(dir.path());
    let Db { pg, db, client } = counters_db("outage", 10).await;
    let path = write_config(
        dir.path(),
        "127.0.0.1:0",
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.counters\"",
        "delivery_timeout = \"2s\"\nretry_max_elapsed = \"1s\"",
        // No heartbeat: the slot's position moves only with acknowledged changes here.
        ("outage", "heartbeat_interval = \"1h\""),
    );
    let config = load(&path);
    let store = config.dlq.store.clone();
    let (sy, url) = daemon::start(config).await;
    wait_for_slot(&client, "switchyard_outage").await;
    let mut rng = Rng::seeded();
    bursts(&client, &mut rng, 10, 20, 10).await;
    let before = changes_by_key(
        &broker.bootstrap(),
        &registry.url(),
        "counters",
        10 + 200,
        60,
    )
    .await;
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 210);

    // Kafka goes away; rows are written meanwhile.
    proxy.cut();
    let cut_at = lsn(&client, "SELECT pg_current_wal_lsn()::text")
        .await
        .expect("lsn");
    bursts(&client, &mut rng, 10, 50, 10).await;
    let http = daemon::client(Duration::from_secs(5));
    let readyz = wait_for_async(
        "/readyz to say the source is blocked",
        Duration::from_secs(60),
        || async {
            let r = http.get(format!("{url}/readyz")).send().await.ok()?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.ok()?;
            (body["sources"]["outage"]["state"] == "blocked").then_some((status, body))
        },
    )
    .await;
    assert_eq!(readyz.0, 503, "blocked is not ready: {}", readyz.1);
    let reason = readyz.1["sources"]["outage"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("Kafka"), "the reason names Kafka: {reason}");
    // Five times the retry budget, and more rows, before Kafka returns.
    wait_for_async(
        "the source to be blocked for 5 s",
        Duration::from_secs(60),
        || async {
            (metric(
                &daemon::metrics(&url).await,
                "switchyard_source_blocked_seconds",
                "outage",
            )? >= 5.0)
                .then_some(())
        },
    )
    .await;
    bursts(&client, &mut rng, 10, 10, 10).await;
    let held = confirmed(&client, "switchyard_outage")
        .await
        .expect("confirmed");
    assert!(
        held <= cut_at,
        "the slot moved past rows Kafka never acknowledged: {} > {}",
        switchyard::source::postgres::lsn::Lsn(held),
        switchyard::source::postgres::lsn::Lsn(cut_at)
    );
    proxy.restore();

    let finals = counters(&client).await;
    let by_key = read_until_final(&broker.bootstrap(), &registry.url(), &finals, 120).await;
    assert_final_state_after_resent_suffixes(&by_key, &finals);
    assert_dlq_empty(&store, "an outage").await;
    // A last transaction: once the slot confirms a position past the WAL's end before it,
    // it confirmed that commit and every one before it.
    let end = lsn(&client, "SELECT pg_current_wal_insert_lsn()::text")
        .await
        .expect("lsn");
    bursts(&client, &mut rng, 10, 1, 1).await;
    wait_for_async("the slot to catch up", Duration::from_secs(60), || async {
        (confirmed(&client, "switchyard_outage").await? > end).then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &daemon::metrics(&url).await,
            "switchyard_source_blocked_seconds",
            "outage"
        ),
        Some(0.0),
        "unblocked once Kafka takes records again"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_blocks_the_source_and_dead_letters_nothing() {
    let stack = Stack::start();
    // The registry is reached through a proxy the test cuts (it keeps its schemas meanwhile).
    let registry_port = stack
        .registry
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("registry port");
    let proxy = crate::support::proxy::Proxy::start(
        crate::support::free_port(),
        std::net::SocketAddr::from(([127, 0, 0, 1], registry_port)),
    );
    let registry_url = format!("http://127.0.0.1:{}", proxy.port());
    // rivven-schema's BACKWARD check calls an added optional column incompatible (it cannot
    // resolve the `Value` reference `after` shares with `before`); a Confluent registry accepts
    // it. The verdict is not what this test is about: compatibility NONE.
    stack.registry.set_compatibility(None, "NONE").await;
    let Db { pg, db, client } = counters_db("regout", 5).await;
    let path = write_config(
        stack.dir.path(),
        "127.0.0.1:0",
        (&stack.broker.bootstrap(), &registry_url),
        &pg.url(&db),
        "\"public.counters\"",
        "retry_max_elapsed = \"1s\"",
        ("regout", ""),
    );
    let config = load(&path);
    let store = config.dlq.store.clone();
    let (sy, url) = daemon::start(config).await;
    wait_for_slot(&client, "switchyard_regout").await;
    let mut rng = Rng::seeded();
    bursts(&client, &mut rng, 5, 10, 5).await;
    let before = changes_by_key(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        "counters",
        5 + 50,
        60,
    )
    .await;
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 55);

    // The registry goes away; a new column needs a new schema version for the next changes.
    proxy.cut();
    client
        .batch_execute("ALTER TABLE counters ADD COLUMN note text")
        .await
        .expect("alter");
    bursts(&client, &mut rng, 5, 10, 5).await;
    let http = daemon::client(Duration::from_secs(5));
    let reason = wait_for_async(
        "/readyz to say the source is blocked by the registry",
        Duration::from_secs(60),
        || async {
            let r = http.get(format!("{url}/readyz")).send().await.ok()?;
            let body: serde_json::Value = r.json().await.ok()?;
            let source = &body["sources"]["regout"];
            (source["state"] == "blocked").then(|| source["error"].to_string())
        },
    )
    .await;
    assert!(
        reason.contains("schema registry"),
        "the reason names the registry: {reason}"
    );
    wait_for_async(
        "the source to be blocked for 5 s",
        Duration::from_secs(60),
        || async {
            (metric(
                &daemon::metrics(&url).await,
                "switchyard_source_blocked_seconds",
                "regout",
            )? >= 5.0)
                .then_some(())
        },
    )
    .await;
    proxy.restore();

    let finals = counters(&client).await;
    let by_key = read_until_final(
        &stack.broker.bootstrap(),
        &stack.registry.url(),
        &finals,
        120,
    )
    .await;
    assert_final_state_after_resent_suffixes(&by_key, &finals);
    assert_dlq_empty(&store, "a registry outage").await;
    daemon::stop(sy).await;
}

/// Every key of `by_key` is in one partition, ends in its row's final value (`finals`) and
/// departs from commit order only by re-sent suffixes; returns the number of records.
pub(crate) fn assert_final_state_after_resent_suffixes(
    by_key: &BTreeMap<i64, Vec<Change>>,
    finals: &BTreeMap<i64, i64>,
) -> usize {
    let mut total = 0;
    for (id, changes) in by_key {
        let values = values_in_one_partition(*id, changes);
        total += values.len();
        assert_eq!(
            values.last().copied(),
            Some(finals[id]),
            "key {id}: the last record is the row's final state"
        );
        assert_resent_suffixes_only(*id, &values);
    }
    total
}

/// The dead-letter store at `store` holds nothing (`what` dead-lettered nothing).
pub(crate) async fn assert_dlq_empty(store: &switchyard::config::DlqStoreConfig, what: &str) {
    let dlq = switchyard::store::Store::open(store).await.expect("dlq");
    let letters = dlq
        .dead_letters()
        .list(&switchyard::store::Selector::default())
        .await
        .expect("list");
    assert!(
        letters.is_empty(),
        "{what} dead-lettered changes: {letters:?}"
    );
}

/// A key's values in offset order depart from strict commit order only by re-sent suffixes:
/// every value that comes after a newer one is followed again, in order, by every newer
/// version seen before it (never an older version alone after a newer one), no version is
/// missing, and the values are versions 0, 1, 2, ….
fn assert_resent_suffixes_only(id: i64, values: &[i64]) {
    let mut max = i64::MIN;
    for (j, v) in values.iter().enumerate() {
        if *v < max {
            let mut next = v + 1;
            for w in &values[j + 1..] {
                if *w == next {
                    next += 1;
                }
                if next > max {
                    break;
                }
            }
            assert!(
                next > max,
                "key {id}: version {v} at position {j} comes after version {max} and is not \
                 followed again by {next}..={max}: an older version alone after a newer one \
                 ({:?})",
                &values[j.saturating_sub(5)..(j + 10).min(values.len())]
            );
        }
        max = max.max(*v);
    }
    let seen: std::collections::BTreeSet<i64> = values.iter().copied().collect();
    let missing: Vec<i64> = (0..=max).filter(|v| !seen.contains(v)).take(10).collect();
    assert!(
        missing.is_empty(),
        "key {id}: versions missing: {missing:?}"
    );
}

#[test]
fn the_suffix_check_tells_a_resent_suffix_from_an_old_version_alone() {
    assert_resent_suffixes_only(1, &[0, 1, 2, 3]);
    assert_resent_suffixes_only(1, &[0, 1, 2, 3, 2, 3, 4]);
    assert_resent_suffixes_only(1, &[0, 1, 2, 3, 1, 2, 0, 1, 2, 3]);
    for bad in [
        &[0, 1, 3, 2][..],
        &[0, 1, 2, 3, 2, 4][..],
        &[0, 1, 2, 1][..],
        &[0, 2, 3][..],
    ] {
        assert!(
            std::panic::catch_unwind(|| assert_resent_suffixes_only(1, bad)).is_err(),
            "{bad:?} must fail the check"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_broker_outages_during_bursts_resend_only_suffixes_in_order() {
    let dir = scratch();
    let (broker, proxy) = Broker::start_behind_proxy(dir.path());
    let registry = Registry::start(dir.path());
    let Db { pg, db, client } = counters_db("faults", 20).await;
    let port = crate::support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let path = write_config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        (&broker.bootstrap(), &registry.url()),
        &pg.url(&db),
        "\"public.counters\"",
        "delivery_timeout = \"2s\"\nretry_max_elapsed = \"1s\"",
        ("faults", ""),
    );
    let store = load(&path).dlq.store.clone();
    let start = |n: usize| daemon::spawn_binary(&path, dir.path().join(format!("sy-{n}.log")));
    let mut sy = start(0);
    wait_for_slot(&client, "switchyard_faults").await;
    let mut rng = Rng::seeded();
    let writer = {
        let url = pg.libpq(&db);
        let mut rng = Rng(rng.0 ^ 0x9e37_79b9);
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("writer");
            tokio::spawn(conn);
            // 1,200 transactions of 20 updates of 20 keys, in bursts.
            for _ in 0..60 {
                bursts(&c, &mut rng, 20, 20, 20).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let http = daemon::client(Duration::from_secs(5));
    for round in 0..2 {
        // A kill -9 in the middle of a burst…
        wait_for_async("switchyard to stream", Duration::from_secs(60), || async {
            let m = http.get(format!("{url}/metrics")).send().await.ok()?;
            let text = m.text().await.ok()?;
            (metric(&text, "switchyard_events_received_total", "faults")? > 0.0).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        sy.kill();
        sy = start(round + 1);
        // …and Kafka cut off while the restarted process has records in flight.
        wait_for_async(
            "switchyard to stream again",
            Duration::from_secs(60),
            || async {
                let m = http.get(format!("{url}/metrics")).send().await.ok()?;
                let text = m.text().await.ok()?;
                (metric(&text, "switchyard_events_received_total", "faults")? > 0.0).then_some(())
            },
        )
        .await;
        proxy.cut();
        bursts(&client, &mut rng, 20, 5, 20).await;
        wait_for_async(
            "the source to be blocked",
            Duration::from_secs(60),
            || async {
                let m = http.get(format!("{url}/metrics")).send().await.ok()?;
                let text = m.text().await.ok()?;
                (metric(&text, "switchyard_source_blocked_seconds", "faults")? >= 2.0).then_some(())
            },
        )
        .await;
        proxy.restore();
    }
    writer.await.expect("writer");
    let finals = counters(&client).await;
    let by_key = read_until_final(&broker.bootstrap(), &registry.url(), &finals, 120).await;
    let total = assert_final_state_after_resent_suffixes(&by_key, &finals);
    eprintln!(
        "two kills and two outages: {total} records for {} versions",
        finals.values().map(|v| v + 1).sum::<i64>()
    );
    assert_dlq_empty(&store, "faults").await;
    drop(sy);
}
