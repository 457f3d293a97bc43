//! The seed's servers through real workers: `mcp-workers run`, the real Claude Code CLI, the scripted
//! model, and the registry as shipped (`.claude/mcp_servers.json`), with a fake Telegram Bot API and a
//! page served on 127.0.0.1. Submodules test the servers without a worker: `telegram` (the built-in
//! server over stdio), `bundled` (filesystem and fetch as the registry runs them), `check`.

mod bundled;
mod check;
mod telegram;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fake_model::{FakeModel, Request, text, tool_use};
use crate::support::{bin, repo_root, tools_bin};

use crate::support::FakeBotApi;
use crate::support::fake_telegram;

const TOKEN: &str = "777001:AAH-e2e_SeCrEt";
const SEED_TASK: &str = "Send message to Telegram channel -1002876952840: Hello World!";
const CHANNEL: i64 = -1002876952840;

/// A project directory like a deployment's: the shipped registry (optionally edited), `workspace/`,
/// `profiles/`, and `.tools` pointing at the repository's pinned tools.
struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Project {
    fn new(edit: impl FnOnce(&mut Value)) -> Project {
        let tools = tools_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let shipped = std::fs::read_to_string(repo_root().join(".claude/mcp_servers.json")).expect("registry");
        let mut registry: Value = serde_json::from_str(&shipped).expect("registry JSON");
        edit(&mut registry);
        std::fs::create_dir_all(root.join(".claude")).expect("mkdir .claude");
        std::fs::write(root.join(".claude/mcp_servers.json"), registry.to_string()).expect("write registry");
        std::fs::create_dir_all(root.join("workspace")).expect("mkdir workspace");
        std::fs::create_dir_all(root.join("profiles")).expect("mkdir profiles");
        let tools_dir = tools.parent().expect(".tools");
        std::os::unix::fs::symlink(tools_dir, root.join(".tools")).expect("link .tools");
        Project { _dir: dir, root }
    }

    fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }

    fn profiles(&self) -> PathBuf {
        self.root.join("profiles")
    }

    /// Runs `mcp-workers run` on `actions` (one input line) and returns its `worker_result`s.
    async fn run(&self, model: &FakeModel, env: &[(&str, &str)], actions: Value) -> Vec<Value> {
        let home = self.root.join("home");
        std::fs::create_dir_all(&home).expect("mkdir home");
        let mut child = tokio::process::Command::new(bin())
            .args(["--root", &self.root.to_string_lossy(), "run"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("ANTHROPIC_BASE_URL", model.base_url())
            .env("ANTHROPIC_API_KEY", "dummy")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mcp-workers run");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(format!("{actions}\n").as_bytes()).await.expect("write actions");
        drop(stdin);
        let (mut stdout, mut stderr) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
        let (mut out, mut err) = (String::new(), String::new());
        let finished = tokio::time::timeout(Duration::from_secs(120), async {
            let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
            a.and(b).expect("read the daemon's output");
            child.wait().await.expect("wait for the daemon")
        })
        .await
        .unwrap_or_else(|_| panic!("mcp-workers run did not finish in 120 s; stdout so far: {out}"));
        assert!(finished.success(), "mcp-workers run failed: {finished}\nstdout: {out}\nstderr: {err}");
        assert!(!out.contains("SeCrEt") && !err.contains("SeCrEt"), "the bot token leaked:\n{out}\n{err}");
        out.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["type"] == "worker_result")
            .collect()
    }
}

fn spawn(task: &str, servers: &[&str]) -> Value {
    json!({"actions": [{"type": "spawn_worker", "task": task, "servers": servers}]})
}

/// The tool results the model saw after its tool calls, in order: (text, is_error).
fn tool_results(model: &FakeModel, task: &str) -> Vec<(String, bool)> {
    model.requests_for(task).iter().flat_map(Request::last_tool_results).collect()
}

fn one_result(results: &[Value]) -> &Value {
    assert_eq!(results.len(), 1, "{results:#?}");
    &results[0]
}

/// One worker that calls one Telegram tool; returns the Bot API requests and what the model saw.
async fn telegram_worker(task: &str, tool: &str, input: Value) -> (Vec<fake_telegram::Recorded>, Value, String) {
    let bot = FakeBotApi::start().await;
    let model = FakeModel::start().await;
    model.script(task, vec![tool_use(&format!("mcp__telegram__{tool}"), input), text("Done.")]);
    let project = Project::new(|_| {});
    let results = project
        .run(&model, &[("TELEGRAM_BOT_TOKEN", TOKEN), ("TELEGRAM_API_BASE", &bot.base())], spawn(task, &["telegram"]))
        .await;
    let result = one_result(&results).clone();
    assert_eq!(result["success"], true, "{result:#}");
    assert_eq!(result["toolsUsed"], json!([tool]), "{result:#}");
    let seen = tool_results(&model, task);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen[0].1, "the tool failed: {}", seen[0].0);
    let requests = bot.requests();
    for r in &requests {
        assert_eq!(r.bot, format!("bot{TOKEN}"));
    }
    (requests, result, seen[0].0.clone())
}

