//! The SQLite store on a real file in a temporary directory.

use std::collections::HashSet;
use std::sync::Arc;

use super::SqliteStore;
use crate::store::{Store, SubmitOutcome, SweepReport, TaskState};

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    (dir, store)
}

fn prompts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn claims_oldest_first_and_each_task_once() {
    let (_dir, store) = open();
    let ids = store.enqueue(&prompts(&["a", "b"]), 1).unwrap();
    let w = store.create_worker(1, 100).unwrap();
    let first = store.claim(&w, 2, 50).unwrap().unwrap();
    assert_eq!((first.id.as_str(), first.prompt.as_str(), first.attempts), (ids[0].as_str(), "a", 1));
    assert_eq!(first.state, TaskState::Leased);
    assert_eq!(first.owner.as_deref(), Some(w.as_str()));
    assert_eq!(store.claim(&w, 2, 50).unwrap().unwrap().id, ids[1]);
    assert!(store.claim(&w, 2, 50).unwrap().is_none());
}

#[test]
fn submit_checks_owner_and_state() {
    let (_dir, store) = open();
    let ids = store.enqueue(&prompts(&["a", "b"]), 1).unwrap();
    let w1 = store.create_worker(1, 100).unwrap();
    let w2 = store.create_worker(1, 100).unwrap();
    let t = store.claim(&w1, 2, 50).unwrap().unwrap();
    assert_eq!(store.submit(&w2, &t.id, "x", 3).unwrap(), SubmitOutcome::NotOwner);
    assert_eq!(store.submit("worker_1_aaaaaaaaa", &t.id, "x", 3).unwrap(), SubmitOutcome::UnknownWorker);
    assert_eq!(store.submit(&w1, "task_1_aaaaaaaaa", "x", 3).unwrap(), SubmitOutcome::UnknownTask);
    // never handed out
    assert_eq!(store.submit(&w1, &ids[1], "x", 3).unwrap(), SubmitOutcome::NotOwner);
    assert_eq!(store.submit(&w1, &t.id, "answer", 4).unwrap(), SubmitOutcome::Accepted);
    assert_eq!(store.submit(&w1, &t.id, "again", 5).unwrap(), SubmitOutcome::AlreadyDone { by: Some(w1.clone()) });
    let done = store.task(&t.id).unwrap().unwrap();
    assert_eq!((done.state, done.response.as_deref()), (TaskState::Done, Some("answer")));
    assert_eq!(store.task(&ids[1]).unwrap().unwrap().state, TaskState::Queued);
}

#[test]
fn expired_lease_is_requeued_then_dead_lettered() {
    let (_dir, store) = open();
    let ids = store.enqueue(&prompts(&["a"]), 1).unwrap();
    let w = store.create_worker(1, 1_000).unwrap();
    store.claim(&w, 10, 20).unwrap().unwrap();
    assert_eq!(store.sweep(19, 2).unwrap(), SweepReport::default());
    assert_eq!(store.sweep(20, 2).unwrap(), SweepReport { requeued: 1, ..Default::default() });
    let again = store.claim(&w, 21, 30).unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (ids[0].as_str(), 2));
    assert_eq!(store.sweep(31, 2).unwrap(), SweepReport { dead: 1, ..Default::default() });
    let dead = store.task(&ids[0]).unwrap().unwrap();
    assert_eq!(dead.state, TaskState::Dead);
    let reason = dead.dead_reason.unwrap();
    assert!(reason.contains("lease expired after 2 attempt(s)") && reason.contains(&w), "{reason}");
    assert_eq!(store.submit(&w, &ids[0], "late", 32).unwrap(), SubmitOutcome::Dead);
    assert!(store.claim(&w, 33, 40).unwrap().is_none());
}

#[test]
fn late_submit_by_last_owner_is_accepted_while_nobody_else_has_it() {
    let (_dir, store) = open();
    let ids = store.enqueue(&prompts(&["a"]), 1).unwrap();
    let w1 = store.create_worker(1, 1_000).unwrap();
    let w2 = store.create_worker(1, 1_000).unwrap();
    store.claim(&w1, 2, 5).unwrap().unwrap();
    store.sweep(6, 5).unwrap();
    assert_eq!(store.submit(&w1, &ids[0], "late", 7).unwrap(), SubmitOutcome::Accepted);
    assert!(store.claim(&w2, 8, 20).unwrap().is_none());
}

#[test]
fn requeued_task_taken_by_another_worker_cannot_be_submitted_by_the_first() {
    let (_dir, store) = open();
    let ids = store.enqueue(&prompts(&["a"]), 1).unwrap();
    let w1 = store.create_worker(1, 1_000).unwrap();
    let w2 = store.create_worker(1, 1_000).unwrap();
    store.claim(&w1, 2, 5).unwrap().unwrap();
    store.sweep(6, 5).unwrap();
    store.claim(&w2, 7, 50).unwrap().unwrap();
    assert_eq!(store.submit(&w1, &ids[0], "stale", 8).unwrap(), SubmitOutcome::NotOwner);
    assert_eq!(store.submit(&w2, &ids[0], "fresh", 9).unwrap(), SubmitOutcome::Accepted);
    assert_eq!(store.task(&ids[0]).unwrap().unwrap().response.as_deref(), Some("fresh"));
}

