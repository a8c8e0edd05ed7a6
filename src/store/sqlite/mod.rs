//! The embedded store: one SQLite file (WAL mode, `synchronous=FULL`), so a
//! dead letter is on disk before the event is acknowledged, and a kill -9 loses nothing that
//! was committed; the newest webhook deduplication ids are appended to a second file beside it
//! ([`ids_file`]). Every call runs on the blocking pool; the daemon and the CLI may use the
//! file at the same time (SQLite serialises writers; `busy_timeout` waits for the lock).

mod audit;
mod seen;
mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::StoreError;
use super::dead_letters::{
    DeadLetter, EncodedRecord, NewDeadLetter, Selector, StatsRow, Status, decode_event,
    encode_event, stats_row,
};
use super::sql::{COLUMNS, Param, limit_clause, where_clause};

pub use seen::LocalIds;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dead_letters (
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
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_pending_source_event
    ON dead_letters(source, event_id, route) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS dead_letters_status ON dead_letters(status, last_failed_at);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    selector TEXT NOT NULL,
    count INTEGER NOT NULL,
    result TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    peer TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT '',
    prev_hash TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS webhook_seen (
    key TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_seen_at ON webhook_seen(at);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Changes to stores made by earlier versions, run after [`SCHEMA`] in the same transaction
/// (each statement is a no-op once applied):
/// - pending dead letters are unique per (source, event id, route), no longer per (event id,
///   route), which merged the dead letters of two sources that used the same event id. The old
///   key was stricter, so the new index always builds; rows keep their ids and data.
const MIGRATIONS: &str = "
DROP INDEX IF EXISTS dead_letters_pending_event;
";

/// The audit log's columns added after its first version (the hash chain and who, from where):
/// added to a store made before, in one write transaction; old rows keep empty values.
const AUDIT_COLUMNS: [&str; 5] = ["role", "peer", "request_id", "prev_hash", "hash"];

fn add_audit_columns(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let added = (|| {
        let have: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('audit_log')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for column in AUDIT_COLUMNS {
            if !have.iter().any(|c| c == column) {
                conn.execute_batch(&format!(
                    "ALTER TABLE audit_log ADD COLUMN {column} TEXT NOT NULL DEFAULT ''"
                ))?;
            }
        }
        Ok(())
    })();
    match added {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The deduplication ids' log, in a file of its own beside the store (see [`ids_file`]): one
/// row per committed batch of ids (see `seen::encode_batch`), so a commit inserts one row, not
/// one per id.
const IDS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ids.webhook_seen_batches (
    seq INTEGER PRIMARY KEY,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ids BLOB NOT NULL
);
";

/// Where the webhook deduplication ids' log lives: `<store file>-ids` (with its own `-wal` and
/// `-shm`), so that appending ids never waits for the store file's write lock, which dead
/// letters and the moves of ids into the keyed index (long transactions) hold. Losing it loses
/// only the newest ids (a provider retry of one is then delivered again), not dead letters.
pub(super) fn ids_file(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_os_string();
    name.push("-ids");
    PathBuf::from(name)
}

/// The connections [`SqliteStore::open`] makes.
struct Opened {
    conn: Connection,
    seen: Connection,
    index: Connection,
    lookups: Connection,
    unindexed: usize,
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// The webhook ids accepted, on connections of their own.
    ids: LocalIds,
}

impl SqliteStore {
    /// Opens or creates the file (and its directory).
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<Opened, String> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
            let ids = ids_file(&p);
            let ids = ids.to_str().ok_or_else(|| {
                format!(
                    "{}: the path is not UTF-8; give the DLQ a UTF-8 path",
                    ids.display()
                )
            })?;
            let open = |synchronous: &str| -> Result<Connection, String> {
                let conn = Connection::open(&p).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| e.to_string())?;
                conn.pragma_update(None, "synchronous", synchronous)
                    .map_err(|e| e.to_string())?;
                Ok(conn)
            };
            // A connection for the ids: the store and the ids' log, both without fsync on
            // commit; checkpoints (which fsync) only where asked for
            // ([`LocalIds::checkpoint_blocking`], on the deduplication writer thread): the
            // HTTP threads commit ids themselves (see `source::webhook::dedupe`).
            let open_ids = || -> Result<Connection, String> {
                let conn = open("NORMAL")?;
                conn.execute("ATTACH DATABASE ?1 AS ids", [ids])
                    .map_err(|e| e.to_string())?;
                conn.query_row("PRAGMA ids.journal_mode = WAL", [], |_| Ok(()))
                    .map_err(|e| e.to_string())?;
                conn.execute_batch("PRAGMA ids.synchronous = NORMAL")
                    .map_err(|e| e.to_string())?;
                conn.pragma_update(None, "wal_autocheckpoint", 0)
                    .map_err(|e| e.to_string())?;
                Ok(conn)
            };
            let conn = open("FULL")?;
            // One write transaction: a daemon and a CLI opening an old file at once migrate it
            // once (the second waits for the first, then finds nothing to do).
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} {MIGRATIONS} COMMIT;"))
                .map_err(|e| format!("creating or upgrading the tables: {e}"))?;
            add_audit_columns(&conn).map_err(|e| format!("upgrading the audit log: {e}"))?;
            let mut seen = open_ids()?;
            seen.execute_batch(IDS_SCHEMA).map_err(|e| e.to_string())?;
            seen::adopt_old_log(&mut seen).map_err(|e| e.to_string())?;
            let index = open_ids()?;
            let unindexed: i64 = seen
                .query_row(
                    "SELECT coalesce(sum(n), 0) FROM ids.webhook_seen_batches",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| e.to_string())?;
            let lookups = Connection::open_with_flags(
                &p,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| e.to_string())?;
            lookups
                .busy_timeout(std::time::Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok(Opened {
                conn,
                seen,
                index,
                lookups,
                unindexed: usize::try_from(unindexed).unwrap_or(0),
            })
        })
        .await
        .map_err(|e| StoreError::Sqlite {
            path: path.clone(),
            message: e.to_string(),
        })?
        .map_err(|message| StoreError::Sqlite {
            path: path.clone(),
            message,
        })?;
        let conn = Arc::new(Mutex::new(opened.conn));
        Ok(SqliteStore {
            ids: LocalIds {
                path: path.clone(),
                store: Arc::clone(&conn),
                seen: Arc::new(Mutex::new(opened.seen)),
                index: Arc::new(Mutex::new(opened.index)),
                lookups: Arc::new(Mutex::new(opened.lookups)),
                unindexed: Arc::new(AtomicUsize::new(opened.unindexed)),
            },
            path,
            conn,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.on(&self.conn, f).await
    }

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

    /// The webhook ids this store's instance accepted.
    pub fn ids(&self) -> &LocalIds {
        &self.ids
    }

    pub(super) async fn put(&self, l: &NewDeadLetter) -> Result<i64, StoreError> {
        let l = l.clone();
        let err = self.err();
        self.with(move |c| {
            c.query_row(
                "INSERT INTO dead_letters (event_id, source, route, topic, record_key_text,
                    event_json, record_key, record_value, class, message, attempts,
                    first_failed_at, last_failed_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?12)
                 ON CONFLICT (source, event_id, route) WHERE status = 'pending' DO UPDATE SET
                    attempts = attempts + excluded.attempts,
                    last_failed_at = excluded.last_failed_at,
                    updated_at = excluded.updated_at,
                    class = excluded.class,
                    message = excluded.message,
                    record_key = coalesce(excluded.record_key, record_key),
                    record_value = coalesce(excluded.record_value, record_value)
                 RETURNING id",
                params![
                    l.event.id.as_str(),
                    l.event.source,
                    l.route.clone().unwrap_or_default(),
                    l.topic,
                    l.key,
                    encode_event(&l.event),
                    l.record.as_ref().and_then(|r| r.key.clone()),
                    l.record.as_ref().map(|r| r.value.clone()),
                    l.class.as_str(),
                    l.message,
                    i64::from(l.attempts),
                    l.failed_at,
                ],
                |row| row.get(0),
            )
            .map_err(&err)
        })
        .await
    }

    pub(super) async fn list(&self, sel: &Selector) -> Result<Vec<DeadLetter>, StoreError> {
        let sel = sel.clone();
        let err = self.err();
        self.with(move |c| {
            let mut params = Vec::new();
            let w = where_clause(&sel, '?', &mut params);
            let sql = format!(
                "SELECT {COLUMNS} FROM dead_letters {w} ORDER BY id{}",
                limit_clause(&sel)
            );
            let mut stmt = c.prepare(&sql).map_err(&err)?;
            let rows = stmt
                .query_map(params_from_iter(to_sql(&params)), read_row)
                .map_err(&err)?;
            collect(rows, &err)
        })
        .await
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let err = self.err();
        self.with(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1");
            let row = c.query_row(&sql, [id], read_row).optional().map_err(&err)?;
            row.transpose()
        })
        .await
    }

    pub(super) async fn claim(
        &self,
        sel: &Selector,
        owner: &str,
        lease_until: i64,
        batch: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sel = sel.clone();
        let owner = owner.to_string();
        let err = self.err();
        self.with(move |c| {
            let now = crate::event::now_micros();
            let mut params = vec![Param::Text(owner), Param::Int(lease_until), Param::Int(now)];
            let w = where_clause(&sel, '?', &mut params);
            let sql = format!(
                "UPDATE dead_letters SET claimed_by = ?1, claimed_until = ?2
                 WHERE id IN (SELECT id FROM dead_letters {w}
                     AND status IN ('pending', 'replayed')
                     AND (claimed_until IS NULL OR claimed_until < ?3)
                     ORDER BY id LIMIT {batch})
                 RETURNING {COLUMNS}"
            );
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(&err)?;
            let out = {
                let mut stmt = tx.prepare(&sql).map_err(&err)?;
                let rows = stmt
                    .query_map(params_from_iter(to_sql(&params)), read_row)
                    .map_err(&err)?;
                collect(rows, &err)?
            };
            tx.commit().map_err(&err)?;
            let mut out = out;
            out.sort_by_key(|d| d.id);
            Ok(out)
        })
        .await
    }

    pub(super) async fn renew_claims(
        &self,
        owner: &str,
        lease_until: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let owner = owner.to_string();
        let err = self.err();
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "UPDATE dead_letters SET claimed_until = ?2
                     WHERE claimed_by = ?1 AND status IN ('pending', 'replayed')
                     RETURNING id",
                )
                .map_err(&err)?;
            let rows = stmt
                .query_map(params![owner, lease_until], |r| r.get::<_, i64>(0))
                .map_err(&err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(&err)
        })
        .await
    }

    pub(super) async fn confirm_claim(
        &self,
        id: i64,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_string();
        let err = self.err();
        self.with(move |c| {
            c.execute(
                "UPDATE dead_letters SET claimed_until = ?3
                 WHERE id = ?1 AND claimed_by = ?2 AND status IN ('pending', 'replayed')",
                params![id, owner, lease_until],
            )
            .map(|n| n == 1)
            .map_err(&err)
        })
        .await
    }

    pub(super) async fn claim_owners(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let err = self.err();
        self.with(move |c| {
            let mut stmt = c
                .prepare("SELECT DISTINCT claimed_by FROM dead_letters WHERE claimed_by IS NOT NULL AND claimed_until >= ?1")
                .map_err(&err)?;
            let rows = stmt.query_map([now], |r| r.get::<_, String>(0)).map_err(&err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(&err)
        })
        .await
    }

    pub(super) async fn release_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        let err = self.err();
        self.with(move |c| {
            c.execute(
                "UPDATE dead_letters SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?1",
                [owner],
            )
            .map(|n| n as u64)
            .map_err(&err)
        })
        .await
    }

    pub(super) async fn mark_replayed(
        &self,
        id: i64,
        owner: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        let (owner, note) = (owner.to_string(), note.to_string());
        let err = self.err();
        self.with(move |c| {
            let now = crate::event::now_micros();
            c.execute(
                "UPDATE dead_letters SET status = 'replayed', replay_count = replay_count + 1,
                    resolution = ?3, updated_at = ?4, claimed_by = NULL, claimed_until = NULL
                 WHERE id = ?1 AND claimed_by = ?2",
                params![id, owner, note, now],
            )
            .map(|n| n == 1)
            .map_err(&err)
        })
        .await
    }

    pub(super) async fn mark_replayed_all(
        &self,
        ids: Vec<i64>,
        owner: &str,
        note: &str,
    ) -> Result<u64, StoreError> {
        let (owner, note) = (owner.to_string(), note.to_string());
        let err = self.err();
        self.with(move |c| {
            let now = crate::event::now_micros();
            let tx = c.transaction().map_err(&err)?;
            let mut n = 0u64;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE dead_letters SET status = 'replayed', replay_count = replay_count + 1,
                            resolution = ?3, updated_at = ?4, claimed_by = NULL, claimed_until = NULL
                         WHERE id = ?1 AND claimed_by = ?2",
                    )
                    .map_err(&err)?;
                for id in ids {
                    n += stmt.execute(params![id, owner, note, now]).map_err(&err)? as u64;
                }
            }
            tx.commit().map_err(&err)?;
            Ok(n)
        })
        .await
    }

    pub(super) async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        class: &str,
        message: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let (owner, class, message) = (owner.to_string(), class.to_string(), message.to_string());
        let err = self.err();
        self.with(move |c| {
            c.execute(
                "UPDATE dead_letters SET attempts = attempts + 1, class = ?3, message = ?4,
                    last_failed_at = ?5, updated_at = ?5, claimed_by = NULL, claimed_until = NULL
                 WHERE id = ?1 AND claimed_by = ?2",
                params![id, owner, class, message, at],
            )
            .map(|_| ())
            .map_err(&err)
        })
        .await
    }

    pub(super) async fn discard(&self, sel: &Selector, reason: &str) -> Result<u64, StoreError> {
        let sel = sel.clone();
        let reason = reason.to_string();
        let err = self.err();
        self.with(move |c| {
            let now = crate::event::now_micros();
            let mut params = vec![Param::Text(reason), Param::Int(now)];
            let w = where_clause(&sel, '?', &mut params);
            let sql = format!(
                "UPDATE dead_letters SET status = 'discarded', resolution = ?1, updated_at = ?2
                 WHERE id IN (SELECT id FROM dead_letters {w} AND status = 'pending'
                     AND (claimed_until IS NULL OR claimed_until < ?2) ORDER BY id{})",
                limit_clause(&sel)
            );
            c.execute(&sql, params_from_iter(to_sql(&params)))
                .map(|n| n as u64)
                .map_err(&err)
        })
        .await
    }

    pub(super) async fn stats(&self) -> Result<Vec<StatsRow>, StoreError> {
        let err = self.err();
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT route, class, status, count(*) FROM dead_letters
                     GROUP BY route, class, status ORDER BY route, class, status",
                )
                .map_err(&err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(&err)?;
            let mut out = Vec::new();
            for row in rows {
                let (route, class, status, count) = row.map_err(&err)?;
                out.push(stats_row(route, class, &status, count)?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        let err = self.err();
        self.with(move |c| {
            c.execute(
                "DELETE FROM dead_letters WHERE status IN ('replayed', 'discarded') AND updated_at < ?1",
                [before],
            )
            .map(|n| n as u64)
            .map_err(&err)
        })
        .await
    }
}

/// Runs `f` on `conn` on the blocking pool (the file at `path`, for errors).
async fn run_on<T: Send + 'static>(
    path: &Path,
    conn: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut guard = lock(&conn);
        f(&mut guard)
    })
    .await
    .map_err(|e| StoreError::Sqlite {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?
}

/// Turns a SQLite error on the file at `path` into the store's.
fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Send + 'static {
    let path = path.to_path_buf();
    move |e| StoreError::Sqlite {
        path: path.clone(),
        message: e.to_string(),
    }
}

