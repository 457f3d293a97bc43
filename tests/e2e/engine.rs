//! `serve`'s engine on its error and cancellation paths, as a black box: a store that fails, a
//! client that goes away mid-request, a restart with a large backlog, a second signal.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::serve::{client, fs_project, get, post};
use crate::support::daemon::{Server, SseReader, action};
use crate::support::fake_model::{FakeModel, hang, text};

/// Polls `GET path` until `done` holds for the answer, at most `limit`.
async fn until(server: &Server, path: &str, limit: Duration, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, answer) = get(server, path).await;
        if done(status, &answer) {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} never got there; last answer {status} {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_is(state: &'static str) -> impl Fn(u16, &Value) -> bool {
    move |_, task| task["state"] == state
}

/// Holds the SQLite store's write lock from another process until dropped.
struct StoreLock(tokio::process::Child);

impl StoreLock {
    async fn take(db: &std::path::Path) -> StoreLock {
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n\
                      c.execute('BEGIN EXCLUSIVE')\n\
                      print('locked', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script, &db.to_string_lossy()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        assert_eq!(out.next_line().await.expect("read").as_deref(), Some("locked"));
        StoreLock(child)
    }

    async fn release(mut self) {
        drop(self.0.stdin.take());
        self.0.wait().await.expect("the lock holder exits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_stops_starts_but_never_loses_a_result() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("blocker-", vec![hang()]);
    model.script("victim-", vec![text("must not run")]);
    let server = Server::start(&project, &model, &["--max-workers", "1", "--kill-grace", "1s"], &[]).await;
    let (status, _) =
        post(&server, "/v1/actions", &json!({"actions": [action("b1", "blocker-1", &["filesystem"], 120_000)]})).await;
    assert_eq!(status, 202);
    until(&server, "/v1/tasks/b1", Duration::from_secs(60), state_is("running")).await;
    // The victim waits for the only slot; its caller waits for its result.
    let waiting = {
        let url = server.url("/v1/actions?wait=120s");
        let body = json!({"actions": [action("v1", "victim-1", &["filesystem"], 60_000)]});
        tokio::spawn(async move { client().post(url).json(&body).send().await.expect("POST").json::<Value>().await })
    };
    until(&server, "/v1/tasks/v1", Duration::from_secs(30), state_is("accepted")).await;
    let mut events = SseReader::open(&server.url("/v1/events"), None).await;

    let lock = StoreLock::take(&project.root.join("data/store.sqlite3")).await;
    // Cancelling the blocker frees the slot: its result cannot be written, nor can the victim's start.
    assert_eq!(client().delete(server.url("/v1/tasks/b1")).send().await.unwrap().status(), 202);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (id, kind, data) = events.next_event().await;
        if kind == "result" {
            assert_eq!(id, None, "a result the journal could not write is sent without an id: {data}");
            seen.push((
                data["taskId"].as_str().unwrap().to_owned(),
                data["error"]["kind"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(seen, [("b1".to_owned(), "cancelled".to_owned()), ("v1".to_owned(), "internal_error".to_owned())]);
    let answer = waiting.await.expect("the waiting request").expect("a JSON answer");
    let result = &answer["results"][0];
    assert_eq!((result["taskId"].as_str(), result["error"]["kind"].as_str()), (Some("v1"), Some("internal_error")));
    assert_eq!(result["error"]["retryable"], true, "{answer}");
    assert_eq!(model.requests_for("victim-").len(), 0, "the victim's CLI never started");
    let (status, ready) = get(&server, "/readyz").await;
    assert_eq!(status, 503, "not ready while the store fails: {ready}");

    lock.release().await;
    // The retried writes land: both results are in the journal, and the daemon is ready again.
    let done = until(&server, "/v1/tasks/v1", Duration::from_secs(60), state_is("done")).await;
    assert_eq!(done["result"]["error"]["kind"], "internal_error", "{done}");
    let done = until(&server, "/v1/tasks/b1", Duration::from_secs(60), state_is("done")).await;
    assert_eq!(done["result"]["error"]["kind"], "cancelled", "{done}");
    until(&server, "/readyz", Duration::from_secs(30), |status, _| status == 200).await;
    server.signal("TERM");
    assert!(server.wait().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_accept_leaves_every_action_queued() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("blocker-", vec![hang()]);
    let server = Server::start(&project, &model, &["--max-workers", "1", "--kill-grace", "1s"], &[]).await;
    // One worker slot and a pool queue of 64: a request of 100 actions waits for room (back-pressure).
    let ids: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
    let actions: Vec<Value> =
        ids.iter().map(|id| action(id, &format!("blocker-{id}"), &["filesystem"], 120_000)).collect();
    let request = {
        let url = server.url("/v1/actions");
        let body = json!({ "actions": actions });
        tokio::spawn(async move { client().post(url).json(&body).send().await })
    };
    // All journalled, and the first one running: the request is held by the back-pressure now.
    until(&server, "/v1/tasks/a99", Duration::from_secs(30), state_is("accepted")).await;
    until(&server, "/v1/tasks/a0", Duration::from_secs(60), state_is("running")).await;
    request.abort();
    let _ = request.await;
    // Every action still gets its one result: cancel them all, the running one last.
    let mut events = SseReader::open(&server.url("/v1/events"), None).await;
    for id in ids.iter().rev() {
        let response = client().delete(server.url(&format!("/v1/tasks/{id}"))).send().await.unwrap();
        assert_eq!(response.status(), 202, "{id}");
    }
    let (results, _) = events.results(100).await;
    let mut got: Vec<&str> = results.iter().map(|r| r["taskId"].as_str().unwrap()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(results.iter().all(|r| r["error"]["kind"] == "cancelled"), "{results:?}");
    server.signal("TERM");
    assert!(server.wait().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_feeds_a_backlog_in_the_background_and_a_sigterm_keeps_the_rest() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("slow-", vec![hang()]);
    let args = ["--max-workers", "1", "--kill-grace", "1s", "--shutdown-grace", "1s"];
    let first = Server::start(&project, &model, &args, &[]).await;
    let actions: Vec<Value> =
        (0..200).map(|i| action(&format!("s{i}"), &format!("slow-{i}"), &["filesystem"], 120_000)).collect();
    // The request is held by back-pressure (one slot, a pool queue of 64) until the kill.
    let request = {
        let url = first.url("/v1/actions");
        let body = json!({ "actions": actions });
        tokio::spawn(async move { client().post(url).json(&body).send().await })
    };
    until(&first, "/v1/tasks/s199", Duration::from_secs(30), state_is("accepted")).await;
    until(&first, "/v1/tasks/s0", Duration::from_secs(60), state_is("running")).await;
    first.signal("KILL");
    let _ = request.await;
    let _ = first.wait().await;

    // 199 actions to recover and one slot: the API answers while they wait to be fed.
    let second = Server::start(&project, &model, &args, &[]).await;
    let (status, _) = get(&second, "/healthz").await;
    assert_eq!(status, 200);
    let interrupted = until(&second, "/v1/tasks/s0", Duration::from_secs(30), state_is("done")).await;
    assert_eq!(interrupted["result"]["error"]["kind"], "interrupted");
    until(&second, "/v1/tasks/s1", Duration::from_secs(60), state_is("running")).await;
    until(&second, "/readyz", Duration::from_secs(30), |status, _| status == 200).await;
    second.signal("TERM");
    let (status, _) = second.wait().await;
    assert!(status.success(), "{status:?}");

    // The one that ran was stopped; none of the others was answered: they run after this start.
    let third = Server::start(&project, &model, &args, &[]).await;
    let (_, s1) = get(&third, "/v1/tasks/s1").await;
    assert_eq!(s1["result"]["error"]["kind"], "shutdown", "{s1}");
    for i in (2..200).step_by(37) {
        let (_, task) = get(&third, &format!("/v1/tasks/s{i}")).await;
        assert_ne!(task["state"], "done", "s{i} was kept for the next start: {task}");
    }
    third.signal("KILL");
    let _ = third.wait().await;
}
