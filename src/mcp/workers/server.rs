//! The MCP face of the worker pool: `spawn_worker`, `worker_wait`, `worker_status`,
//! `worker_cancel`, `worker_list`. Written out (not with `#[tool]`) so that `spawn_worker`'s input
//! schema is the action schema itself (new action fields appear here without code) with the
//! registry's server names as an enum.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use super::front::{Cancel, Front, Refusal, State, Status, progress_text};
use crate::mcp::ticker::ProgressTicker;
use crate::protocol::{ErrorKind, WorkerError};
use crate::registry::Registry;

/// The longest a call may wait: below Claude Desktop's cut of a tool call at about 60 s.
pub const MAX_WAIT: Duration = Duration::from_secs(50);

/// How a workers server behaves.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `wait` when a call names none.
    pub default_wait: Duration,
    /// How often a waiting call with a progress token hears from us.
    pub progress_interval: Duration,
    /// Set when this server may not spawn (too deep in a chain of workers): the refusal's text.
    pub refuse_spawn: Option<String>,
}

#[derive(Clone)]
pub struct WorkersServer {
    front: Arc<dyn Front>,
    tools: Arc<Vec<Tool>>,
    settings: Arc<ServerSettings>,
}

impl WorkersServer {
    pub fn new(front: Arc<dyn Front>, registry: &Registry, settings: ServerSettings) -> Self {
        Self { front, tools: Arc::new(tools(registry, &settings)), settings: Arc::new(settings) }
    }

    /// The tools, for a server that serves them beside others (`serve`'s `/mcp`).
    pub fn tool_list(&self) -> &[Tool] {
        &self.tools
    }

    /// Whether `name` is one of these tools.
    pub fn has_tool(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.name == name)
    }
}

fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// `spawn_worker`'s input schema: the action schema's properties (without `type`), the registry's
/// names as the servers' enum, and `wait` and `idempotencyKey`. Pure.
pub fn spawn_schema(registry: &Registry, default_wait: Duration) -> Value {
    let action: Value = serde_json::from_str(crate::protocol::schema::SCHEMA_TEXT).unwrap_or_default();
    let defs = action.get("$defs").cloned().unwrap_or_default();
    let mut properties = action.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    // A tool's schema stands alone: MCP hosts do not all resolve `$ref`s.
    properties.values_mut().for_each(|p| inline_refs(p, &defs, 0));
    // `type` is the tool's own; `data` is the nested shape of the same fields, for agents' JSON.
    properties.remove("type");
    properties.remove("data");
    let names: Vec<&str> = registry.names().collect();
    let described: Vec<String> = registry
        .entries()
        .map(|(name, entry)| match &entry.description {
            Some(text) => format!("{name}: {text}"),
            None => name.to_owned(),
        })
        .collect();
    if let Some(servers) = properties.get_mut("servers").and_then(Value::as_object_mut) {
        servers.insert(
            "description".into(),
            format!("The MCP servers the worker may use (only their tools). Available: {}.", described.join("; "))
                .into(),
        );
        if let Some(items) = servers.get_mut("items").and_then(Value::as_object_mut) {
            items.insert("enum".into(), json!(names));
        }
    }
    properties.insert(
        "wait".into(),
        json!({
            "description": format!(
                "Seconds to wait for the worker's result (default {}, at most {}). If it is not done by then \
                 you get a handle: call worker_wait with its taskId. 0 returns the handle at once.",
                default_wait.as_secs(), MAX_WAIT.as_secs()),
            "type": "number", "minimum": 0, "maximum": MAX_WAIT.as_secs()
        }),
    );
    properties.insert(
        "idempotencyKey".into(),
        json!({
            "description": "Any string; a call repeated with the same key returns the task of the first call \
                            instead of starting another worker.",
            "type": "string", "minLength": 1, "maxLength": 200
        }),
    );
    json!({
        "type": "object",
        "properties": properties,
        "required": action.get("required").and_then(Value::as_array).map(|r| {
            r.iter().filter(|name| name.as_str() != Some("type")).cloned().collect::<Vec<_>>()
        }),
        "additionalProperties": false,
    })
}

