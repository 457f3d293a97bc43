//! `mcp-workers run` end to end: the built daemon, the real Claude Code CLI, the real
//! server-filesystem, and the scripted stand-in model.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::daemon::{Daemon, Project, action};
use crate::support::fake_model::{FakeModel, Gate, Request, api_error_body, gated, hang, status, text, tool_use};

fn fs_project() -> Project {
    Project::new(json!({ "filesystem": Project::filesystem_entry() }))
}

fn error_kind(result: &Value) -> &str {
    result["error"]["kind"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_writes_a_file_through_the_real_filesystem_server() {
    let project = fs_project();
    std::fs::write(project.root.join("profiles/default.md"), "PROFILE-MARKER: be brief").unwrap();
    let model = FakeModel::start().await;
    let target = project.workspace().join("hello.txt");
    let path = target.to_string_lossy().into_owned();
    let tmp = project.tmp();
    model.script("write-hello", move |r: &Request| {
        if r.turn() > 0 {
            return text("Wrote hello.txt");
        }
        // While the worker runs: its MCP config exists, is private, and holds only what was asked.
        let configs: Vec<_> = crate::support::daemon::worker_dirs(&tmp)
            .into_iter()
            .map(|dir| dir.join("mcp.json"))
            .filter(|p| p.exists())
            .collect();
        assert_eq!(configs.len(), 1, "one worker, one config");
        let mode = std::fs::metadata(&configs[0]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the MCP config is readable by its owner only");
        let config: Value = serde_json::from_str(&std::fs::read_to_string(&configs[0]).unwrap()).unwrap();
        assert_eq!(config["mcpServers"].as_object().unwrap().keys().collect::<Vec<_>>(), ["filesystem"]);
        tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "hello from a worker"}))
    });
    let mut daemon = Daemon::start(&project, &model, &[]);
    daemon.send_action(action("t-1", "write-hello into the workspace", &["filesystem"], 60_000)).await;
    let result = daemon.next().await;
    assert_eq!(result["type"], "worker_result", "{result}");
    assert_eq!(result["taskId"], "t-1");
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["toolsUsed"], json!(["write_file"]));
    assert_eq!(result["result"], "Wrote hello.txt");
    assert_eq!(result["turns"], 2);
    assert!(result["costUsd"].as_f64().unwrap() > 0.0, "{result}");
    assert_eq!(result["servers"]["filesystem"]["status"], "connected");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello from a worker");
    assert_eq!(project.worker_dirs(), Vec::<std::path::PathBuf>::new(), "the worker's directory and config are gone");
    let request = &model.requests_for("write-hello")[0];
    assert!(request.system_text().contains("PROFILE-MARKER"), "the default profile is in the system prompt");
    let tools = request.tools();
    assert!(tools.iter().all(|t| !matches!(t.as_str(), "Bash" | "Edit" | "Write")), "no built-in tools: {tools:?}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
    assert_eq!(project.scratch_roots(), Vec::<std::path::PathBuf>::new(), "the daemon's scratch directory is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_model_is_stopped_at_the_deadline_and_its_process_group_is_gone() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("never-answers", vec![hang()]);
    let mut daemon = Daemon::start(&project, &model, &["--kill-grace", "2s"]);
    let daemon_pid = daemon.pid();
    let sent = Instant::now();
    // Long enough that, even on a loaded machine, the worker reaches the model well before it.
    daemon.send_action(action("slow", "never-answers", &["filesystem"], 15_000)).await;
    model.wait_for_requests(1).await;
    // The worker is running: Claude Code and its MCP server carry the marker.
    let running = project.processes(Some(daemon_pid));
    assert!(running.len() >= 2, "claude and its filesystem server: {running:?}");
    let result = daemon.next().await;
    let took = sent.elapsed();
    assert_eq!(error_kind(&result), "timeout", "{result}");
    assert_eq!(result["error"]["retryable"], true);
    assert_eq!(result["success"], false);
    assert!(took >= Duration::from_millis(15_000), "not before the deadline: {took:?}");
    assert!(took < Duration::from_millis(15_000 + 2_000 + 3_000), "within the grace (plus slack): {took:?}");
    assert_eq!(project.processes(Some(daemon_pid)), vec![], "nothing of the worker's group is left");
    assert_eq!(project.worker_dirs(), Vec::<std::path::PathBuf>::new());
    daemon.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_lines_get_one_answer_each_and_the_daemon_goes_on() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("after-the-storm", vec![text("still here")]);
    let mut daemon = Daemon::start(&project, &model, &["--max-line-bytes", "65536"]);
    let huge = format!(
        "{{\"actions\":[{{\"type\":\"spawn_worker\",\"task\":\"{}\",\"servers\":[\"filesystem\"]}}]}}",
        "x".repeat(70_000)
    );
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let deep_object = format!("{{\"actions\":[{}1{}]}}", "{\"a\":".repeat(300), "}".repeat(300));
    let kinds: Vec<String> = vec![
        "not json".into(),
        "{\"actions\":".into(),
        "[]".into(),
        "{}".into(),
        "{\"actions\":{}}".into(),
        "{\"actions\":[7]}".into(),
        json!({"actions":[{"type":"spawn_worker","task":5,"servers":"filesystem"}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","servers":["filesystem"]}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t"}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"","servers":["filesystem"]}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":[]}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":["nope"]}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":["filesystem"],"timeout":-1}]}).to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":["filesystem"],"timeout":999_999_999_999u64}]})
            .to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":["filesystem"],"profile":"../../etc/passwd"}]})
            .to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":["filesystem"],"profile":"missing"}]})
            .to_string(),
        json!({"actions":[{"type":"spawn_worker","task":"t","servers":["filesystem"],"extra":true}]}).to_string(),
        json!({"actions":[{"type":"other_consumer","payload":{"x":1}}]}).to_string(),
        huge,
        deep,
        deep_object,
        "\u{0}\u{1}binary".into(),
    ];
    let total = 1000;
    for i in 0..total {
        daemon.send(&kinds[i % kinds.len()]).await;
    }
    let answers = daemon.take(total).await;
    let mut lines = BTreeSet::new();
    for answer in &answers {
        let line = answer["line"].as_u64().unwrap_or_else(|| panic!("answer without a line number: {answer}"));
        assert!(lines.insert(line), "line {line} answered twice");
        match answer["type"].as_str() {
            Some("worker_result") => {
                assert_eq!(answer["success"], false, "{answer}");
                let kind = error_kind(answer);
                assert!(["invalid_action", "unknown_server"].contains(&kind), "{answer}");
                if kind == "invalid_action" {
                    assert!(answer["result"].as_str().unwrap().starts_with("Invalid spawn_worker action"), "{answer}");
                } else {
                    assert!(answer["result"].as_str().unwrap().starts_with("MCP server not found: nope"), "{answer}");
                }
            }
            Some("error") => assert!(answer["error"]["kind"].is_string(), "{answer}"),
            Some("action_ack") => assert_eq!(answer["actionType"], "other_consumer"),
            other => panic!("unexpected answer type {other:?}: {answer}"),
        }
    }
    assert_eq!(lines, (1..=total as u64).collect::<BTreeSet<_>>());
    daemon.send_action(action("valid", "after-the-storm", &["filesystem"], 60_000)).await;
    let result = daemon.next().await;
    assert_eq!((result["taskId"].as_str(), result["success"].as_bool()), (Some("valid"), Some(true)), "{result}");
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
    assert_eq!(model.requests().len(), 1, "no malformed line reached a model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_workers_report_in_completion_order_with_their_own_ids() {
    let project = fs_project();
    let model = FakeModel::start().await;
    let gates: Vec<Gate> = (0..8).map(|_| Gate::new()).collect();
    for (i, gate) in gates.iter().enumerate() {
        model.script(&format!("job-{i}-"), vec![gated(gate, text(format!("answer for job {i}")))]);
    }
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "8"]);
    let actions: Vec<Value> =
        (0..8).map(|i| action(&format!("id-{i}"), &format!("job-{i}-please"), &["filesystem"], 120_000)).collect();
    daemon.send(&json!({ "actions": actions }).to_string()).await;
    // All eight are with the model at once: they run concurrently.
    model.wait_for_requests(8).await;
    // Release them in an order unlike the input; each result must come in that order.
    for i in [5, 2, 7, 0, 3, 6, 1, 4] {
        gates[i].open();
        let result = daemon.next().await;
        assert_eq!(result["taskId"], format!("id-{i}"), "{result}");
        assert_eq!(result["index"], i, "{result}");
        assert_eq!(result["result"], format!("answer for job {i}"), "{result}");
        assert_eq!(result["success"], true);
    }
    let (status, rest, _) = daemon.finish().await;
    assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_every_unfinished_action_a_shutdown_result_and_leaves_no_child() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("hold-", vec![hang()]);
    let mut daemon = Daemon::start(&project, &model, &["--max-workers", "3", "--kill-grace", "2s"]);
    let daemon_pid = daemon.pid();
    for i in 0..5 {
        daemon.send_action(action(&format!("s-{i}"), &format!("hold-{i}"), &["filesystem"], 300_000)).await;
    }
    model.wait_for_requests(3).await;
    assert!(project.processes(Some(daemon_pid)).len() >= 6, "three workers with their servers");
    let signalled = Instant::now();
    daemon.signal("TERM");
    let results = daemon.take(5).await;
    let took = signalled.elapsed();
    let ids: BTreeSet<&str> = results.iter().map(|r| r["taskId"].as_str().unwrap()).collect();
    assert_eq!(ids, (0..5).map(|i| format!("s-{i}")).collect::<Vec<_>>().iter().map(String::as_str).collect());
    for result in &results {
        assert_eq!(error_kind(result), "shutdown", "{result}");
        assert_eq!(result["error"]["retryable"], true);
    }
    assert!(took < Duration::from_secs(2 + 5), "graceful then forced, within the grace: {took:?}");
    // It exits by itself, though its stdin is still open.
    let status = daemon.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (_, rest, _) = daemon.finish().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(project.processes(None), vec![], "no child left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_fails_the_worker_with_the_reason() {
    let project = Project::new(json!({
        "broken": {"command": "/nonexistent/mcp-server", "args": []},
        "filesystem": Project::filesystem_entry()
    }));
    let model = FakeModel::start().await;
    model.script("needs-broken", vec![text("should not be asked")]);
    let mut daemon = Daemon::start(&project, &model, &[]);
    daemon.send_action(action("b", "needs-broken", &["filesystem", "broken"], 60_000)).await;
    let result = daemon.next().await;
    assert_eq!(error_kind(&result), "mcp_unavailable", "{result}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains("broken (failed"), "{message}");
    assert_eq!(result["servers"]["broken"]["status"], "failed");
    assert_eq!(result["servers"]["filesystem"]["status"], "connected");
    // The CLI may send its first request as it prints `init`; the worker is stopped right there.
    assert!(model.requests().len() <= 1, "no model turn is spent on a doomed task");
    daemon.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_max_turns_and_denied_tools_are_reported_honestly() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("bad-request", vec![status(400, api_error_body("invalid_request_error", "scripted refusal"))]);
    model.script("overloaded", vec![status(529, api_error_body("overloaded_error", "busy"))]);
    model.script("loops", |_r: &Request| tool_use("mcp__filesystem__list_allowed_directories", json!({})));
    model.script(
        "outside",
        vec![tool_use("mcp__telegram__tg_send", json!({"chat_id": 1, "text": "hi"})), text("could not send")],
    );
    let mut daemon = Daemon::start(&project, &model, &["--api-retries", "0", "--max-workers", "4"]);
    daemon.send_action(action("e400", "bad-request", &["filesystem"], 60_000)).await;
    daemon.send_action(action("e529", "overloaded", &["filesystem"], 60_000)).await;
    daemon
        .send_action(
            json!({"type":"spawn_worker","taskId":"turns","task":"loops","servers":["filesystem"],"maxTurns":2}),
        )
        .await;
    daemon.send_action(action("deny", "outside", &["filesystem"], 60_000)).await;
    // The 529 also pauses starts briefly (`dispatch_*` lines, skipped here).
    let mut results = daemon.results(4).await;
    results.sort_by_key(|r| r["taskId"].as_str().unwrap().to_owned());
    let by_id = |id: &str| results.iter().find(|r| r["taskId"] == id).unwrap();
    let r = by_id("e400");
    assert_eq!((error_kind(r), &r["error"]["retryable"]), ("claude_error", &json!(false)), "{r}");
    assert!(r["result"].as_str().unwrap().contains("scripted refusal"), "{r}");
    let r = by_id("e529");
    assert_eq!((error_kind(r), &r["error"]["retryable"]), ("rate_limited", &json!(true)), "{r}");
    let r = by_id("turns");
    assert_eq!(error_kind(r), "max_turns", "{r}");
    assert_eq!(r["toolsUsed"], json!(["list_allowed_directories"]), "{r}");
    let r = by_id("deny");
    assert_eq!(r["toolsUsed"], json!([]), "a refused call is not a used tool: {r}");
    daemon.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_task_goes_to_the_cli_whole() {
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("big-task-", vec![text("read it all")]);
    let mut daemon = Daemon::start(&project, &model, &[]);
    let task = format!("big-task-{}", "y".repeat(200 * 1024));
    daemon.send_action(action("big", &task, &["filesystem"], 60_000)).await;
    let result = daemon.next().await;
    assert_eq!(result["success"], true, "{result}");
    let seen = model.requests_for("big-task-")[0].task();
    assert!(seen.contains(&task), "the model saw the whole task ({} of {} bytes)", seen.len(), task.len());
    daemon.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_reader_of_stdout_goes_away_the_daemon_stops_its_workers_and_exits() {
    use tokio::io::AsyncWriteExt;
    let project = fs_project();
    let model = FakeModel::start().await;
    model.script("orphaned-", vec![hang()]);
    let mut child = project
        .command(&model, &["run"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = json!({"actions": [action("o", "orphaned-1", &["filesystem"], 300_000)]}).to_string();
    stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    model.wait_for_requests(1).await;
    drop(child.stdout.take());
    // The next output (an answer to a bad line) cannot be written: that is a shutdown.
    stdin.write_all(b"not json\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(project.processes(None), vec![], "its worker is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_in_the_workspace_settings_never_run_with_or_without_bare() {
    let project = fs_project();
    // A worker with filesystem access could write this file; the next worker must not obey it.
    // (Checked by hand: without `--bare` or `--setting-sources ""`, the CLI runs this hook.)
    let hook_marker = project.root.join("hook-ran");
    let hook = json!({"type": "command", "command": format!("touch {}", hook_marker.display())});
    let settings = json!({"hooks": {"SessionStart": [{"hooks": [hook]}]}});
    std::fs::create_dir_all(project.workspace().join(".claude")).unwrap();
    std::fs::write(project.workspace().join(".claude/settings.json"), settings.to_string()).unwrap();
    let model = FakeModel::start().await;
    model.script("settings-", vec![text("fine")]);
    for (i, args) in [&[][..], &["--no-bare"][..]].into_iter().enumerate() {
        let mut daemon = Daemon::start(&project, &model, args);
        daemon.send_action(action(&format!("h{i}"), &format!("settings-{i}"), &["filesystem"], 60_000)).await;
        let result = daemon.next().await;
        assert_eq!(
            (result["success"].as_bool(), result["result"].as_str()),
            (Some(true), Some("fine")),
            "{args:?}: {result}"
        );
        assert!(!hook_marker.exists(), "{args:?}: a hook from the workspace's settings ran");
        daemon.finish().await;
    }
}
