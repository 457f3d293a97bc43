//! The MCP face of the queue: the three tools of the original contract over rmcp. The handler
//! is written out (not with `#[tool]`) so the input schemas stay exactly the original's and a
//! malformed call gets an `isError` reply the model can act on, not a protocol error.

use std::sync::{Arc, LazyLock};

use futures_util::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::hub::{PollOutcome, Queue, QueueError};
use super::replies;
use crate::mcp::ticker::ProgressTicker;
use crate::mcp::transport::DirectTools;
use crate::store::SubmitOutcome;

/// The server handed to a transport: cheap to clone, all state in the shared [`Queue`].
#[derive(Clone)]
pub struct QueueServer {
    queue: Arc<Queue>,
}

impl QueueServer {
    pub fn new(queue: Arc<Queue>) -> Self {
        Self { queue }
    }

    /// The three tools, for a server that serves them beside others (`serve`'s `/mcp`).
    pub fn tool_list() -> &'static [Tool] {
        &TOOLS
    }
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The original's tool list, names, descriptions and input schemas unchanged.
static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(|| {
    vec![
        Tool::new(
            "worker_create",
            "Register a new worker and begin polling for tasks",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "worker_poll",
            "Poll for available tasks to process",
            schema(json!({
                "type": "object",
                "properties": {
                    "worker_id": {"type": "string", "description": "ID of the worker polling for tasks"}
                },
                "required": ["worker_id"]
            })),
        ),
        Tool::new(
            "worker_submit",
            "Submit the response for a completed task",
            schema(json!({
                "type": "object",
                "properties": {
                    "worker_id": {"type": "string", "description": "ID of the worker submitting the response"},
                    "task_id": {"type": "string", "description": "ID of the completed task"},
                    "response": {"type": "string", "description": "The response to the task prompt"}
                },
                "required": ["worker_id", "task_id", "response"]
            })),
        ),
    ]
});

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required string argument, or the error message for the model.
fn string_arg<'a>(args: Option<&'a JsonObject>, name: &str) -> Result<&'a str, String> {
    match args.and_then(|a| a.get(name)) {
        None => Err(format!("Missing required argument {name} (a string).")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("Argument {name} must be a string, not {}.", type_name(other))),
    }
}

/// `worker_poll`'s `worker_id`, or the reply that asks for one.
fn poll_worker_id(args: Option<&JsonObject>) -> Result<&str, CallToolResult> {
    string_arg(args, "worker_id").map_err(|msg| {
        replies::error_with(
            msg,
            None,
            "call worker_poll again with your worker_id (a string) - if you have none, call worker_create first - do not break this tool call chain".into(),
        )
    })
}

fn unknown_tool(name: &str) -> McpError {
    McpError::invalid_params(
        format!("Unknown tool: {name} (this server has worker_create, worker_poll, worker_submit)"),
        None,
    )
}

fn internal(err: &QueueError) -> McpError {
    tracing::error!(error = %err, "queue store failed");
    McpError::internal_error(format!("the queue store failed: {err}"), None)
}

impl QueueServer {
    async fn worker_create(&self) -> Result<CallToolResult, McpError> {
        let worker_id = self.queue.create_worker().await.map_err(|e| internal(&e))?;
        tracing::info!(worker_id, "worker registered");
        Ok(replies::next(&worker_id))
    }

    /// `worker_poll` through rmcp: progress notifications when the client asked for them, and
    /// cancelled by `notifications/cancelled` or (over HTTP) the client going away.
    async fn worker_poll(
        &self,
        args: Option<&JsonObject>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let worker_id = match poll_worker_id(args) {
            Ok(w) => w,
            Err(reply) => return Ok(reply),
        };
        let _ticker = context.meta.get_progress_token().map(|token| {
            let total = self.queue.config().poll_timeout.as_secs_f64();
            let every = self.queue.config().progress_interval;
            ProgressTicker::start(context.peer.clone(), token, every, move |waited| async move {
                (Some(total), format!("waiting for a task ({waited:.0}s)"))
            })
        });
        let disconnect = crate::mcp::disconnect::Disconnect::of(&context.extensions);
        let cancelled = async {
            match &disconnect {
                Some(gone) => tokio::select! {
                    () = context.ct.cancelled() => {}
                    () = gone.cancelled() => {}
                },
                None => context.ct.cancelled().await,
            }
        };
        self.poll_until(worker_id, cancelled).await
    }

