//! Helpers shared by every integration test: where the daemon, the repository and the installed
//! tools are, and the modules each kind of test drives the daemon with:
//! - `daemon`: a throw-away project, the one launcher of `mcp-workers run` and `serve`, the
//!   process-table and fd checks;
//! - `fake_model`: the scripted stand-in for the Anthropic Messages API;
//! - `fake_telegram`: a fake Telegram Bot API;
//! - `mcp_client`: rmcp clients of stdio servers (the built-in Telegram server, bundled servers);
//! - `queue_client`: the official Python MCP SDK client (`driver.py`) and `enqueue`/`tasks`.

#![allow(dead_code)] // each test module uses a different subset

pub mod daemon;
pub mod fake_model;
pub mod fake_telegram;
pub mod mcp_client;
pub mod queue_client;

pub use fake_telegram::FakeBotApi;
pub use mcp_client::{Client, TOKEN, call, run_bin, stdio_client, telegram, telegram_with_stderr, tools_path};
pub use queue_client::{Driver, HttpServer, data_dir, enqueue, tasks, wait_for_line};

use std::path::PathBuf;

/// The daemon binary Cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-workers");

/// The daemon binary Cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(BIN)
}

/// The repository (worktree) root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<repo>/.tools/bin`, where `scripts/setup.sh` puts `claude` and the MCP servers.
/// Panics when the tools are missing: the tests never skip silently.
pub fn tools_bin() -> PathBuf {
    let dir = repo_root().join(".tools").join("bin");
    if !dir.join("claude").exists() {
        panic!("{} has no `claude`: run scripts/setup.sh --tools-only first", dir.display());
    }
    dir
}

/// The real Claude Code CLI.
pub fn claude() -> PathBuf {
    tools_bin().join("claude")
}

/// A pinned tool installed by `scripts/setup.sh`; panics (never skips) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_bin().join(name);
    assert!(path.exists(), "{} is missing: run scripts/setup.sh --tools-only", path.display());
    path
}

/// The Python of the project's venv (with the official MCP SDK). Never skip silently.
pub fn python() -> PathBuf {
    tools_bin();
    let python = repo_root().join(".tools/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh --tools-only", python.display());
    python
}
