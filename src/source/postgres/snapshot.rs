//! The initial snapshot (`snapshot = "initial"`): the rows that exist when the slot is created,
//! as op "r" events, then the stream from the slot's consistent point.
//!
//! Consistency: the slot is created on a replication connection with `EXPORT_SNAPSHOT`, and a
//! `REPEATABLE READ` transaction imports that snapshot at once. It sees exactly the commits
//! before the slot's consistent point; the stream then delivers exactly the commits after it:
//! no gap, no duplicate.
//!
//! Progress: each table is read in primary-key order in chunks of `snapshot_chunk_rows`. Once
//! every event of a chunk is durable (Kafka ack or DLQ), the chunk's last key is saved in the
//! state store, *before* the next chunk is read. The record is written before the slot is
//! created, so a crash at any point leaves either no slot (start again) or a record to resume.
//!
//! Resumption: the exported snapshot dies with its session, so an interrupted snapshot goes on
//! after the last saved key in a fresh snapshot, and the stream still starts at the slot's
//! consistent point. Rows changed in between then arrive both as "r" and as a change:
//! at-least-once, nothing missing. A table without a primary key is read again from its start.
//!
//! Locks: the copied tables are locked `ACCESS SHARE` for the whole copy (as Debezium does),
//! so a TRUNCATE or rewriting ALTER waits instead of making a table look empty to the
//! snapshot. One committed in the milliseconds between the slot's creation and the lock still
//! reaches the stream after the consistent point, so consumers end in the right state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use pgwire_replication::ReplicationClient;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::{Client, SimpleQueryMessage};
use tracing::{info, warn};

use super::stream::{KnownRelation, PostgresSource, SourceError, connect_sql, sql};
use crate::ack::AckToken;
use crate::event::{ChangePayload, Event, EventId, Payload, now_micros};
use crate::pipeline::OrderedLane;
use crate::telemetry::traces::Traced;

/// What the state store remembers of a source's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The slot the snapshot belongs to.
    pub slot: String,
    /// The slot's consistent point, once the slot exists.
    pub consistent_point: Option<u64>,
    /// Tables in copy order.
    pub tables: Vec<TableProgress>,
    /// Every table is copied.
    pub done: bool,
    /// When the snapshot began, ms since the epoch (the `ts_ms` of its records).
    pub started_ms: i64,
}

/// One table's copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TableProgress {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Primary-key values (text) of the last row of the last durable chunk.
    pub last_key: Option<Vec<String>>,
    /// Rows made durable.
    pub rows: u64,
    /// Fully copied.
    pub done: bool,
}

