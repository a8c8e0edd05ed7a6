//! One conformance suite for both dead-letter stores: what on-call relies on, whichever backend.

use switchyard::config::DlqStoreConfig;
use switchyard::error::ErrorClass;
use switchyard::event::{Event, EventId, Payload, WebhookPayload, now_micros};
use switchyard::store::{
    AuditEntry, DeadLetter, EncodedRecord, LocalIds, NewDeadLetter, SeenIds, Selector, SharedIds,
    Status, Store,
};

use crate::support::postgres::PgCluster;
use crate::support::scratch;

pub fn webhook_event(id: &str, body: &str) -> Event {
    webhook_event_from("orders", id, body)
}

/// A webhook event of `source`.
pub fn webhook_event_from(source: &str, id: &str, body: &str) -> Event {
    Event {
        id: EventId::from_provider(id),
        source: source.into(),
        event_type: "order.created".into(),
        received_at_micros: now_micros(),
        payload: Payload::Webhook(WebhookPayload {
            path: format!("/webhooks/{source}"),
            content_type: Some("application/json".into()),
            headers: vec![("webhook-id".into(), id.into())].into(),
            body: body.into(),
            subject: None,
            selected_headers: Vec::new(),
        }),
    }
}

pub fn letter(id: &str, route: &str, class: ErrorClass) -> NewDeadLetter {
    NewDeadLetter {
        event: webhook_event(id, &format!(r#"{{"id":"{id}"}}"#)),
        route: Some(route.into()),
        topic: Some("orders".into()),
        key: Some(id.into()),
        record: None,
        class,
        message: format!("{class} failure of {id}"),
        attempts: 1,
        failed_at: now_micros(),
    }
}

fn pending() -> Selector {
    Selector {
        statuses: vec![Status::Pending],
        ..Selector::default()
    }
}

async fn conformance(store: Store) {
    conformance_interrupted(store, async {}).await;
}

/// The suite, with `interrupt` awaited once four dead letters are stored and before they are
/// read back (e.g. a restart of the store's database).
async fn conformance_interrupted(store: Store, interrupt: impl std::future::Future<Output = ()>) {
    // A dead letter keeps everything needed to route it again.
    let mut first = letter("e1", "r1", ErrorClass::Oversize);
    first.record = Some(EncodedRecord {
        key: Some(vec![0, 0, 0, 0, 1, 2]),
        value: vec![0, 0, 0, 0, 2, 9, 9],
    });
    let id1 = store.dead_letters().put(&first).await.expect("put");
    let got = store
        .dead_letters()
        .get(id1)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.event.as_ref(), Some(&first.event));
    assert_eq!(got.record, first.record);
    assert_eq!(
        (got.class.as_str(), got.status, got.attempts),
        ("oversize", Status::Pending, 1)
    );
    assert_eq!(got.route.as_deref(), Some("r1"));
    assert!(
        store
            .dead_letters()
            .get(id1 + 1000)
            .await
            .expect("get")
            .is_none()
    );

    // The same event failing again on the same route is one entry with more attempts.
    let again = store
        .dead_letters()
        .put(&letter("e1", "r1", ErrorClass::Produce))
        .await
        .expect("put");
    assert_eq!(again, id1);
    let got = store
        .dead_letters()
        .get(id1)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((got.attempts, got.class.as_str()), (2, "produce"));
    assert_eq!(got.record, first.record, "the encoded record is kept");

    let id2 = store
        .dead_letters()
        .put(&letter("e2", "r2", ErrorClass::Schema))
        .await
        .expect("put");
    let id3 = store
        .dead_letters()
        .put(&letter("e3", "r1", ErrorClass::Schema))
        .await
        .expect("put");
    let mut unroutable = letter("e4", "x", ErrorClass::Unroutable);
    unroutable.route = None;
    let id4 = store.dead_letters().put(&unroutable).await.expect("put");
    assert_eq!(
        store
            .dead_letters()
            .get(id4)
            .await
            .expect("get")
            .expect("exists")
            .route,
        None
    );

    interrupt.await;

    // Filters.
    let by_route = store
        .dead_letters()
        .list(&Selector {
            route: Some("r1".into()),
            ..pending()
        })
        .await
        .expect("list");
    assert_eq!(
        by_route.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id1, id3]
    );
    let by_class = store
        .dead_letters()
        .list(&Selector {
            class: Some("schema".into()),
            ..pending()
        })
        .await
        .expect("list");
    assert_eq!(
        by_class.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id2, id3]
    );
    let future = store
        .dead_letters()
        .list(&Selector {
            since: Some(now_micros() + 60_000_000),
            ..pending()
        })
        .await
        .expect("list");
    assert!(future.is_empty());
    let limited = store
        .dead_letters()
        .list(&Selector {
            limit: Some(2),
            ..pending()
        })
        .await
        .expect("list");
    assert_eq!(limited.len(), 2);

    // Claims are exclusive until released or expired.
    let lease = now_micros() + 60_000_000;
    let a = store
        .dead_letters()
        .claim(
            &Selector {
                class: Some("schema".into()),
                ..pending()
            },
            "host:1",
            lease,
            10,
        )
        .await
        .expect("claim");
    assert_eq!(a.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id2, id3]);
    let b = store
        .dead_letters()
        .claim(&pending(), "host:2", lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        b.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id1, id4],
        "claimed entries are skipped"
    );
    assert!(
        store
            .dead_letters()
            .claim(&pending(), "host:3", lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // A replay renews what it still holds and confirms each claim before delivering.
    let mut renewed = store
        .dead_letters()
        .renew_claims("host:1", lease + 1)
        .await
        .expect("renew");
    renewed.sort();
    assert_eq!(renewed, vec![id2, id3]);
    assert!(
        !store
            .dead_letters()
            .confirm_claim(id2, "host:2", lease + 2)
            .await
            .expect("confirm"),
        "only the owner confirms"
    );
    assert!(
        store
            .dead_letters()
            .confirm_claim(id2, "host:1", lease + 2)
            .await
            .expect("confirm")
    );
    assert!(
        !store
            .dead_letters()
            .mark_replayed(id2, "host:2", "not mine")
            .await
            .expect("mark"),
        "only the owner marks"
    );
    assert!(
        store
            .dead_letters()
            .mark_replayed(id2, "host:1", "replayed by host:1")
            .await
            .expect("mark")
    );
    store
        .dead_letters()
        .mark_failed(id3, "host:1", "schema", "still incompatible", now_micros())
        .await
        .expect("mark failed");
    let failed = store
        .dead_letters()
        .get(id3)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (failed.status, failed.attempts, failed.message.as_str()),
        (Status::Pending, 2, "still incompatible")
    );
    let mut owners = store
        .dead_letters()
        .claim_owners(now_micros())
        .await
        .expect("owners");
    owners.sort();
    assert_eq!(owners, vec!["host:2".to_string()]);
    assert_eq!(
        store
            .dead_letters()
            .release_owner("host:2")
            .await
            .expect("release"),
        2
    );
    let expired = store
        .dead_letters()
        .claim(&pending(), "host:4", now_micros() - 1, 10)
        .await
        .expect("claim");
    assert_eq!(expired.len(), 3, "a released claim can be taken");
    let retaken = store
        .dead_letters()
        .claim(&pending(), "host:5", lease, 10)
        .await
        .expect("claim");
    assert_eq!(retaken.len(), 3, "an expired lease can be taken over");
    store
        .dead_letters()
        .release_owner("host:5")
        .await
        .expect("release");

    // Replayed entries leave the pending view and are not claimed again unless asked.
    let replayed = store
        .dead_letters()
        .get(id2)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (replayed.status, replayed.replay_count),
        (Status::Replayed, 1)
    );
    assert!(
        !store
            .dead_letters()
            .list(&pending())
            .await
            .expect("list")
            .iter()
            .any(|d| d.id == id2)
    );
    let forced = Selector {
        ids: vec![id2],
        statuses: vec![Status::Pending, Status::Replayed],
        ..Selector::default()
    };
    assert_eq!(
        store
            .dead_letters()
            .claim(&forced, "host:6", lease, 10)
            .await
            .expect("claim")
            .len(),
        1
    );
    store
        .dead_letters()
        .release_owner("host:6")
        .await
        .expect("release");

    // Discard takes a reason and only pending entries.
    let n = store
        .dead_letters()
        .discard(
            &Selector {
                ids: vec![id4, id2],
                ..pending()
            },
            "test data",
        )
        .await
        .expect("discard");
    assert_eq!(n, 1, "the replayed entry is not discarded");
    let d = store
        .dead_letters()
        .get(id4)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (d.status, d.resolution.as_deref()),
        (Status::Discarded, Some("test data"))
    );

    // Stats by route × class × status.
    let stats = store.dead_letters().stats().await.expect("stats");
    let count = |route: &str, class: &str, status: Status| {
        stats
            .iter()
            .find(|r| r.route == route && r.class == class && r.status == status)
            .map(|r| r.count)
    };
    assert_eq!(count("r1", "produce", Status::Pending), Some(1));
    assert_eq!(count("r1", "schema", Status::Pending), Some(1));
    assert_eq!(count("r2", "schema", Status::Replayed), Some(1));
    assert_eq!(count("-", "unroutable", Status::Discarded), Some(1));

    // Audit log, newest first.
    for (i, action) in ["replay", "discard"].iter().enumerate() {
        store
            .audit_trail()
            .append(&AuditEntry {
                at: now_micros() + i as i64,
                actor: "oncall".into(),
                action: action.to_string(),
                selector: "--class schema".into(),
                count: 2,
                result: "ok".into(),
                role: "operator".into(),
                peer: "127.0.0.1".into(),
                request_id: format!("req-{i}"),
            })
            .await
            .expect("audit");
    }
    let log = store.audit_trail().newest(10).await.expect("audit log");
    assert_eq!(
        log.iter()
            .map(|e| e.entry.action.as_str())
            .collect::<Vec<_>>(),
        vec!["discard", "replay"]
    );
    assert_eq!(log[0].entry.request_id, "req-1");
    // Each row is chained to the one before it, and the chain verifies.
    assert_eq!(log[0].prev_hash, log[1].hash);
    let v = store.audit_trail().verify().await.expect("verify");
    assert_eq!((v.verified, v.unchained, v.broken), (2, 0, None));
    assert_eq!(v.last_hash, log[0].hash);

    // Retention purges old replayed/discarded entries, never pending ones.
    let purged = store
        .dead_letters()
        .purge(now_micros() + 1)
        .await
        .expect("purge");
    assert_eq!(purged, 2);
    let left = store
        .dead_letters()
        .list(&Selector::default())
        .await
        .expect("list");
    assert_eq!(
        left.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id1, id3]
    );
    assert!(left.iter().all(|d| d.status == Status::Pending));

    // Marking a batch replayed (automatic re-delivery): only what the owner still holds.
    let held = store
        .dead_letters()
        .claim(&pending(), "host:7", lease, 10)
        .await
        .expect("claim");
    assert_eq!(held.len(), 2);
    assert_eq!(
        store
            .dead_letters()
            .mark_replayed_all(vec![id1, id3], "host:8", "not mine")
            .await
            .expect("mark all"),
        0,
        "only the owner marks"
    );
    assert_eq!(
        store
            .dead_letters()
            .mark_replayed_all(vec![id1], "host:7", "replayed by host:7")
            .await
            .expect("mark all"),
        1
    );
    let (one, three) = (
        store
            .dead_letters()
            .get(id1)
            .await
            .expect("get")
            .expect("exists"),
        store
            .dead_letters()
            .get(id3)
            .await
            .expect("get")
            .expect("exists"),
    );
    assert_eq!(
        (one.status, one.replay_count, three.status),
        (Status::Replayed, 1, Status::Pending)
    );
    store
        .dead_letters()
        .release_owner("host:7")
        .await
        .expect("release");

    // Source state (snapshot progress) is kept by key, last write wins.
    assert_eq!(
        store
            .source_state()
            .get("snapshot/appdb")
            .await
            .expect("get"),
        None
    );
    store
        .source_state()
        .put("snapshot/appdb", "{\"rows\":1}")
        .await
        .expect("put");
    store
        .source_state()
        .put("snapshot/appdb", "{\"rows\":2}")
        .await
        .expect("put");
    store
        .source_state()
        .put("snapshot/other", "x")
        .await
        .expect("put");
    assert_eq!(
        store
            .source_state()
            .get("snapshot/appdb")
            .await
            .expect("get")
            .as_deref(),
        Some("{\"rows\":2}")
    );

    // Two sources may use the same event id on the same route: two entries, each with its
    // own event (before, the second was answered `dead_lettered` and merged into the first).
    let mut from_billing = letter("e9", "r9", ErrorClass::Produce);
    from_billing.event = webhook_event_from("billing", "e9", r#"{"from":"billing"}"#);
    let mut from_orders = letter("e9", "r9", ErrorClass::Produce);
    from_orders.event = webhook_event_from("orders", "e9", r#"{"from":"orders"}"#);
    let billing_id = store.dead_letters().put(&from_billing).await.expect("put");
    let orders_id = store.dead_letters().put(&from_orders).await.expect("put");
    assert_ne!(billing_id, orders_id, "one entry per source");
    assert_eq!(
        store
            .dead_letters()
            .put(&from_orders)
            .await
            .expect("put again"),
        orders_id,
        "the same source's event failing again is still one entry"
    );
    let both = store
        .dead_letters()
        .list(&Selector {
            route: Some("r9".into()),
            ..pending()
        })
        .await
        .expect("list");
    let seen: Vec<(i64, &str, i64, Option<&Event>)> = both
        .iter()
        .map(|d| (d.id, d.source.as_str(), d.attempts, d.event.as_ref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (billing_id, "billing", 1, Some(&from_billing.event)),
            (orders_id, "orders", 2, Some(&from_orders.event)),
        ]
    );
    // Both replayable: claimed, each with its own event, and marked replayed.
    let claimed = store
        .dead_letters()
        .claim(
            &Selector {
                route: Some("r9".into()),
                ..pending()
            },
            "host:9",
            lease,
            10,
        )
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![billing_id, orders_id]
    );
    for d in &claimed {
        assert!(
            store
                .dead_letters()
                .mark_replayed(d.id, "host:9", "replayed")
                .await
                .expect("mark")
        );
    }

    // Webhook deduplication ids: remembered, indexed, found, listed newest first, purged.
    let t = now_micros();
    store
        .seen_ids()
        .remember(vec![("s\u{1f}a".into(), t), ("s\u{1f}b".into(), t + 1)])
        .await
        .expect("remember");
    store
        .seen_ids()
        .remember(vec![("s\u{1f}c".into(), t + 2)])
        .await
        .expect("remember");
    if let SeenIds::Local(ids) = store.seen_ids() {
        // The embedded store's log is moved into its index on demand (the deduplication's
        // writer thread does it); a shared store indexes every id as it commits.
        assert_eq!(ids.index_seen(0).await.expect("index"), 0);
        assert_eq!(ids.unindexed_seen(), 0);
    }
    assert!(
        store
            .seen_ids()
            .seen_since("s\u{1f}a", t)
            .await
            .expect("lookup")
    );
    assert!(
        !store
            .seen_ids()
            .seen_since("s\u{1f}a", t + 1)
            .await
            .expect("lookup"),
        "older than asked"
    );
    assert!(
        !store
            .seen_ids()
            .seen_since("s\u{1f}z", 0)
            .await
            .expect("lookup"),
        "never seen"
    );
    let recent = store.seen_ids().recent(t + 1, 10).await.expect("recent");
    assert_eq!(
        recent,
        vec![
            ("s\u{1f}c".to_string(), t + 2),
            ("s\u{1f}b".to_string(), t + 1)
        ]
    );
    assert_eq!(store.seen_ids().purge(t + 2).await.expect("purge"), 2);
    assert!(
        !store
            .seen_ids()
            .seen_since("s\u{1f}b", 0)
            .await
            .expect("lookup")
    );
    assert!(
        store
            .seen_ids()
            .seen_since("s\u{1f}c", 0)
            .await
            .expect("lookup")
    );
}