/// Replaces each `{"$ref": "#/$defs/NAME"}` below `value` by a copy of that definition.
fn inline_refs(value: &mut Value, defs: &Value, depth: usize) {
    const MAX_DEPTH: usize = 8;
    match value {
        Value::Object(map) => {
            let target = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/"));
            if let Some(found) = target.and_then(|name| defs.get(name)).filter(|_| depth < MAX_DEPTH) {
                *value = found.clone();
                inline_refs(value, defs, depth + 1);
            } else {
                map.values_mut().for_each(|v| inline_refs(v, defs, depth));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline_refs(v, defs, depth)),
        _ => {}
    }
}

fn wait_property() -> Value {
    json!({"description": format!("Seconds to wait (default 25, at most {}).", MAX_WAIT.as_secs()),
           "type": "number", "minimum": 0, "maximum": MAX_WAIT.as_secs()})
}

fn task_id_property() -> Value {
    json!({"type": "string", "description": "The taskId that spawn_worker returned."})
}

fn tools(registry: &Registry, settings: &ServerSettings) -> Vec<Tool> {
    vec![
        Tool::new(
            "spawn_worker",
            "Run a Claude Code worker on a task with exactly the MCP servers you name, and get its observed \
             result: success, its answer, the tools it really used, duration. Give a self-contained task (the \
             worker sees nothing else). Waits up to `wait` seconds; a longer job returns a taskId for worker_wait.",
            object(spawn_schema(registry, settings.default_wait)),
        ),
        Tool::new(
            "worker_wait",
            "Wait for one or several workers started by spawn_worker. Returns as soon as one of them is done (or \
             the wait ends), with the results of those that are done and the state of the others.",
            object(json!({
                "type": "object",
                "properties": {
                    "taskIds": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 100,
                                "description": "The taskIds to wait for."},
                    "wait": wait_property(),
                },
                "required": ["taskIds"],
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "worker_status",
            "The state of one worker (queued, running, done) and its result once it is done.",
            object(json!({"type": "object", "properties": {"taskId": task_id_property()}, "required": ["taskId"],
                          "additionalProperties": false})),
        ),
        Tool::new(
            "worker_cancel",
            "Stop a queued or running worker. Its result then says `cancelled`.",
            object(json!({"type": "object", "properties": {"taskId": task_id_property()}, "required": ["taskId"],
                          "additionalProperties": false})),
        ),
        Tool::new(
            "worker_list",
            "The workers this server started, newest first (without their results: use worker_status).",
            object(json!({
                "type": "object",
                "properties": {
                    "state": {"type": "string", "enum": ["queued", "running", "done"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 200, "description": "Default 50."},
                },
                "additionalProperties": false,
            })),
        ),
    ]
}

/// A tool error the model can act on: `{error: {kind, message, retryable}, ...}`.
fn refusal(error: &WorkerError, extra: Value) -> CallToolResult {
    let mut body = json!({"error": error});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let mut result = CallToolResult::structured_error(body.clone());
    result.content = vec![ContentBlock::text(format!("{}: {}\n{body}", error.kind.as_str(), error.message))];
    result
}

fn bad_arguments(message: impl Into<String>) -> CallToolResult {
    refusal(&WorkerError::new(ErrorKind::InvalidAction, message, false), json!({}))
}

/// A short line about a `worker_result`, then the result itself.
fn summary(result: &Value) -> String {
    let id = result["taskId"].as_str().unwrap_or("?");
    let duration = result["duration"].as_u64().unwrap_or(0);
    let head = if result["success"] == true {
        let tools: Vec<&str> =
            result["toolsUsed"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let tools = if tools.is_empty() { "none".to_owned() } else { tools.join(", ") };
        format!("worker {id} succeeded in {duration} ms (tools used: {tools})")
    } else {
        let kind = result["error"]["kind"].as_str().unwrap_or("failed");
        format!("worker {id} failed ({kind}) after {duration} ms")
    };
    format!("{head}\n{result}")
}

fn finished(result: &Value) -> CallToolResult {
    let mut reply = CallToolResult::structured(result.clone());
    reply.content = vec![ContentBlock::text(summary(result))];
    reply
}

/// A store failure while answering: a tool error the model can retry.
fn store_failed(message: &str) -> CallToolResult {
    refusal(&WorkerError::new(ErrorKind::InternalError, format!("the journal failed: {message}"), true), json!({}))
}

fn handle(status: &Status) -> CallToolResult {
    let instructions = format!(
        "The worker is {} after {} s. Call worker_wait with taskIds [\"{}\"] to get its result.",
        state_word(status.state),
        status.elapsed_ms / 1000,
        status.task_id
    );
    let body = json!({"taskId": status.task_id, "state": status.state, "elapsedMs": status.elapsed_ms,
                      "runningMs": status.running_ms, "instructions": instructions});
    let mut reply = CallToolResult::structured(body.clone());
    reply.content = vec![ContentBlock::text(format!("{instructions}\n{body}"))];
    reply
}

fn state_word(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Running => "still running",
        State::Done => "done",
    }
}

/// `wait` in seconds, if given, as a duration no longer than [`MAX_WAIT`].
fn wait_arg(args: &JsonObject, default: Duration) -> Result<Duration, String> {
    match args.get("wait") {
        None | Some(Value::Null) => Ok(default.min(MAX_WAIT)),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if (0.0..=MAX_WAIT.as_secs_f64()).contains(&s) => Ok(Duration::from_secs_f64(s)),
            _ => Err(format!("`wait` must be between 0 and {} seconds", MAX_WAIT.as_secs())),
        },
        Some(_) => Err("`wait` must be a number of seconds".into()),
    }
}

fn task_id_arg(args: &JsonObject) -> Result<&str, String> {
    args.get("taskId").and_then(Value::as_str).ok_or_else(|| "`taskId` (a string) is required".to_owned())
}

impl WorkersServer {
    fn ticker(&self, context: &RequestContext<RoleServer>, ids: &[String]) -> Option<ProgressTicker> {
        let token = context.meta.get_progress_token()?;
        let every = self.settings.progress_interval;
        let (front, ids) = (Arc::clone(&self.front), ids.to_vec());
        Some(ProgressTicker::start(context.peer.clone(), token, every, move |_waited| {
            let (front, ids) = (Arc::clone(&front), ids.clone());
            async move {
                let mut states = Vec::new();
                for id in &ids {
                    states.push(match front.status(id).await {
                        Ok(Some(s)) => progress_text(&s),
                        Ok(None) => format!("{id}: unknown"),
                        Err(_) => format!("{id}: (the journal does not answer)"),
                    });
                }
                (None, states.join("; "))
            }
        }))
    }

    async fn spawn_worker(&self, args: JsonObject, context: &RequestContext<RoleServer>) -> CallToolResult {
        if let Some(why) = &self.settings.refuse_spawn {
            return refusal(&WorkerError::new(ErrorKind::DepthExceeded, why.clone(), false), json!({}));
        }
        let mut action: Map<String, Value> = args;
        let wait = match wait_arg(&action, self.settings.default_wait) {
            Ok(wait) => wait,
            Err(message) => return bad_arguments(message),
        };
        action.remove("wait");
        let key = match action.remove("idempotencyKey") {
            None => None,
            Some(Value::String(key)) if !key.is_empty() && key.len() <= 200 => Some(key),
            Some(_) => return bad_arguments("`idempotencyKey` must be a string of 1 to 200 characters"),
        };
        let task_id = match self.front.spawn(action, key.as_deref()).await {
            Ok(id) => id,
            Err(Refusal(error)) => return refusal(&error, json!({})),
        };
        tracing::info!(task_id, "worker accepted over MCP");
        self.wait_for(std::slice::from_ref(&task_id), wait, context).await
    }

    /// Waits for `ids`; one id gives its result or its handle, several a combined answer.
    async fn wait_for(&self, ids: &[String], wait: Duration, context: &RequestContext<RoleServer>) -> CallToolResult {
        let _ticker = self.ticker(context, ids);
        // A cancelled request ends the wait, never the worker (only worker_cancel stops work).
        let statuses = match self.front.wait(ids, wait, Box::pin(context.ct.cancelled())).await {
            Ok(statuses) => statuses,
            Err(message) => return store_failed(&message),
        };
        if let [(id, status)] = statuses.as_slice() {
            return match status {
                None => unknown(id),
                Some(Status { result: Some(result), .. }) => finished(result),
                Some(status) => handle(status),
            };
        }
        let mut done = Vec::new();
        let mut pending = Vec::new();
        let mut missing = Vec::new();
        for (id, status) in statuses {
            match status {
                None => missing.push(id),
                Some(Status { result: Some(result), .. }) => done.push(result),
                Some(status) => pending.push(json!({"taskId": status.task_id, "state": status.state,
                                                    "elapsedMs": status.elapsed_ms})),
            }
        }
        let instructions = if pending.is_empty() {
            "All of these workers are done.".to_owned()
        } else {
            "Call worker_wait again with the taskIds still pending.".to_owned()
        };
        let body = json!({"done": done, "pending": pending, "unknown": missing, "instructions": instructions});
        let mut reply = CallToolResult::structured(body.clone());
        reply.content = vec![ContentBlock::text(format!(
            "{} done, {} pending, {} unknown. {instructions}\n{body}",
            body["done"].as_array().map_or(0, Vec::len),
            body["pending"].as_array().map_or(0, Vec::len),
            body["unknown"].as_array().map_or(0, Vec::len),
        ))];
        reply
    }

    async fn worker_wait(&self, args: &JsonObject, context: &RequestContext<RoleServer>) -> CallToolResult {
        let wait = match wait_arg(args, self.settings.default_wait) {
            Ok(wait) => wait,
            Err(message) => return bad_arguments(message),
        };
        let ids: Option<Vec<String>> = match args.get("taskIds") {
            Some(Value::Array(ids)) => ids.iter().map(|id| id.as_str().map(str::to_owned)).collect(),
            _ => args.get("taskId").and_then(Value::as_str).map(|id| vec![id.to_owned()]),
        };
        match ids {
            Some(ids) if !ids.is_empty() && ids.len() <= 100 => self.wait_for(&ids, wait, context).await,
            _ => bad_arguments("`taskIds` must be an array of 1 to 100 taskId strings"),
        }
    }

    async fn worker_status(&self, args: &JsonObject) -> CallToolResult {
        let id = match task_id_arg(args) {
            Ok(id) => id,
            Err(message) => return bad_arguments(message),
        };
        match self.front.status(id).await {
            Err(message) => store_failed(&message),
            Ok(None) => unknown(id),
            Ok(Some(status)) => {
                let body = serde_json::to_value(&status).unwrap_or_default();
                let mut reply = CallToolResult::structured(body.clone());
                let line = match &status.result {
                    Some(result) => summary(result),
                    None => format!("worker {id} is {}\n{body}", state_word(status.state)),
                };
                reply.content = vec![ContentBlock::text(line)];
                reply
            }
        }
    }

    async fn worker_cancel(&self, args: &JsonObject) -> CallToolResult {
        let id = match task_id_arg(args) {
            Ok(id) => id,
            Err(message) => return bad_arguments(message),
        };
        let (body, line) = match self.front.cancel(id).await {
            Err(message) => return store_failed(&message),
            Ok(Cancel::Unknown) => return unknown(id),
            Ok(Cancel::Cancelling) => {
                tracing::info!(task_id = id, "cancel requested over MCP");
                let instructions = format!("Call worker_wait with taskIds [\"{id}\"] for its final result.");
                (json!({"taskId": id, "cancelling": true, "instructions": instructions}), "is being stopped")
            }
            Ok(Cancel::Finished) => {
                (json!({"taskId": id, "cancelling": false, "state": "done"}), "had already finished")
            }
            Ok(Cancel::NotNow) => {
                let error = WorkerError::new(
                    ErrorKind::InternalError,
                    format!("worker {id} cannot be cancelled right now (it is being recovered); try again"),
                    true,
                );
                return refusal(&error, json!({"taskId": id}));
            }
        };
        let mut reply = CallToolResult::structured(body.clone());
        reply.content = vec![ContentBlock::text(format!("worker {id} {line}\n{body}"))];
        reply
    }

    async fn worker_list(&self, args: &JsonObject) -> CallToolResult {
        let state = match args.get("state").and_then(Value::as_str) {
            None => None,
            Some("queued") => Some(State::Queued),
            Some("running") => Some(State::Running),
            Some("done") => Some(State::Done),
            Some(other) => return bad_arguments(format!("`state` must be queued, running or done, not {other:?}")),
        };
        let limit = args.get("limit").and_then(Value::as_u64).map_or(50, |n| n.clamp(1, 200));
        let workers = match self.front.list(state, usize::try_from(limit).unwrap_or(50)).await {
            Ok(workers) => workers,
            Err(message) => return store_failed(&message),
        };
        let body = json!({"workers": workers});
        let mut reply = CallToolResult::structured(body.clone());
        reply.content = vec![ContentBlock::text(format!("{} workers\n{body}", workers.len()))];
        reply
    }
}

fn unknown(id: &str) -> CallToolResult {
    let message = format!("no worker with taskId {id} on this server (ids are kept for as long as it runs)");
    refusal(&WorkerError::new(ErrorKind::InvalidAction, message, false), json!({"taskId": id}))
}

impl ServerHandler for WorkersServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-workers-workers", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Delegate tasks to Claude Code workers: spawn_worker runs one with the MCP servers you name and \
                 returns its observed result, or a taskId to pass to worker_wait when it takes longer.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.clone().unwrap_or_default();
        let result = match request.name.as_ref() {
            "spawn_worker" => self.spawn_worker(args, &context).await,
            "worker_wait" => self.worker_wait(&args, &context).await,
            "worker_status" => self.worker_status(&args).await,
            "worker_cancel" => self.worker_cancel(&args).await,
            "worker_list" => self.worker_list(&args).await,
            other => {
                return Err(McpError::invalid_params(
                    format!(
                        "Unknown tool: {other} (this server has spawn_worker, worker_wait, worker_status, \
                         worker_cancel, worker_list)"
                    ),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::from_value(
            json!({"mcpServers": {
                "filesystem": {"command": "fs", "description": "Read and write files in the workspace"},
                "fetch": {"command": "fetch"}
            }}),
            std::path::Path::new("/bin/mcp-workers"),
        )
        .unwrap()
    }

    #[test]
    fn spawn_schema_is_the_action_schema_with_the_registry() {
        let schema = spawn_schema(&registry(), Duration::from_secs(25));
        let props = schema["properties"].as_object().unwrap();
        assert!(!props.contains_key("type"), "the tool sets the type itself");
        assert!(!props.contains_key("data"), "one shape of the fields is enough");
        assert!(!schema.to_string().contains("$ref"), "the schema stands alone: {schema}");
        for field in [
            "task",
            "servers",
            "timeout",
            "taskId",
            "profile",
            "maxTurns",
            "model",
            "outputSchema",
            "wait",
            "idempotencyKey",
        ] {
            assert!(props.contains_key(field), "{field} missing from {schema}");
        }
        assert_eq!(schema["properties"]["servers"]["items"]["enum"], json!(["fetch", "filesystem"]));
        let described = schema["properties"]["servers"]["description"].as_str().unwrap();
        assert!(described.contains("filesystem: Read and write files in the workspace"), "{described}");
        assert_eq!(schema["required"], json!(["task", "servers"]));
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn the_registry_description_never_reaches_the_cli() {
        let selection = registry().select(&["filesystem".to_owned()]);
        assert_eq!(selection.config["mcpServers"]["filesystem"], json!({"command": "fs"}));
    }

    #[test]
    fn wait_is_bounded() {
        let args = |v: Value| v.as_object().cloned().unwrap();
        let default = Duration::from_secs(25);
        assert_eq!(wait_arg(&args(json!({})), default), Ok(default));
        assert_eq!(wait_arg(&args(json!({"wait": 0})), default), Ok(Duration::ZERO));
        assert_eq!(wait_arg(&args(json!({"wait": 1.5})), default), Ok(Duration::from_millis(1500)));
        assert!(wait_arg(&args(json!({"wait": 51})), default).is_err());
        assert!(wait_arg(&args(json!({"wait": -1})), default).is_err());
        assert!(wait_arg(&args(json!({"wait": "10"})), default).is_err());
    }
}
