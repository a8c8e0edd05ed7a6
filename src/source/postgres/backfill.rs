//! Backfills: copying a table again while the stream runs (incremental snapshots), with the
//! watermarks of Netflix's DBLog (as Debezium's incremental snapshots).
//!
//! ```text
//!  runner (leader's session)                       stream (same session, WAL order)
//!   emit LOW(id, n)  ─────────── WAL ───────────►   LOW: open the window of chunk n
//!   SELECT next chunk by primary key                 change of a key of the table: mark the key
//!   hand the chunk to the stream                     HIGH: the chunk's rows minus the marked keys
//!   emit HIGH(id, n) ─────────── WAL ───────────►         go to the lane as op "r", here, in
//!   wait until the slot is confirmed past HIGH             stream order
//!   save the chunk's last key; next chunk
//! ```
//!
//! **Per-key order.** A row read between the watermarks is at least as new as every change
//! committed before LOW, and a change committed between LOW and HIGH may be newer than the
//! read: such a key's row is dropped from the chunk (the change carries its state). Every
//! change after HIGH is newer than the read and reaches the lane after it. So no key's snapshot
//! read lands after a newer change of it. Test: `backfill::*`.
//!
//! **Progress** is saved in the state store (`backfill/<source>`) once the slot is confirmed
//! past a chunk's HIGH (its rows are durable): a restart or another instance taking over the
//! slot resumes after the last saved key (the chunk in flight is read again: at-least-once).
//! `switchyard snapshot start|status|cancel` writes and reads that state; the leader's runner
//! polls it every second.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::SimpleQueryMessage;
use tracing::{error, info, warn};

mod control;

pub(crate) use control::*;

use super::snapshot::{SESSION, Shape, key_of, select_rows};
use super::stream::{PostgresSource, SourceError, connect_sql, sql};
use crate::event::{
    ChangeColumn, ChangePayload, ChangePosition, Event, EventId, Payload, now_micros,
};

/// The prefix of the watermarks' logical decoding messages (never forwarded).
pub(crate) const PREFIX: &str = "switchyard.backfill";

/// Rows read per chunk unless the request says.
pub(crate) const DEFAULT_CHUNK_ROWS: usize = 1024;

/// The state-store key of a source's backfill.
pub(crate) fn state_key(source: &str) -> String {
    format!("backfill/{source}")
}

/// The state-store key of a source's queue of tables to backfill next (`snapshot_new_tables`).
pub(crate) fn queue_key(source: &str) -> String {
    format!("backfill-queue/{source}")
}

/// A table waiting for its backfill (`snapshot_new_tables`), as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Queued {
    pub schema: String,
    pub table: String,
    /// Who asked (`config:snapshot_new_tables`).
    pub requested_by: String,
}

/// Where a backfill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Asked for; the leader starts it within a second or two.
    Requested,
    /// Copying.
    Running,
    /// Every row copied.
    Done,
    /// Cancelled: what was copied stays copied.
    Cancelled,
    /// Stopped on an error (the message says).
    Failed,
}

/// A backfill of one table, as the state store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Backfill {
    /// Its id (in the watermarks and the audit trail).
    pub id: String,
    pub schema: String,
    pub table: String,
    /// Only rows matching this SQL condition (checked by the database before it is stored).
    pub filter: Option<String>,
    /// At most this many rows a second.
    pub rate: Option<f64>,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// The primary key of the last row of the last durable chunk.
    pub last_key: Option<Vec<String>>,
    /// Rows sent (not counting rows whose newer change made the read unnecessary).
    pub rows: u64,
    /// Chunks done.
    pub chunks: u64,
    /// The table's estimated rows when it started.
    pub estimate: u64,
    pub state: State,
    pub message: Option<String>,
    pub requested_by: String,
    pub requested_at: i64,
    pub finished_at: Option<i64>,
}

impl Backfill {
    /// A backfill of `schema.table` as requested, not started yet.
    pub(crate) fn requested(
        schema: &str,
        table: &str,
        filter: Option<String>,
        rate: Option<f64>,
        chunk_rows: usize,
        by: &str,
    ) -> Backfill {
        Backfill {
            id: format!("bf-{:x}", now_micros()),
            schema: schema.to_string(),
            table: table.to_string(),
            filter,
            rate,
            chunk_rows,
            last_key: None,
            rows: 0,
            chunks: 0,
            estimate: 0,
            state: State::Requested,
            message: None,
            requested_by: by.to_string(),
            requested_at: now_micros(),
            finished_at: None,
        }
    }

    /// True while it is to run (or runs).
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.state, State::Requested | State::Running)
    }
}

