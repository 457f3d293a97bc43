//! Retention for `serve`: every so often, deletes done and dead tasks, done actions and events
//! older than the kept time, so the tables do not grow without bound. Failures are logged and
//! tried again at the next round (the store may be away).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Journal, QueueStore};

/// How often a round runs.
pub const EVERY: Duration = Duration::from_secs(60);

/// Runs rounds until `stop`; `keep` zero: never (the caller should not start it then).
pub async fn run(queue: Arc<dyn QueueStore>, journal: Arc<dyn Journal>, keep: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue.purge_tasks(keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, ?keep, "retention: finished tasks deleted"),
            Err(err) => tracing::warn!(error = %err, "retention: cannot delete old tasks"),
        }
        match journal.purge_actions(keep).await {
            Ok((0, 0)) => {}
            Ok((actions, events)) => {
                tracing::info!(actions, events, ?keep, "retention: old actions and events deleted")
            }
            Err(err) => tracing::warn!(error = %err, "retention: cannot delete old actions"),
        }
    }
}