/// The embedded store's seen ids.
fn local(store: &Store) -> &LocalIds {
    match store.seen_ids() {
        SeenIds::Local(ids) => ids,
        SeenIds::Shared(_) => panic!("not the embedded store"),
    }
}

/// A shared store's seen ids.
fn shared(store: &Store) -> SharedIds<'_> {
    match store.seen_ids() {
        SeenIds::Shared(ids) => ids,
        SeenIds::Local(_) => panic!("not a shared store"),
    }
}

#[tokio::test]
async fn the_sqlite_store_passes_the_conformance_suite() {
    let dir = scratch();
    let store = Store::open(&DlqStoreConfig::Sqlite(
        dir.path().join("dlq/switchyard.db"),
    ))
    .await
    .expect("open sqlite store");
    conformance(store).await;
}

/// The embedded store appends deduplication ids to a log and indexes the oldest on demand;
/// both survive reopening, and lookups find what was indexed.
#[tokio::test]
async fn sqlite_dedupe_ids_are_logged_then_indexed_oldest_first_and_survive_reopening() {
    let dir = scratch();
    let config = DlqStoreConfig::Sqlite(dir.path().join("dlq.db"));
    let store = Store::open(&config).await.expect("open");
    let t = now_micros();
    let ids: Vec<(String, i64)> = (0..10).map(|i| (format!("s\u{1f}{i}"), t + i)).collect();
    store
        .seen_ids()
        .remember(ids[..6].to_vec())
        .await
        .expect("remember");
    store
        .seen_ids()
        .remember(ids[6..].to_vec())
        .await
        .expect("remember");
    assert_eq!(local(&store).unindexed_seen(), 10);
    assert!(
        !store
            .seen_ids()
            .seen_since("s\u{1f}0", t)
            .await
            .expect("lookup"),
        "lookups read the index only"
    );
    assert_eq!(local(&store).index_seen(4).await.expect("index"), 4);
    assert_eq!(local(&store).unindexed_seen(), 4);
    for i in 0..6 {
        assert!(
            store
                .seen_ids()
                .seen_since(&format!("s\u{1f}{i}"), t)
                .await
                .expect("lookup"),
            "id {i} indexed"
        );
    }
    assert!(
        !store
            .seen_ids()
            .seen_since("s\u{1f}6", t)
            .await
            .expect("lookup"),
        "the newest stay in the log"
    );
    drop(store);

    let store = Store::open(&config).await.expect("reopen");
    assert_eq!(
        local(&store).unindexed_seen(),
        4,
        "the log's length is known after a restart"
    );
    let mut recent = store.seen_ids().recent(t, 100).await.expect("recent");
    assert_eq!(recent.len(), 10, "log and index are both read at start");
    assert_eq!(recent[0], ids[9]);
    recent.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(recent, want);
    assert_eq!(store.seen_ids().purge(t + 8).await.expect("purge"), 8);
    assert_eq!(local(&store).unindexed_seen(), 2);
}

