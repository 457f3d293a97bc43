//! The account-wide rate-limit breaker: one worker that meets a rate limit pauses the starting of
//! new workers for every waiting action, instead of each finding out on its own.
//!
//! Workers report [`Signal`]s (read from structured events: `worker/signals.rs`). A rate limit
//! pauses starts until the time it names; an overload (529) pauses them for its short backoff
//! and also lowers concurrency for [`OVERLOAD_WINDOW`] (half the slots are held back). Running
//! workers are never touched. Each pause is one `dispatch_paused` line and, when it is over, one
//! `dispatch_resumed` line (later signals during a pause extend it without new lines).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Event;
use crate::protocol::Output;
use crate::protocol::governance::{DispatchKind, DispatchLine};
use crate::worker::signals::Signal;

/// How long an overload keeps concurrency lowered.
pub const OVERLOAD_WINDOW: Duration = Duration::from_secs(60);

pub struct Breaker {
    state: Mutex<State>,
    /// `true` while starts are allowed.
    open: watch::Sender<bool>,
    out: mpsc::Sender<Event>,
    slots: Arc<Semaphore>,
    max_workers: usize,
    /// Ends the breaker's own tasks (when the pool has finished, or it drains).
    stop: CancellationToken,
    pauses: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    until: Option<Instant>,
    /// The end of the last rate limit (not an overload) that was reported.
    rate_limited_until: Option<Instant>,
    throttled: bool,
}

impl Breaker {
    pub fn new(out: mpsc::Sender<Event>, slots: Arc<Semaphore>, max_workers: usize, stop: CancellationToken) -> Self {
        Self {
            state: Mutex::new(State::default()),
            open: watch::Sender::new(true),
            out,
            slots,
            max_workers,
            stop,
            pauses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one worker's signal (never blocks).
    pub fn report(self: &Arc<Self>, signal: Signal) {
        let (reason, wait) = match signal {
            Signal::RateLimited(wait) => ("rate_limit", wait),
            Signal::Overloaded(wait) => ("overloaded", wait),
        };
        let until = Instant::now() + wait;
        let mut state = self.lock();
        let starts_pause = state.until.is_none();
        if state.until.is_none_or(|held| held < until) {
            state.until = Some(until);
        }
        if matches!(signal, Signal::RateLimited(_)) && state.rate_limited_until.is_none_or(|held| held < until) {
            state.rate_limited_until = Some(until);
        }
        let throttle = matches!(signal, Signal::Overloaded(_)) && !state.throttled && self.max_workers > 1;
        state.throttled |= throttle;
        drop(state);
        if starts_pause {
            self.open.send_replace(false);
            self.pauses.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(self.clone().hold(reason, wait));
        }
        if throttle {
            tokio::spawn(self.clone().throttle());
        }
    }

    /// Keeps starts paused until the (possibly extended) end of the pause; says so on both ends.
    async fn hold(self: Arc<Self>, reason: &'static str, wait: Duration) {
        let until_ms = SystemTime::now()
            .checked_add(wait)
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        info!(reason, ms = wait.as_millis(), "dispatch paused");
        let paused = DispatchLine {
            kind: DispatchKind::DispatchPaused,
            reason: reason.to_owned(),
            until: until_ms,
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        };
        self.emit(paused).await;
        loop {
            let Some(until) = self.lock().until else { break };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = self.stop.cancelled() => return,
            }
            let mut state = self.lock();
            if state.until.is_some_and(|held| held <= Instant::now()) {
                state.until = None;
                break;
            }
        }
        self.open.send_replace(true);
        info!(reason, "dispatch resumed");
        self.emit(DispatchLine {
            kind: DispatchKind::DispatchResumed,
            reason: reason.to_owned(),
            until: None,
            retry_after_ms: None,
        })
        .await;
    }

    /// Holds back half the slots (as running workers free them) for the overload window.
    async fn throttle(self: Arc<Self>) {
        let held = u32::try_from(self.max_workers / 2).unwrap_or(u32::MAX);
        info!(slots = held, secs = OVERLOAD_WINDOW.as_secs(), "overloaded: concurrency lowered");
        let end = Instant::now() + OVERLOAD_WINDOW;
        tokio::select! {
            permits = self.slots.clone().acquire_many_owned(held) => {
                if let Ok(permits) = permits {
                    tokio::select! {
                        () = tokio::time::sleep_until(end) => {}
                        () = self.stop.cancelled() => {}
                    }
                    drop(permits);
                }
            }
            () = tokio::time::sleep_until(end) => {}
            () = self.stop.cancelled() => {}
        }
        self.lock().throttled = false;
    }

    async fn emit(&self, line: DispatchLine) {
        let _ = self.out.send(Event::Output(Output::Dispatch(line))).await;
    }

    /// Returns once starts are allowed.
    pub async fn wait_open(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }

    /// How long the current pause still lasts (`None`: not paused).
    pub fn paused_for(&self) -> Option<Duration> {
        self.lock().until.map(|until| until.saturating_duration_since(Instant::now()))
    }

    /// How long the account's rate limit (not an overload) still lasts, if one was reported.
    pub fn rate_limited_for(&self) -> Option<Duration> {
        let until = self.lock().rate_limited_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// How many pauses there were.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(max_workers: usize) -> (Arc<Breaker>, mpsc::Receiver<Event>, Arc<Semaphore>) {
        let (tx, rx) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(max_workers));
        (Arc::new(Breaker::new(tx, slots.clone(), max_workers, CancellationToken::new())), rx, slots)
    }

    async fn line(rx: &mut mpsc::Receiver<Event>) -> DispatchLine {
        match rx.recv().await {
            Some(Event::Output(Output::Dispatch(line))) => line,
            other => panic!("expected a dispatch line, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_pauses_starts_until_its_time_once_even_when_extended() {
        let (breaker, mut rx, _) = breaker(4);
        let t0 = Instant::now();
        breaker.report(Signal::RateLimited(Duration::from_secs(3)));
        let paused = line(&mut rx).await;
        assert_eq!(
            (paused.kind, paused.reason.as_str(), paused.retry_after_ms),
            (DispatchKind::DispatchPaused, "rate_limit", Some(3000))
        );
        // A second worker meets the limit a second later, with a later reset: the pause grows.
        tokio::time::sleep(Duration::from_secs(1)).await;
        breaker.report(Signal::RateLimited(Duration::from_secs(4)));
        breaker.wait_open().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        let resumed = line(&mut rx).await;
        assert_eq!(resumed.kind, DispatchKind::DispatchResumed);
        assert!(rx.try_recv().is_err(), "one paused line and one resumed line");
        assert_eq!(breaker.pauses(), 1);
        assert_eq!(breaker.paused_for(), None);
        assert_eq!(breaker.rate_limited_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overload_backs_off_briefly_and_lowers_concurrency_for_a_while() {
        let (breaker, mut rx, slots) = breaker(4);
        breaker.report(Signal::Overloaded(Duration::from_millis(500)));
        assert_eq!(line(&mut rx).await.reason, "overloaded");
        assert_eq!(breaker.rate_limited_for(), None, "an overload is no rate limit");
        breaker.wait_open().await;
        tokio::task::yield_now().await;
        assert_eq!(slots.available_permits(), 2, "half the slots are held back");
        tokio::time::sleep(OVERLOAD_WINDOW).await;
        tokio::task::yield_now().await;
        assert_eq!(slots.available_permits(), 4, "and given back after the window");
    }
}
