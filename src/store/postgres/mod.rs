//! The PostgreSQL backend of [`QueueStore`], [`Journal`] and [`Ledger`] (issue 9): several
//! daemons (and `enqueue`, `tasks`, `mcp queue`) on several machines share one database and see
//! one queue, one journal, one event log and one budget ledger.
//!
//! - Every method is one transaction on a pooled connection (`pool.rs`); "now" is read once per
//!   transaction from the database (`now()`), so machines' clocks never meet. Tests pass a
//!   manual [`Clock`] instead.
//! - Claims take the oldest queued task with `FOR UPDATE SKIP LOCKED`.
//! - Event ids are gap-free and commit in order (`journal.rs`).
//! - Wakeups: every write that may wake somebody sends `pg_notify('mcp_workers', '<schema>:tasks'
//!   | '<schema>:events')` in its transaction; a listener connection (`listen.rs`) feeds the
//!   [`Changes`] subscriptions, notifies them after every (re)connect (catch-up), and a slow poll
//!   wakes waiting subscribers anyway. `listen=false` in the URL: poll only (PgBouncer in
//!   transaction mode cannot LISTEN).

mod cluster;
#[cfg(test)]
mod cluster_tests;
pub mod config;
mod journal;
mod ledger;
mod listen;
mod owner;
mod pool;
mod queue;
mod schema;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use self::config::PgConfig;
use self::pool::{Conn, Pool};
use super::changes::{ChangeFeed, Demand};
use super::clock::millis;
use super::{
    ActionRecord, Changes, Clock, Cluster, ClusterCancel, ClusterStatus, Counts, EventRecord, Journal, Ledger, Millis,
    NodeId, QueueStore, Reaped, Recovery, Result, StoreError, SubmitOutcome, SweepReport, Task, TaskState, UnclaimedFn,
    Unfinished, VerdictFn,
};
use crate::protocol::WorkerResult;

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        StoreError::Backend(Arc::new(err))
    }
}

/// The channel every store of one database notifies on; the payload names the schema and what
/// changed.
const CHANNEL: &str = "mcp_workers";

/// What a write may wake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wakes {
    Nothing,
    Tasks,
    Events,
    Cancels,
}

/// The change feeds of one handle.
pub(crate) struct Feeds {
    tasks: ChangeFeed,
    events: ChangeFeed,
    cancels: ChangeFeed,
}

impl Feeds {
    fn all(&self) {
        self.tasks.notify();
        self.events.notify();
        self.cancels.notify();
    }
}

pub struct PgStore {
    pool: Pool,
    clock: Clock,
    feeds: Arc<Feeds>,
    payload_tasks: String,
    payload_events: String,
    payload_cancels: String,
    /// The node this handle joined as ([`Cluster::join`]): its journal writes are fenced to it.
    node: std::sync::RwLock<Option<NodeId>>,
    /// The node name whose lock this handle holds (`owner.rs`).
    name_held: tokio::sync::Mutex<Option<String>>,
    stop: CancellationToken,
    _stop: DropGuard,
}

/// Runs `$body` (an expression using `$c: &Conn` and `$now: Millis`) in one transaction, then
/// wakes this handle's subscribers if it committed and `$wakes` says so.
macro_rules! in_tx {
    ($self:ident, $wakes:expr, |$c:ident, $now:ident| $body:expr) => {{
        let conn = $self.pool.get().await?;
        let $c: &Conn = &conn;
        // BEGIN and the read of "now" in one round trip (tokio-postgres pipelines them).
        let (begun, now) = tokio::join!($c.begin(), $self.now($c));
        let outcome: Result<_> = async {
            begun?;
            let $now = now?;
            let value = $body;
            $self.announce($c, $wakes).await?;
            Ok(value)
        }
        .await;
        $c.end(outcome.is_ok()).await?;
        $self.wake($wakes);
        outcome
    }};
}

/// Runs a read on a pooled connection (one statement: its own transaction).
macro_rules! read {
    ($self:ident, |$c:ident| $body:expr) => {{
        let conn = $self.pool.get().await?;
        let $c: &Conn = &conn;
        $body
    }};
}

