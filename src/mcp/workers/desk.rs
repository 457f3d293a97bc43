//! The front desk of `mcp-workers mcp workers`: actions in, handles out, results kept for as long
//! as the server runs. It owns a worker [`Pool`] and the book of every action it accepted, fed by
//! the pool's events; waiting callers watch the book's version.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use crate::pool::{CancelOutcome, Event, Pool};
use crate::protocol::parse::{INVALID_PREFIX, Item, Limits, parse_action};
use crate::protocol::{ErrorKind, Origin, Output, WorkerError, WorkerResult};

/// Finished actions kept for `worker_wait`/`worker_status` beyond this many are forgotten, oldest
/// first (unfinished ones are always kept).
const KEEP_FINISHED: usize = 1000;

/// Where an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Done,
}

/// One accepted action, as the desk knows it.
#[derive(Debug, Clone)]
struct Entry {
    servers: Vec<String>,
    task_preview: String,
    state: State,
    accepted: Instant,
    started: Option<Instant>,
    result: Option<Box<WorkerResult>>,
}

/// What `worker_status` and a handle say about an action.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub task_id: String,
    pub state: State,
    pub servers: Vec<String>,
    pub task: String,
    /// Milliseconds since it was accepted.
    pub elapsed_ms: u64,
    /// Milliseconds it has been running (absent while queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<WorkerResult>>,
}

#[derive(Default)]
struct Book {
    entries: HashMap<String, Entry>,
    /// Task ids in the order they were accepted.
    order: VecDeque<String>,
    /// `idempotencyKey` → task id.
    keys: HashMap<String, String>,
}

/// Why `spawn` did not accept an action: its kind and message, as the tool error carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal(pub WorkerError);

impl From<Box<WorkerResult>> for Refusal {
    fn from(result: Box<WorkerResult>) -> Self {
        let WorkerResult { error, result: text, .. } = *result;
        Refusal(error.unwrap_or_else(|| WorkerError::new(ErrorKind::InternalError, text, false)))
    }
}

pub struct Desk {
    pool: Pool,
    limits: Limits,
    book: Mutex<Book>,
    /// Bumped whenever an action changes state.
    version: watch::Sender<u64>,
}

