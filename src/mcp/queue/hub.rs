//! The queue as the MCP tools see it: the store plus what makes polls wake at once.
//!
//! One dispatcher task per process hands tasks to waiting polls in the order they started
//! waiting (FIFO). It claims a task in the store for the poll at the front, then passes it over a
//! oneshot channel; a poll that was cancelled meanwhile makes the send fail, and the claim is
//! released. The dispatcher wakes on an in-process enqueue (a `Notify`), on a sweep that requeued
//! something, and, only while polls wait, when the store's change token moves (another process
//! wrote: an `enqueue` from the CLI, another server).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{Millis, Store, StoreError, SubmitOutcome, Task, now_ms};

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
    /// How often the store's change token is read while polls wait.
    pub watch_interval: Duration,
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
            watch_interval: Duration::from_millis(5),
            sweep_interval: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
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
    store: Arc<dyn Store>,
    config: QueueConfig,
    waiters: Mutex<VecDeque<Waiter>>,
    wake: Notify,
    shutdown: CancellationToken,
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Queue {
    /// Starts the dispatcher and the sweeper; both stop when `shutdown` is cancelled.
    pub fn start(store: Arc<dyn Store>, config: QueueConfig, shutdown: CancellationToken) -> Arc<Self> {
        let queue =
            Arc::new(Self { store, config, waiters: Mutex::new(VecDeque::new()), wake: Notify::new(), shutdown });
        tokio::spawn(Arc::clone(&queue).dispatch_loop());
        tokio::spawn(Arc::clone(&queue).sweep_loop());
        queue
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Runs a store operation off the async threads.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> crate::store::Result<T> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
    }

    fn active_until(&self, now: Millis) -> Millis {
        now.saturating_add(ms(self.config.poll_timeout)).saturating_add(ms(self.config.inactive_grace))
    }

    pub async fn create_worker(&self) -> Result<String, QueueError> {
        let now = now_ms();
        let until = self.active_until(now);
        self.with_store(move |s| s.create_worker(now, until)).await
    }

    pub async fn enqueue(&self, prompts: Vec<String>) -> Result<Vec<String>, QueueError> {
        let ids = self.with_store(move |s| s.enqueue(&prompts, now_ms())).await?;
        self.wake.notify_one();
        Ok(ids)
    }

    pub async fn submit(&self, worker_id: &str, task_id: &str, response: &str) -> Result<SubmitOutcome, QueueError> {
        let (w, t, r) = (worker_id.to_owned(), task_id.to_owned(), response.to_owned());
        self.with_store(move |s| s.submit(&w, &t, &r, now_ms())).await
    }

    /// Waits up to the poll timeout for a task for `worker_id`. When `cancelled` completes (the
    /// client cancelled or went away) the wait ends without taking a task.
    pub async fn poll(&self, worker_id: &str, cancelled: impl Future<Output = ()>) -> Result<PollOutcome, QueueError> {
        let now = now_ms();
        let until = self.active_until(now);
        let id = worker_id.to_owned();
        if !self.with_store(move |s| s.touch_worker(&id, now, until)).await? {
            return Ok(PollOutcome::UnknownWorker);
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
        // The dispatcher may have sent a task just now: closing makes any later send fail (the
        // dispatcher then releases it), and try_recv picks up one that got through.
        rx.close();
        match rx.try_recv() {
            Ok(task) if cancelled => {
                let (t, w) = (task.id.clone(), worker_id.to_owned());
                self.with_store(move |s| s.release(&t, &w, now_ms())).await?;
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
            let now = now_ms();
            let lease_until = now.saturating_add(ms(self.config.lease));
            let w = worker_id.clone();
            let Some(task) = self.with_store(move |s| s.claim(&w, now, lease_until)).await? else {
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
                self.with_store(move |s| s.release(&task.id, &worker_id, now_ms())).await?;
            }
        }
        Ok(())
    }

    fn has_waiters(&self) -> bool {
        self.front_worker().is_some()
    }

    async fn dispatch_loop(self: Arc<Self>) {
        let mut token = self.with_store(|s| s.change_token()).await.unwrap_or(0);
        loop {
            if let Err(err) = self.serve_waiters().await {
                tracing::error!(error = %err, "queue dispatch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let waiting = self.has_waiters();
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.shutdown.cancelled() => return,
                changed = self.watch_changes(token), if waiting => token = changed,
            }
        }
    }

    /// Returns when the store's change token differs from `token` (another process wrote).
    async fn watch_changes(&self, token: u64) -> u64 {
        loop {
            tokio::time::sleep(self.config.watch_interval).await;
            match self.with_store(|s| s.change_token()).await {
                Ok(now) if now != token => return now,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the store's change token");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
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
            match self.with_store(move |s| s.maintain().and_then(|()| s.sweep(now_ms(), max_attempts))).await {
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
