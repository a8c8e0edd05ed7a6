//! The shared dead-letter store: PostgreSQL, so several switchyard instances see one DLQ.
//! Same schema and semantics as the SQLite store; claims use `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, ToStatement};

use super::StoreError;
use super::dead_letters::{
    DeadLetter, EncodedRecord, NewDeadLetter, Selector, StatsRow, Status, decode_event,
    encode_event, stats_row,
};
use super::sql::{COLUMNS, Param, limit_clause, where_clause};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS switchyard_dead_letters (
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
CREATE UNIQUE INDEX IF NOT EXISTS switchyard_dead_letters_pending_source_event
    ON switchyard_dead_letters(source, event_id, route) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS switchyard_dead_letters_status
    ON switchyard_dead_letters(status, last_failed_at);
CREATE TABLE IF NOT EXISTS switchyard_dlq_audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    selector TEXT NOT NULL,
    count BIGINT NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS switchyard_webhook_seen (
    key TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS switchyard_webhook_seen_at ON switchyard_webhook_seen(at);
CREATE TABLE IF NOT EXISTS switchyard_webhook_claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS switchyard_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
";

/// Changes to stores made by earlier versions, run after [`SCHEMA`] in the same transaction
/// (each statement is a no-op once applied):
/// - pending dead letters are unique per (source, event id, route), no longer per (event id,
///   route), which merged the dead letters of two sources that used the same event id. The old
///   key was stricter, so the new index always builds; rows keep their ids and data.
const MIGRATIONS: &str = "
DROP INDEX IF EXISTS switchyard_dead_letters_pending_event;
ALTER TABLE switchyard_dlq_audit ADD COLUMN IF NOT EXISTS role TEXT NOT NULL DEFAULT '';
ALTER TABLE switchyard_dlq_audit ADD COLUMN IF NOT EXISTS peer TEXT NOT NULL DEFAULT '';
ALTER TABLE switchyard_dlq_audit ADD COLUMN IF NOT EXISTS request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE switchyard_dlq_audit ADD COLUMN IF NOT EXISTS prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE switchyard_dlq_audit ADD COLUMN IF NOT EXISTS hash TEXT NOT NULL DEFAULT '';
";

/// The advisory lock (transaction-level) that orders appends to the audit log of every
/// instance: each row is chained to the one written before it.
const AUDIT_LOCK: i64 = 7406231;

/// The advisory lock (transaction-level) that serialises instances creating or upgrading the
/// tables at once.
const SCHEMA_LOCK: i64 = 7406230;

const TABLE: &str = "switchyard_dead_letters";

mod audit;
mod seen;
mod state;

/// The PostgreSQL store.
pub struct PostgresStore {
    client: Conns,
    /// This store's name on the webhook ids it claims (`host:pid:n`, one per connection).
    owner: String,
}

/// A name for this connection's claims, unique across processes and connections.
fn claim_owner() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}:{}:{}",
        crate::store::hostname(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Connections to the store at once, at most. Each call takes one for a statement (no call
/// holds one across statements); several webhook threads, the dedupe writer, readiness and a
/// replay share them. A busy webhook front needs a few per new id (claim, lookup, the
/// group-committed remember): 16 keeps a burst from waiting on the pool.
const POOL_SIZE: usize = 16;
/// How long a connection attempt may take unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for one of [`POOL_SIZE`] connections to be free.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's connections: a bounded deadpool-postgres pool. A connection the server closed
/// (its database restarted, an admin ended it, the network dropped it) is found closed when
/// the next call takes it (`is_closed()`) and replaced by a new one; so after the database
/// is back the next call succeeds, with no restart of switchyard. deadpool rather than a
/// hand-written reconnect: it already does the bounded size, the closed-connection check
/// and the create/wait timeouts on tokio, and it is a small crate on tokio-postgres 0.7.
struct Conns {
    pool: Pool,
}

/// A store call that failed: no connection, or the statement failed.
enum CallError {
    Pool(PoolError),
    Sql(tokio_postgres::Error),
}

impl Conns {
    async fn get(&self) -> Result<deadpool_postgres::Object, CallError> {
        self.pool.get().await.map_err(CallError::Pool)
    }

    async fn query<T: ?Sized + ToStatement + Sync>(
        &self,
        sql: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, CallError> {
        self.get()
            .await?
            .query(sql, params)
            .await
            .map_err(CallError::Sql)
    }

    async fn query_one<T: ?Sized + ToStatement + Sync>(
        &self,
        sql: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, CallError> {
        let c = self.get().await?;
        c.query_one(sql, params).await.map_err(CallError::Sql)
    }

    async fn query_opt<T: ?Sized + ToStatement + Sync>(
        &self,
        sql: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, CallError> {
        let c = self.get().await?;
        c.query_opt(sql, params).await.map_err(CallError::Sql)
    }

    async fn execute<T: ?Sized + ToStatement + Sync>(
        &self,
        sql: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, CallError> {
        self.get()
            .await?
            .execute(sql, params)
            .await
            .map_err(CallError::Sql)
    }
}

fn pg(e: CallError) -> StoreError {
    match e {
        CallError::Sql(e) => sql_error(&e, ""),
        CallError::Pool(PoolError::Backend(e)) => sql_error(&e, "connecting: "),
        CallError::Pool(PoolError::Timeout(_)) => StoreError::PostgresUnavailable(format!(
            "no connection to the store's database within {}s (all {POOL_SIZE} busy, or the database does not answer)",
            WAIT_TIMEOUT.as_secs()
        )),
        CallError::Pool(e) => StoreError::Postgres(e.to_string()),
    }
}

/// A failed statement or connection attempt as a store error: transient (the database is
/// restarting or unreachable, the connection was lost, a serialization failure or deadlock:
/// the same call may succeed later) or definite (bad SQL, a constraint, authentication, TLS
/// verification). `context` prefixes the message.
fn sql_error(e: &tokio_postgres::Error, context: &str) -> StoreError {
    let message = format!("{context}{}", pg_message(e));
    if is_transient(e) {
        StoreError::PostgresUnavailable(message)
    } else {
        StoreError::Postgres(message)
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08") // connection exception
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED;
    }
    // No answer from the server: refused, reset, timed out (an I/O error somewhere below).
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The server's message if it sent one, else the client's.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

fn bind(params: &[Param]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Int(i) => Box::new(*i),
                Param::Text(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

fn refs(b: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    b.iter()
        .map(|x| x.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PostgresStore {
    /// Connects (TLS as `sslmode`/`sslrootcert` in `url` say, as for postgres sources) and
    /// creates the tables on first use.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        // Relative sslrootcert paths were made absolute when the config was loaded.
        let (url, tls) = crate::config::url_tls(url, std::path::Path::new(""))
            .map_err(|e| StoreError::Postgres(format!("{} ({})", e.message, e.help)))?;
        let mut cfg = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Postgres(format!("invalid url: {e}")))?;
        cfg.ssl_mode(crate::pg_tls::sql_mode(&tls));
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        // A database node that vanished (failover, lost host) leaves half-open connections
        // that no error ends: probe idle ones, and give up on unacknowledged requests.
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30));
        // The handshake (TCP, TLS, authentication) of a new connection, at most.
        let create_timeout = cfg
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT)
            + CONNECT_TIMEOUT;
        // With sslmode=disable tokio-postgres never starts TLS: the connector goes unused.
        let connector = crate::pg_tls::sql_connector(&tls).map_err(StoreError::Postgres)?;
        let manager = Manager::from_config(
            cfg,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(create_timeout))
            .wait_timeout(Some(WAIT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        let client = Conns { pool };
        // Concurrent first starts (and upgrades) race on CREATE … IF NOT EXISTS and the
        // migrations; serialise them: one transaction under a transaction-level advisory lock,
        // so the lock goes with the transaction whatever happens.
        let conn = client.get().await.map_err(pg)?;
        conn.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} {MIGRATIONS} COMMIT;"
        ))
        .await
        .map_err(|e| sql_error(&e, "creating or upgrading the tables: "))?;
        drop(conn);
        Ok(PostgresStore {
            client,
            owner: claim_owner(),
        })
    }

    pub(super) async fn put(&self, l: &NewDeadLetter) -> Result<i64, StoreError> {
        let row = self
            .client
            .query_one(
                &format!(
                    "INSERT INTO {TABLE} (event_id, source, route, topic, record_key_text,
                        event_json, record_key, record_value, class, message, attempts,
                        first_failed_at, last_failed_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12)
                     ON CONFLICT (source, event_id, route) WHERE status = 'pending' DO UPDATE SET
                        attempts = {TABLE}.attempts + excluded.attempts,
                        last_failed_at = excluded.last_failed_at,
                        updated_at = excluded.updated_at,
                        class = excluded.class,
                        message = excluded.message,
                        record_key = coalesce(excluded.record_key, {TABLE}.record_key),
                        record_value = coalesce(excluded.record_value, {TABLE}.record_value)
                     RETURNING id"
                ),
                &[
                    &l.event.id.as_str(),
                    &l.event.source,
                    &l.route.clone().unwrap_or_default(),
                    &l.topic,
                    &l.key,
                    &encode_event(&l.event),
                    &l.record.as_ref().and_then(|r| r.key.clone()),
                    &l.record.as_ref().map(|r| r.value.clone()),
                    &l.class.as_str(),
                    &l.message,
                    &i64::from(l.attempts),
                    &l.failed_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    pub(super) async fn list(&self, sel: &Selector) -> Result<Vec<DeadLetter>, StoreError> {
        let mut params = Vec::new();
        let w = where_clause(sel, '$', &mut params);
        let sql = format!(
            "SELECT {COLUMNS} FROM {TABLE} {w} ORDER BY id{}",
            limit_clause(sel)
        );
        let b = bind(&params);
        let rows = self.client.query(&sql, &refs(&b)).await.map_err(pg)?;
        rows.iter().map(read_row).collect()
    }

    pub(super) async fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {TABLE} WHERE id = $1");
        let row = self.client.query_opt(&sql, &[&id]).await.map_err(pg)?;
        row.as_ref().map(read_row).transpose()
    }

    pub(super) async fn claim(
        &self,
        sel: &Selector,
        owner: &str,
        lease_until: i64,
        batch: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let now = crate::event::now_micros();
        let mut params = vec![
            Param::Text(owner.to_string()),
            Param::Int(lease_until),
            Param::Int(now),
        ];
        let w = where_clause(sel, '$', &mut params);
        let sql = format!(
            "UPDATE {TABLE} SET claimed_by = $1, claimed_until = $2
             WHERE id IN (SELECT id FROM {TABLE} {w}
                 AND status IN ('pending', 'replayed')
                 AND (claimed_until IS NULL OR claimed_until < $3)
                 ORDER BY id LIMIT {batch} FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        );
        let b = bind(&params);
        let rows = self.client.query(&sql, &refs(&b)).await.map_err(pg)?;
        let mut out: Vec<DeadLetter> = rows.iter().map(read_row).collect::<Result<_, _>>()?;
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    pub(super) async fn renew_claims(
        &self,
        owner: &str,
        lease_until: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = self
            .client
            .query(
                &format!(
                    "UPDATE {TABLE} SET claimed_until = $2
                     WHERE claimed_by = $1 AND status IN ('pending', 'replayed')
                     RETURNING id"
                ),
                &[&owner, &lease_until],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn confirm_claim(
        &self,
        id: i64,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                &format!(
                    "UPDATE {TABLE} SET claimed_until = $3
                     WHERE id = $1 AND claimed_by = $2 AND status IN ('pending', 'replayed')"
                ),
                &[&id, &owner, &lease_until],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    pub(super) async fn claim_owners(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client
            .query(
                &format!("SELECT DISTINCT claimed_by FROM {TABLE} WHERE claimed_by IS NOT NULL AND claimed_until >= $1"),
                &[&now],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn release_owner(&self, owner: &str) -> Result<u64, StoreError> {
        self.client
            .execute(
                &format!("UPDATE {TABLE} SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1"),
                &[&owner],
            )
            .await
            .map_err(pg)
    }

    pub(super) async fn mark_replayed(
        &self,
        id: i64,
        owner: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::event::now_micros();
        let n = self
            .client
            .execute(
                &format!(
                    "UPDATE {TABLE} SET status = 'replayed', replay_count = replay_count + 1,
                        resolution = $3, updated_at = $4, claimed_by = NULL, claimed_until = NULL
                     WHERE id = $1 AND claimed_by = $2"
                ),
                &[&id, &owner, &note, &now],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    pub(super) async fn mark_replayed_all(
        &self,
        ids: Vec<i64>,
        owner: &str,
        note: &str,
    ) -> Result<u64, StoreError> {
        let now = crate::event::now_micros();
        self.client
            .execute(
                &format!(
                    "UPDATE {TABLE} SET status = 'replayed', replay_count = replay_count + 1,
                        resolution = $3, updated_at = $4, claimed_by = NULL, claimed_until = NULL
                     WHERE id = ANY($1) AND claimed_by = $2"
                ),
                &[&ids, &owner, &note, &now],
            )
            .await
            .map_err(pg)
    }

    pub(super) async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        class: &str,
        message: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                &format!(
                    "UPDATE {TABLE} SET attempts = attempts + 1, class = $3, message = $4,
                        last_failed_at = $5, updated_at = $5, claimed_by = NULL, claimed_until = NULL
                     WHERE id = $1 AND claimed_by = $2"
                ),
                &[&id, &owner, &class, &message, &at],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn discard(&self, sel: &Selector, reason: &str) -> Result<u64, StoreError> {
        let now = crate::event::now_micros();
        let mut params = vec![Param::Text(reason.to_string()), Param::Int(now)];
        let w = where_clause(sel, '$', &mut params);
        let sql = format!(
            "UPDATE {TABLE} SET status = 'discarded', resolution = $1, updated_at = $2
             WHERE id IN (SELECT id FROM {TABLE} {w} AND status = 'pending'
                 AND (claimed_until IS NULL OR claimed_until < $2) ORDER BY id{})",
            limit_clause(sel)
        );
        let b = bind(&params);
        self.client.execute(&sql, &refs(&b)).await.map_err(pg)
    }

    pub(super) async fn stats(&self) -> Result<Vec<StatsRow>, StoreError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT route, class, status, count(*)::BIGINT FROM {TABLE}
                     GROUP BY route, class, status ORDER BY route, class, status"
                ),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let route: String = r.get(0);
                let status: String = r.get(2);
                stats_row(route, r.get(1), &status, r.get(3))
            })
            .collect()
    }

    pub(super) async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        self.client
            .execute(
                &format!("DELETE FROM {TABLE} WHERE status IN ('replayed', 'discarded') AND updated_at < $1"),
                &[&before],
            )
            .await
            .map_err(pg)
    }
}

fn read_row(r: &Row) -> Result<DeadLetter, StoreError> {
    let id: i64 = r.get(0);
    let route: String = r.get(3);
    let status: String = r.get(11);
    let event_json: String = r.get(14);
    let record_key: Option<Vec<u8>> = r.get(15);
    let record_value: Option<Vec<u8>> = r.get(16);
    Ok(DeadLetter {
        id,
        event_id: r.get(1),
        source: r.get(2),
        route: (!route.is_empty()).then_some(route),
        topic: r.get(4),
        key: r.get(5),
        class: r.get(6),
        message: r.get(7),
        attempts: r.get(8),
        first_failed_at: r.get(9),
        last_failed_at: r.get(10),
        status: status
            .parse::<Status>()
            .map_err(|message| StoreError::Corrupt { id, message })?,
        replay_count: r.get(12),
        resolution: r.get(13),
        event: Some(decode_event(id, &event_json)?),
        record: record_value.map(|value| EncodedRecord {
            key: record_key,
            value,
        }),
    })
}