#[tokio::test]
async fn the_postgres_store_passes_the_conformance_suite() {
    let pg = PgCluster::start();
    let db = pg.fresh_database("dlq_conformance").await;
    let store = Store::open(&DlqStoreConfig::Postgres(pg.url(&db)))
        .await
        .expect("open postgres store");
    conformance(store).await;
}

/// Creates role `tls_only` (see [`PgCluster::start_with_tls`]) on `pg`.
async fn create_tls_only_role(pg: &PgCluster) {
    let (client, conn) = tokio_postgres::connect(
        &format!("{} connect_timeout=10", pg.libpq("postgres")),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the test cluster");
    let task = tokio::spawn(conn);
    client
        .batch_execute("CREATE ROLE tls_only LOGIN SUPERUSER")
        .await
        .expect("create role tls_only");
    drop(client);
    let _ = task.await;
}

/// The postgres store over TLS (`sslmode=verify-full` against the test's own CA, as role
/// `tls_only`, which the server refuses in plain text), with its database restarted in the
/// middle of the suite: the store connects anew on its next call, and the dead letters stored
/// before the restart are all read back after it.
#[tokio::test]
async fn the_postgres_store_over_verify_full_tls_survives_a_restart_of_its_database() {
    let pg = std::sync::Arc::new(PgCluster::start_with_tls());
    let db = pg.fresh_database("dlq_tls").await;
    create_tls_only_role(&pg).await;
    let url = format!(
        "postgres://tls_only@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        pg.ca_cert().display()
    );
    let store = Store::open(&DlqStoreConfig::Postgres(url))
        .await
        .expect("open the postgres store over TLS");
    let restarted = std::sync::Arc::clone(&pg);
    conformance_interrupted(store, async move {
        // On a thread of its own, so the store's connection tasks see their sockets close
        // while the server restarts.
        tokio::task::spawn_blocking(move || restarted.restart())
            .await
            .expect("restart the store's database");
    })
    .await;
    let log = pg.log();
    assert!(
        log.contains("received fast shutdown request"),
        "the server restarted mid-suite: {log}"
    );
}

/// What `/readyz` asks the store (`check_writable`): unavailable (transient) while the store's
/// database is stopped, writable again once it is back, with the same store (no reopening).
#[tokio::test]
async fn the_postgres_store_is_unwritable_while_its_database_is_down_and_recovers_by_itself() {
    let pg = std::sync::Arc::new(PgCluster::start());
    let db = pg.fresh_database("dlq_down").await;
    let store = Store::open(&DlqStoreConfig::Postgres(pg.url(&db)))
        .await
        .expect("open");
    store.check_writable().await.expect("writable at first");
    let id = store
        .dead_letters()
        .put(&letter("kept", "r1", ErrorClass::Produce))
        .await
        .expect("put");
    let stopping = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("stop the store's database");
    let down = tokio::time::timeout(std::time::Duration::from_secs(30), store.check_writable())
        .await
        .expect("check_writable answers within 30 s while the database is down");
    let Err(e) = down else {
        panic!("writable while the database is stopped");
    };
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("unavailable"), "{e}");
    let starting = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start the store's database");
    crate::support::wait_for_async(
        "the store to be writable again",
        std::time::Duration::from_secs(30),
        || async { store.check_writable().await.ok() },
    )
    .await;
    let kept = store
        .dead_letters()
        .get(id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(kept.event_id, "kept");
}

/// `verify-full` checks the server's certificate against `sslrootcert`: a CA that did not sign
/// it is refused, as a definite error (retrying does not help); an unreachable database is a
/// transient one.
#[tokio::test]
async fn the_postgres_store_refuses_an_unverified_server_and_calls_an_unreachable_one_transient() {
    let pg = PgCluster::start_with_tls();
    let db = pg.fresh_database("dlq_tls_wrong_ca").await;
    create_tls_only_role(&pg).await;
    // Another CA: the one another test cluster made.
    let dir = scratch();
    let wrong = dir.path().join("wrong-ca.pem");
    let other = PgCluster::start_with_tls();
    std::fs::copy(other.ca_cert(), &wrong).expect("copy the other CA");
    let url = format!(
        "postgres://tls_only@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        wrong.display()
    );
    let Err(e) = Store::open(&DlqStoreConfig::Postgres(url)).await else {
        panic!("a server certificate from another CA was accepted");
    };
    assert!(!e.is_transient(), "{e}");

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/nothing?sslmode=disable");
    let Err(e) = Store::open(&DlqStoreConfig::Postgres(url)).await else {
        panic!("connected to a closed port");
    };
    assert!(e.is_transient(), "{e}");
}

/// The dead letters a store made by the previous version held (ids are filled in as they are
/// inserted): a pending entry with its encoded record, a replayed copy of the same event and
/// route, and an unroutable one.
fn old_rows() -> Vec<DeadLetter> {
    let event = |id: &str| webhook_event(id, &format!(r#"{{"old":"{id}"}}"#));
    let base = DeadLetter {
        id: 0,
        event_id: "m1".into(),
        source: "orders".into(),
        route: Some("r1".into()),
        topic: Some("orders".into()),
        key: Some("m1".into()),
        class: "schema".into(),
        message: "incompatible".into(),
        attempts: 3,
        first_failed_at: 1_000,
        last_failed_at: 2_000,
        status: Status::Pending,
        replay_count: 0,
        resolution: None,
        event: Some(event("m1")),
        record: Some(EncodedRecord {
            key: Some(vec![0, 0, 0, 0, 1, 7]),
            value: vec![0, 0, 0, 0, 2, 8, 8],
        }),
    };
    vec![
        base.clone(),
        DeadLetter {
            status: Status::Replayed,
            replay_count: 1,
            resolution: Some("replayed by old:1".into()),
            ..base.clone()
        },
        DeadLetter {
            event_id: "m2".into(),
            route: None,
            topic: None,
            key: None,
            class: "unroutable".into(),
            message: "no route takes it".into(),
            attempts: 1,
            event: Some(event("m2")),
            record: None,
            ..base
        },
    ]
}

/// Opens a store the previous version made (twice at once, as two replicas starting together
/// would) and checks that every row kept its id and data and that pending dead letters are now
/// keyed by (source, event id, route); then reopens it (the upgrade is done once).
async fn check_upgraded(config: &DlqStoreConfig, old: &[DeadLetter]) {
    let (a, b) = tokio::join!(Store::open(config), Store::open(config));
    let store = a.expect("the old store opens");
    drop(b.expect("the old store opens in a second instance at the same moment"));
    assert_eq!(
        store
            .dead_letters()
            .list(&Selector::default())
            .await
            .expect("list"),
        old,
        "every row keeps its id and data"
    );

    // The new key is in force: another source's event with the same id and route is an entry
    // of its own, and the old source's event failing again still updates the old entry.
    let mut billing = letter("m1", "r1", ErrorClass::Produce);
    billing.event = webhook_event_from("billing", "m1", r#"{"from":"billing"}"#);
    let billing_id = store.dead_letters().put(&billing).await.expect("put");
    assert!(old.iter().all(|d| d.id != billing_id), "a new entry");
    let again = store
        .dead_letters()
        .put(&letter("m1", "r1", ErrorClass::Produce))
        .await
        .expect("put");
    assert_eq!(again, old[0].id, "the pending entry of the same source");
    let updated = store
        .dead_letters()
        .get(again)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((updated.attempts, updated.event), (4, old[0].event.clone()));
    drop(store);

    let store = Store::open(config).await.expect("reopen");
    let rows = store
        .dead_letters()
        .list(&Selector::default())
        .await
        .expect("list");
    assert_eq!(
        rows.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![old[0].id, old[1].id, old[2].id, billing_id]
    );
    assert_eq!(rows[1], old[1]);
    assert_eq!(rows[2], old[2]);
    assert_eq!(rows[3].event.as_ref(), Some(&billing.event));

    // The old audit row is kept, before the chain; new rows are chained after it.
    store
        .audit_trail()
        .append(&AuditEntry {
            at: 2,
            actor: "local:oncall".into(),
            action: "discard".into(),
            ..AuditEntry::default()
        })
        .await
        .expect("audit");
    let log = store.audit_trail().newest(10).await.expect("audit log");
    assert_eq!(
        log.iter()
            .map(|r| r.entry.actor.as_str())
            .collect::<Vec<_>>(),
        vec!["local:oncall", "oncall"]
    );
    let v = store.audit_trail().verify().await.expect("verify");
    assert_eq!((v.unchained, v.verified, v.broken), (1, 1, None));
}

#[tokio::test]
async fn a_sqlite_store_of_the_previous_version_is_upgraded_in_place_and_keys_by_source() {
    let dir = scratch();
    let path = dir.path().join("dlq.db");
    let mut old = old_rows();
    {
        let conn = rusqlite::Connection::open(&path).expect("create");
        // The previous version's table and indexes, as it created them.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
            CREATE TABLE dead_letters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL,
                source TEXT NOT NULL,
                route TEXT NOT NULL DEFAULT '',
                topic TEXT,
                record_key_text TEXT,
                event_json TEXT NOT NULL,
                record_key BLOB,
                record_value BLOB,
                class TEXT NOT NULL,
                message TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                first_failed_at INTEGER NOT NULL,
                last_failed_at INTEGER NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending',
                replay_count INTEGER NOT NULL DEFAULT 0,
                resolution TEXT,
                updated_at INTEGER NOT NULL,
                claimed_by TEXT,
                claimed_until INTEGER
            );
            CREATE UNIQUE INDEX dead_letters_pending_event
                ON dead_letters(event_id, route) WHERE status = 'pending';
            CREATE INDEX dead_letters_status ON dead_letters(status, last_failed_at);
            CREATE TABLE audit_log (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at INTEGER NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                selector TEXT NOT NULL,
                count INTEGER NOT NULL,
                result TEXT NOT NULL
            );
            INSERT INTO audit_log (at, actor, action, selector, count, result)
                VALUES (1, 'oncall', 'discard', '--id 9', 1, 'discarded 1: test');",
        )
        .expect("old schema");
        for d in &mut old {
            d.id = conn
                .query_row(
                    "INSERT INTO dead_letters (event_id, source, route, topic, record_key_text,
                        event_json, record_key, record_value, class, message, attempts,
                        first_failed_at, last_failed_at, status, replay_count, resolution,
                        updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                        ?16, ?13)
                     RETURNING id",
                    rusqlite::params![
                        d.event_id,
                        d.source,
                        d.route.clone().unwrap_or_default(),
                        d.topic,
                        d.key,
                        serde_json::to_string(&d.event).expect("event json"),
                        d.record.as_ref().and_then(|r| r.key.clone()),
                        d.record.as_ref().map(|r| r.value.clone()),
                        d.class,
                        d.message,
                        d.attempts,
                        d.first_failed_at,
                        d.last_failed_at,
                        d.status.as_str(),
                        d.replay_count,
                        d.resolution,
                    ],
                    |r| r.get(0),
                )
                .expect("old row");
        }
    }
    check_upgraded(&DlqStoreConfig::Sqlite(path), &old).await;
}

#[tokio::test]
async fn a_postgres_store_of_the_previous_version_is_upgraded_in_place_and_keys_by_source() {
    let pg = PgCluster::start();
    let db = pg.fresh_database("dlq_upgrade").await;
    let mut old = old_rows();
    {
        let (client, conn) = tokio_postgres::connect(&pg.libpq(&db), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        // The previous version's table and indexes, as it created them.
        client
            .batch_execute(
                "CREATE TABLE switchyard_dead_letters (
                    id BIGSERIAL PRIMARY KEY,
                    event_id TEXT NOT NULL,
                    source TEXT NOT NULL,
                    route TEXT NOT NULL DEFAULT '',
                    topic TEXT,
                    record_key_text TEXT,
                    event_json TEXT NOT NULL,
                    record_key BYTEA,
                    record_value BYTEA,
                    class TEXT NOT NULL,
                    message TEXT NOT NULL,
                    attempts BIGINT NOT NULL,
                    first_failed_at BIGINT NOT NULL,
                    last_failed_at BIGINT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'pending',
                    replay_count BIGINT NOT NULL DEFAULT 0,
                    resolution TEXT,
                    updated_at BIGINT NOT NULL,
                    claimed_by TEXT,
                    claimed_until BIGINT
                );
                CREATE UNIQUE INDEX switchyard_dead_letters_pending_event
                    ON switchyard_dead_letters(event_id, route) WHERE status = 'pending';
                CREATE INDEX switchyard_dead_letters_status
                    ON switchyard_dead_letters(status, last_failed_at);
                CREATE TABLE switchyard_dlq_audit (
                    id BIGSERIAL PRIMARY KEY,
                    at BIGINT NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    selector TEXT NOT NULL,
                    count BIGINT NOT NULL,
                    result TEXT NOT NULL
                );
                INSERT INTO switchyard_dlq_audit (at, actor, action, selector, count, result)
                    VALUES (1, 'oncall', 'discard', '--id 9', 1, 'discarded 1: test');",
            )
            .await
            .expect("old schema");
        for d in &mut old {
            let route = d.route.clone().unwrap_or_default();
            let event = serde_json::to_string(&d.event).expect("event json");
            let record_key = d.record.as_ref().and_then(|r| r.key.clone());
            let record_value = d.record.as_ref().map(|r| r.value.clone());
            let status = d.status.as_str();
            d.id = client
                .query_one(
                    "INSERT INTO switchyard_dead_letters (event_id, source, route, topic,
                        record_key_text, event_json, record_key, record_value, class, message,
                        attempts, first_failed_at, last_failed_at, status, replay_count,
                        resolution, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $13)
                     RETURNING id",
                    &[
                        &d.event_id,
                        &d.source,
                        &route,
                        &d.topic,
                        &d.key,
                        &event,
                        &record_key,
                        &record_value,
                        &d.class,
                        &d.message,
                        &d.attempts,
                        &d.first_failed_at,
                        &d.last_failed_at,
                        &status,
                        &d.replay_count,
                        &d.resolution,
                    ],
                )
                .await
                .expect("old row")
                .get(0);
        }
        drop(client);
        let _ = task.await;
    }
    check_upgraded(&DlqStoreConfig::Postgres(pg.url(&db)), &old).await;
}

