//! One streaming session's state, and what each replication event does to it.
//!
//! [`PostgresSource::stream`] opens the replication connection and waits on it, on the
//! acknowledgements of the events in flight, on the heartbeat, on a reload and on a stop. The
//! events it reads go to the `on_*` methods here (a keepalive needs nothing); the
//! acknowledgements to [`PostgresSource::on_ack`]; a stop ends in [`PostgresSource::finish`].
//! All of them run on the session's one task, in the order the server sent the events: that
//! is what keeps the events of one source in commit order on their way to the pipeline's
//! ordered lane. The slot is confirmed in one place, [`confirm_durable_commits`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use opentelemetry::KeyValue;
use pgwire_replication::{Lsn as WireLsn, ReplicationClient};
use tokio_postgres::Client;
use tracing::{info, warn};

use super::backfill::Windows;
use super::counters::SourceCounters;
use super::pgoutput::{self, Message, Relation};
use super::rows::{changes, fill_toast, text_row, unfilled};
use super::stream::{KnownRelation, PostgresSource, SourceError};
use super::txn::Txn;
use crate::ack::{AckToken, Checkpoint, Delivery, Seq};
use crate::config::Unmatched;
use crate::event::{ChangePayload, Event, EventId, MessagePayload, Payload, now_micros};
use crate::pipeline::OrderedLane;
use crate::telemetry::traces::Traced;

type AckFuture = Pin<Box<dyn Future<Output = (Seq, String, Delivery)> + Send>>;

/// What a session has handed to the pipeline and not yet confirmed: the positions tracked
/// (`checkpoint`), the commit ends waiting to be confirmed (`commits`), and the outcomes still
/// to come (`acks`). The slot is confirmed from it in [`confirm_durable_commits`].
pub(super) struct InFlight {
    checkpoint: Checkpoint<u64>,
    commits: VecDeque<u64>,
    pub(super) acks: FuturesUnordered<AckFuture>,
}

impl InFlight {
    /// Nothing in flight, the slot confirmed at `confirmed`.
    fn new(confirmed: u64) -> InFlight {
        InFlight {
            checkpoint: Checkpoint::new(Some(confirmed)),
            commits: VecDeque::new(),
            acks: FuturesUnordered::new(),
        }
    }
}

/// The state of one streaming session, from the slot's confirmed position on. A new session
/// (after an error, or on a new leader) starts from a new one: nothing here outlives it.
pub(super) struct Session {
    /// What was handed to the pipeline and not yet confirmed.
    pub(super) flight: InFlight,
    /// The transaction being read, from its Begin to its Commit.
    pub(super) txn: Option<Txn>,
    /// Set when a stop arrives inside a transaction: its changes already went to the
    /// pipeline, so it is read on to its commit (until the stop's bound) and then confirmed
    /// with the rest, rather than redelivered after the restart.
    pub(super) stopping: Option<tokio::time::Instant>,
    /// The relations pgoutput described in this session (it sends each before its first
    /// change), with what the catalog adds.
    relations: HashMap<u32, KnownRelation>,
    /// The end of the last commit (or non-transactional message) read: `source.sequence`.
    last_commit: Option<u64>,
    /// The span of the transaction being read.
    txn_span: Traced,
    /// Spans of committed transactions whose events are not all durable yet, by commit end
    /// position: each ends once the slot may be confirmed past its commit, so it covers its
    /// events' deliveries (its children).
    delivering: VecDeque<(u64, Traced)>,
    /// The backfill windows open in this session (see [`super::backfill`]).
    windows: Windows,
}

impl Session {
    /// A session streaming from `confirmed`, with the backfill windows of this session.
    pub(super) fn new(confirmed: u64, windows: Windows) -> Session {
        Session {
            flight: InFlight::new(confirmed),
            txn: None,
            stopping: None,
            relations: HashMap::new(),
            last_commit: None,
            txn_span: Traced::none(),
            delivering: VecDeque::new(),
            windows,
        }
    }

    /// Ends the spans of the transactions (and messages) confirmed at or before `confirmed`.
    fn end_spans(&mut self, confirmed: Option<u64>) {
        let Some(confirmed) = confirmed else { return };
        while self
            .delivering
            .front()
            .is_some_and(|(end, _)| *end <= confirmed)
        {
            self.delivering.pop_front();
        }
    }
}

