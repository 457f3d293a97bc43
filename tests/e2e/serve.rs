//! `mcp-workers serve` end to end: the HTTP API over the journal, with the real Claude Code CLI,
//! the real server-filesystem and the scripted stand-in model.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::daemon::{Project, Server, SseReader, action};
use crate::support::fake_model::{FakeModel, hang, text};

pub(crate) fn fs_project() -> Project {
    Project::new(json!({ "filesystem": Project::filesystem_entry() }))
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub(crate) async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = client().post(server.url(path)).json(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

pub(crate) async fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = client().get(server.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_fetch_cancel_and_follow_events() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("quick-", vec![text("quick answer")]);
    model.script("stuck-", vec![hang()]);
    let server = Server::start(&project, &model, &[], &[]).await;

    // Submit and wait for the result in the answer.
    let body = json!({"actions": [action("q1", "quick-one", &["filesystem"], 60_000), {"type": "note", "x": 1}]});
    let (status, answer) = post(&server, "/v1/actions?wait=true", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], json!([{"taskId": "q1", "index": 0}]));
    assert_eq!(answer["acks"][0]["actionType"], "note");
    assert_eq!(answer["results"][0]["taskId"], "q1");
    assert_eq!(answer["results"][0]["success"], true, "{answer}");
    assert_eq!(answer["results"][0]["result"], "quick answer");

    // Fetch it.
    let (status, task) = get(&server, "/v1/tasks/q1").await;
    assert_eq!(status, 200);
    assert_eq!((task["state"].as_str(), task["result"]["success"].as_bool()), (Some("done"), Some(true)), "{task}");
    assert_eq!(task["action"]["task"], "quick-one");
    let (status, missing) = get(&server, "/v1/tasks/nope").await;
    assert_eq!((status, missing["error"]["kind"].as_str()), (404, Some("not_found")));
    // A used id cannot be used again.
    let (_, again) =
        post(&server, "/v1/actions", &json!({"actions": [action("q1", "quick-two", &["filesystem"], 60_000)]})).await;
    assert_eq!(again["results"][0]["error"]["kind"], "invalid_action", "{again}");

    // Follow the events from the start; submit without waiting; cancel it while it runs.
    let mut events = SseReader::open(&server.url("/v1/events?after=0"), None).await;
    let (status, answer) =
        post(&server, "/v1/actions", &json!({"actions": [action("s1", "stuck-one", &["filesystem"], 120_000)]})).await;
    assert_eq!(status, 202, "{answer}");
    model.wait_for_requests(2).await;
    let response = client().delete(server.url("/v1/tasks/s1")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let (results, ids) = events.results(3).await;
    let kinds: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["taskId"].as_str().unwrap(), r["error"]["kind"].as_str().unwrap_or("success")))
        .collect();
    assert_eq!(kinds[0], ("q1", "success"));
    assert_eq!(kinds[1], ("q1", "invalid_action"));
    assert_eq!(kinds.last(), Some(&("s1", "cancelled")), "{kinds:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids are consecutive: {ids:?}");
    let (_, task) = get(&server, "/v1/tasks/s1").await;
    assert_eq!(task["result"]["error"]["kind"], "cancelled", "{task}");
    let response = client().delete(server.url("/v1/tasks/s1")).send().await.unwrap();
    assert_eq!(response.status(), 409);

    // Resume after a given event: exactly what came after it.
    let resume_from = ids[ids.len() - 3];
    let mut resumed = SseReader::open(&server.url("/v1/events"), Some(resume_from)).await;
    let (first, _, _) = resumed.next().await;
    assert_eq!(first, resume_from + 1);

    let metrics = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcp_workers_results_total{kind=\"cancelled\"} 1"), "{metrics}");
    assert!(metrics.contains("mcp_workers_results_total{kind=\"success\"} 1"), "{metrics}");
    server.signal("TERM");
    let (status, _) = server.wait().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused_cleanly() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("fine-", vec![text("fine")]);
    let server = Server::start(&project, &model, &["--max-line-bytes", "2048"], &[]).await;
    let send = |body: String| {
        let url = server.url("/v1/actions");
        async move {
            let response = client().post(url).body(body).send().await.expect("POST");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for (body, status, kind) in [
        ("not json".to_owned(), 400, "invalid_json"),
        ("[1,2]".to_owned(), 400, "invalid_envelope"),
        ("{}".to_owned(), 400, "invalid_envelope"),
        (format!("{}{}", "[".repeat(3000), "]".repeat(3000)), 413, "line_too_long"),
        (
            format!(
                "{{\"actions\":[{{\"type\":\"spawn_worker\",\"task\":\"{}\",\"servers\":[\"filesystem\"]}}]}}",
                "x".repeat(5000)
            ),
            413,
            "line_too_long",
        ),
    ] {
        let (got, answer) = send(body).await;
        assert_eq!((got, answer["error"]["kind"].as_str()), (status, Some(kind)), "{answer}");
        assert_eq!(answer["type"], "error");
    }
    let (status, answer) = send(json!({"actions": [{"type": "spawn_worker", "task": "t"}]}).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["error"]["kind"], "invalid_action");
    let (status, answer) = send(json!({"actions": [action("f", "fine-1", &["filesystem"], 60_000)]}).to_string()).await;
    assert_eq!(status, 202, "the server still works: {answer}");
    let (status, ready) = get(&server, "/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    server.signal("TERM");
    assert!(server.wait().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_a_bearer_token_is_required() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let refused = Server::try_start(&project, &model, &["--listen", "0.0.0.0:0"], &[]).await;
    let Err(stderr) = refused else { panic!("started beyond loopback without a token") };
    assert!(stderr.contains("MCP_WORKERS_API_TOKEN"), "{stderr}");

    let token = "s3cret-token";
    let server = Server::start(&project, &model, &["--listen", "0.0.0.0:0"], &[("MCP_WORKERS_API_TOKEN", token)]).await;
    let body = json!({"actions": []});
    let response = client().post(server.url("/v1/actions")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["kind"], "unauthorized");
    let wrong = client().get(server.url("/metrics")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let mcp = client().post(server.url("/mcp")).json(&json!({})).send().await.unwrap();
    assert_eq!(mcp.status(), 401, "the queue endpoint is protected too");
    let ok = client().post(server.url("/v1/actions")).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let health = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health needs no token");
    server.signal("TERM");
    let (status, stderr) = server.wait().await;
    assert!(status.success());
    assert!(!stderr.contains(token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_workers_running_and_waiting_loses_nothing_and_runs_nothing_twice() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("running-", vec![hang()]);
    model.script("waiting-", vec![text("done after the restart")]);
    let server = Server::start(&project, &model, &["--max-workers", "5"], &[]).await;
    let actions: Vec<Value> = (0..5)
        .map(|i| action(&format!("r{i}"), &format!("running-{i}"), &["filesystem"], 300_000))
        .chain((0..5).map(|i| action(&format!("w{i}"), &format!("waiting-{i}"), &["filesystem"], 300_000)))
        .collect();
    let (status, answer) = post(&server, "/v1/actions", &json!({ "actions": actions })).await;
    assert_eq!((status, answer["accepted"].as_array().map(Vec::len)), (202, Some(10)), "{answer}");
    model.wait_for_requests(5).await;
    assert!(project.processes(server.child.id()).len() >= 10, "five workers and their servers run");
    server.signal("KILL");
    let _ = server.wait().await;
    // The workers die with the daemon (PDEATHSIG); their MCP servers follow on EOF.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !project.processes(None).is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", project.processes(None));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(project.scratch_roots().len(), 1, "the killed daemon's scratch directory is left");
    let server = Server::start(&project, &model, &["--max-workers", "5"], &[]).await;
    let mut events = SseReader::open(&server.url("/v1/events?after=0"), None).await;
    let (results, _) = events.results(10).await;
    let roots = project.scratch_roots();
    assert_eq!(roots.len(), 1, "swept at start-up, one new: {roots:?}");
    assert!(roots[0].to_string_lossy().contains(&format!("-run-{}-", server.child.id().unwrap())), "{roots:?}");
    let mut outcome: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (r["taskId"].as_str().unwrap().to_owned(), r["error"]["kind"].as_str().unwrap_or("success").to_owned())
        })
        .collect();
    outcome.sort();
    let expected: Vec<(String, String)> = (0..5)
        .map(|i| (format!("r{i}"), "interrupted".to_owned()))
        .chain((0..5).map(|i| (format!("w{i}"), "success".to_owned())))
        .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(outcome, expected);
    let ids: BTreeSet<&str> = results.iter().map(|r| r["taskId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10, "none duplicated");
    for result in &results {
        // r0..r4 were actions 0..4 of the request, w0..w4 actions 5..9: the index survives.
        let id = result["taskId"].as_str().unwrap();
        let n: u64 = id[1..].parse().unwrap();
        let index = if id.starts_with('r') { n } else { n + 5 };
        assert_eq!(result["index"], index, "{result}");
    }
    assert_eq!(model.requests_for("running-").len(), 5, "the interrupted ones did not run again");
    assert_eq!(model.requests_for("waiting-").len(), 5);
    server.signal("TERM");
    assert!(server.wait().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_running_workers_a_grace_then_records_them_and_keeps_the_queue() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("long-", vec![hang()]);
    model.script("later-", vec![text("ran after the restart")]);
    let args = ["--max-workers", "1", "--shutdown-grace", "1s", "--kill-grace", "1s"];
    let server = Server::start(&project, &model, &args, &[]).await;
    let body = json!({"actions": [
        action("long", "long-running", &["filesystem"], 300_000),
        action("later", "later-please", &["filesystem"], 300_000),
    ]});
    let (status, _) = post(&server, "/v1/actions", &body).await;
    assert_eq!(status, 202);
    model.wait_for_requests(1).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let (status, _) = server.wait().await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took >= Duration::from_secs(1), "the running worker had its grace: {took:?}");
    assert!(took < Duration::from_secs(1 + 1 + 5), "then it was stopped: {took:?}");
    assert!(project.processes(None).is_empty(), "{:?}", project.processes(None));

    let server = Server::start(&project, &model, &args, &[]).await;
    let mut events = SseReader::open(&server.url("/v1/events?after=0"), None).await;
    let (results, _) = events.results(2).await;
    assert_eq!(results[0]["taskId"], "long");
    assert_eq!(results[0]["error"]["kind"], "shutdown", "{}", results[0]);
    assert_eq!(results[1]["taskId"], "later", "the queued action ran after the restart");
    assert_eq!(results[1]["success"], true, "{}", results[1]);
    server.signal("TERM");
    assert!(server.wait().await.0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_restart_kills_what_the_dead_daemons_workers_left_behind() {
    // An MCP server that ignores every signal but SIGKILL and never reads stdin: when its CLI dies,
    // it is orphaned. Only the restarted daemon, which knows its task id, can find it.
    let stubborn = json!({"command": "sh", "args": ["-c", "trap '' HUP INT TERM; exec sleep 600"]});
    let project = Project::new(json!({ "stubborn": stubborn }));
    let model = FakeModel::start().await;
    let server = Server::start(&project, &model, &["--mcp-connect-timeout", "60s"], &[]).await;
    let (status, _) =
        post(&server, "/v1/actions", &json!({"actions": [action("st", "stubborn-1", &["stubborn"], 300_000)]})).await;
    assert_eq!(status, 202);
    let sleeping = || project.processes(None).into_iter().filter(|(_, cmd)| cmd.starts_with("sleep 600")).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleeping() == 0 {
        assert!(Instant::now() < deadline, "the stubborn server never started: {:?}", project.processes(None));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.signal("KILL");
    let _ = server.wait().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while project.processes(None).iter().any(|(_, cmd)| cmd.contains("claude")) {
        assert!(Instant::now() < deadline, "the CLI outlived its daemon: {:?}", project.processes(None));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sleeping(), 1, "the orphaned server is still there before the restart");

    let server = Server::start(&project, &model, &[], &[]).await;
    // Recovery sends SIGKILL before the daemon listens; the kernel may take a moment to finish them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !project.processes(server.child.id()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "recovery did not kill the leftovers: {:?}",
            project.processes(server.child.id())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, task) = get(&server, "/v1/tasks/st").await;
    assert_eq!(task["result"]["error"]["kind"], "interrupted", "{task}");
    server.signal("TERM");
    assert!(server.wait().await.0.success());
}
