//! Replay jobs of the admin API: `POST /api/v1/replays` starts one (the same replay as
//! `switchyard dlq replay`, [`crate::replay::replay`]), `GET` polls its progress,
//! `DELETE` cancels it. At most [`MAX_RUNNING`] run at once; the last [`KEPT`] are kept.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::event::now_micros;
use crate::store::dead_letters::select::format_time;

/// Jobs running at once (a replay shares the producer with the daemon's own deliveries).
pub(crate) const MAX_RUNNING: usize = 2;
/// Jobs kept (finished ones are dropped oldest first beyond it).
const KEPT: usize = 50;
/// Lines of a job's output kept (the newest).
const LINES: usize = 500;

/// A replay job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    Running,
    Done,
    Cancelled,
    Failed,
}

/// What a job did so far.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Progress {
    /// Entries delivered (dry run: that would be produced).
    pub delivered: u64,
    /// Entries that failed again (dry run: that would fail).
    pub failed: u64,
    /// Entries claimed but not delivered (cancelled, or the claim was lost).
    pub not_delivered: u64,
    /// Why it stopped early, or failed.
    pub message: Option<String>,
    /// The newest lines of its output, as `dlq replay` prints them.
    pub lines: VecDeque<Value>,
}

/// One replay job.
pub(crate) struct Job {
    pub id: u64,
    pub by: String,
    pub selector: String,
    /// What it selected (the console confirms a dry run with the same selection).
    pub selection: crate::store::dead_letters::select::Selection,
    pub dry_run: bool,
    pub rate: Option<f64>,
    pub started_at: i64,
    state: Mutex<(State, Option<i64>)>,
    progress: Mutex<Progress>,
    pub cancel: Arc<AtomicBool>,
}

impl Job {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The job's state.
    pub(crate) fn state(&self) -> State {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Ends the job.
    pub(crate) fn finish(&self, state: State, message: Option<String>) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (state, Some(now_micros()));
        if message.is_some() {
            self.progress().message = message;
        }
    }

    /// The job as the API answers it (`lines`: with its output).
    pub(crate) fn to_json(&self, lines: bool) -> Value {
        let (state, finished) = *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = self.progress().clone();
        let mut v = serde_json::json!({
            "id": self.id,
            "state": state,
            "by": self.by,
            "selector": self.selector,
            "dry_run": self.dry_run,
            "rate": self.rate,
            "started_at": format_time(self.started_at),
            "finished_at": finished.map(format_time),
            "delivered": p.delivered,
            "failed": p.failed,
            "not_delivered": p.not_delivered,
            "message": p.message,
        });
        if lines {
            v["lines"] = Value::Array(p.lines.into_iter().collect());
        }
        v
    }

    /// A writer for the replay's output: each JSON line is counted and kept.
    pub(crate) fn output(self: &Arc<Self>) -> Output {
        Output {
            job: Arc::clone(self),
            partial: Vec::new(),
        }
    }
}

/// The output of a job's replay ([`Job::output`]).
pub(crate) struct Output {
    job: Arc<Job>,
    partial: Vec<u8>,
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let Ok(mut v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            // A dry run's line holds the record (key and value) as one route writes it: not
            // kept, a job's output is for every viewer (payloads are shown per entry, masked).
            if let Some(w) = v.get_mut("would_produce").and_then(Value::as_object_mut) {
                w.remove("value");
                w.remove("key");
                w.remove("headers");
            }
            let mut p = self.job.progress();
            match v["result"].as_str() {
                Some("delivered") => p.delivered += 1,
                Some("failed") => p.failed += 1,
                Some("not_delivered") => p.not_delivered += 1,
                _ if v.get("would_produce").is_some() => p.delivered += 1,
                _ if v.get("would_fail").is_some() => p.failed += 1,
                _ => {}
            }
            if p.lines.len() == LINES {
                p.lines.pop_front();
            }
            p.lines.push_back(v);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The daemon's jobs.
#[derive(Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
}

impl Jobs {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new running job, unless [`MAX_RUNNING`] already run (`None`).
    pub(crate) fn start(
        &self,
        by: String,
        selection: crate::store::dead_letters::select::Selection,
        dry_run: bool,
        rate: Option<f64>,
    ) -> Option<Arc<Job>> {
        let mut map = self.map();
        if map.values().filter(|j| j.state() == State::Running).count() >= MAX_RUNNING {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            by,
            selector: selection.describe(),
            selection,
            dry_run,
            rate,
            started_at: now_micros(),
            state: Mutex::new((State::Running, None)),
            progress: Mutex::new(Progress::default()),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        map.insert(id, Arc::clone(&job));
        while map.len() > KEPT {
            let Some(oldest) = map
                .iter()
                .find(|(_, j)| j.state() != State::Running)
                .map(|(id, _)| *id)
            else {
                break;
            };
            map.remove(&oldest);
        }
        Some(job)
    }

    /// Job `id`, if kept.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.map().get(&id).cloned()
    }

    /// Every kept job, newest first.
    pub(crate) fn list(&self) -> Vec<Arc<Job>> {
        self.map().values().rev().cloned().collect()
    }
}
