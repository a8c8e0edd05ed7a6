//! Unit tests of the parent module.

use super::super::SqliteStore;
use super::*;

/// The ids of an embedded store in a fresh directory, with a runtime to drive them.
fn scratch() -> (tempfile::TempDir, tokio::runtime::Runtime, LocalIds) {
    let (dir, rt, store) = SqliteStore::scratch();
    (dir, rt, store.ids().clone())
}

#[test]
fn expired_ids_are_purged_in_chunks_and_newer_ones_stay() {
    let (_dir, rt, store) = scratch();
    let n = PURGE_CHUNK * 2 + 17;
    let keys: Vec<String> = (0..n).map(|i| format!("s\u{1f}old_{i}")).collect();
    store
        .remember_seen_blocking(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as i64)))
        .expect("old ids");
    store
        .remember_seen_blocking([("s\u{1f}new", 1_000_000)])
        .expect("new id");
    // Most in the index, the newest still in the log: the purge covers both.
    rt.block_on(store.index_seen(5)).expect("index");
    let purged = rt.block_on(store.purge_seen(1_000_000)).expect("purge");
    assert_eq!(purged, n as u64);
    let left = rt.block_on(store.recent_seen(0, 10)).expect("read");
    assert_eq!(left, vec![("s\u{1f}new".to_string(), 1_000_000)]);
}

#[test]
fn a_lookup_does_not_wait_for_the_ids_connection() {
    let (_dir, rt, store) = scratch();
    store
        .remember_seen_blocking([("s\u{1f}old", 10)])
        .expect("id");
    rt.block_on(store.index_seen(0)).expect("indexed");
    // A commit or an index move in progress holds the ids' connection.
    let held = lock(&store.seen);
    let found = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.seen_since("s\u{1f}old", 0),
        )
        .await
    });
    drop(held);
    assert!(matches!(found, Ok(Ok(true))), "{found:?}");
}

#[test]
fn reading_ids_by_age_never_holds_up_commits_of_new_ids() {
    let (_dir, _rt, store) = scratch();
    let keys: Vec<String> = (0..100).map(|i| format!("s\u{1f}old_{i}")).collect();
    store
        .remember_seen_blocking(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as i64)))
        .expect("old ids");
    let mut read = 0;
    let mut committed_meanwhile = 0;
    let n = store
        .each_seen_blocking(0, 100, 1_000, |_, _| {
            read += 1;
            let go = ControlFlow::Continue(());
            // In the middle of the read (start-up's fingerprinting, while the daemon
            // serves), an HTTP thread's commit finds the ids' connection free.
            if read == 50 {
                let key = "s\u{1f}during".to_string();
                let done = store.try_remember_seen_now([(key.as_str(), 500)]);
                assert!(matches!(done, Some(Ok(()))), "commit held up");
                committed_meanwhile += 1;
            }
            go
        })
        .expect("read");
    assert_eq!((n, read, committed_meanwhile), (100, 100, 1));
    // The read saw its own snapshot (not the id committed during it); the id is stored.
    let all = store
        .each_seen_blocking(0, 1_000, 1_000, |_, _| ControlFlow::Continue(()))
        .expect("read");
    assert_eq!(all, 101);
}

#[test]
fn new_ids_commit_while_the_store_file_is_locked_by_a_dead_letter_or_a_move() {
    let (_dir, rt, store) = scratch();
    store
        .remember_seen_blocking([("s\u{1f}first", 1)])
        .expect("first id");
    // Another writer holds the store file's write lock (a dead letter's transaction, an
    // index move): appending ids, in their own file, neither waits for it nor fails.
    let dead_letter = lock(&store.store);
    dead_letter
        .execute_batch(
            "BEGIN IMMEDIATE; INSERT INTO state (key, value, updated_at) VALUES ('x', 'y', 1);",
        )
        .expect("store file locked");
    let started = std::time::Instant::now();
    let done = store.try_remember_seen_now([("s\u{1f}during", 2)]);
    assert!(matches!(done, Some(Ok(()))), "{done:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "waited {:?} for the store file",
        started.elapsed()
    );
    dead_letter.execute_batch("ROLLBACK").expect("release");
    drop(dead_letter);
    // Moved into the index afterwards, found by a lookup.
    assert_eq!(rt.block_on(store.index_seen(0)).expect("moved"), 0);
    assert!(
        rt.block_on(store.seen_since("s\u{1f}during", 0))
            .expect("lookup")
    );
    assert!(
        rt.block_on(store.seen_since("s\u{1f}first", 0))
            .expect("lookup")
    );
    assert!(
        !rt.block_on(store.seen_since("s\u{1f}never", 0))
            .expect("lookup")
    );
}

