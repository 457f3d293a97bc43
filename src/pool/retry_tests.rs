//! Retries through the pool, with scripted runners and a paused clock: how many attempts, the
//! kinds of the failed ones, the backoff between them, and still one result per action.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{next_result, settings};
use crate::pool::{Event, Pool, Runner, Stopping};
use crate::protocol::parse::{Item, Limits, parse_line};
use crate::protocol::{ErrorKind, Output, WorkerError, WorkerResult};
use crate::worker::{Job, Stopper};

/// Fails with `kind` (retryable as given) `failures` times, then succeeds; counts its runs.
struct Flaky {
    failures: u32,
    kind: ErrorKind,
    retryable: bool,
    runs: Arc<AtomicU32>,
}

impl Runner for Flaky {
    fn run(&self, job: Job, _stopper: Stopper) -> BoxFuture<'static, WorkerResult> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        let (kind, retryable, failures) = (self.kind, self.retryable, self.failures);
        Box::pin(async move {
            let action = &job.action;
            let mut result =
                WorkerResult::failure(&action.task_id, action.origin, WorkerError::new(kind, "no", retryable));
            result.cost_usd = Some(0.01);
            if run >= failures {
                (result.success, result.error, result.result) = (true, None, "done".into());
            }
            result
        })
    }
}

/// Runs one action through a pool of `slots` with `runner`; its one result and how long it took.
async fn run_action(runner: Box<dyn Runner>, slots: usize, action: serde_json::Value) -> (WorkerResult, Duration) {
    run_action_after(runner, slots, action, Vec::new()).await
}

/// Like [`run_action`], for an action whose earlier attempts (before a restart) failed with `before`.
async fn run_action_after(
    runner: Box<dyn Runner>,
    slots: usize,
    action: serde_json::Value,
    before: Vec<ErrorKind>,
) -> (WorkerResult, Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let stopping = Stopping::immediate(&CancellationToken::new(), &CancellationToken::new());
    let (pool, finished) = Pool::start_with(settings(slots), runner, tx, stopping);
    let limits = Limits { max_timeout: Duration::from_secs(60), governance: Default::default() };
    let started = Instant::now();
    for item in parse_line(&json!({ "actions": [action] }).to_string(), None, limits).unwrap() {
        match item {
            Item::Spawn(action) => pool.enqueue(pool.admit(action).unwrap().after_failures(before.clone())).await,
            other => pool.submit(other).await,
        }
    }
    let result = next_result(&mut rx).await;
    let took = started.elapsed();
    drop(pool);
    finished.wait().await;
    // Exactly one result per action (dispatch_paused/resumed lines may follow it).
    while let Ok(event) = rx.try_recv() {
        assert!(!matches!(event, Event::Output(Output::Result(_))), "a second result: {event:?}");
    }
    (result, took)
}

async fn run_one(runner: Flaky, retries: u32) -> (WorkerResult, Duration) {
    let action = json!({"type": "spawn_worker", "taskId": "r", "task": "t", "servers": ["fs"], "retries": retries});
    run_action(Box::new(runner), 1, action).await
}

