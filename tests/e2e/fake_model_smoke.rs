//! The fake model drives the real Claude Code CLI, invoked exactly as the reference says
//! (`shared/reference/claude-code-cli.md`, section 1), with the real server-filesystem as its MCP server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::support;
use crate::support::fake_model::{
    FakeModel, Request, Step, api_error_body, hang, stall_mid_stream, status, text, tool_use, tool_uses,
};

/// A generous bound for one scripted run (they take about a second); only there so a broken test fails.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A sandbox directory for the filesystem server (canonical, as server-filesystem resolves paths).
struct Sandbox {
    _dir: TempDir,
    path: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("sandbox temp dir");
        let path = dir.path().canonicalize().expect("canonical sandbox path");
        Sandbox { _dir: dir, path }
    }

    fn file(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }
}

/// What one CLI run printed.
struct Run {
    lines: Vec<Value>,
    code: Option<i32>,
    stderr: String,
}

impl Run {
    fn of_type<'a, 'k>(&'a self, kind: &'k str) -> impl Iterator<Item = &'a Value> + use<'a, 'k> {
        self.lines.iter().filter(move |line| line["type"] == kind)
    }

    fn init(&self) -> &Value {
        self.of_type("system")
            .find(|line| line["subtype"] == "init")
            .unwrap_or_else(|| self.fail("no system/init line"))
    }

    fn result(&self) -> &Value {
        self.of_type("result").last().unwrap_or_else(|| self.fail("no result line"))
    }

    /// The content blocks of the given type from the `assistant` (or `user`) lines.
    fn blocks(&self, line_type: &str, block_type: &str) -> Vec<&Value> {
        self.of_type(line_type)
            .flat_map(|line| line["message"]["content"].as_array().into_iter().flatten())
            .filter(|block| block["type"] == block_type)
            .collect()
    }

    fn fail(&self, what: &str) -> ! {
        let lines: Vec<String> = self.lines.iter().map(Value::to_string).collect();
        panic!("{what}; rc {:?}\nstdout:\n{}\nstderr:\n{}", self.code, lines.join("\n"), self.stderr)
    }
}

/// Runs `claude -p` on `task` against `model`, with server-filesystem serving `sandbox`.
async fn run_claude(model: &FakeModel, sandbox: &Sandbox, task: &str) -> Run {
    run_claude_with(model, sandbox, task, &[]).await
}

