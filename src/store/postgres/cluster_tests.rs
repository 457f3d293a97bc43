//! The cluster interface on a real PostgreSQL: several handles of one schema stand for several
//! daemons (each holds its own node name's lock, as a daemon does).

use std::time::Duration;

use serde_json::{Value, json};

use super::PgStore;
use super::tests::Pg;
use crate::protocol::{ErrorKind, Origin, WorkerError, WorkerResult};
use crate::store::{ActionState, Clock, Cluster, ClusterCancel, Journal, StoreError, Verdict};

async fn node(h: &Pg, name: &str) -> PgStore {
    let store = PgStore::open(h.config(), Clock::System).await.expect("open the test store");
    store.join(name).await.expect("join");
    store
}

fn stored(n: usize) -> Value {
    json!({ "index": n, "action": { "type": "spawn_worker", "task": format!("t{n}"), "servers": [] } })
}

async fn accept(store: &PgStore, ids: &[&str]) {
    let entries: Vec<(String, Value)> = ids.iter().enumerate().map(|(i, id)| ((*id).to_owned(), stored(i))).collect();
    store.accept(&entries, &[]).await.expect("accept");
}

fn ok(task_id: &str) -> WorkerResult {
    let mut result =
        WorkerResult::failure(task_id, Origin::default(), WorkerError::new(ErrorKind::Timeout, "unused", false));
    result.success = true;
    result.error = None;
    result.result = "done".into();
    result
}

fn interrupted(task_id: &str, _: &Value) -> Verdict {
    Verdict::Answer(Box::new(WorkerResult::failure(
        task_id,
        Origin::default(),
        WorkerError::new(ErrorKind::Interrupted, "its node died", true),
    )))
}

fn ids(claimed: &[(String, Value)]) -> Vec<&str> {
    claimed.iter().map(|(id, _)| id.as_str()).collect()
}

