//! The embedded store's webhook deduplication ids: a log the HTTP threads append to (in a file
//! of its own, [`super::ids_file`]), moved in key order into a keyed index in the store file by
//! the deduplication writer thread, and purged by age (see `source::webhook::dedupe`). The
//! log's commits take only the log file's write lock: they never wait behind a dead letter's
//! fsync or an index move, and moves can be long transactions (fewer index pages written per
//! id) without holding them up.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{lock, recovered, run_on, sqlite_err};
use crate::store::StoreError;

/// About how many logged ids (whole batches) move into the index in one transaction. A move
/// writes every index page its ids land on (a random position each): the more ids per
/// transaction, the more of them share a page. It holds the store file's write lock (dead
/// letters wait; new ids, in their own file, do not) for tens of milliseconds.
const INDEX_CHUNK: usize = 8192;

/// Ids deleted per transaction when purging: the ids' connection is released between chunks,
/// so an hour's worth of expired ids (millions on a busy source) never holds up new ids'
/// commits for more than one chunk.
const PURGE_CHUNK: usize = 10_000;

/// Moves the ids of a log kept in the store file itself (before the log had a file of its
/// own) into the log file, on `c` (the ids' connection, at open); then drops the old table.
pub(super) fn adopt_old_log(c: &mut Connection) -> rusqlite::Result<()> {
    let old: bool = c.query_row(
        "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = 'webhook_seen_log'",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    // At most the few hundred thousand ids the old log kept before they were indexed.
    let old: Vec<(String, i64)> = c
        .prepare("SELECT key, at FROM main.webhook_seen_log ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let tx = c.transaction()?;
    let mut blob = Vec::new();
    for batch in old.chunks(ADOPT_BATCH) {
        append_batch(
            &tx,
            batch.iter().map(|(k, at)| (k.as_str(), *at)),
            &mut blob,
        )?;
    }
    tx.execute_batch("DROP TABLE main.webhook_seen_log")?;
    tx.commit()
}

thread_local! {
    /// Scratch space for encoding a batch, per thread (HTTP threads commit their own batches).
    static BLOB: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Ids per batch row when an old log is adopted.
const ADOPT_BATCH: usize = 1024;

/// Appends `entries` to the log as one row on `c` (in the caller's transaction or on its own);
/// returns how many ids it holds (no row for none). `blob` is scratch space.
fn append_batch<'a>(
    c: &Connection,
    entries: impl IntoIterator<Item = (&'a str, i64)>,
    blob: &mut Vec<u8>,
) -> rusqlite::Result<usize> {
    let (n, first, last) = encode_batch(entries, blob);
    if n == 0 {
        return Ok(0);
    }
    c.prepare_cached(
        "INSERT INTO ids.webhook_seen_batches (first_at, last_at, n, ids) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        first,
        last,
        i64::try_from(n).unwrap_or(i64::MAX),
        &blob[..]
    ])?;
    Ok(n)
}

/// Writes `entries` into `blob` as a batch row's `ids`: for each id its time (8 bytes,
/// little-endian), its key's length (4 bytes) and the key. Returns how many, the first
/// (oldest) time and the last (newest).
fn encode_batch<'a>(
    entries: impl IntoIterator<Item = (&'a str, i64)>,
    blob: &mut Vec<u8>,
) -> (usize, i64, i64) {
    blob.clear();
    let (mut n, mut first, mut last) = (0usize, i64::MAX, i64::MIN);
    for (key, at) in entries {
        blob.extend_from_slice(&at.to_le_bytes());
        blob.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        blob.extend_from_slice(key.as_bytes());
        n += 1;
        first = first.min(at);
        last = last.max(at);
    }
    (n, first, last)
}

/// How many ids a batch row's `ids` holds (as far as it can be read).
fn each_count(ids: &[u8]) -> usize {
    let mut n = 0;
    let _ = each_in_batch(ids, |_, _| n += 1);
    n
}

/// Calls `each` with every (key, time) of a batch row's `ids`, in the order they were
/// appended; an error if the row is not a batch this module wrote.
fn each_in_batch(ids: &[u8], mut each: impl FnMut(&str, i64)) -> Result<(), String> {
    let mut rest = ids;
    while !rest.is_empty() {
        let (at, after) = rest.split_at_checked(8).ok_or("a truncated time")?;
        let (len, after) = after.split_at_checked(4).ok_or("a truncated key length")?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| "a key length")?) as usize;
        let (key, after) = after.split_at_checked(len).ok_or("a truncated key")?;
        let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8")?;
        each(
            key,
            i64::from_le_bytes(at.try_into().map_err(|_| "a time")?),
        );
        rest = after;
    }
    Ok(())
}