#[test]
fn a_store_whose_ids_log_is_in_the_store_file_has_it_moved_to_the_ids_file_on_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dlq.db");
    {
        // A store written before the log had a file of its own.
        let c = Connection::open(&path).expect("old store");
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE webhook_seen (key TEXT PRIMARY KEY, at INTEGER NOT NULL);
             CREATE TABLE webhook_seen_log (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, at INTEGER NOT NULL);
             INSERT INTO webhook_seen (key, at) VALUES ('s\u{1f}indexed', 10);
             INSERT INTO webhook_seen_log (key, at) VALUES ('s\u{1f}logged_a', 20), ('s\u{1f}logged_b', 30);",
        )
        .expect("old tables");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(SqliteStore::open(&path))
        .expect("open")
        .ids()
        .clone();
    assert_eq!(store.unindexed_seen(), 2);
    let ids = rt.block_on(store.recent_seen(0, 10)).expect("read");
    assert_eq!(
        ids,
        vec![
            ("s\u{1f}logged_b".to_string(), 30),
            ("s\u{1f}logged_a".to_string(), 20),
            ("s\u{1f}indexed".to_string(), 10),
        ]
    );
    let old_table: i64 = lock(&store.store)
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'webhook_seen_log'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(old_table, 0, "the old log is dropped from the store file");
    assert!(super::super::ids_file(&path).exists());
    // Opened again: nothing moved twice.
    drop(store);
    let store = rt
        .block_on(SqliteStore::open(&path))
        .expect("reopen")
        .ids()
        .clone();
    assert_eq!(store.unindexed_seen(), 2);
    assert_eq!(rt.block_on(store.index_seen(0)).expect("moved"), 0);
    assert!(
        rt.block_on(store.seen_since("s\u{1f}logged_a", 0))
            .expect("lookup")
    );
}

#[test]
fn ids_are_read_newest_first_across_the_log_and_the_index() {
    let (_dir, rt, store) = scratch();
    // Indexed: 10, 30, 50; then logged (in two batches): 20, 40, 60.
    store
        .remember_seen_blocking([("s\u{1f}i10", 10), ("s\u{1f}i30", 30), ("s\u{1f}i50", 50)])
        .expect("first");
    assert_eq!(rt.block_on(store.index_seen(0)).expect("moved"), 0);
    store
        .remember_seen_blocking([("s\u{1f}l40", 40), ("s\u{1f}l20", 20)])
        .expect("second");
    store
        .remember_seen_blocking([("s\u{1f}l60 é", 60)])
        .expect("third");
    assert_eq!(store.unindexed_seen(), 3);
    let read = |since, before, limit| {
        let mut out = Vec::new();
        store
            .each_seen_blocking(since, before, limit, |k, at| {
                out.push((k.trim_start_matches("s\u{1f}").to_string(), at));
                ControlFlow::Continue(())
            })
            .expect("read");
        out
    };
    let names = |v: Vec<(String, i64)>| v.into_iter().map(|(_, at)| at).collect::<Vec<_>>();
    assert_eq!(names(read(0, 100, 4)), vec![60, 50, 40, 30]);
    assert_eq!(names(read(25, 55, 10)), vec![50, 40, 30]);
    assert_eq!(read(55, 100, 10), vec![("l60 é".to_string(), 60)]);
    // Moving whole batches: every id is found by a lookup afterwards, none left behind.
    assert_eq!(rt.block_on(store.index_seen(0)).expect("moved"), 0);
    for key in ["i10", "l20", "i30", "l40", "i50", "l60 é"] {
        assert!(
            rt.block_on(store.seen_since(&format!("s\u{1f}{key}"), 0))
                .expect("lookup"),
            "{key}"
        );
    }
    assert_eq!(names(read(0, 100, 10)), vec![60, 50, 40, 30, 20, 10]);
}

#[test]
fn a_damaged_batch_is_an_error_not_a_panic() {
    let mut seen = Vec::new();
    assert!(each_in_batch(&[], |k, at| seen.push((k.to_string(), at))).is_ok());
    let mut blob = 7i64.to_le_bytes().to_vec();
    blob.extend_from_slice(&3u32.to_le_bytes());
    blob.extend_from_slice(b"abc");
    assert!(each_in_batch(&blob, |k, at| seen.push((k.to_string(), at))).is_ok());
    assert_eq!(seen, vec![("abc".to_string(), 7)]);
    for cut in 1..blob.len() {
        assert!(
            each_in_batch(&blob[..cut], |_, _| ()).is_err(),
            "cut at {cut}"
        );
    }
    let mut bad = blob.clone();
    *bad.last_mut().expect("byte") = 0xff;
    assert!(each_in_batch(&bad, |_, _| ()).is_err(), "not UTF-8");
}
