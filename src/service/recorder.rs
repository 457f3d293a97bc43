//! Writes the pool's events to the journal and publishes them.
//!
//! - A start is acknowledged only once it is recorded, so the journal never calls a running
//!   action "accepted". If the start cannot be recorded, the worker does not start: the
//!   pool answers the action `internal_error` (retryable).
//! - A result is published at once, also when its journal write fails: waiting requests and SSE
//!   subscribers get it (without an event id), `/readyz` turns false, and the write is retried
//!   until it succeeds (then the result has its id for clients that resume later). At shutdown the
//!   retries go on for [`SHUTDOWN_RETRIES`]; what is still unwritten then is answered
//!   `interrupted` at the next start.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Published, Service};
use crate::pool::Event;
use crate::protocol::governance::DispatchKind;
use crate::protocol::{Output, WorkerResult};
use crate::store::{EventKind, StoreError};

/// The first retry of a failed write; each further one waits twice as long, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a stopping daemon keeps retrying unwritten results.
pub const SHUTDOWN_RETRIES: Duration = Duration::from_secs(5);

pub async fn run(service: Arc<Service>, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    let mut unwritten: VecDeque<WorkerResult> = VecDeque::new();
    let mut backoff = RETRY_FIRST;
    loop {
        let event = tokio::select! {
            biased;
            event = rx.recv() => event,
            () = tokio::time::sleep(backoff), if !unwritten.is_empty() => {
                backoff = if retry(&service, &mut unwritten).await { RETRY_FIRST } else { (backoff * 2).min(RETRY_MAX) };
                continue;
            }
            () = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(event) = event else { break };
        match event {
            Event::Started { task_id, ack } => {
                let recorded = match service.journal.started(&task_id).await {
                    Ok(event) => {
                        service.publish_written([event]);
                        written(&service, &unwritten);
                        Ok(())
                    }
                    // Handed to another node meanwhile (a stop's hand-back, or this node was
                    // declared dead): not a store failure; the worker does not start.
                    Err(StoreError::Fenced(why)) => {
                        warn!(task_id = %task_id, "not starting: {why}");
                        Err(format!("fenced: {why}"))
                    }
                    Err(err) => {
                        failed(&service, &format!("cannot record the start of {task_id}: {err}"));
                        Err(format!("the journal cannot record the start: {err}"))
                    }
                };
                let _ = ack.send(recorded);
            }
            Event::Output(Output::Result(result)) => {
                service.metrics.observe(&result);
                if let Some(member) = &service.cluster {
                    // A slot is free again: claim more.
                    member.poke();
                }
                if !unwritten.is_empty() {
                    // Keep results in order behind those still waiting to be written.
                    publish_unwritten(&service, &result);
                    unwritten.push_back(*result);
                } else {
                    match write(&service, *result).await {
                        Ok(()) => written(&service, &unwritten),
                        Err(result) => {
                            publish_unwritten(&service, &result);
                            unwritten.push_back(result);
                            backoff = RETRY_FIRST;
                        }
                    }
                }
            }
            Event::Output(Output::Dispatch(line)) => {
                // Live only: SSE subscribers see it, the journal does not keep it.
                let kind = match line.kind {
                    DispatchKind::DispatchPaused => EventKind::DispatchPaused,
                    DispatchKind::DispatchResumed => EventKind::DispatchResumed,
                };
                if let Ok(data) = serde_json::to_value(&line) {
                    service.publish([Published { id: None, kind, data }]);
                }
            }
            Event::Output(_) => {}
            // Published live only, like the dispatch lines.
            Event::Attempt(data) => {
                // Kept with the action, so that after a crash a re-run counts this attempt.
                if let (Some(task_id), Some(kind)) = (data["taskId"].as_str(), data["kind"].as_str()) {
                    match service.journal.attempt_failed(task_id, kind).await {
                        Ok(_) | Err(StoreError::Fenced(_)) => {}
                        Err(err) => warn!(task_id, "cannot record a failed attempt: {err}"),
                    }
                }
                service.publish([Published { id: None, kind: EventKind::Attempt, data }]);
            }
            Event::Budget(data) => service.publish([Published { id: None, kind: EventKind::Budget, data }]),
        }
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_RETRIES;
    while !unwritten.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(backoff.min(deadline - tokio::time::Instant::now())).await;
        backoff = (backoff * 2).min(RETRY_MAX);
        retry(&service, &mut unwritten).await;
    }
    for result in unwritten {
        error!(task_id = %result.task_id, "the journal could not record this result; the next start answers it `interrupted`");
    }
}

/// Writes one result. Gives it back if the journal failed.
async fn write(service: &Service, result: WorkerResult) -> Result<(), WorkerResult> {
    match service.journal.finish(&result).await {
        Ok(event) => {
            service.publish_written(event);
            Ok(())
        }
        Err(StoreError::Fenced(why)) => {
            // Another node answered this action (this one was declared dead): dropped, never
            // retried.
            warn!(task_id = %result.task_id, "result not recorded: {why}");
            Ok(())
        }
        Err(err) => {
            failed(service, &format!("cannot record the result of {}: {err}", result.task_id));
            Err(result)
        }
    }
}

/// Writes what is waiting, oldest first, until one fails. True if all were written.
async fn retry(service: &Service, unwritten: &mut VecDeque<WorkerResult>) -> bool {
    while let Some(result) = unwritten.pop_front() {
        let task_id = result.task_id.clone();
        match service.journal.finish(&result).await {
            // Live subscribers had it already; the journal now has it with an id.
            Ok(_) => info!(task_id = %task_id, "recorded a result after a failed write"),
            Err(StoreError::Fenced(why)) => warn!(task_id = %task_id, "result not recorded: {why}"),
            Err(err) => {
                warn!(task_id = %task_id, "the journal still cannot record a result: {err}");
                unwritten.push_front(result);
                return false;
            }
        }
    }
    written(service, unwritten);
    true
}

fn publish_unwritten(service: &Service, result: &WorkerResult) {
    match serde_json::to_value(result) {
        Ok(data) => service.publish([Published { id: None, kind: EventKind::Result, data }]),
        Err(err) => error!("cannot serialise a result: {err}"),
    }
}

fn failed(service: &Service, message: &str) {
    service.store_failing.store(true, Ordering::Release);
    error!("{message}");
}

fn written(service: &Service, unwritten: &VecDeque<WorkerResult>) {
    if unwritten.is_empty() {
        service.store_failing.store(false, Ordering::Release);
    }
}