#[test]
fn release_undoes_a_claim_without_counting_it() {
    let (_dir, store) = open();
    let ids = store.enqueue(&prompts(&["a", "b"]), 1).unwrap();
    let w = store.create_worker(1, 100).unwrap();
    let t = store.claim(&w, 2, 50).unwrap().unwrap();
    assert!(!store.release(&t.id, "worker_1_zzzzzzzzz", 3).unwrap());
    assert!(store.release(&t.id, &w, 3).unwrap());
    assert!(!store.release(&t.id, &w, 3).unwrap());
    let back = store.claim(&w, 4, 50).unwrap().unwrap();
    assert_eq!((back.id.as_str(), back.attempts), (ids[0].as_str(), 1), "released task keeps its place");
}

#[test]
fn inactive_workers_are_removed_and_their_leases_released() {
    let (_dir, store) = open();
    store.enqueue(&prompts(&["a"]), 1).unwrap();
    let idle = store.create_worker(1, 10).unwrap();
    let busy = store.create_worker(1, 10).unwrap();
    assert!(store.touch_worker(&busy, 5, 100).unwrap());
    assert!(store.any_active_worker(50).unwrap());
    let report = store.sweep(11, 3).unwrap();
    assert_eq!(report.workers_removed, 1);
    assert!(!store.touch_worker(&idle, 12, 100).unwrap(), "removed for good");
    assert_eq!(store.submit(&idle, "task_1_aaaaaaaaa", "x", 12).unwrap(), SubmitOutcome::UnknownWorker);
    // A worker whose active time ends while it holds a lease: the task is queued again.
    let t = store.claim(&busy, 20, 30).unwrap().unwrap();
    assert_eq!(store.sweep(101, 3).unwrap(), SweepReport { requeued: 1, dead: 0, workers_removed: 1 });
    assert_eq!(store.task(&t.id).unwrap().unwrap().state, TaskState::Queued);
    assert!(!store.any_active_worker(101).unwrap());
    assert_eq!(store.counts().unwrap().workers, 0);
}

#[test]
fn a_claim_keeps_its_worker_active_through_the_lease() {
    let (_dir, store) = open();
    store.enqueue(&prompts(&["a"]), 1).unwrap();
    let w = store.create_worker(1, 10).unwrap();
    store.claim(&w, 2, 500).unwrap().unwrap();
    assert_eq!(store.sweep(100, 3).unwrap(), SweepReport::default());
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, w) = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let ids = store.enqueue(&prompts(&["a", "b", "c"]), 1).unwrap();
        let w = store.create_worker(1, 1_000).unwrap();
        store.claim(&w, 2, 500).unwrap().unwrap();
        let t = store.claim(&w, 2, 500).unwrap().unwrap();
        store.submit(&w, &t.id, "done b", 3).unwrap();
        (ids, w)
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    let all = store.tasks(None, 100).unwrap();
    let states: Vec<_> = all.iter().map(|t| t.state).collect();
    assert_eq!(states, [TaskState::Leased, TaskState::Done, TaskState::Queued]);
    assert_eq!(all[1].response.as_deref(), Some("done b"));
    assert_eq!(store.tasks(Some(TaskState::Queued), 100).unwrap()[0].id, ids[2]);
    assert!(store.touch_worker(&w, 4, 1_000).unwrap());
    let c = store.counts().unwrap();
    assert_eq!((c.queued, c.leased, c.done, c.dead, c.workers), (1, 1, 1, 0, 1));
}

#[test]
fn concurrent_claims_from_many_connections_never_share_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SqliteStore::open(dir.path()).unwrap();
    let n = 400;
    let all: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    seed.enqueue(&all, 1).unwrap();
    let stores: Vec<Arc<SqliteStore>> = (0..6).map(|_| Arc::new(SqliteStore::open(dir.path()).unwrap())).collect();
    let handles: Vec<_> = stores
        .into_iter()
        .enumerate()
        .flat_map(|(i, store)| {
            (0..2).map(move |j| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let w = store.create_worker(1, i64::MAX).unwrap();
                    let mut got = Vec::new();
                    while let Some(t) = store.claim(&w, 2, 1_000).unwrap() {
                        assert_eq!(store.submit(&w, &t.id, &format!("{i}/{j}"), 3).unwrap(), SubmitOutcome::Accepted);
                        got.push(t.id);
                    }
                    got
                })
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(seen.insert(id), "a task was handed out twice");
        }
    }
    assert_eq!(seen.len(), n);
    assert_eq!(seed.counts().unwrap().done, n as u64);
}

#[test]
fn change_token_sees_other_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteStore::open(dir.path()).unwrap();
    let b = SqliteStore::open(dir.path()).unwrap();
    let before = a.change_token().unwrap();
    a.enqueue(&prompts(&["own"]), 1).unwrap();
    a.maintain().unwrap();
    assert_eq!(a.change_token().unwrap(), before, "own commits and checkpoints do not count");
    b.enqueue(&prompts(&["other"]), 1).unwrap();
    assert_ne!(a.change_token().unwrap(), before);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(super::db::FILE_NAME)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).err().expect("must refuse");
    assert!(err.to_string().contains("newer"), "{err}");
}