#[tokio::test]
async fn nodes_claim_disjoint_actions_oldest_first_and_only_their_own_start() {
    let h = Pg::new();
    let (a, b) = (node(&h, "a").await, node(&h, "b").await);
    let all: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
    accept(&a, &all.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let first = a.claim(3).await.unwrap();
    assert_eq!(ids(&first), ["x0", "x1", "x2"]);
    assert_eq!(first[1].1, stored(1), "the claim returns what accept stored");
    let rest = b.claim(100).await.unwrap();
    assert_eq!(ids(&rest), ["x3", "x4", "x5", "x6", "x7", "x8", "x9"]);
    assert!(a.claim(5).await.unwrap().is_empty(), "nothing is handed out twice");
    // Only the holder may start or finish an action.
    assert!(matches!(b.started("x0").await, Err(StoreError::Fenced(_))));
    a.started("x0").await.unwrap();
    assert!(matches!(b.finish(&ok("x0")).await, Err(StoreError::Fenced(_))));
    assert!(a.finish(&ok("x0")).await.unwrap().is_some());
    assert!(a.finish(&ok("x0")).await.unwrap().is_none(), "a second result is refused, as ever");
    let record = b.action("x3").await.unwrap().unwrap();
    assert_eq!((record.state, record.node.as_deref()), (ActionState::Accepted, Some("b")));
    let status = a.status().await.unwrap();
    assert_eq!((status.nodes_alive, status.unclaimed, status.claimed, status.running), (2, 0, 9, 0));
}

#[tokio::test]
async fn a_silent_node_is_declared_dead_once_its_work_settled_and_its_late_writes_fenced() {
    let h = Pg::new();
    let (a, b, c) = (node(&h, "a").await, node(&h, "b").await, node(&h, "c").await);
    accept(&a, &["run", "wait"]).await;
    assert_eq!(ids(&a.claim(2).await.unwrap()), ["run", "wait"]);
    a.started("run").await.unwrap();
    // `b` and `c` stay alive; `a` falls silent (it stops heartbeating).
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.heartbeat().await.unwrap();
    c.heartbeat().await.unwrap();
    let timeout = Duration::from_millis(200);
    let (by_b, by_c) = tokio::join!(b.reap(timeout, &interrupted), c.reap(timeout, &interrupted));
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let declared: Vec<&str> = by_b.declared.iter().chain(&by_c.declared).map(|n| n.name.as_str()).collect();
    assert_eq!(declared, ["a"], "exactly one survivor declares it");
    let answered: Vec<_> = by_b.answered.iter().chain(&by_c.answered).collect();
    assert_eq!(answered, [&("run".to_owned(), "a".to_owned())]);
    assert_eq!(by_b.released + by_c.released, 1, "the unstarted one goes back");
    let record = b.action("run").await.unwrap().unwrap();
    assert_eq!(record.state, ActionState::Done);
    assert_eq!(record.result.as_ref().unwrap()["error"]["kind"], "interrupted");
    // The dead node's late writes change nothing.
    assert!(matches!(a.finish(&ok("run")).await, Err(StoreError::Fenced(_))));
    assert!(matches!(a.heartbeat().await, Err(StoreError::Fenced(_))));
    assert!(matches!(a.claim(1).await, Err(StoreError::Fenced(_))));
    assert_eq!(b.action("run").await.unwrap().unwrap().result.unwrap()["error"]["kind"], "interrupted");
    assert_eq!(ids(&c.claim(5).await.unwrap()), ["wait"]);
    // It joins again as a new node and works.
    let again = a.join("a").await.unwrap();
    a.heartbeat().await.unwrap();
    accept(&b, &["later"]).await;
    assert_eq!(ids(&a.claim(5).await.unwrap()), ["later"]);
    assert_eq!(b.action("later").await.unwrap().unwrap().node.as_deref(), Some("a"));
    assert!(again.id > 0);
    assert!(b.reap(timeout, &interrupted).await.unwrap().declared.is_empty(), "declared once");
}

#[tokio::test]
async fn a_rerun_verdict_puts_the_action_back_with_its_new_record() {
    let h = Pg::new();
    let (a, b) = (node(&h, "a").await, node(&h, "b").await);
    accept(&a, &["r"]).await;
    a.claim(1).await.unwrap();
    a.started("r").await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    b.heartbeat().await.unwrap();
    let rerun = |_: &str, stored: &Value| {
        let mut stored = stored.clone();
        stored["failedAttempts"] = json!(["interrupted"]);
        Verdict::Rerun(stored)
    };
    let reaped = b.reap(Duration::from_millis(200), &rerun).await.unwrap();
    assert_eq!((reaped.answered.len(), reaped.released), (0, 1));
    assert_eq!(reaped.rerun, [("r".to_owned(), "a".to_owned())]);
    let claimed = b.claim(1).await.unwrap();
    assert_eq!(ids(&claimed), ["r"]);
    assert_eq!(claimed[0].1["failedAttempts"], json!(["interrupted"]));
    b.started("r").await.unwrap();
}

#[tokio::test]
async fn a_restart_under_the_same_name_buries_the_earlier_run_and_a_second_live_one_is_refused() {
    let h = Pg::new();
    let first = node(&h, "same").await;
    accept(&first, &["r"]).await;
    first.claim(1).await.unwrap();
    first.started("r").await.unwrap();
    // A second daemon under a live name is refused.
    let twin = PgStore::open(h.config(), Clock::System).await.unwrap();
    assert!(matches!(twin.join("same").await, Err(StoreError::Busy(_))));
    drop(first);
    // Once its session is gone (the lock goes with it), the name is free.
    let restarted = PgStore::open(h.config(), Clock::System).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match restarted.join("same").await {
            Ok(_) => break,
            Err(StoreError::Busy(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(err) => panic!("cannot rejoin: {err}"),
        }
    }
    // Without waiting for any timeout: the earlier run is dead, its running action answered.
    let reaped = restarted.reap(Duration::from_secs(3600), &interrupted).await.unwrap();
    assert_eq!(reaped.answered, [("r".to_owned(), "same".to_owned())]);
    assert!(reaped.declared.is_empty(), "the join declared it already");
}

#[tokio::test]
async fn cancels_reach_the_holder_or_answer_what_nobody_holds() {
    let h = Pg::new();
    let (a, b) = (node(&h, "a").await, node(&h, "b").await);
    accept(&a, &["held", "free"]).await;
    assert_eq!(ids(&a.claim(1).await.unwrap()), ["held"]);
    let cancelled = |id: &'static str| {
        move |stored: &Value| {
            let index = stored["index"].as_u64().unwrap_or(99) as usize;
            let origin = Origin { line: None, index };
            WorkerResult::failure(id, origin, WorkerError::new(ErrorKind::Cancelled, "cancelled", false))
        }
    };
    let mut asked = a.cancel_changes();
    assert_eq!(b.cancel("held", &cancelled("held")).await.unwrap(), ClusterCancel::Asked("a".into()));
    tokio::time::timeout(Duration::from_secs(10), asked.changed()).await.expect("the holder is woken");
    assert_eq!(a.cancels().await.unwrap(), ["held"]);
    assert!(a.cancels().await.unwrap().is_empty(), "each cancel is handed over once");
    assert!(b.cancels().await.unwrap().is_empty());
    assert!(matches!(b.cancel("free", &cancelled("free")).await.unwrap(), ClusterCancel::Answered(Some(_))));
    let answered = a.action("free").await.unwrap().unwrap().result.unwrap();
    assert_eq!((&answered["error"]["kind"], &answered["index"]), (&json!("cancelled"), &json!(1)), "{answered}");
    assert!(a.claim(5).await.unwrap().is_empty(), "an answered action is not handed out");
    assert_eq!(b.cancel("free", &cancelled("free")).await.unwrap(), ClusterCancel::Finished);
    assert_eq!(b.cancel("nope", &cancelled("nope")).await.unwrap(), ClusterCancel::Unknown);
}

#[tokio::test]
async fn a_graceful_stop_hands_unstarted_actions_back_at_once() {
    let h = Pg::new();
    let (a, b) = (node(&h, "a").await, node(&h, "b").await);
    accept(&a, &["s", "u1", "u2"]).await;
    a.claim(3).await.unwrap();
    a.started("s").await.unwrap();
    assert_eq!(a.hand_back().await.unwrap(), 2);
    assert_eq!(ids(&b.claim(5).await.unwrap()), ["u1", "u2"]);
    // The running one stays with `a`, which may still finish it before it leaves.
    assert!(a.finish(&ok("s")).await.unwrap().is_some());
    a.leave().await.unwrap();
    assert_eq!(b.status().await.unwrap().nodes_alive, 1);
    assert!(matches!(a.heartbeat().await, Err(StoreError::Fenced(_))));
}
