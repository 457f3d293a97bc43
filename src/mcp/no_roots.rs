//! `mcp-workers mcp no-roots -- CMD ARGS...`: runs a stdio MCP server and hides the client's
//! `roots` capability from it.
//!
//! Why: the Claude Code CLI answers `roots/list` with its working directory only, and
//! `@modelcontextprotocol/server-filesystem` *replaces* its command-line directories with the roots
//! it is given (gotcha G1). A worker runs in `workspace/`, so the filesystem server would lose
//! `profiles/`. With `roots` removed from the `initialize` request, the server keeps the
//! directories on its command line. Everything else passes through byte for byte.
//!
//! The child inherits stderr. When our stdin ends, the child's stdin is closed and we wait for it;
//! when we die, the child sees end-of-file on stdin (and the worker's process group is killed anyway).

use std::ffi::OsString;
use std::process::{ExitCode, Stdio};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Runs `command` (program and arguments) behind the filter until our stdin ends.
pub async fn run(command: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let Some((program, rest)) = command.split_first() else {
        anyhow::bail!("no command given");
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| anyhow::anyhow!("cannot start {}: {err}", program.to_string_lossy()))?;
    let Some(mut child_stdin) = child.stdin.take() else {
        anyhow::bail!("the child's stdin is not piped");
    };
    let forward = async move {
        let mut lines = BufReader::new(crate::mcp::stdio::input()).lines();
        while let Some(line) = lines.next_line().await? {
            let Some(line) = filter_line(line) else { continue };
            child_stdin.write_all(line.as_bytes()).await?;
            child_stdin.write_all(b"\n").await?;
            child_stdin.flush().await?;
        }
        // End of input: closing the child's stdin tells it to exit.
        drop(child_stdin);
        std::io::Result::Ok(())
    };
    let status = tokio::select! {
        status = child.wait() => status?,
        forwarded = forward => {
            if let Err(err) = forwarded {
                tracing::debug!("no-roots: forwarding stopped: {err}");
            }
            child.wait().await?
        }
    };
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).map_or(ExitCode::FAILURE, ExitCode::from))
}

/// The line to pass on, if any: an `initialize` request loses `params.capabilities.roots`, and
/// `notifications/roots/list_changed` is dropped. Anything else, parseable or not, passes unchanged.
pub fn filter_line(line: String) -> Option<String> {
    if !line.contains("\"initialize\"") && !line.contains("roots/list_changed") {
        return Some(line);
    }
    let Ok(mut message) = serde_json::from_str::<Value>(&line) else { return Some(line) };
    match message.get("method").and_then(Value::as_str) {
        Some("notifications/roots/list_changed") => None,
        Some("initialize") => {
            let removed = message
                .pointer_mut("/params/capabilities")
                .and_then(Value::as_object_mut)
                .and_then(|caps| caps.remove("roots"));
            if removed.is_some() { Some(message.to_string()) } else { Some(line) }
        }
        _ => Some(line),
    }
}

#[cfg(test)]
mod tests {
    use super::filter_line;
    use serde_json::{Value, json};

    #[test]
    fn initialize_loses_roots_only() {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "clientInfo": {"name": "claude-code", "version": "2"},
            "capabilities": {"roots": {"listChanged": true}, "elicitation": {}}}});
        let out: Value = serde_json::from_str(&filter_line(init.to_string()).unwrap()).unwrap();
        assert_eq!(out["params"]["capabilities"], json!({"elicitation": {}}));
        assert_eq!(out["params"]["clientInfo"], init["params"]["clientInfo"]);

        let list_changed = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}).to_string();
        assert_eq!(filter_line(list_changed), None);

        for line in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "initialize"}}).to_string(),
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"capabilities": {}}}).to_string(),
            "not json \"initialize\"".to_owned(),
            String::new(),
        ] {
            assert_eq!(filter_line(line.clone()), Some(line));
        }
    }
}
