//! From parsed items to results: admission (registry, profile, task id), a FIFO queue, a
//! concurrency limit, per-task cancellation, and exactly one `worker_result` per action.
//!
//! Everything that happens goes to one `mpsc` sink of [`Event`]s; whoever owns the sink (the stdout
//! writer, the HTTP service's journal) records and delivers them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub mod breaker;
pub mod budget;
pub mod retry;
#[cfg(test)]
mod tests;

use crate::protocol::parse::{INVALID_PREFIX, Item};
use crate::protocol::{ErrorKind, Origin, Output, SpawnAction, WorkerError, WorkerResult};
use crate::settings::DaemonSettings;
use crate::worker::{self, Job, Stopper, WorkerSettings};

/// What runs one admitted job to its result: the real worker ([`ClaudeRunner`]), or a scripted
/// one in tests. A runner that panics still gives its action one result (`internal_error`).
pub trait Runner: Send + Sync + 'static {
    fn run(&self, job: Job, stopper: Stopper) -> BoxFuture<'static, WorkerResult>;
}

/// Runs jobs as Claude Code workers (`worker::run`).
pub struct ClaudeRunner(pub Arc<WorkerSettings>);

impl Runner for ClaudeRunner {
    fn run(&self, job: Job, stopper: Stopper) -> BoxFuture<'static, WorkerResult> {
        let settings = self.0.clone();
        Box::pin(async move { worker::run(&settings, &job, &stopper).await })
    }
}

/// What the pool reports.
#[derive(Debug)]
pub enum Event {
    /// A worker is about to start. It starts once `ack` is answered `Ok` or dropped, so a journal
    /// can record the start before anything runs; answered `Err(why)`, it does not start and the
    /// action is answered `internal_error`.
    Started { task_id: String, ack: oneshot::Sender<Result<(), String>> },
    /// A protocol line: a result, an acknowledgement.
    Output(Output),
    /// An attempt of an action failed and it will run again (`retries`, or the breaker's
    /// requeue): `serve` publishes it as an SSE `attempt` event; `run` writes nothing for it.
    Attempt(serde_json::Value),
    /// The daemon-wide budget after a worker's cost was charged (`{"windows":[{window, spentUsd,
    /// leftUsd}]}`): an SSE `budget` event in `serve`; `run` logs it.
    Budget(serde_json::Value),
}

/// How the pool stops.
#[derive(Debug, Clone)]
pub struct Stopping {
    /// No new worker starts once this fires.
    pub drain: CancellationToken,
    /// Running workers are stopped (kind `shutdown`) once this fires.
    pub kill: CancellationToken,
    /// Workers being stopped are killed at once, without their kill grace, once this fires (a
    /// second signal).
    pub force: CancellationToken,
    /// Queued actions stay unanswered at shutdown (a journal will run them after a restart)
    /// instead of getting a `shutdown` result.
    pub keep_unstarted: bool,
}

impl Stopping {
    /// One token for everything, and every unfinished action answered: the stdin filter.
    pub fn immediate(shutdown: &CancellationToken, force: &CancellationToken) -> Self {
        Self { drain: shutdown.clone(), kill: shutdown.clone(), force: force.clone(), keep_unstarted: false }
    }
}

/// An action that passed admission: its task id is reserved until its result is out. Dropped
/// without having been queued (a cancelled request, a failed journal write), it gives the id back.
pub struct Admitted {
    pub job: Job,
    cancel: CancellationToken,
    /// Which reservation of the id this is (a later action may reuse the id once this one is done).
    generation: u64,
    /// The kinds of attempts that failed before this run (an action run again after its daemon
    /// died: `service::interrupted`); they count as used retries. Not on the wire.
    failed_before: Vec<ErrorKind>,
    shared: Arc<Shared>,
}

