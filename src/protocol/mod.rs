//! The wire protocol: what agents send and what they get back. Pure: nothing here does I/O.
//!
//! Input is one JSON document per line (or HTTP body): `{"actions":[...]}`. Output is one JSON
//! object per line: a `worker_result` per `spawn_worker` action, an `action_ack` per action of
//! another type, an `error` per line that could not be read at all.

pub mod agent;
pub mod documents;
pub mod governance;
pub mod parse;
pub mod reply;
pub mod schema;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default worker deadline when an action names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(60_000);

/// Stable, snake_case failure kinds. They are API: add, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidAction,
    UnknownServer,
    SpawnFailed,
    McpUnavailable,
    Timeout,
    ClaudeError,
    RateLimited,
    MaxTurns,
    Cancelled,
    Shutdown,
    Interrupted,
    InternalError,
    /// A workers server inside a chain of workers that spawn workers refused to go deeper.
    DepthExceeded,
    /// `outputSchema` was asked for and the model never gave it (issue 11).
    StructuredOutputMissing,
    /// The structured output did not match `outputSchema` (the CLI gave up, or our re-validation).
    StructuredOutputInvalid,
    /// `continue` names a task whose session is not kept (never ran, expired, unknown).
    SessionNotFound,
    /// Another continuation of the same session is running.
    SessionBusy,
    /// The action's `maxBudgetUsd` was reached (the CLI's `--max-budget-usd`).
    BudgetExceeded,
    /// The daemon-wide `--budget` window has no room for the action (policy `refuse`).
    BudgetExhausted,
    /// The watchdog saw no progress for longer than `idleTimeout` (or a tool call open longer
    /// than `toolTimeout`).
    IdleTimeout,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 20] = [
        ErrorKind::InvalidAction,
        ErrorKind::UnknownServer,
        ErrorKind::SpawnFailed,
        ErrorKind::McpUnavailable,
        ErrorKind::Timeout,
        ErrorKind::ClaudeError,
        ErrorKind::RateLimited,
        ErrorKind::MaxTurns,
        ErrorKind::Cancelled,
        ErrorKind::Shutdown,
        ErrorKind::Interrupted,
        ErrorKind::InternalError,
        ErrorKind::DepthExceeded,
        ErrorKind::StructuredOutputMissing,
        ErrorKind::StructuredOutputInvalid,
        ErrorKind::SessionNotFound,
        ErrorKind::SessionBusy,
        ErrorKind::BudgetExceeded,
        ErrorKind::BudgetExhausted,
        ErrorKind::IdleTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidAction => "invalid_action",
            ErrorKind::UnknownServer => "unknown_server",
            ErrorKind::SpawnFailed => "spawn_failed",
            ErrorKind::McpUnavailable => "mcp_unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ClaudeError => "claude_error",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::MaxTurns => "max_turns",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::InternalError => "internal_error",
            ErrorKind::DepthExceeded => "depth_exceeded",
            ErrorKind::StructuredOutputMissing => "structured_output_missing",
            ErrorKind::StructuredOutputInvalid => "structured_output_invalid",
            ErrorKind::SessionNotFound => "session_not_found",
            ErrorKind::SessionBusy => "session_busy",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::BudgetExhausted => "budget_exhausted",
            ErrorKind::IdleTimeout => "idle_timeout",
        }
    }
}

/// The `error` object of a failed `worker_result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerError {
    pub kind: ErrorKind,
    pub message: String,
    pub retryable: bool,
    /// Kind-specific details (`idle_timeout`: phase, tool, silence; `rate_limited`,
    /// `budget_exhausted`: when to try again).
    #[serde(flatten, default)]
    pub detail: governance::ErrorDetail,
}

impl WorkerError {
    pub fn new(kind: ErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        Self { kind, message: message.into(), retryable, detail: governance::ErrorDetail::default() }
    }
}

/// Where an action came from: its input line (1-based, stdin only) and its index in `actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub index: usize,
}

