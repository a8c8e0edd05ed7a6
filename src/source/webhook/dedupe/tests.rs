//! Unit tests of the parent module.

use std::time::{Duration, Instant};

use super::*;

/// The requests' `ack_timeout`.
const ACK: Duration = Duration::from_secs(10);

/// The embedded store's ids.
fn local(store: &Store) -> &LocalIds {
    match store.seen_ids() {
        SeenIds::Local(ids) => ids,
        SeenIds::Shared(_) => panic!("not the embedded store"),
    }
}

/// An embedded store in a fresh directory, with a runtime to drive it.
fn scratch_store() -> (tempfile::TempDir, tokio::runtime::Runtime, Arc<Store>) {
    let (dir, rt, sqlite) = crate::store::SqliteStore::scratch();
    (dir, rt, Arc::new(Store::Sqlite(sqlite)))
}

/// Claims `key` and finishes it as accepted; true if this call led (a new id).
async fn accept(d: &Arc<Dedupe>, key: &str) -> bool {
    match d.claim(key.to_string(), 0, ACK).await {
        Claim::Lead(lead) => {
            lead.finish(Outcome::Accepted).await;
            true
        }
        _ => false,
    }
}

#[test]
fn ids_committed_by_an_http_thread_and_by_the_writer_thread_are_durable_when_accepted() {
    let (_dir, main, store) = scratch_store();
    let dedupe = main.block_on(Dedupe::start(Arc::clone(&store), i64::MAX / 4));
    // An HTTP thread: commits its ids itself, before it would sleep.
    let http = {
        let dedupe = Arc::clone(&dedupe);
        std::thread::spawn(move || {
            let rt = http_thread_runtime().expect("runtime");
            rt.block_on(async move {
                // Committed by this thread (gathered, or before it sleeps), else never answered.
                let all = futures::future::join_all((0..50).map(|i| {
                    let d = Arc::clone(&dedupe);
                    async move { accept(&d, &format!("s\u{1f}http_{i}")).await }
                }));
                let led = tokio::time::timeout(Duration::from_secs(10), all)
                    .await
                    .expect("ids committed within 10 s");
                assert!(led.iter().all(|l| *l));
                // Accepted ids are known: a retry is `Seen`.
                assert!(!accept(&dedupe, "s\u{1f}http_7").await);
                // A lone id is committed too (after its gathering turns, or before sleeping).
                let lone = tokio::time::timeout(
                    Duration::from_secs(10),
                    accept(&dedupe, "s\u{1f}http_lone"),
                )
                .await
                .expect("a lone id committed within 10 s");
                assert!(lone);
            })
        })
    };
    http.join().expect("http thread");
    // Any other thread: the writer thread commits them.
    main.block_on(async {
        for i in 0..20 {
            let led = tokio::time::timeout(
                Duration::from_secs(10),
                accept(&dedupe, &format!("s\u{1f}main_{i}")),
            )
            .await
            .expect("id committed within 10 s");
            assert!(led);
        }
    });
    // Each accepted id is in the store the moment its request was answered.
    let stored = main
        .block_on(store.seen_ids().recent(0, 1_000))
        .expect("read ids");
    let mut keys: Vec<String> = stored.into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys.len(), 71, "{keys:?}");
    assert!(keys.contains(&"s\u{1f}http_49".to_string()));
    assert!(keys.contains(&"s\u{1f}main_19".to_string()));
}

