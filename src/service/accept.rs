//! Taking a request's actions as one unit: refuse ids the journal has seen, admit the rest,
//! journal the accepted and the refused in one transaction, publish, and queue the accepted.
//!
//! It runs in a tracked task of its own: the caller (an HTTP handler, which hyper drops when its
//! client disconnects) only awaits it. So whatever the caller does, either everything happened
//! (journalled and queued, or left in the journal for the next start if the daemon is stopping)
//! or nothing did (a failed journal write gives every reserved id back).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Published, Service, stored_action};
use crate::protocol::parse::{INVALID_PREFIX, Item};
use crate::protocol::{ActionAck, ErrorKind, WorkerError, WorkerResult};

/// What became of a request's items.
pub struct Accepted {
    /// `{"taskId", "index"}` of each accepted action, in request order.
    pub accepted: Vec<Value>,
    pub accepted_ids: Vec<String>,
    /// Refused actions' results (also journalled and published).
    pub refused: Vec<WorkerResult>,
    pub acks: Vec<ActionAck>,
    /// Subscribed before anything ran, so no result of these actions can slip past.
    pub subscription: broadcast::Receiver<Published>,
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the daemon is shutting down")]
    Draining,
    #[error("the journal failed: {0}")]
    Journal(String),
}

impl Service {
    /// Accepts `items` as one unit (see the module's documentation).
    pub async fn accept(self: &Arc<Self>, items: Vec<Item>) -> Result<Accepted, AcceptError> {
        if self.draining.is_cancelled() {
            return Err(AcceptError::Draining);
        }
        let this = self.clone();
        let unit = self.tasks.spawn(async move { this.accept_unit(items).await });
        unit.await.unwrap_or_else(|err| Err(AcceptError::Journal(format!("the accept task failed: {err}"))))
    }

    async fn accept_unit(&self, items: Vec<Item>) -> Result<Accepted, AcceptError> {
        // Refuse ids the journal has seen before (they must stay unique for GET /v1/tasks/{id}).
        let spawn_ids: Vec<String> =
            items.iter().filter_map(|i| if let Item::Spawn(a) = i { Some(a.task_id.clone()) } else { None }).collect();
        let known: BTreeSet<String> = match self.journal.known(&spawn_ids).await {
            Ok(known) => known.into_iter().collect(),
            Err(err) => return Err(AcceptError::Journal(err.to_string())),
        };
        let mut refused: Vec<WorkerResult> = Vec::new();
        let mut acks = Vec::new();
        let mut admitted = Vec::new();
        for item in items {
            match item {
                Item::Ack(ack) => acks.push(ack),
                Item::Refused(result) => refused.push(*result),
                Item::Spawn(action) if known.contains(&action.task_id) => {
                    let message = format!("{INVALID_PREFIX}: /taskId: {} was already used", action.task_id);
                    let error = WorkerError::new(ErrorKind::InvalidAction, message, false);
                    refused.push(WorkerResult::failure(&action.task_id, action.origin, error));
                }
                Item::Spawn(action) => match self.pool.admit(action) {
                    Ok(ok) => admitted.push(ok),
                    Err(result) => refused.push(*result),
                },
            }
        }
        let entries: Vec<(String, Value)> =
            admitted.iter().map(|a| (a.job.action.task_id.clone(), stored_action(&a.job.action))).collect();
        let accepted: Vec<Value> = admitted
            .iter()
            .map(|a| json!({"taskId": a.job.action.task_id, "index": a.job.action.origin.index}))
            .collect();
        let accepted_ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let subscription = self.events.subscribe();
        if self.cluster.is_some() {
            // In a cluster the node that claims an action admits it again (this one may, the
            // moment the journal has it): the admission here was only the check.
            admitted.clear();
        }
        let recorded = self.journal.accept(&entries, &refused).await;
        // On failure, dropping `admitted` gives the ids back: nothing was written.
        let events = recorded.map_err(|err| AcceptError::Journal(err.to_string()))?;
        refused.iter().for_each(|r| self.metrics.observe(r));
        self.publish_written(events);
        match &self.cluster {
            // Any node with a free slot claims them (this one first: it is poked now).
            Some(member) => member.poke(),
            None => {
                for ok in admitted {
                    self.pool.enqueue(ok).await;
                }
            }
        }
        Ok(Accepted { accepted, accepted_ids, refused, acks, subscription })
    }
}
