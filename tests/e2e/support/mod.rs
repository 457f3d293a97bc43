//! Helpers shared by every end-to-end test: where the daemon, the repository and the installed tools are.

#![allow(dead_code)] // each test module uses a different subset

pub mod daemon;
pub mod fake_model;

use std::path::PathBuf;

/// The daemon binary Cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-workers"))
}

/// The repository (worktree) root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<repo>/.tools/bin`, where `scripts/setup.sh` puts `claude` and the MCP servers.
/// Panics when the tools are missing: the end-to-end tests never skip silently.
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
