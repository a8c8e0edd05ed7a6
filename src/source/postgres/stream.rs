//! The Postgres source: a logical replication slot streamed into the pipeline.
//!
//! ```text
//!  slot ──pgwire-replication──► pgoutput::decode ──► Event (Change) ──► OrderedLane::submit
//!    ▲                                                                       │ ack
//!    └──── update_applied_lsn(end of the newest fully durable commit) ◄── Checkpoint
//! ```
//!
//! Invariant: the slot's confirmed LSN advances only to the end of a commit all of whose events,
//! and all before them, are durable (Kafka ack or DLQ). Every event carries the id
//! `<commit LSN>:<ordinal>`. After any error the session restarts from the slot's confirmed
//! position: what was not confirmed is delivered again (at-least-once), nothing is skipped.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use pgwire_replication::{Lsn as WireLsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::{error, info, warn};

use super::counters::SourceCounters;
use super::session::Session;
use crate::config::{PostgresSourceConfig, SnapshotMode};
use crate::event::ChangeColumn;
use crate::pipeline::health::SourceHealth;
use crate::pipeline::{OrderedLane, Pipeline};
use crate::store::Store;
use crate::telemetry::traces::Traced;

pub(crate) use super::connect::connect_sql;
use super::connect::target;
pub(crate) use super::error::SourceError;
pub(super) use super::error::sql;

/// A relation as the source knows it: pgoutput's shape plus the catalog's nullability and
/// comments.
#[derive(Debug, Clone)]
pub struct KnownRelation {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// The table's comment.
    pub table_doc: Option<String>,
    /// Columns in order, with key flags and nullability; shared by every change of this
    /// relation version.
    pub columns: std::sync::Arc<[ChangeColumn]>,
}

/// One Postgres source.
pub(crate) struct PostgresSource {
    pub(super) name: String,
    pub(super) cfg: PostgresSourceConfig,
    pub(super) pipeline: Arc<Pipeline>,
    /// Where snapshot progress is kept (the dead-letter store's state table).
    pub(super) state: Arc<Store>,
    /// The database name, from the URL.
    pub(super) database: String,
    /// Where the source reports what it is doing.
    pub(super) health: Arc<SourceHealth>,
    /// `switchyard_events_received_total{source}` and `switchyard_confirmed_lsn{source}` of
    /// this source, resolved once.
    pub(super) counters: SourceCounters,
    /// How long a stop waits for events in flight before closing the stream.
    pub(super) stop_bound: Duration,
    /// Held while this instance leads the slot: checked before each record is handed to Kafka
    /// and before each position is confirmed (see [`super::leader`]).
    pub(super) fence: super::leader::Fence,
    /// The tables to capture: a reload sends new ones (see [`PostgresSource::selection`]).
    pub(super) selection: Arc<watch::Sender<crate::config::TableSelection>>,
}

impl PostgresSource {
    /// A source named `name`; `state` keeps its snapshot progress.
    pub(crate) fn new(
        name: &str,
        cfg: PostgresSourceConfig,
        pipeline: Arc<Pipeline>,
        state: Arc<Store>,
        health: Arc<SourceHealth>,
    ) -> Self {
        let database = target(&cfg.url).map(|t| t.database).unwrap_or_default();
        let selection = Arc::new(watch::Sender::new(cfg.selection.clone()));
        PostgresSource {
            name: name.to_string(),
            cfg,
            pipeline,
            state,
            database,
            health,
            counters: SourceCounters::new(name),
            stop_bound: Duration::from_secs(20),
            fence: super::leader::Fence::default(),
            selection,
        }
    }

    /// Takes its `tables`, `exclude_tables` and `snapshot_new_tables` from `selection`, where a
    /// reload sends new ones: the leader brings the publication in step at once, a standby
    /// when it takes over.
    pub(crate) fn with_selection(
        mut self,
        selection: Arc<watch::Sender<crate::config::TableSelection>>,
    ) -> Self {
        self.selection = selection;
        self
    }

    /// How long a stop waits for events in flight (default 20 s); keep it below the daemon's
    /// `shutdown_timeout` so the final status update fits in.
    pub(crate) fn with_stop_bound(mut self, bound: Duration) -> Self {
        self.stop_bound = bound;
        self
    }

