//! Governed workers end to end (the built daemon, the real Claude Code CLI, the stand-in model):
//! the per-action budget, the no-progress watchdog, retries, model fallback.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::daemon::{Daemon, Project, action};
use crate::support::fake_model::{
    FakeModel, Request, api_error_body, fail_then, hang, rate_limited, slow, stall_mid_stream, status, text, tool_use,
    with_usage,
};

fn fs_project() -> Project {
    Project::new(json!({ "filesystem": Project::filesystem_entry() }))
}

fn kind(result: &Value) -> &str {
    result["error"]["kind"].as_str().unwrap_or("")
}

/// A `dispatch_paused` / `dispatch_resumed` line (an agent may skip them by their type).
fn is_dispatch(line: &Value) -> bool {
    line["type"].as_str().is_some_and(|t| t.starts_with("dispatch_"))
}

/// One action with extra fields, run to its one result (dispatch lines skipped); the daemon
/// then ends cleanly.
async fn run_one(project: &Project, model: &FakeModel, args: &[&str], action: Value) -> Value {
    let mut daemon = Daemon::start(project, model, args);
    daemon.send_action(action).await;
    let mut result = daemon.next().await;
    while is_dispatch(&result) {
        result = daemon.next().await;
    }
    assert_eq!(result["type"], "worker_result", "{result}");
    let (status, rest, _) = daemon.finish().await;
    let rest: Vec<Value> = rest.into_iter().filter(|line| !is_dispatch(line)).collect();
    assert!(status.success() && rest.is_empty(), "one result only: {status:?} {rest:?}");
    assert!(project.processes(None).is_empty(), "no process left behind");
    result
}

