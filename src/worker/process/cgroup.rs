//! Cgroup v2 containment, when the daemon runs in a subtree delegated to it (systemd
//! `Delegate=yes`): each worker in its own child cgroup, killed as a whole (`cgroup.kill`) when
//! the worker ends. Without delegation (cgroup v1, or a cgroup the daemon may not write) the
//! process-tree mechanism of [`super::reaper`] does the job alone.
//!
//! The daemon itself stays in its cgroup and enables no controller in `cgroup.subtree_control`,
//! so the no-internal-processes rule does not apply.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroup v2 is mounted on a unified host.
const MOUNT: &str = "/sys/fs/cgroup";
/// How long to wait for a killed cgroup to empty before its directory is left behind.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// How the daemon contains what its workers start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// One child cgroup per worker under this (delegated) directory.
    Cgroup(PathBuf),
    /// Subreaper, process groups and the environment marker.
    ProcessTree { why: String },
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mechanism::Cgroup(dir) => write!(f, "cgroup v2, one child cgroup per worker under {}", dir.display()),
            Mechanism::ProcessTree { why } => {
                write!(f, "process tree (subreaper, process groups, environment marker): {why}")
            }
        }
    }
}

/// The cgroup v2 path of this process from `/proc/self/cgroup` (the `0::PATH` line), or `None`
/// on a pure cgroup v1 host.
pub fn own_cgroup(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| line.strip_prefix("0::")).map(str::trim).filter(|p| p.starts_with('/'))
}

/// What [`choose`] looks at.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// `/proc/self/cgroup`.
    pub proc_self_cgroup: &'a str,
    /// `/sys/fs/cgroup` is a cgroup2 mount (it has `cgroup.controllers`).
    pub unified: bool,
    /// The daemon may create directories in its cgroup and write its `cgroup.procs`.
    pub writable: bool,
    /// The kernel has `cgroup.kill` (5.14 or later).
    pub has_kill: bool,
}

/// Picks the mechanism. Pure.
pub fn choose(facts: &Facts<'_>) -> Mechanism {
    let tree = |why: &str| Mechanism::ProcessTree { why: why.to_owned() };
    let Some(own) = own_cgroup(facts.proc_self_cgroup) else {
        return tree("no cgroup v2 (cgroup v1 host)");
    };
    if !facts.unified {
        return tree("cgroup v2 is not mounted at /sys/fs/cgroup (hybrid host)");
    }
    if own == "/" {
        return tree("the daemon runs in the root cgroup");
    }
    if !facts.writable {
        return tree("the daemon's cgroup is not delegated to it (systemd: Delegate=yes)");
    }
    if !facts.has_kill {
        return tree("the kernel has no cgroup.kill (needs Linux 5.14)");
    }
    Mechanism::Cgroup(Path::new(MOUNT).join(own.trim_start_matches('/')))
}

