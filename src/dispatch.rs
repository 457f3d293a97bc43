//! From parsed items to results: admission (registry, profile, task id), a FIFO queue, a
//! concurrency limit, per-task cancellation, and exactly one `worker_result` per action.
//!
//! Results go to one `mpsc` sink of [`Output`]s; whoever owns the sink (stdout, HTTP) writes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::protocol::parse::{INVALID_PREFIX, Item};
use crate::protocol::{ErrorKind, Output, SpawnAction, WorkerError, WorkerResult};
use crate::settings::DaemonSettings;
use crate::worker::{self, Job, Stopper};

/// A job waiting for a worker slot.
struct Queued {
    job: Job,
    cancel: CancellationToken,
    accepted: Instant,
}

/// Accepts items and runs their workers. Cloning gives another handle to the same dispatcher;
/// input ends when the last handle is dropped.
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Queued>,
}

/// What the handles, the scheduler and the running workers share (never the queue's sender, so
/// dropping the last handle really ends the input).
struct Shared {
    settings: Arc<DaemonSettings>,
    out: mpsc::Sender<Output>,
    /// Unfinished actions by task id: their cancel tokens.
    active: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
}

/// Awaits the end of all work once every [`Dispatcher`] handle is dropped (end of input) or the
/// shutdown token fires.
pub struct Finished {
    scheduler: tokio::task::JoinHandle<()>,
    tracker: TaskTracker,
}

impl Finished {
    pub async fn wait(self) {
        if let Err(err) = self.scheduler.await {
            warn!("the scheduler stopped abnormally: {err}");
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// What [`Dispatcher::cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    NotFound,
}

impl Dispatcher {
    /// Starts the scheduler. Results go to `out`.
    pub fn start(
        settings: Arc<DaemonSettings>,
        out: mpsc::Sender<Output>,
        shutdown: CancellationToken,
    ) -> (Self, Finished) {
        let (queue, pending) = mpsc::channel(settings.max_workers.max(1) * 64);
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared { settings, out, active: Mutex::new(HashMap::new()), shutdown });
        let scheduler = tokio::spawn(shared.clone().schedule(pending, tracker.clone()));
        (Self { shared, queue }, Finished { scheduler, tracker })
    }

    /// Takes one parsed item: answers refusals and acknowledgements at once, queues valid actions.
    /// Waits when the queue is full (back-pressure on the reader).
    pub async fn submit(&self, item: Item) {
        match item {
            Item::Refused(result) => self.shared.emit(Output::Result(result)).await,
            Item::Ack(ack) => self.shared.emit(Output::Ack(ack)).await,
            Item::Spawn(action) => match self.shared.admit(action) {
                Err(refused) => self.shared.emit(Output::Result(refused)).await,
                Ok((job, cancel)) => {
                    let task_id = job.action.task_id.clone();
                    let origin = job.action.origin;
                    let queued = Queued { job, cancel, accepted: Instant::now() };
                    if self.queue.send(queued).await.is_err() {
                        // The scheduler is gone: only during shutdown.
                        self.shared.forget(&task_id);
                        let error = WorkerError::new(ErrorKind::Shutdown, "the daemon is shutting down", true);
                        self.shared.emit(Output::Result(Box::new(WorkerResult::failure(task_id, origin, error)))).await;
                    }
                }
            },
        }
    }

    /// Cancels an unfinished action, queued or running.
    pub fn cancel(&self, task_id: &str) -> CancelOutcome {
        match self.shared.lock_active().get(task_id) {
            Some(token) => {
                token.cancel();
                CancelOutcome::Cancelled
            }
            None => CancelOutcome::NotFound,
        }
    }

    /// How many actions are accepted and not finished.
    pub fn unfinished(&self) -> usize {
        self.shared.lock_active().len()
    }
}

impl Shared {
    /// Registry, profile and task-id checks. On success the task id is reserved.
    fn admit(&self, action: SpawnAction) -> Result<(Job, CancellationToken), Box<WorkerResult>> {
        let refuse = |kind, message: String| {
            Box::new(WorkerResult::failure(&action.task_id, action.origin, WorkerError::new(kind, message, false)))
        };
        if let Some(unknown) = self.settings.registry.first_unknown(&action.servers) {
            let known: Vec<&str> = self.settings.registry.names().collect();
            return Err(refuse(
                ErrorKind::UnknownServer,
                format!("MCP server not found: {unknown} (known servers: {})", known.join(", ")),
            ));
        }
        let profile = crate::profile::resolve(&self.settings.profiles, action.profile.as_deref())
            .map_err(|err| refuse(ErrorKind::InvalidAction, format!("{INVALID_PREFIX}: /profile: {err}")))?;
        let cancel = self.shutdown.child_token();
        {
            let mut active = self.lock_active();
            if active.contains_key(&action.task_id) {
                return Err(refuse(
                    ErrorKind::InvalidAction,
                    format!("{INVALID_PREFIX}: /taskId: {} is already used by an unfinished action", action.task_id),
                ));
            }
            active.insert(action.task_id.clone(), cancel.clone());
        }
        let selection = self.settings.registry.select(&action.servers);
        Ok((Job { action, selection, profile }, cancel))
    }

    /// Runs queued jobs in order, at most `max_workers` at once.
    async fn schedule(self: Arc<Self>, mut pending: mpsc::Receiver<Queued>, tracker: TaskTracker) {
        let slots = Arc::new(Semaphore::new(self.settings.max_workers));
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => None,
                next = pending.recv() => next,
            };
            let Some(queued) = next else { break };
            let permit = tokio::select! {
                biased;
                _ = queued.cancel.cancelled() => None,
                permit = slots.clone().acquire_owned() => permit.ok(),
            };
            let Some(permit) = permit else {
                self.finish_unstarted(queued).await;
                continue;
            };
            let this = self.clone();
            tracker.spawn(async move {
                let waited = queued.accepted.elapsed();
                let stopper = Stopper { cancel: queued.cancel.clone(), shutdown: this.shutdown.clone() };
                let mut result = worker::run(&this.settings.worker, &queued.job, &stopper).await;
                result.queued = Some(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
                drop(permit);
                this.forget(&result.task_id);
                this.emit(Output::Result(Box::new(result))).await;
            });
        }
        // Shutdown: everything still queued gets its result without running.
        pending.close();
        while let Some(queued) = pending.recv().await {
            self.finish_unstarted(queued).await;
        }
    }

    /// The one result of a job that never started (cancelled, or the daemon is stopping).
    async fn finish_unstarted(&self, queued: Queued) {
        let action = &queued.job.action;
        let error = if self.shutdown.is_cancelled() {
            WorkerError::new(ErrorKind::Shutdown, "the daemon shut down before the worker started", true)
        } else {
            WorkerError::new(ErrorKind::Cancelled, "the action was cancelled before it started", false)
        };
        debug!(task_id = %action.task_id, kind = error.kind.as_str(), "finished without running");
        let mut result = WorkerResult::failure(&action.task_id, action.origin, error);
        result.queued = Some(u64::try_from(queued.accepted.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.forget(&action.task_id);
        self.emit(Output::Result(Box::new(result))).await;
    }

    fn forget(&self, task_id: &str) {
        self.lock_active().remove(task_id);
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // A poisoned map is still a valid map: no code panics while holding it.
        self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn emit(&self, output: Output) {
        if self.out.send(output).await.is_err() {
            warn!("the output sink is closed; a result could not be delivered");
        }
    }
}
