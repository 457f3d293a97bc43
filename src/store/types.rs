//! What the store holds, as every backend returns it. The `Serialize` shapes are wire: the
//! `tasks --json` output, `GET /v1/tasks/{id}` and the SSE events (add fields, never rename).

use serde::Serialize;
use serde_json::Value;

use super::{Millis, Result, StoreError};
use crate::protocol::WorkerResult;

/// Events kept for resumption; older ones are trimmed.
pub const KEEP_EVENTS: i64 = 100_000;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker.
    Queued,
    /// Handed to a worker; it belongs to that worker until it submits or the lease runs out.
    Leased,
    /// Answered: `response` holds the answer.
    Done,
    /// Given up after too many attempts: `dead_reason` says why.
    Dead,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "leased" => Self::Leased,
            "done" => Self::Done,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// One task, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: String,
    pub prompt: String,
    pub state: TaskState,
    /// How many times it was handed out.
    pub attempts: u32,
    /// The worker that holds (or last held) the lease.
    pub owner: Option<String>,
    pub lease_expires_ms: Option<Millis>,
    pub response: Option<String>,
    pub dead_reason: Option<String>,
    pub created_ms: Millis,
    pub updated_ms: Millis,
}

/// What a `submit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The response is stored; the task is done.
    Accepted,
    UnknownWorker,
    UnknownTask,
    /// The task is done already (by `by`); nothing changed.
    AlreadyDone {
        by: Option<String>,
    },
    /// The task is leased by another worker, or was never handed to this one.
    NotOwner,
    /// The task was dead-lettered.
    Dead,
}

/// What a `sweep` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Tasks whose lease ran out (or whose worker went inactive) that are queued again.
    pub requeued: u64,
    /// Tasks that ran out of attempts.
    pub dead: u64,
    /// Inactive workers removed.
    pub workers_removed: u64,
}

/// How many tasks are in each state, and how many workers are registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub queued: u64,
    pub leased: u64,
    pub done: u64,
    pub dead: u64,
    pub workers: u64,
}

impl Counts {
    /// Takes one row of `SELECT state, count(*) FROM tasks GROUP BY state` (either backend).
    pub fn add_state(&mut self, state: &str, n: i64) -> Result<()> {
        let n = u64::try_from(n).unwrap_or(0);
        match TaskState::parse(state) {
            Some(TaskState::Queued) => self.queued = n,
            Some(TaskState::Leased) => self.leased = n,
            Some(TaskState::Done) => self.done = n,
            Some(TaskState::Dead) => self.dead = n,
            None => return Err(StoreError::Corrupt(format!("task state {state}"))),
        }
        Ok(())
    }
}

/// Where an action of `serve` is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Journalled and acknowledged; not started.
    Accepted,
    /// Its worker was started.
    Running,
    /// It has its one result.
    Done,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Self::Accepted,
            "running" => Self::Running,
            "done" => Self::Done,
            _ => return None,
        })
    }
}

/// What an event of the log says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Accepted,
    Started,
    Result,
    /// The breaker paused the starting of workers (live only: never written to the log).
    DispatchPaused,
    /// The breaker resumed starting workers (live only).
    DispatchResumed,
    /// A failed attempt of an action that will run again (live only).
    Attempt,
    /// The daemon-wide budget's windows after a charge (live only).
    Budget,
}

impl EventKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Started => "started",
            Self::Result => "result",
            Self::DispatchPaused => "dispatch_paused",
            Self::DispatchResumed => "dispatch_resumed",
            Self::Attempt => "attempt",
            Self::Budget => "budget",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Self::Accepted,
            "started" => Self::Started,
            "result" => Self::Result,
            "dispatch_paused" => Self::DispatchPaused,
            "dispatch_resumed" => Self::DispatchResumed,
            "attempt" => Self::Attempt,
            "budget" => Self::Budget,
            _ => return None,
        })
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Increasing, gap-free order of writing; the SSE id.
    pub id: i64,
    pub kind: EventKind,
    pub data: Value,
}

/// An action as the journal knows it (the body of `GET /v1/tasks/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub task_id: String,
    pub state: ActionState,
    pub action: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub accepted_ms: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
    /// The daemon (`--node-name`) that holds or ran it, when daemons share the journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a previous run left unfinished.