fn with(mut action: Value, fields: Value) -> Value {
    for (key, value) in fields.as_object().expect("fields").clone() {
        action[key] = value;
    }
    action
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_below_the_cost_of_the_work_ends_budget_exceeded_with_the_cost() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let workspace = project.workspace().to_string_lossy().into_owned();
    // Every turn lists the workspace again and costs a lot of input tokens: the work never ends by itself.
    model.script("spend-money", move |_: &Request| {
        with_usage(20_000, 2_000, tool_use("mcp__filesystem__list_directory", json!({"path": workspace})))
    });
    let cap = 0.01;
    let spend = with(action("b-1", "spend-money", &["filesystem"], 60_000), json!({"maxBudgetUsd": cap}));
    let result = run_one(&project, &model, &[], spend).await;
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(kind(&result), "budget_exceeded", "{result}");
    assert_eq!(result["error"]["retryable"], false, "{result}");
    let cost = result["costUsd"].as_f64().unwrap_or(0.0);
    assert!(cost >= cap, "the cost so far ({cost}) is at least the cap: {result}");
    let argv = model.requests_for("spend-money");
    assert!(!argv.is_empty(), "the model was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_ends_idle_timeout_long_before_the_wall_clock() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("stall-after-start", vec![stall_mid_stream()]);
    let started = Instant::now();
    let stalled = with(action("i-1", "stall-after-start", &["filesystem"], 120_000), json!({"idleTimeout": 3000}));
    let result = run_one(&project, &model, &["--kill-grace", "5s"], stalled).await;
    let took = started.elapsed();
    assert_eq!(kind(&result), "idle_timeout", "{result}");
    assert_eq!(result["error"]["phase"], "model", "{result}");
    assert_eq!(result["error"]["retryable"], true, "{result}");
    assert!(result["error"]["silentMs"].as_u64().unwrap_or(0) >= 3000, "{result}");
    assert!(took < Duration::from_secs(60), "well before the 120 s wall clock: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_stream_is_not_idle() {
    let project = fs_project();
    let model = FakeModel::start().await;
    // Eight events 700 ms apart: about 5 s of answer, never 2.5 s of silence.
    model.script("slow-but-steady", vec![slow(Duration::from_millis(700), text("steady answer"))]);
    let steady = with(action("s-1", "slow-but-steady", &["filesystem"], 60_000), json!({"idleTimeout": 2500}));
    let result = run_one(&project, &model, &[], steady).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["result"], "steady answer");
    assert!(result["duration"].as_u64().unwrap_or(0) >= 4900, "the answer took longer than idleTimeout: {result}");
}

/// A local page that takes `delay` to answer, and a project whose `fetch` server may read it.
async fn slow_page(delay: Duration) -> (Project, String) {
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            axum::response::Html("<html><body><p>The slow page answered.</p></body></html>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/slow", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let fetch = json!({"command": crate::support::tool("mcp-server-fetch"), "args": ["--allow-private-ips"]});
    (Project::new(json!({ "fetch": fetch })), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_longer_than_idle_but_shorter_than_tool_timeout_succeeds() {
    let (project, url) = slow_page(Duration::from_secs(5)).await;
    let model = FakeModel::start().await;
    let task = format!("fetch-slowly {url}");
    model.script(&task, vec![tool_use("mcp__fetch__fetch", json!({"url": url})), text("fetched")]);
    let fetch = with(action("t-1", &task, &["fetch"], 90_000), json!({"idleTimeout": 2000, "toolTimeout": 30_000}));
    let result = run_one(&project, &model, &[], fetch).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["toolsUsed"], json!(["fetch"]), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_open_longer_than_tool_timeout_ends_idle_timeout_in_phase_tool() {
    let (project, url) = slow_page(Duration::from_secs(60)).await;
    let model = FakeModel::start().await;
    let task = format!("fetch-forever {url}");
    model.script(&task, vec![tool_use("mcp__fetch__fetch", json!({"url": url})), text("fetched")]);
    let started = Instant::now();
    let fetch = with(action("t-2", &task, &["fetch"], 120_000), json!({"idleTimeout": 30_000, "toolTimeout": 3000}));
    let result = run_one(&project, &model, &["--kill-grace", "5s"], fetch).await;
    assert_eq!(kind(&result), "idle_timeout", "{result}");
    assert_eq!(result["error"]["phase"], "tool", "{result}");
    assert_eq!(result["error"]["tool"], "mcp__fetch__fetch", "{result}");
    // The graceful stop first: the interrupted CLI still reported what the first turn cost.
    assert!(result["costUsd"].as_f64().unwrap_or(0.0) > 0.0, "{result}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_a_failing_action_again_until_it_answers() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let overloaded = status(529, api_error_body("overloaded_error", "fake model: overloaded"));
    model.script("fails-twice", fail_then(2, overloaded, vec![text("third time lucky")]));
    let flaky = with(action("r-1", "fails-twice", &["filesystem"], 60_000), json!({"retries": 2}));
    // The CLI's own retries off: each of our attempts is one request.
    let result = run_one(&project, &model, &["--api-retries", "0", "--retry-backoff", "100ms"], flaky).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["result"], "third time lucky");
    assert_eq!(result["attempts"], 3, "{result}");
    assert_eq!(result["failedAttempts"], json!(["rate_limited", "rate_limited"]), "{result}");
    assert_eq!(model.requests_for("fails-twice").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_failure_is_tried_once() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("bad-request", vec![status(400, api_error_body("invalid_request_error", "fake model: bad"))]);
    let bad = with(action("r-2", "bad-request", &["filesystem"], 60_000), json!({"retries": 2}));
    let result = run_one(&project, &model, &["--api-retries", "0", "--retry-backoff", "100ms"], bad).await;
    assert_eq!(kind(&result), "claude_error", "{result}");
    assert_eq!(result["attempts"], 1, "{result}");
    assert_eq!(model.requests_for("bad-request").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_model_falls_back_and_the_result_names_the_model_that_answered() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("fall-back", |r: &Request| {
        if r.model() == "claude-fake-big" {
            status(529, api_error_body("overloaded_error", "fake model: overloaded"))
        } else {
            text(format!("answered by {}", r.model()))
        }
    });
    let fallback = with(
        action("f-1", "fall-back", &["filesystem"], 90_000),
        json!({"model": "claude-fake-big", "fallbackModels": ["claude-fake-small"]}),
    );
    let result = run_one(&project, &model, &["--api-retries", "5"], fallback).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["result"], "answered by claude-fake-small", "{result}");
    assert_eq!(result["model"], "claude-fake-small", "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_above_the_ceiling_is_refused_and_the_default_applies() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("costly", |_: &Request| with_usage(20_000, 2_000, text("a costly answer")));
    let args = ["--max-budget-usd-ceiling", "1", "--default-max-budget-usd", "0.01"];
    let mut daemon = Daemon::start(&project, &model, &args);
    daemon.send_action(with(action("c-1", "costly", &["filesystem"], 60_000), json!({"maxBudgetUsd": 2}))).await;
    let refused = daemon.next().await;
    assert_eq!(kind(&refused), "invalid_action", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap_or("").contains("/maxBudgetUsd"), "{refused}");
    assert_eq!(model.request_count(), 0, "a refused action never reaches the model");
    // No maxBudgetUsd: the default cap applies, and one answer costs more than it.
    daemon.send_action(action("c-2", "costly", &["filesystem"], 60_000)).await;
    let capped = daemon.next().await;
    assert_eq!(kind(&capped), "budget_exceeded", "{capped}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_on_one_worker_holds_back_new_workers_until_its_time() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let retry_after = 4;
    model.script("limited-first", fail_then(1, rate_limited(retry_after), vec![text("first done")]));
    model.script("waits-its-turn", vec![text("waited")]);
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "3"]);
    daemon.send_action(action("a", "limited-first", &["filesystem"], 60_000)).await;
    // The CLI retries after the server's retry-after; the breaker learned it from `api_retry`.
    let paused = daemon.next().await;
    assert_eq!(paused["type"], "dispatch_paused", "{paused}");
    assert_eq!(paused["reason"], "rate_limit", "{paused}");
    assert_eq!(paused["retryAfterMs"], retry_after * 1000, "{paused}");
    assert!(paused["until"].as_u64().is_some(), "{paused}");
    daemon.send_action(action("b", "waits-its-turn b", &["filesystem"], 60_000)).await;
    daemon.send_action(action("c", "waits-its-turn c", &["filesystem"], 60_000)).await;
    let lines = daemon.take(4).await;
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap_or("")).collect();
    assert_eq!(types.iter().filter(|t| **t == "dispatch_resumed").count(), 1, "{lines:?}");
    assert!(!types.contains(&"dispatch_paused"), "paused once: {lines:?}");
    for result in lines.iter().filter(|l| l["type"] == "worker_result") {
        assert_eq!(result["success"], true, "{result}");
    }
    // The request log: the rejected request, then no new worker's request before its retry time.
    let log = model.request_log();
    let rejected = log.iter().find(|(_, task)| task.contains("limited-first")).expect("the rejected request").0;
    let waiting: Vec<_> = log.iter().filter(|(_, task)| task.contains("waits-its-turn")).collect();
    assert_eq!(waiting.len(), 2, "{log:?}");
    for (at, task) in waiting {
        let after = at.duration_since(rejected);
        assert!(after >= Duration::from_secs(retry_after), "{task} asked the model {after:?} after the 429");
    }
}

/// Answers costing 0.02 USD each at the CLI's list price for the stand-in's model (3,000 input
/// tokens at $5/M and 200 output tokens at $25/M, as measured with the pinned CLI).
fn costs_two_cents() -> impl Fn(&Request) -> crate::support::fake_model::Step + Send + Sync + 'static {
    |_: &Request| with_usage(3_000, 200, text("two cents"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_budget_refuses_or_holds_the_third_action_and_a_restart_does_not_reset_it() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("two-cents", costs_two_cents());
    let budget = ["--budget", "0.05usd/hour", "--budget-estimate-usd", "0.025", "--max-workers", "1"];
    let refuse: Vec<&str> = budget.iter().copied().chain(["--budget-policy", "refuse"]).collect();
    let mut daemon = Daemon::start(&project, &model, &refuse);
    for id in ["one", "two"] {
        daemon.send_action(action(id, &format!("two-cents {id}"), &["filesystem"], 60_000)).await;
        let result = daemon.next().await;
        assert_eq!(result["success"], true, "{result}");
        let cost = result["costUsd"].as_f64().unwrap_or(0.0);
        assert!((cost - 0.02).abs() < 1e-6, "each action costs 0.02: {result}");
    }
    // 0.04 spent; the third reserves 0.025: the window has no room for an hour.
    daemon.send_action(action("three", "two-cents three", &["filesystem"], 60_000)).await;
    let refused = daemon.next().await;
    assert_eq!(kind(&refused), "budget_exhausted", "{refused}");
    assert_eq!(refused["error"]["retryable"], true, "{refused}");
    let after = refused["error"]["retryAfterMs"].as_u64().unwrap_or(0);
    assert!((3_000_000..=3_600_000).contains(&after), "when the first charge ages out: {refused}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
    assert_eq!(model.requests_for("two-cents three").len(), 0, "a refused action never reaches the model");

    // A restart (policy wait): the window still holds the two charges, so the action waits.
    let mut daemon = Daemon::start(&project, &model, &budget);
    daemon.send_action(action("four", "two-cents four", &["filesystem"], 60_000)).await;
    daemon.wait_for_log("budget: the action waits for room in its window").await;
    daemon.signal("TERM");
    let stopped = daemon.next().await;
    assert_eq!((stopped["taskId"].as_str(), kind(&stopped)), (Some("four"), "shutdown"), "{stopped}");
    assert_eq!(model.requests_for("two-cents four").len(), 0, "it never started");
    let (status, _, _) = daemon.finish().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_the_breaker_as_events_and_metrics_and_the_budget_as_metrics() {
    use crate::support::daemon::{Server, SseReader};
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("limited-first", fail_then(1, rate_limited(3), vec![with_usage(3_000, 200, text("first done"))]));
    model.script("stalls-once", fail_then(1, stall_mid_stream(), vec![text("second time")]));
    let server = Server::start(&project, &model, &["--budget", "1usd/hour"], &[]).await;
    let mut events = SseReader::open(&server.url("/v1/events"), None).await;
    let body = json!({"actions": [action("a", "limited-first", &["filesystem"], 60_000)]});
    let (status, answer) = crate::serve::post(&server, "/v1/actions", &body).await;
    assert_eq!(status, 202, "{answer}");
    let mut seen = Vec::new();
    loop {
        let (id, event, data) = events.next_event().await;
        if event.starts_with("dispatch_") {
            assert_eq!(id, None, "live only: {event} {data}");
            assert_eq!(data["type"], event.as_str(), "{data}");
        }
        seen.push(event.clone());
        if event == "result" {
            assert_eq!(data["success"], true, "{data}");
            break;
        }
    }
    let order: Vec<&str> = seen.iter().map(String::as_str).filter(|e| e.starts_with("dispatch_")).collect();
    assert_eq!(order, ["dispatch_paused", "dispatch_resumed"], "{seen:?}");
    assert!(seen.contains(&"budget".to_owned()), "the budget after the charge: {seen:?}");
    // A retried action: each failed attempt is an event, then its one result.
    let body = json!({"actions": [with(action("r", "stalls-once", &["filesystem"], 60_000), json!({"idleTimeout": 1500, "retries": 1}))]});
    let (status, answer) = crate::serve::post(&server, "/v1/actions", &body).await;
    assert_eq!(status, 202, "{answer}");
    let mut attempts = Vec::new();
    let result = loop {
        let (_, event, data) = events.next_event().await;
        match event.as_str() {
            "attempt" => attempts.push(data),
            "result" if data["taskId"] == "r" => break data,
            _ => {}
        }
    };
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["attempts"], 2, "{result}");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!((attempts[0]["taskId"].as_str(), attempts[0]["kind"].as_str()), (Some("r"), Some("idle_timeout")));
    let metrics = crate::serve::client().get(server.url("/metrics")).send().await.expect("GET /metrics");
    let metrics = metrics.text().await.expect("metrics text");
    assert!(metrics.contains("mcp_workers_dispatch_pauses_total 1"), "{metrics}");
    assert!(metrics.contains("mcp_workers_dispatch_paused 0"), "{metrics}");
    let spent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mcp_workers_budget_spent_usd{window=\"1usd/1h\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(spent.is_some_and(|usd| usd >= 0.02), "the results' costs are charged: {metrics}");
    server.signal("TERM");
    let (status, _) = server.wait().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_subscription_auth_a_rejected_rate_limit_event_pauses_and_the_run_goes_back_to_the_queue() {
    let project = fs_project();
    let model = FakeModel::start().await;
    // The reset is 4 s after the rejected request itself (the step is made when it arrives).
    let seen = std::sync::atomic::AtomicBool::new(false);
    model.script("oauth-limited", move |_: &Request| {
        if !seen.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return rate_limited(4);
        }
        // Rate-limit headers on a success too: an `allowed` event, which pauses nothing.
        let allowed =
            [("anthropic-ratelimit-unified-status", "allowed"), ("anthropic-ratelimit-unified-5h-utilization", "0.5")];
        crate::support::fake_model::with_headers(allowed, text("after the reset"))
    });
    // Subscription (OAuth) auth and no --bare: the CLI then emits `rate_limit_event`s.
    let mut daemon = Daemon::start_env(
        &project,
        &model,
        &["--no-bare", "--pass-env", "CLAUDE_CODE_OAUTH_TOKEN", "--api-retries", "0"],
        &["ANTHROPIC_API_KEY"],
        &[("CLAUDE_CODE_OAUTH_TOKEN", "dummy-oauth-token-for-the-stand-in")],
    );
    daemon.send_action(action("o-1", "oauth-limited", &["filesystem"], 60_000)).await;
    let paused = daemon.next().await;
    assert_eq!(
        (paused["type"].as_str(), paused["reason"].as_str()),
        (Some("dispatch_paused"), Some("rate_limit")),
        "{paused}"
    );
    let wait = paused["retryAfterMs"].as_u64().unwrap_or(0);
    assert!((2_000..=4_000).contains(&wait), "until resetsAt (whole seconds): {paused}");
    let lines = daemon.results(1).await;
    let result = &lines[0];
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["attempts"], 2, "the rate-limited run went back to the queue without `retries`: {result}");
    assert_eq!(result["failedAttempts"], json!(["rate_limited"]), "{result}");
    let log = model.request_log();
    let first = log.first().expect("a request").0;
    let second = log.get(1).expect("the second run's request").0;
    assert!(second.duration_since(first) >= Duration::from_millis(wait), "no new run before the reset: {log:?}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success(), "{status:?}");
    let types: Vec<&str> = rest.iter().filter_map(|l| l["type"].as_str()).collect();
    assert!(!types.contains(&"dispatch_paused"), "an allowed event pauses nothing: {rest:?}");
}

/// Waits until `n` requests for tasks containing `key` have reached the model.
async fn requests_reach(model: &FakeModel, key: &str, n: usize) {
    loop {
        // The count first: a request arriving after it ends the wait at once.
        let count = model.request_count();
        if model.requests_for(key).len() >= n {
            return;
        }
        model.wait_for_requests(count + 1).await;
    }
}

/// The result events of `serve`'s journal so far (from event 0), `n` of them, by task id.
async fn journal_results(
    server: &crate::support::daemon::Server,
    n: usize,
) -> std::collections::BTreeMap<String, Value> {
    let mut events = crate::support::daemon::SseReader::open(&server.url("/v1/events?after=0"), None).await;
    let (results, _) = events.results(n).await;
    let by_id: std::collections::BTreeMap<String, Value> =
        results.into_iter().map(|r| (r["taskId"].as_str().unwrap_or("").to_owned(), r)).collect();
    assert_eq!(by_id.len(), n, "one result per action: {by_id:?}");
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_serve_runs_an_interrupted_action_again_only_while_its_retries_allow() {
    use crate::support::daemon::Server;
    let project = fs_project();
    let model = FakeModel::start().await;
    // Held on its first run, answers on the next.
    model.script("again-once", fail_then(1, hang(), vec![text("answered after the restart")]));
    // Held on its first two runs: interrupted twice, with one retry.
    model.script("again-twice", fail_then(2, hang(), vec![text("a third run was never asked for")]));
    // Held, without retries.
    model.script("not-again", vec![hang()]);
    let args = ["--max-workers", "3"];
    let server = Server::start(&project, &model, &args, &[]).await;
    let body = json!({"actions": [
        with(action("once", "again-once", &["filesystem"], 300_000), json!({"retries": 1})),
        with(action("twice", "again-twice", &["filesystem"], 300_000), json!({"retries": 1})),
        action("never", "not-again", &["filesystem"], 300_000),
    ]});
    let (status, answer) = crate::serve::post(&server, "/v1/actions", &body).await;
    assert_eq!(status, 202, "{answer}");
    // Each worker asks the model only after its start was journalled: all three are running.
    for key in ["again-once", "again-twice", "not-again"] {
        requests_reach(&model, key, 1).await;
    }
    server.signal("KILL");
    let _ = server.wait().await;

    // The restart: `never` is answered at once, `once` and `twice` run again.
    let server = Server::start(&project, &model, &args, &[]).await;
    let results = journal_results(&server, 2).await;
    let once = &results["once"];
    assert_eq!((once["success"].as_bool(), once["result"].as_str()), (Some(true), Some("answered after the restart")));
    assert_eq!((&once["attempts"], &once["failedAttempts"]), (&json!(2), &json!(["interrupted"])), "{once}");
    let never = &results["never"];
    assert_eq!(kind(never), "interrupted", "{never}");
    assert_eq!(
        never["error"]["message"],
        "the daemon stopped (crash, kill, or silent past the node timeout) while this worker ran; it was not run again"
    );
    assert!(never.get("attempts").is_none() && never.get("failedAttempts").is_none(), "as before: {never}");
    // `twice` is held again: its second run reached the model.
    requests_reach(&model, "again-twice", 2).await;
    server.signal("KILL");
    let _ = server.wait().await;

    // Interrupted again with its one retry used: answered, never run a third time.
    let server = Server::start(&project, &model, &args, &[]).await;
    let results = journal_results(&server, 3).await;
    let twice = &results["twice"];
    assert_eq!(kind(twice), "interrupted", "{twice}");
    assert_eq!((&twice["attempts"], &twice["failedAttempts"]), (&json!(2), &json!(["interrupted"])), "{twice}");
    assert_eq!(results["once"], *once, "the earlier results stand");
    server.signal("TERM");
    let (status, _) = server.wait().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(model.requests_for("again-once").len(), 2);
    assert_eq!(model.requests_for("again-twice").len(), 2, "not run a third time");
    assert_eq!(model.requests_for("not-again").len(), 1, "without retries, never run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_attempts_retried_before_the_crash_count_as_used() {
    use crate::support::daemon::Server;
    let project = fs_project();
    let model = FakeModel::start().await;
    // The first attempt is overloaded (retryable), the retry hangs until the daemon is killed.
    let overloaded = status(529, api_error_body("overloaded_error", "fake model: overloaded"));
    model.script("retried-then-held", fail_then(1, overloaded, vec![hang()]));
    let args = ["--api-retries", "0", "--retry-backoff", "100ms"];
    let server = Server::start(&project, &model, &args, &[]).await;
    let body =
        json!({"actions": [with(action("rt", "retried-then-held", &["filesystem"], 300_000), json!({"retries": 1}))]});
    let (status, answer) = crate::serve::post(&server, "/v1/actions", &body).await;
    assert_eq!(status, 202, "{answer}");
    requests_reach(&model, "retried-then-held", 2).await;
    server.signal("KILL");
    let _ = server.wait().await;
    // Its one retry was used before the crash: answered, not run a third time.
    let server = Server::start(&project, &model, &args, &[]).await;
    let results = journal_results(&server, 1).await;
    let rt = &results["rt"];
    assert_eq!(kind(rt), "interrupted", "{rt}");
    assert_eq!((&rt["attempts"], &rt["failedAttempts"]), (&json!(2), &json!(["rate_limited"])), "{rt}");
    server.signal("TERM");
    assert!(server.wait().await.0.success());
    assert_eq!(model.requests_for("retried-then-held").len(), 2, "not run a third time");
}