impl Admitted {
    /// The same action, its earlier failed attempts counted: the first attempt of this run is
    /// number `failed.len() + 1`, and each earlier failure has used one of its `retries`.
    pub fn after_failures(mut self, failed: Vec<ErrorKind>) -> Self {
        self.failed_before = failed;
        self
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("task_id", &self.job.action.task_id).finish_non_exhaustive()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.forget(&self.job.action.task_id, self.generation);
    }
}

/// What [`Shared::reserve`] decided.
enum Reserved {
    /// Start it (with this reservation, when there is a budget).
    Go(Option<f64>),
    /// Cancelled or stopping while it waited.
    Stopped,
    /// Refused: its one result.
    Refused(Box<WorkerResult>),
}

/// A job waiting for a worker slot.
struct Queued {
    admitted: Admitted,
    accepted: Instant,
}

/// Accepts items and runs their workers. Cloning gives another handle to the same pool;
/// input ends when the last handle is dropped.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Queued>,
}

/// What the handles, the scheduler and the running workers share (never the queue's sender, so
/// dropping the last handle really ends the input).
struct Shared {
    settings: Arc<DaemonSettings>,
    runner: Box<dyn Runner>,
    out: mpsc::Sender<Event>,
    /// Unfinished actions by task id: their reservation's generation and cancel token.
    active: Mutex<HashMap<String, (u64, CancellationToken)>>,
    generations: AtomicU64,
    stopping: Stopping,
    running: AtomicUsize,
    /// The `--max-workers` slots.
    slots: Arc<Semaphore>,
    /// The account-wide rate-limit breaker (`None`: `--no-rate-limit-breaker`).
    breaker: Option<Arc<breaker::Breaker>>,
    /// The daemon-wide budget (`--budget`), if any.
    budget: Option<Arc<budget::Budget>>,
}

/// Awaits the end of all work once every [`Pool`] handle is dropped (end of input) or the
/// drain token fires.
pub struct Finished {
    scheduler: tokio::task::JoinHandle<()>,
    tracker: TaskTracker,
    /// Ends the breaker's timers once all work is done (they hold the output sink).
    breaker_stop: CancellationToken,
}

impl Finished {
    pub async fn wait(self) {
        if let Err(err) = self.scheduler.await {
            warn!("the scheduler stopped abnormally: {err}");
        }
        self.tracker.close();
        self.tracker.wait().await;
        self.breaker_stop.cancel();
    }
}

/// What [`Pool::cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    NotFound,
}

impl Pool {
    /// Starts the scheduler with Claude Code workers. Events go to `out`.
    pub fn start(settings: Arc<DaemonSettings>, out: mpsc::Sender<Event>, stopping: Stopping) -> (Self, Finished) {
        let runner = Box::new(ClaudeRunner(settings.worker.clone()));
        Self::start_with(settings, runner, out, stopping)
    }

