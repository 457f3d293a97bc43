//! The contract of [`Journal`]: lifecycle, one result per action, recovery, resumable events.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Harness, ms, soon};
use crate::protocol::{ErrorKind, Origin, WorkerError, WorkerResult};
use crate::store::{ActionState, Clock, EventKind, Journal, Unfinished};

fn result(id: &str, kind: Option<ErrorKind>) -> WorkerResult {
    let mut r = WorkerResult::failure(id, Origin::default(), WorkerError::new(ErrorKind::Timeout, "x", true));
    match kind {
        None => {
            r.success = true;
            r.error = None;
        }
        Some(kind) => r.error = Some(WorkerError::new(kind, "x", true)),
    }
    r
}

fn stored(id: &str) -> Value {
    json!({"index": 0, "action": {"type": "spawn_worker", "taskId": id, "task": "t", "servers": ["fs"]}})
}

pub async fn lifecycle_recovery_and_resumable_events(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = h.open(&clock).await;
    let (a, b, c) = (stored("a"), stored("b"), stored("c"));
    let refused = result("r", Some(ErrorKind::InvalidAction));
    let accepted = [("a".to_owned(), a.clone()), ("b".to_owned(), b.clone()), ("c".to_owned(), c.clone())];
    let events = journal.accept(&accepted, std::slice::from_ref(&refused)).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Accepted, EventKind::Accepted, EventKind::Accepted, EventKind::Result]);
    assert_eq!(events[0].data, json!({"taskId": "a"}));
    assert_eq!(events[3].data, serde_json::to_value(&refused).unwrap());
    let known = journal.known(&["a".into(), "zz".into(), "r".into()]).await.unwrap();
    assert_eq!(known, ["a", "r"]);
    clock.set(2);
    assert_eq!(journal.started("a").await.unwrap().kind, EventKind::Started);
    journal.started("b").await.unwrap();
    clock.set(3);
    assert!(journal.finish(&result("b", None)).await.unwrap().is_some());
    clock.set(4);
    assert!(journal.finish(&result("b", Some(ErrorKind::Timeout))).await.unwrap().is_none(), "one result only");
    let record = journal.action("b").await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.accepted_ms, record.started_ms, record.finished_ms),
        (ActionState::Done, 1, Some(2), Some(3))
    );
    assert_eq!(record.action, b["action"], "the action itself, without its index");
    assert_eq!(record.result.unwrap()["success"], true);
    let running = journal.action("a").await.unwrap().unwrap();
    assert_eq!((running.state, running.result), (ActionState::Running, None));
    assert_eq!(journal.action("r").await.unwrap().unwrap().state, ActionState::Done);
    assert!(journal.action("zz").await.unwrap().is_none());
    assert_eq!(journal.unfinished().await.unwrap(), Unfinished { accepted: 1, running: 1 });
    let ids = |records: Vec<crate::store::ActionRecord>| records.into_iter().map(|r| r.task_id).collect::<Vec<_>>();
    assert_eq!(ids(journal.actions(None, 10).await.unwrap()), ["r", "c", "b", "a"], "newest accepted first");
    assert_eq!(ids(journal.actions(None, 2).await.unwrap()), ["r", "c"]);
    assert_eq!(ids(journal.actions(Some(ActionState::Done), 10).await.unwrap()), ["r", "b"]);
    assert_eq!(ids(journal.actions(Some(ActionState::Accepted), 10).await.unwrap()), ["c"]);
    drop(journal);

    // A restart: the store still knows everything.
    let journal = h.open(&clock).await;
    let recovery = journal.recover().await.unwrap();
    assert_eq!(recovery.interrupted, [("a".to_owned(), a)]);
    assert_eq!(recovery.pending, [("c".to_owned(), c)]);
    let all = journal.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[..4], events[..]);
    let rest = journal.events_after(all[4].id, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Started, EventKind::Result]);
    assert_eq!(journal.events_after(0, 2).await.unwrap(), all[..2]);
}

pub async fn a_failed_accept_records_nothing_and_spares_concurrent_writes(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = Arc::new(h.open(&clock).await);
    journal.accept(&[("dup".to_owned(), stored("dup"))], &[]).await.unwrap();
    let before = journal.events_after(0, 100).await.unwrap().len();
    // Many accepts at once (one transaction or several): only the one reusing an id fails.
    let accepts = (0..32).map(|i| {
        let journal = Arc::clone(&journal);
        tokio::spawn(async move {
            let id = if i == 7 { "dup".to_owned() } else { format!("x{i}") };
            let fresh = format!("fresh{i}");
            let accepted = [(fresh, stored("f")), (id.clone(), stored(&id))];
            (i, journal.accept(&accepted, &[]).await)
        })
    });
    for accept in accepts.collect::<Vec<_>>() {
        let (i, outcome) = accept.await.unwrap();
        assert_eq!(outcome.is_err(), i == 7, "accept {i}: {outcome:?}");
    }
    assert!(journal.action("fresh7").await.unwrap().is_none(), "a failed accept records nothing");
    assert!(journal.action("fresh8").await.unwrap().is_some());
    assert_eq!(journal.action("dup").await.unwrap().unwrap().state, ActionState::Accepted);
    assert_eq!(journal.events_after(0, 1000).await.unwrap().len(), before + 31 * 2);
    assert_eq!(journal.unfinished().await.unwrap().accepted, 1 + 31 * 2);
}