#[tokio::test]
async fn seed_example_sends_one_message_to_the_channel() {
    let bot = FakeBotApi::start().await;
    let model = FakeModel::start().await;
    model.script(
        SEED_TASK,
        vec![
            tool_use("mcp__telegram__tg_send", json!({"chat_id": CHANNEL, "text": "Hello World!"})),
            text("Message sent successfully to channel -1002876952840"),
        ],
    );
    let project = Project::new(|_| {});
    let results = project
        .run(
            &model,
            &[("TELEGRAM_BOT_TOKEN", TOKEN), ("TELEGRAM_API_BASE", &bot.base())],
            spawn(SEED_TASK, &["telegram"]),
        )
        .await;
    let result = one_result(&results);
    assert_eq!(result["success"], true, "{result:#}");
    assert_eq!(result["toolsUsed"], json!(["tg_send"]), "{result:#}");
    assert_eq!(result["result"], "Message sent successfully to channel -1002876952840");
    let requests = bot.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "sendMessage");
    assert_eq!(requests[0].body, json!({"chat_id": CHANNEL, "text": "Hello World!"}));
    // The model was offered exactly the five Telegram tools.
    let first = &model.requests_for(SEED_TASK)[0];
    let mut offered: Vec<String> = first.tools().into_iter().filter(|t| t.starts_with("mcp__")).collect();
    offered.sort();
    assert_eq!(
        offered,
        ["tg_delete", "tg_edit", "tg_get_chat", "tg_pin", "tg_send"].map(|t| format!("mcp__telegram__{t}"))
    );
}

#[tokio::test]
async fn tg_edit_edits_through_a_worker() {
    let task = "Change message 77 in channel -1002876952840 to 'Hello again'";
    let input = json!({"chat_id": CHANNEL, "message_id": 77, "text": "Hello again"});
    let (requests, _, seen) = telegram_worker(task, "tg_edit", input).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "editMessageText");
    assert_eq!(requests[0].body, json!({"chat_id": CHANNEL, "message_id": 77, "text": "Hello again"}));
    assert!(seen.contains("Message 77 in chat -1002876952840"), "{seen}");
}

#[tokio::test]
async fn tg_delete_deletes_through_a_worker() {
    let task = "Delete message 77 from channel -1002876952840";
    let (requests, _, seen) = telegram_worker(task, "tg_delete", json!({"chat_id": CHANNEL, "message_id": 77})).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "deleteMessage");
    assert_eq!(requests[0].body, json!({"chat_id": CHANNEL, "message_id": 77}));
    assert!(seen.contains("deleted"), "{seen}");
}

#[tokio::test]
async fn tg_pin_pins_through_a_worker() {
    let task = "Pin message 77 in channel -1002876952840 silently";
    let input = json!({"chat_id": CHANNEL, "message_id": 77, "disable_notification": true});
    let (requests, _, seen) = telegram_worker(task, "tg_pin", input).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "pinChatMessage");
    assert_eq!(requests[0].body, json!({"chat_id": CHANNEL, "message_id": 77, "disable_notification": true}));
    assert!(seen.contains("pinned"), "{seen}");
}

#[tokio::test]
async fn tg_get_chat_reads_chat_info_through_a_worker() {
    let task = "What is the title of channel @seed_test_channel?";
    let (requests, _, seen) = telegram_worker(task, "tg_get_chat", json!({"chat_id": "@seed_test_channel"})).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "getChat");
    assert_eq!(requests[0].body, json!({"chat_id": "@seed_test_channel"}));
    assert!(seen.contains("Test Channel"), "{seen}");
}