/// The embedded store's webhook ids ([`crate::store::SeenIds::Local`]): a log the HTTP threads
/// append to and a keyed index the deduplication writer thread moves them into, each on
/// connections of its own.
#[derive(Clone)]
pub struct LocalIds {
    pub(super) path: PathBuf,
    /// The store file's own connection (for its WAL checkpoints).
    pub(super) store: Arc<Mutex<Connection>>,
    /// Webhook deduplication ids' own connection (`synchronous=NORMAL`, see
    /// [`LocalIds::remember_seen`]), with the ids' log file attached as `ids`: appending ids
    /// takes only that file's write lock, never waiting behind a dead letter's fsync or an index
    /// move.
    pub(super) seen: Arc<Mutex<Connection>>,
    /// The deduplication writer thread's connection (also with `ids` attached): moves ids from
    /// the log into the keyed index (the store file's write lock only) and purges the index.
    pub(super) index: Arc<Mutex<Connection>>,
    /// A read-only connection for deduplication lookups: in WAL mode it never waits for the
    /// ids' commits or index moves, nor they for it.
    pub(super) lookups: Arc<Mutex<Connection>>,
    /// Rows of the ids' log not yet moved into the `webhook_seen` index.
    pub(super) unindexed: Arc<AtomicUsize>,
}

