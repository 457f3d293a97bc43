//! Several `serve` daemons on one PostgreSQL journal (issue 9), black box: each daemon a process
//! of its own with its own project and data directory, all on one schema of the test database,
//! the real CLI and the stand-in model behind them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::postgres::Schema;
use crate::serve::{client, fs_project, get, post};
use crate::support::daemon::{Project, Server, SseReader, action};
use crate::support::fake_model::{FakeModel, Gate, fail_then, gated, hang, slow, text};

const LONG: Duration = Duration::from_secs(60);

/// A daemon named `name` on `schema`.
async fn daemon(project: &Project, model: &FakeModel, schema: &Schema, name: &str, extra: &[&str]) -> Server {
    let url = schema.url();
    let mut args = vec!["--store", url.as_str(), "--node-name", name, "-v"];
    if !extra.contains(&"--node-timeout") {
        args.extend(["--node-timeout", "2s"]);
    }
    args.extend_from_slice(extra);
    Server::start(project, model, &args, &[]).await
}

/// Polls `GET /v1/tasks/{id}` on `server` until `done` says so; returns the record.
async fn until_task(server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (_, task) = get(server, &format!("/v1/tasks/{id}")).await;
        if done(&task) {
            return task;
        }
        assert!(Instant::now() < deadline, "{id}: waited for {what}, last {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kind(result: &Value) -> &str {
    result["error"]["kind"].as_str().unwrap_or("success")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_actions_on_two_daemons_run_once_each_on_both_and_a_cancel_reaches_the_other() {
    let schema = Schema::new();
    let model = FakeModel::start().await;
    model.script("job-", vec![slow(Duration::from_millis(30), text("done"))]);
    model.script("stuck-", vec![hang()]);
    let (pa, pb) = (fs_project(), fs_project());
    let a = daemon(&pa, &model, &schema, "a", &["--max-workers", "3"]).await;
    let b = daemon(&pb, &model, &schema, "b", &["--max-workers", "3"]).await;
    let mut events = SseReader::open(&a.url("/v1/events?after=0"), None).await;
    for i in 0..40 {
        let server = if i % 2 == 0 { &a } else { &b };
        let body = json!({"actions": [action(&format!("j{i}"), &format!("job-{i}"), &["filesystem"], 120_000)]});
        let (status, answer) = post(server, "/v1/actions", &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let (results, ids) = events.results(40).await;
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "one gap-free id order: {ids:?}");
    let mut seen = BTreeMap::new();
    for result in &results {
        *seen.entry(result["taskId"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        assert_eq!(kind(result), "success", "{result}");
    }
    assert_eq!(seen.len(), 40, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "one result each: {seen:?}");
    assert_eq!(model.requests_for("job-").len(), 40, "each ran exactly once");
    let mut nodes = BTreeSet::new();
    for i in 0..40 {
        // Any daemon answers for any action.
        let (_, task) = get(if i % 3 == 0 { &a } else { &b }, &format!("/v1/tasks/j{i}")).await;
        assert_eq!(task["state"], "done", "{task}");
        nodes.insert(task["node"].as_str().unwrap_or("?").to_owned());
    }
    assert_eq!(nodes, BTreeSet::from(["a".to_owned(), "b".to_owned()]), "both daemons ran some");

    // A cancel sent to the daemon that does not run the action stops it.
    let (status, _) =
        post(&a, "/v1/actions", &json!({"actions": [action("stuck", "stuck-1", &["filesystem"], 300_000)]})).await;
    assert_eq!(status, 202);
    let running = until_task(&b, "stuck", "running", |t| t["state"] == "running").await;
    let runner = running["node"].as_str().expect("a node runs it").to_owned();
    let other = if runner == "a" { &b } else { &a };
    let response = client().delete(other.url("/v1/tasks/stuck")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let done = until_task(other, "stuck", "its result", |t| t["state"] == "done").await;
    assert_eq!(kind(&done["result"]), "cancelled", "{done}");
    assert_eq!(done["node"], runner.as_str(), "stopped where it ran");
    let metrics = client().get(a.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcp_workers_cluster_nodes 2"), "{metrics}");
    for server in [a, b] {
        server.signal("TERM");
        assert!(server.wait().await.0.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_daemon_the_survivor_answers_its_workers_interrupted_and_runs_the_rest() {
    let schema = Schema::new();
    let model = FakeModel::start().await;
    model.script("held-", vec![hang()]);
    model.script("later-", vec![text("ran on the survivor")]);
    // Its first run hangs (and dies with its daemon); a second run answers.
    model.script("retry-", fail_then(1, hang(), vec![text("ran again on the survivor")]));
    let (pa, pb) = (fs_project(), fs_project());
    let a = daemon(&pa, &model, &schema, "a", &["--max-workers", "3"]).await;
    let mut retried = action("r0", "retry-0", &["filesystem"], 300_000);
    retried["retries"] = json!(1);
    let actions: Vec<Value> = (0..2)
        .map(|i| action(&format!("h{i}"), &format!("held-{i}"), &["filesystem"], 300_000))
        .chain([retried])
        .chain((0..3).map(|i| action(&format!("l{i}"), &format!("later-{i}"), &["filesystem"], 300_000)))
        .collect();
    let (status, answer) = post(&a, "/v1/actions", &json!({ "actions": actions })).await;
    assert_eq!((status, answer["accepted"].as_array().map(Vec::len)), (202, Some(6)), "{answer}");
    model.wait_for_requests(3).await;
    for id in ["h0", "h1", "r0"] {
        until_task(&a, id, "running", |t| t["state"] == "running").await;
    }
    a.signal("KILL");
    let _ = a.wait().await;
    let killed = Instant::now();
    let b = daemon(&pb, &model, &schema, "b", &["--max-workers", "2"]).await;
    let mut events = SseReader::open(&b.url("/v1/events?after=0"), None).await;
    let mut outcome = BTreeMap::new();
    let mut rerun = Value::Null;
    while outcome.len() < 6 {
        let (_, event, data) = events.next().await;
        if event == "result" {
            assert!(outcome.insert(data["taskId"].as_str().unwrap().to_owned(), kind(&data).to_owned()).is_none());
            if data["taskId"] == "r0" {
                rerun = data;
            }
        }
    }
    let expected: BTreeMap<String, String> = [
        ("h0", "interrupted"),
        ("h1", "interrupted"),
        ("l0", "success"),
        ("l1", "success"),
        ("l2", "success"),
        ("r0", "success"),
    ]
    .into_iter()
    .map(|(id, kind)| (id.to_owned(), kind.to_owned()))
    .collect();
    assert_eq!(outcome, expected);
    assert!(killed.elapsed() < Duration::from_secs(30), "answered within the node timeout: {:?}", killed.elapsed());
    assert_eq!(model.requests_for("held-").len(), 2, "the interrupted ones did not run again");
    assert_eq!(model.requests_for("later-").len(), 3);
    // Its retries allowed another attempt: run again on the survivor, the interruption counted.
    assert_eq!((&rerun["attempts"], &rerun["failedAttempts"]), (&json!(2), &json!(["interrupted"])), "{rerun}");
    assert_eq!(model.requests_for("retry-").len(), 2);
    let (_, task) = get(&b, "/v1/tasks/l0").await;
    assert_eq!(task["node"], "b", "{task}");
    b.signal("TERM");
    let (status, log) = b.wait().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("declared a silent node dead"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_declared_dead_cannot_overwrite_the_answer_and_joins_again() {
    let schema = Schema::new();
    let model = FakeModel::start().await;
    let gate = Gate::new();
    model.script("late-", vec![gated(&gate, text("too late"))]);
    model.script("fresh-", vec![text("after rejoining")]);
    let (pa, pb) = (fs_project(), fs_project());
    let a = daemon(&pa, &model, &schema, "a", &[]).await;
    let b = daemon(&pb, &model, &schema, "b", &[]).await;
    let (status, _) =
        post(&a, "/v1/actions", &json!({"actions": [action("x", "late-1", &["filesystem"], 300_000)]})).await;
    assert_eq!(status, 202);
    model.wait_for_requests(1).await;
    let running = until_task(&b, "x", "running", |t| t["state"] == "running").await;
    let runner = running["node"].as_str().unwrap().to_owned();
    let (stopped, survivor) = if runner == "a" { (&a, &b) } else { (&b, &a) };
    // The daemon freezes (its workers do not): silent past the node timeout.
    stopped.signal("STOP");
    let answered = until_task(survivor, "x", "the survivor's answer", |t| t["state"] == "done").await;
    assert_eq!(kind(&answered["result"]), "interrupted", "{answered}");
    // The worker finishes meanwhile; the frozen daemon wakes and reads its result.
    gate.open();
    stopped.signal("CONT");
    let deadline = Instant::now() + LONG;
    loop {
        let (status, ready) = get(stopped, "/readyz").await;
        let metrics = client().get(survivor.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if status == 200 && metrics.contains("mcp_workers_cluster_nodes 2") {
            break;
        }
        assert!(Instant::now() < deadline, "the fenced daemon did not join again: {ready}\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, task) = get(stopped, "/v1/tasks/x").await;
    assert_eq!(kind(&task["result"]), "interrupted", "the late finish changed nothing: {task}");
    // It works again, as a new node.
    let body = json!({"actions": [action("y", "fresh-1", &["filesystem"], 120_000)]});
    let (status, answer) = post(stopped, "/v1/actions?wait=true", &body).await;
    assert_eq!((status, answer["results"][0]["success"].as_bool()), (200, Some(true)), "{answer}");
    for server in [a, b] {
        server.signal("TERM");
        let (status, log) = server.wait().await;
        assert!(status.success(), "{log}");
        if log.contains("was declared dead") {
            assert!(log.contains("joined the cluster again"), "{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_daemon_stream_on_another_in_order_and_resume_on_the_first_without_gaps() {
    let schema = Schema::new();
    let model = FakeModel::start().await;
    model.script("ev-", vec![text("seen everywhere")]);
    let (pa, pb) = (fs_project(), fs_project());
    let a = daemon(&pa, &model, &schema, "a", &[]).await;
    let b = daemon(&pb, &model, &schema, "b", &[]).await;
    let mut on_b = SseReader::open(&b.url("/v1/events?after=0"), None).await;
    let body = json!({"actions": (0..4).map(|i| action(&format!("e{i}"), &format!("ev-{i}"), &["filesystem"], 120_000)).collect::<Vec<_>>()});
    // `?wait` on B returns the results whichever daemon produced them.
    let (status, answer) = post(&b, "/v1/actions?wait=true", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["results"].as_array().unwrap().iter().all(|r| r["success"] == true), "{answer}");
    let mut seen = Vec::new();
    let mut results = 0;
    while results < 4 {
        let (id, event, data) = on_b.next().await;
        results += usize::from(event == "result");
        seen.push((id, event, data["taskId"].as_str().unwrap_or("").to_owned()));
    }
    let ids: Vec<i64> = seen.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "every event, gap-free, in order: {seen:?}");
    // Resume on A after the third event: the same sequence from the fourth on.
    let mut on_a = SseReader::open(&a.url("/v1/events"), Some(ids[2])).await;
    for expected in &seen[3..] {
        let (id, event, data) = on_a.next().await;
        assert_eq!((id, event, data["taskId"].as_str().unwrap_or("").to_owned()), expected.clone());
    }
    for server in [a, b] {
        server.signal("TERM");
        assert!(server.wait().await.0.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_the_actions_it_holds_to_another_daemon_at_once() {
    let schema = Schema::new();
    let model = FakeModel::start().await;
    model.script("moved-", vec![text("ran on the other")]);
    model.script("busy-", vec![hang()]);
    let (pa, pb) = (fs_project(), fs_project());
    // A runs `busy` and claims `m` but cannot start it: its budget has room for one reservation
    // (policy `wait`). A long node timeout: what moves, moves because of the hand-back.
    let a_flags = [
        "--max-workers",
        "2",
        "--node-timeout",
        "120s",
        "--budget",
        "1usd/hour",
        "--budget-estimate-usd",
        "0.6",
        "--shutdown-grace",
        "1s",
    ];
    let a = daemon(&pa, &model, &schema, "a", &a_flags).await;
    let actions =
        vec![action("busy", "busy-1", &["filesystem"], 300_000), action("m", "moved-1", &["filesystem"], 300_000)];
    let (status, _) = post(&a, "/v1/actions", &json!({ "actions": actions })).await;
    assert_eq!(status, 202);
    until_task(&a, "busy", "running", |t| t["state"] == "running").await;
    let held = until_task(&a, "m", "held by a", |t| t["node"] == "a").await;
    assert_eq!(held["state"], "accepted", "{held}");
    let b = daemon(&pb, &model, &schema, "b", &["--node-timeout", "120s"]).await;
    let stopping = Instant::now();
    a.signal("TERM");
    let moved = until_task(&b, "m", "its result", |t| t["state"] == "done").await;
    assert_eq!((kind(&moved["result"]), moved["node"].as_str()), ("success", Some("b")), "{moved}");
    assert!(stopping.elapsed() < Duration::from_secs(60), "at once, not after the timeout: {:?}", stopping.elapsed());
    let (status, log) = a.wait().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("handed unstarted actions back"), "{log}");
    assert_eq!(model.requests_for("moved-").len(), 1);
    let (_, busy) = get(&b, "/v1/tasks/busy").await;
    assert_eq!(kind(&busy["result"]), "shutdown", "stopped after A's grace: {busy}");
    b.signal("TERM");
    assert!(b.wait().await.0.success());
}