/// `run_claude`, with some environment variables overridden.
async fn run_claude_with(model: &FakeModel, sandbox: &Sandbox, task: &str, env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().expect("home temp dir");
    let config = home.path().join("mcp.json");
    let servers = json!({"mcpServers": {"filesystem": {
        "type": "stdio",
        "command": support::tools_bin().join("mcp-server-filesystem"),
        "args": [sandbox.path],
    }}});
    std::fs::write(&config, servers.to_string()).expect("write the MCP config");
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", support::tools_bin().display());

    let mut child = Command::new(support::claude())
        .current_dir(&sandbox.path)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", model.base_url())
        .env("ANTHROPIC_API_KEY", "dummy")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("MCP_CONNECTION_NONBLOCKING", "0")
        .env("MCP_TIMEOUT", "10000")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .env("API_TIMEOUT_MS", "30000")
        .envs(env.iter().copied())
        .arg("-p")
        .arg("--mcp-config")
        .arg(&config)
        .args(["--strict-mcp-config", "--allowedTools", "mcp__filesystem__*", "--permission-mode", "dontAsk"])
        .args(["--output-format", "stream-json", "--verbose", "--no-session-persistence", "--", task])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn claude");

    let stdout = child.stdout.take().expect("claude stdout");
    let mut stderr = child.stderr.take().expect("claude stderr");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let collect = async {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout).lines();
        while let Some(line) = reader.next_line().await.expect("read claude stdout") {
            let value =
                serde_json::from_str(&line).unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {line}"));
            lines.push(value);
        }
        let status = child.wait().await.expect("wait for claude");
        (lines, status.code())
    };
    let Ok((lines, code)) = tokio::time::timeout(RUN_LIMIT, collect).await else {
        panic!("claude did not finish within {RUN_LIMIT:?}");
    };
    let stderr = stderr.await.unwrap_or_default();
    Run { lines, code, stderr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_writes_a_file_through_mcp_then_answers() {
    let model = FakeModel::start().await;
    let sandbox = Sandbox::new();
    let hello = sandbox.file("hello.txt");
    model.script(
        "smoke-write",
        vec![
            tool_use("mcp__filesystem__write_file", json!({"path": hello, "content": "hi"})),
            text("Wrote hello.txt."),
        ],
    );

    let run = run_claude(&model, &sandbox, "smoke-write: put hi into hello.txt").await;

    assert_eq!(std::fs::read_to_string(&hello).ok().as_deref(), Some("hi"), "hello.txt; rc {:?}", run.code);
    let servers = run.init()["mcp_servers"].as_array().cloned().unwrap_or_default();
    assert!(servers.contains(&json!({"name": "filesystem", "status": "connected"})), "mcp_servers: {servers:?}");
    let calls = run.blocks("assistant", "tool_use");
    assert_eq!(calls.len(), 1, "tool_use blocks: {calls:?}");
    assert_eq!(calls[0]["name"], "mcp__filesystem__write_file");
    assert_eq!(calls[0]["input"], json!({"path": hello, "content": "hi"}));
    let results = run.blocks("user", "tool_result");
    assert_eq!(results.len(), 1, "tool_result blocks: {results:?}");
    assert_eq!(results[0]["tool_use_id"], calls[0]["id"]);
    assert_ne!(results[0]["is_error"], true, "tool_result: {}", results[0]);
    let result = run.result();
    assert_eq!(result["is_error"], false, "result: {result}");
    assert_eq!(result["result"], "Wrote hello.txt.");
    assert_eq!(result["num_turns"], 2, "result: {result}");
    assert!(result["total_cost_usd"].as_f64().is_some_and(|cost| cost > 0.0), "result: {result}");
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);

    // What the CLI sent: the task, the MCP tools, then the tool's result on the second turn.
    let requests = model.requests_for("smoke-write");
    assert_eq!(requests.len(), 2, "requests: {:?}", model.requests());
    assert_eq!(requests[0].turn(), 0);
    assert_eq!(requests[0].task(), "smoke-write: put hi into hello.txt");
    assert!(requests[0].is_streaming());
    assert!(requests[0].tools().iter().any(|t| t == "mcp__filesystem__write_file"), "{:?}", requests[0].tools());
    assert!(!requests[0].system_text().is_empty());
    assert_eq!(requests[1].turn(), 1);
    let tool_results = requests[1].last_tool_results();
    assert_eq!(tool_results.len(), 1, "{tool_results:?}");
    assert!(!tool_results[0].1, "{tool_results:?}");
    assert!(model.other_requests().iter().any(|r| r.starts_with("HEAD ")), "{:?}", model.other_requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_reports_an_api_error_as_an_error_result() {
    let model = FakeModel::start().await;
    let sandbox = Sandbox::new();
    model.script("smoke-400", [status(400, api_error_body("invalid_request_error", "scripted refusal"))]);

    let run = run_claude(&model, &sandbox, "smoke-400: this request is refused").await;

    let result = run.result();
    assert_eq!(result["is_error"], true, "result: {result}");
    assert!(result["result"].as_str().is_some_and(|text| text.contains("scripted refusal")), "result: {result}");
    assert_eq!(result["api_error_status"], 400, "result: {result}");
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert_eq!(model.requests_for("smoke-400").len(), 1, "a 400 is not retried");
}

/// A dynamic script: two parallel writes, then a read whose result decides the final answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_follows_a_dynamic_script_with_parallel_calls() {
    let model = FakeModel::start().await;
    let sandbox = Sandbox::new();
    let (a, b) = (sandbox.file("a.txt"), sandbox.file("b.txt"));
    let (a2, b2) = (a.clone(), b.clone());
    model.script("smoke-dynamic", move |request: &Request| -> Step {
        let results = request.last_tool_results();
        match request.turn() {
            0 => tool_uses([
                ("mcp__filesystem__write_file", json!({"path": a2, "content": "{\"n\": 41}"})),
                ("mcp__filesystem__write_file", json!({"path": b2, "content": "beta"})),
            ]),
            1 if results.len() == 2 && results.iter().all(|(_, is_error)| !is_error) => {
                tool_use("mcp__filesystem__read_text_file", json!({"path": a2}))
            }
            2 => {
                // The CLI gives the model an MCP result's structuredContent as JSON text:
                // server-filesystem's read_text_file yields `{"content":"<the file>"}`.
                let file = results.first().and_then(|(text, _)| serde_json::from_str::<Value>(text).ok());
                let file = file.and_then(|v| v["content"].as_str().map(str::to_owned)).unwrap_or_default();
                match serde_json::from_str::<Value>(&file).ok().and_then(|v| v["n"].as_i64()) {
                    Some(n) => text(format!("n+1 = {}", n + 1)),
                    None => text(format!("unexpected read result: {results:?}")),
                }
            }
            turn => text(format!("unexpected turn {turn}: {results:?}")),
        }
    });

    let run = run_claude(&model, &sandbox, "smoke-dynamic: write two files, read one").await;

    let result = run.result();
    assert_eq!(result["result"], "n+1 = 42", "result: {result}");
    assert_eq!(result["is_error"], false);
    assert_eq!(std::fs::read_to_string(&b).ok().as_deref(), Some("beta"));
    let calls = run.blocks("assistant", "tool_use");
    assert_eq!(calls.len(), 3, "tool_use blocks: {calls:?}");
    let ids: std::collections::HashSet<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 3, "tool ids are unique: {ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("toolu_")), "{ids:?}");
    // The two parallel calls went back to the model as one assistant message.
    let turns: Vec<usize> = model.requests_for("smoke-dynamic").iter().map(Request::turn).collect();
    assert_eq!(turns, [0, 1, 2]);
    assert!(Path::new(&a).exists());
}

/// A hanging request times out in the CLI (`API_TIMEOUT_MS`) and does not hold up other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_times_out_on_a_hanging_model_while_others_are_served() {
    let model = FakeModel::start().await;
    let (hanging_sandbox, sandbox) = (Sandbox::new(), Sandbox::new());
    model.script("smoke-hang", [hang()]);
    model.script("smoke-after-hang", [text("still served")]);

    let hanging =
        run_claude_with(&model, &hanging_sandbox, "smoke-hang: never answered", &[("API_TIMEOUT_MS", "1500")]);
    let other = async {
        model.wait_for_requests(1).await;
        run_claude(&model, &sandbox, "smoke-after-hang: answered").await
    };
    let (hanging, other) = tokio::join!(hanging, other);

    assert_eq!(other.result()["result"], "still served", "result: {}", other.result());
    let result = hanging.result();
    assert_eq!(result["is_error"], true, "result: {result}");
    assert!(result["result"].as_str().is_some_and(|text| text.contains("timed out")), "result: {result}");
    assert_eq!(hanging.code, Some(1));
}