/// The status of one requested MCP server as the CLI reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `{"type":"worker_result", ...}`: the one answer to one `spawn_worker` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    #[serde(rename = "type")]
    pub kind: WorkerResultTag,
    pub task_id: String,
    pub success: bool,
    pub result: String,
    pub tools_used: Vec<String>,
    /// Milliseconds the worker ran (0 when it never started).
    pub duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WorkerError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub servers: BTreeMap<String, ServerStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub denied_tools: Vec<String>,
    /// Milliseconds the action waited for a free worker slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// The object the worker gave for the action's `outputSchema`, re-validated by the daemon.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub structured_output: Option<serde_json::Value>,
    /// The CLI session the worker ran in (what `"continue": taskId` resumes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_id: Option<String>,
    /// Retries, the model that answered: see [`governance::ResultGovernance`].
    #[serde(flatten, default)]
    pub governance: governance::ResultGovernance,
    #[serde(flatten)]
    pub origin: Origin,
}

/// The constant `"worker_result"` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WorkerResultTag {
    #[default]
    #[serde(rename = "worker_result")]
    WorkerResult,
}

impl WorkerResult {
    /// A failure that happened before or instead of running a worker.
    pub fn failure(task_id: impl Into<String>, origin: Origin, error: WorkerError) -> Self {
        Self {
            kind: WorkerResultTag::WorkerResult,
            task_id: task_id.into(),
            success: false,
            result: error.message.clone(),
            tools_used: Vec::new(),
            duration: 0,
            error: Some(error),
            cost_usd: None,
            turns: None,
            servers: BTreeMap::new(),
            denied_tools: Vec::new(),
            queued: None,
            structured_output: None,
            session_id: None,
            governance: governance::ResultGovernance::default(),
            origin,
        }
    }
}

/// A validated `spawn_worker` action, ready for the registry check and a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnAction {
    pub task_id: String,
    pub task: String,
    pub servers: Vec<String>,
    pub timeout: Duration,
    pub profile: Option<String>,
    pub max_turns: Option<u32>,
    pub model: Option<String>,
    /// What an orchestrating agent asked for beyond the basics (`outputSchema`, ...).
    pub agent: Box<agent::AgentOptions>,
    /// Budget, watchdog, retries, fallback models.
    pub governance: governance::Governance,
    pub origin: Origin,
}

impl SpawnAction {
    /// The action as JSON again, with its task id and timeout filled in: what a journal stores
    /// to run it after a restart ([`parse::parse_action`] reads it back to the same action).
    pub fn to_json(&self) -> serde_json::Value {
        let mut action = serde_json::json!({
            "type": "spawn_worker",
            "taskId": self.task_id,
            "task": self.task,
            "servers": self.servers,
            "timeout": u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        });
        if let Some(profile) = &self.profile {
            action["profile"] = profile.clone().into();
        }
        if let Some(turns) = self.max_turns {
            action["maxTurns"] = turns.into();
        }
        if let Some(model) = &self.model {
            action["model"] = model.clone().into();
        }
        self.agent.write_json(&mut action);
        self.governance.write_json(&mut action);
        action
    }
}

/// Everything that can go on stdout (and over HTTP).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Output {
    Result(Box<WorkerResult>),
    Ack(ActionAck),
    Error(LineError),
    /// `dispatch_paused` / `dispatch_resumed`: the daemon stopped or resumed starting workers.
    Dispatch(governance::DispatchLine),
}

impl Output {
    /// One protocol line, without the newline.
    pub fn to_line(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to a fixed error line all the same.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","error":{"kind":"internal_error","message":"could not serialise output"}}"#.to_owned()
        })
    }
}

/// `{"type":"action_ack", ...}`: an action of another type was seen and is left to other consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionAck {
    #[serde(rename = "type")]
    pub kind: AckTag,
    pub action_type: String,
    #[serde(flatten)]
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AckTag {
    #[default]
    #[serde(rename = "action_ack")]
    ActionAck,
}

/// `{"type":"error", ...}`: a whole input line could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineError {
    #[serde(rename = "type")]
    pub kind: ErrorTag,
    pub error: LineErrorBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ErrorTag {
    #[default]
    #[serde(rename = "error")]
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineErrorBody {
    pub kind: LineErrorKind,
    pub message: String,
}

/// Why a whole line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineErrorKind {
    /// Not JSON (or nested too deeply to read).
    InvalidJson,
    /// Longer than the line limit; the rest of the line was skipped.
    LineTooLong,
    /// JSON, but not an object with an `actions` array.
    InvalidEnvelope,
}

impl LineError {
    pub fn new(kind: LineErrorKind, message: impl Into<String>, line: Option<u64>) -> Self {
        Self { kind: ErrorTag::Error, error: LineErrorBody { kind, message: message.into() }, line }
    }
}