/// A table as the snapshot reads it.
pub(super) struct Shape {
    pub(super) relation: KnownRelation,
    /// Primary-key columns in index order (empty: no primary key).
    pub(super) order: Vec<String>,
    /// The publication's row filter, if any.
    pub(super) row_filter: Option<String>,
    /// Estimated rows.
    pub(super) estimate: u64,
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(super) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The state-store key of a source's snapshot.
pub(crate) fn state_key(source: &str) -> String {
    format!("snapshot/{source}")
}

/// Counts toward the progress log and metric.
struct Tally {
    source: String,
    total: u64,
    done: u64,
    since: Instant,
    at_start: u64,
    logged: Instant,
}

impl Tally {
    fn report(&mut self, table: &str, force: bool) {
        let ratio = if self.total == 0 {
            1.0
        } else {
            (self.done as f64 / self.total as f64).min(1.0)
        };
        if let Some(m) = crate::telemetry::metrics::metrics() {
            m.snapshot_progress
                .with_label_values(&[self.source.as_str()])
                .set(ratio);
            m.snapshot_remaining
                .with_label_values(&[self.source.as_str()])
                .set(i64::try_from(self.total.saturating_sub(self.done)).unwrap_or(i64::MAX));
        }
        if force || self.logged.elapsed() >= Duration::from_secs(5) {
            let secs = self.since.elapsed().as_secs_f64().max(0.001);
            let rate = (self.done - self.at_start) as f64 / secs;
            info!(
                source = %self.source,
                table,
                rows = self.done,
                of_about = self.total,
                percent = format!("{:.1}", ratio * 100.0),
                rows_per_s = rate.round() as u64,
                "snapshot progress"
            );
            self.logged = Instant::now();
        }
    }
}

impl PostgresSource {
    /// Runs or resumes the initial snapshot; returns where streaming starts (`None`: asked to
    /// stop). `slot` is the slot's confirmed position, `None` when it does not exist yet.
    pub(super) async fn snapshot(
        &self,
        client: &Client,
        slot: Option<u64>,
        lane: &OrderedLane,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<u64>, SourceError> {
        let key = state_key(&self.name);
        let saved: Option<Progress> = match self.state.source_state().get(&key).await {
            Ok(v) => v.and_then(|v| serde_json::from_str(&v).ok()),
            Err(e) => return Err(SourceError::State(e)),
        };
        let saved = saved.filter(|p| p.slot == self.cfg.slot);
        if slot.is_none() || saved.as_ref().is_some_and(|p| !p.done) {
            self.health.set(&self.name, "snapshotting", None);
        }
        match (slot, saved) {
            (None, _) => {
                let tables = self.published_tables(client).await?;
                let mut progress = Progress {
                    slot: self.cfg.slot.clone(),
                    consistent_point: None,
                    tables: tables
                        .into_iter()
                        .map(|(schema, table)| TableProgress {
                            schema,
                            table,
                            last_key: None,
                            rows: 0,
                            done: false,
                        })
                        .collect(),
                    done: false,
                    started_ms: now_micros() / 1000,
                };
                // Written before the slot exists: a crash after creating it resumes the copy.
                self.save(&key, &progress).await?;
                let (exporter, point, name) = self.create_slot_exporting().await?;
                let conn = connect_sql(&self.cfg).await?;
                conn.batch_execute(&format!(
                    "{SESSION} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                    quote_literal(&name)
                ))
                .await
                .map_err(sql)?;
                // The snapshot is imported: the exporting session may end.
                drop(exporter);
                progress.consistent_point = Some(point);
                self.save(&key, &progress).await?;
                info!(source = %self.name, slot = %self.cfg.slot, at = %super::lsn::Lsn(point), tables = progress.tables.len(), "snapshot started");
                if !self.copy(&conn, &mut progress, point, lane, stop).await? {
                    return Ok(None);
                }
                Ok(Some(point))
            }
            (Some(confirmed), Some(mut progress)) if !progress.done => {
                warn!(source = %self.name, "resuming an interrupted snapshot after the last durable chunk; rows changed since it began arrive both as snapshot reads and as changes");
                let conn = connect_sql(&self.cfg).await?;
                conn.batch_execute(&format!(
                    "{SESSION} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                ))
                .await
                .map_err(sql)?;
                let point = progress.consistent_point.unwrap_or(confirmed);
                if !self.copy(&conn, &mut progress, point, lane, stop).await? {
                    return Ok(None);
                }
                Ok(Some(confirmed))
            }
            (Some(confirmed), saved) => {
                if saved.is_none() {
                    info!(source = %self.name, slot = %self.cfg.slot, "the slot exists and no snapshot was taken with it: streaming from the slot (run `switchyard slot reset` to take a snapshot)");
                }
                Ok(Some(confirmed))
            }
        }
    }

    async fn save(&self, key: &str, progress: &Progress) -> Result<(), SourceError> {
        let json = serde_json::to_string(progress).map_err(SourceError::StateJson)?;
        self.state
            .source_state()
            .put(key, &json)
            .await
            .map_err(SourceError::State)
    }

    /// Creates the slot on a replication connection that exports its snapshot; the connection
    /// must stay open, idle, until the snapshot is imported.
    async fn create_slot_exporting(&self) -> Result<(ReplicationClient, u64, String), SourceError> {
        let stream = SourceError::Replication;
        let mut exporter = ReplicationClient::connect_gated(self.replication_config(0)?)
            .await
            .map_err(stream)?;
        let rows = exporter
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(&self.cfg.slot)
            ))
            .await
            .map_err(|e| {
                SourceError::Preflight(format!("creating replication slot {}: {e}", self.cfg.slot))
            })?;
        let text = |i: usize| {
            rows.first()
                .and_then(|r| r.get(i))
                .and_then(Option::as_ref)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let (Some(point), Some(name)) = (
            text(1).and_then(|p| p.parse::<super::lsn::Lsn>().ok()),
            text(2),
        ) else {
            return Err(SourceError::Stream(
                "CREATE_REPLICATION_SLOT returned no consistent point or snapshot".into(),
            ));
        };
        info!(source = %self.name, slot = %self.cfg.slot, "created replication slot with an exported snapshot");
        Ok((exporter, point.0, name))
    }

    async fn published_tables(
        &self,
        client: &Client,
    ) -> Result<Vec<(String, String)>, SourceError> {
        let rows = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables
                 WHERE pubname = $1 ORDER BY 1, 2",
                &[&self.cfg.publication],
            )
            .await
            .map_err(sql)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Copies every table not yet done; false when asked to stop.
    async fn copy(
        &self,
        conn: &Client,
        progress: &mut Progress,
        point: u64,
        lane: &OrderedLane,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, SourceError> {
        let key = state_key(&self.name);
        // TRUNCATE and table rewrites are not MVCC-safe: committed after the snapshot, they
        // would make a table look empty to it. Holding ACCESS SHARE locks until the copy ends
        // keeps them out (they wait; changes after the consistent point reach the stream).
        let pending: Vec<String> = progress
            .tables
            .iter()
            .filter(|t| !t.done)
            .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table)))
            .collect();
        if !pending.is_empty() {
            conn.batch_execute(&format!(
                "SET LOCAL lock_timeout = '60s'; LOCK TABLE {} IN ACCESS SHARE MODE",
                pending.join(", ")
            ))
            .await
            .map_err(sql)?;
        }
        let mut shapes = HashMap::new();
        let mut total = 0;
        let mut done = 0;
        for t in &progress.tables {
            let shape = self.shape(conn, &t.schema, &t.table).await?;
            total += shape.estimate.max(t.rows);
            done += t.rows;
            shapes.insert((t.schema.clone(), t.table.clone()), shape);
        }
        let mut tally = Tally {
            source: self.name.clone(),
            total,
            done,
            since: Instant::now(),
            at_start: done,
            logged: Instant::now(),
        };
        let started = Instant::now();
        for i in 0..progress.tables.len() {
            if progress.tables[i].done {
                continue;
            }
            let t = progress.tables[i].clone();
            let Some(shape) = shapes.get(&(t.schema.clone(), t.table.clone())) else {
                continue;
            };
            if !self.routed(shape) {
                info!(source = %self.name, table = %format!("{}.{}", t.schema, t.table), "no route takes snapshot reads of this table; skipped");
                progress.tables[i].done = true;
                self.save(&key, progress).await?;
                continue;
            }
            // Rows of a table without a primary key cannot be resumed by key: start again.
            if shape.order.is_empty() && progress.tables[i].rows > 0 {
                tally.done -= progress.tables[i].rows;
                progress.tables[i].rows = 0;
            }
            let cursor = self.declare(shape, progress.tables[i].last_key.as_deref());
            tracing::debug!(source = %self.name, sql = %cursor, estimate = shape.estimate, "snapshot cursor");
            conn.batch_execute(&cursor).await.map_err(sql)?;
            loop {
                if *stop.borrow() {
                    return Ok(false);
                }
                let rows = fetch(conn, self.cfg.snapshot_chunk_rows).await?;
                let n = rows.len();
                let last_key = rows.last().map(|r| key_of(shape, r));
                let first = progress.tables[i].rows;
                // A span per chunk with rows (its own trace), ended once the chunk's progress is
                // saved.
                let span = if n > 0 {
                    self.chunk_span(&t.schema, &t.table, first, n)
                } else {
                    Traced::none()
                };
                let mut receivers = Vec::with_capacity(n);
                for (j, row) in rows.into_iter().enumerate() {
                    let event =
                        self.read_event(shape, row, point, progress.started_ms, first + j as u64);
                    let (ack, rx) = AckToken::new();
                    let id = event.id.to_string();
                    self.counters.receive();
                    // Through the session's ordered lane: every read of a chunk is durable
                    // before the next chunk is read, and the stream starts after the last.
                    lane.submit(event, None, ack, span.context()).await;
                    receivers.push((id, rx));
                }
                for (id, rx) in receivers {
                    if !rx.wait().await.is_durable() {
                        span.fail("an event of the chunk was not made durable");
                        return Err(SourceError::NotDurable(id));
                    }
                }
                let tp = &mut progress.tables[i];
                tp.rows += n as u64;
                if let (Some(k), false) = (last_key, shape.order.is_empty()) {
                    tp.last_key = Some(k);
                }
                tp.done = n < self.cfg.snapshot_chunk_rows;
                self.save(&key, progress).await?;
                if let Some(m) = crate::telemetry::metrics::metrics() {
                    m.snapshot_rows
                        .with_label_values(&[
                            self.name.as_str(),
                            &format!("{}.{}", t.schema, t.table),
                        ])
                        .inc_by(n as u64);
                }
                tally.done += n as u64;
                let table_done = progress.tables[i].done;
                tally.report(&format!("{}.{}", t.schema, t.table), table_done);
                if table_done {
                    break;
                }
            }
            conn.batch_execute("CLOSE switchyard_snapshot")
                .await
                .map_err(sql)?;
        }
        conn.batch_execute("COMMIT").await.map_err(sql)?;
        progress.done = true;
        self.save(&key, progress).await?;
        tally.total = tally.done;
        tally.report("-", false);
        info!(
            source = %self.name,
            rows = tally.done,
            seconds = started.elapsed().as_secs(),
            "snapshot complete; streaming changes from the slot's consistent point"
        );
        Ok(true)
    }