#[test]
fn a_second_key_led_with_an_id_ends_as_the_id_ends() {
    let (_dir, rt, store) = scratch_store();
    rt.block_on(async {
        let d = Dedupe::start(Arc::clone(&store), i64::MAX / 4).await;
        let lead = |key: &'static str| {
            let d = Arc::clone(&d);
            async move {
                match d.claim(key.into(), 0, ACK).await {
                    Claim::Lead(l) => l,
                    _ => panic!("{key}: a new key leads"),
                }
            }
        };
        // Accepted: both keys are stored, and copies of the body key follow to the end.
        let (id, body) = (lead("s\u{1f}id-1").await, lead("s\u{1f}sha256:aa").await);
        let Claim::Follow(copy) = d.claim("s\u{1f}sha256:aa".into(), 0, ACK).await else {
            panic!("a copy of the body in flight follows");
        };
        id.with(Some(body)).finish(Outcome::Accepted).await;
        assert_eq!(copy.await.ok(), Some(Outcome::Accepted));
        for key in ["s\u{1f}id-1", "s\u{1f}sha256:aa"] {
            assert!(
                matches!(d.claim(key.into(), 0, ACK).await, Claim::Seen),
                "{key}"
            );
        }
        let mut stored: Vec<String> = store
            .seen_ids()
            .recent(0, 10)
            .await
            .expect("read ids")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        stored.sort();
        assert_eq!(stored, vec!["s\u{1f}id-1", "s\u{1f}sha256:aa"]);
        // Failed, or dropped (the request was cancelled): both keys are free again.
        let (id, body) = (lead("s\u{1f}id-2").await, lead("s\u{1f}sha256:bb").await);
        id.with(Some(body)).finish(Outcome::Failed).await;
        let (id, body) = (lead("s\u{1f}id-3").await, lead("s\u{1f}sha256:cc").await);
        drop(id.with(Some(body)));
        for key in ["id-2", "sha256:bb", "id-3", "sha256:cc"] {
            let key = format!("s\u{1f}{key}");
            assert!(
                matches!(d.claim(key.clone(), 0, ACK).await, Claim::Lead(_)),
                "{key}"
            );
        }
    });
}

#[test]
fn copies_of_an_id_in_flight_follow_its_lead_and_a_dropped_lead_fails_them() {
    let (_dir, rt, store) = scratch_store();
    rt.block_on(async {
        let d = Dedupe::start(store, i64::MAX / 4).await;
        let Claim::Lead(lead) = d.claim("s\u{1f}a".into(), 0, ACK).await else {
            panic!("the first claim leads");
        };
        let Claim::Follow(copy) = d.claim("s\u{1f}a".into(), 0, ACK).await else {
            panic!("a copy in flight follows");
        };
        // Another id is not held up by this one.
        assert!(matches!(
            d.claim("s\u{1f}b".into(), 0, ACK).await,
            Claim::Lead(_)
        ));
        lead.finish(Outcome::Accepted).await;
        assert_eq!(copy.await.ok(), Some(Outcome::Accepted));
        assert!(matches!(
            d.claim("s\u{1f}a".into(), 0, ACK).await,
            Claim::Seen
        ));

        // A lead whose request went away: its copies fail (and retry), and the id is free.
        let Claim::Lead(gone) = d.claim("s\u{1f}c".into(), 0, ACK).await else {
            panic!("leads");
        };
        let Claim::Follow(copy) = d.claim("s\u{1f}c".into(), 0, ACK).await else {
            panic!("follows");
        };
        drop(gone);
        assert_eq!(copy.await.ok(), Some(Outcome::Failed));

        // A lead cancelled while its id is being stored (its request went away), on an
        // HTTP thread, where the commit waits for the thread's gathering task: the id is not
        // left in flight (else every later copy would follow it forever).
        let http = {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                let rt = http_thread_runtime().expect("runtime");
                rt.block_on(async move {
                    let Claim::Lead(cancelled) = d.claim("s\u{1f}d".into(), 0, ACK).await else {
                        panic!("leads");
                    };
                    let Claim::Follow(copy) = d.claim("s\u{1f}d".into(), 0, ACK).await else {
                        panic!("follows");
                    };
                    let mut finishing = Box::pin(cancelled.finish(Outcome::Accepted));
                    // Nothing else ran on this thread meanwhile: the commit is still ahead.
                    assert!(futures::poll!(&mut finishing).is_pending());
                    drop(finishing);
                    let told = tokio::time::timeout(Duration::from_secs(10), copy).await;
                    assert_eq!(told.expect("the copy is told").ok(), Some(Outcome::Failed));
                    assert!(!matches!(
                        d.claim("s\u{1f}d".into(), 0, ACK).await,
                        Claim::Follow(_)
                    ));
                });
            })
        };
        http.join().expect("http thread");
        let Claim::Lead(failed) = d.claim("s\u{1f}c".into(), 0, ACK).await else {
            panic!("the id is free again");
        };
        failed.finish(Outcome::Failed).await;
        assert!(matches!(
            d.claim("s\u{1f}c".into(), 0, ACK).await,
            Claim::Lead(_)
        ));
    });
}

