//! `FakeModel`: a scripted stand-in for the Anthropic Messages API, served on 127.0.0.1 for the real
//! Claude Code CLI (`ANTHROPIC_BASE_URL=model.base_url()`).
//!
//! The CLI sends `HEAD /` as a preflight, then `POST /v1/messages?beta=true` with `stream: true` (and,
//! after a stalled stream, the same request without `stream`). Each request is matched to a script by
//! its task (the last text block of the first user message) and answered with the script's step for the
//! current model turn (the number of assistant messages already in the request). A request that matches
//! no script, or runs past the end of its script, gets a 400 naming the task, so a broken test fails
//! loudly instead of hanging.
//!
//! ```ignore
//! let model = FakeModel::start().await;
//! model.script("write hello", vec![
//!     tool_use("mcp__filesystem__write_file", json!({"path": path, "content": "hi"})),
//!     text("done"),
//! ]);
//! ```

use std::any::Any;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Input tokens reported for every model turn.
pub const INPUT_TOKENS: u64 = 100;
/// Output tokens reported for every model turn.
pub const OUTPUT_TOKENS: u64 = 20;

/// The CLI sends the whole tool list and system prompt with every request: allow far more than that.
const BODY_LIMIT: usize = 16 << 20;
/// How long [`FakeModel::wait_for_requests`] waits before it fails the test.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Ids unique across every fake model in the test process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id(prefix: &str) -> String {
    format!("{prefix}_01fake{:016}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// What the model does for one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// One assistant message with these `tool_use` blocks (name, input); `stop_reason: tool_use`.
    ToolUses(Vec<(String, Value)>),
    /// A final text answer; `stop_reason: end_turn`.
    Text(String),
    /// Accept the request and never send the response headers.
    Hang,
    /// Send the headers and `message_start`, then nothing more, keeping the connection open (the CLI
    /// waits 300 s, then retries without `stream`; that non-streaming request then hangs).
    StallMidStream,
    /// Answer with this HTTP status and JSON body.
    Status(u16, Value),
    /// Hold the request until the test opens the gate, then answer with the inner step.
    Gated(Gate, Box<Step>),
    /// The inner step, its streamed events this far apart (slow but alive).
    Slow(Duration, Box<Step>),
    /// The inner step, reporting this usage (input, output tokens) instead of the defaults.
    Usage(u64, u64, Box<Step>),
    /// The inner step's response with these headers added (rate-limit headers, `retry-after`).
    Headers(Vec<(String, String)>, Box<Step>),
}

/// How a step's response is shaped by the wrappers around it ([`Step::Slow`], [`Step::Usage`],
/// [`Step::Headers`]).
#[derive(Debug, Clone)]
struct Shape {
    delay: Duration,
    input_tokens: u64,
    output_tokens: u64,
    headers: Vec<(String, String)>,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape { delay: Duration::ZERO, input_tokens: INPUT_TOKENS, output_tokens: OUTPUT_TOKENS, headers: Vec::new() }
    }
}

impl Shape {
    /// Takes the wrappers off `step`.
    fn peel(&mut self, mut step: Step) -> Step {
        loop {
            step = match step {
                Step::Slow(delay, inner) => {
                    self.delay = delay;
                    *inner
                }
                Step::Usage(input, output, inner) => {
                    (self.input_tokens, self.output_tokens) = (input, output);
                    *inner
                }
                Step::Headers(headers, inner) => {
                    self.headers.extend(headers);
                    *inner
                }
                other => return other,
            }
        }
    }
}

/// `step` with its streamed events `delay` apart.
pub fn slow(delay: Duration, step: Step) -> Step {
    Step::Slow(delay, Box::new(step))
}

/// `step`, reporting `input` and `output` tokens (so that the CLI's cost estimate grows).
pub fn with_usage(input: u64, output: u64, step: Step) -> Step {
    Step::Usage(input, output, Box::new(step))
}