#[derive(Debug, Default, PartialEq)]
pub struct Recovery {
    /// Running when the daemon stopped: (task id, what `accept` stored).
    pub interrupted: Vec<(String, Value)>,
    /// Accepted, never started: (task id, what `accept` stored), oldest first.
    pub pending: Vec<(String, Value)>,
}

/// How many actions are not done yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfinished {
    pub accepted: u64,
    pub running: u64,
}

/// Shared by every backend's journal: how stored rows become the types above.
impl ActionState {
    /// An action's stored state, or a `Corrupt` error naming the action.
    pub fn parse_stored(task_id: &str, state: &str) -> Result<Self> {
        Self::parse(state).ok_or_else(|| StoreError::Corrupt(format!("action {task_id}: state {state}")))
    }
}

/// What `GET /v1/tasks/{id}` shows of a stored action: `accept` stores
/// `{"index": i, "action": {...}}`; the action itself.
pub fn shown_action(stored: &str) -> Value {
    let mut stored: Value = serde_json::from_str(stored).unwrap_or(Value::Null);
    match stored.get_mut("action") {
        Some(inner) => inner.take(),
        None => stored,
    }
}

/// A result as the journal stores it.
pub fn result_value(result: &WorkerResult) -> Result<Value> {
    serde_json::to_value(result).map_err(|e| StoreError::Corrupt(format!("cannot serialise a result: {e}")))
}

impl Recovery {
    /// Files one unfinished stored action (rows come oldest first).
    pub fn add(&mut self, task_id: String, state: &str, action: &str) -> Result<()> {
        let action = serde_json::from_str(action).map_err(|e| StoreError::Corrupt(format!("action {task_id}: {e}")))?;
        match ActionState::parse_stored(&task_id, state)? {
            ActionState::Running => self.interrupted.push((task_id, action)),
            ActionState::Accepted | ActionState::Done => self.pending.push((task_id, action)),
        }
        Ok(())
    }
}

/// One registered incarnation of a daemon in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    pub id: i64,
    pub name: String,
}

/// What becomes of an action that was running on a node declared dead.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its one result (`interrupted`).
    Answer(Box<WorkerResult>),
    /// Run it again (its retries allow it): the new stored action, back to the cluster.
    Rerun(Value),
}

/// The stored action's field listing the kinds of its attempts that failed (what a re-run after a
/// crash counts as used retries).
pub const FAILED_ATTEMPTS: &str = "failedAttempts";

/// `stored` with `kind` appended to its [`FAILED_ATTEMPTS`].
pub fn with_failed_attempt(mut stored: Value, kind: &str) -> Value {
    let mut failed = stored.get(FAILED_ATTEMPTS).and_then(Value::as_array).cloned().unwrap_or_default();
    failed.push(Value::String(kind.to_owned()));
    if let Some(object) = stored.as_object_mut() {
        object.insert(FAILED_ATTEMPTS.to_owned(), Value::Array(failed));
    }
    stored
}

/// How a reaper decides a dead node's running action: (task id, what `accept` stored).
pub type VerdictFn = dyn for<'a, 'b> Fn(&'a str, &'b Value) -> Verdict + Sync;

/// The answer of an action cancelled before any node held it, from what `accept` stored.
pub type UnclaimedFn = dyn for<'a> Fn(&'a Value) -> WorkerResult + Sync;

/// What [`Cluster::reap`](super::Cluster::reap) did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reaped {
    /// Nodes declared dead by this call.
    pub declared: Vec<NodeId>,
    /// Running actions answered, by the name of the node that ran them.
    pub answered: Vec<(String, String)>,
    /// Running actions put back to run again (their retries allow it), likewise.
    pub rerun: Vec<(String, String)>,
    /// Actions given back to the cluster (unstarted, or to be run again).
    pub released: u64,
    pub events: Vec<EventRecord>,
}

/// Where a cluster-wide cancel went.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterCancel {
    Unknown,
    Finished,
    /// Nobody held it: answered here (the event written).
    Answered(Option<EventRecord>),
    /// The node holding it was asked.
    Asked(String),
}

/// The cluster at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    pub nodes_alive: u64,
    /// Accepted actions no node holds yet (the cluster's backlog).
    pub unclaimed: u64,
    pub claimed: u64,
    pub running: u64,
}
