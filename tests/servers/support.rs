//! Helpers: the built binary, the pinned tools, and MCP clients.

pub use crate::fake_telegram::FakeBotApi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

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
