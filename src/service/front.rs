//! The workers tools on `serve`'s `/mcp`: the [`Front`] of the journal-backed service. An action
//! accepted here is journalled, run and recorded exactly like one posted to `/v1/actions`; its
//! state and result come from the journal, so they outlive a client's reconnect and a restart.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::{AcceptError, Accepted, Service};
use crate::mcp::workers::desk::settled;
use crate::mcp::workers::front::{
    Cancel, Front, FrontResult, LastProgress, Refusal, State, Status, Statuses, apply_key, now_ms, preview,
};
use crate::protocol::parse::{Item, parse_action};
use crate::protocol::{ErrorKind, Origin, WorkerError};
use crate::store::{ActionRecord, ActionState, EventKind, Millis};

pub struct ServiceFront {
    service: Arc<Service>,
    progress: Arc<LastProgress>,
}

impl ServiceFront {
    /// The service's front, following its workers' progress for waiting calls.
    pub fn new(service: Arc<Service>) -> Self {
        let progress = Arc::new(LastProgress::default());
        Arc::clone(&progress).follow(service.progress.subscribe());
        Self { service, progress }
    }
}

fn status_of(record: ActionRecord) -> Status {
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let since = |from: Millis, to: Millis| u64::try_from(to.saturating_sub(from)).unwrap_or(0);
    let servers = record.action["servers"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Status {
        task_id: record.task_id,
        state: match record.state {
            ActionState::Accepted => State::Queued,
            ActionState::Running => State::Running,
            ActionState::Done => State::Done,
        },
        servers,
        task: preview(record.action["task"].as_str().unwrap_or_default()),
        elapsed_ms: since(record.accepted_ms, record.finished_ms.unwrap_or(now)),
        running_ms: record.started_ms.map(|started| since(started, record.finished_ms.unwrap_or(now))),
        result: record.result,
        progress: None,
    }
}

impl ServiceFront {
    async fn status_now(&self, task_id: &str) -> FrontResult<Option<Status>> {
        let record = self.service.journal.action(task_id).await.map_err(|e| e.to_string())?;
        Ok(record.map(|record| {
            let mut status = status_of(record);
            self.progress.annotate(&mut status);
            status
        }))
    }

    async fn spawn_action(&self, mut action: Map<String, Value>, key: Option<&str>) -> Result<String, Refusal> {
        let keyed = apply_key(&mut action, key);
        if let Some(id) = &keyed
            && self.status_now(id).await.map_err(Refusal::internal)?.is_some()
        {
            return Ok(id.clone());
        }
        action.insert("type".into(), Value::from("spawn_worker"));
        // Its progress feeds the waiting call's notifications (and SSE `progress`), unless the
        // call said otherwise.
        action.entry("progress").or_insert(Value::Bool(true));
        let item = parse_action(Value::Object(action), Origin::default(), self.service.settings.limits);
        if let Item::Refused(result) = item {
            return Err(result.into());
        }
        match self.service.accept(vec![item]).await {
            Ok(Accepted { accepted_ids, mut refused, .. }) => {
                if let Some(id) = accepted_ids.into_iter().next() {
                    return Ok(id);
                }
                // The same key twice at once: the second finds the first one's id taken.
                if let Some(id) = keyed
                    && self.status_now(&id).await.map_err(Refusal::internal)?.is_some()
                {
                    return Ok(id);
                }
                match refused.pop() {
                    Some(result) => Err(Box::new(result).into()),
                    None => Err(Refusal::internal("the action was neither accepted nor refused")),
                }
            }
            Err(AcceptError::Draining) => {
                Err(Refusal(WorkerError::new(ErrorKind::Shutdown, "the daemon is shutting down", true)))
            }
            Err(err) => Err(Refusal::internal(err.to_string())),
        }
    }

    async fn wait_for(&self, ids: &[String], wait: Duration, cancelled: BoxFuture<'_, ()>) -> FrontResult<Statuses> {
        // Subscribed before the first look, so no result can slip between the two.
        let mut events = self.service.events.subscribe();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline, cancelled);
        loop {
            let mut now = Vec::with_capacity(ids.len());
            for id in ids {
                now.push((id.clone(), self.status_now(id).await?));
            }
            if settled(&now) {
                return Ok(now);
            }
            loop {
                let event = tokio::select! {
                    biased;
                    () = &mut cancelled => return Ok(now),
                    () = &mut deadline => return Ok(now),
                    event = events.recv() => event,
                };
                match event {
                    Ok(event) if event.kind == EventKind::Result => {
                        if event.data["taskId"].as_str().is_some_and(|id| ids.iter().any(|i| i == id)) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Ok(now),
                }
            }
        }
    }
}

impl Front for ServiceFront {
    fn spawn<'a>(&'a self, action: Map<String, Value>, key: Option<&'a str>) -> BoxFuture<'a, Result<String, Refusal>> {
        Box::pin(self.spawn_action(action, key))
    }

    fn status<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, FrontResult<Option<Status>>> {
        Box::pin(self.status_now(task_id))
    }

    fn wait<'a>(
        &'a self,
        ids: &'a [String],
        wait: Duration,
        cancelled: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, FrontResult<Statuses>> {
        Box::pin(self.wait_for(ids, wait, cancelled))
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, FrontResult<Cancel>> {
        Box::pin(async move { self.service.cancel(task_id).await.map_err(|e| e.to_string()) })
    }

    fn list(&self, state: Option<State>, limit: usize) -> BoxFuture<'_, FrontResult<Vec<Status>>> {
        let state = state.map(|s| match s {
            State::Queued => ActionState::Accepted,
            State::Running => ActionState::Running,
            State::Done => ActionState::Done,
        });
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        Box::pin(async move {
            let records = self.service.journal.actions(state, limit).await.map_err(|e| e.to_string())?;
            Ok(records.into_iter().map(|r| Status { result: None, ..status_of(r) }).collect())
        })
    }
}