/// Locks a connection. A thread that panicked while holding it left it usable (SQLite itself
/// is consistent: an open transaction is rolled back here), so the lock's poisoning is cleared
/// rather than failing every later write.
fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    match conn.lock() {
        Ok(c) => c,
        Err(p) => {
            conn.clear_poison();
            recovered(p.into_inner())
        }
    }
}

/// A connection taken over from a thread that panicked: its transaction, if any, rolled back.
fn recovered(c: std::sync::MutexGuard<'_, Connection>) -> std::sync::MutexGuard<'_, Connection> {
    if !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
    tracing::warn!(
        "a thread failed while using the DLQ database; its open transaction was rolled back"
    );
    c
}

fn to_sql(params: &[Param]) -> Vec<SqlValue> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(i) => SqlValue::Integer(*i),
            Param::Text(t) => SqlValue::Text(t.clone()),
        })
        .collect()
}

type RowResult = Result<DeadLetter, StoreError>;

fn read_row(r: &Row<'_>) -> rusqlite::Result<RowResult> {
    let id: i64 = r.get(0)?;
    let route: String = r.get(3)?;
    let status: String = r.get(11)?;
    let event_json: String = r.get(14)?;
    let record_key: Option<Vec<u8>> = r.get(15)?;
    let record_value: Option<Vec<u8>> = r.get(16)?;
    let status = match status.parse::<Status>() {
        Ok(s) => s,
        Err(message) => return Ok(Err(StoreError::Corrupt { id, message })),
    };
    let event = match decode_event(id, &event_json) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(DeadLetter {
        id,
        event_id: r.get(1)?,
        source: r.get(2)?,
        route: (!route.is_empty()).then_some(route),
        topic: r.get(4)?,
        key: r.get(5)?,
        class: r.get(6)?,
        message: r.get(7)?,
        attempts: r.get(8)?,
        first_failed_at: r.get(9)?,
        last_failed_at: r.get(10)?,
        status,
        replay_count: r.get(12)?,
        resolution: r.get(13)?,
        event: Some(event),
        record: record_value.map(|value| EncodedRecord {
            key: record_key,
            value,
        }),
    }))
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<RowResult>>,
    err: &impl Fn(rusqlite::Error) -> StoreError,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(err)??);
    }
    Ok(out)
}

