//! Helpers: the built binary, the pinned tools, a fake Telegram Bot API, and an MCP client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-workers");
pub const TOKEN: &str = "424242:AAE-sEcReT_tokenValue";

/// The repository root (where `.claude/` and `.tools/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A pinned tool installed by `scripts/setup.sh`; panics (never skips) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = repo().join(".tools/bin").join(name);
    assert!(path.exists(), "{} is missing: run scripts/setup.sh --tools-only", path.display());
    path
}

/// One request the fake Bot API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The path segment before the method: `bot<token>`.
    pub bot: String,
    pub method: String,
    pub body: Value,
}

/// A fake Telegram Bot API on 127.0.0.1. Chat ids pick the answer: -400 "chat not found",
/// -403 "bot is not a member", -429 rate limited with retry_after 7; anything else succeeds.
pub struct FakeBotApi {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeBotApi {
    pub async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app =
            axum::Router::new().route("/{bot}/{method}", axum::routing::post(answer)).with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Bot API");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, requests }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn answer(
    State(requests): State<Arc<Mutex<Vec<Recorded>>>>,
    UrlPath((bot, method)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    requests.lock().expect("lock").push(Recorded { bot, method: method.clone(), body: body.clone() });
    let refuse = |code: u16, description: &str, parameters: Option<Value>| {
        let mut answer = json!({"ok": false, "error_code": code, "description": description});
        if let Some(p) = parameters {
            answer["parameters"] = p;
        }
        (StatusCode::from_u16(code).expect("status"), Json(answer))
    };
    match body["chat_id"].as_i64() {
        Some(-400) => return refuse(400, "Bad Request: chat not found", None),
        Some(-403) => return refuse(403, "Forbidden: bot is not a member of the channel chat", None),
        Some(-429) => return refuse(429, "Too Many Requests: retry after 7", Some(json!({"retry_after": 7}))),
        _ => {}
    }
    let chat = json!({"id": body["chat_id"], "type": "channel", "title": "Test Channel"});
    let result = match method.as_str() {
        "sendMessage" => json!({"message_id": 77, "date": 1_700_000_000, "chat": chat, "text": body["text"]}),
        "editMessageText" => {
            json!({"message_id": body["message_id"], "date": 1_700_000_000, "edit_date": 1_700_000_100, "chat": chat, "text": body["text"]})
        }
        "deleteMessage" | "pinChatMessage" => json!(true),
        "getChat" => {
            json!({"id": body["chat_id"], "type": "channel", "title": "Test Channel", "accent_color_id": 1, "max_reaction_count": 11})
        }
        _ => return refuse(404, "Not Found", None),
    };
    (StatusCode::OK, Json(json!({"ok": true, "result": result})))
}

pub type Client = RunningService<RoleClient, ()>;

/// Starts `mcp-workers mcp telegram` with exactly `env` and connects to it.
pub async fn telegram(env: &[(&str, &str)]) -> Client {
    let (client, _) = telegram_with_stderr(env).await;
    client
}

/// As [`telegram`], with the server's stderr collected in the returned buffer.
pub async fn telegram_with_stderr(env: &[(&str, &str)]) -> (Client, Arc<Mutex<String>>) {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let command = tokio::process::Command::new(BIN).configure(|cmd| {
        cmd.args(["mcp", "telegram"]).env_clear().envs(&env);
    });
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mcp-workers mcp telegram");
    let buffer = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = stderr {
        let buffer = buffer.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buffer.lock().expect("lock").push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
    }
    let client = ().serve(transport).await.expect("MCP initialize with mcp-workers mcp telegram");
    (client, buffer)
}

/// Calls one tool and returns (is_error, all text content).
pub async fn call(client: &Client, tool: &str, arguments: Value) -> (bool, String) {
    let arguments = arguments.as_object().cloned().expect("arguments must be an object");
    let result: CallToolResult = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool} failed at the protocol level: {e}"));
    let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n");
    (result.is_error == Some(true), text)
}

/// Runs `mcp-workers` with `args` and a clean environment plus `env`; returns (exit code, stdout, stderr).
pub async fn run_bin(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (i32, String, String) {
    let output = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .await
        .expect("run mcp-workers");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `.tools/bin` before the test's own PATH (node and python live there), as a worker gets it.
pub fn tools_path() -> String {
    format!("{}:{}", repo().join(".tools/bin").display(), std::env::var("PATH").unwrap_or_default())
}

/// Starts any stdio server (PATH: [`tools_path`]) and connects a plain client to it.
pub async fn stdio_client(program: &Path, args: &[String], cwd: &Path) -> Client {
    let command = tokio::process::Command::new(program).configure(|cmd| {
        cmd.args(args).current_dir(cwd).env_clear().env("PATH", tools_path());
    });
    let transport = TokioChildProcess::new(command).expect("start the server");
    ().serve(transport).await.unwrap_or_else(|e| panic!("MCP initialize with {}: {e}", program.display()))
}