#[test]
fn after_a_restart_ids_older_than_memory_are_fingerprinted_so_new_ids_need_no_store_read() {
    let (_dir, rt, store) = scratch_store();
    rt.block_on(async {
        let now = crate::event::now_micros();
        let keys: Vec<String> = (0..MEMORY_CAP + 500)
            .map(|i| format!("s\u{1f}evt_{i}"))
            .collect();
        local(&store)
            .remember_seen_blocking(
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| (k.as_str(), now - 1_000_000 + i as i64)),
            )
            .expect("ids of a previous run");
        // As the previous run's writer thread left them: all but the newest indexed.
        local(&store).index_seen(1_000).await.expect("indexed");
        let window = 3_600_000_000;
        let d = Dedupe::start(Arc::clone(&store), window).await;
        // A request's window starts later than the one at start-up.
        let since = crate::event::now_micros() - window;
        // Until the older ids are fingerprinted (in the background: start-up does not wait
        // for it), claims are still right: the store is asked.
        assert!(matches!(
            d.claim("s\u{1f}evt_4".into(), since, ACK).await,
            Claim::Seen
        ));
        let new = d.printer.print("s\u{1f}evt_new");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.memory.lock().expect("memory").surely_new(new, since) {
            assert!(
                Instant::now() < deadline,
                "older ids not fingerprinted in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        {
            let m = d.memory.lock().expect("memory");
            // Memory alone does not hold the window's ids...
            assert!(m.complete_since > since);
            // ...but with the older ones fingerprinted a new id needs no store read,
            assert!(m.surely_new(new, since));
            // and one of the older ids is "perhaps": the store decides.
            assert!(!m.surely_new(d.printer.print("s\u{1f}evt_3"), since));
        }
        assert!(matches!(
            d.claim("s\u{1f}evt_3".into(), since, ACK).await,
            Claim::Seen
        ));
        assert!(matches!(
            d.claim("s\u{1f}evt_new".into(), since, ACK).await,
            Claim::Lead(_)
        ));
    });
}

#[test]
fn start_up_fingerprinting_stops_when_no_longer_wanted_and_returns_nothing_partial() {
    let (_dir, _rt, store) = scratch_store();
    let sqlite = local(&store);
    let keys: Vec<String> = (0..3 * CHECK_WANTED_EVERY)
        .map(|i| format!("s\u{1f}evt_{i}"))
        .collect();
    sqlite
        .remember_seen_blocking(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as i64)))
        .expect("ids");
    let printer = Printer::new();
    let asked = std::cell::Cell::new(0);
    let built = fingerprint_stored(sqlite, &printer, 0, i64::MAX, i64::MAX / 4, || {
        asked.set(asked.get() + 1);
        false
    })
    .expect("read");
    // Asked once, after the first few thousand ids: stopped there, nothing returned.
    assert!(built.is_none());
    assert_eq!(asked.get(), 1);
    let built = fingerprint_stored(sqlite, &printer, 0, i64::MAX, i64::MAX / 4, || true)
        .expect("read")
        .expect("complete");
    assert_eq!(built.1, keys.len());
}