/// `step`'s response with extra headers.
pub fn with_headers<K: Into<String>, V: Into<String>>(headers: impl IntoIterator<Item = (K, V)>, step: Step) -> Step {
    Step::Headers(headers.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), Box::new(step))
}

/// A 429 with `retry-after: secs` and the unified rate-limit headers of a rejected request.
pub fn rate_limited(secs: u64) -> Step {
    let reset = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + secs;
    with_headers(
        [
            ("retry-after".to_owned(), secs.to_string()),
            ("anthropic-ratelimit-unified-status".to_owned(), "rejected".to_owned()),
            ("anthropic-ratelimit-unified-reset".to_owned(), reset.to_string()),
        ],
        status(429, api_error_body("rate_limit_error", "fake model: rate limited")),
    )
}

/// A script whose first `n` requests get `failure` and whose later ones follow `then` by model
/// turn (a new attempt of the worker starts again at turn 0): a task that fails, then answers.
pub fn fail_then(n: u64, failure: Step, then: Vec<Step>) -> Script {
    let seen = AtomicU64::new(0);
    Script::dynamic(move |r: &Request| {
        if seen.fetch_add(1, Ordering::SeqCst) < n {
            return failure.clone();
        }
        let past = || status(400, api_error_body("invalid_request_error", "fake model: past the end of the script"));
        then.get(r.turn()).cloned().unwrap_or_else(past)
    })
}

/// A gate a test opens to release the requests held by [`gated`] steps.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn opened(&self) {
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

/// Answers with `step` once `gate` is open (for tests that decide the order in which workers finish).
pub fn gated(gate: &Gate, step: Step) -> Step {
    Step::Gated(gate.clone(), Box::new(step))
}

/// Calls one tool.
pub fn tool_use(name: &str, input: Value) -> Step {
    Step::ToolUses(vec![(name.to_owned(), input)])
}

/// Calls several tools in parallel, in one assistant message.
pub fn tool_uses<S: Into<String>>(calls: impl IntoIterator<Item = (S, Value)>) -> Step {
    Step::ToolUses(calls.into_iter().map(|(name, input)| (name.into(), input)).collect())
}

/// Answers with final text and ends the turn.
pub fn text(s: impl Into<String>) -> Step {
    Step::Text(s.into())
}

/// Never answers (for timeout tests); other requests are still served.
pub fn hang() -> Step {
    Step::Hang
}

/// Starts the stream, then goes silent with the connection open.
pub fn stall_mid_stream() -> Step {
    Step::StallMidStream
}

/// Answers with an HTTP status and a JSON body, e.g. `status(529, api_error_body("overloaded_error", "busy"))`.
pub fn status(code: u16, body: Value) -> Step {
    Step::Status(code, body)
}

/// An Anthropic error body: `{"type":"error","error":{"type":kind,"message":message}}`.
pub fn api_error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

type StepFn = dyn Fn(&Request) -> Step + Send + Sync;

/// What a task's requests get: fixed steps indexed by the model turn, or a function of the request.
pub struct Script(ScriptKind);

enum ScriptKind {
    Steps(Vec<Step>),
    Dynamic(Box<StepFn>),
}

impl Script {
    /// Step `n` answers model turn `n`.
    pub fn steps(steps: impl IntoIterator<Item = Step>) -> Script {
        Script(ScriptKind::Steps(steps.into_iter().collect()))
    }

    /// Decides every step from the request (for loops that read the last tool result).
    pub fn dynamic(f: impl Fn(&Request) -> Step + Send + Sync + 'static) -> Script {
        Script(ScriptKind::Dynamic(Box::new(f)))
    }
}

impl From<Vec<Step>> for Script {
    fn from(steps: Vec<Step>) -> Script {
        Script::steps(steps)
    }
}

impl<const N: usize> From<[Step; N]> for Script {
    fn from(steps: [Step; N]) -> Script {
        Script::steps(steps)
    }
}