    /// The span of one snapshot chunk: `rows` rows of `schema.table` from row `first` on.
    fn chunk_span(&self, schema: &str, table: &str, first: u64, rows: usize) -> Traced {
        self.root_span("cdc.snapshot.chunk", || {
            vec![
                KeyValue::new("switchyard.table", format!("{schema}.{table}")),
                KeyValue::new(
                    "switchyard.snapshot.first_row",
                    i64::try_from(first).unwrap_or(i64::MAX),
                ),
                KeyValue::new(
                    "switchyard.snapshot.rows",
                    i64::try_from(rows).unwrap_or(i64::MAX),
                ),
            ]
        })
    }

    /// True when some route takes snapshot reads of the table.
    fn routed(&self, shape: &Shape) -> bool {
        let probe = self.read_event(shape, Vec::new(), 0, 0, 0);
        !self.pipeline.routes().route(&probe).is_empty()
    }

    fn read_event(
        &self,
        shape: &Shape,
        row: Vec<Option<String>>,
        point: u64,
        started_ms: i64,
        ordinal: u64,
    ) -> Event {
        let r = &shape.relation;
        Event {
            id: EventId::from_snapshot(point, &r.schema, &r.table, ordinal),
            source: self.name.clone(),
            event_type: "r".into(),
            received_at_micros: now_micros(),
            payload: Payload::Change(ChangePayload {
                database: self.database.clone(),
                schema: r.schema.clone(),
                table: r.table.clone(),
                table_doc: r.table_doc.clone(),
                op: crate::event::ChangeOp::Read,
                columns: r.columns.clone(),
                before: None,
                after: Some(row),
                commit_lsn: point,
                tx_id: 0,
                commit_time_ms: started_ms,
                unchanged_toast: Vec::new(),
                before_key_only: false,
                position: Default::default(),
            }),
        }
    }