/// A watermark's content.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    id: String,
    chunk: u64,
    /// `low` or `high`.
    mark: String,
    schema: String,
    table: String,
    /// The primary-key columns (the window marks changed keys by them).
    key: Vec<String>,
}

/// A chunk read between its watermarks, handed to the stream.
pub(super) struct Chunk {
    id: String,
    seq: u64,
    shape_columns: Arc<[ChangeColumn]>,
    schema: String,
    table: String,
    table_doc: Option<String>,
    rows: Vec<(Vec<String>, Vec<Option<String>>)>,
}

/// The stream's side: the open window and the chunks handed over.
pub(super) struct Windows {
    chunks: mpsc::Receiver<Chunk>,
    delivered: mpsc::UnboundedSender<(String, u64, u64, u64)>,
    open: Option<Window>,
}

struct Window {
    id: String,
    seq: u64,
    schema: String,
    table: String,
    key: Vec<String>,
    changed: HashSet<Vec<String>>,
}

/// The channels between a session's stream and its runner.
pub(super) fn channels() -> (Windows, Runner) {
    let (chunk_tx, chunk_rx) = mpsc::channel(2);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    (
        Windows {
            chunks: chunk_rx,
            delivered: done_tx,
            open: None,
        },
        Runner {
            chunks: chunk_tx,
            delivered: done_rx,
        },
    )
}

impl Windows {
    /// A watermark read at `lsn`: `Some(events)` at a HIGH, to be sent at `lsn` in stream order.
    pub(super) fn on_mark(
        &mut self,
        content: &[u8],
        lsn: u64,
        source: &str,
        database: &str,
    ) -> Option<Vec<Event>> {
        let mark: Mark = serde_json::from_slice(content).ok()?;
        if mark.mark == "low" {
            self.open = Some(Window {
                id: mark.id,
                seq: mark.chunk,
                schema: mark.schema,
                table: mark.table,
                key: mark.key,
                changed: HashSet::new(),
            });
            return None;
        }
        let window = self
            .open
            .take()
            .filter(|w| w.id == mark.id && w.seq == mark.chunk)?;
        // The chunk was handed over before its HIGH was written; older ones (a runner that
        // gave up on them) are dropped.
        let chunk = loop {
            match self.chunks.try_recv() {
                Ok(c) if c.id == window.id && c.seq == window.seq => break c,
                Ok(_) => continue,
                Err(_) => return None,
            }
        };
        let mut events = Vec::with_capacity(chunk.rows.len());
        for (n, (key, row)) in chunk.rows.into_iter().enumerate() {
            if window.changed.contains(&key) {
                continue;
            }
            events.push(Event {
                id: EventId::from_snapshot(
                    lsn,
                    &chunk.schema,
                    &chunk.table,
                    chunk.seq * 1_000_000 + n as u64,
                ),
                source: source.to_string(),
                event_type: "r".into(),
                received_at_micros: now_micros(),
                payload: Payload::Change(ChangePayload {
                    database: database.to_string(),
                    schema: chunk.schema.clone(),
                    table: chunk.table.clone(),
                    table_doc: chunk.table_doc.clone(),
                    op: crate::event::ChangeOp::Read,
                    columns: Arc::clone(&chunk.shape_columns),
                    before: None,
                    after: Some(row),
                    commit_lsn: lsn,
                    tx_id: 0,
                    commit_time_ms: now_micros() / 1000,
                    unchanged_toast: Vec::new(),
                    before_key_only: false,
                    position: ChangePosition {
                        lsn,
                        incremental: true,
                        ..ChangePosition::default()
                    },
                }),
            });
        }
        let _ = self
            .delivered
            .send((window.id, window.seq, lsn, events.len() as u64));
        Some(events)
    }

    /// A change of `schema.table` (its columns and rows, text): inside an open window of that
    /// table, its key is marked (before and after: a key that changed marks both).
    pub(super) fn on_change(
        &mut self,
        schema: &str,
        table: &str,
        columns: &[ChangeColumn],
        rows: [Option<&Vec<Option<String>>>; 2],
    ) {
        let Some(w) = self.open.as_mut() else { return };
        if w.schema != schema || w.table != table {
            return;
        }
        for row in rows.into_iter().flatten() {
            let key: Vec<String> = w
                .key
                .iter()
                .filter_map(|k| {
                    let i = columns.iter().position(|c| &c.name == k)?;
                    row.get(i).cloned().flatten()
                })
                .collect();
            if key.len() == w.key.len() {
                w.changed.insert(key);
            }
        }
    }
}

/// The runner's side.
pub(super) struct Runner {
    chunks: mpsc::Sender<Chunk>,
    delivered: mpsc::UnboundedReceiver<(String, u64, u64, u64)>,
}