fn flaky(failures: u32, kind: ErrorKind, retryable: bool) -> (Flaky, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    (Flaky { failures, kind, retryable, runs: runs.clone() }, runs)
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_run_again_with_growing_waits() {
    let (runner, runs) = flaky(2, ErrorKind::RateLimited, true);
    let (result, took) = run_one(runner, 2).await;
    assert!(result.success, "{result:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(result.governance.attempts, Some(3));
    assert_eq!(result.governance.failed_attempts, [ErrorKind::RateLimited, ErrorKind::RateLimited]);
    assert!((result.cost_usd.unwrap() - 0.03).abs() < 1e-9, "the cost of every attempt: {:?}", result.cost_usd);
    // 100 ms, then 200 ms, each with up to half again of jitter.
    assert!(took >= Duration::from_millis(300) && took <= Duration::from_millis(450), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_and_the_last_failure_stands() {
    let (runner, runs) = flaky(5, ErrorKind::IdleTimeout, true);
    let (result, _) = run_one(runner, 1).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(result.error.map(|e| e.kind), Some(ErrorKind::IdleTimeout));
    assert_eq!(
        (result.governance.attempts, result.governance.failed_attempts),
        (Some(2), vec![ErrorKind::IdleTimeout])
    );
}

#[tokio::test(start_paused = true)]
async fn deterministic_failures_are_never_retried() {
    for (kind, retryable) in
        [(ErrorKind::ClaudeError, false), (ErrorKind::BudgetExceeded, false), (ErrorKind::Timeout, true)]
    {
        let (runner, runs) = flaky(1, kind, retryable);
        let (result, _) = run_one(runner, 3).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{kind:?}");
        assert_eq!(result.governance.attempts, Some(1), "{kind:?}");
        assert!(result.governance.failed_attempts.is_empty());
    }
    // Without `retries`, nothing is added to the result.
    let (runner, runs) = flaky(1, ErrorKind::RateLimited, true);
    let (result, _) = run_one(runner, 0).await;
    assert_eq!((runs.load(Ordering::SeqCst), result.governance.attempts), (1, None));
}

/// Meets the rate limit (and says so, as a worker's stream would) on its first run only.
struct LimitedOnce(Arc<AtomicU32>);

impl Runner for LimitedOnce {
    fn run(&self, job: Job, stopper: Stopper) -> BoxFuture<'static, WorkerResult> {
        let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            let action = &job.action;
            let error = WorkerError::new(ErrorKind::RateLimited, "API Error: 429", true);
            let mut result = WorkerResult::failure(&action.task_id, action.origin, error);
            if first {
                let sink = stopper.signals.expect("the breaker listens");
                (sink.0)(crate::worker::signals::Signal::RateLimited(Duration::from_secs(5)));
            } else {
                (result.success, result.error) = (true, None);
            }
            result
        })
    }
}

async fn limited_once(timeout_ms: u64) -> (WorkerResult, Duration, u32) {
    let runs = Arc::new(AtomicU32::new(0));
    let action = json!({"type": "spawn_worker", "taskId": "l", "task": "t", "servers": ["fs"], "timeout": timeout_ms});
    let (result, took) = run_action(Box::new(LimitedOnce(runs.clone())), 2, action).await;
    (result, took, runs.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_run_failed_by_the_rate_limit_waits_for_the_breaker_without_using_a_retry() {
    let (result, took, runs) = limited_once(60_000).await;
    assert!(result.success, "{result:?}");
    assert_eq!(runs, 2);
    assert_eq!(
        (result.governance.attempts, result.governance.failed_attempts.as_slice()),
        (Some(2), &[ErrorKind::RateLimited][..])
    );
    assert!(took >= Duration::from_secs(5), "it started again only when the pause was over: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn past_its_deadline_the_rate_limited_result_stands_with_retry_after() {
    let (result, _, runs) = limited_once(2_000).await;
    assert_eq!(runs, 1);
    let error = result.error.expect("rate_limited");
    assert_eq!((error.kind, error.retryable), (ErrorKind::RateLimited, true));
    let after = error.detail.retry_after_ms.expect("retryAfterMs");
    assert!((4_000..=5_000).contains(&after), "{after}");
}

#[tokio::test(start_paused = true)]
async fn attempts_failed_before_a_restart_count_as_used_retries() {
    let action = |retries: u32| json!({"type": "spawn_worker", "taskId": "i", "task": "t", "servers": ["fs"], "retries": retries});
    // One retry, used by the interruption: a retryable failure now stands.
    let (runner, runs) = flaky(1, ErrorKind::IdleTimeout, true);
    let (result, _) = run_action_after(Box::new(runner), 1, action(1), vec![ErrorKind::Interrupted]).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "no retry left");
    assert_eq!(result.error.map(|e| e.kind), Some(ErrorKind::IdleTimeout));
    assert_eq!(
        (result.governance.attempts, result.governance.failed_attempts),
        (Some(2), vec![ErrorKind::Interrupted])
    );
    // Two retries: one is left for the failure of this run.
    let (runner, runs) = flaky(1, ErrorKind::RateLimited, true);
    let (result, _) = run_action_after(Box::new(runner), 1, action(2), vec![ErrorKind::Interrupted]).await;
    assert!(result.success, "{result:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(result.governance.attempts, Some(3));
    assert_eq!(result.governance.failed_attempts, [ErrorKind::Interrupted, ErrorKind::RateLimited]);
    assert!((result.cost_usd.unwrap() - 0.02).abs() < 1e-9, "the cost of this run's attempts: {:?}", result.cost_usd);
    // A success at once still says it was the second attempt.
    let (runner, runs) = flaky(0, ErrorKind::RateLimited, true);
    let (result, _) = run_action_after(Box::new(runner), 1, action(1), vec![ErrorKind::Interrupted]).await;
    assert!(result.success && runs.load(Ordering::SeqCst) == 1, "{result:?}");
    assert_eq!(
        (result.governance.attempts, result.governance.failed_attempts),
        (Some(2), vec![ErrorKind::Interrupted])
    );
}