    /// The `DECLARE` of the table's cursor, after `last_key` when resuming.
    fn declare(&self, shape: &Shape, last_key: Option<&[String]>) -> String {
        format!(
            "DECLARE switchyard_snapshot NO SCROLL CURSOR FOR {}",
            select_rows(shape, last_key, None)
        )
    }

    /// The table's columns as pgoutput describes them (same key flags, so the snapshot and the
    /// stream share one Avro schema), its primary key, row filter and size estimate.
    pub(super) async fn shape(
        &self,
        conn: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Shape, SourceError> {
        let described =
            super::catalog::describe(conn, &self.cfg.publication, schema, table).await?;
        let (oid, reltuples, row_filter) =
            (described.oid, described.reltuples, described.row_filter);
        let relation = described.relation;
        let order: Vec<String> = conn
            .query(
                "SELECT a.attname::text
                 FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attnum = k.attnum
                 WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = $1
                 ORDER BY k.n",
                &[&oid],
            )
            .await
            .map_err(sql)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let estimate = if reltuples >= 0 {
            reltuples as u64
        } else {
            let n: i64 = conn
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {}.{}",
                        quote_ident(schema),
                        quote_ident(table)
                    ),
                    &[],
                )
                .await
                .map_err(sql)?
                .get(0);
            n as u64
        };
        Ok(Shape {
            relation,
            order,
            row_filter,
            estimate,
        })
    }
}

/// `SELECT` of the table's rows in primary-key order: those the publication's row filter and
/// `filter` keep, after `last_key` if given (the initial snapshot's cursor, a backfill's chunks).
pub(super) fn select_rows(
    shape: &Shape,
    last_key: Option<&[String]>,
    filter: Option<&str>,
) -> String {
    let r = &shape.relation;
    let columns: Vec<String> = r.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let order: Vec<String> = shape.order.iter().map(|c| quote_ident(c)).collect();
    let mut conditions = Vec::new();
    if let Some(f) = &shape.row_filter {
        conditions.push(format!("({f})"));
    }
    if let Some(f) = filter {
        conditions.push(format!("({f})"));
    }
    if let Some(k) = last_key.filter(|k| k.len() == order.len() && !k.is_empty()) {
        let vals: Vec<String> = k.iter().map(|v| quote_literal(v)).collect();
        conditions.push(format!("({}) > ({})", order.join(", "), vals.join(", ")));
    }
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        columns.join(", "),
        quote_ident(&r.schema),
        quote_ident(&r.table)
    );
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    sql
}

/// Settings that make the snapshot's text values identical to pgoutput's.
pub(super) const SESSION: &str =
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3;";

/// The next chunk of the open cursor, as text values.
async fn fetch(conn: &Client, n: usize) -> Result<Vec<Vec<Option<String>>>, SourceError> {
    let messages = conn
        .simple_query(&format!("FETCH {n} FROM switchyard_snapshot"))
        .await
        .map_err(sql)?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

/// The primary-key values of a row, in key order.
pub(super) fn key_of(shape: &Shape, row: &[Option<String>]) -> Vec<String> {
    shape
        .order
        .iter()
        .filter_map(|k| {
            let i = shape.relation.columns.iter().position(|c| &c.name == k)?;
            row.get(i).cloned().flatten()
        })
        .collect()
}