impl PostgresSource {
    async fn load_backfill(&self) -> Result<Option<Backfill>, SourceError> {
        let v = self
            .state
            .source_state()
            .get(&state_key(&self.name))
            .await
            .map_err(SourceError::State)?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    async fn save_backfill(&self, b: &Backfill) -> Result<(), SourceError> {
        let json = serde_json::to_string(b).map_err(SourceError::StateJson)?;
        self.state
            .source_state()
            .put(&state_key(&self.name), &json)
            .await
            .map_err(SourceError::State)
    }

    async fn load_queue(&self) -> Result<Vec<Queued>, SourceError> {
        let v = self
            .state
            .source_state()
            .get(&queue_key(&self.name))
            .await
            .map_err(SourceError::State)?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    async fn save_queue(&self, queue: &[Queued]) -> Result<(), SourceError> {
        let json = serde_json::to_string(queue).map_err(SourceError::StateJson)?;
        self.state
            .source_state()
            .put(&queue_key(&self.name), &json)
            .await
            .map_err(SourceError::State)
    }

    /// Queues a backfill of each table that joined the publication, when `selection` asks for
    /// it (`snapshot_new_tables`); they run one after another, after any backfill running now.
    pub(super) async fn backfill_joined(
        &self,
        joined: &[super::publication::Table],
        selection: &crate::config::TableSelection,
    ) {
        if joined.is_empty() || !selection.snapshot_new_tables {
            return;
        }
        let queued = async {
            let mut queue = self.load_queue().await?;
            for (schema, table) in joined {
                let q = Queued {
                    schema: schema.clone(),
                    table: table.clone(),
                    requested_by: "config:snapshot_new_tables".into(),
                };
                if !queue.contains(&q) {
                    queue.push(q);
                }
            }
            self.save_queue(&queue).await
        };
        match queued.await {
            Ok(()) => {
                info!(source = %self.name, tables = %joined.iter().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", "), "tables joined the publication: their existing rows are backfilled (snapshot_new_tables)");
            }
            Err(e) => {
                error!(source = %self.name, error = %e, "tables joined the publication but their backfill could not be queued: run switchyard snapshot start for each");
            }
        }
    }

    /// The active backfill, else the next queued table's (stored as requested first, then
    /// taken off the queue: a crash in between copies that table twice, never not at all).
    async fn next_backfill(&self) -> Result<Option<Backfill>, SourceError> {
        if let Some(b) = self.load_backfill().await?.filter(Backfill::is_active) {
            return Ok(Some(b));
        }
        let mut queue = self.load_queue().await?;
        if queue.is_empty() {
            return Ok(None);
        }
        let q = queue.remove(0);
        let b = Backfill::requested(
            &q.schema,
            &q.table,
            None,
            None,
            DEFAULT_CHUNK_ROWS,
            &q.requested_by,
        );
        self.save_backfill(&b).await?;
        self.save_queue(&queue).await?;
        Ok(Some(b))
    }

    /// Runs the source's requested backfills, one chunk at a time, for as long as the session
    /// lasts (the session drops it when it ends).
    pub(super) async fn run_backfills(&self, mut runner: Runner) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let b = match self.next_backfill().await {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    warn!(source = %self.name, error = %e, "cannot read the backfill state; retrying");
                    continue;
                }
            };
            if let Err(e) = self.backfill(b, &mut runner).await {
                warn!(source = %self.name, error = %e, "backfill interrupted; it resumes after its last durable chunk");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    async fn backfill(&self, mut b: Backfill, runner: &mut Runner) -> Result<(), SourceError> {
        let conn = connect_sql(&self.cfg).await?;
        conn.batch_execute(SESSION).await.map_err(sql)?;
        let shape = self.shape(&conn, &b.schema, &b.table).await?;
        if shape.order.is_empty() {
            b.state = State::Failed;
            b.message = Some(format!(
                "{}.{} has no primary key: it cannot be copied in chunks",
                b.schema, b.table
            ));
            b.finished_at = Some(now_micros());
            return self.save_backfill(&b).await;
        }
        if b.state == State::Requested {
            b.state = State::Running;
            b.estimate = shape.estimate;
            self.save_backfill(&b).await?;
            info!(source = %self.name, backfill = %b.id, table = %format!("{}.{}", b.schema, b.table), estimate = b.estimate, "backfill started");
        } else {
            info!(source = %self.name, backfill = %b.id, chunks = b.chunks, rows = b.rows, "backfill resumed after its last durable chunk");
        }
        let started = std::time::Instant::now();
        let rows_at_start = b.rows;
        loop {
            // Cancelled meanwhile (by `switchyard snapshot cancel`)?
            if let Some(now) = self.load_backfill().await?
                && (now.id != b.id || now.state == State::Cancelled)
            {
                info!(source = %self.name, backfill = %b.id, rows = b.rows, "backfill cancelled");
                return Ok(());
            }
            if !self.fence.holds() {
                return Err(SourceError::Stream(
                    "this instance no longer leads the slot".into(),
                ));
            }
            let seq = b.chunks;
            let mark = |kind: &str| {
                serde_json::to_string(&Mark {
                    id: b.id.clone(),
                    chunk: seq,
                    mark: kind.into(),
                    schema: b.schema.clone(),
                    table: b.table.clone(),
                    key: shape.order.clone(),
                })
                .unwrap_or_default()
            };
            conn.query_one(
                "SELECT pg_logical_emit_message(false, $1, $2)::text",
                &[&PREFIX, &mark("low")],
            )
            .await
            .map_err(sql)?;
            let rows = read_chunk(&conn, &shape, &b).await?;
            let last = rows.last().map(|(k, _)| k.clone());
            let read = rows.len();
            runner
                .chunks
                .send(Chunk {
                    id: b.id.clone(),
                    seq,
                    shape_columns: Arc::clone(&shape.relation.columns),
                    schema: b.schema.clone(),
                    table: b.table.clone(),
                    table_doc: shape.relation.table_doc.clone(),
                    rows,
                })
                .await
                .map_err(|_| SourceError::Stream("the session ended".into()))?;
            conn.query_one(
                "SELECT pg_logical_emit_message(false, $1, $2)::text",
                &[&PREFIX, &mark("high")],
            )
            .await
            .map_err(sql)?;
            // The stream reaches the HIGH and hands the rows over; then they must be durable.
            let (at, sent) = loop {
                let Some((id, n, lsn, sent)) =
                    tokio::time::timeout(Duration::from_secs(300), runner.delivered.recv())
                        .await
                        .map_err(|_| {
                            SourceError::Stream(
                        "the stream did not reach the backfill's watermark within 5 minutes".into(),
                    )
                        })?
                else {
                    return Err(SourceError::Stream("the session ended".into()));
                };
                if id == b.id && n == seq {
                    break (lsn, sent);
                }
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            while self.counters.applied() < at {
                if tokio::time::Instant::now() > deadline {
                    return Err(SourceError::Stream(
                        "a backfill chunk was not durable within 5 minutes".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            b.chunks += 1;
            b.rows += sent;
            if last.is_some() {
                b.last_key = last;
            }
            if let Some(m) = crate::telemetry::metrics::metrics() {
                m.snapshot_rows
                    .with_label_values(&[self.name.as_str(), &format!("{}.{}", b.schema, b.table)])
                    .inc_by(sent);
                if b.estimate > 0 {
                    m.snapshot_progress
                        .with_label_values(&[self.name.as_str()])
                        .set((b.rows as f64 / b.estimate as f64).min(1.0));
                }
                // The estimate is the planner's: a table that grew shows 0 before the end.
                let remaining = if read < b.chunk_rows {
                    0
                } else {
                    b.estimate.saturating_sub(b.rows)
                };
                m.snapshot_remaining
                    .with_label_values(&[self.name.as_str()])
                    .set(i64::try_from(remaining).unwrap_or(i64::MAX));
            }
            if read < b.chunk_rows {
                b.state = State::Done;
                b.finished_at = Some(now_micros());
                self.save_backfill(&b).await?;
                info!(source = %self.name, backfill = %b.id, rows = b.rows, chunks = b.chunks, "backfill done");
                return Ok(());
            }
            self.save_backfill(&b).await?;
            if let Some(rate) = b.rate {
                let due = Duration::from_secs_f64((b.rows - rows_at_start) as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The next chunk after `b.last_key`, in primary-key order, as text values: (key, row).
async fn read_chunk(
    conn: &tokio_postgres::Client,
    shape: &Shape,
    b: &Backfill,
) -> Result<Vec<(Vec<String>, Vec<Option<String>>)>, SourceError> {
    let query = format!(
        "{} LIMIT {}",
        select_rows(shape, b.last_key.as_deref(), b.filter.as_deref()),
        b.chunk_rows.max(1)
    );
    // Read only: a condition cannot write.
    let messages = conn
        .simple_query(&format!("BEGIN READ ONLY; {query}; COMMIT"))
        .await
        .map_err(sql)?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                let values: Vec<Option<String>> = (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect();
                Some((key_of(shape, &values), values))
            }
            _ => None,
        })
        .collect())
}
