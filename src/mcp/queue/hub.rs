//! The queue as the MCP tools see it: the store plus what makes polls wake at once.
//!
//! One hand-out loop per process hands tasks to waiting polls in the order they started
//! waiting (FIFO). It claims a task in the store for the poll at the front, then passes it over a
//! oneshot channel; a poll that was cancelled meanwhile makes the send fail, and the claim is
//! released. The hand-out loop wakes on an in-process enqueue (a `Notify`), on a sweep that requeued
//! something, and, only while polls wait, on the store's change subscription
//! ([`QueueStore::task_changes`]: another process wrote, e.g. an `enqueue` from the CLI).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{QueueStore, StoreError, SubmitOutcome, Task};

/// The queue's policy: how long things last.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long `worker_poll` waits for a task.
    pub poll_timeout: Duration,
    /// How long a handed-out task belongs to its worker.
    pub lease: Duration,
    /// A worker not seen for `poll_timeout + inactive_grace` (and holding no lease) is removed.
    pub inactive_grace: Duration,
    /// Deliveries before a task is dead-lettered.
    pub max_attempts: u32,
    /// The largest response `worker_submit` stores.
    pub max_response_bytes: usize,
    /// How often a waiting poll sends a progress notification (when the client asked for them).
    pub progress_interval: Duration,
    /// How often expired leases and inactive workers are swept.
    pub sweep_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            poll_timeout: Duration::from_secs(59),
            lease: Duration::from_secs(300),
            inactive_grace: Duration::from_secs(5),
            max_attempts: 3,
            max_response_bytes: 1024 * 1024,
            progress_interval: Duration::from_secs(5),
            sweep_interval: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a poll ended.
#[derive(Debug)]
pub enum PollOutcome {
    Task(Task),
    /// The poll timeout passed with no task.
    Idle,
    UnknownWorker,
    /// The client cancelled the poll or went away; no task was taken.
    Cancelled,
}

struct Waiter {
    worker_id: String,
    tx: oneshot::Sender<Task>,
}

pub struct Queue {
    store: Arc<dyn QueueStore>,
    config: QueueConfig,
    waiters: Mutex<VecDeque<Waiter>>,
    wake: Notify,
    shutdown: CancellationToken,
}

