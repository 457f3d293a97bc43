//! The worker pool as a service: the pool with a journal behind it. Every accepted action
//! is recorded before it is acknowledged; its start and its result are recorded as they happen,
//! and published to `GET /v1/events` subscribers and waiting requests. After a crash,
//! [`Service::start`] answers what was running with `interrupted` (or runs it again when its
//! `retries` allow: `interrupted.rs`) and, in the background, runs what had not started.
//!
//! No HTTP here: the routes are in `http/`. `accept.rs` takes a request's actions as one unit,
//! `recorder.rs` writes the pool's events (retrying failed writes), `metrics.rs` keeps the
//! counters `/metrics` shows, `notify.rs` sends systemd's readiness, status and watchdog
//! notifications.

mod accept;
pub mod cluster;
pub mod front;
pub mod interrupted;
pub mod metrics;
pub mod notify;
mod recorder;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use accept::{AcceptError, Accepted};

use crate::mcp::queue::Queue;
use crate::pool::{Event, Finished, Pool, Stopping};
use crate::protocol::parse::{Item, parse_action};
use crate::protocol::{ErrorKind, Origin, Output, WorkerError, WorkerResult};
use crate::settings::DaemonSettings;
use crate::store::{EventKind, EventRecord, Journal};

/// An event as live subscribers see it: the journal's record, or, while its journal write is
/// being retried, the same event without an id (it gets one once it is written).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub id: Option<i64>,
    pub kind: EventKind,
    pub data: Value,
}

impl From<EventRecord> for Published {
    fn from(record: EventRecord) -> Self {
        Self { id: Some(record.id), kind: record.kind, data: record.data }
    }
}

/// Progress lines an SSE subscriber may fall behind by before it loses the oldest.
const PROGRESS_BACKLOG: usize = 1024;

pub struct Service {
    pub settings: Arc<DaemonSettings>,
    pub pool: Pool,
    pub journal: Arc<dyn Journal>,
    /// Every event, as it is written (for SSE subscribers and waiting requests).
    pub events: broadcast::Sender<Published>,
    /// Live `worker_progress` of the actions that ask for it (SSE `progress`; never journalled).
    pub progress: broadcast::Sender<crate::worker::progress::ProgressLine>,
    pub metrics: metrics::Metrics,
    pub queue: Arc<Queue>,
    /// Fires when the daemon stops taking actions.
    pub draining: CancellationToken,
    /// The bearer token the API requires, if any.
    pub api_token: Option<String>,
    /// Where results that did not come from a worker go (they are recorded like the others).
    record: mpsc::Sender<Event>,
    /// Accepts in flight and the recovery feed: a stop waits for them.
    tasks: TaskTracker,
    /// Recovery has answered what a previous run left running.
    ready: AtomicBool,
    /// The last journal write failed and is being retried.
    store_failing: AtomicBool,
    /// Several daemons on this journal (PostgreSQL): this node's part (`cluster.rs`).
    pub cluster: Option<cluster::Membership>,
}

/// A started service and what it takes to stop it.
pub struct Running {
    pub service: Arc<Service>,
    finished: Finished,
    kill: CancellationToken,
    recorder_stop: CancellationToken,
    recorder: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Starts the pool and the journal recorder, answers what a previous run left running,
    /// and feeds what it had not started to the pool in the background (the caller can serve
    /// HTTP at once).
    pub async fn start(
        settings: Arc<DaemonSettings>,
        journal: Arc<dyn Journal>,
        queue: Arc<Queue>,
        api_token: Option<String>,
        draining: CancellationToken,
        force: CancellationToken,
        cluster: Option<cluster::Membership>,
    ) -> anyhow::Result<Running> {
        let (tx, rx) = mpsc::channel(1024);
        let kill = CancellationToken::new();
        let stopping = Stopping { drain: draining.clone(), kill: kill.clone(), force, keep_unstarted: true };
        let (progress, _) = broadcast::channel(PROGRESS_BACKLOG);
        let settings = settings.with_progress(crate::worker::progress::Sink::broadcast(progress.clone(), false));
        let (pool, finished) = Pool::start(settings.clone(), tx.clone(), stopping);
        let (events, _) = broadcast::channel(4096);
        let service = Arc::new(Service {
            settings,
            pool,
            journal,
            events,
            progress,
            metrics: metrics::Metrics::default(),
            queue,
            draining,
            api_token,
            record: tx,
            tasks: TaskTracker::new(),
            ready: AtomicBool::new(false),
            store_failing: AtomicBool::new(false),
            cluster,
        });
        let recorder_stop = CancellationToken::new();
        let recorder = tokio::spawn(recorder::run(service.clone(), rx, recorder_stop.clone()));
        if service.cluster.is_some() {
            // Other nodes' running actions are theirs: only dead nodes' are settled.
            service.start_cluster().await.context("cannot join the cluster")?;
        } else {
            service.recover().await.context("cannot recover the action journal")?;
        }
        service.ready.store(true, Ordering::Release);
        Ok(Running { service, finished, kill, recorder_stop, recorder })
    }