impl PgStore {
    /// Connects, creates the schema and applies the migrations if needed, and (unless the URL
    /// says `listen=false`) starts listening before it returns, so that no notification sent
    /// after `open` is missed.
    pub async fn open(config: PgConfig, clock: Clock) -> Result<Self> {
        let pool = Pool::new(config.clone());
        {
            let conn = pool.get().await?;
            schema::migrate(&conn, &config.schema, schema::MIGRATIONS).await?;
        }
        let stop = CancellationToken::new();
        let demand = Demand::new(|| {});
        let feeds = Arc::new(Feeds {
            tasks: ChangeFeed::new(Arc::clone(&demand)),
            events: ChangeFeed::new(Arc::clone(&demand)),
            cancels: ChangeFeed::new(Arc::clone(&demand)),
        });
        if config.listen {
            listen::start(config.clone(), Arc::clone(&feeds), stop.clone()).await?;
        }
        tokio::spawn(listen::poll(config.poll_interval, demand, Arc::clone(&feeds), stop.clone()));
        Ok(Self {
            pool,
            clock,
            feeds,
            payload_tasks: format!("{}:tasks", config.schema),
            payload_events: format!("{}:events", config.schema),
            payload_cancels: format!("{}:cancels", config.schema),
            node: std::sync::RwLock::new(None),
            name_held: tokio::sync::Mutex::new(None),
            stop: stop.clone(),
            _stop: stop.drop_guard(),
        })
    }

    /// The node this handle joined as, if any.
    fn node(&self) -> Option<NodeId> {
        self.node.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn node_id(&self) -> Option<i64> {
        self.node().map(|n| n.id)
    }

    /// The joined node's id, or an error for a cluster call made before [`Cluster::join`].
    fn joined(&self) -> Result<i64> {
        self.node_id().ok_or_else(|| StoreError::Fenced("this daemon has not joined the cluster".into()))
    }

    /// The transaction's "now": the manual clock's in tests, else the database's.
    async fn now(&self, c: &Conn) -> Result<Millis> {
        let manual = match self.clock {
            Clock::System => None,
            Clock::Manual(_) => Some(self.clock.now()),
        };
        let now = c.prepare("SELECT coalesce($1::int8, floor(extract(epoch FROM now()) * 1000)::int8)").await?;
        Ok(c.client.query_one(&now, &[&manual]).await?.try_get(0)?)
    }

    /// Sends the notification for `wakes` (delivered at commit, to every listener).
    async fn announce(&self, c: &Conn, wakes: Wakes) -> Result<()> {
        let payload = match wakes {
            Wakes::Nothing => return Ok(()),
            Wakes::Tasks => &self.payload_tasks,
            Wakes::Events => &self.payload_events,
            Wakes::Cancels => &self.payload_cancels,
        };
        let notify = c.prepare("SELECT pg_notify($1, $2)").await?;
        c.client.execute(&notify, &[&CHANNEL, payload]).await?;
        Ok(())
    }

    fn wake(&self, wakes: Wakes) {
        match wakes {
            Wakes::Nothing => {}
            Wakes::Tasks => self.feeds.tasks.notify(),
            Wakes::Events => self.feeds.events.notify(),
            Wakes::Cancels => self.feeds.cancels.notify(),
        }
    }
}

/// `now + d`, saturating.
fn after(now: Millis, d: Duration) -> Millis {
    now.saturating_add(millis(d))
}

#[async_trait]
impl QueueStore for PgStore {
    async fn enqueue(&self, prompts: &[String]) -> Result<Vec<String>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        in_tx!(self, Wakes::Tasks, |c, now| queue::enqueue(c, prompts, now).await?)
    }

    async fn create_worker(&self, active_for: Duration) -> Result<String> {
        in_tx!(self, Wakes::Nothing, |c, now| queue::create_worker(c, now, after(now, active_for)).await?)
    }

