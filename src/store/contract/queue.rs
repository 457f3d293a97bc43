//! The contract of [`QueueStore`]: FIFO, atomic claims, lease owners, expiry, changes.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Harness, ms, prompts, soon};
use crate::store::{Clock, QueueStore, SubmitOutcome, SweepReport, TaskState};

pub async fn claims_oldest_first_and_each_task_once(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let ids = store.enqueue(&prompts(&["a", "b"])).await.unwrap();
    let w = store.create_worker(ms(99)).await.unwrap();
    clock.set(2);
    let first = store.claim(&w, ms(48)).await.unwrap().unwrap();
    assert_eq!((first.id.as_str(), first.prompt.as_str(), first.attempts), (ids[0].as_str(), "a", 1));
    assert_eq!((first.state, first.lease_expires_ms), (TaskState::Leased, Some(50)));
    assert_eq!(first.owner.as_deref(), Some(w.as_str()));
    assert_eq!(first.updated_ms, 2);
    // The answer is the task as stored after the claim, every field.
    assert_eq!(store.task(&first.id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(store.claim(&w, ms(48)).await.unwrap().unwrap().id, ids[1]);
    assert!(store.claim(&w, ms(48)).await.unwrap().is_none());
    assert!(store.enqueue(&[]).await.unwrap().is_empty());
}

pub async fn submit_checks_owner_and_state(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let ids = store.enqueue(&prompts(&["a", "b"])).await.unwrap();
    let w1 = store.create_worker(ms(99)).await.unwrap();
    let w2 = store.create_worker(ms(99)).await.unwrap();
    let t = store.claim(&w1, ms(48)).await.unwrap().unwrap();
    assert_eq!(store.submit(&w2, &t.id, "x").await.unwrap(), SubmitOutcome::NotOwner);
    assert_eq!(store.submit("worker_1_aaaaaaaaa", &t.id, "x").await.unwrap(), SubmitOutcome::UnknownWorker);
    assert_eq!(store.submit(&w1, "task_1_aaaaaaaaa", "x").await.unwrap(), SubmitOutcome::UnknownTask);
    // never handed out
    assert_eq!(store.submit(&w1, &ids[1], "x").await.unwrap(), SubmitOutcome::NotOwner);
    assert_eq!(store.submit(&w1, &t.id, "answer").await.unwrap(), SubmitOutcome::Accepted);
    let again = store.submit(&w1, &t.id, "again").await.unwrap();
    assert_eq!(again, SubmitOutcome::AlreadyDone { by: Some(w1.clone()) });
    let done = store.task(&t.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.response.as_deref()), (TaskState::Done, Some("answer")));
    assert_eq!(store.task(&ids[1]).await.unwrap().unwrap().state, TaskState::Queued);
    assert!(store.task("task_1_nothinghr").await.unwrap().is_none());
}

pub async fn expired_lease_is_requeued_then_dead_lettered(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let ids = store.enqueue(&prompts(&["a"])).await.unwrap();
    let w = store.create_worker(ms(999)).await.unwrap();
    clock.set(10);
    store.claim(&w, ms(10)).await.unwrap().unwrap();
    clock.set(19);
    assert_eq!(store.sweep(2).await.unwrap(), SweepReport::default());
    clock.set(20);
    assert_eq!(store.sweep(2).await.unwrap(), SweepReport { requeued: 1, ..Default::default() });
    clock.set(21);
    let again = store.claim(&w, ms(9)).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (ids[0].as_str(), 2));
    clock.set(31);
    assert_eq!(store.sweep(2).await.unwrap(), SweepReport { dead: 1, ..Default::default() });
    let dead = store.task(&ids[0]).await.unwrap().unwrap();
    assert_eq!(dead.state, TaskState::Dead);
    let reason = dead.dead_reason.unwrap();
    assert!(reason.contains("lease expired after 2 attempt(s)") && reason.contains(&w), "{reason}");
    assert_eq!(store.submit(&w, &ids[0], "late").await.unwrap(), SubmitOutcome::Dead);
    assert!(store.claim(&w, ms(9)).await.unwrap().is_none());
}

