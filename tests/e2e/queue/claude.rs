//! The real Claude Code CLI as the MCP client: it connects to the queue over stdio and over
//! Streamable HTTP and lists the three tools. (No model here: the API URL points at a closed
//! port, so the run ends right after the `system/init` line that reports the MCP servers.)

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{BIN, HttpServer, data_dir, python};

fn claude_init(config: &Value, cwd: &Path) -> Value {
    python(); // asserts the tools are installed
    let claude = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/claude");
    let home = cwd.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cfg = cwd.join("mcp.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let out = Command::new(claude)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .env("ANTHROPIC_API_KEY", "dummy")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("MCP_CONNECTION_NONBLOCKING", "0")
        .env("MCP_TIMEOUT", "15000")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .arg("-p")
        .arg("--mcp-config")
        .arg(&cfg)
        .args(["--strict-mcp-config", "--output-format", "stream-json", "--verbose", "--no-session-persistence"])
        .args(["--", "hi"])
        .stdin(Stdio::null())
        .output()
        .expect("run claude");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "system" && v["subtype"] == "init")
        .unwrap_or_else(|| panic!("no init line: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

fn assert_connected(init: &Value) {
    assert_eq!(init["mcp_servers"], json!([{"name": "queue", "status": "connected"}]), "{init}");
    let tools: Vec<&str> = init["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for t in ["mcp__queue__worker_create", "mcp__queue__worker_poll", "mcp__queue__worker_submit"] {
        assert!(tools.contains(&t), "{t} missing from {tools:?}");
    }
}

#[test]
fn claude_code_connects_over_stdio() {
    let dir = data_dir();
    let data = dir.path().join("data");
    let config = json!({"mcpServers": {"queue": {
        "command": BIN,
        "args": ["--data-dir", data, "mcp", "queue", "--timeout", "5"]
    }}});
    assert_connected(&claude_init(&config, dir.path()));
}

#[test]
fn claude_code_connects_over_streamable_http() {
    let dir = data_dir();
    let server = HttpServer::start(&dir.path().join("data"), &[]);
    let config = json!({"mcpServers": {"queue": {"type": "http", "url": server.url}}});
    assert_connected(&claude_init(&config, dir.path()));
}
