//! The daemon's scratch directory: one private directory per daemon process under the system's
//! temporary directory (`mcp-workers-run-<pid>-*`), holding each worker's own directory (MCP
//! config, HOME). It goes when the daemon ends; what a killed daemon left is swept by the next one.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

const PREFIX: &str = "mcp-workers-run-";

/// Owns the directory: removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Sweeps directories of daemons that no longer run, then creates this daemon's own.
    pub fn create() -> std::io::Result<Self> {
        let base = std::env::temp_dir();
        let swept = sweep(&base);
        if swept > 0 {
            tracing::info!(swept, "removed scratch directories of daemons that are gone");
        }
        let dir = tempfile::Builder::new().prefix(&format!("{PREFIX}{}-", std::process::id())).tempdir_in(&base)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes `mcp-workers-run-<pid>-*` directories under `base` whose daemon is not running.
/// A live pid (even if reused by another program) keeps its directory: never remove in doubt.
fn sweep(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else { return 0 };
    let mut swept = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner(&name.to_string_lossy()) else { continue };
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) && remove(&entry.path()) {
            swept += 1;
        }
    }
    swept
}

/// The pid in `mcp-workers-run-<pid>-<random>`.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.split('-').next()?.parse().ok().filter(|pid| *pid > 0)
}

fn remove(path: &PathBuf) -> bool {
    std::fs::remove_dir_all(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner("mcp-workers-run-123-abc"), Some(123));
        assert_eq!(owner("mcp-workers-run-x-abc"), None);
        assert_eq!(owner("mcp-workers-run--1-abc"), None);
        assert_eq!(owner("other-123-abc"), None);
    }

    #[test]
    fn sweeps_only_directories_of_dead_daemons() {
        let base = tempfile::tempdir().unwrap();
        // A pid far above pid_max's default cannot be running.
        let dead = base.path().join(format!("{PREFIX}4194000-aaaa"));
        let alive = base.path().join(format!("{PREFIX}{}-bbbb", std::process::id()));
        let unrelated = base.path().join("mcp-workers-other");
        for dir in [&dead, &alive, &unrelated] {
            std::fs::create_dir_all(dir.join("w/home")).unwrap();
        }
        assert_eq!(sweep(base.path()), 1);
        assert!(!dead.exists() && alive.exists() && unrelated.exists());
    }
}
