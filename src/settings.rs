//! The daemon's checked settings (`run`, `serve`, `check`), built from flags by
//! `cmd::worker_args`, and the look-ups that building needs (finding the CLI).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use crate::protocol::parse::Limits;
use crate::registry::Registry;
use crate::scratch::Scratch;
use crate::worker::WorkerSettings;

/// The daemon's settings, checked.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub worker: Arc<WorkerSettings>,
    pub registry: Arc<Registry>,
    pub registry_path: PathBuf,
    pub profiles: PathBuf,
    pub limits: Limits,
    pub max_workers: usize,
    pub max_line_bytes: usize,
    /// The first wait before an action's retry (`retries`); it doubles with each attempt.
    pub retry_backoff: std::time::Duration,
    /// Whether the account-wide rate-limit breaker pauses starts (`--no-rate-limit-breaker`).
    pub rate_limit_breaker: bool,
    /// The daemon-wide budget (`--budget`), with its ledger.
    pub budget: Option<crate::pool::budget::BudgetSettings>,
    /// The workers' scratch directory; removed when the last clone of the settings goes.
    pub scratch: Arc<Scratch>,
}

impl DaemonSettings {
    /// The same settings with the workers' progress going to `sink`.
    pub fn with_progress(&self, sink: crate::worker::progress::Sink) -> Arc<DaemonSettings> {
        let mut worker = (*self.worker).clone();
        worker.progress = Some(sink);
        Arc::new(DaemonSettings { worker: Arc::new(worker), ..self.clone() })
    }
}

/// `--claude`, else the project's pinned `.tools/bin/claude`, else `claude` on PATH.
pub fn find_claude(given: Option<&Path>, tools_bin: Option<&Path>, path: Option<&String>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match given {
        Some(given) if given.components().count() > 1 => vec![given.to_owned()],
        Some(name) => search_path(name, path),
        None => {
            tools_bin.map(|bin| bin.join("claude")).into_iter().chain(search_path(Path::new("claude"), path)).collect()
        }
    };
    for candidate in candidates {
        if is_executable(&candidate) {
            return Ok(std::path::absolute(&candidate)?);
        }
    }
    bail!(
        "the Claude Code CLI was not found{}: run scripts/setup.sh, or pass --claude PATH",
        given.map(|g| format!(" at {}", g.display())).unwrap_or_default()
    )
}

/// `name` in each directory of a PATH-style list.
pub fn search_path(name: &Path, path: Option<&String>) -> Vec<PathBuf> {
    path.map(|p| std::env::split_paths(p).map(|dir| dir.join(name)).collect()).unwrap_or_default()
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
