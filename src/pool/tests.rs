//! The pool with scripted runners (no child processes): one result per action on every
//! path, slots and task ids given back, FIFO order.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Event, Pool, Runner, Stopping};
use crate::protocol::parse::{Item, Limits, parse_line};
use crate::protocol::{ErrorKind, Output, WorkerResult};
use crate::settings::DaemonSettings;
use crate::worker::{Job, Stopper};

/// What a scripted runner does with a job, by its task text.
struct Scripted;

impl Runner for Scripted {
    fn run(&self, job: Job, stopper: Stopper) -> BoxFuture<'static, WorkerResult> {
        Box::pin(async move {
            let action = &job.action;
            match action.task.as_str() {
                "panic" => panic!("scripted panic in {}", action.task_id),
                "wait" => {
                    stopper.cancel.cancelled().await;
                    WorkerResult::failure(
                        &action.task_id,
                        action.origin,
                        crate::protocol::WorkerError::new(ErrorKind::Cancelled, "cancelled", false),
                    )
                }
                _ => {
                    let mut result = WorkerResult::failure(
                        &action.task_id,
                        action.origin,
                        crate::protocol::WorkerError::new(ErrorKind::ClaudeError, "x", false),
                    );
                    result.success = true;
                    result.error = None;
                    result.result = format!("did {}", action.task);
                    result
                }
            }
        })
    }
}

fn settings(max_workers: usize) -> Arc<DaemonSettings> {
    let dir = tempfile::tempdir().unwrap().keep();
    let registry =
        crate::registry::Registry::from_value(json!({"mcpServers": {"fs": {"command": "true"}}}), &dir).unwrap();
    let cli = crate::worker::command::CliSettings {
        claude: "/bin/false".into(),
        root: dir.clone(),
        workspace: dir.clone(),
        profiles: dir.join("profiles"),
        data_dir: dir.clone(),
        tools_bin: None,
        api_retries: 0,
        mcp_connect_timeout: Duration::from_secs(1),
        bare: true,
        pass_env: vec![],
    };
    Arc::new(DaemonSettings {
        worker: Arc::new(crate::worker::WorkerSettings {
            cli,
            kill_grace: Duration::from_millis(10),
            temp_root: None,
            daemon_env: Default::default(),
            progress: None,
        }),
        registry: Arc::new(registry),
        registry_path: dir.join("mcp_servers.json"),
        profiles: dir.join("profiles"),
        limits: Limits { max_timeout: Duration::from_secs(60), governance: Default::default() },
        max_workers,
        max_line_bytes: 1 << 20,
        retry_backoff: Duration::from_millis(100),
        rate_limit_breaker: true,
        budget: None,
        scratch: Arc::new(crate::scratch::Scratch::create().unwrap()),
    })
}

fn items(actions: &[(&str, &str)]) -> Vec<Item> {
    let actions: Vec<_> = actions
        .iter()
        .map(|(id, task)| json!({"type": "spawn_worker", "taskId": id, "task": task, "servers": ["fs"]}))
        .collect();
    parse_line(
        &json!({ "actions": actions }).to_string(),
        Some(1),
        Limits { max_timeout: Duration::from_secs(60), governance: Default::default() },
    )
    .unwrap()
}

/// The next result, skipping starts (whose acks are dropped: the worker goes on).
async fn next_result(rx: &mut mpsc::Receiver<Event>) -> WorkerResult {
    loop {
        match rx.recv().await.expect("the pool closed its sink") {
            Event::Output(Output::Result(result)) => return *result,
            Event::Output(_) | Event::Started { .. } | Event::Attempt(_) | Event::Budget(_) => {}
        }
    }
}

/// A pool of one slot with `runner`, stopping at once when `shutdown` fires; and its event sink.
fn start(runner: Box<dyn Runner>, shutdown: &CancellationToken) -> (Pool, super::Finished, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(64);
    let (pool, finished) =
        Pool::start_with(settings(1), runner, tx, Stopping::immediate(shutdown, &CancellationToken::new()));
    (pool, finished, rx)
}

