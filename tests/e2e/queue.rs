//! Black-box tests of the polling queue: the built `mcp-workers` binary, spoken to by the
//! official Python MCP SDK client over stdio and Streamable HTTP.

mod claude;
mod cli;

use std::time::{Duration, Instant};

use crate::support::{self, Driver, HttpServer, data_dir, enqueue, tasks};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);
/// What the server logs when a poll ends because its client cancelled it or went away.
const CANCEL_SEEN: &str = "poll ended without a task";

fn poll_instructions(w: &str) -> String {
    format!(
        "immediately call worker_poll with worker_id {w} - do not output any commentary, progress messages, or explanations to the user - do not break this tool call chain"
    )
}

fn task_by_id<'a>(all: &'a [Value], id: &str) -> &'a Value {
    all.iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("task {id} not in {all:?}"))
}

/// create, poll (a task), submit, poll (idle after the timeout): the original's contract.
fn full_cycle(driver: &mut Driver, dir: &std::path::Path, timeout_secs: f64) {
    let ids = enqueue(dir, &["What is 7 x 8?"]);
    let w = driver.create_worker();
    assert!(w.starts_with("worker_"), "{w}");

    let got = driver.call("p1", "worker_poll", json!({"worker_id": w}));
    let reply = &got["json"];
    assert_eq!(got["is_error"], false);
    assert_eq!(got["count"], 1, "one text content");
    assert_eq!(reply["task_id"], ids[0].as_str());
    assert_eq!(reply["prompt"], "What is 7 x 8?");
    assert_eq!(reply["worker_id"], w.as_str());
    assert_eq!(reply["attempt"], 1);
    assert_eq!(
        reply["instructions"],
        format!(
            "process this prompt and immediately call worker_submit with worker_id {w}, task_id {}, and your response - keep your response brief and direct, maximum 2-3 sentences - do not output the prompt or response to the user - do not break this tool call chain",
            ids[0]
        )
    );
    assert!(got["text"].as_str().unwrap().starts_with("{\n  \"worker_id\": "), "pretty-printed: {got}");

    let sub = driver.call("s1", "worker_submit", json!({"worker_id": w, "task_id": ids[0], "response": "56"}));
    assert_eq!(sub["is_error"], false);
    assert_eq!(sub["json"], json!({"worker_id": w, "submitted": true, "instructions": poll_instructions(&w)}));

    let started = Instant::now();
    let idle = driver.call("p2", "worker_poll", json!({"worker_id": w}));
    let waited = started.elapsed().as_secs_f64();
    assert_eq!(idle["json"], json!({"worker_id": w, "instructions": poll_instructions(&w)}));
    assert!(waited >= timeout_secs * 0.9 && waited < timeout_secs + 5.0, "idle poll took {waited}s");

    let done = tasks(dir);
    let t = task_by_id(&done, &ids[0]);
    assert_eq!((t["state"].as_str(), t["response"].as_str()), (Some("done"), Some("56")));
}

#[test]
fn stdio_create_poll_submit_and_idle_timeout() {
    let dir = data_dir();
    let mut driver = Driver::stdio(dir.path(), &["--timeout=1"]);
    driver.send(json!({"op": "list_tools"}));
    let tools = driver.expect(|e| e["event"] == "tools", LONG);
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["worker_create", "worker_poll", "worker_submit"]);
    assert_eq!(tools["tools"][2]["inputSchema"]["required"], json!(["worker_id", "task_id", "response"]));
    full_cycle(&mut driver, dir.path(), 1.0);
}

#[test]
fn http_create_poll_submit_and_idle_timeout() {
    let dir = data_dir();
    let server = HttpServer::start(dir.path(), &["--timeout", "1s"]);
    let mut driver = Driver::http(&server.url);
    full_cycle(&mut driver, dir.path(), 1.0);
}