    /// Ready: recovered, not draining, no journal write failing, and the journal answers.
    pub async fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.draining.is_cancelled()
            && !self.store_failing.load(Ordering::Acquire)
            && self.cluster.as_ref().is_none_or(|m| m.joined.load(Ordering::Acquire))
            && self.journal.unfinished().await.is_ok()
    }

    /// Cancels a queued or running action (`DELETE /v1/tasks/{id}`, `worker_cancel`).
    pub async fn cancel(&self, task_id: &str) -> Result<crate::mcp::workers::front::Cancel, crate::store::StoreError> {
        use crate::mcp::workers::front::Cancel;
        if self.pool.cancel(task_id) == crate::pool::CancelOutcome::Cancelled {
            return Ok(Cancel::Cancelling);
        }
        if let Some(member) = &self.cluster {
            let id = task_id.to_owned();
            let unclaimed = move |stored: &Value| {
                let error = WorkerError::new(ErrorKind::Cancelled, "the action was cancelled before it started", false);
                WorkerResult::failure(id.clone(), stored_origin(stored), error)
            };
            return Ok(match member.cluster.cancel(task_id, &unclaimed).await? {
                crate::store::ClusterCancel::Unknown => Cancel::Unknown,
                crate::store::ClusterCancel::Finished => Cancel::Finished,
                crate::store::ClusterCancel::Answered(_) | crate::store::ClusterCancel::Asked(_) => Cancel::Cancelling,
            });
        }
        Ok(match self.journal.action(task_id).await? {
            Some(record) if record.state == crate::store::ActionState::Done => Cancel::Finished,
            // Accepted but not yet handed to the pool (only during recovery).
            Some(_) => Cancel::NotNow,
            None => Cancel::Unknown,
        })
    }

    pub fn publish(&self, events: impl IntoIterator<Item = Published>) {
        for event in events {
            // No subscriber is fine: the journal keeps the event.
            let _ = self.events.send(event);
        }
    }

    /// Publishes events this daemon has just journalled; in a cluster the tail publishes every
    /// node's in id order instead (`cluster.rs`), so this does nothing there.
    pub fn publish_written(&self, events: impl IntoIterator<Item = EventRecord>) {
        if self.cluster.is_none() {
            self.publish(events.into_iter().map(Published::from));
        }
    }

    /// Records a result that did not come from a worker (refused on recovery, interrupted), in
    /// order with the pool's events, with the same retries.
    async fn finish(&self, result: WorkerResult) {
        if self.record.send(Event::Output(Output::Result(Box::new(result)))).await.is_err() {
            warn!("the journal recorder is gone; a result could not be recorded");
        }
    }

    /// Answers what was running with `interrupted` (at once: it is only writes), or, when its
    /// `retries` allow another attempt, puts it back to `accepted` (`interrupted.rs`); then feeds
    /// those and what had not started to the pool in a tracked task that stops when the daemon
    /// drains (what it did not feed stays in the journal for the next start).
    async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        let recovery = self.journal.recover().await?;
        if !recovery.interrupted.is_empty() {
            let ids: Vec<String> = recovery.interrupted.iter().map(|(id, _)| id.clone()).collect();
            let killed = crate::worker::process::kill_leftovers(&ids, &self.settings.worker.cli.data_dir);
            warn!(actions = ids.len(), leftover_processes = killed, "actions interrupted by a crash");
        }
        // Run again first: they started before anything still pending was.
        let mut feed = Vec::new();
        for (task_id, stored) in recovery.interrupted {
            match interrupted::after_interruption(&task_id, &stored) {
                interrupted::Interruption::Answer(result) => self.finish(*result).await,
                interrupted::Interruption::Rerun(stored) => {
                    if self.journal.requeue(&task_id, &stored).await? {
                        info!(task_id = %task_id, "running an interrupted action again (retries)");
                        feed.push((task_id, stored));
                    }
                }
            }
        }
        feed.extend(recovery.pending);
        if feed.is_empty() {
            return Ok(());
        }
        info!(actions = feed.len(), "running actions accepted before the restart");
        let this = self.clone();
        self.tasks.spawn(async move {
            for (task_id, stored) in feed {
                if this.draining.is_cancelled() {
                    break;
                }
                this.run_stored(task_id, &stored).await;
            }
        });
        Ok(())
    }

    /// Admits and queues an action the journal holds for this daemon (or answers why it
    /// cannot run: the registry here lacks a server, or the stored action is unreadable).
    pub(super) async fn run_stored(&self, task_id: String, stored: &Value) {
        let origin = stored_origin(stored);
        match parse_action(stored["action"].clone(), origin, self.settings.limits) {
            Item::Spawn(action) => match self.pool.admit(action) {
                // Attempts that failed before (an interrupted run) count as used retries.
                Ok(admitted) => self.pool.enqueue(admitted.after_failures(interrupted::failed_before(stored))).await,
                Err(refused) => self.finish(*refused).await,
            },
            Item::Refused(refused) => self.finish(*refused).await,
            Item::Ack(_) => {
                let error = WorkerError::new(ErrorKind::InternalError, "the journal held an unreadable action", false);
                self.finish(WorkerResult::failure(task_id, origin, error)).await;
            }
        }
    }
}