impl<F: Fn(&Request) -> Step + Send + Sync + 'static> From<F> for Script {
    fn from(f: F) -> Script {
        Script::dynamic(f)
    }
}

/// One `POST /v1/messages` request body, with helpers to read it.
#[derive(Debug, Clone)]
pub struct Request {
    body: Value,
}

impl Request {
    pub fn new(body: Value) -> Request {
        Request { body }
    }

    pub fn body(&self) -> &Value {
        &self.body
    }

    /// Whether the client asked for a server-sent-event stream.
    pub fn is_streaming(&self) -> bool {
        self.body["stream"].as_bool() == Some(true)
    }

    pub fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or("claude-fake")
    }

    pub fn messages(&self) -> &[Value] {
        self.body["messages"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// The task: the last text block of the first user message (the first block is a `<system-reminder>`).
    pub fn task(&self) -> String {
        self.messages()
            .iter()
            .find(|m| m["role"] == "user")
            .and_then(|m| texts(&m["content"]).pop())
            .unwrap_or_default()
    }

    /// The model turn this request asks for: the number of assistant messages already in it.
    pub fn turn(&self) -> usize {
        self.messages().iter().filter(|m| m["role"] == "assistant").count()
    }

    /// The names of the tools offered.
    pub fn tools(&self) -> Vec<String> {
        let tools = self.body["tools"].as_array().map(Vec::as_slice).unwrap_or_default();
        tools.iter().filter_map(|t| t["name"].as_str()).map(str::to_owned).collect()
    }

    /// The system prompt (top-level `system`), followed by any `role: "system"` messages, joined by newlines.
    pub fn system_text(&self) -> String {
        let mut parts = texts(&self.body["system"]);
        for message in self.messages().iter().filter(|m| m["role"] == "system") {
            parts.extend(texts(&message["content"]));
        }
        parts.join("\n")
    }

    /// The `tool_result` blocks of the last user message: (content text, is_error).
    ///
    /// What the CLI puts there for an MCP tool: when the result has `structuredContent`, its JSON as a
    /// string (server-filesystem's `write_file` gives `{"content":"Successfully wrote to ..."}`); else the
    /// result's text blocks (joined here by newlines); for a failed call, the error text with `is_error`.
    pub fn last_tool_results(&self) -> Vec<(String, bool)> {
        let Some(last) = self.messages().iter().rev().find(|m| m["role"] == "user") else { return Vec::new() };
        let blocks = last["content"].as_array().map(Vec::as_slice).unwrap_or_default();
        blocks
            .iter()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| (texts(&b["content"]).join("\n"), b["is_error"].as_bool().unwrap_or(false)))
            .collect()
    }
}