/// One task, leased by `w1` until 5, then queued again by the sweep at 6; `w2` is registered too.
/// Returns the store, the task id, `w1` and `w2`.
async fn lease_then_requeue<H: Harness>(h: &H) -> (H::Store, String, String, String) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let ids = store.enqueue(&prompts(&["a"])).await.unwrap();
    let w1 = store.create_worker(ms(999)).await.unwrap();
    let w2 = store.create_worker(ms(999)).await.unwrap();
    clock.set(2);
    store.claim(&w1, ms(3)).await.unwrap().unwrap();
    clock.set(6);
    assert_eq!(store.sweep(5).await.unwrap().requeued, 1);
    (store, ids[0].clone(), w1, w2)
}

pub async fn late_submit_by_last_owner_is_accepted_while_nobody_else_has_it(h: &impl Harness) {
    let (store, id, w1, w2) = lease_then_requeue(h).await;
    let ids = [id];
    assert_eq!(store.submit(&w1, &ids[0], "late").await.unwrap(), SubmitOutcome::Accepted);
    assert!(store.claim(&w2, ms(12)).await.unwrap().is_none());
}

pub async fn requeued_task_taken_by_another_worker_cannot_be_submitted_by_the_first(h: &impl Harness) {
    let (store, id, w1, w2) = lease_then_requeue(h).await;
    let ids = [id];
    store.claim(&w2, ms(40)).await.unwrap().unwrap();
    assert_eq!(store.submit(&w1, &ids[0], "stale").await.unwrap(), SubmitOutcome::NotOwner);
    assert_eq!(store.submit(&w2, &ids[0], "fresh").await.unwrap(), SubmitOutcome::Accepted);
    assert_eq!(store.task(&ids[0]).await.unwrap().unwrap().response.as_deref(), Some("fresh"));
}

pub async fn release_undoes_a_claim_without_counting_it(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let ids = store.enqueue(&prompts(&["a", "b"])).await.unwrap();
    let w = store.create_worker(ms(99)).await.unwrap();
    let t = store.claim(&w, ms(48)).await.unwrap().unwrap();
    assert!(!store.release(&t.id, "worker_1_zzzzzzzzz").await.unwrap());
    assert!(store.release(&t.id, &w).await.unwrap());
    assert!(!store.release(&t.id, &w).await.unwrap());
    let back = store.claim(&w, ms(46)).await.unwrap().unwrap();
    assert_eq!((back.id.as_str(), back.attempts), (ids[0].as_str(), 1), "released task keeps its place");
}

pub async fn inactive_workers_are_removed_and_their_leases_released(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    store.enqueue(&prompts(&["a"])).await.unwrap();
    let idle = store.create_worker(ms(9)).await.unwrap();
    let busy = store.create_worker(ms(9)).await.unwrap();
    clock.set(5);
    assert!(store.touch_worker(&busy, ms(95)).await.unwrap());
    clock.set(50);
    assert!(store.any_active_worker().await.unwrap());
    clock.set(11);
    assert_eq!(store.sweep(3).await.unwrap().workers_removed, 1);
    clock.set(12);
    assert!(!store.touch_worker(&idle, ms(88)).await.unwrap(), "removed for good");
    assert_eq!(store.submit(&idle, "task_1_aaaaaaaaa", "x").await.unwrap(), SubmitOutcome::UnknownWorker);
    // A worker whose active time ends while it holds a lease: the task is queued again.
    clock.set(20);
    let t = store.claim(&busy, ms(10)).await.unwrap().unwrap();
    clock.set(101);
    assert_eq!(store.sweep(3).await.unwrap(), SweepReport { requeued: 1, dead: 0, workers_removed: 1 });
    assert_eq!(store.task(&t.id).await.unwrap().unwrap().state, TaskState::Queued);
    assert!(!store.any_active_worker().await.unwrap());
    assert_eq!(store.counts().await.unwrap().workers, 0);
}