/// Two instances on one postgres store: only one wins a webhook id's claim; the other sees it
/// claimed, then accepted once the winner stores it (the same commit ends the claim). A failed
/// delivery's claim is released, an abandoned one expires; either way the id is free again.
#[tokio::test]
async fn only_one_of_two_instances_sharing_a_postgres_store_wins_a_webhook_id() {
    use switchyard::store::{WebhookIdClaim, WebhookIdState};
    let pg = PgCluster::start();
    let db = pg.fresh_database("dlq_claims").await;
    let config = DlqStoreConfig::Postgres(pg.url(&db));
    let a = Store::open(&config).await.expect("open a");
    let b = Store::open(&config).await.expect("open b");
    let t = now_micros();
    let hold = t + 60_000_000;
    let key = "orders\u{1f}evt_1";
    assert_eq!(
        shared(&a).claim(key, 0, hold).await.expect("claim"),
        WebhookIdClaim::Won
    );
    assert_eq!(
        shared(&b).claim(key, 0, hold).await.expect("claim"),
        WebhookIdClaim::ClaimedElsewhere
    );
    assert_eq!(
        shared(&b).state(key, 0).await.expect("state"),
        WebhookIdState::Claimed
    );
    a.seen_ids()
        .remember(vec![(key.into(), t)])
        .await
        .expect("accept");
    assert_eq!(
        shared(&b).state(key, 0).await.expect("state"),
        WebhookIdState::Accepted(t)
    );
    assert_eq!(
        shared(&b).claim(key, 0, hold).await.expect("claim"),
        WebhookIdClaim::Accepted(t)
    );
    assert_eq!(
        shared(&a).claim(key, t + 1, hold).await.expect("claim"),
        WebhookIdClaim::Won,
        "outside the window the id is new again"
    );
    shared(&a).release(key).await.expect("release");

    // A failed delivery releases its claim: the other instance may take the id at once.
    let failed = "orders\u{1f}evt_2";
    assert_eq!(
        shared(&a).claim(failed, 0, hold).await.expect("claim"),
        WebhookIdClaim::Won
    );
    assert_eq!(
        shared(&b).release(failed).await.ok(),
        Some(()),
        "releasing another's claim changes nothing"
    );
    assert_eq!(
        shared(&b).state(failed, 0).await.expect("state"),
        WebhookIdState::Claimed
    );
    shared(&a).release(failed).await.expect("release");
    assert_eq!(
        shared(&b).state(failed, 0).await.expect("state"),
        WebhookIdState::Free
    );
    assert_eq!(
        shared(&b).claim(failed, 0, hold).await.expect("claim"),
        WebhookIdClaim::Won
    );

    // An instance that died holding a claim: it expires, then the id may be claimed again.
    let abandoned = "orders\u{1f}evt_3";
    assert_eq!(
        shared(&a)
            .claim(abandoned, 0, now_micros() - 1)
            .await
            .expect("claim"),
        WebhookIdClaim::Won
    );
    assert_eq!(
        shared(&b).state(abandoned, 0).await.expect("state"),
        WebhookIdState::Free
    );
    assert_eq!(
        shared(&b).claim(abandoned, 0, hold).await.expect("claim"),
        WebhookIdClaim::Won
    );
}