impl PostgresSource {
    /// Confirms what became durable up to the checkpoint's position `at` (if it moved), and
    /// ends the spans of the commits it closes.
    pub(super) fn confirm(&self, repl: &ReplicationClient, s: &mut Session, at: Option<u64>) {
        confirm_durable_commits(repl, &mut s.flight.commits, at, &self.counters, &self.fence);
        s.end_spans(at);
    }

    /// The outcome of an event in flight: a durable one may move the slot on; one that is
    /// not ends the session (which restarts from the confirmed position: nothing is skipped).
    pub(super) fn on_ack(
        &self,
        repl: &ReplicationClient,
        s: &mut Session,
        (seq, id, delivery): (Seq, String, Delivery),
    ) -> Result<(), SourceError> {
        let durable = delivery.is_durable();
        let at = s.flight.checkpoint.resolve(seq, durable);
        if !durable {
            return Err(SourceError::NotDurable(id));
        }
        self.confirm(repl, s, at);
        Ok(())
    }

    /// An orderly stop: waits (until `deadline`, the stop's `stop_bound`) for the events in
    /// flight, confirms the commits that became durable, waits until the status update
    /// carrying that position was sent to the server, then ends the stream. Events still in
    /// flight are not confirmed and are delivered again after the restart.
    pub(super) async fn finish(
        &self,
        repl: &mut ReplicationClient,
        s: &mut Session,
        deadline: tokio::time::Instant,
    ) {
        let InFlight {
            checkpoint,
            commits,
            acks,
        } = &mut s.flight;
        let waiting = acks.len();
        while !acks.is_empty() {
            match tokio::time::timeout_at(deadline, acks.next()).await {
                Ok(Some((seq, id, delivery))) => {
                    let durable = delivery.is_durable();
                    let at = checkpoint.resolve(seq, durable);
                    if !durable {
                        warn!(source = %self.name, event_id = %id, "an event in flight at stop was not made durable; it is delivered again after the restart");
                        break;
                    }
                    confirm_durable_commits(repl, commits, at, &self.counters, &self.fence);
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(source = %self.name, left = acks.len(), "events still in flight at the stop bound; they are delivered again after the restart");
                    break;
                }
            }
        }
        let target = self.counters.applied();
        // The worker sends a raised position once per status interval (1 s).
        let sent = tokio::time::Instant::now() + Duration::from_secs(3);
        while repl.metrics().last_applied_lsn().0 < target && tokio::time::Instant::now() < sent {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reported = repl.metrics().last_applied_lsn().0;
        info!(source = %self.name, drained = waiting, confirmed = %super::lsn::Lsn(reported), "stopped streaming; final position sent to the slot");
        if tokio::time::timeout(Duration::from_secs(2), repl.shutdown())
            .await
            .is_err()
        {
            repl.abort();
        }
    }

    /// A transaction begins: its commit position and time are every change's.
    pub(super) fn on_begin(
        &self,
        s: &mut Session,
        final_lsn: u64,
        xid: u32,
        commit_time_micros: i64,
    ) {
        s.txn = Some(Txn::new(
            final_lsn,
            xid,
            commit_time_micros + pgoutput::PG_EPOCH_OFFSET_MICROS,
        ));
        s.txn_span = self.transaction_span(final_lsn, xid);
    }

    /// A transaction commits: its end is a position the slot may be confirmed at once every
    /// event before it is durable (at once when none of its changes was routed).
    pub(super) fn on_commit(&self, repl: &ReplicationClient, s: &mut Session, end_lsn: u64) {
        if let Some(t) = &s.txn {
            s.txn_span
                .set(KeyValue::new("switchyard.events", i64::from(t.ordinal)));
        }
        s.txn = None;
        s.last_commit = Some(end_lsn);
        let span = std::mem::take(&mut s.txn_span);
        if span.is_on() {
            s.delivering.push_back((end_lsn, span));
        }
        let seq = s.flight.checkpoint.track(end_lsn);
        s.flight.commits.push_back(end_lsn);
        let at = s.flight.checkpoint.resolve(seq, true);
        self.confirm(repl, s, at);
    }

    /// A backfill's watermark: at a HIGH, its chunk's rows go out here, in stream order (see
    /// [`super::backfill`]).
    pub(super) async fn on_backfill_mark(
        &self,
        repl: &ReplicationClient,
        lane: &OrderedLane,
        s: &mut Session,
        lsn: u64,
        transactional: bool,
        content: &[u8],
    ) {
        if transactional || s.txn.is_some() {
            return;
        }
        let Some(events) = s.windows.on_mark(content, lsn, &self.name, &self.database) else {
            return;
        };
        s.flight.commits.push_back(lsn);
        for event in events {
            let at = self.send(lane, event, lsn, &mut s.flight, None).await;
            self.confirm(repl, s, at);
        }
        let seq = s.flight.checkpoint.track(lsn);
        let at = s.flight.checkpoint.resolve(seq, true);
        self.confirm(repl, s, at);
    }

    /// Switchyard's own heartbeat: with nothing in flight, everything before it is durable,
    /// so the slot moves on although the database captured nothing.
    pub(super) fn on_heartbeat(
        &self,
        repl: &ReplicationClient,
        s: &Session,
        lsn: u64,
        transactional: bool,
    ) {
        if !transactional
            && s.txn.is_none()
            && s.flight.checkpoint.in_flight() == 0
            && self.fence.holds()
        {
            repl.update_applied_lsn(WireLsn(lsn));
            self.counters.confirmed(lsn);
        }
    }

    /// A logical decoding message of the application's: an event of its own (`op` "m"), in
    /// its transaction or, outside one, its own unit of progress. Returns the checkpoint's new
    /// position when it was durable at once (no route took it), for the caller to confirm.
    pub(super) async fn on_message(
        &self,
        lane: &OrderedLane,
        s: &mut Session,
        lsn: u64,
        transactional: bool,
        prefix: String,
        content: &[u8],
    ) -> Option<u64> {
        let (position, tx_id, ts_ms, ordinal) = match (transactional, s.txn.as_mut()) {
            (true, Some(t)) => {
                t.ordinal += 1;
                (t.final_lsn, Some(t.xid), t.commit_us / 1000, t.ordinal - 1)
            }
            _ => {
                s.last_commit = Some(lsn);
                (lsn, None, now_micros() / 1000, 0)
            }
        };
        // Outside a transaction the message is its own trace, ended once the message is
        // durable.
        let own = if transactional {
            Traced::none()
        } else {
            self.message_span(position, &prefix)
        };
        let event = Event {
            id: EventId::from_lsn(position, ordinal),
            source: self.name.clone(),
            event_type: "m".into(),
            received_at_micros: now_micros(),
            payload: Payload::Message(MessagePayload {
                database: self.database.clone(),
                prefix,
                content: content.to_vec(),
                transactional,
                lsn,
                tx_id,
                ts_ms,
            }),
        };
        if !transactional {
            // Outside a transaction the message is its own unit of progress.
            s.flight.commits.push_back(position);
        }
        let trace = if transactional {
            s.txn_span.context()
        } else {
            let cx = own.context();
            if own.is_on() {
                s.delivering.push_back((position, own));
            }
            cx
        };
        self.send(lane, event, position, &mut s.flight, trace).await
    }

    /// pgoutput data: a relation's description (kept for its changes), or changes of the
    /// transaction being read, each an event handed on in order.
    pub(super) async fn on_data(
        &self,
        client: &Client,
        lane: &OrderedLane,
        s: &mut Session,
        data: &[u8],
        wal_start: u64,
    ) -> Result<(), SourceError> {
        let msg = pgoutput::decode(data)?;
        if let Message::Relation(rel) = &msg {
            let known = self.describe(client, rel).await?;
            s.relations.insert(rel.oid, known);
            return Ok(());
        }
        let Some(t) = s.txn.as_mut() else {
            return Ok(());
        };
        for change in changes(msg, self.cfg.tombstones) {
            let Some(rel) = s.relations.get(&change.relation) else {
                return Err(SourceError::Stream(format!(
                    "change for unknown relation {}",
                    change.relation
                )));
            };
            let mut unchanged_toast = change
                .after
                .as_ref()
                .map(|a| unfilled(a, change.old_full(), &rel.columns))
                .unwrap_or_default();
            let old_full = if change.before_key_only {
                None
            } else {
                change.before.as_ref()
            };
            let mut after = change.after.map(|a| text_row(a, old_full));
            if let Some(row) = after.as_mut()
                && !unchanged_toast.is_empty()
            {
                unchanged_toast = fill_toast(client, rel, row, unchanged_toast).await?;
                super::rows::placeholders(
                    &rel.columns,
                    row,
                    &unchanged_toast,
                    &self.cfg.unavailable_value_placeholder,
                );
            }
            let position = t.position(wal_start, s.last_commit, change.relation, change.op);
            let before = change.before.map(|b| text_row(b, None));
            s.windows.on_change(
                &rel.schema,
                &rel.table,
                &rel.columns,
                [after.as_ref(), before.as_ref()],
            );
            let event = Event {
                id: EventId::from_lsn(t.final_lsn, t.ordinal),
                source: self.name.clone(),
                event_type: change.op.code().to_string(),
                received_at_micros: now_micros(),
                payload: Payload::Change(ChangePayload {
                    database: self.database.clone(),
                    schema: rel.schema.clone(),
                    table: rel.table.clone(),
                    table_doc: rel.table_doc.clone(),
                    op: change.op,
                    columns: rel.columns.clone(),
                    before,
                    before_key_only: change.before_key_only,
                    position,
                    unchanged_toast,
                    after,
                    commit_lsn: t.final_lsn,
                    tx_id: t.xid,
                    commit_time_ms: t.commit_us / 1000,
                }),
            };
            t.ordinal += 1;
            let final_lsn = t.final_lsn;
            self.send(lane, event, final_lsn, &mut s.flight, s.txn_span.context())
                .await;
        }
        Ok(())
    }

    /// The relation pgoutput described, with the catalog's nullability and comments.
    async fn describe(
        &self,
        client: &Client,
        rel: &Relation,
    ) -> Result<KnownRelation, SourceError> {
        // One rule for the stream, the snapshot and `check --registry`: see `catalog`.
        super::catalog::relation(client, rel).await
    }

    /// Tracks `event` at `position` and hands it to the pipeline; an event no route takes is
    /// durable at once (returns the checkpoint's new position then).
    async fn send(
        &self,
        lane: &OrderedLane,
        event: Event,
        position: u64,
        flight: &mut InFlight,
        trace: Option<opentelemetry::Context>,
    ) -> Option<u64> {
        let seq = flight.checkpoint.track(position);
        self.counters.receive();
        // Routed once, here: the pipeline takes the matches as they are. Table and policy are
        // read together, so a reload in between cannot pair the old table with the new policy.
        let (routes, unmatched) = self.pipeline.routing();
        let matches = routes.route(&event);
        if matches.is_empty() && unmatched == Unmatched::Drop {
            // Unrouted tables and operations are the common case for CDC: not counted.
            return flight.checkpoint.resolve(seq, true);
        }
        let (ack, rx) = AckToken::new();
        let id = event.id.to_string();
        lane.submit(event, Some(matches), ack, trace).await;
        flight
            .acks
            .push(Box::pin(async move { (seq, id, rx.wait().await) }));
        None
    }

    /// The span of one transaction (Begin to Commit), parent of its events' spans.
    fn transaction_span(&self, commit_lsn: u64, xid: u32) -> Traced {
        self.root_span("cdc.transaction", || {
            vec![
                KeyValue::new("switchyard.xid", i64::from(xid)),
                KeyValue::new(
                    "switchyard.commit_lsn",
                    super::lsn::Lsn(commit_lsn).to_string(),
                ),
            ]
        })
    }

    /// The span of a logical decoding message written outside a transaction: its own trace,
    /// ended once the message is durable.
    fn message_span(&self, lsn: u64, prefix: &str) -> Traced {
        self.root_span("cdc.message", || {
            vec![
                KeyValue::new("switchyard.message.prefix", prefix.to_string()),
                KeyValue::new("switchyard.lsn", super::lsn::Lsn(lsn).to_string()),
            ]
        })
    }
}

/// Confirms the slot up to the end of the newest commit whose events are all durable (the one
/// place a commit's durability reaches the server; a heartbeat with nothing in flight is the
/// other way the position moves); nothing once `fence` lapsed (the events stay durable, the
/// next leader sends them again).
fn confirm_durable_commits(
    repl: &ReplicationClient,
    commits: &mut VecDeque<u64>,
    confirmed: Option<u64>,
    counters: &SourceCounters,
    fence: &super::leader::Fence,
) {
    let Some(confirmed) = confirmed else { return };
    if !fence.holds() {
        return;
    }
    let mut last = None;
    while commits.front().is_some_and(|c| *c <= confirmed) {
        last = commits.pop_front();
    }
    if let Some(end) = last {
        repl.update_applied_lsn(WireLsn(end));
        counters.confirmed(end);
    }
}