impl LocalIds {
    async fn on<T: Send + 'static>(
        &self,
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(&self.path, conn, f).await
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + Send + 'static {
        sqlite_err(&self.path)
    }

    /// Looks in the index only: the ids still in the log are the newest ones, which the
    /// deduplication memory always holds (see [`LocalIds::remember_seen`]). Through the
    /// read-only lookup connection, so a lookup never waits behind a commit of new ids or an
    /// index move (a source with more ids in its window than memory and its fingerprints
    /// hold looks up every new id).
    pub(in crate::store) async fn seen_since(
        &self,
        key: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        let key = key.to_string();
        let err = self.err();
        self.on(&self.lookups, move |c| {
            c.prepare_cached("SELECT 1 FROM main.webhook_seen WHERE key = ?1 AND at >= ?2")
                .and_then(|mut stmt| stmt.query_row(params![key, since], |_| Ok(())).optional())
                .map(|r| r.is_some())
                .map_err(&err)
        })
        .await
    }

    /// Appends the ids to the log (`ids.webhook_seen_batches`), one row for the batch.
    ///
    /// Appending costs a page or two per batch; inserting into the keyed index costs a page per
    /// id (a random B-tree position each), several times the rest of a webhook request. So the
    /// log is the durable record, and ids move into the index only once the log holds more than
    /// the deduplication memory would keep ([`LocalIds::index_seen`]): every id not in memory
    /// is then in the index, and a store lookup never needs the (unindexed) log.
    ///
    /// The ids are committed without an fsync (WAL, `synchronous=NORMAL`, this connection only):
    /// the commit survives the process dying, kill -9 included; only an OS crash or a power loss
    /// can drop the last few, which would let a provider's retry of one of them through a second
    /// time (at-least-once). Dead letters keep `synchronous=FULL` on their own connection.
    pub(in crate::store) async fn remember_seen(
        &self,
        entries: Vec<(String, i64)>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        self.on(&self.seen, move |c| {
            this.append_seen(c, entries.iter().map(|(k, at)| (k.as_str(), *at)))
        })
        .await
    }

    /// [`LocalIds::remember_seen`] on the calling thread, which it blocks for the commit: for
    /// a thread of its own (the deduplication writer), never for an async task.
    pub(crate) fn remember_seen_blocking<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<(), StoreError> {
        let mut c = lock(&self.seen);
        self.append_seen(&mut c, entries)
    }

    /// [`LocalIds::remember_seen_blocking`] if nothing else holds the ids' connection at
    /// this moment (`None` otherwise): for an event loop, which must not wait behind an index
    /// or purge transaction. The commit itself writes a page or two into the WAL, no fsync.
    pub(crate) fn try_remember_seen_now<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Option<Result<(), StoreError>> {
        match self.seen.try_lock() {
            Ok(mut c) => Some(self.append_seen(&mut c, entries)),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let mut c = recovered(p.into_inner());
                Some(self.append_seen(&mut c, entries))
            }
        }
    }

    /// Copies the WALs' committed pages (the store file's and the ids' log's) into their
    /// database files when no reader needs them (`wal_checkpoint(PASSIVE)`: it never waits for,
    /// nor blocks, a writer), on the dead-letter and index connections, so the ids' connection
    /// stays free.
    pub(crate) fn checkpoint_blocking(&self) -> Result<(), StoreError> {
        lock(&self.store)
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.err())?;
        lock(&self.index)
            .query_row("PRAGMA ids.wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.err())
    }

    fn append_seen<'a>(
        &self,
        c: &mut Connection,
        entries: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<(), StoreError> {
        // One row for the whole batch (its own transaction): a row per id cost about 4,000
        // instructions each, most of a commit.
        let n = BLOB
            .with(|b| append_batch(c, entries, &mut b.borrow_mut()))
            .map_err(self.err())?;
        self.unindexed.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Ids in the log, not yet in the index.
    pub fn unindexed_seen(&self) -> usize {
        self.unindexed.load(Ordering::Relaxed)
    }

    /// Moves the oldest logged ids into the index until at most `keep` remain in the log (about
    /// [`INDEX_CHUNK`] per transaction); returns how many remain.
    pub async fn index_seen(&self, keep: usize) -> Result<usize, StoreError> {
        let this = self.clone();
        self.on(&self.index, move |c| {
            // A full pass starts from the log's true size (the counter only tracks this
            // process's appends and moves).
            let remaining: i64 = c
                .query_row(
                    "SELECT coalesce(sum(n), 0) FROM ids.webhook_seen_batches",
                    [],
                    |r| r.get(0),
                )
                .map_err(this.err())?;
            this.unindexed
                .store(usize::try_from(remaining).unwrap_or(0), Ordering::Relaxed);
            loop {
                let left = this.index_chunk(c, keep)?;
                if left <= keep {
                    return Ok(left);
                }
            }
        })
        .await
    }

    /// One transaction of [`LocalIds::index_seen`] (at most [`INDEX_CHUNK`] ids) on the
    /// calling thread, which it blocks; returns how many remain in the log. New ids' commits
    /// (the log file) do not wait for it; the ids' connection is held only to delete the moved
    /// rows from the log afterwards.
    pub(crate) fn index_seen_chunk_blocking(&self, keep: usize) -> Result<usize, StoreError> {
        let mut c = lock(&self.index);
        self.index_chunk(&mut c, keep)
    }

    /// Moves the oldest log batches, about [`INDEX_CHUNK`] ids (whole batches, beyond `keep`),
    /// into the index on the index connection `c` (one transaction, the store file's write
    /// lock), then deletes them from the log on the ids' connection (the log file's, briefly).
    /// Between the two, and if the process dies there, the ids are in both: a lookup finds them
    /// either way, and moving them again keeps the later time.
    fn index_chunk(&self, c: &mut Connection, keep: usize) -> Result<usize, StoreError> {
        let err = self.err();
        let remaining = self.unindexed.load(Ordering::Relaxed);
        if remaining <= keep {
            return Ok(remaining);
        }
        let want = (remaining - keep).min(INDEX_CHUNK);
        let tx = c.transaction().map_err(&err)?;
        let mut ids: Vec<(String, i64)> = Vec::with_capacity(want + 256);
        let mut upto = None;
        {
            let mut batches = tx
                .prepare_cached("SELECT seq, ids FROM ids.webhook_seen_batches ORDER BY seq")
                .map_err(&err)?;
            let mut rows = batches.query([]).map_err(&err)?;
            while ids.len() < want {
                let Some(r) = rows.next().map_err(&err)? else {
                    break;
                };
                let blob = r.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(&err)?;
                each_in_batch(blob, |k, at| ids.push((k.to_string(), at))).map_err(|why| {
                    StoreError::Sqlite {
                        path: self.path.clone(),
                        message: format!("a batch of the deduplication ids' log holds {why}"),
                    }
                })?;
                upto = Some(r.get::<_, i64>(0).map_err(&err)?);
            }
        }
        let Some(upto) = upto else {
            // Fewer ids than counted (purged meanwhile): nothing more to move.
            self.unindexed.store(0, Ordering::Relaxed);
            return Ok(0);
        };
        // Inserted in key order: neighbouring ids land on the same index pages, so a chunk
        // touches far fewer pages than in arrival (random key) order.
        ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO main.webhook_seen (key, at) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET at = max(at, excluded.at)",
                )
                .map_err(&err)?;
            for (key, at) in &ids {
                insert.execute(params![key, at]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        lock(&self.seen)
            .prepare_cached("DELETE FROM ids.webhook_seen_batches WHERE seq <= ?1")
            .and_then(|mut d| d.execute(params![upto]))
            .map_err(&err)?;
        let moved = ids.len();
        // Ids appended meanwhile were counted in: subtract, do not overwrite.
        let before = self
            .unindexed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(moved))
            })
            .unwrap_or(0);
        Ok(before.saturating_sub(moved))
    }

    pub(in crate::store) async fn recent_seen(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let this = self.clone();
        self.on(&self.seen, move |c| {
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
    pub(crate) fn each_seen_blocking(
        &self,
        since: i64,
        before: i64,
        limit: usize,
        each: impl FnMut(&str, i64) -> ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let err = self.err();
        let reader = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&err)?;
        // Opened read-only, like the store file.
        reader
            .execute(
                "ATTACH DATABASE ?1 AS ids",
                [super::ids_file(&self.path).to_string_lossy()],
            )
            .map_err(&err)?;
        self.each_seen(&reader, since, before, limit, each)
    }

    /// [`LocalIds::each_seen_blocking`] on a connection already held: the log's ids (at
    /// most a few hundred thousand, read whole) merged, newest first, with the index's.
    fn each_seen(
        &self,
        c: &Connection,
        since: i64,
        before: i64,
        limit: usize,
        mut each: impl FnMut(&str, i64) -> ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let err = self.err();
        let mut logged: Vec<(String, i64)> = Vec::new();
        {
            let mut batches = c
                .prepare(
                    "SELECT ids FROM ids.webhook_seen_batches WHERE last_at >= ?1 AND first_at < ?2",
                )
                .map_err(&err)?;
            let mut rows = batches.query(params![since, before]).map_err(&err)?;
            while let Some(r) = rows.next().map_err(&err)? {
                let blob = r.get_ref(0).and_then(|v| Ok(v.as_blob()?)).map_err(&err)?;
                each_in_batch(blob, |k, at| {
                    if at >= since && at < before {
                        logged.push((k.to_string(), at));
                    }
                })
                .map_err(|why| StoreError::Sqlite {
                    path: self.path.clone(),
                    message: format!("a batch of the deduplication ids' log holds {why}"),
                })?;
            }
        }
        // Newest last, taken from the end.
        logged.sort_unstable_by_key(|(_, at)| *at);
        let mut stmt = c
            .prepare(
                "SELECT key, at FROM main.webhook_seen WHERE at >= ?1 AND at < ?2
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
        let mut indexed: Option<(String, i64)> = None;
        let mut indexed_done = false;
        let mut n = 0;
        while n < limit {
            if indexed.is_none() && !indexed_done {
                match rows.next().map_err(&err)? {
                    Some(r) => indexed = Some((r.get(0).map_err(&err)?, r.get(1).map_err(&err)?)),
                    None => indexed_done = true,
                }
            }
            let from_log = match (logged.last(), &indexed) {
                (Some((_, l)), Some((_, i))) => l >= i,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (key, at) = if from_log {
                logged.pop()
            } else {
                indexed.take()
            }
            .ok_or_else(|| err(rusqlite::Error::QueryReturnedNoRows))?;
            n += 1;
            if each(&key, at).is_break() {
                break;
            }
        }
        Ok(n)
    }

    pub(in crate::store) async fn purge_seen(&self, before: i64) -> Result<u64, StoreError> {
        // The index, a chunk per transaction (oldest first, through its `at` index).
        let mut purged = 0;
        loop {
            let err = self.err();
            let n = self
                .on(&self.index, move |c| {
                    c.prepare_cached(
                        "DELETE FROM main.webhook_seen WHERE rowid IN
                         (SELECT rowid FROM main.webhook_seen WHERE at < ?1 ORDER BY at LIMIT ?2)",
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
        let path = self.path.clone();
        let unindexed = Arc::clone(&self.unindexed);
        self.on(&self.seen, move |c| {
            let tx = c.transaction().map_err(&err)?;
            let mut n = purged;
            // Whole batches whose newest id expired (a batch spans a few milliseconds).
            let expired: i64 = tx
                .query_row(
                    "SELECT coalesce(sum(n), 0) FROM ids.webhook_seen_batches WHERE last_at < ?1",
                    params![before],
                    |r| r.get(0),
                )
                .map_err(&err)?;
            tx.execute(
                "DELETE FROM ids.webhook_seen_batches WHERE last_at < ?1",
                params![before],
            )
            .map_err(&err)?;
            n += usize::try_from(expired).unwrap_or(0);
            // Batches partly expired: rewritten in place (same place in the log, which is
            // moved into the index oldest first) with the ids still in the window.
            let partly: Vec<(i64, Vec<u8>)> = tx
                .prepare(
                    "SELECT seq, ids FROM ids.webhook_seen_batches WHERE first_at < ?1 AND last_at >= ?1",
                )
                .and_then(|mut q| {
                    q.query_map(params![before], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(&err)?;
            for (seq, ids) in partly {
                let mut kept = Vec::new();
                each_in_batch(&ids, |k, at| {
                    if at >= before {
                        kept.push((k.to_string(), at));
                    }
                })
                .map_err(|why| StoreError::Sqlite {
                    path: path.clone(),
                    message: format!("a batch of the deduplication ids' log holds {why}"),
                })?;
                let mut blob = Vec::new();
                let (left, first, last) =
                    encode_batch(kept.iter().map(|(k, at)| (k.as_str(), *at)), &mut blob);
                tx.execute(
                    "UPDATE ids.webhook_seen_batches SET first_at = ?2, last_at = ?3, n = ?4, ids = ?5
                     WHERE seq = ?1",
                    params![seq, first, last, i64::try_from(left).unwrap_or(i64::MAX), blob],
                )
                .map_err(&err)?;
                n += each_count(&ids).saturating_sub(left);
            }
            let remaining: i64 = tx
                .query_row(
                    "SELECT coalesce(sum(n), 0) FROM ids.webhook_seen_batches",
                    [],
                    |r| r.get(0),
                )
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            unindexed.store(usize::try_from(remaining).unwrap_or(0), Ordering::Relaxed);
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
