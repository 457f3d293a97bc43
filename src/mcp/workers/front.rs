//! What the workers tools need from whatever runs the actions: the stdio server's in-memory
//! [`super::desk::Desk`], or `serve`'s journal-backed service (`service/front.rs`). Both answer
//! the same five questions; the tools (`server.rs`) only format them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::protocol::{ErrorKind, WorkerError, WorkerResult};

/// Where an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Done,
}

/// What `worker_status` and a handle say about an action.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub task_id: String,
    pub state: State,
    pub servers: Vec<String>,
    /// The start of the task text.
    pub task: String,
    /// Milliseconds since it was accepted.
    pub elapsed_ms: u64,
    /// Milliseconds it has been running, or ran (absent while queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_ms: Option<u64>,
    /// Its `worker_result`, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Its latest `worker_progress` line while it runs (turns, tools used so far, the event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
}

/// The latest progress line of each running worker, fed by the workers' progress broadcast.
#[derive(Default)]
pub struct LastProgress {
    latest: std::sync::Mutex<std::collections::HashMap<String, Value>>,
}

impl LastProgress {
    /// At most this many workers are remembered (a worker's entry goes when its result is read).
    const MAX: usize = 10_000;

    /// Keeps the latest line of each worker from `lines` until the sender goes away.
    pub fn follow(
        self: std::sync::Arc<Self>,
        mut lines: tokio::sync::broadcast::Receiver<crate::worker::progress::ProgressLine>,
    ) {
        tokio::spawn(async move {
            loop {
                match lines.recv().await {
                    Ok(line) => {
                        let mut latest = self.lock();
                        if latest.len() >= Self::MAX && !latest.contains_key(&line.task_id) {
                            continue;
                        }
                        let value = serde_json::to_value(&line).unwrap_or_default();
                        latest.insert(line.task_id, value);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Value>> {
        self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts the latest line into a running worker's status; forgets it once the worker is done.
    pub fn annotate(&self, status: &mut Status) {
        if status.state == State::Done {
            self.lock().remove(&status.task_id);
        } else {
            status.progress = self.lock().get(&status.task_id).cloned();
        }
    }
}

/// A progress notification's text for one worker: its state, time, turns, tools, last event.
pub fn progress_text(status: &Status) -> String {
    let state = match status.state {
        State::Queued => "queued",
        State::Running => "running",
        State::Done => "done",
    };
    let mut text = format!("{}: {state} {} s", status.task_id, status.elapsed_ms / 1000);
    if let Some(p) = &status.progress {
        let tools: Vec<&str> =
            p["toolsUsed"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        text.push_str(&format!(", {} turns", p["turns"].as_u64().unwrap_or(0)));
        if !tools.is_empty() {
            text.push_str(&format!(", tools used: {}", tools.join(", ")));
        }
        if let Some(event) = p["event"].as_str() {
            text.push_str(&format!(", last: {event}"));
            if let Some(tool) = p["tool"].as_str() {
                text.push_str(&format!(" {tool}"));
            }
        }
    }
    text
}

/// Why an action was not accepted: its kind and message, as the tool error carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal(pub WorkerError);

impl Refusal {
    pub fn internal(message: impl Into<String>) -> Self {
        Refusal(WorkerError::new(ErrorKind::InternalError, message, true))
    }
}

impl From<Box<WorkerResult>> for Refusal {
    fn from(result: Box<WorkerResult>) -> Self {
        let WorkerResult { error, result: text, .. } = *result;
        Refusal(error.unwrap_or_else(|| WorkerError::new(ErrorKind::InternalError, text, false)))
    }
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// It is being stopped; its result will say `cancelled`.
    Cancelling,
    /// It had finished already.
    Finished,
    /// It is known but cannot be cancelled right now (being recovered after a restart).
    NotNow,
    Unknown,
}

/// A failure of the backing store, as text for an `internal_error` tool reply.
pub type FrontResult<T> = Result<T, String>;

/// Each id asked for, with its status (`None`: unknown).
pub type Statuses = Vec<(String, Option<Status>)>;

pub trait Front: Send + Sync + 'static {
    /// Validates and queues one action (the tool's fields, without `type`, `wait` or the key).
    /// With an `idempotency_key` whose task exists, returns that task and queues nothing.
    fn spawn<'a>(
        &'a self,
        action: Map<String, Value>,
        idempotency_key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, Refusal>>;
    fn status<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, FrontResult<Option<Status>>>;
    /// Waits until one of `ids` is done, `wait` passes or `cancelled` resolves; then the status
    /// of each (`None`: unknown).
    fn wait<'a>(
        &'a self,
        ids: &'a [String],
        wait: Duration,
        cancelled: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, FrontResult<Statuses>>;
    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, FrontResult<Cancel>>;
    /// The newest `limit` actions, newest first, optionally only those in `state` (no results).
    fn list(&self, state: Option<State>, limit: usize) -> BoxFuture<'_, FrontResult<Vec<Status>>>;
}

/// The task id an `idempotencyKey` stands for when the call names no `taskId`: the same key
/// always gives the same id, so a repeated call finds the first call's task (in the journal too,
/// across restarts). FNV-1a, 64 bits: keys come from one client, collisions are not a concern.
pub fn key_task_id(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("key-{hash:016x}")
}

/// Fills in `taskId` from the key (when the call gave a key and no id); returns the id to look
/// for before queueing, if any.
pub fn apply_key(action: &mut Map<String, Value>, key: Option<&str>) -> Option<String> {
    let key = key?;
    match action.get("taskId").and_then(Value::as_str) {
        Some(id) => Some(id.to_owned()),
        None => {
            let id = key_task_id(key);
            action.insert("taskId".into(), Value::from(id.clone()));
            Some(id)
        }
    }
}

/// The first 200 characters of a task, for lists.
pub fn preview(task: &str) -> String {
    const MAX: usize = 200;
    match task.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &task[..cut]),
        None => task.to_owned(),
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_stands_for_one_task_id() {
        assert_eq!(key_task_id("k-1"), key_task_id("k-1"));
        assert_ne!(key_task_id("k-1"), key_task_id("k-2"));
        assert!(crate::protocol::parse::is_task_id(&key_task_id("any key, with spaces ✓")));
        let mut without = json!({"task": "t"}).as_object().cloned().unwrap();
        assert_eq!(apply_key(&mut without, Some("k")), Some(key_task_id("k")));
        assert_eq!(without["taskId"], key_task_id("k").as_str());
        let mut with = json!({"task": "t", "taskId": "mine"}).as_object().cloned().unwrap();
        assert_eq!(apply_key(&mut with, Some("k")), Some("mine".to_owned()));
        assert_eq!(apply_key(&mut with, None), None);
    }

    #[test]
    fn previews_are_bounded() {
        assert_eq!(preview("short"), "short");
        assert_eq!(preview(&"é".repeat(300)).chars().count(), 201);
    }
}