    /// The replication connection's settings, streaming from `start`.
    pub(super) fn replication_config(&self, start: u64) -> Result<ReplicationConfig, SourceError> {
        let t = target(&self.cfg.url)?;
        Ok(ReplicationConfig::new(
            t.host,
            t.user,
            t.password,
            t.database,
            self.cfg.slot.clone(),
            self.cfg.publication.clone(),
        )
        .with_port(t.port)
        .with_tls(crate::pg_tls::replication(&self.cfg.tls))
        .with_start_lsn(WireLsn(start))
        .with_options("-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3")
        .with_application_name(format!("switchyard-{}", self.name))
        // Tell the server the confirmed position often: after a crash, everything past it is
        // delivered again, so this interval bounds the duplicates.
        .with_status_interval(Duration::from_secs(1)))
    }

    /// Streams until `stop` turns true; reconnects with backoff after any error. Streams only
    /// while this instance holds the slot's leadership lock (see [`super::leader`]); otherwise
    /// it stands by.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut wait = Duration::from_millis(500);
        let mut lease: Option<super::leader::Lease> = None;
        // Set by a takeover from a leader that stopped answering: no record is sent before it,
        // also if this instance has to take the lock again meanwhile (see `leader`).
        let mut not_before: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            // Keep the lease across retries while its connection holds it.
            if let Some(l) = &lease
                && !l.alive().await
            {
                warn!(source = %self.name, slot = %self.cfg.slot, "lost the connection holding the slot's leadership lock");
                lease = None;
            }
            if lease.is_none() {
                self.health.set(&self.name, "connecting", None);
                let acquired = super::leader::acquire(
                    &self.name,
                    &self.cfg,
                    &self.health,
                    &mut stop,
                    &self.fence,
                    self.pipeline.sink().delivery_timeout(),
                )
                .await;
                match acquired {
                    Ok(Some(l)) => {
                        let now = tokio::time::Instant::now();
                        if !l.quiet.is_zero() {
                            not_before = not_before.max(Some(now + l.quiet));
                        }
                        if let Some(until) = not_before.filter(|u| *u > now) {
                            // The previous leader stopped answering: let its queued records
                            // time out before sending ours (see `leader`).
                            let quiet = until - now;
                            info!(source = %self.name, wait = ?quiet, "took over from a leader that stopped answering; waiting until none of its queued records can still reach Kafka");
                            self.health.set(&self.name, "connecting", Some(format!("taking over the slot: waiting {quiet:?} for the previous leader's queued records to expire")));
                            tokio::select! {
                                _ = tokio::time::sleep_until(until) => {}
                                () = l.lost() => continue,
                                _ = stop.changed() => return,
                            }
                        }
                        lease = Some(l);
                        wait = Duration::from_millis(500);
                    }
                    Ok(None) => return,
                    Err(e) => {
                        warn!(source = %self.name, error = %e, retry_in = ?wait, "postgres source cannot reach its database; retrying");
                        self.health.set(&self.name, "failing", Some(e.to_string()));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => return,
                        }
                        wait = (wait * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            let Some(held) = &lease else {
                continue;
            };
            self.health.set(&self.name, "connecting", None);
            let began = tokio::time::Instant::now();
            let outcome = tokio::select! {
                r = self.session(&mut stop) => r,
                () = held.lost() => Err(SourceError::Stream(
                    "the connection holding the slot's leadership lock is gone: stopped streaming so that another instance can take over".into(),
                )),
            };
            // Whatever the session left behind (a lane still resending, if it was abandoned)
            // sends nothing more.
            self.fence.end_session();
            if began.elapsed() > Duration::from_secs(60) {
                // It streamed a while: this failure is not one of a series.
                wait = Duration::from_millis(500);
            }
            match outcome {
                Ok(()) => return,
                // Definite causes need a fix (the error says which); the source keeps trying
                // meanwhile, so that it streams as soon as the fix is in.
                Err(e) if !e.is_transient() => {
                    error!(source = %self.name, error = %e, retry_in = ?wait, "postgres source cannot stream until this is fixed; retrying");
                    self.health.set(&self.name, "failing", Some(e.to_string()));
                }
                Err(e) => {
                    warn!(source = %self.name, error = %e, retry_in = ?wait, "postgres source stopped; reconnecting");
                    self.health.set(&self.name, "failing", Some(e.to_string()));
                }
            }
            // Meanwhile the lock session keeps being asked (an idle one is ended by the server
            // after `leader_timeout`, handing the slot to another instance for no reason).
            let keep = async {
                match &lease {
                    Some(l) => l.lost().await,
                    None => std::future::pending().await,
                }
            };
            let lost = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                () = keep => true,
                _ = stop.changed() => return,
            };
            if lost {
                warn!(source = %self.name, slot = %self.cfg.slot, "lost the connection holding the slot's leadership lock");
                lease = None;
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    async fn connect_sql(&self) -> Result<Client, SourceError> {
        connect_sql(&self.cfg).await
    }

    /// Publishes how much WAL the slot holds back.
    async fn report_lag(&self, client: &Client) {
        let lag = client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.cfg.slot],
            )
            .await;
        if let (Ok(Some(row)), Some(m)) = (lag, crate::telemetry::metrics::metrics()) {
            let bytes: Option<i64> = row.get(0);
            m.slot_lag
                .with_label_values(&[self.name.as_str()])
                .set(bytes.unwrap_or(0));
        }
    }

    /// A root span of this source (`switchyard.source`, `db.system.name` and `attributes`,
    /// built only when traces are on).
    pub(super) fn root_span(
        &self,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Traced {
        let traces = self.pipeline.traces();
        if !traces.is_on() {
            return Traced::none();
        }
        let mut all = vec![
            KeyValue::new("switchyard.source", self.name.clone()),
            KeyValue::new("db.system.name", "postgresql"),
        ];
        all.extend(attributes());
        traces.root(name, SpanKind::Consumer, None, all)
    }

    /// One session: snapshot (if due) and stream, every event through one ordered lane.
    async fn session(&self, stop: &mut watch::Receiver<bool>) -> Result<(), SourceError> {
        let lane = self
            .pipeline
            .lane(&self.name, Arc::clone(&self.health), self.fence.pinned());
        // Backfills run beside the stream, in the leader's session only; they end with it.
        let (windows, runner) = super::backfill::channels();
        let result = tokio::select! {
            r = self.stream(&lane, stop, windows) => r,
            () = self.run_backfills(runner) => Ok(()),
        };
        // A session that failed waits until every record it handed over is reported, so none
        // can land after a record of the next session (which sends again from the slot's
        // confirmed position, in order). A stop has already waited its bound in `finish`.
        let wait = match &result {
            Ok(()) => Duration::ZERO,
            Err(_) => self.pipeline.sink().delivery_timeout() + Duration::from_secs(5),
        };
        lane.close(wait).await;
        result
    }

    async fn stream(
        &self,
        lane: &OrderedLane,
        stop: &mut watch::Receiver<bool>,
        windows: super::backfill::Windows,
    ) -> Result<(), SourceError> {
        let client = self.connect_sql().await?;
        let (slot, joined) = self.preflight(&client).await?;
        // Tables that joined the publication: an initial snapshot still to run copies them
        // with the rest; otherwise `snapshot_new_tables` backfills them.
        let mut selection = self.selection.subscribe();
        let first_snapshot = self.cfg.snapshot == SnapshotMode::Initial && slot.is_none();
        if !first_snapshot {
            let wanted = selection.borrow_and_update().clone();
            self.backfill_joined(&joined, &wanted).await;
        }
        let confirmed = match (self.cfg.snapshot, slot) {
            (SnapshotMode::Initial, slot) => {
                match self.snapshot(&client, slot, lane, stop).await? {
                    Some(start) => start,
                    None => return Ok(()),
                }
            }
            (SnapshotMode::Never, Some(confirmed)) => confirmed,
            (SnapshotMode::Never, None) => self.create_slot(&client).await?,
        };
        let config = self.replication_config(confirmed)?;
        let mut repl = ReplicationClient::connect(config)
            .await
            .map_err(SourceError::Replication)?;
        info!(source = %self.name, slot = %self.cfg.slot, from = %super::lsn::Lsn(confirmed), "streaming changes");
        self.health.set(&self.name, "streaming", None);
        self.counters.confirmed(confirmed);

        let mut s = Session::new(confirmed, windows);
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval);
        heartbeat.tick().await;

        loop {
            tokio::select! {
                _ = stop.changed(), if s.stopping.is_none() => {
                    if *stop.borrow() {
                        let deadline = tokio::time::Instant::now() + self.stop_bound;
                        if s.txn.is_some() {
                            s.stopping = Some(deadline);
                            continue;
                        }
                        self.finish(&mut repl, &mut s, deadline).await;
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(s.stopping.unwrap_or_else(tokio::time::Instant::now)), if s.stopping.is_some() => {
                    // The transaction did not end within the bound: what is durable is confirmed.
                    if let Some(deadline) = s.stopping {
                        self.finish(&mut repl, &mut s, deadline).await;
                    }
                    return Ok(());
                }
                Some(outcome) = s.flight.acks.next(), if !s.flight.acks.is_empty() => {
                    self.on_ack(&repl, &mut s, outcome)?;
                }
                Ok(()) = selection.changed() => {
                    // A reload changed `tables`: the publication follows at once; changes of
                    // a table that joins stream from the commit that added it.
                    let wanted = selection.borrow_and_update().clone();
                    match self.follow_config(&client, &wanted, false).await {
                        Ok(joined) => self.backfill_joined(&joined, &wanted).await,
                        Err(e) => warn!(source = %self.name, error = %e, "cannot bring the publication in step with the reloaded `tables`; it is tried again at the next reload or session"),
                    }
                }
                _ = heartbeat.tick() => {
                    // Writes WAL on idle databases so the slot's position can advance.
                    if let Err(e) = client
                        .query_one("SELECT pg_logical_emit_message(false, $1, now()::text)::text", &[&HEARTBEAT_PREFIX])
                        .await
                    {
                        warn!(source = %self.name, error = %e, "heartbeat failed");
                    }
                    self.report_lag(&client).await;
                    // Tables created since that a glob or an exclusion selects join now (a
                    // whole schema's join by themselves); `snapshot_new_tables` copies what
                    // they got before.
                    let wanted = selection.borrow().clone();
                    if let Ok(joined) = self.follow_config(&client, &wanted, true).await {
                        self.backfill_joined(&joined, &wanted).await;
                    }
                }
                event = repl.recv() => {
                    let Some(event) = event.map_err(SourceError::Replication)? else {
                        return Err(SourceError::Stream("the server ended the stream".into()));
                    };
                    // A leader that woke up after a freeze reads nothing more (see `leader`).
                    if !self.fence.holds() {
                        return Err(lapsed());
                    }
                    match event {
                        ReplicationEvent::Begin { final_lsn, xid, commit_time_micros } => {
                            self.on_begin(&mut s, final_lsn.0, xid, commit_time_micros);
                        }
                        ReplicationEvent::Commit { end_lsn, .. } => {
                            self.on_commit(&repl, &mut s, end_lsn.0);
                            if let Some(deadline) = s.stopping {
                                self.finish(&mut repl, &mut s, deadline).await;
                                return Ok(());
                            }
                        }
                        ReplicationEvent::Message { lsn, transactional, prefix, content } => {
                            if prefix == super::backfill::PREFIX {
                                self.on_backfill_mark(&repl, lane, &mut s, lsn.0, transactional, &content).await;
                            } else if prefix == HEARTBEAT_PREFIX {
                                self.on_heartbeat(&repl, &s, lsn.0, transactional);
                            } else {
                                let at = self.on_message(lane, &mut s, lsn.0, transactional, prefix, &content).await;
                                self.confirm(&repl, &mut s, at);
                            }
                        }
                        ReplicationEvent::XLogData { data, wal_start, .. } => {
                            self.on_data(&client, lane, &mut s, &data, wal_start.0).await?;
                        }
                        ReplicationEvent::KeepAlive { .. } => {}
                        ReplicationEvent::StoppedAt { .. } => return Ok(()),
                    }
                }
            }
        }
    }
}

/// The prefix of switchyard's own heartbeat messages (never forwarded).
pub(crate) const HEARTBEAT_PREFIX: &str = "switchyard.heartbeat";

/// The error of a session whose leadership fence lapsed.
fn lapsed() -> SourceError {
    SourceError::Stream(
        "this instance's hold on the slot's leadership lock lapsed (it did not answer for a while): stopped before sending or confirming anything more, so that another instance can take over".into(),
    )
}
