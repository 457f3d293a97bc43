//! systemd's service notifications (`sd_notify(3)`) for a `Type=notify` unit: `READY=1` once
//! `serve` listens and its store answers, `STATUS=` lines with the running and waiting counts,
//! `WATCHDOG=1` only after the runtime has scheduled a probe and the store has answered it, and
//! `STOPPING=1` when the drain begins.
//!
//! Without `NOTIFY_SOCKET` in the environment (Docker, Compose, a shell, the stdin modes) nothing
//! here sends anything or starts a task. Workers never inherit the variables: their environment is
//! built from nothing (`worker::command`).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::Service;

/// How often `STATUS=` is refreshed when systemd asks for no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// The shortest interval between probes, whatever `WATCHDOG_USEC` says.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// The notifications of one `serve` run. Dropping it stops the keep-alive task.
pub struct Notifier {
    active: bool,
    _task: Option<DropGuard>,
}

/// Starts telling systemd about `service`: the first probe that the store answers sends
/// `READY=1`, each later one `WATCHDOG=1` (when the unit has `WatchdogSec=`) and a fresh `STATUS=`.
/// Call it once the listener is bound and the service has started.
pub fn ready(service: &Arc<Service>) -> Notifier {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Notifier { active: false, _task: None };
    }
    let watchdog = sd_notify::watchdog_enabled();
    let period = period(watchdog);
    info!(watchdog = ?watchdog, every = ?period, "notifying systemd (NOTIFY_SOCKET is set)");
    let stop = CancellationToken::new();
    tokio::spawn(keep_alive(service.clone(), period, watchdog.is_some(), stop.clone()));
    Notifier { active: true, _task: Some(stop.drop_guard()) }
}

impl Notifier {
    /// Tells systemd that the daemon is stopping (the drain has begun). Status lines go on until
    /// the notifier is dropped, so `systemctl status` shows what the drain waits for.
    pub fn stopping(&self, running: usize) {
        if self.active {
            send(&[NotifyState::Stopping, NotifyState::Status(&format!("stopping: {running} running"))]);
        }
    }
}

/// Half the watchdog timeout, as `sd_watchdog_enabled(3)` advises; the status interval without one.
fn period(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(STATUS_EVERY, |timeout| (timeout / 2).max(MIN_PERIOD))
}

/// The `STATUS=` text for the store's unfinished counts.
fn status_line(draining: bool, accepted: u64, running: u64) -> String {
    let state = if draining { "draining: " } else { "" };
    format!("{state}{running} running, {accepted} waiting")
}

async fn keep_alive(service: Arc<Service>, period: Duration, watchdog: bool, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ready = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The probe queries the store (its reader thread): an answer within the period shows that
        // the runtime schedules tasks and that the journal is neither wedged nor locked.
        let counts = match tokio::time::timeout(period, service.journal.unfinished()).await {
            Ok(Ok(counts)) => counts,
            Ok(Err(err)) => {
                warn!("the store does not answer, so systemd is not told the daemon is alive: {err}");
                continue;
            }
            Err(_) => {
                warn!(limit = ?period, "the store did not answer in time, so systemd is not told the daemon is alive");
                continue;
            }
        };
        let status = status_line(service.draining.is_cancelled(), counts.accepted, counts.running);
        let first = if ready { None } else { Some(NotifyState::Ready) };
        let alive = (ready && watchdog).then_some(NotifyState::Watchdog);
        let states: Vec<NotifyState> = first.into_iter().chain(alive).chain([NotifyState::Status(&status)]).collect();
        ready |= send(&states);
    }
}

/// Sends `states` to systemd; reports whether it went.
fn send(states: &[NotifyState]) -> bool {
    match sd_notify::notify(states) {
        Ok(()) => true,
        Err(err) => {
            debug!("cannot notify systemd: {err}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_at_half_the_watchdog_timeout() {
        assert_eq!(period(Some(Duration::from_secs(10))), Duration::from_secs(5));
        assert_eq!(period(Some(Duration::from_millis(50))), MIN_PERIOD);
        assert_eq!(period(None), STATUS_EVERY);
    }

    #[test]
    fn status_says_what_runs_and_waits() {
        assert_eq!(status_line(false, 2, 3), "3 running, 2 waiting");
        assert_eq!(status_line(true, 0, 1), "draining: 1 running, 0 waiting");
    }
}