/// The texts in a content value: a plain string, or the `text` of each text block.
fn texts(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => vec![s.clone()],
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

struct Shared {
    scripts: Mutex<Vec<(String, Arc<ScriptKind>)>>,
    requests: Mutex<Vec<Value>>,
    /// When each request of `requests` arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
    other_requests: Mutex<Vec<String>>,
    count: watch::Sender<usize>,
    shutdown: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The step for this request, or why there is none.
    fn step_for(&self, request: &Request) -> Result<Step, String> {
        let task = request.task();
        let turn = request.turn();
        let found = lock(&self.scripts).iter().find(|(key, _)| task.contains(key.as_str())).cloned();
        let Some((key, script)) = found else {
            let keys: Vec<String> = lock(&self.scripts).iter().map(|(k, _)| k.clone()).collect();
            return Err(format!("fake model: no script matches the task {task:?} (script keys: {keys:?})"));
        };
        match &*script {
            ScriptKind::Steps(steps) => steps.get(turn).cloned().ok_or_else(|| {
                format!("fake model: the script {key:?} has {} steps, but the request is for turn {turn}", steps.len())
            }),
            ScriptKind::Dynamic(f) => catch_unwind(AssertUnwindSafe(|| f(request))).map_err(|panic| {
                format!("fake model: the script {key:?} panicked at turn {turn}: {}", panic_text(&*panic))
            }),
        }
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    }
}

/// The scripted Messages API server. It stops serving when dropped.
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeModel {
    /// Binds 127.0.0.1 on a free port and serves in the current tokio runtime.
    pub async fn start() -> FakeModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("fake model: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake model: local address");
        let shared = Arc::new(Shared {
            scripts: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            other_requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .fallback(other)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("fake model: server stopped: {err}");
            }
        });
        FakeModel { addr, shared, server }
    }

    /// For `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose task contains `key` follow `script` (a `Vec<Step>`, a `[Step; N]`, a closure
    /// `Fn(&Request) -> Step`, or a [`Script`]). The first matching key, in the order added, wins.
    pub fn script(&self, key: &str, script: impl Into<Script>) {
        lock(&self.shared.scripts).push((key.to_owned(), Arc::new(script.into().0)));
    }

    /// Every `POST /v1/messages` body received so far, in order (including unmatched ones).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// `requests()` whose task contains `key`.
    pub fn requests_for(&self, key: &str) -> Vec<Request> {
        self.requests().into_iter().map(Request::new).filter(|r| r.task().contains(key)).collect()
    }

    /// Every request's arrival time and task, in order (the request log).
    pub fn request_log(&self) -> Vec<(std::time::Instant, String)> {
        let tasks = self.requests().into_iter().map(|body| Request::new(body).task());
        lock(&self.shared.arrivals).iter().copied().zip(tasks).collect()
    }

    pub fn request_count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Every other request (the `HEAD /` preflight, for instance), as `"METHOD /path?query"`.
    pub fn other_requests(&self) -> Vec<String> {
        lock(&self.shared.other_requests).clone()
    }

    /// Waits until at least `n` `POST /v1/messages` requests have arrived (counted before they are
    /// answered, so a hanging request counts). Panics after 60 s.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut rx = self.shared.count.subscribe();
        let waited = tokio::time::timeout(WAIT_LIMIT, rx.wait_for(|count| *count >= n)).await;
        if !matches!(waited, Ok(Ok(_))) {
            panic!("fake model: waited {WAIT_LIMIT:?} for {n} requests, got {}", self.request_count());
        }
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.server.abort();
    }
}

async fn other(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    lock(&shared.other_requests).push(format!("{method} {uri}"));
    if method == Method::HEAD || method == Method::GET {
        StatusCode::OK.into_response()
    } else {
        error_response(StatusCode::NOT_FOUND, "not_found_error", &format!("fake model: no route for {method} {uri}"))
    }
}

async fn messages(State(shared): State<Arc<Shared>>, RawQuery(_query): RawQuery, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            let message = format!("fake model: the request body is not JSON: {err}");
            return error_response(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
        }
    };
    lock(&shared.requests).push(body.clone());
    lock(&shared.arrivals).push(std::time::Instant::now());
    shared.count.send_modify(|count| *count += 1);
    let request = Request::new(body);
    match shared.step_for(&request) {
        Ok(Step::Gated(gate, step)) => {
            tokio::select! {
                _ = gate.opened() => respond(&shared, &request, *step).await,
                _ = shared.shutdown.cancelled() => error_response(StatusCode::SERVICE_UNAVAILABLE, "api_error", "fake model: shut down"),
            }
        }
        Ok(step) => respond(&shared, &request, step).await,
        Err(message) => error_response(StatusCode::BAD_REQUEST, "invalid_request_error", &message),
    }
}

