//! Spawning and stopping the child: the only place in the daemon that does either.
//!
//! Every child gets its own process group. Stopping means SIGTERM to the CLI (it cleans up its MCP
//! servers), a grace period, then SIGKILL to the whole group. After any exit the group is killed
//! again, because the CLI leaves MCP servers that failed to connect behind, and so is everything
//! that left the group: the worker's cgroup when the daemon has a delegated one (`cgroup.rs`),
//! and every process carrying the worker's environment marker (`reaper.rs`, which also makes the
//! daemon the subreaper of its workers' orphans). Only then are the pipes drained, each for a
//! bounded time, so an escaped process that holds one never keeps the worker (or an fd) alive. A
//! guard does the same if the future running the child is dropped.

pub mod cgroup;
pub mod reaper;
#[cfg(test)]
mod tests;

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::command::Plan;
use super::outcome::{ExitInfo, Stop};
use crate::lines::{BoundedLines, Line};
use cgroup::{Mechanism, WorkerCgroup};
use reaper::Marker;

/// The longest stdout line read whole; longer lines are skipped (and counted).
pub const MAX_EVENT_LINE: usize = 8 * 1024 * 1024;
/// How much of stderr is kept (its tail).
pub const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// After the CLI exits, how long to drain what is left in its stdout.
const DRAIN: Duration = Duration::from_secs(2);

/// What the line handler asks for after each stdout line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Stop(Stop),
    /// Go on; the watchdog trips at this instant unless another line comes (`None`: it does not).
    Watch(Option<tokio::time::Instant>),
}

/// How the child ended.
#[derive(Debug)]
pub struct Ended {
    pub exit: ExitInfo,
    pub stop: Option<Stop>,
    pub stderr_tail: String,
    pub skipped_lines: u64,
}

/// The mechanism chosen by [`Containment::start`]; without one (tests, `check`), the process tree.
static MECHANISM: OnceLock<Mechanism> = OnceLock::new();

/// The daemon's containment of what its workers start, for as long as it runs: the subreaper
/// and its sweeper task. Dropping it kills and reaps every orphan that is left.
pub struct Containment {
    sweeper: tokio::task::JoinHandle<()>,
}

impl Containment {
    /// Makes the daemon the subreaper of its workers' processes and picks the mechanism
    /// (cgroup v2 when delegated, else the process tree). Needs a tokio runtime.
    pub fn start() -> io::Result<Containment> {
        reaper::become_subreaper()?;
        let mechanism = MECHANISM.get_or_init(cgroup::detect).clone();
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let sweeper = tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                match tokio::task::spawn_blocking(|| reaper::sweep(false)).await {
                    Ok(swept) if swept.killed > 0 => {
                        tracing::warn!(killed = swept.killed, "killed orphans no worker owns")
                    }
                    _ => {}
                }
            }
        });
        tracing::info!(%mechanism, "containment of worker processes");
        Ok(Containment { sweeper })
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        self.sweeper.abort();
        let swept = reaper::sweep(true);
        if swept.killed > 0 {
            tracing::warn!(killed = swept.killed, "killed orphans left at exit");
        }
    }
}

/// Kills the group (and what escaped it) when dropped: the last line of defence against leftovers.
struct GroupGuard {
    pid: Option<Pid>,
    cgroup: Option<WorkerCgroup>,
    marker: Marker,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = killpg(pid, Signal::SIGKILL);
            // tokio's orphan queue reaps it; a sweep may too.
            reaper::forget(pid);
            if let Some(cgroup) = self.cgroup.take() {
                cgroup.kill_all();
                // Removing it has to wait until it is empty: a task does that, if there is a runtime.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(cgroup.kill_and_remove());
                }
            }
            reaper::kill_marked(self.marker.value());
        }
    }
}

/// The worker's cgroup, when the daemon has a delegated one (a failure is logged, and the process
/// tree mechanism alone applies to this worker).
fn worker_cgroup(marker: &Marker) -> Option<WorkerCgroup> {
    let Some(Mechanism::Cgroup(parent)) = MECHANISM.get() else { return None };
    WorkerCgroup::create(parent, marker.value())
        .map_err(|err| tracing::warn!(cgroup = %parent.display(), "cannot create the worker's cgroup: {err}"))
        .ok()
}

