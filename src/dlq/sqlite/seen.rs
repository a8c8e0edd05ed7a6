//! The embedded store's webhook deduplication ids: a log the HTTP threads append to, moved in
//! key order into a keyed index by the deduplication writer thread, and purged by age (see
//! `source::webhook::dedupe`). They have their own connection (`seen`), so their commits never
//! wait behind a dead letter's fsync.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{SqliteStore, lock, recovered};
use crate::dlq::DlqError;

/// Largest number of log rows moved into the index in one transaction: the write lock is held
/// for tens of milliseconds at most.
const INDEX_CHUNK: usize = 1024;

/// Ids deleted per transaction when purging: the ids' connection is released between chunks,
/// so an hour's worth of expired ids (millions on a busy source) never holds up new ids'
/// commits for more than one chunk.
const PURGE_CHUNK: usize = 10_000;

impl SqliteStore {
    /// Looks in the index only: the ids still in the log are the newest ones, which the
    /// deduplication memory always holds (see [`SqliteStore::remember_seen`]). Through the
    /// read-only lookup connection, so a lookup never waits behind a commit of new ids or an
    /// index move (a source with more ids in its window than memory and its fingerprints
    /// hold looks up every new id).
    pub(in crate::dlq) async fn seen_since(&self, key: &str, since: i64) -> Result<bool, DlqError> {
        let key = key.to_string();
        let err = self.err();
        self.on(&self.lookups, move |c| {
            c.prepare_cached("SELECT 1 FROM webhook_seen WHERE key = ?1 AND at >= ?2")
                .and_then(|mut stmt| stmt.query_row(params![key, since], |_| Ok(())).optional())
                .map(|r| r.is_some())
                .map_err(&err)
        })
        .await
    }

    /// Appends the ids to `webhook_seen_log`, one transaction for the batch.
    ///
    /// Appending costs a page or two per batch; inserting into the keyed index costs a page per
    /// id (a random B-tree position each), several times the rest of a webhook request. So the
    /// log is the durable record, and ids move into the index only once the log holds more than
    /// the deduplication memory would keep ([`SqliteStore::index_seen`]): every id not in memory
    /// is then in the index, and a store lookup never needs the (unindexed) log.
    ///
    /// The ids are committed without an fsync (WAL, `synchronous=NORMAL`, this connection only):
    /// the commit survives the process dying, kill -9 included; only an OS crash or a power loss
    /// can drop the last few, which would let a provider's retry of one of them through a second
    /// time (at-least-once). Dead letters keep `synchronous=FULL` on their own connection.
    pub(in crate::dlq) async fn remember_seen(
        &self,
        entries: Vec<(String, i64)>,
    ) -> Result<(), DlqError> {
        let this = self.clone();
        self.with_seen(move |c| {
            this.append_seen(c, entries.iter().map(|(k, at)| (k.as_str(), *at)))
        })
        .await
    }

    /// [`SqliteStore::remember_seen`] on the calling thread, which it blocks for the commit: for
    /// a thread of its own (the deduplication writer), never for an async task.
    pub fn remember_seen_blocking<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<(), DlqError> {
        let mut c = lock(&self.seen);
        self.append_seen(&mut c, entries)
    }

