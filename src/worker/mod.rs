//! One Claude Code worker: a temporary MCP config, the CLI as a child with a deadline, its event
//! stream read into a transcript, and one `worker_result`.
//!
//! Submodules: `command` builds argv and environment (pure), `process` is the only code that
//! spawns and kills, `stream` reads events (pure), `outcome` decides the verdict (pure),
//! `mcp_log` reads the CLI's MCP failure reasons.

pub mod command;
pub mod mcp_log;
pub mod outcome;
pub mod process;
pub mod stream;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::protocol::{ErrorKind, SpawnAction, WorkerError, WorkerResult, WorkerResultTag};
use crate::registry::Selection;
use command::{CliSettings, Invocation};
use outcome::{Facts, Stop};
use stream::Transcript;

/// Every worker's environment names its task, so its processes can be found again.
pub const TASK_ID_VAR: &str = "MCP_WORKERS_TASK_ID";

/// Settings shared by all workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub cli: CliSettings,
    /// SIGTERM-to-SIGKILL grace.
    pub kill_grace: Duration,
    /// Where per-worker temporary directories go: the daemon's scratch directory (`None`: the
    /// system's temporary directory).
    pub temp_root: Option<PathBuf>,
    /// The daemon's environment, consulted by name only.
    pub daemon_env: BTreeMap<String, String>,
}

/// An admitted action: validated, servers found, profile resolved.
#[derive(Debug, Clone)]
pub struct Job {
    pub action: SpawnAction,
    pub selection: Selection,
    pub profile: Option<PathBuf>,
}

/// How a running worker can be stopped from outside.
#[derive(Debug, Clone)]
pub struct Stopper {
    /// This worker's own token (cancelled by the caller, or with the daemon).
    pub cancel: CancellationToken,
    /// The daemon's shutdown token: tells a shutdown from a cancellation.
    pub shutdown: CancellationToken,
    /// Fires on a second signal: a worker being stopped is killed without its kill grace.
    pub force: CancellationToken,
}

impl Stopper {
    fn reason(&self) -> Stop {
        if self.shutdown.is_cancelled() { Stop::Shutdown } else { Stop::Cancelled }
    }
}

/// Runs one worker to its end. Always returns a result; never panics on what the child does.
pub async fn run(settings: &WorkerSettings, job: &Job, stopper: &Stopper) -> WorkerResult {
    let span = tracing::info_span!("worker", task_id = %job.action.task_id);
    async {
        let started = Instant::now();
        let mut result = match run_inner(settings, job, stopper).await {
            Ok(result) => result,
            Err(error) => {
                warn!(kind = error.kind.as_str(), "{}", error.message);
                WorkerResult::failure(&job.action.task_id, job.action.origin, error)
            }
        };
        result.duration = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(
            success = result.success,
            kind = result.error.as_ref().map(|e| e.kind.as_str()),
            tools = ?result.tools_used,
            ms = result.duration,
            "worker finished"
        );
        result
    }
    .instrument(span)
    .await
}

async fn run_inner(settings: &WorkerSettings, job: &Job, stopper: &Stopper) -> Result<WorkerResult, WorkerError> {
    let action = &job.action;
    let internal = |what: &str, err: std::io::Error| {
        WorkerError::new(ErrorKind::InternalError, format!("cannot {what}: {err}"), true)
    };
    let temp = match &settings.temp_root {
        Some(root) => tempfile::Builder::new().prefix("worker-").tempdir_in(root),
        None => tempfile::Builder::new().prefix("mcp-workers-worker-").tempdir(),
    }
    .map_err(|e| internal("create the worker's temporary directory", e))?;
    let config_path = temp.path().join("mcp.json");
    write_private(&config_path, &job.selection.config).map_err(|e| internal("write the MCP config", e))?;
    let home = temp.path().join("home");
    std::fs::create_dir(&home).map_err(|e| internal("create the worker's HOME", e))?;

    let invocation = Invocation {
        task: &action.task,
        selection: &job.selection,
        config_path: &config_path,
        home: &home,
        profile: job.profile.as_deref(),
        max_turns: action.max_turns,
        model: action.model.as_deref(),
        timeout: action.timeout,
    };
    let mut plan = command::plan(&settings.cli, &invocation, &settings.daemon_env);
    // Lets a restarted daemon recognise (and kill) what a crashed one left running.
    plan.env.insert(TASK_ID_VAR.to_owned(), action.task_id.clone());
    debug!(program = %plan.program.display(), servers = ?action.servers, "starting Claude Code");

    let mut transcript = Transcript::default();
    let requested = &action.servers;
    let ended = process::run(
        &plan,
        action.timeout,
        &stopper.cancel,
        || stopper.reason(),
        process::Grace { period: settings.kill_grace, skip: stopper.force.clone() },
        |line| {
            let was_init = transcript.init_seen;
            transcript.feed(line);
            // Fail fast: a requested server that did not connect dooms the task; spend no turns.
            if !was_init && transcript.init_seen && !outcome::unavailable_servers(&transcript, requested).is_empty() {
                return process::Verdict::Stop(Stop::McpUnavailable);
            }
            process::Verdict::Continue
        },
    )
    .await
    .map_err(|err| spawn_error(&plan.program, &err))?;

    if ended.skipped_lines > 0 {
        warn!(lines = ended.skipped_lines, "skipped over-long lines from Claude Code");
    }
    let mcp_reasons = if outcome::unavailable_servers(&transcript, requested).is_empty() {
        BTreeMap::new()
    } else {
        mcp_log::failure_reasons(&home, requested)
    };
    let facts = Facts {
        transcript: &transcript,
        exit: ended.exit,
        stop: ended.stop,
        stderr_tail: &ended.stderr_tail,
        requested,
        mcp_reasons: &mcp_reasons,
        timeout: action.timeout,
    };
    let verdict = outcome::decide(&facts);
    let servers = outcome::server_statuses(&facts);
    if let Err(err) = temp.close() {
        warn!("cannot remove the worker's temporary directory: {err}");
    }
    Ok(WorkerResult {
        kind: WorkerResultTag::WorkerResult,
        task_id: action.task_id.clone(),
        success: verdict.success,
        result: verdict.result,
        tools_used: transcript.tools_used(requested),
        duration: 0,
        error: verdict.error,
        cost_usd: transcript.result.as_ref().and_then(|r| r.total_cost_usd),
        turns: transcript.result.as_ref().and_then(|r| r.num_turns),
        servers,
        denied_tools: transcript.tools_denied(requested),
        queued: None,
        origin: action.origin,
    })
}

fn spawn_error(program: &Path, err: &std::io::Error) -> WorkerError {
    let retryable = !matches!(err.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied);
    WorkerError::new(
        ErrorKind::SpawnFailed,
        format!("cannot start Claude Code ({}): {err}", program.display()),
        retryable,
    )
}

/// Writes JSON to a new file readable by its owner only. No fsync: the file lives only as long as
/// the worker, and the child reads it from the page cache.
fn write_private(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    file.write_all(&bytes)
}
