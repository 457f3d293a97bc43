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
pub mod progress;
pub mod signals;
pub mod stream;
pub mod structured;
pub mod tools;
pub mod transcript;
pub mod watchdog;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::protocol::governance::ResultGovernance;
use crate::protocol::{ErrorKind, SpawnAction, WorkerError, WorkerResult, WorkerResultTag};
use crate::registry::Selection;
use command::{CliSettings, Invocation};
use outcome::{Facts, Stop};
use stream::Transcript;
use watchdog::Watchdog;

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
    /// Where `worker_progress` lines go (`None`: nobody listens).
    pub progress: Option<progress::Sink>,
}

/// How often a worker with an open tool call says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);

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
    /// Where rate-limit and overload signals go (the pool's breaker), if anywhere.
    pub signals: Option<signals::SignalSink>,
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

    let data_dir = &settings.cli.data_dir;
    let resumed = match &action.agent.continue_from {
        None => None,
        Some(task_id) => Some(transcript::session_of(data_dir, task_id).ok_or_else(|| {
            let message = format!("no kept session for task {task_id} (it never ran a worker, or its session expired)");
            WorkerError::new(ErrorKind::SessionNotFound, message, false)
        })?),
    };
    // A fork leaves the first session as it is; a continuation appends to it, one at a time.
    let _lock = match &resumed {
        Some((session_id, _)) if !action.agent.fork => {
            Some(transcript::SessionLock::take(session_id).ok_or_else(|| {
                let message = format!("another continuation of session {session_id} is running");
                WorkerError::new(ErrorKind::SessionBusy, message, true)
            })?)
        }
        _ => None,
    };
    let (allowed_tools, disallowed_tools) = tools::patterns(action.agent.tools.as_ref(), &action.servers);
    let selection = crate::registry::Selection { allowed_tools, ..job.selection.clone() };
    let invocation = Invocation {
        task: &action.task,
        selection: &selection,
        config_path: &config_path,
        home: &home,
        profile: job.profile.as_deref(),
        max_turns: action.max_turns,
        model: action.model.as_deref(),
        timeout: action.timeout,
        json_schema: action.agent.output_schema.as_ref().map(|schema| schema.to_string()),
        disallowed_tools,
        resume: resumed.as_ref().map(|(_, path)| (path.as_path(), action.agent.fork)),
        governance: &action.governance,
    };
    let mut plan = command::plan(&settings.cli, &invocation, &settings.daemon_env);
    // Lets a restarted daemon recognise (and kill) what a crashed one left running.
    plan.env.insert(TASK_ID_VAR.to_owned(), action.task_id.clone());
    debug!(program = %plan.program.display(), servers = ?action.servers, "starting Claude Code");

    let mut transcript = Transcript::default();
    let requested = &action.servers;
    let began = Instant::now();
    let elapsed = || u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    // The registry's secrets, by value, are never shown in a preview or kept in a transcript.
    let secrets = transcript::Secrets::new(
        job.selection.variables.iter().filter_map(|name| settings.daemon_env.get(name)).cloned(),
    );
    let reporter = settings.progress.as_ref().filter(|sink| sink.all || action.agent.progress).map(|sink| {
        (sink, std::sync::Mutex::new(progress::Progress::new(&action.task_id, requested, secrets.clone())))
    });
    let mut keeper = transcript::Keeper::open(data_dir, &action.task_id, secrets);
    let report = |feed: &dyn Fn(&mut progress::Progress) -> Vec<progress::ProgressLine>| {
        if let Some((sink, state)) = &reporter {
            let lines = feed(&mut state.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            lines.into_iter().for_each(|line| sink.offer(line));
        }
    };
    let governance = &action.governance;
    let mut dog = Watchdog::new(
        governance.idle_timeout,
        governance.tool_timeout,
        settings.cli.mcp_connect_timeout,
        tokio::time::Instant::now(),
    );
    // What the watchdog saw when it tripped (before the lines of the graceful stop came).
    let mut tripped: Option<watchdog::Trip> = None;
    let mut seen = signals::Signals::default();
    let run = process::run_watched(
        &plan,
        action.timeout,
        &stopper.cancel,
        || stopper.reason(),
        process::Grace { period: settings.kill_grace, skip: stopper.force.clone() },
        dog.as_ref().and_then(Watchdog::deadline),
        |line| {
            report(&|p| p.feed(line, elapsed()));
            keeper.line(line);
            let was_init = transcript.init_seen;
            transcript.feed(line);
            // Fail fast: a requested server that did not connect dooms the task; spend no turns.
            if !was_init && transcript.init_seen && !outcome::unavailable_servers(&transcript, requested).is_empty() {
                return process::Verdict::Stop(Stop::McpUnavailable);
            }
            if let Some(sink) = &stopper.signals {
                if let Some(signal) = seen.next(&transcript, std::time::SystemTime::now()) {
                    (sink.0)(signal);
                }
            }
            let Some(dog) = dog.as_mut() else { return process::Verdict::Continue };
            let now = tokio::time::Instant::now();
            if let Some(at) = dog.deadline().filter(|at| *at <= now) {
                tripped.get_or_insert_with(|| dog.trip(at));
            }
            dog.observe(&transcript, now);
            process::Verdict::Watch(dog.deadline())
        },
    );
    let ended = with_heartbeat(run, reporter.is_some(), || report(&|p| p.heartbeat(elapsed()).into_iter().collect()))
        .await
        .map_err(|err| spawn_error(&plan.program, &err))?;
    let trip = match (ended.stop, tripped, &dog) {
        (Some(Stop::Idle), Some(trip), _) => Some(trip),
        (Some(Stop::Idle), None, Some(dog)) => Some(dog.trip(dog.deadline().unwrap_or_else(tokio::time::Instant::now))),
        _ => None,
    };

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
    let mut verdict = outcome::decide(&facts);
    if let (Some(trip), Some(error)) = (&trip, verdict.error.as_mut()) {
        let (message, detail) = trip.describe();
        warn!(phase = ?trip.phase, tool = trip.tool.as_deref(), "{message}");
        (verdict.result, error.message, error.detail) = (message.clone(), message, detail);
    }
    let mut structured_output = None;
    if let Some(schema) = &action.agent.output_schema {
        (verdict, structured_output) = structured::weigh(schema, transcript.result.as_ref(), verdict);
    }
    let servers = outcome::server_statuses(&facts);
    if let Some(session_id) = &keeper.session_id
        && let Err(err) = transcript::keep_session(data_dir, &action.task_id, session_id, &home)
    {
        warn!("cannot keep the session: {err}");
    }
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
        structured_output,
        session_id: keeper.session_id.clone(),
        governance: ResultGovernance { model: transcript.governed.model(), ..ResultGovernance::default() },
        origin: action.origin,
    })
}

/// Runs `work`, calling `tick` every [`HEARTBEAT`] meanwhile (when `enabled`).
async fn with_heartbeat<T>(work: impl std::future::Future<Output = T>, enabled: bool, tick: impl Fn()) -> T {
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            ended = &mut work => return ended,
            _ = heartbeat.tick(), if enabled => tick(),
        }
    }
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