/// The daemon on a `postgres://` store over `sslmode=verify-full` (as the Kubernetes example
/// ships it, with a CA of the test's own): it starts and accepts webhooks; while the store's
/// database is stopped `/readyz` says the DLQ is not ready and a new webhook is answered 503
/// (its claim cannot be taken); once the database is back, with no restart of switchyard, it
/// is ready again, accepts new webhooks, and still knows the id accepted before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_on_a_tls_store_reports_it_down_answers_503_and_recovers_without_a_restart() {
    let stack = crate::support::Stack::start();
    let pg = std::sync::Arc::new(PgCluster::start_with_tls());
    let db = pg.fresh_database("dlq_daemon").await;
    create_tls_only_role(&pg).await;
    let url = format!(
        "postgres://tls_only@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        pg.ca_cert().display()
    );
    let (setup, base) = crate::support::daemon::Setup {
        dlq_url: Some(url),
        ..crate::support::daemon::Setup::new(&stack.broker, &stack.registry, "wh.tls_store")
    }
    .on_free_port();
    let config = crate::support::daemon::write_config(stack.dir.path(), &setup);
    let _sy =
        crate::support::daemon::spawn_binary(&config, stack.dir.path().join("switchyard.log"));
    let http = crate::support::daemon::client(std::time::Duration::from_secs(30));
    crate::support::daemon::wait_ready(&http, &base).await;
    let post = |id: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/webhooks/orders"))
                .header("webhook-id", id)
                .body(format!(r#"{{"id":"{id}"}}"#))
                .send()
                .await
                .expect("post");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body["status"].as_str().unwrap_or("").to_string())
        }
    };
    assert_eq!(post("before").await, (200, "accepted".to_string()));

    let stopping = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("stop the store's database");
    let readyz = |http: reqwest::Client, base: String| async move {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.ok()?;
        Some((status, body))
    };
    let body = crate::support::wait_for_async(
        "/readyz to report the store down",
        std::time::Duration::from_secs(30),
        || async {
            let (status, body) = readyz(http.clone(), base.clone()).await?;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(
        body["not_ready"]
            .as_array()
            .is_some_and(|n| n.iter().any(|c| c == "dlq")),
        "the DLQ is named not ready: {body}"
    );
    assert_eq!(
        post("during").await.0,
        503,
        "a new webhook while the store is down"
    );

    let starting = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start the store's database");
    crate::support::daemon::wait_ready(&http, &base).await;
    assert_eq!(post("after").await, (200, "accepted".to_string()));
    assert_eq!(post("before").await, (200, "duplicate".to_string()));
    assert_eq!(
        post("during").await,
        (200, "accepted".to_string()),
        "the copy answered 503 is accepted when the provider retries"
    );
}

/// Whoever can write to the store can change an audit row, but not quietly: the chain breaks
/// at that row, and `audit_trail().verify()` names it (both stores).
#[tokio::test]
async fn an_audit_row_changed_in_the_store_is_named_by_verify() {
    async fn three_rows(store: &Store) {
        for n in 0..3 {
            store
                .audit_trail()
                .append(&AuditEntry {
                    at: now_micros(),
                    actor: format!("token:t{n}"),
                    role: "operator".into(),
                    action: "discard".into(),
                    selector: format!("--id {n}"),
                    count: 1,
                    result: "discarded 1".into(),
                    ..AuditEntry::default()
                })
                .await
                .expect("audit");
        }
        let v = store.audit_trail().verify().await.expect("verify");
        assert_eq!((v.verified, v.broken), (3, None));
    }
    let dir = scratch();
    let path = dir.path().join("dlq.db");
    let store = Store::open(&DlqStoreConfig::Sqlite(path.clone()))
        .await
        .expect("open");
    three_rows(&store).await;
    let second = store.audit_trail().newest(3).await.expect("log")[1].id;
    rusqlite::Connection::open(&path)
        .expect("open the file")
        .execute(
            "UPDATE audit_log SET actor = 'token:someone-else' WHERE id = ?1",
            [second],
        )
        .expect("tamper");
    let v = store.audit_trail().verify().await.expect("verify");
    assert_eq!(v.verified, 1, "{v:?}");
    assert_eq!(v.broken.as_ref().map(|b| b.id), Some(second), "{v:?}");

    let pg = PgCluster::start();
    let db = pg.fresh_database("audit_tamper").await;
    let store = Store::open(&DlqStoreConfig::Postgres(pg.url(&db)))
        .await
        .expect("open");
    three_rows(&store).await;
    let last = store.audit_trail().newest(1).await.expect("log")[0].id;
    let (client, conn) = tokio_postgres::connect(&pg.libpq(&db), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    client
        .execute(
            "UPDATE switchyard_dlq_audit SET count = 0 WHERE id = $1",
            &[&last],
        )
        .await
        .expect("tamper");
    drop(client);
    let _ = task.await;
    let v = store.audit_trail().verify().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.id), Some(last), "{v:?}");
}
