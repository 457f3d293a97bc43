//! The daemon as the reaper of everything its workers start, even what escapes their process
//! group (`setsid`, `setpgid`).
//!
//! - Each worker's processes carry a marker in their environment ([`WORKER_VAR`], one value per
//!   worker and daemon), inherited by everything the CLI starts. When a worker ends, every live
//!   process with its marker is stopped (SIGSTOP: a stopped process cannot fork), passes repeat
//!   until no running one is left, then all are killed.
//! - The daemon is a child subreaper (`PR_SET_CHILD_SUBREAPER`): an orphan of a worker is
//!   reparented to the daemon, not to PID 1. A sweep on every SIGCHLD reaps such orphans (never a
//!   child tokio waits for: those are registered at spawn), and kills live ones that no running
//!   worker owns (their marker is gone or belongs to a worker that ended). At exit, every orphan
//!   left is killed and reaped.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Names the worker (daemon pid and a sequence number) in the environment of all its processes.
pub const WORKER_VAR: &str = "MCP_WORKERS_WORKER";

/// How many SIGSTOP passes [`kill_marked`] makes before it kills what it found anyway (a process
/// in uninterruptible sleep stops only when it wakes).
const STOP_PASSES: usize = 200;

static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);
/// Set once the daemon is a subreaper: every process a worker started is then below the daemon.
static SUBREAPER: AtomicBool = AtomicBool::new(false);
/// Spawns hold it shared while they register the child; a sweep that reaps holds it exclusively,
/// so it never reaps a child whose registration is still under way.
static SPAWNING: RwLock<()> = RwLock::new(());
/// The daemon's own children (the CLIs): tokio waits for them, a sweep never does.
static OWN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Markers of the workers running now.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A worker's marker, registered as running until the guard is dropped.
pub struct Marker(String);

impl Marker {
    pub fn register() -> Marker {
        let value = format!("{}-{}", std::process::id(), NEXT_WORKER.fetch_add(1, Ordering::Relaxed));
        lock(&LIVE).insert(value.clone());
        Marker(value)
    }

    pub fn value(&self) -> &str {
        &self.0
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        lock(&LIVE).remove(&self.0);
    }
}

/// Makes the daemon the subreaper of everything its workers start.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    SUBREAPER.store(true, Ordering::Release);
    Ok(())
}

/// Spawns `command` and registers the child as the daemon's own.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    let _gate = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    let child = command.spawn()?;
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        lock(&OWN).insert(pid);
    }
    Ok(child)
}

/// The child was reaped (or abandoned to tokio's orphan queue): a sweep may reap that pid again.
pub fn forget(pid: Pid) {
    lock(&OWN).remove(&pid.as_raw());
}

/// One entry of the process table, as far as containment cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    /// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z`, ...).
    pub state: char,
}

/// Parses `/proc/PID/stat`: the command name is in parentheses and may hold spaces or `)`.
pub fn parse_stat(stat: &str) -> Option<ProcInfo> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcInfo { pid, ppid, state })
}

/// Every process on the host.
fn processes() -> Vec<ProcInfo> {
    let all = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    all.filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok().and_then(stat)).collect()
}

fn stat(pid: i32) -> Option<ProcInfo> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The direct children of `pid` (of all its threads), or `None` where the kernel does not list
/// them (`CONFIG_PROC_CHILDREN`).
fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut found = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).ok()?;
        found.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    Some(found)
}

/// The processes that may belong to an ended worker. As subreaper, the daemon has every one of
/// them below itself, outside the subtrees of its own (still running) children: only that part of
/// the process table is read. Otherwise (tests, no containment started) the whole table.
fn candidates() -> Vec<ProcInfo> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    if SUBREAPER.load(Ordering::Acquire)
        && let Some(roots) = children(me)
    {
        let own = lock(&OWN).clone();
        let mut found = Vec::new();
        let mut next: Vec<i32> = roots.into_iter().filter(|pid| !own.contains(pid)).collect();
        while let Some(pid) = next.pop() {
            let Some(info) = stat(pid) else { continue };
            next.extend(children(pid).unwrap_or_default());
            found.push(info);
        }
        return found;
    }
    processes().into_iter().filter(|p| p.pid != me).collect()
}

/// The daemon's children that are not its own (orphans reparented to it).
fn orphans() -> Vec<ProcInfo> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let own = lock(&OWN).clone();
    match children(me) {
        Some(pids) => pids.into_iter().filter(|pid| !own.contains(pid)).filter_map(stat).collect(),
        None => processes().into_iter().filter(|p| p.ppid == me && !own.contains(&p.pid)).collect(),
    }
}

/// The value of `name` in the environment of `pid` (`None`: unset or unreadable).
fn env_var(pid: i32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Kills every live process whose environment carries `marker`, including ones that left the
/// worker's process group. Returns how many there were.
pub fn kill_marked(marker: &str) -> usize {
    let mut found = BTreeSet::new();
    for _ in 0..STOP_PASSES {
        let mut running = 0;
        for proc in candidates().into_iter().filter(|p| p.state != 'Z') {
            if env_var(proc.pid, WORKER_VAR).as_deref() != Some(marker) {
                continue;
            }
            found.insert(proc.pid);
            if proc.state != 'T' {
                running += 1;
                let _ = kill(Pid::from_raw(proc.pid), Signal::SIGSTOP);
            }
        }
        if running == 0 {
            break;
        }
    }
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    found.len()
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub reaped: usize,
    pub killed: usize,
}

/// Reaps the daemon's exited orphans and kills its live orphans that no running worker owns
/// (`all`: every live orphan, at exit). Never touches the daemon's own children.
pub fn sweep(all: bool) -> Swept {
    let _gate = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    let mut swept = Swept::default();
    for proc in orphans() {
        let pid = Pid::from_raw(proc.pid);
        if proc.state == 'Z' {
            if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
                swept.reaped += 1;
            }
            continue;
        }
        let owned = env_var(proc.pid, WORKER_VAR).is_some_and(|marker| lock(&LIVE).contains(&marker));
        if (all || !owned) && kill(pid, Signal::SIGKILL).is_ok() {
            swept.killed += 1;
            // SIGKILL cannot be caught: it is an orphan of ours, so this wait is short.
            if waitpid(pid, None).is_ok() {
                swept.reaped += 1;
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let check = |line: &str, want: Option<(i32, i32, char)>| {
            assert_eq!(parse_stat(line).map(|p| (p.pid, p.ppid, p.state)), want, "{line}");
        };
        check("42 (sleep) S 7 42 42 0 -1", Some((42, 7, 'S')));
        check("43 (a b) c) Z 1 43 43 0 -1", Some((43, 1, 'Z')));
        check("44 ((sd-pam)) T 2 0 0", Some((44, 2, 'T')));
        check("", None);
        check("x (sh) S 1", None);
        check("45 (sh) S", None);
        check("46 sh S 1", None);
    }

    #[test]
    fn markers_are_unique_and_live_while_held() {
        let (a, b) = (Marker::register(), Marker::register());
        assert_ne!(a.value(), b.value());
        assert!(a.value().starts_with(&format!("{}-", std::process::id())));
        let value = a.value().to_owned();
        assert!(lock(&LIVE).contains(&value));
        drop(a);
        assert!(!lock(&LIVE).contains(&value));
    }
}