async fn respond(shared: &Shared, request: &Request, step: Step) -> Response {
    let mut shape = Shape::default();
    let step = shape.peel(step);
    let mut response = respond_shaped(shared, request, step, &shape).await;
    for (name, value) in &shape.headers {
        if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn respond_shaped(shared: &Shared, request: &Request, step: Step, shape: &Shape) -> Response {
    let (content, stop_reason) = match step {
        Step::Text(text) => (vec![json!({"type": "text", "text": text})], "end_turn"),
        Step::ToolUses(calls) => {
            let blocks = calls
                .into_iter()
                .map(|(name, input)| json!({"type": "tool_use", "id": next_id("toolu"), "name": name, "input": input}))
                .collect();
            (blocks, "tool_use")
        }
        Step::Status(code, body) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(code, &body);
        }
        Step::Hang | Step::Gated(..) | Step::Slow(..) | Step::Usage(..) | Step::Headers(..) => {
            return hang_until_shutdown(shared).await;
        }
        Step::StallMidStream if !request.is_streaming() => return hang_until_shutdown(shared).await,
        Step::StallMidStream => {
            let start = sse_event("message_start", &message_start(request, shape));
            let shutdown = shared.shutdown.clone();
            let silence = stream::once(async move {
                shutdown.cancelled_owned().await;
                Ok::<_, Infallible>(Bytes::new())
            });
            return sse_response(stream::iter([Ok(Bytes::from(start))]).chain(silence));
        }
    };
    if request.is_streaming() {
        let delay = shape.delay;
        let events =
            sse_events(request, &content, stop_reason, shape).into_iter().enumerate().map(move |(i, e)| async move {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, Infallible>(Bytes::from(e))
            });
        sse_response(stream::iter(events).then(|e| e))
    } else {
        let mut message = message_start(request, shape)["message"].take();
        message["content"] = Value::Array(content);
        message["stop_reason"] = json!(stop_reason);
        message["usage"] = usage(shape, shape.output_tokens);
        json_response(StatusCode::OK, &message)
    }
}

async fn hang_until_shutdown(shared: &Shared) -> Response {
    shared.shutdown.cancelled().await;
    error_response(StatusCode::SERVICE_UNAVAILABLE, "api_error", "fake model: shut down")
}

fn usage(shape: &Shape, output_tokens: u64) -> Value {
    json!({
        "input_tokens": shape.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    })
}

fn message_start(request: &Request, shape: &Shape) -> Value {
    json!({
        "type": "message_start",
        "message": {
            "id": next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": request.model(),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage(shape, 1),
        },
    })
}

/// The whole event stream of one answer, one string per event. Text and tool input are each split
/// into two deltas, so the client's accumulation is exercised.
fn sse_events(request: &Request, content: &[Value], stop_reason: &str, shape: &Shape) -> Vec<String> {
    let mut events =
        vec![sse_event("message_start", &message_start(request, shape)), sse_event("ping", &json!({"type": "ping"}))];
    for (index, block) in content.iter().enumerate() {
        let (start, deltas) = match block["type"].as_str() {
            Some("tool_use") => {
                let input = block["input"].to_string();
                let start = json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}});
                let deltas = halves(&input).map(|part| json!({"type": "input_json_delta", "partial_json": part}));
                (start, deltas)
            }
            _ => {
                let text = block["text"].as_str().unwrap_or_default();
                (
                    json!({"type": "text", "text": ""}),
                    halves(text).map(|part| json!({"type": "text_delta", "text": part})),
                )
            }
        };
        events.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
    }
    let delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": usage(shape, shape.output_tokens),
    });
    events.push(sse_event("message_delta", &delta));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    events
}

/// `s` in two pieces, split on a character boundary.
fn halves(s: &str) -> [String; 2] {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid -= 1;
    }
    [s[..mid].to_owned(), s[mid..].to_owned()]
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn sse_response<S>(body: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    add_request_id(response)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_request_id(response)
}

fn error_response(code: StatusCode, kind: &str, message: &str) -> Response {
    json_response(code, &api_error_body(kind, message))
}

fn add_request_id(mut response: Response) -> Response {
    if let Ok(id) = HeaderValue::from_str(&next_id("req")) {
        response.headers_mut().insert("request-id", id);
    }
    response
}
