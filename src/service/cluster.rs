//! Several `serve` daemons on one journal (PostgreSQL; issue 9). Each daemon is a node of the
//! store's [`Cluster`]; this module runs its three loops beside the pool:
//!
//! - **the dispatcher**: claims accepted actions (anyone's: `POST /v1/actions` on any daemon
//!   only journals them) up to this daemon's free slots, oldest first, and feeds them to the
//!   pool; it also carries out the cancels other nodes ask of this one. It wakes on the
//!   journal's change feed (LISTEN/NOTIFY, with the store's slow fallback poll) and when a local
//!   result frees a slot.
//! - **the tail**: publishes every node's journal events to this daemon's subscribers (SSE,
//!   `?wait`, the workers tools), in the journal's one gap-free id order. In cluster mode the
//!   writers never publish their own events: the tail is the only publisher of journalled ones.
//! - **the heartbeat**: says this node is alive every third of `--node-timeout`; once it has
//!   been healthy for a whole timeout (so a database outage that silenced everybody does not
//!   make the first node back declare the others dead), it reaps: silent nodes are declared
//!   dead, their unstarted actions go back to the cluster, their running ones are answered
//!   `interrupted` (or run again, when their `retries` allow: `interrupted.rs` decides). A heartbeat refused as fenced means this node was declared dead: it stops
//!   its workers (their results would be refused anyway) and joins again as a new node.
//!
//! A graceful stop hands this node's claimed, unstarted actions back at once, lets its running
//! workers finish (the heartbeat goes on meanwhile), then leaves.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Published, Service};
use crate::store::{Cluster, StoreError};

/// How a daemon takes part in a cluster (`serve --node-name`, `--node-timeout`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub name: String,
    pub node_timeout: Duration,
}

/// The cluster side of a [`Service`].
pub struct Membership {
    pub cluster: Arc<dyn Cluster>,
    pub settings: ClusterSettings,
    /// Wakes the dispatcher (an accept here, a local result, a rejoin).
    poke: Notify,
    /// Ends the loops (after the pool finished, before leaving).
    stop: CancellationToken,
    /// Joined and not fenced.
    pub(super) joined: std::sync::atomic::AtomicBool,
}

/// Events the tail reads per query.
const TAIL_PAGE: u32 = 512;
/// How long a fenced node waits for its cancelled workers before it joins again.
const FENCED_SETTLE: Duration = Duration::from_secs(15);