/// An overloaded model (529) is an error result naming the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_reports_overloaded() {
    let model = FakeModel::start().await;
    let sandbox = Sandbox::new();
    model.script("smoke-529", [status(529, api_error_body("overloaded_error", "Overloaded"))]);

    let run = run_claude(&model, &sandbox, "smoke-529: overloaded").await;

    let result = run.result();
    assert_eq!(result["is_error"], true, "result: {result}");
    assert_eq!(result["api_error_status"], 529, "result: {result}");
    assert_eq!(run.code, Some(1));
}

/// The fake on its own: the non-streaming fallback, a loud 400 for unscripted tasks, a stalled stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_model_answers_plain_json_unscripted_tasks_and_stalls() {
    let model = FakeModel::start().await;
    model.script("plain", [tool_use("mcp__x__y", json!({"a": 1}))]);
    model.script("stall", [stall_mid_stream()]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages?beta=true", model.base_url());
    let body = |task: &str, stream: bool| {
        let mut body = json!({"model": "claude-test", "max_tokens": 10, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"}, {"type": "text", "text": task}]},
        ]});
        if stream {
            body["stream"] = json!(true);
        }
        body
    };

    assert_eq!(client.head(model.base_url()).send().await.expect("HEAD").status(), 200);

    let plain = client.post(&url).json(&body("plain task", false)).send().await.expect("POST plain");
    assert_eq!(plain.status(), 200);
    let message: Value = plain.json().await.expect("a JSON message");
    assert_eq!(message["type"], "message");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["name"], "mcp__x__y");
    assert_eq!(message["content"][0]["input"], json!({"a": 1}));
    assert!(message["content"][0]["id"].as_str().is_some_and(|id| id.starts_with("toolu_")));
    assert_eq!(message["usage"]["input_tokens"], 100);

    let unscripted = client.post(&url).json(&body("nobody scripted this", true)).send().await.expect("POST unscripted");
    assert_eq!(unscripted.status(), 400);
    let error: Value = unscripted.json().await.expect("a JSON error");
    assert_eq!(error["type"], "error");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("nobody scripted this")), "{error}");

    let mut stalled = client.post(&url).json(&body("stall here", true)).send().await.expect("POST stall");
    assert_eq!(stalled.status(), 200);
    let first = stalled.chunk().await.expect("first chunk").expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start\n"));
    let next = tokio::time::timeout(Duration::from_millis(300), stalled.chunk()).await;
    assert!(next.is_err(), "the stream went on after message_start: {next:?}");

    assert_eq!(model.request_count(), 3);
    assert_eq!(model.requests_for("plain").len(), 1);
}
