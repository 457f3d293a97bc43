//! The worker pool as a service: the dispatcher with a journal behind it. Every accepted action
//! is recorded before it is acknowledged; its start and its result are recorded as they happen,
//! and published to `GET /v1/events` subscribers. After a crash, [`Service::start`] answers what
//! was running with `interrupted` and runs what had not started.
//!
//! `api.rs` holds the HTTP routes, `metrics.rs` the `/metrics` counters.

pub mod api;
pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dispatch::{Dispatcher, Event, Finished, Stopping};
use crate::mcp::queue::Queue;
use crate::protocol::parse::{Item, parse_action};
use crate::protocol::{ErrorKind, Origin, Output, WorkerError, WorkerResult};
use crate::settings::DaemonSettings;
use crate::store::{EventRecord, Journal};

pub struct Service {
    pub settings: Arc<DaemonSettings>,
    pub dispatcher: Dispatcher,
    pub journal: Arc<dyn Journal>,
    /// Every journal event, as it is written (for SSE subscribers and waiting requests).
    pub events: broadcast::Sender<EventRecord>,
    pub metrics: metrics::Metrics,
    pub queue: Arc<Queue>,
    /// Fires when the daemon stops taking actions.
    pub draining: CancellationToken,
    /// The bearer token the API requires, if any.
    pub api_token: Option<String>,
    ready: AtomicBool,
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
    /// Starts the dispatcher and the journal recorder, then recovers what a previous run left.
    pub async fn start(
        settings: Arc<DaemonSettings>,
        journal: Arc<dyn Journal>,
        queue: Arc<Queue>,
        api_token: Option<String>,
        draining: CancellationToken,
    ) -> anyhow::Result<Running> {
        let (tx, rx) = mpsc::channel(1024);
        let kill = CancellationToken::new();
        let stopping = Stopping { drain: draining.clone(), kill: kill.clone(), keep_unstarted: true };
        let (dispatcher, finished) = Dispatcher::start(settings.clone(), tx, stopping);
        let (events, _) = broadcast::channel(4096);
        let service = Arc::new(Service {
            settings,
            dispatcher,
            journal,
            events,
            metrics: metrics::Metrics::default(),
            queue,
            draining,
            api_token,
            ready: AtomicBool::new(false),
        });
        let recorder_stop = CancellationToken::new();
        let recorder = tokio::spawn(record(service.clone(), rx, recorder_stop.clone()));
        service.recover().await.context("cannot recover the action journal")?;
        service.ready.store(true, Ordering::Release);
        Ok(Running { service, finished, kill, recorder_stop, recorder })
    }

    /// Ready: recovered, not draining, and the journal answers.
    pub async fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.is_cancelled() && self.journal.unfinished().await.is_ok()
    }

    pub fn publish(&self, events: impl IntoIterator<Item = EventRecord>) {
        for event in events {
            // No subscriber is fine: the journal keeps the event.
            let _ = self.events.send(event);
        }
    }

    /// Records a result that did not come from a worker (refused on recovery, interrupted).
    async fn finish(&self, result: WorkerResult) {
        self.metrics.observe(&result);
        match self.journal.finish(&result).await {
            Ok(event) => self.publish(event),
            Err(err) => warn!("cannot record a result in the journal: {err}"),
        }
    }

    async fn recover(&self) -> anyhow::Result<()> {
        let recovery = self.journal.recover().await?;
        if !recovery.interrupted.is_empty() {
            let ids: Vec<String> = recovery.interrupted.iter().map(|(id, _)| id.clone()).collect();
            let killed = crate::worker::process::kill_leftovers(&ids, &self.settings.worker.cli.data_dir);
            warn!(actions = ids.len(), leftover_processes = killed, "answering actions interrupted by a crash");
        }
        for (task_id, stored) in recovery.interrupted {
            let error = WorkerError::new(
                ErrorKind::Interrupted,
                "the daemon stopped (crash or kill) while this worker ran; it was not run again",
                true,
            );
            self.finish(WorkerResult::failure(task_id, stored_origin(&stored), error)).await;
        }
        if !recovery.pending.is_empty() {
            info!(actions = recovery.pending.len(), "running actions accepted before the restart");
        }
        for (task_id, stored) in recovery.pending {
            let origin = stored_origin(&stored);
            match parse_action(stored["action"].clone(), origin, self.settings.limits) {
                Item::Spawn(action) => match self.dispatcher.admit(action) {
                    Ok(admitted) => self.dispatcher.enqueue(admitted).await,
                    Err(refused) => self.finish(*refused).await,
                },
                Item::Refused(refused) => self.finish(*refused).await,
                Item::Ack(_) => {
                    let error =
                        WorkerError::new(ErrorKind::InternalError, "the journal held an unreadable action", false);
                    self.finish(WorkerResult::failure(task_id, origin, error)).await;
                }
            }
        }
        Ok(())
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
    /// Actions that never started stay in the journal and run at the next start.
    pub async fn stop(self, grace: Duration) {
        self.service.draining.cancel();
        let running = self.service.dispatcher.running();
        info!(running, grace = ?grace, "draining: waiting for running workers");
        let mut finished = std::pin::pin!(self.finished.wait());
        if tokio::time::timeout(grace, &mut finished).await.is_err() {
            warn!(running = self.service.dispatcher.running(), "grace over: stopping the remaining workers");
            self.kill.cancel();
            finished.await;
        }
        self.recorder_stop.cancel();
        if let Err(err) = self.recorder.await {
            warn!("the journal recorder stopped abnormally: {err}");
        }
    }
}

/// Writes the dispatcher's events to the journal and publishes them. A start is acknowledged
/// only once it is recorded, so the journal never calls a running action "accepted".
async fn record(service: Arc<Service>, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            biased;
            event = rx.recv() => event,
            _ = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(event) = event else { break };
        match event {
            Event::Started { task_id, ack } => {
                match service.journal.started(&task_id).await {
                    Ok(event) => service.publish([event]),
                    Err(err) => warn!("cannot record a start in the journal: {err}"),
                }
                let _ = ack.send(());
            }
            Event::Output(Output::Result(result)) => service.finish(*result).await,
            Event::Output(_) => {}
        }
    }
}
