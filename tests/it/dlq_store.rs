//! One conformance suite for both dead-letter stores: what on-call relies on, whichever backend.

use switchyard::config::DlqStoreConfig;
use switchyard::dlq::{AuditEntry, DlqStore, EncodedRecord, NewDeadLetter, Selector, Status};
use switchyard::error::ErrorClass;
use switchyard::event::{Event, EventId, Payload, WebhookPayload, now_micros};

use crate::support::postgres::PgCluster;
use crate::support::scratch;

pub fn webhook_event(id: &str, body: &str) -> Event {
    Event {
        id: EventId::from_provider(id),
        source: "orders".into(),
        event_type: "order.created".into(),
        received_at_micros: now_micros(),
        payload: Payload::Webhook(WebhookPayload {
            path: "/webhooks/orders".into(),
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

async fn conformance(store: DlqStore) {
    // A dead letter keeps everything needed to route it again.
    let mut first = letter("e1", "r1", ErrorClass::Oversize);
    first.record = Some(EncodedRecord {
        key: Some(vec![0, 0, 0, 0, 1, 2]),
        value: vec![0, 0, 0, 0, 2, 9, 9],
    });
    let id1 = store.put(&first).await.expect("put");
    let got = store.get(id1).await.expect("get").expect("exists");
    assert_eq!(got.event.as_ref(), Some(&first.event));
    assert_eq!(got.record, first.record);
    assert_eq!(
        (got.class.as_str(), got.status, got.attempts),
        ("oversize", Status::Pending, 1)
    );
    assert_eq!(got.route.as_deref(), Some("r1"));
    assert!(store.get(id1 + 1000).await.expect("get").is_none());

    // The same event failing again on the same route is one entry with more attempts.
    let again = store
        .put(&letter("e1", "r1", ErrorClass::Produce))
        .await
        .expect("put");
    assert_eq!(again, id1);
    let got = store.get(id1).await.expect("get").expect("exists");
    assert_eq!((got.attempts, got.class.as_str()), (2, "produce"));
    assert_eq!(got.record, first.record, "the encoded record is kept");

    let id2 = store
        .put(&letter("e2", "r2", ErrorClass::Schema))
        .await
        .expect("put");
    let id3 = store
        .put(&letter("e3", "r1", ErrorClass::Schema))
        .await
        .expect("put");
    let mut unroutable = letter("e4", "x", ErrorClass::Unroutable);
    unroutable.route = None;
    let id4 = store.put(&unroutable).await.expect("put");
    assert_eq!(
        store.get(id4).await.expect("get").expect("exists").route,
        None
    );

    // Filters.
    let by_route = store
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
        .list(&Selector {
            since: Some(now_micros() + 60_000_000),
            ..pending()
        })
        .await
        .expect("list");
    assert!(future.is_empty());
    let limited = store
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
            .claim(&pending(), "host:3", lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        !store
            .mark_replayed(id2, "host:2", "not mine")
            .await
            .expect("mark"),
        "only the owner marks"
    );
    assert!(
        store
            .mark_replayed(id2, "host:1", "replayed by host:1")
            .await
            .expect("mark")
    );
    store
        .mark_failed(id3, "host:1", "schema", "still incompatible", now_micros())
        .await
        .expect("mark failed");
    let failed = store.get(id3).await.expect("get").expect("exists");
    assert_eq!(
        (failed.status, failed.attempts, failed.message.as_str()),
        (Status::Pending, 2, "still incompatible")
    );
    let mut owners = store.claim_owners(now_micros()).await.expect("owners");
    owners.sort();
    assert_eq!(owners, vec!["host:2".to_string()]);
    assert_eq!(store.release_owner("host:2").await.expect("release"), 2);
    let expired = store
        .claim(&pending(), "host:4", now_micros() - 1, 10)
        .await
        .expect("claim");
    assert_eq!(expired.len(), 3, "a released claim can be taken");
    let retaken = store
        .claim(&pending(), "host:5", lease, 10)
        .await
        .expect("claim");
    assert_eq!(retaken.len(), 3, "an expired lease can be taken over");
    store.release_owner("host:5").await.expect("release");

    // Replayed entries leave the pending view and are not claimed again unless asked.
    let replayed = store.get(id2).await.expect("get").expect("exists");
    assert_eq!(
        (replayed.status, replayed.replay_count),
        (Status::Replayed, 1)
    );
    assert!(
        !store
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
            .claim(&forced, "host:6", lease, 10)
            .await
            .expect("claim")
            .len(),
        1
    );
    store.release_owner("host:6").await.expect("release");

    // Discard takes a reason and only pending entries.
    let n = store
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
    let d = store.get(id4).await.expect("get").expect("exists");
    assert_eq!(
        (d.status, d.resolution.as_deref()),
        (Status::Discarded, Some("test data"))
    );

    // Stats by route × class × status.
    let stats = store.stats().await.expect("stats");
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
            .audit(&AuditEntry {
                at: now_micros() + i as i64,
                actor: "oncall".into(),
                action: action.to_string(),
                selector: "--class schema".into(),
                count: 2,
                result: "ok".into(),
            })
            .await
            .expect("audit");
    }
    let log = store.audit_log(10).await.expect("audit log");
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        vec!["discard", "replay"]
    );

    // Retention purges old replayed/discarded entries, never pending ones.
    let purged = store.purge(now_micros() + 1).await.expect("purge");
    assert_eq!(purged, 2);
    let left = store.list(&Selector::default()).await.expect("list");
    assert_eq!(
        left.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id1, id3]
    );
    assert!(left.iter().all(|d| d.status == Status::Pending));

    // Source state (snapshot progress) is kept by key, last write wins.
    assert_eq!(store.get_state("snapshot/appdb").await.expect("get"), None);
    store
        .put_state("snapshot/appdb", "{\"rows\":1}")
        .await
        .expect("put");
    store
        .put_state("snapshot/appdb", "{\"rows\":2}")
        .await
        .expect("put");
    store.put_state("snapshot/other", "x").await.expect("put");
    assert_eq!(
        store
            .get_state("snapshot/appdb")
            .await
            .expect("get")
            .as_deref(),
        Some("{\"rows\":2}")
    );

    // Webhook deduplication ids: remembered, indexed, found, listed newest first, purged.
    let t = now_micros();
    store
        .remember_seen(vec![("s\u{1f}a".into(), t), ("s\u{1f}b".into(), t + 1)])
        .await
        .expect("remember");
    store
        .remember_seen(vec![("s\u{1f}c".into(), t + 2)])
        .await
        .expect("remember");
    assert_eq!(store.index_seen(0).await.expect("index"), 0);
    assert_eq!(store.unindexed_seen(), 0);
    assert!(store.seen_since("s\u{1f}a", t).await.expect("lookup"));
    assert!(
        !store.seen_since("s\u{1f}a", t + 1).await.expect("lookup"),
        "older than asked"
    );
    assert!(
        !store.seen_since("s\u{1f}z", 0).await.expect("lookup"),
        "never seen"
    );
    let recent = store.recent_seen(t + 1, 10).await.expect("recent");
    assert_eq!(
        recent,
        vec![
            ("s\u{1f}c".to_string(), t + 2),
            ("s\u{1f}b".to_string(), t + 1)
        ]
    );
    assert_eq!(store.purge_seen(t + 2).await.expect("purge"), 2);
    assert!(!store.seen_since("s\u{1f}b", 0).await.expect("lookup"));
    assert!(store.seen_since("s\u{1f}c", 0).await.expect("lookup"));
}

#[tokio::test]
async fn the_sqlite_store_passes_the_conformance_suite() {
    let dir = scratch();
    let store = DlqStore::open(&DlqStoreConfig::Sqlite(
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
    let store = DlqStore::open(&config).await.expect("open");
    let t = now_micros();
    let ids: Vec<(String, i64)> = (0..10).map(|i| (format!("s\u{1f}{i}"), t + i)).collect();
    store
        .remember_seen(ids[..6].to_vec())
        .await
        .expect("remember");
    store
        .remember_seen(ids[6..].to_vec())
        .await
        .expect("remember");
    assert_eq!(store.unindexed_seen(), 10);
    assert!(
        !store.seen_since("s\u{1f}0", t).await.expect("lookup"),
        "lookups read the index only"
    );
    assert_eq!(store.index_seen(4).await.expect("index"), 4);
    assert_eq!(store.unindexed_seen(), 4);
    for i in 0..6 {
        assert!(
            store
                .seen_since(&format!("s\u{1f}{i}"), t)
                .await
                .expect("lookup"),
            "id {i} indexed"
        );
    }
    assert!(
        !store.seen_since("s\u{1f}6", t).await.expect("lookup"),
        "the newest stay in the log"
    );
    drop(store);

    let store = DlqStore::open(&config).await.expect("reopen");
    assert_eq!(
        store.unindexed_seen(),
        4,
        "the log's length is known after a restart"
    );
    let mut recent = store.recent_seen(t, 100).await.expect("recent");
    assert_eq!(recent.len(), 10, "log and index are both read at start");
    assert_eq!(recent[0], ids[9]);
    recent.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(recent, want);
    assert_eq!(store.purge_seen(t + 8).await.expect("purge"), 8);
    assert_eq!(store.unindexed_seen(), 2);
}

#[tokio::test]
async fn the_postgres_store_passes_the_conformance_suite() {
    let pg = PgCluster::start();
    let db = pg.fresh_database("dlq_conformance").await;
    let store = DlqStore::open(&DlqStoreConfig::Postgres(pg.url(&db)))
        .await
        .expect("open postgres store");
    conformance(store).await;
}