pub async fn concurrent_events_get_increasing_gap_free_ids(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = Arc::new(h.open(&clock).await);
    let accepted: Vec<(String, Value)> = (0..50).map(|i| (format!("t{i}"), stored("t"))).collect();
    journal.accept(&accepted, &[]).await.unwrap();
    let finishes = (0..50).map(|i| {
        let journal = Arc::clone(&journal);
        tokio::spawn(async move { journal.finish(&result(&format!("t{i}"), None)).await.unwrap().unwrap().id })
    });
    let mut told = Vec::new();
    for finish in finishes.collect::<Vec<_>>() {
        told.push(finish.await.unwrap());
    }
    let all = journal.events_after(0, 1000).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 100);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "increasing, no gap: {ids:?}");
    told.sort_unstable();
    assert_eq!(told, ids[50..], "each caller was told its own event's id");
}

pub async fn retention_removes_old_done_actions_and_old_events(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = h.open(&clock).await;
    let accepted = [("old".to_owned(), stored("old")), ("running".to_owned(), stored("running"))];
    journal.accept(&accepted, &[]).await.unwrap();
    journal.started("running").await.unwrap();
    clock.set(5);
    journal.finish(&result("old", None)).await.unwrap();
    clock.set(50);
    journal.accept(&[("new".to_owned(), stored("new"))], &[]).await.unwrap();
    journal.finish(&result("new", None)).await.unwrap();
    clock.set(100);
    // Kept for 60 ms: "old" (finished at 5) and the events written before 40 go.
    assert_eq!(journal.purge_actions(ms(60)).await.unwrap(), (1, 4));
    assert!(journal.action("old").await.unwrap().is_none());
    assert_eq!(journal.action("running").await.unwrap().unwrap().state, ActionState::Running, "unfinished stays");
    assert!(journal.action("new").await.unwrap().is_some());
    let left = journal.events_after(0, 100).await.unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(left[1].id, left[0].id + 1, "the kept ids stay gap-free");
}

pub async fn event_changes_wake_on_own_and_other_handles_events(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = h.open(&clock).await;
    let other = h.open(&clock).await;
    let mut changes = journal.event_changes();
    let first = journal.accept(&[("a".to_owned(), stored("a"))], &[]).await.unwrap();
    soon("own accept", changes.changed()).await;
    let waiting = tokio::spawn(async move {
        changes.changed().await;
        changes
    });
    other.started("a").await.unwrap();
    soon("another handle's event", waiting).await.unwrap();
    let seen = journal.events_after(first[0].id, 10).await.unwrap();
    assert_eq!(seen.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Started]);
}

pub async fn requeue_puts_only_a_running_action_back_with_what_it_now_stores(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = h.open(&clock).await;
    let accepted = [("run".to_owned(), stored("run")), ("wait".to_owned(), stored("wait"))];
    journal.accept(&accepted, &[]).await.unwrap();
    journal.started("run").await.unwrap();
    let mut again = stored("run");
    again["failedAttempts"] = json!(["interrupted"]);
    assert!(!journal.requeue("wait", &again).await.unwrap(), "not running: unchanged");
    assert!(!journal.requeue("nope", &again).await.unwrap(), "unknown: nothing");
    let before = journal.events_after(0, 100).await.unwrap().len();
    clock.set(2);
    assert!(journal.requeue("run", &again).await.unwrap());
    assert!(!journal.requeue("run", &again).await.unwrap(), "once: it is not running any more");
    assert_eq!(journal.events_after(0, 100).await.unwrap().len(), before, "no event of its own");
    let record = journal.action("run").await.unwrap().unwrap();
    assert_eq!((record.state, record.started_ms), (ActionState::Accepted, None));
    assert_eq!(journal.unfinished().await.unwrap(), Unfinished { accepted: 2, running: 0 });
    drop(journal);

    // After a restart it is pending again, in its place (oldest first), with the new JSON.
    let journal = h.open(&clock).await;
    let recovery = journal.recover().await.unwrap();
    assert!(recovery.interrupted.is_empty());
    assert_eq!(recovery.pending, [("run".to_owned(), again.clone()), ("wait".to_owned(), stored("wait"))]);
    clock.set(3);
    journal.started("run").await.unwrap();
    assert_eq!(journal.action("run").await.unwrap().unwrap().started_ms, Some(3), "started anew");
    assert!(journal.finish(&result("run", None)).await.unwrap().is_some());
    assert!(!journal.requeue("run", &again).await.unwrap(), "done: it stays done");
    assert_eq!(journal.action("run").await.unwrap().unwrap().state, ActionState::Done);
}

pub async fn a_failed_attempt_is_kept_in_the_stored_action_while_it_runs(h: &impl Harness) {
    let clock = Clock::manual(1);
    let journal = h.open(&clock).await;
    let accepted = [("run".to_owned(), stored("run")), ("wait".to_owned(), stored("wait"))];
    journal.accept(&accepted, &[]).await.unwrap();
    assert!(!journal.attempt_failed("run", "rate_limited").await.unwrap(), "not running yet: unchanged");
    journal.started("run").await.unwrap();
    assert!(journal.attempt_failed("run", "rate_limited").await.unwrap());
    assert!(journal.attempt_failed("run", "idle_timeout").await.unwrap());
    assert!(!journal.attempt_failed("nope", "idle_timeout").await.unwrap());
    drop(journal);
    // What a crash leaves: the running action with its failed attempts, the other unchanged.
    let journal = h.open(&clock).await;
    let recovery = journal.recover().await.unwrap();
    let mut expected = stored("run");
    expected["failedAttempts"] = json!(["rate_limited", "idle_timeout"]);
    assert_eq!(recovery.interrupted, [("run".to_owned(), expected)]);
    assert_eq!(recovery.pending, [("wait".to_owned(), stored("wait"))]);
    assert!(journal.finish(&result("run", None)).await.unwrap().is_some());
    assert!(!journal.attempt_failed("run", "rate_limited").await.unwrap(), "done: it stays as it was");
}