    /// [`SqliteStore::remember_seen_blocking`] if nothing else holds the ids' connection at
    /// this moment (`None` otherwise): for an event loop, which must not wait behind an index
    /// or purge transaction. The commit itself writes a page or two into the WAL, no fsync.
    pub fn try_remember_seen_now<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Option<Result<(), DlqError>> {
        match self.seen.try_lock() {
            Ok(mut c) => Some(self.append_seen(&mut c, entries)),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let mut c = recovered(p.into_inner());
                Some(self.append_seen(&mut c, entries))
            }
        }
    }

    /// Copies the WAL's committed pages into the database file when no reader needs them
    /// (`wal_checkpoint(PASSIVE)`: it never waits for, nor blocks, a writer), on the
    /// dead-letter connection, so the ids' connection stays free.
    pub fn checkpoint_blocking(&self) -> Result<(), DlqError> {
        let c = lock(&self.conn);
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.err())
    }

    fn append_seen<'a>(
        &self,
        c: &mut Connection,
        entries: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<(), DlqError> {
        let err = self.err();
        // BEGIN and COMMIT as cached statements: this runs once per batch, often for a handful
        // of ids, and parsing them each time was a visible part of its cost.
        c.prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
            .map_err(&err)?;
        let mut n = 0;
        let appended = (|| {
            let mut stmt =
                c.prepare_cached("INSERT INTO webhook_seen_log (key, at) VALUES (?1, ?2)")?;
            for (k, at) in entries {
                stmt.execute(params![k, at])?;
                n += 1;
            }
            c.prepare_cached("COMMIT").and_then(|mut s| s.execute([]))
        })();
        if let Err(e) = appended {
            if !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            return Err(err(e));
        }
        self.unindexed.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Ids in the log, not yet in the index.
    pub fn unindexed_seen(&self) -> usize {
        self.unindexed.load(Ordering::Relaxed)
    }

    /// Moves the oldest log rows into the index until at most `keep` remain in the log (at
    /// most [`INDEX_CHUNK`] per transaction); returns how many remain.
    pub(in crate::dlq) async fn index_seen(&self, keep: usize) -> Result<usize, DlqError> {
        let this = self.clone();
        self.with_seen(move |c| this.index_log(c, keep, false))
            .await
    }

    /// One transaction of [`SqliteStore::index_seen`] (at most [`INDEX_CHUNK`] ids) on the
    /// calling thread, which it blocks; returns how many remain in the log. The ids'
    /// connection is held for this one transaction only, so commits of new ids (which find it
    /// busy and queue for the writer thread) wait a few milliseconds at most.
    pub fn index_seen_chunk_blocking(&self, keep: usize) -> Result<usize, DlqError> {
        let mut c = lock(&self.seen);
        self.index_log(&mut c, keep, true)
    }

    fn index_log(&self, c: &mut Connection, keep: usize, once: bool) -> Result<usize, DlqError> {
        let err = self.err();
        if !once {
            // A full pass starts from the log's true size (the counter only tracks this
            // process's appends and moves).
            let remaining: i64 = c
                .query_row("SELECT count(*) FROM webhook_seen_log", [], |r| r.get(0))
                .map_err(&err)?;
            self.unindexed
                .store(usize::try_from(remaining).unwrap_or(0), Ordering::Relaxed);
        }
        loop {
            let remaining = self.unindexed.load(Ordering::Relaxed);
            if remaining <= keep {
                return Ok(remaining);
            }
            // Inserted in key order: neighbouring ids land on the same index pages, so a chunk
            // touches far fewer pages than in arrival (random key) order.
            let n = i64::try_from((remaining - keep).min(INDEX_CHUNK)).unwrap_or(0);
            let tx = c.transaction().map_err(&err)?;
            let upto: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM webhook_seen_log ORDER BY seq LIMIT 1 OFFSET ?1 - 1",
                    params![n],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?;
            let Some(upto) = upto else {
                // Fewer rows than counted (purged meanwhile): nothing more to move.
                self.unindexed.store(0, Ordering::Relaxed);
                return Ok(0);
            };
            tx.execute(
                "INSERT INTO webhook_seen (key, at)
                 SELECT key, at FROM webhook_seen_log WHERE seq <= ?1 ORDER BY key
                 ON CONFLICT (key) DO UPDATE SET at = max(at, excluded.at)",
                params![upto],
            )
            .map_err(&err)?;
            let moved = tx
                .execute(
                    "DELETE FROM webhook_seen_log WHERE seq <= ?1",
                    params![upto],
                )
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            let left = remaining.saturating_sub(moved);
            self.unindexed.store(left, Ordering::Relaxed);
            if once {
                return Ok(left);
            }
        }
    }

    pub(in crate::dlq) async fn recent_seen(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, DlqError> {
        let this = self.clone();
        self.with_seen(move |c| {
            let mut out = Vec::new();
            this.each_seen(c, since, i64::MAX, limit, |k, at| {
                out.push((k.to_string(), at));
                ControlFlow::Continue(())
            })?;
            Ok(out)
        })
        .await
    }

    /// Calls `each` with the ids accepted from `since` up to (not including) `before`, newest
    /// first, at most `limit` of them (or until `each` breaks), on the calling thread (which it
    /// blocks); returns how many it was given. It reads through a read-only connection of its own, so a long read (millions of
    /// ids, while the daemon serves) never holds up the commits of new ids: in WAL mode a
    /// reader and the writer do not wait for each other.
    pub fn each_seen_blocking(
        &self,
        since: i64,
        before: i64,
        limit: usize,
        each: impl FnMut(&str, i64) -> ControlFlow<()>,
    ) -> Result<usize, DlqError> {
        let err = self.err();
        let reader = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&err)?;
        self.each_seen(&reader, since, before, limit, each)
    }

    /// [`SqliteStore::each_seen_blocking`] on a connection already held.
    fn each_seen(
        &self,
        c: &Connection,
        since: i64,
        before: i64,
        limit: usize,
        mut each: impl FnMut(&str, i64) -> ControlFlow<()>,
    ) -> Result<usize, DlqError> {
        let err = self.err();
        let mut stmt = c
            .prepare(
                "SELECT key, at FROM webhook_seen_log WHERE at >= ?1 AND at < ?2
                 UNION ALL SELECT key, at FROM webhook_seen WHERE at >= ?1 AND at < ?2
                 ORDER BY at DESC LIMIT ?3",
            )
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![
                since,
                before,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])
            .map_err(&err)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(&err)? {
            let key: String = r.get(0).map_err(&err)?;
            n += 1;
            if each(&key, r.get(1).map_err(&err)?).is_break() {
                break;
            }
        }
        Ok(n)
    }

    pub(in crate::dlq) async fn purge_seen(&self, before: i64) -> Result<u64, DlqError> {
        // The index, a chunk per transaction (oldest first, through its `at` index).
        let mut purged = 0;
        loop {
            let err = self.err();
            let n = self
                .with_seen(move |c| {
                    c.prepare_cached(
                        "DELETE FROM webhook_seen WHERE rowid IN
                         (SELECT rowid FROM webhook_seen WHERE at < ?1 ORDER BY at LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![before, PURGE_CHUNK as i64]))
                    .map_err(&err)
                })
                .await?;
            purged += n;
            if n < PURGE_CHUNK {
                break;
            }
        }
        // The log holds at most a few hundred thousand ids: one transaction.
        let err = self.err();
        let unindexed = Arc::clone(&self.unindexed);
        self.with_seen(move |c| {
            let tx = c.transaction().map_err(&err)?;
            let mut n = purged;
            n += tx
                .execute(
                    "DELETE FROM webhook_seen_log WHERE at < ?1",
                    params![before],
                )
                .map_err(&err)?;
            let remaining: i64 = tx
                .query_row("SELECT count(*) FROM webhook_seen_log", [], |r| r.get(0))
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            unindexed.store(usize::try_from(remaining).unwrap_or(0), Ordering::Relaxed);
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_ids_are_purged_in_chunks_and_newer_ones_stay() {
        let (_dir, rt, store) = SqliteStore::scratch();
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
        let (_dir, rt, store) = SqliteStore::scratch();
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
        let (_dir, _rt, store) = SqliteStore::scratch();
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
}