/// Looks at this host and process.
pub fn detect() -> Mechanism {
    let proc_self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mount = Path::new(MOUNT);
    let dir = own_cgroup(&proc_self_cgroup).map(|own| mount.join(own.trim_start_matches('/')));
    let writable = dir.as_deref().is_some_and(|dir| {
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
            && nix::unistd::access(&dir.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_ok()
    });
    let has_kill = dir.as_deref().is_some_and(|dir| dir.join("cgroup.kill").exists());
    choose(&Facts {
        proc_self_cgroup: &proc_self_cgroup,
        unified: mount.join("cgroup.controllers").exists(),
        writable,
        has_kill,
    })
}

/// One worker's cgroup, created before its CLI starts.
pub struct WorkerCgroup {
    dir: PathBuf,
    procs: File,
}

impl WorkerCgroup {
    pub fn create(parent: &Path, name: &str) -> io::Result<WorkerCgroup> {
        let dir = parent.join(format!("worker-{name}"));
        std::fs::create_dir(&dir)?;
        match std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")) {
            Ok(procs) => Ok(WorkerCgroup { dir, procs }),
            Err(err) => {
                let _ = std::fs::remove_dir(&dir);
                Err(err)
            }
        }
    }

    /// The open `cgroup.procs`: the child writes `0` to it between fork and exec, so it starts
    /// (and everything it starts lives) in this cgroup.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Kills every process in the cgroup at once.
    pub fn kill_all(&self) {
        if let Err(err) = std::fs::write(self.dir.join("cgroup.kill"), b"1") {
            tracing::warn!(cgroup = %self.dir.display(), "cannot kill the worker's cgroup: {err}");
        }
    }

    /// Kills the cgroup, waits (bounded) until it is empty, and removes it.
    pub async fn kill_and_remove(self) {
        self.kill_all();
        let events = self.dir.join("cgroup.events");
        let emptied = tokio::time::timeout(EMPTY_WAIT, async {
            loop {
                let text = tokio::fs::read_to_string(&events).await.unwrap_or_default();
                if populated(&text) != Some(true) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if emptied.is_err() {
            tracing::warn!(cgroup = %self.dir.display(), "the worker's cgroup did not empty");
        }
        self.remove();
    }

    fn remove(self) {
        let WorkerCgroup { dir, procs } = self;
        drop(procs);
        if let Err(err) = std::fs::remove_dir(&dir) {
            tracing::warn!(cgroup = %dir.display(), "cannot remove the worker's cgroup: {err}");
        }
    }
}

/// `populated` from `cgroup.events` (`None`: not there).
pub fn populated(cgroup_events: &str) -> Option<bool> {
    cgroup_events.lines().find_map(|line| line.strip_prefix("populated ")).map(|v| v.trim() == "1")
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open as `fd`. Only
/// async-signal-safe calls: it runs between fork and exec.
pub fn join(fd: RawFd) -> io::Result<()> {
    // SAFETY: the fd stays open in the parent until the child has been spawned (the
    // `WorkerCgroup` outlives the spawn), and the child has its own copy of the table.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::unistd::write(fd, b"0").map(|_| ()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "12:pids:/user.slice\n11:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n";
    const V2: &str = "0::/system.slice/mcp-workers.service\n";

    fn facts(cgroup: &str) -> Facts<'_> {
        Facts { proc_self_cgroup: cgroup, unified: true, writable: true, has_kill: true }
    }

    #[test]
    fn own_cgroup_is_the_unified_line() {
        assert_eq!(own_cgroup(V2), Some("/system.slice/mcp-workers.service"));
        assert_eq!(own_cgroup(V1), None);
        assert_eq!(own_cgroup(&format!("{V1}0::/user.slice/x.scope\n")), Some("/user.slice/x.scope"), "hybrid");
        assert_eq!(own_cgroup("0::/\n"), Some("/"));
        assert_eq!(own_cgroup(""), None);
        assert_eq!(own_cgroup("0::\n"), None);
    }

    #[test]
    fn the_cgroup_mechanism_needs_every_condition() {
        let unit = Path::new("/sys/fs/cgroup/system.slice/mcp-workers.service");
        assert_eq!(choose(&facts(V2)), Mechanism::Cgroup(unit.to_path_buf()));
        let tree = |f: Facts<'_>, reason: &str| match choose(&f) {
            Mechanism::ProcessTree { why } => assert!(why.contains(reason), "{why} lacks {reason}"),
            other => panic!("expected the process tree for {reason}, got {other:?}"),
        };
        tree(facts(V1), "cgroup v1");
        tree(Facts { unified: false, ..facts(V2) }, "hybrid");
        tree(facts("0::/\n"), "root cgroup");
        tree(Facts { writable: false, ..facts(V2) }, "Delegate=yes");
        tree(Facts { has_kill: false, ..facts(V2) }, "5.14");
    }

    #[test]
    fn populated_reads_cgroup_events() {
        assert_eq!(populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(populated(""), None);
    }
}
