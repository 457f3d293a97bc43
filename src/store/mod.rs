//! The durable store: every interface to durable state lives here (issues 3 and 8).
//!
//! Two traits, both async so that a network backend (PostgreSQL, issue 9) fits without a thread
//! per call: [`QueueStore`] (the polling queue: tasks, leases, workers) and [`Journal`] (the
//! action journal and event log of `serve`). Their types ([`types`]) and errors ([`StoreError`])
//! name no backend. Every method is one atomic transaction, durable before it returns. Times
//! come from the backend's [`Clock`] (SQLite: the system clock, or a manual one in tests; a
//! database backend: the database's clock), so callers pass durations, never instants.
//!
//! Callers never poll for other processes' writes: [`QueueStore::task_changes`] and
//! [`Journal::event_changes`] give a [`Changes`] subscription that the backend feeds.
//!
//! `sqlite/` is the first backend; `contract/` is the test suite every backend passes.

pub mod changes;
pub mod clock;
#[cfg(test)]
pub(crate) mod contract;
pub mod ids;
pub mod open;
pub mod postgres;
pub mod retention;
pub mod sqlite;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use changes::{ChangeFeed, Changes};
pub use clock::{Clock, Millis, now_ms};
pub use open::{OpenStore, StoreLocation};
pub use postgres::{PgConfig, PgStore};
pub use sqlite::{Mode as SqliteMode, SqliteStore};
pub use types::{
    ActionRecord, ActionState, ClusterCancel, ClusterStatus, Counts, EventKind, EventRecord, NodeId, Reaped, Recovery,
    SubmitOutcome, SweepReport, Task, TaskState, UnclaimedFn, Unfinished, Verdict, VerdictFn,
};

use crate::protocol::WorkerResult;

/// Failures of the store itself (not of the caller's request).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    /// The backend failed (I/O, SQL, connection). Shared, so one failed group commit can
    /// answer every caller in it.
    #[error("store backend error: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
    #[error("the store was written by a newer mcp-workers (schema version {found}, this one knows {known})")]
    TooNew { found: i64, known: i64 },
    /// The store is held by somebody else (another daemon owns what was asked for).
    #[error("{0}")]
    Busy(String),
    #[error("corrupt store row: {0}")]
    Corrupt(String),
    /// The backend's connection or thread is gone (the store was closed, or it crashed).
    #[error("the store is closed")]
    Closed,
    /// This daemon was declared dead by another (it was silent longer than the node timeout),
    /// or the action was handed to another daemon: the write was refused (a fenced write).
    #[error("fenced: {0}")]
    Fenced(String),
}