/// What `accept` stores per action: enough to run it again after a restart.
pub fn stored_action(action: &crate::protocol::SpawnAction) -> Value {
    json!({ "index": action.origin.index, "action": action.to_json() })
}

/// The origin of a stored action: its index in the request that brought it.
fn stored_origin(stored: &Value) -> Origin {
    let index = stored["index"].as_u64().and_then(|i| usize::try_from(i).ok()).unwrap_or(0);
    Origin { line: None, index }
}

impl Running {
    /// Stops: no new actions or starts (already, via `draining`), running workers get `grace` to
    /// finish, then are stopped (kind `shutdown`); every result is recorded before this returns.
    /// Actions that never started stay in the journal and run at the next start. `force` (a
    /// second signal) ends the grace at once.
    pub async fn stop(self, grace: Duration, force: &CancellationToken) {
        self.service.draining.cancel();
        // In a cluster, what this node claimed and did not start goes to the others now.
        self.service.hand_back().await;
        let running = self.service.pool.running();
        info!(running, grace = ?grace, "draining: waiting for running workers");
        // Accepts in flight finish (their actions are journalled, queued or left for the next
        // start), and the recovery feed stops.
        self.service.tasks.close();
        self.service.tasks.wait().await;
        let mut finished = std::pin::pin!(self.finished.wait());
        let done = tokio::select! {
            () = &mut finished => true,
            () = tokio::time::sleep(grace) => false,
            () = force.cancelled() => false,
        };
        if !done {
            warn!(running = self.service.pool.running(), "stopping the remaining workers");
            self.kill.cancel();
            finished.await;
        }
        self.recorder_stop.cancel();
        if let Err(err) = self.recorder.await {
            warn!("the journal recorder stopped abnormally: {err}");
        }
        self.service.leave().await;
    }
}