pub async fn a_claim_keeps_its_worker_active_through_the_lease(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    store.enqueue(&prompts(&["a"])).await.unwrap();
    let w = store.create_worker(ms(9)).await.unwrap();
    clock.set(2);
    store.claim(&w, ms(498)).await.unwrap().unwrap();
    clock.set(100);
    assert_eq!(store.sweep(3).await.unwrap(), SweepReport::default());
}

pub async fn touch_and_claim_touches_then_claims_for_a_known_worker_only(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    assert_eq!(store.touch_and_claim("worker_0_none", ms(9), ms(9)).await.unwrap(), None, "unknown worker");
    let w = store.create_worker(ms(9)).await.unwrap();
    clock.set(2);
    assert_eq!(store.touch_and_claim(&w, ms(98), ms(9)).await.unwrap(), Some(None), "no task yet");
    // The touch held: active until 100, so a sweep at 50 keeps the worker.
    clock.set(50);
    assert_eq!(store.sweep(3).await.unwrap(), SweepReport::default());
    let ids = store.enqueue(&prompts(&["a"])).await.unwrap();
    assert!(store.touch_and_claim("worker_0_none", ms(9), ms(9)).await.unwrap().is_none(), "claims nothing");
    let task = store.touch_and_claim(&w, ms(1), ms(500)).await.unwrap().unwrap().unwrap();
    assert_eq!((task.id.as_str(), task.attempts, task.lease_expires_ms), (ids[0].as_str(), 1, Some(550)));
    assert_eq!(task.owner.as_deref(), Some(w.as_str()));
    // Active through the lease, as after `claim`.
    clock.set(400);
    assert_eq!(store.sweep(3).await.unwrap(), SweepReport::default());
}

pub async fn data_survives_reopening(h: &impl Harness) {
    let clock = Clock::manual(1);
    let (ids, w) = {
        let store = h.open(&clock).await;
        let ids = store.enqueue(&prompts(&["a", "b", "c"])).await.unwrap();
        let w = store.create_worker(ms(999)).await.unwrap();
        clock.set(2);
        store.claim(&w, ms(498)).await.unwrap().unwrap();
        let t = store.claim(&w, ms(498)).await.unwrap().unwrap();
        store.submit(&w, &t.id, "done b").await.unwrap();
        (ids, w)
    };
    let store = h.open(&clock).await;
    let all = store.tasks(None, 100).await.unwrap();
    let states: Vec<_> = all.iter().map(|t| t.state).collect();
    assert_eq!(states, [TaskState::Leased, TaskState::Done, TaskState::Queued]);
    assert_eq!(all[1].response.as_deref(), Some("done b"));
    assert_eq!(store.tasks(Some(TaskState::Queued), 100).await.unwrap()[0].id, ids[2]);
    assert_eq!(store.tasks(None, 1).await.unwrap().len(), 1);
    assert!(store.touch_worker(&w, ms(996)).await.unwrap());
    let c = store.counts().await.unwrap();
    assert_eq!((c.queued, c.leased, c.done, c.dead, c.workers), (1, 1, 1, 0, 1));
}

pub async fn concurrent_claims_from_many_handles_never_share_a_task(h: &impl Harness) {
    let clock = Clock::manual(1);
    let seed = h.open(&clock).await;
    let n = 400;
    let all: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    seed.enqueue(&all).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..4 {
        let store = Arc::new(h.open(&clock).await);
        for j in 0..3 {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                let w = store.create_worker(ms(1 << 40)).await.unwrap();
                let mut got = Vec::new();
                while let Some(t) = store.claim(&w, ms(1_000)).await.unwrap() {
                    let outcome = store.submit(&w, &t.id, &format!("{i}/{j}")).await.unwrap();
                    assert_eq!(outcome, SubmitOutcome::Accepted);
                    got.push(t.prompt);
                }
                got
            }));
        }
    }
    let mut seen = HashSet::new();
    for handle in handles {
        let got = handle.await.unwrap();
        let mut order: Vec<usize> = got.iter().map(|p| p[1..].parse().unwrap()).collect();
        let claimed = order.clone();
        order.sort_unstable();
        assert_eq!(claimed, order, "one claimer gets tasks oldest first");
        for prompt in got {
            assert!(seen.insert(prompt), "a task was handed out twice");
        }
    }
    assert_eq!(seen.len(), n);
    assert_eq!(seed.counts().await.unwrap().done, n as u64);
}