#[cfg(test)]
impl SqliteStore {
    /// A store in a fresh temporary directory (kept while the `TempDir` lives), with a runtime
    /// to drive its calls: for unit tests.
    pub(crate) fn scratch() -> (tempfile::TempDir, tokio::runtime::Runtime, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store = rt
            .block_on(SqliteStore::open(&dir.path().join("dlq.db")))
            .expect("open");
        (dir, rt, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_left_by_a_panicking_thread_is_usable_again() {
        let (_dir, rt, store) = SqliteStore::scratch();
        let store = store.ids().clone();
        let seen = Arc::clone(&store.seen);
        let failed = std::thread::spawn(move || {
            let c = seen.lock().expect("lock");
            c.execute_batch(
                "BEGIN; INSERT INTO ids.webhook_seen_batches (first_at, last_at, n, ids) VALUES (1, 1, 1, x'');",
            )
            .expect("begin");
            panic!("a bug while holding the ids' connection");
        })
        .join();
        assert!(failed.is_err());
        assert!(store.seen.is_poisoned());
        // Later writes work, and the failed thread's transaction did not commit.
        store
            .remember_seen_blocking([("s\u{1f}kept", 5)])
            .expect("written after the failure");
        assert!(!store.seen.is_poisoned());
        assert_eq!(
            store
                .try_remember_seen_now([("s\u{1f}also", 6)])
                .map(|r| r.is_ok()),
            Some(true)
        );
        let ids = rt.block_on(store.recent_seen(0, 10)).expect("read");
        let mut keys: Vec<String> = ids.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, vec!["s\u{1f}also", "s\u{1f}kept"]);
    }
}