#[tokio::test]
async fn a_panicking_worker_gives_one_internal_error_and_frees_its_slot_and_id() {
    let shutdown = CancellationToken::new();
    let (pool, finished, mut rx) = start(Box::new(Scripted), &shutdown);
    for item in items(&[("p", "panic"), ("q", "ok")]) {
        pool.submit(item).await;
    }
    let first = next_result(&mut rx).await;
    assert_eq!(first.task_id, "p");
    assert!(!first.success);
    let error = first.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::InternalError);
    assert!(error.retryable);
    assert!(error.message.contains("scripted panic in p"), "{}", error.message);
    // The one slot was given back: the next action ran.
    let second = next_result(&mut rx).await;
    assert_eq!((second.task_id.as_str(), second.success), ("q", true));
    // The id was given back: it can be used again.
    assert_eq!(pool.unfinished(), 0);
    for item in items(&[("p", "ok")]) {
        pool.submit(item).await;
    }
    let again = next_result(&mut rx).await;
    assert_eq!((again.task_id.as_str(), again.success), ("p", true));
    drop(pool);
    finished.wait().await;
    assert!(rx.try_recv().is_err(), "exactly one result per action");
}

#[tokio::test]
async fn a_dropped_admission_gives_its_id_back_but_not_a_later_ones() {
    let shutdown = CancellationToken::new();
    let (pool, _finished, _rx) = start(Box::new(Scripted), &shutdown);
    let mut it = items(&[("a", "ok")]).into_iter();
    let Some(Item::Spawn(action)) = it.next() else { panic!("expected a spawn") };
    let first = pool.admit(action.clone()).expect("admitted");
    assert!(pool.admit(action.clone()).is_err(), "the id is held");
    drop(first);
    assert_eq!(pool.unfinished(), 0, "dropping the admission gave the id back");
    let second = pool.admit(action).expect("admitted again");
    assert_eq!(pool.unfinished(), 1);
    drop(second);
    assert_eq!(pool.unfinished(), 0);
}

#[tokio::test]
async fn shutdown_answers_running_and_queued_actions_once_each() {
    let shutdown = CancellationToken::new();
    let (pool, finished, mut rx) = start(Box::new(Scripted), &shutdown);
    for item in items(&[("w", "wait"), ("x", "ok"), ("y", "ok")]) {
        pool.submit(item).await;
    }
    // `w` holds the only slot until it is stopped.
    loop {
        if let Some(Event::Started { task_id, .. }) = rx.recv().await {
            assert_eq!(task_id, "w");
            break;
        }
    }
    shutdown.cancel();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let result = next_result(&mut rx).await;
        assert!(!result.success);
        ids.push(result.task_id);
    }
    ids.sort();
    assert_eq!(ids, ["w", "x", "y"]);
    drop(pool);
    finished.wait().await;
    assert!(rx.try_recv().is_err(), "exactly one result per action");
}

/// Counts the jobs it was given.
struct Counting(Arc<std::sync::atomic::AtomicUsize>);

impl Runner for Counting {
    fn run(&self, job: Job, stopper: Stopper) -> BoxFuture<'static, WorkerResult> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Scripted.run(job, stopper)
    }
}

#[tokio::test]
async fn a_start_the_journal_could_not_record_never_runs() {
    let shutdown = CancellationToken::new();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (pool, finished, mut rx) = start(Box::new(Counting(runs.clone())), &shutdown);
    for item in items(&[("a", "ok")]) {
        pool.submit(item).await;
    }
    match rx.recv().await {
        Some(Event::Started { task_id, ack }) => {
            assert_eq!(task_id, "a");
            ack.send(Err("disk full".into())).unwrap();
        }
        other => panic!("expected a start, got {other:?}"),
    }
    let result = next_result(&mut rx).await;
    let error = result.error.expect("an error");
    assert_eq!((error.kind, error.retryable), (ErrorKind::InternalError, true));
    assert!(error.message.contains("disk full"), "{}", error.message);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0, "the worker must not have run");
    drop(pool);
    finished.wait().await;
}

#[path = "retry_tests.rs"]
mod retry_tests;