#[tokio::test]
async fn telegram_errors_reach_the_model_as_tool_errors() {
    let task = "Post 'x' to three channels that will all refuse";
    let bot = FakeBotApi::start().await;
    let model = FakeModel::start().await;
    model.script(
        task,
        vec![
            tool_use("mcp__telegram__tg_send", json!({"chat_id": -400, "text": "x"})),
            tool_use("mcp__telegram__tg_send", json!({"chat_id": -403, "text": "x"})),
            tool_use("mcp__telegram__tg_send", json!({"chat_id": -429, "text": "x"})),
            text("All three failed."),
        ],
    );
    let project = Project::new(|_| {});
    let results = project
        .run(&model, &[("TELEGRAM_BOT_TOKEN", TOKEN), ("TELEGRAM_API_BASE", &bot.base())], spawn(task, &["telegram"]))
        .await;
    one_result(&results);
    let seen = tool_results(&model, task);
    assert_eq!(seen.len(), 3, "{seen:?}");
    let want = [
        "Telegram refused sendMessage (error 400): Bad Request: chat not found",
        "Telegram refused sendMessage (error 403): Forbidden: bot is not a member of the channel chat",
        "Telegram refused sendMessage (error 429): Too Many Requests: retry after 7. Rate limited: retry after 7 seconds (retry_after=7)",
    ];
    for ((text, is_error), want) in seen.iter().zip(want) {
        assert!(is_error, "not a tool error: {text}");
        assert!(text.contains(want), "{text:?} lacks {want:?}");
        assert!(!text.contains("SeCrEt"), "{text}");
    }
    assert_eq!(bot.requests().len(), 3);
}

#[tokio::test]
async fn filesystem_reads_profiles_and_writes_the_workspace() {
    let task = "Write report to workspace/marketing/report.md in the style of the writer profile";
    let project = Project::new(|_| {});
    let profile = project.profiles().join("writer.md");
    std::fs::write(&profile, "Write in short, plain sentences.\n").expect("write profile");
    let report = project.workspace().join("marketing/report.md");
    let model = FakeModel::start().await;
    model.script(
        task,
        vec![
            tool_use("mcp__filesystem__list_directory", json!({"path": project.profiles()})),
            tool_use("mcp__filesystem__read_file", json!({"path": profile})),
            tool_use("mcp__filesystem__create_directory", json!({"path": report.parent().expect("parent")})),
            tool_use("mcp__filesystem__write_file", json!({"path": report, "content": "# Report\n\nSales rose.\n"})),
            text("Report written."),
        ],
    );
    let results = project.run(&model, &[], spawn(task, &["filesystem"])).await;
    let result = one_result(&results);
    assert_eq!(result["success"], true, "{result:#}");
    assert_eq!(
        result["toolsUsed"],
        json!(["list_directory", "read_file", "create_directory", "write_file"]),
        "{result:#}"
    );
    let seen = tool_results(&model, task);
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (text, is_error) in &seen {
        assert!(!is_error, "a filesystem call failed: {text}");
    }
    assert!(seen[0].0.contains("writer.md"), "{:?}", seen[0]);
    assert!(seen[1].0.contains("Write in short, plain sentences."), "{:?}", seen[1]);
    assert_eq!(std::fs::read_to_string(&report).expect("the report"), "# Report\n\nSales rose.\n");
}

#[tokio::test]
async fn filesystem_stays_inside_workspace_and_profiles() {
    let task = "Read the registry file of this project";
    let project = Project::new(|_| {});
    let outside = project.root.join(".claude/mcp_servers.json");
    let model = FakeModel::start().await;
    model.script(task, vec![tool_use("mcp__filesystem__read_file", json!({"path": outside})), text("Denied.")]);
    let results = project.run(&model, &[], spawn(task, &["filesystem"])).await;
    one_result(&results);
    let seen = tool_results(&model, task);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].1 && seen[0].0.contains("Access denied"), "{:?}", seen[0]);
}

#[tokio::test]
async fn fetch_fetches_a_local_page() {
    let app = axum::Router::new().route(
        "/price",
        axum::routing::get(|| async {
            axum::response::Html(
                "<html><head><title>Price</title></head><body><article><h1>Ethereum</h1>\
                 <p>One ether costs 3141.59 USD on this local test page.</p></article></body></html>",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/price", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let task = format!("Fetch data from {url}");
    let model = FakeModel::start().await;
    model.script(&task, vec![tool_use("mcp__fetch__fetch", json!({"url": url})), text("3141.59 USD")]);
    // As shipped, fetch refuses private and loopback addresses; a deployment that fetches from its
    // own network adds exactly this flag.
    let project = Project::new(|registry| {
        let args = registry["mcpServers"]["fetch"]["args"].as_array_mut().expect("fetch args");
        args.push(json!("--allow-private-ips"));
    });
    let results = project.run(&model, &[], spawn(&task, &["fetch"])).await;
    let result = one_result(&results);
    assert_eq!(result["success"], true, "{result:#}");
    assert_eq!(result["toolsUsed"], json!(["fetch"]), "{result:#}");
    let seen = tool_results(&model, &task);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen[0].1 && seen[0].0.contains("One ether costs 3141.59 USD"), "{:?}", seen[0]);
}
