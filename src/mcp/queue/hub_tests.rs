//! The hand-out loop with a real SQLite store: fairness, cancellation, timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hub::{PollOutcome, Queue, QueueConfig};
use crate::store::{SqliteStore, TaskState};

fn queue(dir: &tempfile::TempDir, poll_timeout: Duration) -> Arc<Queue> {
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let config = QueueConfig { poll_timeout, ..QueueConfig::default() };
    Queue::start(store, config, CancellationToken::new())
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn waiting_polls_are_served_in_the_order_they_started() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, Duration::from_secs(20));
    let mut handles = Vec::new();
    for _ in 0..3 {
        let w = q.create_worker().await.unwrap();
        let q2 = Arc::clone(&q);
        let w2 = w.clone();
        handles.push((w, tokio::spawn(async move { q2.poll(&w2, std::future::pending()).await.unwrap() })));
        settle().await;
    }
    let ids = q.enqueue(vec!["1".into(), "2".into(), "3".into()]).await.unwrap();
    for ((w, h), id) in handles.into_iter().zip(&ids) {
        match h.await.unwrap() {
            PollOutcome::Task(t) => assert_eq!((&t.id, t.owner.as_deref()), (id, Some(w.as_str()))),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_cancelled_poll_takes_nothing_and_the_next_one_gets_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, Duration::from_secs(20));
    let w1 = q.create_worker().await.unwrap();
    let w2 = q.create_worker().await.unwrap();
    let cancel = CancellationToken::new();
    let (q1, c1, id1) = (Arc::clone(&q), cancel.clone(), w1.clone());
    let first = tokio::spawn(async move { q1.poll(&id1, c1.cancelled_owned()).await.unwrap() });
    settle().await;
    let (q2, id2) = (Arc::clone(&q), w2.clone());
    let second = tokio::spawn(async move { q2.poll(&id2, std::future::pending()).await.unwrap() });
    settle().await;
    cancel.cancel();
    assert!(matches!(first.await.unwrap(), PollOutcome::Cancelled));
    let ids = q.enqueue(vec!["x".into()]).await.unwrap();
    match second.await.unwrap() {
        PollOutcome::Task(t) => assert_eq!((t.id.as_str(), t.attempts), (ids[0].as_str(), 1)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancelling_at_the_moment_of_delivery_never_loses_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, Duration::from_secs(20));
    let w = q.create_worker().await.unwrap();
    let mut delivered = 0;
    for i in 0..40 {
        let cancel = CancellationToken::new();
        let (q1, c1, id) = (Arc::clone(&q), cancel.clone(), w.clone());
        let poll = tokio::spawn(async move { q1.poll(&id, c1.cancelled_owned()).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(2)).await;
        let enqueue = q.enqueue(vec![format!("race {i}")]);
        let (_, outcome) = tokio::join!(async { enqueue.await.unwrap() }, async {
            tokio::time::sleep(Duration::from_micros(50 * (i % 10))).await;
            cancel.cancel();
            poll.await.unwrap()
        });
        if matches!(outcome, PollOutcome::Task(_)) {
            delivered += 1;
        }
    }
    settle().await;
    let all = q.store().tasks(None, 100).await.unwrap();
    let leased = all.iter().filter(|t| t.state == TaskState::Leased).count();
    assert_eq!(leased, delivered, "every leased task reached its poll; the rest are queued");
    assert!(all.iter().filter(|t| t.state == TaskState::Queued).all(|t| t.attempts == 0));
}

#[tokio::test]
async fn an_idle_poll_ends_after_the_timeout_and_an_unknown_worker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir, Duration::from_millis(200));
    let w = q.create_worker().await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(q.poll(&w, std::future::pending()).await.unwrap(), PollOutcome::Idle));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(q.poll("worker_1_nobodyxyz", std::future::pending()).await.unwrap(), PollOutcome::UnknownWorker));
}