impl Membership {
    pub fn new(cluster: Arc<dyn Cluster>, settings: ClusterSettings) -> Self {
        Self {
            cluster,
            settings,
            poke: Notify::new(),
            stop: CancellationToken::new(),
            joined: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn poke(&self) {
        self.poke.notify_one();
    }

    fn heartbeat_every(&self) -> Duration {
        (self.settings.node_timeout / 3).max(Duration::from_millis(50))
    }
}

impl Service {
    /// Joins the cluster, settles what an earlier run of this node left (at once: its name's
    /// lock says it is gone), and starts the loops.
    pub(super) async fn start_cluster(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(member) = &self.cluster else { return Ok(()) };
        // The tail starts at the newest event: everything from here on is published once.
        let from = member.cluster.last_event_id().await?;
        let node = member.cluster.join(&member.settings.name).await?;
        member.joined.store(true, Ordering::Release);
        info!(node = %node.name, id = node.id, timeout = ?member.settings.node_timeout, "joined the cluster");
        self.reap(Duration::MAX).await;
        tokio::spawn(self.clone().tail(from));
        tokio::spawn(self.clone().dispatch());
        tokio::spawn(self.clone().heartbeat());
        Ok(())
    }

    /// Settles dead nodes' actions (and, with `Duration::MAX`, only those of nodes already
    /// dead or departed: the start-up pass). Leftover processes of this machine's earlier run
    /// are killed.
    async fn reap(&self, timeout: Duration) {
        let Some(member) = &self.cluster else { return };
        let timeout = if timeout == Duration::MAX { Duration::from_secs(10 * 365 * 24 * 3600) } else { timeout };
        match member.cluster.reap(timeout, &super::interrupted::after_interruption).await {
            Ok(reaped) => {
                for node in &reaped.declared {
                    warn!(node = %node.name, id = node.id, "declared a silent node dead");
                }
                // What this machine's earlier run left of its workers goes before anything runs
                // again.
                let mine: Vec<String> = reaped
                    .answered
                    .iter()
                    .chain(&reaped.rerun)
                    .filter(|(_, name)| *name == member.settings.name)
                    .map(|(id, _)| id.clone())
                    .collect();
                if !mine.is_empty() {
                    crate::worker::process::kill_leftovers(&mine, &self.settings.worker.cli.data_dir);
                }
                if !reaped.answered.is_empty() || reaped.released > 0 {
                    warn!(
                        interrupted = reaped.answered.len(),
                        released = reaped.released,
                        "settled the actions of nodes that are gone"
                    );
                }
            }
            Err(err) => warn!(error = %err, "cannot reap dead nodes now"),
        }
    }

    /// Publishes every journalled event, in id order, from `after` on.
    async fn tail(self: Arc<Self>, mut after: i64) {
        let Some(member) = &self.cluster else { return };
        let mut changes = self.journal.event_changes();
        loop {
            match self.journal.events_after(after, TAIL_PAGE).await {
                Ok(page) => {
                    let full = page.len() == usize::try_from(TAIL_PAGE).unwrap_or(usize::MAX);
                    if let Some(last) = page.last() {
                        after = last.id;
                    }
                    if page.iter().any(|e| e.kind == crate::store::EventKind::Accepted) {
                        member.poke();
                    }
                    self.publish(page.into_iter().map(Published::from));
                    if full {
                        continue;
                    }
                }
                Err(err) => warn!(error = %err, "cannot read the journal's events now"),
            }
            tokio::select! {
                () = member.stop.cancelled() => return,
                () = changes.changed() => {}
            }
        }
    }

    /// Claims what this node has room for and carries out cancels asked of it.
    async fn dispatch(self: Arc<Self>) {
        let Some(member) = &self.cluster else { return };
        let mut changes = self.journal.event_changes();
        let mut cancels = member.cluster.cancel_changes();
        // The first pass looks for both; then each feed wakes its own part.
        let (mut to_claim, mut to_cancel) = (true, true);
        loop {
            if member.joined.load(Ordering::Acquire) {
                if to_claim && !self.draining.is_cancelled() {
                    self.claim(member).await;
                }
                if to_cancel {
                    match member.cluster.cancels().await {
                        Ok(ids) => {
                            for id in ids {
                                info!(task_id = %id, "cancelling at another daemon's request");
                                self.pool.cancel(&id);
                            }
                        }
                        Err(err) => warn!(error = %err, "cannot read the cancels asked of this node"),
                    }
                }
            }
            (to_claim, to_cancel) = tokio::select! {
                () = member.stop.cancelled() => return,
                () = changes.changed() => (true, false),
                () = cancels.changed() => (false, true),
                () = member.poke.notified() => (true, false),
            };
        }
    }

    async fn claim(&self, member: &Membership) {
        loop {
            let free = self.settings.max_workers.saturating_sub(self.pool.unfinished());
            if free == 0 {
                return;
            }
            let claimed = match member.cluster.claim(free).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    warn!(error = %err, "cannot claim actions now");
                    return;
                }
            };
            let got = claimed.len();
            for (task_id, stored) in claimed {
                self.run_stored(task_id, &stored).await;
            }
            if got < free {
                return;
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let Some(member) = &self.cluster else { return };
        let every = member.heartbeat_every();
        let mut healthy_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = member.stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match member.cluster.heartbeat().await {
                Ok(()) => {
                    let since = *healthy_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= member.settings.node_timeout {
                        self.reap(member.settings.node_timeout).await;
                    }
                }
                Err(StoreError::Fenced(why)) => {
                    healthy_since = None;
                    self.fenced(member, &why).await;
                }
                Err(err) => {
                    healthy_since = None;
                    warn!(error = %err, "cannot send this node's heartbeat");
                }
            }
        }
    }

    /// Declared dead by another node: stop the workers (another node answered their actions),
    /// wait for them, join again.
    async fn fenced(&self, member: &Membership, why: &str) {
        member.joined.store(false, Ordering::Release);
        let stopped = self.pool.cancel_all();
        warn!(reason = why, workers = stopped, "this node was declared dead; stopping its workers and joining again");
        let settle = tokio::time::Instant::now() + FENCED_SETTLE;
        while self.pool.unfinished() > 0 && tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            match member.cluster.join(&member.settings.name).await {
                Ok(node) => {
                    info!(node = %node.name, id = node.id, "joined the cluster again");
                    member.joined.store(true, Ordering::Release);
                    member.poke();
                    return;
                }
                Err(err) => {
                    warn!(error = %err, "cannot join the cluster again yet");
                    tokio::select! {
                        () = member.stop.cancelled() => return,
                        () = tokio::time::sleep(member.heartbeat_every()) => {}
                    }
                }
            }
        }
    }

    /// A graceful stop's first step: this node's unstarted actions go back to the cluster now.
    pub(super) async fn hand_back(&self) {
        let Some(member) = &self.cluster else { return };
        match member.cluster.hand_back().await {
            Ok(0) => {}
            Ok(n) => info!(actions = n, "handed unstarted actions back to the cluster"),
            Err(err) => {
                warn!(error = %err, "cannot hand unstarted actions back; others take them after the node timeout")
            }
        }
    }

    /// The last step: the loops end and the node leaves.
    pub(super) async fn leave(&self) {
        let Some(member) = &self.cluster else { return };
        member.stop.cancel();
        if let Err(err) = member.cluster.leave().await {
            warn!(error = %err, "cannot mark this node departed; others will after the node timeout");
        }
    }
}