impl StoreError {
    /// A copy for another caller of the same failed transaction.
    pub fn shared(&self) -> Self {
        match self {
            Self::Backend(e) => Self::Backend(Arc::clone(e)),
            Self::TooNew { found, known } => Self::TooNew { found: *found, known: *known },
            Self::Corrupt(s) => Self::Corrupt(s.clone()),
            Self::Busy(s) => Self::Busy(s.clone()),
            Self::Closed => Self::Closed,
            Self::Fenced(s) => Self::Fenced(s.clone()),
            Self::DataDir { path, source } => {
                Self::DataDir { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The polling queue's durable state. Every method is one transaction.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Adds tasks at the back of the queue, in order; returns their ids.
    async fn enqueue(&self, prompts: &[String]) -> Result<Vec<String>>;
    /// Registers a worker that counts as active for `active_for` from now.
    async fn create_worker(&self, active_for: Duration) -> Result<String>;
    /// Marks a worker as seen now and active at least `active_for` longer. False if unknown.
    async fn touch_worker(&self, worker_id: &str, active_for: Duration) -> Result<bool>;
    /// Leases the oldest queued task to `worker_id` for `lease` (attempts + 1). The worker stays
    /// active at least as long as the lease.
    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Task>>;
    /// [`touch_worker`](Self::touch_worker), then, for a known worker,
    /// [`claim`](Self::claim): a poll that nobody waits ahead of. `None`: unknown worker (nothing
    /// claimed). A backend that can does both in one transaction (SQLite); this default is the
    /// two in turn.
    async fn touch_and_claim(
        &self,
        worker_id: &str,
        active_for: Duration,
        lease: Duration,
    ) -> Result<Option<Option<Task>>> {
        if !self.touch_worker(worker_id, active_for).await? {
            return Ok(None);
        }
        self.claim(worker_id, lease).await.map(Some)
    }
    /// Undoes a claim whose task never reached the worker (a cancelled poll): queued again at
    /// its place, the attempt not counted. False if the task is not leased by `worker_id`.
    async fn release(&self, task_id: &str, worker_id: &str) -> Result<bool>;
    /// Stores the response of a task leased by `worker_id` (or queued again after its lease ran
    /// out, while still last owned by it). Anything else changes nothing.
    async fn submit(&self, worker_id: &str, task_id: &str, response: &str) -> Result<SubmitOutcome>;
    /// Requeues tasks whose lease ran out or whose worker is inactive (dead-letters them after
    /// `max_attempts`), and removes inactive workers.
    async fn sweep(&self, max_attempts: u32) -> Result<SweepReport>;
    async fn task(&self, task_id: &str) -> Result<Option<Task>>;
    /// Tasks oldest first, optionally only those in `state`, at most `limit`.
    async fn tasks(&self, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>>;
    async fn counts(&self) -> Result<Counts>;
    /// Whether some worker is active now.
    async fn any_active_worker(&self) -> Result<bool>;
    /// Retention: deletes done and dead tasks last changed more than `keep` ago; returns how
    /// many.
    async fn purge_tasks(&self, keep: Duration) -> Result<u64>;
    /// Background upkeep, called every sweep, off the path of claims and submits (SQLite:
    /// checkpoints the WAL).
    async fn maintain(&self) -> Result<()>;
    /// Wakes when queued tasks may have appeared: an enqueue, a release or a requeue, through
    /// this handle or any other (another process, another daemon). A hint: claim to find out.
    fn task_changes(&self) -> Changes;
}

/// What the daemon-wide budget (`--budget AMOUNT/PERIOD`) has charged: durable, so that a
/// restart does not reset its rolling windows. A separate trait (not part of [`Journal`]): `run`
/// keeps a ledger without a journal, and a backend may add it on its own.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Records that `task_id` cost `usd`, now.
    async fn charge(&self, task_id: &str, usd: f64) -> Result<()>;
    /// The charges of the last `window`, oldest first: how long ago each was made, and its USD.
    async fn charges_within(&self, window: Duration) -> Result<Vec<(Duration, f64)>>;
}

/// The action journal and event log of `serve`. Every accepted action is in it before it is
/// acknowledged; its state moves `accepted` → `running` → `done` with exactly one result.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Which of `task_ids` the journal already holds.
    async fn known(&self, task_ids: &[String]) -> Result<Vec<String>>;
    /// Records accepted actions (state `accepted`, with what to run them again from) and refused
    /// ones (state `done`, with their result) in one transaction, with an event each. Returns
    /// the events, in order. A refused action whose id is known keeps its first record.
    async fn accept(
        &self,
        accepted: &[(String, serde_json::Value)],
        refused: &[WorkerResult],
    ) -> Result<Vec<EventRecord>>;
    /// Marks an accepted action as running, with a `started` event.
    async fn started(&self, task_id: &str) -> Result<EventRecord>;
    /// Records an action's one result, with a `result` event. A second result for the same
    /// action changes nothing (`None`). Trims the event log to the newest
    /// [`types::KEEP_EVENTS`].
    async fn finish(&self, result: &WorkerResult) -> Result<Option<EventRecord>>;
    /// One action as `GET /v1/tasks/{id}` shows it.
    async fn action(&self, task_id: &str) -> Result<Option<ActionRecord>>;
    /// The newest `limit` actions, newest accepted first, optionally only those in `state`.
    async fn actions(&self, state: Option<ActionState>, limit: u32) -> Result<Vec<ActionRecord>>;
    /// Events with an id above `after`, oldest first, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>>;
    /// What a previous run left: running actions and not-yet-started ones, oldest first.
    async fn recover(&self) -> Result<Recovery>;
    /// Retention: deletes done actions finished more than `keep` ago, and events written more
    /// than `keep` ago (the oldest, so the kept ids stay gap-free); returns (actions, events).
    async fn purge_actions(&self, keep: Duration) -> Result<(u64, u64)>;
    /// How many actions are accepted and how many running.
    async fn unfinished(&self) -> Result<Unfinished>;
    /// Wakes when events may have been appended, through this handle or any other.
    fn event_changes(&self) -> Changes;
    /// Puts a running action back to `accepted`, to run again from `stored` (what `accept`
    /// stored, with what the interrupted run adds: `service::interrupted`). False, changing
    /// nothing, if the action is not running (finished, or requeued by somebody else).
    async fn requeue(&self, task_id: &str, stored: &serde_json::Value) -> Result<bool>;
    /// Adds a failed attempt's kind to a running action's stored `failedAttempts`
    /// ([`types::FAILED_ATTEMPTS`]), so that after a crash the attempts the daemon retried are
    /// counted too. False, changing nothing, if the action is not running.
    async fn attempt_failed(&self, task_id: &str, kind: &str) -> Result<bool>;
}

/// Several `serve` daemons on one journal (PostgreSQL; issue 9): each daemon is a node that
/// registers itself, heartbeats in the database's time, claims accepted actions up to its free
/// slots, and has its writes fenced. Once a [`Cluster::join`] succeeded, the handle's
/// [`Journal::started`] and [`Journal::finish`] succeed only for actions this node holds while
/// it is alive ([`StoreError::Fenced`] otherwise).
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Registers this daemon as a new incarnation of `name` (one live daemon per name: an
    /// error if another holds it). Earlier incarnations of `name` that are gone are declared
    /// dead at once, so that a restart does not wait for the node timeout.
    async fn join(&self, name: &str) -> Result<NodeId>;
    /// Says this node is alive (database time). [`StoreError::Fenced`] if it was declared dead.
    async fn heartbeat(&self) -> Result<()>;
    /// Declares dead every node silent for longer than `timeout` (exactly one caller does it
    /// for each), then settles the unfinished actions of dead and departed nodes: an unstarted
    /// one goes back to the cluster, a running one gets `verdict`'s answer. One transaction per
    /// call; the events written are returned.
    async fn reap(&self, timeout: Duration, verdict: &VerdictFn) -> Result<Reaped>;
    /// Claims up to `n` accepted actions nobody holds, oldest first (`SKIP LOCKED`): (task id,
    /// what `accept` stored).
    async fn claim(&self, n: usize) -> Result<Vec<(String, serde_json::Value)>>;
    /// Hands this node's claimed, unstarted actions back to the cluster, at once (a graceful
    /// stop). Returns how many.
    async fn hand_back(&self) -> Result<u64>;
    /// Marks this node departed (after its running workers finished).
    async fn leave(&self) -> Result<()>;
    /// Cancels `task_id` wherever it is: nobody holds it yet → answered here with `unclaimed`'s
    /// result (kind `cancelled`) for what `accept` stored; another node holds it → that node is
    /// asked.
    async fn cancel(&self, task_id: &str, unclaimed: &UnclaimedFn) -> Result<ClusterCancel>;
    /// The cancels other nodes asked of this one (each returned once).
    async fn cancels(&self) -> Result<Vec<String>>;
    /// Wakes when another node asks this one to cancel something.
    fn cancel_changes(&self) -> Changes;
    /// The id of the newest event (where a node's event tail starts).
    async fn last_event_id(&self) -> Result<i64>;
    /// The cluster as `/metrics` shows it.
    async fn status(&self) -> Result<ClusterStatus>;
}