    /// Starts the scheduler with the given runner.
    pub fn start_with(
        settings: Arc<DaemonSettings>,
        runner: Box<dyn Runner>,
        out: mpsc::Sender<Event>,
        stopping: Stopping,
    ) -> (Self, Finished) {
        let (queue, pending) = mpsc::channel(settings.max_workers.max(1) * 64);
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(settings.max_workers));
        let breaker_stop = stopping.drain.child_token();
        let breaker = settings.rate_limit_breaker.then(|| {
            Arc::new(breaker::Breaker::new(out.clone(), slots.clone(), settings.max_workers, breaker_stop.clone()))
        });
        let settings_budget = settings.budget.clone().map(|b| Arc::new(budget::Budget::new(b)));
        let shared = Arc::new(Shared {
            settings,
            runner,
            out,
            active: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            stopping,
            running: AtomicUsize::new(0),
            slots,
            breaker,
            budget: settings_budget,
        });
        let scheduler = tokio::spawn(shared.clone().schedule(pending, tracker.clone()));
        (Self { shared, queue }, Finished { scheduler, tracker, breaker_stop })
    }

    /// Takes one parsed item: answers refusals and acknowledgements at once, queues valid actions.
    /// Waits when the queue is full (back-pressure on the reader).
    pub async fn submit(&self, item: Item) {
        match item {
            Item::Refused(result) => self.shared.emit(Output::Result(result)).await,
            Item::Ack(ack) => self.shared.emit(Output::Ack(ack)).await,
            Item::Spawn(action) => match self.admit(action) {
                Err(refused) => self.shared.emit(Output::Result(refused)).await,
                Ok(admitted) => self.enqueue(admitted).await,
            },
        }
    }

    /// Registry, profile and task-id checks. On success the task id is reserved until the
    /// action's result is out (or [`Pool::withdraw`]).
    pub fn admit(&self, action: SpawnAction) -> Result<Admitted, Box<WorkerResult>> {
        Shared::admit(&self.shared, action)
    }

    /// Queues an admitted action (waits while the queue is full). If the pool is stopping,
    /// the action is answered `shutdown`, or (when unstarted actions are kept) left to the journal.
    pub async fn enqueue(&self, admitted: Admitted) {
        if let Err(mpsc::error::SendError(queued)) =
            self.queue.send(Queued { admitted, accepted: Instant::now() }).await
        {
            // The scheduler is gone: only during shutdown.
            self.shared.finish_unstarted(queued).await;
        }
    }

    /// Cancels an unfinished action, queued or running.
    pub fn cancel(&self, task_id: &str) -> CancelOutcome {
        match self.shared.lock_active().get(task_id) {
            Some((_, token)) => {
                token.cancel();
                CancelOutcome::Cancelled
            }
            None => CancelOutcome::NotFound,
        }
    }

    /// Cancels every unfinished action (a fenced cluster node: another daemon answered them).
    pub fn cancel_all(&self) -> usize {
        let active = self.shared.lock_active();
        active.values().for_each(|(_, token)| token.cancel());
        active.len()
    }

    /// How many actions are accepted and not finished.
    pub fn unfinished(&self) -> usize {
        self.shared.lock_active().len()
    }

    /// How many workers are running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// The daemon-wide budget's windows: spent and left (empty without `--budget`).
    pub async fn budget(&self) -> Vec<budget::WindowStatus> {
        match &self.shared.budget {
            Some(budget) => budget.status().await,
            None => Vec::new(),
        }
    }

    /// The rate-limit breaker: whether starts are paused now, and how many pauses there were.
    pub fn dispatch(&self) -> (bool, u64) {
        self.shared.breaker.as_ref().map_or((false, 0), |b| (b.paused_for().is_some(), b.pauses()))
    }
}

fn shutdown_result(task_id: String, origin: Origin, started: bool) -> WorkerResult {
    let message = if started {
        "the daemon shut down before the worker finished"
    } else {
        "the daemon shut down before the worker started"
    };
    WorkerResult::failure(task_id, origin, WorkerError::new(ErrorKind::Shutdown, message, true))
}

impl Shared {
    fn admit(self: &Arc<Self>, action: SpawnAction) -> Result<Admitted, Box<WorkerResult>> {
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
        let default_tools = crate::profile::default_tools(profile.as_deref())
            .map_err(|err| refuse(ErrorKind::InvalidAction, format!("{INVALID_PREFIX}: /profile: {err}")))?;
        let cancel = self.stopping.kill.child_token();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        {
            let mut active = self.lock_active();
            if active.contains_key(&action.task_id) {
                return Err(refuse(
                    ErrorKind::InvalidAction,
                    format!("{INVALID_PREFIX}: /taskId: {} is already used by an unfinished action", action.task_id),
                ));
            }
            active.insert(action.task_id.clone(), (generation, cancel.clone()));
        }
        let selection = self.settings.registry.select(&action.servers);
        let mut action = action;
        if action.agent.tools.is_none() {
            action.agent.tools = default_tools.map(|rules| rules.for_servers(&action.servers));
        }
        let job = Job { action, selection, profile };
        Ok(Admitted { job, cancel, generation, failed_before: Vec::new(), shared: self.clone() })
    }