#[cfg(test)]
/// Runs the plan until the child exits, the deadline passes, or `cancel` fires (`cancel_stop` says
/// which kind of stop that is). Each stdout line goes to `on_line`, which may stop the child.
pub async fn run(
    plan: &Plan,
    deadline: Duration,
    cancel: &CancellationToken,
    cancel_stop: impl Fn() -> Stop,
    grace: impl Into<Grace>,
    on_line: impl FnMut(&str) -> Verdict,
) -> io::Result<Ended> {
    run_watched(plan, deadline, cancel, cancel_stop, grace, None, on_line).await
}

/// [`run`] with a no-progress watchdog: the child is stopped ([`Stop::Idle`]) at `idle_at` unless
/// a line comes first; after each line `on_line` may move that instant ([`Verdict::Watch`]).
/// The idle stop is graceful first (SIGINT: the CLI still writes its `result`, cost included,
/// which `on_line` gets), then the kill grace, then SIGKILL to the group.
pub async fn run_watched(
    plan: &Plan,
    deadline: Duration,
    cancel: &CancellationToken,
    cancel_stop: impl Fn() -> Stop,
    grace: impl Into<Grace>,
    mut idle_at: Option<tokio::time::Instant>,
    mut on_line: impl FnMut(&str) -> Verdict,
) -> io::Result<Ended> {
    let grace = grace.into();
    let marker = Marker::register();
    let mut command = Command::new(&plan.program);
    command
        .args(&plan.args)
        .env_clear()
        .envs(&plan.env)
        .current_dir(&plan.cwd)
        .env(reaper::WORKER_VAR, marker.value())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let cgroup = worker_cgroup(&marker);
    let procs_fd = cgroup.as_ref().map(WorkerCgroup::procs_fd);
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl and write are.
    // If the daemon dies (even by SIGKILL), the kernel kills the CLI, whose MCP servers then see
    // EOF. The cgroup's `cgroup.procs` stays open in the parent until the spawn has returned.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            if let Some(fd) = procs_fd {
                cgroup::join(fd)?;
            }
            Ok(())
        });
    }
    let mut child = reaper::spawn(&mut command)?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let mut guard = GroupGuard { pid, cgroup, marker };

    // The task goes on stdin, which is then closed. The writer is aborted when the worker ends: an
    // escaped process may hold the pipe without reading it.
    let writer = child.stdin.take().map(|mut stdin| {
        let task = plan.stdin.clone();
        tokio::spawn(async move {
            // A child that exits early closes the pipe: nothing to report then.
            let _ = stdin.write_all(task.as_bytes()).await;
        })
    });
    let stderr = child.stderr.take().map(|err| tokio::spawn(tail(err, STDERR_TAIL_BYTES)));
    let stdout = child.stdout.take().ok_or_else(|| io::Error::other("child stdout was not captured"))?;
    let mut lines = BoundedLines::new(BufReader::new(stdout), MAX_EVENT_LINE);
    let mut skipped_lines = 0u64;
    let mut feed = |item: io::Result<Option<Line>>, skipped: &mut u64| -> Option<Verdict> {
        match item {
            Ok(Some(Line::Text(line))) => Some(on_line(&line)),
            Ok(Some(Line::TooLong)) => {
                *skipped += 1;
                Some(Verdict::Continue)
            }
            Ok(None) | Err(_) => None,
        }
    };

    let sleep = tokio::time::sleep(deadline);
    tokio::pin!(sleep);
    let far = tokio::time::Instant::now() + deadline;
    let idle = tokio::time::sleep_until(idle_at.unwrap_or(far));
    tokio::pin!(idle);
    let mut stop = None;
    let mut status = None;
    let mut stdout_open = true;
    while stop.is_none() && status.is_none() {
        tokio::select! {
            _ = cancel.cancelled() => stop = Some(cancel_stop()),
            _ = &mut sleep => stop = Some(Stop::Deadline),
            _ = &mut idle, if idle_at.is_some() => stop = Some(Stop::Idle),
            item = lines.next_line(), if stdout_open => match feed(item, &mut skipped_lines) {
                Some(Verdict::Stop(reason)) => stop = Some(reason),
                Some(Verdict::Continue) => {}
                Some(Verdict::Watch(at)) => {
                    idle_at = at;
                    idle.as_mut().reset(at.unwrap_or(far));
                }
                None => stdout_open = false,
            },
            exited = child.wait() => status = Some(exited?),
        }
    }

    let status = match status {
        Some(status) => status,
        None => {
            // An idle stop is an interruption (the CLI reports its cost then); the others end it.
            let signal = if stop == Some(Stop::Idle) { Signal::SIGINT } else { Signal::SIGTERM };
            let mut keep = |item| {
                feed(item, &mut skipped_lines);
            };
            terminate(&mut child, pid, &grace, signal, &mut lines, &mut keep).await?
        }
    };
    // The CLI is gone (and reaped): kill whatever is left of its group (servers it did not
    // reap), then its cgroup and everything that escaped with the worker's marker.
    if let Some(pgid) = guard.pid.take() {
        let _ = killpg(pgid, Signal::SIGKILL);
        reaper::forget(pgid);
    }
    if let Some(cgroup) = guard.cgroup.take() {
        cgroup.kill_and_remove().await;
    }
    let marker = guard.marker.value().to_owned();
    let escaped = tokio::task::spawn_blocking(move || reaper::kill_marked(&marker)).await.unwrap_or(0);
    if escaped > 0 {
        tracing::debug!(processes = escaped, "killed processes that left the worker's process group");
    }
    if let Some(writer) = writer {
        writer.abort();
    }
    // Read what the CLI wrote before it exited (the `result` line is often still in the pipe;
    // after an idle stop, the interrupted CLI's result with its cost).
    if stdout_open && matches!(stop, None | Some(Stop::Idle)) {
        let _ =
            tokio::time::timeout(DRAIN, async { while feed(lines.next_line().await, &mut skipped_lines).is_some() {} })
                .await;
    }
    let stderr_tail = match stderr {
        Some(mut handle) => match tokio::time::timeout(DRAIN, &mut handle).await {
            Ok(tail) => tail.unwrap_or_default(),
            Err(_) => {
                // Something outside every mechanism still holds the pipe: give up on it, and close our end.
                handle.abort();
                String::new()
            }
        },
        None => String::new(),
    };
    drop(guard);
    Ok(Ended { exit: ExitInfo { code: status.code(), signal: status.signal() }, stop, stderr_tail, skipped_lines })
}

