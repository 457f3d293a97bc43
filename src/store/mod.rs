//! The durable store: tasks, leases, workers, results (issue 3). SQLite by default.
//!
//! [`Store`] is the one interface the queue talks to; [`SqliteStore`] implements it on one SQLite
//! file. A PostgreSQL backend can implement the same trait later. Every method is one atomic
//! transaction and takes the current time (`now`, epoch milliseconds) from the caller, so the rules
//! are testable without a clock. The methods block: async callers run them with `spawn_blocking`.

pub mod ids;
pub mod sqlite;

pub use sqlite::SqliteStore;

use serde::Serialize;

/// Epoch milliseconds.
pub type Millis = i64;

/// The current wall-clock time in epoch milliseconds.
pub fn now_ms() -> Millis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

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

/// Failures of the store itself (not of the caller's request).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store file was written by a newer mcp-workers (schema version {found}, this one knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("corrupt store row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The queue's durable state. Every method is one transaction.
pub trait Store: Send + Sync + 'static {
    /// Adds tasks at the back of the queue, in order; returns their ids.
    fn enqueue(&self, prompts: &[String], now: Millis) -> Result<Vec<String>>;
    /// Registers a worker that counts as active until `active_until`.
    fn create_worker(&self, now: Millis, active_until: Millis) -> Result<String>;
    /// Marks a worker as seen and active at least until `active_until`. False if it is unknown.
    fn touch_worker(&self, worker_id: &str, now: Millis, active_until: Millis) -> Result<bool>;
    /// Leases the oldest queued task to `worker_id` until `lease_until` (attempts + 1).
    fn claim(&self, worker_id: &str, now: Millis, lease_until: Millis) -> Result<Option<Task>>;
    /// Undoes a claim whose task never reached the worker (a cancelled poll): queued again, the
    /// attempt not counted. False if the task is not leased by `worker_id`.
    fn release(&self, task_id: &str, worker_id: &str, now: Millis) -> Result<bool>;
    /// Stores the response of a task leased by `worker_id` (or queued again after its lease ran
    /// out, while still last owned by it). Anything else changes nothing.
    fn submit(&self, worker_id: &str, task_id: &str, response: &str, now: Millis) -> Result<SubmitOutcome>;
    /// Requeues tasks whose lease ran out or whose worker is inactive (dead-letters them after
    /// `max_attempts`), and removes inactive workers.
    fn sweep(&self, now: Millis, max_attempts: u32) -> Result<SweepReport>;
    fn task(&self, task_id: &str) -> Result<Option<Task>>;
    /// Tasks oldest first, optionally only those in `state`, at most `limit`.
    fn tasks(&self, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>>;
    fn counts(&self) -> Result<Counts>;
    /// Whether some worker is active at `now`.
    fn any_active_worker(&self, now: Millis) -> Result<bool>;
    /// Background upkeep, called every sweep (SQLite: checkpoints the WAL from a side
    /// connection, off the path of claims and submits).
    fn maintain(&self) -> Result<()>;
    /// A number that changes when another process changed the store (cheap; polled while
    /// polls wait, so a task enqueued elsewhere is seen at once).
    fn change_token(&self) -> Result<u64>;
}