impl Queue {
    /// Starts the hand-out loop and the sweeper; both stop when `shutdown` is cancelled.
    pub fn start(store: Arc<dyn QueueStore>, config: QueueConfig, shutdown: CancellationToken) -> Arc<Self> {
        let queue =
            Arc::new(Self { store, config, waiters: Mutex::new(VecDeque::new()), wake: Notify::new(), shutdown });
        tokio::spawn(Arc::clone(&queue).hand_out_loop());
        tokio::spawn(Arc::clone(&queue).sweep_loop());
        queue
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The store behind the queue.
    pub fn store(&self) -> &dyn QueueStore {
        self.store.as_ref()
    }

    /// How long a worker counts as active after it was seen.
    fn active_for(&self) -> Duration {
        self.config.poll_timeout.saturating_add(self.config.inactive_grace)
    }

    pub async fn create_worker(&self) -> Result<String, QueueError> {
        Ok(self.store.create_worker(self.active_for()).await?)
    }

    pub async fn enqueue(&self, prompts: Vec<String>) -> Result<Vec<String>, QueueError> {
        let ids = self.store.enqueue(&prompts).await?;
        self.wake.notify_one();
        Ok(ids)
    }

    pub async fn submit(&self, worker_id: &str, task_id: &str, response: &str) -> Result<SubmitOutcome, QueueError> {
        Ok(self.store.submit(worker_id, task_id, response).await?)
    }

    /// Waits up to the poll timeout for a task for `worker_id`. When `cancelled` completes (the
    /// client cancelled or went away) the wait ends without taking a task.
    pub async fn poll(&self, worker_id: &str, cancelled: impl Future<Output = ()>) -> Result<PollOutcome, QueueError> {
        if self.has_waiters() {
            // Others wait: in line behind them (the hand-out loop serves the line in order).
            if !self.store.touch_worker(worker_id, self.active_for()).await? {
                return Ok(PollOutcome::UnknownWorker);
            }
        } else {
            // Nobody ahead: a queued task is taken at once, in the touch's transaction.
            match self.store.touch_and_claim(worker_id, self.active_for(), self.config.lease).await? {
                None => return Ok(PollOutcome::UnknownWorker),
                Some(Some(task)) => return Ok(PollOutcome::Task(task)),
                Some(None) => {}
            }
        }
        let (tx, mut rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Waiter { worker_id: worker_id.to_owned(), tx });
        self.wake.notify_one();
        let cancelled = tokio::select! {
            task = &mut rx => return Ok(task.map_or(PollOutcome::Idle, PollOutcome::Task)),
            () = tokio::time::sleep(self.config.poll_timeout) => false,
            () = cancelled => true,
            () = self.shutdown.cancelled() => true,
        };
        // The hand-out loop may have sent a task just now: closing makes any later send fail (the
        // hand-out loop then releases it), and try_recv picks up one that got through.
        rx.close();
        match rx.try_recv() {
            Ok(task) if cancelled => {
                self.store.release(&task.id, worker_id).await?;
                self.wake.notify_one();
                Ok(PollOutcome::Cancelled)
            }
            Ok(task) => Ok(PollOutcome::Task(task)),
            Err(_) if cancelled => Ok(PollOutcome::Cancelled),
            Err(_) => Ok(PollOutcome::Idle),
        }
    }

    /// The worker at the front of the line, dropping polls that gave up.
    fn front_worker(&self) -> Option<String> {
        let mut waiters = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while waiters.front().is_some_and(|w| w.tx.is_closed()) {
            waiters.pop_front();
        }
        waiters.front().map(|w| w.worker_id.clone())
    }

    /// Hands queued tasks to waiting polls until one side runs out.
    async fn serve_waiters(&self) -> Result<(), QueueError> {
        while let Some(worker_id) = self.front_worker() {
            let Some(task) = self.store.claim(&worker_id, self.config.lease).await? else {
                return Ok(());
            };
            // Only this task pops, so the front is still the waiter the task was claimed for.
            let waiter = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
            let undelivered = match waiter {
                Some(w) if w.worker_id == worker_id => w.tx.send(task).err(),
                _ => Some(task),
            };
            if let Some(task) = undelivered {
                tracing::debug!(task_id = %task.id, worker_id, "poll went away; releasing the task");
                self.store.release(&task.id, &worker_id).await?;
            }
        }
        Ok(())
    }

    fn has_waiters(&self) -> bool {
        self.front_worker().is_some()
    }

    async fn hand_out_loop(self: Arc<Self>) {
        let mut changes = self.store.task_changes();
        loop {
            if let Err(err) = self.serve_waiters().await {
                tracing::error!(error = %err, "queue hand-out failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let waiting = self.has_waiters();
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.shutdown.cancelled() => return,
                () = changes.changed(), if waiting => {}
            }
        }
    }

    async fn sweep_loop(self: Arc<Self>) {
        let max_attempts = self.config.max_attempts;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.sweep_interval) => {}
                () = self.shutdown.cancelled() => return,
            }
            let swept = match self.store.maintain().await {
                Ok(()) => self.store.sweep(max_attempts).await,
                Err(err) => Err(err),
            };
            match swept {
                Ok(report) => {
                    if report.requeued > 0 {
                        tracing::info!(tasks = report.requeued, "leases ran out; tasks queued again");
                        self.wake.notify_one();
                    }
                    if report.dead > 0 {
                        tracing::warn!(tasks = report.dead, "tasks dead-lettered after too many attempts");
                    }
                    if report.workers_removed > 0 {
                        tracing::info!(workers = report.workers_removed, "inactive workers removed");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "queue sweep failed"),
            }
        }
    }
}