/// How long a child being stopped may take after SIGTERM; `skip` (a second signal) ends it at once.
#[derive(Debug, Clone, Default)]
pub struct Grace {
    pub period: Duration,
    pub skip: CancellationToken,
}

impl From<Duration> for Grace {
    fn from(period: Duration) -> Self {
        Self { period, skip: CancellationToken::new() }
    }
}

/// `signal` to the CLI, up to the grace for it to exit (reading its stdout meanwhile, so it never
/// blocks on a full pipe and its last lines are kept), then SIGKILL to the whole group.
async fn terminate<R: tokio::io::AsyncBufRead + Unpin>(
    child: &mut Child,
    pid: Option<Pid>,
    grace: &Grace,
    signal: Signal,
    lines: &mut BoundedLines<R>,
    keep: &mut impl FnMut(io::Result<Option<Line>>),
) -> io::Result<std::process::ExitStatus> {
    if let Some(pid) = pid {
        let _ = kill(pid, signal);
    }
    let exit = async {
        loop {
            tokio::select! {
                exited = child.wait() => return Some(exited),
                item = lines.next_line() => {
                    let open = matches!(item, Ok(Some(_)));
                    keep(item);
                    if !open { return Some(child.wait().await) }
                }
            }
        }
    };
    let graceful = tokio::select! {
        exited = exit => exited,
        () = tokio::time::sleep(grace.period) => None,
        () = grace.skip.cancelled() => None,
    };
    match graceful {
        Some(status) => status,
        None => {
            if let Some(pgid) = pid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            child.wait().await
        }
    }
}

/// Reads a stream to its end and keeps its last `limit` bytes, as text.
async fn tail<R: tokio::io::AsyncRead + Unpin>(mut reader: R, limit: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * limit {
                    kept.drain(..kept.len() - limit);
                }
            }
        }
    }
    if kept.len() > limit {
        kept.drain(..kept.len() - limit);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Kills every process whose environment names one of `task_ids` (`MCP_WORKERS_TASK_ID`) and
/// `data_dir` (`MCP_WORKERS_DATA_DIR`): what a crashed daemon of this data directory left behind.
/// Returns how many were killed.
pub fn kill_leftovers(task_ids: &[String], data_dir: &std::path::Path) -> usize {
    let wanted: Vec<String> = task_ids.iter().map(|id| format!("{}={id}", super::TASK_ID_VAR)).collect();
    let ours = format!("MCP_WORKERS_DATA_DIR={}", data_dir.display());
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let named = vars.iter().any(|var| wanted.iter().any(|w| *var == w.as_bytes()));
        if named && vars.contains(&ours.as_bytes()) && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}
