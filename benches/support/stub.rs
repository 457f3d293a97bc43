//! Shared by the benches (`#[path]`-included): a stub `claude` that prints a valid stream-json
//! transcript (one tool call, a text answer, a result with a cost) and exits.

use std::path::{Path, PathBuf};

pub const TRANSCRIPT: &str = r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"s","tools":["mcp__bench__echo"],"mcp_servers":[{"name":"bench","status":"connected"}],"model":"stub"}
{"type":"assistant","message":{"id":"m1","model":"stub","content":[{"type":"tool_use","id":"toolu_1","name":"mcp__bench__echo","input":{"text":"hi"}}],"usage":{"input_tokens":100,"output_tokens":20}}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"hi"}]}}
{"type":"assistant","message":{"id":"m2","model":"stub","content":[{"type":"text","text":"done"}],"usage":{"input_tokens":100,"output_tokens":20}}}
{"type":"result","subtype":"success","is_error":false,"duration_ms":1,"num_turns":2,"result":"done","total_cost_usd":0.002,"permission_denials":[]}"#;

/// Writes an executable stub named `name` in `root` that runs the shell lines `before` first
/// (e.g. `sleep 3\n`), then prints [`TRANSCRIPT`].
pub fn stub(root: &Path, name: &str, before: &str) -> PathBuf {
    let path = root.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{before}cat <<'EOF'\n{TRANSCRIPT}\nEOF\n")).expect("write the stub");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod the stub");
    path
}
