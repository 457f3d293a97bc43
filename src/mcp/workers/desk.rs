//! The front desk of `mcp-workers mcp workers`: actions in, handles out, results kept for as long
//! as the server runs. It owns a worker [`Pool`] and the book of every action it accepted, fed by
//! the pool's events; waiting callers watch the book's version.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::front::{
    Cancel, Front, FrontResult, LastProgress, Refusal, State, Status, Statuses, apply_key, millis, preview,
};
use crate::pool::{CancelOutcome, Event, Pool};
use crate::protocol::parse::{INVALID_PREFIX, Item, Limits, parse_action};
use crate::protocol::{ErrorKind, Origin, Output, WorkerError, WorkerResult};
use crate::worker::progress::ProgressLine;

/// Finished actions kept for `worker_wait`/`worker_status` beyond this many are forgotten, oldest
/// first (unfinished ones are always kept).
const KEEP_FINISHED: usize = 1000;

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

#[derive(Default)]
struct Book {
    entries: HashMap<String, Entry>,
    /// Task ids in the order they were accepted.
    order: VecDeque<String>,
}

pub struct Desk {
    pool: Pool,
    limits: Limits,
    progress: Arc<LastProgress>,
    book: Mutex<Book>,
    /// Bumped whenever an action changes state.
    version: watch::Sender<u64>,
}

impl Desk {
    /// A desk on `pool`, whose events arrive on `events` and its workers' progress on `progress`.
    pub fn start(
        pool: Pool,
        limits: Limits,
        events: mpsc::Receiver<Event>,
        progress: broadcast::Receiver<ProgressLine>,
    ) -> Arc<Self> {
        let last = Arc::new(LastProgress::default());
        Arc::clone(&last).follow(progress);
        let desk =
            Arc::new(Self { pool, limits, progress: last, book: Mutex::default(), version: watch::channel(0).0 });
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
                // A failed attempt that runs again starts again (`Started`); budget figures are
                // for `serve`'s SSE.
                Event::Attempt(_) | Event::Budget(_) => continue,
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
        let Book { entries, order } = &mut *book;
        let done =
            |entries: &HashMap<String, Entry>, id: &String| entries.get(id).is_some_and(|e| e.state == State::Done);
        let mut excess = order.iter().filter(|id| done(entries, id)).count().saturating_sub(KEEP_FINISHED);
        order.retain(|id| {
            let forget = excess > 0 && done(entries, id);
            if forget {
                entries.remove(id);
                excess -= 1;
            }
            !forget
        });
    }

    async fn spawn_action(&self, mut action: Map<String, Value>, key: Option<&str>) -> Result<String, Refusal> {
        if let Some(id) = apply_key(&mut action, key)
            && self.book().entries.contains_key(&id)
        {
            return Ok(id);
        }
        action.insert("type".into(), Value::from("spawn_worker"));
        let action = match parse_action(Value::Object(action), Origin::default(), self.limits) {
            Item::Spawn(action) => action,
            Item::Refused(result) => return Err(result.into()),
            Item::Ack(_) => return Err(Refusal::internal("the action was not read as spawn_worker")),
        };
        let entry = Entry {
            servers: action.servers.clone(),
            task_preview: preview(&action.task),
            state: State::Queued,
            accepted: Instant::now(),
            started: None,
            result: None,
        };
        let task_id = action.task_id.clone();
        let admitted = self.pool.admit(action).map_err(Refusal::from)?;
        {
            let mut book = self.book();
            if book.entries.contains_key(&task_id) {
                // A finished action with this id (a running one was refused by the pool), or
                // the same key twice at once: the first one in keeps it.
                if key.is_some() {
                    return Ok(task_id);
                }
                let message = format!("{INVALID_PREFIX}: /taskId: {task_id} was already used on this server");
                return Err(Refusal(WorkerError::new(ErrorKind::InvalidAction, message, false)));
            }
            book.entries.insert(task_id.clone(), entry);
            book.order.push_back(task_id.clone());
        }
        self.pool.enqueue(admitted).await;
        Ok(task_id)
    }

    fn status_now(&self, task_id: &str) -> Option<Status> {
        let mut status = self.book().entries.get(task_id).map(|entry| status_of(task_id, entry))?;
        self.progress.annotate(&mut status);
        Some(status)
    }

    /// How many actions are unfinished.
    pub fn unfinished(&self) -> usize {
        self.pool.unfinished()
    }
}

impl Front for Desk {
    fn spawn<'a>(&'a self, action: Map<String, Value>, key: Option<&'a str>) -> BoxFuture<'a, Result<String, Refusal>> {
        Box::pin(self.spawn_action(action, key))
    }

    fn status<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, FrontResult<Option<Status>>> {
        Box::pin(async move { Ok(self.status_now(task_id)) })
    }

    fn wait<'a>(
        &'a self,
        ids: &'a [String],
        wait: Duration,
        cancelled: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, FrontResult<Statuses>> {
        Box::pin(async move {
            let mut version = self.version.subscribe();
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline, cancelled);
            loop {
                version.borrow_and_update();
                let now: Vec<(String, Option<Status>)> =
                    ids.iter().map(|id| (id.clone(), self.status_now(id))).collect();
                if settled(&now) {
                    return Ok(now);
                }
                tokio::select! {
                    biased;
                    () = &mut cancelled => return Ok(now),
                    () = &mut deadline => return Ok(now),
                    changed = version.changed() => if changed.is_err() { return Ok(now) },
                }
            }
        })
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, FrontResult<Cancel>> {
        Box::pin(async move {
            Ok(match (self.status_now(task_id), self.pool.cancel(task_id)) {
                (None, _) => Cancel::Unknown,
                (Some(_), CancelOutcome::Cancelled) => Cancel::Cancelling,
                (Some(_), CancelOutcome::NotFound) => Cancel::Finished,
            })
        })
    }

    fn list(&self, state: Option<State>, limit: usize) -> BoxFuture<'_, FrontResult<Vec<Status>>> {
        let book = self.book();
        let listed = book
            .order
            .iter()
            .rev()
            .filter_map(|id| book.entries.get(id).map(|e| (id, e)))
            .filter(|(_, e)| state.is_none_or(|s| e.state == s))
            .take(limit)
            .map(|(id, e)| Status { result: None, ..status_of(id, e) })
            .collect();
        Box::pin(async move { Ok(listed) })
    }
}

/// A wait is over once one of the ids is done, or none of them is known.
pub fn settled(statuses: &[(String, Option<Status>)]) -> bool {
    statuses.iter().any(|(_, s)| s.as_ref().is_some_and(|s| s.state == State::Done))
        || statuses.iter().all(|(_, s)| s.is_none())
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
        result: entry.result.as_ref().and_then(|r| serde_json::to_value(r).ok()),
        progress: None,
    }
}