    /// `worker_poll` for `worker_id` until a task, the timeout, or `cancelled`.
    async fn poll_until(
        &self,
        worker_id: &str,
        cancelled: impl Future<Output = ()>,
    ) -> Result<CallToolResult, McpError> {
        match self.queue.poll(worker_id, cancelled).await.map_err(|e| internal(&e))? {
            PollOutcome::Task(task) => {
                tracing::info!(worker_id, task_id = %task.id, attempt = task.attempts, "task handed out");
                Ok(replies::assignment(worker_id, &task))
            }
            PollOutcome::Idle => Ok(replies::next(worker_id)),
            PollOutcome::UnknownWorker => Ok(replies::unknown_worker(worker_id)),
            PollOutcome::Cancelled => {
                tracing::info!(worker_id, "poll cancelled or client gone: poll ended without a task");
                Ok(replies::error_then_poll(worker_id, "The poll was cancelled; no task was taken.".into()))
            }
        }
    }

    async fn worker_submit(&self, args: Option<&JsonObject>) -> Result<CallToolResult, McpError> {
        let parsed = string_arg(args, "worker_id").and_then(|w| {
            let t = string_arg(args, "task_id")?;
            Ok((w, t, string_arg(args, "response")?))
        });
        let (worker_id, task_id, response) = match parsed {
            Ok(p) => p,
            Err(msg) => {
                let worker_id = args.and_then(|a| a.get("worker_id")).and_then(Value::as_str);
                return Ok(replies::error_with(
                    msg,
                    worker_id,
                    "call worker_submit again with worker_id, task_id and response, all strings - do not break this tool call chain".into(),
                ));
            }
        };
        let limit = self.queue.config().max_response_bytes;
        if response.len() > limit {
            return Ok(replies::error_with(
                format!(
                    "The response is too large ({} bytes; the limit is {limit}). Nothing was stored.",
                    response.len()
                ),
                Some(worker_id),
                format!(
                    "shorten your response and call worker_submit again with worker_id {worker_id}, task_id {task_id} - keep your response brief and direct - do not break this tool call chain"
                ),
            ));
        }
        let outcome = self.queue.submit(worker_id, task_id, response).await.map_err(|e| internal(&e))?;
        Ok(match outcome {
            SubmitOutcome::Accepted => {
                let preview: String = response.chars().take(500).collect();
                tracing::info!(worker_id, task_id, bytes = response.len(), response = %preview, "task completed");
                replies::submitted(worker_id)
            }
            SubmitOutcome::UnknownWorker => replies::unknown_worker(worker_id),
            SubmitOutcome::UnknownTask => {
                replies::error_then_poll(worker_id, format!("Task with ID {task_id} not found."))
            }
            SubmitOutcome::AlreadyDone { by } if by.as_deref() == Some(worker_id) => replies::error_then_poll(
                worker_id,
                format!("Task with ID {task_id} was already submitted; the first response is kept."),
            ),
            SubmitOutcome::AlreadyDone { .. } => replies::error_then_poll(
                worker_id,
                format!("Task with ID {task_id} was already completed by another worker."),
            ),
            SubmitOutcome::NotOwner => replies::error_then_poll(
                worker_id,
                format!(
                    "Task with ID {task_id} is not assigned to worker {worker_id} (its lease may have run out and gone to another worker)."
                ),
            ),
            SubmitOutcome::Dead => replies::error_then_poll(
                worker_id,
                format!("Task with ID {task_id} was given up after too many attempts."),
            ),
        })
    }
}

/// The three tools over stdio's direct lane (`LineTransport::with_direct`), past rmcp's service
/// loop: a plain call carries no `_meta`, so no progress token, and the lane's token is what
/// `notifications/cancelled` cancels. The same functions as through rmcp.
impl DirectTools for QueueServer {
    fn handles(&self, name: &str) -> bool {
        matches!(name, "worker_create" | "worker_poll" | "worker_submit")
    }

    fn call(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cancelled: CancellationToken,
    ) -> BoxFuture<'static, Result<CallToolResult, McpError>> {
        let server = self.clone();
        match name {
            "worker_create" => Box::pin(async move { server.worker_create().await }),
            "worker_poll" => Box::pin(async move {
                match poll_worker_id(arguments.as_ref()) {
                    Ok(worker_id) => server.poll_until(worker_id, cancelled.cancelled()).await,
                    Err(reply) => Ok(reply),
                }
            }),
            "worker_submit" => Box::pin(async move { server.worker_submit(arguments.as_ref()).await }),
            other => Box::pin(std::future::ready(Err(unknown_tool(other)))),
        }
    }
}

impl ServerHandler for QueueServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-workers-queue", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "A polling task queue: call worker_create once, then follow the instructions in each reply \
                 (worker_poll for a task, worker_submit with your response, poll again).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(TOOLS.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        TOOLS.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.as_ref();
        let result = match request.name.as_ref() {
            "worker_create" => self.worker_create().await?,
            "worker_poll" => self.worker_poll(args, &context).await?,
            "worker_submit" => self.worker_submit(args).await?,
            other => return Err(unknown_tool(other)),
        };
        Ok(result.into())
    }
}