    /// Runs queued jobs in order, at most `max_workers` at once.
    async fn schedule(self: Arc<Self>, mut pending: mpsc::Receiver<Queued>, tracker: TaskTracker) {
        let slots = self.slots.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = self.stopping.drain.cancelled() => None,
                next = pending.recv() => next,
            };
            let Some(mut queued) = next else { break };
            let reservation = match self.reserve(&mut queued).await {
                Reserved::Go(reservation) => reservation,
                Reserved::Stopped => {
                    self.finish_unstarted(queued).await;
                    continue;
                }
                Reserved::Refused(result) => {
                    drop(queued);
                    self.emit(Output::Result(result)).await;
                    continue;
                }
            };
            let permit = tokio::select! {
                biased;
                _ = queued.admitted.cancel.cancelled() => None,
                _ = self.stopping.drain.cancelled() => None,
                permit = self.slot(&slots) => permit,
            };
            let Some(permit) = permit else {
                if let (Some(budget), Some(want)) = (&self.budget, reservation) {
                    budget.settle(&queued.admitted.job.action.task_id, want, None).await;
                }
                self.finish_unstarted(queued).await;
                continue;
            };
            let mut permit = Some(permit);
            let this = self.clone();
            this.running.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(async move {
                let waited = queued.accepted.elapsed();
                let admitted = queued.admitted;
                let (task_id, origin) = (admitted.job.action.task_id.clone(), admitted.job.action.origin);
                let stopper = Stopper {
                    cancel: admitted.cancel.clone(),
                    shutdown: this.stopping.kill.clone(),
                    force: this.stopping.force.clone(),
                    signals: this.breaker.clone().map(|breaker| {
                        crate::worker::signals::SignalSink(Arc::new(move |signal| breaker.report(signal)))
                    }),
                };
                let (ack, recorded) = oneshot::channel();
                let refused = if this.out.send(Event::Started { task_id: task_id.clone(), ack }).await.is_ok() {
                    recorded.await.unwrap_or(Ok(())).err()
                } else {
                    None
                };
                let mut result = match refused {
                    // Not recorded as running: it must not run.
                    Some(why) => {
                        let error = WorkerError::new(ErrorKind::InternalError, format!("not started: {why}"), true);
                        WorkerResult::failure(&task_id, origin, error)
                    }
                    None => this.attempts(&admitted, &stopper, &mut permit, queued.accepted).await,
                };
                result.queued = Some(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
                if let (Some(budget), Some(want)) = (&this.budget, reservation) {
                    let windows = budget.settle(&task_id, want, result.cost_usd).await;
                    let windows: Vec<serde_json::Value> = windows
                        .iter()
                        .map(|w| serde_json::json!({"window": w.window.to_string(), "spentUsd": w.spent, "leftUsd": w.left}))
                        .collect();
                    let _ = this.out.send(Event::Budget(serde_json::json!({ "windows": windows }))).await;
                }
                if permit.take().is_some() {
                    this.running.fetch_sub(1, Ordering::Relaxed);
                }
                drop(admitted);
                this.emit(Output::Result(Box::new(result))).await;
            });
        }
        // Stopping: what is still queued gets its result without running, or stays for the journal.
        pending.close();
        while let Some(queued) = pending.recv().await {
            self.finish_unstarted(queued).await;
        }
    }

    /// Runs the job, and again while it fails retryably and has retries left (`retries`): the
    /// slot is given back during each backoff and taken again (behind the actions queued
    /// meanwhile). The result is the last attempt's, with `attempts`, the failed attempts' kinds,
    /// and the cost of all attempts (of this run: the attempts failed before it
    /// ([`Admitted::after_failures`]) count among `attempts` and used retries, their cost is not
    /// known).
    ///
    /// A run that failed only because of the rate limit (429, not a 529 overload: that is a
    /// retry like others) while the breaker holds the account's limit goes back to
    /// waiting without using up a retry (the breaker decides when it starts again), unless the
    /// action's deadline (`timeout` after it was accepted) passes first: then its `rate_limited`
    /// result stands, with `retryAfterMs`.
    async fn attempts(
        self: &Arc<Self>,
        admitted: &Admitted,
        stopper: &Stopper,
        permit: &mut Option<OwnedSemaphorePermit>,
        accepted: Instant,
    ) -> WorkerResult {
        let retries = admitted.job.action.governance.retries;
        let deadline = accepted + admitted.job.action.timeout;
        let mut failed = admitted.failed_before.clone();
        let mut cost: Option<f64> = None;
        let before = u32::try_from(failed.len()).unwrap_or(u32::MAX);
        let (mut attempt, mut retried) = (before.saturating_add(1), before);
        loop {
            let mut result = self.attempt(admitted, stopper).await;
            if let Some(spent) = result.cost_usd {
                cost = Some(cost.unwrap_or(0.0) + spent);
            }
            let paused = self.breaker.as_ref().and_then(|b| b.rate_limited_for());
            let again = match (&mut result.error, paused) {
                _ if stopper.cancel.is_cancelled() => None,
                (Some(error), Some(pause)) if error.kind == ErrorKind::RateLimited => {
                    if Instant::now() + pause < deadline {
                        Some((error.kind, std::time::Duration::ZERO))
                    } else {
                        error.detail.retry_after_ms = Some(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
                        None
                    }
                }
                (Some(error), _) if retried < retries && retry::retryable(error) => {
                    retried += 1;
                    let hint = error.detail.retry_after_ms.map(std::time::Duration::from_millis);
                    Some((error.kind, retry::backoff(self.settings.retry_backoff, retried + 1, retry::jitter(), hint)))
                }
                _ => None,
            };
            let Some((kind, wait)) = again else {
                if retries > 0 || attempt > 1 {
                    result.governance.attempts = Some(attempt);
                    result.governance.failed_attempts = failed;
                    result.cost_usd = cost;
                }
                return result;
            };
            debug!(task_id = %admitted.job.action.task_id, attempt, kind = kind.as_str(), ?wait, "retrying");
            let note = serde_json::json!({
                "taskId": admitted.job.action.task_id,
                "attempt": attempt,
                "kind": kind,
                "retryInMs": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
            let _ = self.out.send(Event::Attempt(note)).await;
            failed.push(kind);
            if permit.take().is_some() {
                self.running.fetch_sub(1, Ordering::Relaxed);
            }
            let slot = tokio::select! {
                biased;
                _ = stopper.cancel.cancelled() => None,
                _ = self.stopping.drain.cancelled() => None,
                slot = async {
                    tokio::time::sleep(wait).await;
                    self.slot(&self.slots).await
                } => slot,
            };
            let Some(slot) = slot else {
                // Stopped while waiting: the failed attempt stands.
                result.governance.attempts = Some(attempt);
                result.governance.failed_attempts = failed[..failed.len() - 1].to_vec();
                result.cost_usd = cost;
                return result;
            };
            *permit = Some(slot);
            self.running.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
        }
    }

    /// Reserves the action's share of the daemon-wide budget (its `maxBudgetUsd`, else the
    /// estimate), which becomes its cap; waits or refuses by the policy (`budget.rs`).
    async fn reserve(&self, queued: &mut Queued) -> Reserved {
        let Some(budget) = &self.budget else { return Reserved::Go(None) };
        let action = &queued.admitted.job.action;
        let want = budget.wanted(action.governance.max_budget_usd);
        let reserved = tokio::select! {
            biased;
            _ = queued.admitted.cancel.cancelled() => None,
            _ = self.stopping.drain.cancelled() => None,
            reserved = budget.reserve(&action.task_id, want) => Some(reserved),
        };
        match reserved {
            None => Reserved::Stopped,
            Some(Ok(())) => {
                queued.admitted.job.action.governance.max_budget_usd = Some(want);
                Reserved::Go(Some(want))
            }
            Some(Err(wait)) => {
                let (message, retryable) = match wait {
                    Some(wait) => {
                        (format!("the daemon's budget has no room for {want} USD for {} ms", wait.as_millis()), true)
                    }
                    None if self.settings.budget.as_ref().is_some_and(|b| b.windows.iter().any(|w| want > w.usd)) => {
                        (format!("{want} USD is more than a whole window of the daemon's budget"), false)
                    }
                    None => (format!("the daemon's budget has no room for {want} USD until running workers end"), true),
                };
                let mut error = WorkerError::new(ErrorKind::BudgetExhausted, message, retryable);
                error.detail.retry_after_ms = wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
                let mut result = WorkerResult::failure(&action.task_id, action.origin, error);
                result.queued = Some(u64::try_from(queued.accepted.elapsed().as_millis()).unwrap_or(u64::MAX));
                Reserved::Refused(Box::new(result))
            }
        }
    }

    /// A worker slot, once the breaker allows starts (checked again after the slot is taken: a
    /// pause may have begun meanwhile).
    async fn slot(&self, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Some(breaker) = &self.breaker {
                breaker.wait_open().await;
            }
            let permit = slots.clone().acquire_owned().await.ok()?;
            match &self.breaker {
                Some(breaker) if breaker.paused_for().is_some() => drop(permit),
                _ => return Some(permit),
            }
        }
    }

    /// One run of the job. A panic anywhere in the worker (the child is killed by its guard as
    /// the stack unwinds) is this action's `internal_error`, not a lost result.
    async fn attempt(&self, admitted: &Admitted, stopper: &Stopper) -> WorkerResult {
        let job = admitted.job.clone();
        let (task_id, origin) = (&job.action.task_id, job.action.origin);
        let run = AssertUnwindSafe(self.runner.run(job.clone(), stopper.clone())).catch_unwind().await;
        run.unwrap_or_else(|panic| {
            let message = format!("the worker task panicked: {}", panic_message(panic.as_ref()));
            tracing::error!(task_id = %task_id, "{message}");
            let error = WorkerError::new(ErrorKind::InternalError, message, true);
            WorkerResult::failure(task_id, origin, error)
        })
    }

    /// The one result of a job that never started (cancelled, or the daemon is stopping).
    async fn finish_unstarted(&self, queued: Queued) {
        let Queued { admitted, accepted } = queued;
        let action = admitted.job.action.clone();
        let cancelled = admitted.cancel.is_cancelled();
        drop(admitted);
        let mut result = if cancelled && !self.stopping.kill.is_cancelled() {
            let error = WorkerError::new(ErrorKind::Cancelled, "the action was cancelled before it started", false);
            WorkerResult::failure(&action.task_id, action.origin, error)
        } else if self.stopping.keep_unstarted {
            debug!(task_id = %action.task_id, "left queued for the next start");
            return;
        } else {
            shutdown_result(action.task_id.clone(), action.origin, false)
        };
        debug!(task_id = %action.task_id, kind = ?result.error.as_ref().map(|e| e.kind), "finished without running");
        result.queued = Some(u64::try_from(accepted.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.emit(Output::Result(Box::new(result))).await;
    }

    /// Gives back a task id, if it is still held by this reservation.
    fn forget(&self, task_id: &str, generation: u64) {
        let mut active = self.lock_active();
        if active.get(task_id).is_some_and(|(held, _)| *held == generation) {
            active.remove(task_id);
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        // A poisoned map is still a valid map: no code panics while holding it.
        self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn emit(&self, output: Output) {
        if self.out.send(Event::Output(output)).await.is_err() {
            warn!("the output sink is closed; a result could not be delivered");
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
