//! The polling queue drained by spawned Claude Code workers: 20 prompts are enqueued, then
//! `mcp-workers run` gets two `spawn_worker` actions with `servers: ["queue"]`. Each worker is the
//! real CLI, connected to `mcp-workers mcp queue` through the shipped registry entry, with the
//! fake model driving the create / poll / submit loop. Every task ends with exactly one response.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::support;
use crate::support::fake_model::{FakeModel, Request, Script, Step, text, tool_use};

const TASK: &str = "Drain the polling queue";

/// The model's side of the loop: register, poll, answer each prompt, stop after an idle poll.
fn worker_step(request: &Request) -> Step {
    let Some((result, is_error)) = request.last_tool_results().pop() else {
        return tool_use("mcp__queue__worker_create", json!({}));
    };
    let reply: Value = serde_json::from_str(&result).unwrap_or_else(|_| panic!("tool result is not JSON: {result}"));
    assert!(!is_error, "queue tool failed: {result}");
    let worker_id = reply["worker_id"].as_str().unwrap_or_else(|| panic!("no worker_id: {result}"));
    if let (Some(task_id), Some(prompt)) = (reply["task_id"].as_str(), reply["prompt"].as_str()) {
        let response = format!("answer to: {prompt}");
        return tool_use(
            "mcp__queue__worker_submit",
            json!({"worker_id": worker_id, "task_id": task_id, "response": response}),
        );
    }
    let registered_or_submitted = request.turn() == 1 || reply["submitted"] == true;
    if registered_or_submitted {
        tool_use("mcp__queue__worker_poll", json!({"worker_id": worker_id}))
    } else {
        text("The queue is empty.")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spawned_claude_workers_drain_twenty_prompts() {
    let tools = support::tools_bin();
    let root = support::repo_root();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let workspace = dir.path().join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();

    let prompts: Vec<String> = (1..=20).map(|i| format!("prompt number {i}")).collect();
    let out = std::process::Command::new(support::bin())
        .arg("--data-dir")
        .arg(&data)
        .arg("enqueue")
        .args(&prompts)
        .output()
        .expect("enqueue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let model = FakeModel::start().await;
    model.script(TASK, Script::dynamic(worker_step));

    let mut daemon = Command::new(support::bin())
        .arg("--root")
        .arg(&root)
        .arg("--data-dir")
        .arg(&data)
        .arg("run")
        .arg("--claude")
        .arg(tools.join("claude"))
        .arg("--workspace")
        .arg(&workspace)
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("ANTHROPIC_API_KEY", "dummy")
        .env("MCP_QUEUE_POLL_TIMEOUT", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mcp-workers run");
    let actions = json!({"actions": [
        {"type": "spawn_worker", "task": format!("{TASK} (worker A)"), "servers": ["queue"], "timeout": 120000, "taskId": "a"},
        {"type": "spawn_worker", "task": format!("{TASK} (worker B)"), "servers": ["queue"], "timeout": 120000, "taskId": "b"},
    ]});
    let mut stdin = daemon.stdin.take().unwrap();
    stdin.write_all(format!("{actions}\n").as_bytes()).await.unwrap();
    let mut lines = BufReader::new(daemon.stdout.take().unwrap()).lines();
    let mut results = Vec::new();
    while results.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(240), lines.next_line())
            .await
            .expect("worker results in time")
            .expect("read stdout")
            .expect("daemon ended early");
        let v: Value = serde_json::from_str(&line).expect("JSON line");
        if v["type"] == "worker_result" {
            results.push(v);
        }
    }
    drop(stdin);
    for r in &results {
        assert_eq!(r["success"], true, "{r}");
        let used: Vec<&str> = r["toolsUsed"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(used.contains(&"worker_create") && used.contains(&"worker_poll"), "{r}");
    }

    let out = std::process::Command::new(support::bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["tasks", "--json"])
        .output()
        .expect("tasks");
    let tasks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("tasks --json");
    assert_eq!(tasks.len(), 20);
    let mut by_prompt = BTreeMap::new();
    for t in &tasks {
        assert_eq!(t["state"], "done", "{t}");
        let prompt = t["prompt"].as_str().unwrap();
        assert_eq!(t["response"], format!("answer to: {prompt}"), "{t}");
        by_prompt.insert(prompt.to_owned(), t["id"].clone());
    }
    assert_eq!(by_prompt.len(), 20, "20 distinct tasks, one response each");
    // Exactly one accepted submit per task, across both workers.
    let submits = model
        .requests_for(TASK)
        .iter()
        .flat_map(Request::last_tool_results)
        .filter(|(text, _)| text.contains("\"submitted\": true"))
        .count();
    assert_eq!(submits, 20);
}
