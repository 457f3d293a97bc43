//! rmcp clients of stdio servers: the built-in Telegram server, any pinned server, and the
//! binary run once with a clean environment.

use std::collections::BTreeMap;
use std::path::Path;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use super::{BIN, tools_bin};

pub const TOKEN: &str = "424242:AAE-sEcReT_tokenValue";

pub type Client = RunningService<RoleClient, ()>;

/// Starts `mcp-workers mcp telegram` with exactly `env` and connects to it.
pub async fn telegram(env: &[(&str, &str)]) -> Client {
    let (client, _) = telegram_with_stderr(env).await;
    client
}

/// A server's stderr, read to its end in the background.
pub struct StderrLog(tokio::task::JoinHandle<String>);

impl StderrLog {
    /// Everything the server wrote, once it has closed stderr (it exited). Bounded so a broken
    /// test fails instead of hanging.
    pub async fn finished(self) -> String {
        let text = tokio::time::timeout(std::time::Duration::from_secs(30), self.0).await;
        text.expect("the server closes stderr").expect("stderr reader")
    }
}

/// As [`telegram`], with the server's stderr collected.
pub async fn telegram_with_stderr(env: &[(&str, &str)]) -> (Client, StderrLog) {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let command = tokio::process::Command::new(BIN).configure(|cmd| {
        cmd.args(["mcp", "telegram"]).env_clear().envs(&env);
    });
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mcp-workers mcp telegram");
    let mut stderr = stderr.expect("stderr is piped");
    let log = StderrLog(tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        String::from_utf8_lossy(&text).into_owned()
    }));
    let client = ().serve(transport).await.expect("MCP initialize with mcp-workers mcp telegram");
    (client, log)
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
    format!("{}:{}", tools_bin().display(), std::env::var("PATH").unwrap_or_default())
}

/// Starts any stdio server (PATH: [`tools_path`]) and connects a plain client to it.
pub async fn stdio_client(program: &Path, args: &[String], cwd: &Path) -> Client {
    let command = tokio::process::Command::new(program).configure(|cmd| {
        cmd.args(args).current_dir(cwd).env_clear().env("PATH", tools_path());
    });
    let transport = TokioChildProcess::new(command).expect("start the server");
    ().serve(transport).await.unwrap_or_else(|e| panic!("MCP initialize with {}: {e}", program.display()))
}