impl Desk {
    /// A desk on `pool`, whose events arrive on `events`.
    pub fn start(pool: Pool, limits: Limits, events: mpsc::Receiver<Event>) -> Arc<Self> {
        let desk = Arc::new(Self { pool, limits, book: Mutex::default(), version: watch::channel(0).0 });
        tokio::spawn(Arc::clone(&desk).record(events));
        desk
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // No code panics while holding the book; a poisoned one is still consistent.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the pool's events into the book until the pool is gone.
    async fn record(self: Arc<Self>, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                // Dropping the ack lets the worker start: this desk keeps nothing durable.
                Event::Started { task_id, ack: _ } => {
                    if let Some(entry) = self.book().entries.get_mut(&task_id) {
                        entry.state = State::Running;
                        entry.started = Some(Instant::now());
                    }
                }
                Event::Output(Output::Result(result)) => self.finish(result),
                Event::Output(other) => tracing::warn!(?other, "unexpected output from the pool"),
            }
            self.version.send_modify(|v| *v += 1);
        }
    }

    fn finish(&self, result: Box<WorkerResult>) {
        let mut book = self.book();
        let Some(entry) = book.entries.get_mut(&result.task_id) else {
            tracing::warn!(task_id = %result.task_id, "a result for an action this desk does not know");
            return;
        };
        entry.state = State::Done;
        entry.result = Some(result);
        let finished = book.order.iter().filter(|id| book.entries.get(*id).is_some_and(|e| e.state == State::Done));
        let excess = finished.count().saturating_sub(KEEP_FINISHED);
        if excess > 0 {
            let Book { entries, order, keys } = &mut *book;
            let mut dropped = 0;
            order.retain(|id| {
                let old = dropped < excess && entries.get(id).is_some_and(|e| e.state == State::Done);
                if old {
                    entries.remove(id);
                    dropped += 1;
                }
                !old
            });
            keys.retain(|_, id| entries.contains_key(id));
        }
    }

    /// Validates and queues one action (the tool's fields, without `type`). With a known
    /// `idempotency_key` it returns the task it made before, and queues nothing.
    pub async fn spawn(
        &self,
        mut action: Map<String, Value>,
        idempotency_key: Option<&str>,
    ) -> Result<String, Refusal> {
        if let Some(key) = idempotency_key
            && let Some(id) = self.book().keys.get(key)
        {
            return Ok(id.clone());
        }
        action.insert("type".into(), Value::from("spawn_worker"));
        let action = match parse_action(Value::Object(action), Origin::default(), self.limits) {
            Item::Spawn(action) => action,
            Item::Refused(result) => return Err(result.into()),
            Item::Ack(_) => unreachable!("the type is spawn_worker"),
        };
        if self.book().entries.contains_key(&action.task_id) {
            let message = format!("{INVALID_PREFIX}: /taskId: {} was already used on this server", action.task_id);
            return Err(Refusal(WorkerError::new(ErrorKind::InvalidAction, message, false)));
        }
        let entry = Entry {
            servers: action.servers.clone(),
            task_preview: preview(&action.task),
            state: State::Queued,
            accepted: Instant::now(),
            started: None,
            result: None,
        };
        let admitted = self.pool.admit(action).map_err(Refusal::from)?;
        let task_id = admitted.job.action.task_id.clone();
        {
            let mut book = self.book();
            if let Some(key) = idempotency_key {
                // Two calls with one new key at once: the first one in keeps it.
                if let Some(id) = book.keys.get(key) {
                    return Ok(id.clone());
                }
                book.keys.insert(key.to_owned(), task_id.clone());
            }
            book.entries.insert(task_id.clone(), entry);
            book.order.push_back(task_id.clone());
        }
        self.pool.enqueue(admitted).await;
        Ok(task_id)
    }

    pub fn status(&self, task_id: &str) -> Option<Status> {
        self.book().entries.get(task_id).map(|entry| status_of(task_id, entry))
    }

    /// The newest `limit` actions, newest first, optionally only those in `state`.
    pub fn list(&self, state: Option<State>, limit: usize) -> Vec<Status> {
        let book = self.book();
        book.order
            .iter()
            .rev()
            .filter_map(|id| book.entries.get(id).map(|e| (id, e)))
            .filter(|(_, e)| state.is_none_or(|s| e.state == s))
            .take(limit)
            .map(|(id, e)| {
                let mut status = status_of(id, e);
                status.result = None;
                status
            })
            .collect()
    }

    /// Waits until one of `ids` is done or `wait` passes (or `cancelled` resolves); returns the
    /// statuses of all of them then. Unknown ids are `None`.
    pub async fn wait(
        &self,
        ids: &[String],
        wait: Duration,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Vec<(String, Option<Status>)> {
        let mut version = self.version.subscribe();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline, cancelled);
        loop {
            version.borrow_and_update();
            let now: Vec<(String, Option<Status>)> = ids.iter().map(|id| (id.clone(), self.status(id))).collect();
            let any_done = now.iter().any(|(_, s)| s.as_ref().is_some_and(|s| s.state == State::Done));
            let all_unknown = now.iter().all(|(_, s)| s.is_none());
            if any_done || all_unknown {
                return now;
            }
            tokio::select! {
                biased;
                () = &mut cancelled => return now,
                () = &mut deadline => return now,
                changed = version.changed() => if changed.is_err() { return now },
            }
        }
    }

    pub fn cancel(&self, task_id: &str) -> CancelOutcome {
        self.pool.cancel(task_id)
    }

    /// How many actions are unfinished.
    pub fn unfinished(&self) -> usize {
        self.pool.unfinished()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn status_of(task_id: &str, entry: &Entry) -> Status {
    let running_ms = entry.started.map(|started| match &entry.result {
        Some(result) => result.duration,
        None => millis(started.elapsed()),
    });
    Status {
        task_id: task_id.to_owned(),
        state: entry.state,
        servers: entry.servers.clone(),
        task: entry.task_preview.clone(),
        elapsed_ms: millis(entry.accepted.elapsed()),
        running_ms,
        result: entry.result.clone(),
    }
}

/// The first 200 characters of a task, for lists.
fn preview(task: &str) -> String {
    const MAX: usize = 200;
    match task.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &task[..cut]),
        None => task.to_owned(),
    }
}