pub async fn concurrent_writes_on_one_handle_each_get_their_own_answer(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = Arc::new(h.open(&clock).await);
    let ids = store.enqueue(&(0..64).map(|i| format!("p{i}")).collect::<Vec<_>>()).await.unwrap();
    let writes = (0..64).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let w = store.create_worker(ms(999)).await.unwrap();
            let t = store.claim(&w, ms(999)).await.unwrap().unwrap();
            // Wrong owner, then right one: each answer is its own, in one batch or not.
            let other = store.submit("worker_1_nobodyxyz", &t.id, "x").await.unwrap();
            let mine = store.submit(&w, &t.id, &format!("answer to {}", t.prompt)).await.unwrap();
            (t.id, other, mine)
        })
    });
    let mut seen = HashSet::new();
    for write in writes.collect::<Vec<_>>() {
        let (id, other, mine) = write.await.unwrap();
        assert_eq!((other, mine), (SubmitOutcome::UnknownWorker, SubmitOutcome::Accepted));
        assert!(seen.insert(id));
    }
    for (i, id) in ids.iter().enumerate() {
        let task = store.task(id).await.unwrap().unwrap();
        assert_eq!(task.response, Some(format!("answer to p{i}")), "answered, durably, as its caller was told");
    }
}

pub async fn retention_removes_only_finished_tasks_older_than_kept(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let ids = store.enqueue(&prompts(&["done early", "dead", "done late", "queued", "leased"])).await.unwrap();
    let w = store.create_worker(ms(1 << 30)).await.unwrap();
    clock.set(10);
    let t = store.claim(&w, ms(5)).await.unwrap().unwrap();
    store.submit(&w, &t.id, "a").await.unwrap();
    clock.set(20);
    store.claim(&w, ms(1)).await.unwrap().unwrap();
    clock.set(21);
    assert_eq!(store.sweep(1).await.unwrap().dead, 1);
    clock.set(30);
    let t = store.claim(&w, ms(1 << 20)).await.unwrap().unwrap();
    store.submit(&w, &t.id, "c").await.unwrap();
    store.claim(&w, ms(1 << 20)).await.unwrap().unwrap(); // "queued" is leased now ...
    clock.set(1_000);
    // Kept for 975 ms: only what finished before 25 goes (done at 10, dead at 21).
    assert_eq!(store.purge_tasks(ms(975)).await.unwrap(), 2);
    let left: Vec<String> = store.tasks(None, 10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(left, ids[2..]);
    assert_eq!(store.purge_tasks(ms(975)).await.unwrap(), 0);
}

pub async fn task_changes_wake_on_enqueue_release_requeue_and_other_handles(h: &impl Harness) {
    let clock = Clock::manual(1);
    let store = h.open(&clock).await;
    let other = h.open(&clock).await;
    let mut changes = store.task_changes();
    store.enqueue(&prompts(&["own"])).await.unwrap();
    soon("own enqueue", changes.changed()).await;
    let w = store.create_worker(ms(999)).await.unwrap();
    let t = store.claim(&w, ms(10)).await.unwrap().unwrap();
    assert!(store.release(&t.id, &w).await.unwrap());
    soon("own release", changes.changed()).await;
    store.claim(&w, ms(10)).await.unwrap().unwrap();
    clock.set(20);
    assert_eq!(store.sweep(5).await.unwrap().requeued, 1);
    soon("own requeue", changes.changed()).await;
    // Another handle (another process, another daemon) writes while this one waits.
    let waiting = tokio::spawn(async move {
        changes.changed().await;
        changes
    });
    other.enqueue(&prompts(&["elsewhere"])).await.unwrap();
    let mut changes = soon("another handle's enqueue", waiting).await.unwrap();
    // ... and before this one waits: not lost either.
    other.enqueue(&prompts(&["elsewhere again"])).await.unwrap();
    soon("an enqueue made before the wait", changes.changed()).await;
}