/// A poll waiting in a server (shown by its progress notifications) gets a task that
/// `mcp-workers enqueue` adds from another process, long before the poll timeout.
fn enqueue_reaches_waiting_poll(driver: &mut Driver, dir: &std::path::Path) {
    let w = driver.create_worker();
    driver.start("p", "worker_poll", json!({"worker_id": w}), true);
    driver.expect(|e| e["event"] == "progress" && e["id"] == "p", LONG);
    let started = Instant::now();
    let ids = enqueue(dir, &["cross-process"]);
    let got = driver.outcome("p", LONG);
    assert_eq!(got["json"]["task_id"], ids[0].as_str(), "{got}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn http_waiting_poll_gets_task_enqueued_by_another_process() {
    let dir = data_dir();
    let server = HttpServer::start(dir.path(), &["--timeout=50", "--progress-interval", "200ms"]);
    let mut driver = Driver::http(&server.url);
    enqueue_reaches_waiting_poll(&mut driver, dir.path());
}

#[test]
fn stdio_waiting_poll_gets_task_enqueued_by_another_process() {
    let dir = data_dir();
    let mut driver = Driver::stdio(dir.path(), &["--timeout", "50", "--progress-interval=200ms"]);
    enqueue_reaches_waiting_poll(&mut driver, dir.path());
}

/// Cancel a waiting poll, then queue a task: the cancelled poll must not take it; the next
/// worker gets it at once, first attempt.
fn cancelled_poll_takes_nothing(driver: &mut Driver, dir: &std::path::Path, server_saw_it: impl Fn()) {
    let w1 = driver.create_worker();
    driver.start("p1", "worker_poll", json!({"worker_id": w1}), true);
    driver.expect(|e| e["event"] == "progress" && e["id"] == "p1", LONG);
    driver.send(json!({"op": "cancel", "id": "p1"}));
    let ended = driver.outcome("p1", LONG);
    assert_eq!(ended["event"], "cancelled", "{ended}");
    // The task must not exist before the server has seen the cancellation.
    server_saw_it();
    let ids = enqueue(dir, &["not for the cancelled poll"]);
    let r = driver.call("create2", "worker_create", json!({}));
    let w2 = r["json"]["worker_id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let got = driver.call("p2", "worker_poll", json!({"worker_id": w2}));
    assert_eq!(got["json"]["task_id"], ids[0].as_str(), "{got}");
    assert_eq!(got["json"]["attempt"], 1, "{got}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn stdio_cancelled_poll_loses_no_task() {
    let dir = data_dir();
    let mut driver = Driver::stdio(dir.path(), &["--timeout=50", "--progress-interval=100ms"]);
    let log = driver.stderr_log();
    cancelled_poll_takes_nothing(&mut driver, dir.path(), || support::wait_for_line(&log, CANCEL_SEEN));
}

#[test]
fn http_cancelled_poll_loses_no_task() {
    let dir = data_dir();
    let server = HttpServer::start(dir.path(), &["--timeout=50", "--progress-interval=100ms"]);
    let mut driver = Driver::http_mode(&server.url, "legacy");
    cancelled_poll_takes_nothing(&mut driver, dir.path(), || server.wait_log(CANCEL_SEEN));
}

#[test]
fn http_cancelled_poll_loses_no_task_on_the_newest_protocol() {
    let dir = data_dir();
    let server = HttpServer::start(dir.path(), &["--timeout=50", "--progress-interval=100ms"]);
    let mut driver = Driver::http_mode(&server.url, "auto");
    cancelled_poll_takes_nothing(&mut driver, dir.path(), || server.wait_log(CANCEL_SEEN));
}

#[test]
fn vanished_worker_task_is_redelivered_after_the_lease_and_completed_once() {
    let dir = data_dir();
    let server = HttpServer::start(dir.path(), &["--timeout=20", "--lease=1s"]);
    let ids = enqueue(dir.path(), &["survive me"]);
    let mut a = Driver::http(&server.url);
    let wa = a.create_worker();
    let got = a.call("p", "worker_poll", json!({"worker_id": wa}));
    assert_eq!(got["json"]["task_id"], ids[0].as_str());
    a.kill();

    let mut b = Driver::http(&server.url);
    let wb = b.create_worker();
    let again = b.call("p", "worker_poll", json!({"worker_id": wb}));
    assert_eq!(again["json"]["task_id"], ids[0].as_str(), "{again}");
    assert_eq!(again["json"]["attempt"], 2);
    let sub = b.call("s", "worker_submit", json!({"worker_id": wb, "task_id": ids[0], "response": "from b"}));
    assert_eq!(sub["json"]["submitted"], true, "{sub}");

    // The first worker comes back late with its answer: refused, nothing changes.
    let late = b.call("late", "worker_submit", json!({"worker_id": wa, "task_id": ids[0], "response": "from a"}));
    assert_eq!(late["is_error"], true, "{late}");
    let again = b.call("again", "worker_submit", json!({"worker_id": wb, "task_id": ids[0], "response": "twice"}));
    assert_eq!(again["is_error"], true, "{again}");
    assert!(again["json"]["error"].as_str().unwrap().contains("already submitted"), "{again}");
    assert_eq!(again["json"]["instructions"], poll_instructions(&wb));
    let all = tasks(dir.path());
    let t = task_by_id(&all, &ids[0]);
    assert_eq!(
        (t["state"].as_str(), t["response"].as_str(), t["attempts"].as_u64()),
        (Some("done"), Some("from b"), Some(2))
    );
}

#[test]
fn kill_9_with_tasks_waiting_and_leased_then_restart_delivers_all() {
    let dir = data_dir();
    let ids = enqueue(dir.path(), &["one", "two", "three"]);
    let mut server = HttpServer::start(dir.path(), &["--timeout=20", "--lease=2s"]);
    let mut a = Driver::http(&server.url);
    let wa = a.create_worker();
    let got = a.call("p", "worker_poll", json!({"worker_id": wa}));
    assert_eq!(got["json"]["task_id"], ids[0].as_str());
    server.kill9();
    a.kill();

    let before = tasks(dir.path());
    let states: Vec<&str> = before.iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(states, ["leased", "queued", "queued"]);

    let server = HttpServer::start(dir.path(), &["--timeout=20", "--lease=2s"]);
    let mut b = Driver::http(&server.url);
    let wb = b.create_worker();
    let mut delivered = Vec::new();
    for i in 0..3 {
        let got = b.call(&format!("p{i}"), "worker_poll", json!({"worker_id": wb}));
        let task_id = got["json"]["task_id"].as_str().unwrap_or_else(|| panic!("no task: {got}")).to_owned();
        let sub =
            b.call(&format!("s{i}"), "worker_submit", json!({"worker_id": wb, "task_id": task_id, "response": "ok"}));
        assert_eq!(sub["json"]["submitted"], true, "{sub}");
        let attempt = got["json"]["attempt"].as_u64();
        assert_eq!(attempt, Some(if task_id == ids[0] { 2 } else { 1 }), "{got}");
        delivered.push(task_id);
    }
    // The leased task comes back once its lease runs out (before or after the others, depending
    // on how long the restart took).
    delivered.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(delivered, all);
    assert!(tasks(dir.path()).iter().all(|t| t["state"] == "done"));
}

#[test]
fn malformed_calls_get_clear_errors_and_change_nothing() {
    let dir = data_dir();
    let ids = enqueue(dir.path(), &["keep me"]);
    let mut d = Driver::stdio(dir.path(), &["--timeout=1", "--max-response-bytes=1000"]);
    let w = d.create_worker();
    let got = d.call("p", "worker_poll", json!({"worker_id": w}));
    assert_eq!(got["json"]["task_id"], ids[0].as_str());
    let before = tasks(dir.path());

    let cases = [
        ("worker_poll", json!({}), "Missing required argument worker_id"),
        ("worker_poll", json!({"worker_id": 5}), "must be a string, not a number"),
        ("worker_poll", json!({"worker_id": "worker_1_nobodyxyz"}), "Worker with ID worker_1_nobodyxyz not found."),
        ("worker_submit", json!({"worker_id": w, "task_id": ids[0]}), "Missing required argument response"),
        (
            "worker_submit",
            json!({"worker_id": w, "task_id": ids[0], "response": ["x"]}),
            "must be a string, not an array",
        ),
        ("worker_submit", json!({"worker_id": "worker_1_nobodyxyz", "task_id": ids[0], "response": "x"}), "not found"),
        (
            "worker_submit",
            json!({"worker_id": w, "task_id": "task_1_nothingxx", "response": "x"}),
            "Task with ID task_1_nothingxx not found.",
        ),
        ("worker_submit", json!({"worker_id": w, "task_id": ids[0], "response": "x".repeat(5000)}), "too large"),
    ];
    for (i, (tool, args, needle)) in cases.into_iter().enumerate() {
        let r = d.call(&format!("c{i}"), tool, args);
        assert_eq!(r["is_error"], true, "{r}");
        let error = r["json"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{needle:?} not in {r}");
        assert!(r["json"]["instructions"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    }
    d.start("u", "no_such_tool", json!({}), false);
    let unknown = d.outcome("u", LONG);
    assert!(unknown["event"] == "error" || unknown["is_error"] == true, "{unknown}");
    assert_eq!(tasks(dir.path()), before, "no state change");
    // The lease still holds: the real answer goes through.
    let ok = d.call("ok", "worker_submit", json!({"worker_id": w, "task_id": ids[0], "response": "fine"}));
    assert_eq!(ok["json"]["submitted"], true, "{ok}");
}

#[test]
fn stdio_server_exits_at_once_when_stdin_closes_even_with_a_poll_waiting() {
    use std::io::{BufRead, BufReader, Write};
    let dir = data_dir();
    let mut child = std::process::Command::new(support::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["mcp", "queue", "--timeout=50", "--progress-interval=50ms"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, v: Value| writeln!(stdin, "{v}").unwrap();
    let mut line = String::new();
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
    );
    stdout.read_line(&mut line).unwrap();
    send(&mut stdin, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "worker_create", "arguments": {}}}),
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap();
    let text: Value = serde_json::from_str(reply["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "worker_poll", "arguments": {"worker_id": text["worker_id"]}, "_meta": {"progressToken": "p"}}}),
    );
    // A progress notification comes only from a poll that is waiting.
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("notifications/progress"), "the poll waits: {line}");
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still running after stdin closed");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_timeout_is_rejected_at_start_up() {
    for bad in ["--timeout=0", "--timeout=soon", "--timeout=-3", "--timeout="] {
        let out = std::process::Command::new(support::BIN)
            .args(["mcp", "queue", bad])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--timeout"), "{bad}: {stderr}");
    }
    let dir = data_dir();
    for good in [["--timeout=59"].as_slice(), &["--timeout", "59"], &["--timeout", "45s"]] {
        let out = std::process::Command::new(support::BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["mcp", "queue"])
            .args(good)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{good:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn http_refuses_foreign_host_and_origin() {
    let dir = data_dir();
    let server = HttpServer::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        for (host, origin) in [(Some("evil.test"), None), (None, Some("http://evil.test"))] {
            let mut req = client
                .post(&server.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body);
            if let Some(h) = host {
                req = req.header("host", h);
            }
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 403, "{host:?} {origin:?}");
        }
    });
}

#[test]
fn demo_tasks_come_while_a_worker_is_active_at_most_three_waiting() {
    let dir = data_dir();
    let mut d = Driver::stdio(dir.path(), &["--timeout=10", "--demo-tasks", "--demo-interval=150ms"]);
    let w = d.create_worker();
    let got = d.call("p", "worker_poll", json!({"worker_id": w}));
    let prompt = got["json"]["prompt"].as_str().unwrap_or_else(|| panic!("no demo task: {got}"));
    assert!(mcp_workers::mcp::queue::demo::PROMPTS.contains(&prompt), "{prompt}");
    // Without polling, the source stops at 3 waiting tasks.
    std::thread::sleep(Duration::from_millis(1500));
    let all = tasks(dir.path());
    let queued = all.iter().filter(|t| t["state"] == "queued").count();
    assert_eq!(queued, 3, "{all:?}");
    let mut prompts: Vec<&str> = all.iter().filter_map(|t| t["prompt"].as_str()).collect();
    prompts.sort_unstable();
    prompts.dedup();
    assert_eq!(prompts.len(), all.len(), "no prompt twice");
}