    async fn touch_worker(&self, worker_id: &str, active_for: Duration) -> Result<bool> {
        in_tx!(self, Wakes::Nothing, |c, now| queue::touch_worker(c, worker_id, now, after(now, active_for)).await?)
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Task>> {
        in_tx!(self, Wakes::Nothing, |c, now| queue::claim(c, worker_id, now, after(now, lease)).await?)
    }

    async fn release(&self, task_id: &str, worker_id: &str) -> Result<bool> {
        let released = in_tx!(self, Wakes::Nothing, |c, now| {
            let released = queue::release(c, task_id, worker_id, now).await?;
            if released {
                self.announce(c, Wakes::Tasks).await?;
            }
            released
        })?;
        if released {
            self.wake(Wakes::Tasks);
        }
        Ok(released)
    }

    async fn submit(&self, worker_id: &str, task_id: &str, response: &str) -> Result<SubmitOutcome> {
        in_tx!(self, Wakes::Nothing, |c, now| queue::submit(c, worker_id, task_id, response, now).await?)
    }

    async fn sweep(&self, max_attempts: u32) -> Result<SweepReport> {
        let report = in_tx!(self, Wakes::Nothing, |c, now| {
            let report = queue::sweep(c, now, max_attempts).await?;
            if report.requeued > 0 {
                self.announce(c, Wakes::Tasks).await?;
            }
            report
        })?;
        if report.requeued > 0 {
            self.wake(Wakes::Tasks);
        }
        Ok(report)
    }

    async fn task(&self, task_id: &str) -> Result<Option<Task>> {
        read!(self, |c| queue::task(c, task_id).await)
    }

    async fn tasks(&self, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>> {
        read!(self, |c| queue::tasks(c, state, limit).await)
    }

    async fn counts(&self) -> Result<Counts> {
        read!(self, |c| queue::counts(c).await)
    }

    async fn any_active_worker(&self) -> Result<bool> {
        in_tx!(self, Wakes::Nothing, |c, now| queue::any_active_worker(c, now).await?)
    }

    async fn purge_tasks(&self, keep: Duration) -> Result<u64> {
        in_tx!(self, Wakes::Nothing, |c, now| queue::purge_tasks(c, now.saturating_sub(millis(keep))).await?)
    }

    async fn maintain(&self) -> Result<()> {
        // PostgreSQL's autovacuum keeps the tables; nothing to do per sweep.
        Ok(())
    }

    fn task_changes(&self) -> Changes {
        self.feeds.tasks.subscribe()
    }
}

#[async_trait]
impl Journal for PgStore {
    async fn known(&self, task_ids: &[String]) -> Result<Vec<String>> {
        read!(self, |c| journal::known(c, task_ids).await)
    }

    async fn accept(&self, accepted: &[(String, Value)], refused: &[WorkerResult]) -> Result<Vec<EventRecord>> {
        let wakes = if accepted.is_empty() && refused.is_empty() { Wakes::Nothing } else { Wakes::Events };
        in_tx!(self, wakes, |c, now| journal::accept(c, accepted, refused, now).await?)
    }

    async fn started(&self, task_id: &str) -> Result<EventRecord> {
        let node = self.node_id();
        in_tx!(self, Wakes::Events, |c, now| journal::started(c, task_id, now, node).await?)
    }

    async fn finish(&self, result: &WorkerResult) -> Result<Option<EventRecord>> {
        let node = self.node_id();
        let event = in_tx!(self, Wakes::Nothing, |c, now| {
            let event = journal::finish(c, result, now, node).await?;
            if event.is_some() {
                self.announce(c, Wakes::Events).await?;
            }
            event
        })?;
        if event.is_some() {
            self.wake(Wakes::Events);
        }
        Ok(event)
    }

    async fn action(&self, task_id: &str) -> Result<Option<ActionRecord>> {
        read!(self, |c| journal::action(c, task_id).await)
    }

    async fn actions(&self, state: Option<crate::store::ActionState>, limit: u32) -> Result<Vec<ActionRecord>> {
        read!(self, |c| journal::actions(c, state, limit).await)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        read!(self, |c| journal::events_after(c, after, limit).await)
    }

    async fn recover(&self) -> Result<Recovery> {
        read!(self, |c| journal::recover(c).await)
    }

    async fn purge_actions(&self, keep: Duration) -> Result<(u64, u64)> {
        in_tx!(self, Wakes::Nothing, |c, now| journal::purge_actions(c, now.saturating_sub(millis(keep))).await?)
    }

    async fn unfinished(&self) -> Result<Unfinished> {
        read!(self, |c| journal::unfinished(c).await)
    }

    fn event_changes(&self) -> Changes {
        self.feeds.events.subscribe()
    }

    async fn requeue(&self, task_id: &str, stored: &Value) -> Result<bool> {
        in_tx!(self, Wakes::Nothing, |c, _now| journal::requeue(c, task_id, stored).await?)
    }

    async fn attempt_failed(&self, task_id: &str, kind: &str) -> Result<bool> {
        let node = self.node_id();
        in_tx!(self, Wakes::Nothing, |c, _now| journal::attempt_failed(c, task_id, kind, node).await?)
    }
}

#[async_trait]
impl Ledger for PgStore {
    async fn charge(&self, task_id: &str, usd: f64) -> Result<()> {
        in_tx!(self, Wakes::Nothing, |c, now| ledger::charge(c, task_id, usd, now).await?)
    }

    async fn charges_within(&self, window: Duration) -> Result<Vec<(Duration, f64)>> {
        in_tx!(self, Wakes::Nothing, |c, now| ledger::charges_within(c, millis(window), now).await?)
    }
}

#[async_trait]
impl Cluster for PgStore {
    async fn join(&self, name: &str) -> Result<NodeId> {
        {
            let mut held = self.name_held.lock().await;
            match held.as_deref() {
                Some(h) if h == name => {}
                Some(h) => return Err(StoreError::Busy(format!("this handle already joined as `{h}`"))),
                None => {
                    owner::start(self.pool.config().clone(), name.to_owned(), self.stop.clone()).await?;
                    *held = Some(name.to_owned());
                }
            }
        }
        let (node, buried) = in_tx!(self, Wakes::Nothing, |c, _now| cluster::join(c, name).await?)?;
        if !buried.is_empty() {
            tracing::info!(node = name, earlier = buried.len(), "an earlier run of this node is gone: declared dead");
        }
        *self.node.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(node.clone());
        Ok(node)
    }

    async fn heartbeat(&self) -> Result<()> {
        let node = self.joined()?;
        in_tx!(self, Wakes::Nothing, |c, _now| cluster::heartbeat(c, node).await?)
    }

    async fn reap(&self, timeout: Duration, verdict: &VerdictFn) -> Result<Reaped> {
        let (me, timeout_ms) = (self.node_id(), millis(timeout));
        let reaped = in_tx!(self, Wakes::Nothing, |c, now| {
            let reaped = cluster::reap(c, me, timeout_ms, now, verdict).await?;
            if reaped.released > 0 || !reaped.events.is_empty() {
                self.announce(c, Wakes::Events).await?;
            }
            reaped
        })?;
        if reaped.released > 0 || !reaped.events.is_empty() {
            self.wake(Wakes::Events);
        }
        Ok(reaped)
    }

    async fn claim(&self, n: usize) -> Result<Vec<(String, Value)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let node = self.joined()?;
        in_tx!(self, Wakes::Nothing, |c, _now| cluster::claim(c, node, n).await?)
    }

    async fn hand_back(&self) -> Result<u64> {
        let node = self.joined()?;
        let released = in_tx!(self, Wakes::Nothing, |c, _now| {
            let released = cluster::hand_back(c, node).await?;
            if released > 0 {
                self.announce(c, Wakes::Events).await?;
            }
            released
        })?;
        if released > 0 {
            self.wake(Wakes::Events);
        }
        Ok(released)
    }

    async fn leave(&self) -> Result<()> {
        let node = self.joined()?;
        in_tx!(self, Wakes::Nothing, |c, _now| cluster::leave(c, node).await?)
    }

    async fn cancel(&self, task_id: &str, unclaimed: &UnclaimedFn) -> Result<ClusterCancel> {
        let outcome = in_tx!(self, Wakes::Nothing, |c, now| {
            let outcome = cluster::cancel(c, task_id, unclaimed, now).await?;
            match outcome {
                ClusterCancel::Answered(_) => self.announce(c, Wakes::Events).await?,
                ClusterCancel::Asked(_) => self.announce(c, Wakes::Cancels).await?,
                ClusterCancel::Unknown | ClusterCancel::Finished => {}
            }
            outcome
        })?;
        match outcome {
            ClusterCancel::Answered(_) => self.wake(Wakes::Events),
            ClusterCancel::Asked(_) => self.wake(Wakes::Cancels),
            ClusterCancel::Unknown | ClusterCancel::Finished => {}
        }
        Ok(outcome)
    }

    async fn cancels(&self) -> Result<Vec<String>> {
        let node = self.joined()?;
        in_tx!(self, Wakes::Nothing, |c, _now| cluster::cancels(c, node).await?)
    }

    fn cancel_changes(&self) -> Changes {
        self.feeds.cancels.subscribe()
    }

    async fn last_event_id(&self) -> Result<i64> {
        read!(self, |c| cluster::last_event_id(c).await)
    }

    async fn status(&self) -> Result<ClusterStatus> {
        read!(self, |c| cluster::status(c).await)
    }
}
