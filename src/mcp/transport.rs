//! The stdio servers' MCP transport: one JSON-RPC message per line, read from [`stdio::Input`]
//! (or any reader) and written behind to [`stdio::Output`].
//!
//! It does what rmcp's `AsyncRwTransport` does, with three differences that make a call cheaper:
//! - **`tools/call` is parsed straight into its type.** rmcp reads every message as an untagged
//!   union (the message's shape, then each of the 22 kinds of client request in turn), and every
//!   kind that does not match builds and formats a `serde_json` error: a third of a trivial call's
//!   instructions went there. A line that is a plain `tools/call` (`jsonrpc`, `id`, `method`,
//!   `params` with `name` and `arguments`, nothing else) is read here in one pass into the same
//!   value rmcp would have built. Every other line, and any `tools/call` that does not fit that
//!   shape exactly (`_meta`, a field more, a duplicate, a BOM), goes through rmcp's own codec, with
//!   its compatibility rules; so what a line means never depends on which path read it (the unit
//!   tests hold both paths to the same value).
//! - **A reply is serialised once, into the write-behind buffer's input,** with no lock around a
//!   framed writer.
//! - **The direct lane** ([`LineTransport::with_direct`]): a server's session-free tools are
//!   called from here, past rmcp's service loop, and answered as rmcp answers them.
//!
//! Kept from rmcp: lines longer than [`DEFAULT_MAX_LINE_LENGTH`] are discarded (logged) without
//! being buffered; a line that is not JSON is ignored; JSON that is no JSON-RPC message gets an
//! `Invalid request` error; end of input or a read error ends the session. `receive` is
//! cancellation-safe: a partly read line stays in the buffer for the next call.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientNotification, ClientRequest, ErrorData, JsonObject,
    JsonRpcMessage, Request, RequestId, ServerResult,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::async_rw::{DEFAULT_MAX_LINE_LENGTH, JsonRpcMessageCodec, JsonRpcMessageCodecError};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::stdio::{Input, Output, WriteBehind};

/// Tools a server answers without rmcp's service loop (the direct lane; see [`LineTransport::with_direct`]).
pub trait DirectTools: Send + Sync + 'static {
    /// Whether a call of `name` goes the direct lane.
    fn handles(&self, name: &str) -> bool;
    /// The answer to a call of a tool it [`handles`](Self::handles). `cancelled` fires when the
    /// client sends `notifications/cancelled` for the call (its answer is then dropped, as rmcp
    /// drops a cancelled request's) or when the session ends (the answer is still written).
    fn call(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        cancelled: CancellationToken,
    ) -> BoxFuture<'static, Result<CallToolResult, ErrorData>>;
}

/// How long closing waits for direct calls still running (their answers are written).
const DIRECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// A line-delimited JSON-RPC transport for an MCP server (see the module's documentation).
pub struct LineTransport<R> {
    read: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
    /// Dropping the rest of a line that was too long, until its newline.
    discarding: bool,
    out: Arc<Sink>,
    generic: JsonRpcMessageCodec<RxJsonRpcMessage<RoleServer>>,
    direct: Option<Arc<dyn DirectTools>>,
    /// The session negotiated a protocol with the `initialize` lifecycle (before 2026-07-28),
    /// in which a plain call needs nothing of the session: the direct lane is open.
    lane_open: bool,
    running: tokio_util::task::TaskTracker,
    /// The direct calls running, by request id: what `notifications/cancelled` cancels.
    cancels: Arc<std::sync::Mutex<Cancels>>,
}

/// Running direct calls' tokens by request id, each with the number of its call (a later call
/// under an id still in use takes the id over, as in rmcp's own table).
#[derive(Default)]
struct Cancels {
    calls: std::collections::HashMap<RequestId, (u64, CancellationToken)>,
    next: u64,
}

/// Where replies go; shared by every `send` future. Dropped with the last of them.
enum Sink {
    Behind(WriteBehind),
    Blocking(tokio::sync::Mutex<Option<tokio::io::Stdout>>),
}

/// Standard input and output as a transport.
pub fn stdio() -> LineTransport<Input> {
    let (input, output) = super::stdio::stdio();
    LineTransport::new(input, output)
}

impl<R: AsyncRead + Unpin + Send> LineTransport<R> {
    pub fn new(read: R, output: Output) -> Self {
        Self::with_max_line(read, output, DEFAULT_MAX_LINE_LENGTH)
    }

    fn with_max_line(read: R, output: Output, max_line: usize) -> Self {
        let out = match output {
            Output::Reactor(behind) => Sink::Behind(behind),
            Output::Blocking(stdout) => Sink::Blocking(tokio::sync::Mutex::new(Some(stdout))),
        };
        Self {
            read: BufReader::new(read),
            line: Vec::new(),
            max_line,
            discarding: false,
            out: Arc::new(out),
            generic: JsonRpcMessageCodec::default(),
            direct: None,
            lane_open: false,
            running: tokio_util::task::TaskTracker::new(),
            cancels: Arc::default(),
        }
    }

    /// Answers plain calls of `tools`' tools itself, without rmcp's service loop: the call is
    /// read as for the fast path, run on a task of its own, and its answer serialised as rmcp
    /// serialises a `call_tool` result (a `CallToolResult` with `resultType` stripped, or the
    /// error). Only once the session negotiated a protocol version with the `initialize`
    /// lifecycle, where rmcp does nothing more for such a call than dispatch it (no request
    /// `_meta` to check; a plain call has none); until then, and for everything else, rmcp
    /// serves. `notifications/cancelled` for a direct call cancels its token and drops its
    /// answer, as rmcp does; what a direct call forgoes is rmcp's per-request tracing span.
    /// Closing cancels running calls and waits for their answers (at most 10 s).
    pub fn with_direct(mut self, tools: Arc<dyn DirectTools>) -> Self {
        self.direct = Some(tools);
        self
    }

    /// The next whole line into `self.line` (with its newline), bounded by `max_line`.
    async fn read_line(&mut self) -> Line {
        loop {
            let (consumed, step) = {
                let available = match self.read.fill_buf().await {
                    Ok(available) => available,
                    Err(err) => return Line::Failed(err),
                };
                if available.is_empty() {
                    return Line::End;
                }
                let newline = memchr(available);
                let take = newline.map_or(available.len(), |at| at + 1);
                if self.discarding {
                    if newline.is_some() {
                        self.discarding = false;
                    }
                    (take, None)
                } else if self.line.len().saturating_add(take) > self.max_line {
                    self.line.clear();
                    self.discarding = newline.is_none();
                    (take, Some(Line::TooLong))
                } else {
                    self.line.extend_from_slice(&available[..take]);
                    (take, newline.map(|_| Line::Whole))
                }
            };
            // No await between the copy and the consume: a cancelled read loses nothing.
            self.read.consume(consumed);
            if let Some(step) = step {
                return step;
            }
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

enum Line {
    Whole,
    TooLong,
    End,
    Failed(io::Error),
}

/// JSON, but no JSON-RPC message: answered with `Invalid request`.
struct NotAMessage;

impl<R> LineTransport<R> {
    /// The message a line holds; `Ok(None)` for nothing to deliver (not JSON, or a notification
    /// rmcp ignores).
    fn parse(&mut self, line: &[u8]) -> Result<Option<RxJsonRpcMessage<RoleServer>>, NotAMessage> {
        if let Some(call) = PlainToolCall::read(line) {
            return Ok(self.direct_or(call));
        }
        let mut buf = tokio_util::bytes::BytesMut::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\n");
        match self.generic.decode(&mut buf) {
            Ok(message) => {
                if let Some(JsonRpcMessage::Notification(note)) = &message
                    && let ClientNotification::CancelledNotification(cancelled) = &note.notification
                    && let Some(id) = &cancelled.params.request_id
                    && let Some((_, token)) = lock(&self.cancels).calls.remove(id)
                {
                    // A direct call (rmcp does not know it, and ignores the notification): it
                    // ends, unanswered, as rmcp leaves a call the client cancelled.
                    token.cancel();
                }
                Ok(message)
            }
            Err(JsonRpcMessageCodecError::Serde(err)) => match err.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    tracing::debug!("ignoring a line that is not JSON: {err}");
                    Ok(None)
                }
                serde_json::error::Category::Data | serde_json::error::Category::Io => {
                    tracing::debug!("not a JSON-RPC message: {err}");
                    Err(NotAMessage)
                }
            },
            Err(err) => {
                tracing::debug!("unreadable message: {err}");
                Err(NotAMessage)
            }
        }
    }
}

impl<R> LineTransport<R> {
    /// Runs `call` on the direct lane if it is open and takes the tool; else the message for rmcp.
    fn direct_or(&self, call: PlainToolCall<'_>) -> Option<RxJsonRpcMessage<RoleServer>> {
        let tools = match &self.direct {
            Some(tools) if self.lane_open && tools.handles(&call.params.name) => tools,
            _ => return Some(call.into_message()),
        };
        let cancelled = CancellationToken::new();
        let answer = tools.call(&call.params.name, call.params.arguments, cancelled.clone());
        let (out, id) = (Arc::clone(&self.out), call.id);
        let cancels = Arc::clone(&self.cancels);
        let number = {
            let mut table = lock(&cancels);
            table.next += 1;
            let number = table.next;
            table.calls.insert(id.clone(), (number, cancelled));
            number
        };
        self.running.spawn(async move {
            let forget = Forget { cancels, id: id.clone(), number };
            let answered = answer.await;
            if !forget.still_asked() {
                tracing::debug!("a direct call the client cancelled ended; no answer, as through rmcp");
                return;
            }
            drop(forget);
            let reply = match answered {
                Ok(result) => {
                    // What rmcp's `handle_request` does to a result for such a session.
                    let mut result = ServerResult::CallToolResult(result);
                    result.strip_result_type_for_legacy_peer();
                    if let ServerResult::CallToolResult(plain) = &result
                        && let Some(line) = super::reply_line::plain_text(plain, &id)
                    {
                        out.write(&line)
                            .await
                            .unwrap_or_else(|err| tracing::debug!("cannot write a direct call's answer: {err}"));
                        return;
                    }
                    TxJsonRpcMessage::<RoleServer>::response(result, id)
                }
                Err(error) => TxJsonRpcMessage::<RoleServer>::error(error, Some(id)),
            };
            let bytes = line_of(&reply).or_else(|err| {
                // Never silence: an answer that cannot be serialised is answered as an error.
                let error = ErrorData::internal_error(format!("cannot serialise the result: {err}"), None);
                line_of(&TxJsonRpcMessage::<RoleServer>::error(error, reply_id(&reply)))
            });
            match bytes {
                Ok(bytes) => {
                    if let Err(err) = out.write(&bytes).await {
                        tracing::debug!("cannot write a direct call's answer: {err}");
                    }
                }
                Err(err) => tracing::error!("cannot serialise a direct call's answer: {err}"),
            }
        });
        None
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes a finished direct call's token, unless a later call took its id over.
struct Forget {
    cancels: Arc<std::sync::Mutex<Cancels>>,
    id: RequestId,
    number: u64,
}

impl Forget {
    /// Whether the table still holds this call under its id.
    fn listed_in(&self, table: &Cancels) -> bool {
        table.calls.get(&self.id).is_some_and(|(number, _)| *number == self.number)
    }

    /// Whether the client still waits for the answer (no `notifications/cancelled` came for it).
    fn still_asked(&self) -> bool {
        self.listed_in(&lock(&self.cancels))
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        let mut table = lock(&self.cancels);
        if self.listed_in(&table) {
            table.calls.remove(&self.id);
        }
    }
}

/// The id a reply answers.
fn reply_id(reply: &TxJsonRpcMessage<RoleServer>) -> Option<RequestId> {
    match reply {
        JsonRpcMessage::Response(response) => Some(response.id.clone()),
        JsonRpcMessage::Error(error) => error.id.clone(),
        _ => None,
    }
}

/// A message as one line, newline included.
fn line_of(message: &TxJsonRpcMessage<RoleServer>) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(message).map(|mut bytes| {
        bytes.push(b'\n');
        bytes
    })
}

impl<R: AsyncRead + Unpin + Send> rmcp::transport::Transport<RoleServer> for LineTransport<R> {
    type Error = io::Error;

    fn send(&mut self, item: TxJsonRpcMessage<RoleServer>) -> impl Future<Output = io::Result<()>> + Send + 'static {
        if let JsonRpcMessage::Response(response) = &item
            && let ServerResult::InitializeResult(init) = &response.result
        {
            self.lane_open = init.protocol_version.has_initialize();
        }
        let bytes = line_of(&item);
        let out = Arc::clone(&self.out);
        async move { out.write(&bytes?).await }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Line::Whole => {}
                Line::TooLong => {
                    tracing::error!(max = self.max_line, "an incoming message is longer than the limit; discarded");
                    continue;
                }
                Line::End => return None,
                Line::Failed(err) => {
                    tracing::error!("cannot read the client's messages: {err}");
                    return None;
                }
            }
            let mut line = std::mem::take(&mut self.line);
            let text = trim_line(&line);
            let parsed = if text.is_empty() { Ok(None) } else { self.parse(text) };
            line.clear();
            self.line = line;
            match parsed {
                Ok(Some(message)) => return Some(message),
                Ok(None) => {}
                Err(NotAMessage) => {
                    let reply = TxJsonRpcMessage::<RoleServer>::error(
                        ErrorData::invalid_request("Invalid request", None),
                        None,
                    );
                    if self.send(reply).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> io::Result<()> {
        // The session is over, as rmcp cancels its own calls then: running direct calls end
        // (each still writes its answer, for a reader that is still there).
        lock(&self.cancels).calls.values().for_each(|(_, token)| token.cancel());
        self.running.close();
        if tokio::time::timeout(DIRECT_PATIENCE, self.running.wait()).await.is_err() {
            tracing::warn!(calls = self.running.len(), "direct calls still running at close; not waiting longer");
        }
        if let Sink::Blocking(stdout) = &*self.out {
            drop(stdout.lock().await.take());
        }
        Ok(())
    }
}

/// Without its newline and a carriage return before it.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Sink {
    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Behind(behind) => std::future::poll_fn(|cx| behind.poll_write_all(cx, bytes)).await,
            Self::Blocking(stdout) => match stdout.lock().await.as_mut() {
                Some(stdout) => {
                    stdout.write_all(bytes).await?;
                    stdout.flush().await
                }
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "the transport is closed")),
            },
        }
    }
}

/// A `tools/call` request exactly as rmcp reads it, for the one shape that needs no more than
/// this: `jsonrpc` "2.0", an `id`, `method` "tools/call", `params` with `name` and optional
/// `arguments`, and no other field anywhere at those two levels.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainToolCall<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    id: RequestId,
    #[serde(borrow)]
    method: Cow<'a, str>,
    params: PlainToolCallParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainToolCallParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
}

impl<'a> PlainToolCall<'a> {
    /// A plain `tools/call` line, or `None` for every other line.
    fn read(line: &'a [u8]) -> Option<Self> {
        let call: Self = serde_json::from_slice(line).ok()?;
        (call.jsonrpc == "2.0" && call.method == "tools/call").then_some(call)
    }

    /// The message rmcp's own parser makes of the line.
    fn into_message(self) -> RxJsonRpcMessage<RoleServer> {
        let mut params = CallToolRequestParams::new(self.params.name);
        params.arguments = self.params.arguments;
        let request: CallToolRequest = Request::new(params);
        JsonRpcMessage::request(ClientRequest::CallToolRequest(request), self.id)
    }
}

#[cfg(test)]
fn fast_tool_call(line: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
    PlainToolCall::read(line).map(PlainToolCall::into_message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(line: &str) -> Option<String> {
        let mut buf = tokio_util::bytes::BytesMut::from(format!("{line}\n").as_bytes());
        let parsed: Option<RxJsonRpcMessage<RoleServer>> =
            JsonRpcMessageCodec::default().decode(&mut buf).ok().flatten();
        parsed.map(|m| format!("{m:?}"))
    }

    /// Wherever the fast path answers, it builds what rmcp's own parser builds; it answers for
    /// the plain calls and leaves every other shape to rmcp.
    #[test]
    fn the_fast_path_reads_plain_tool_calls_as_rmcp_does_and_nothing_else() {
        let plain = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"worker_create","arguments":{}}}"#,
            r#"{"method":"tools/call","params":{"arguments":{"worker_id":"w-1","x":[1,{"y":null}]},"name":"worker_poll"},"id":"abc","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":null}}"#,
            r#" { "jsonrpc" : "2.0" , "id" : -3 , "method" : "tools\/call" , "params" : { "name" : "t\u00e9" } } "#,
        ];
        for line in plain {
            let fast = fast_tool_call(line.as_bytes()).map(|m| format!("{m:?}"));
            assert!(fast.is_some(), "the fast path must read {line}");
            assert_eq!(fast, generic(line), "{line}");
        }
        let other = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":5}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","requestState":"s"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"},"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\"}}",
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"t"}}"#,
            "not json",
        ];
        for line in other {
            assert!(fast_tool_call(line.as_bytes()).is_none(), "the fast path must leave {line} to rmcp");
        }
    }

    /// Counts the calls that went the direct lane.
    struct Counting(crate::mcp::queue::QueueServer, std::sync::atomic::AtomicUsize);

    impl DirectTools for Counting {
        fn handles(&self, name: &str) -> bool {
            self.0.handles(name)
        }

        fn call(
            &self,
            name: &str,
            arguments: Option<JsonObject>,
            cancelled: CancellationToken,
        ) -> BoxFuture<'static, Result<CallToolResult, ErrorData>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.call(name, arguments, cancelled)
        }
    }

    /// A queue server on a fresh store over pipes, driven as a client drives it (the calls only
    /// after the `initialize` answer): the replies to `calls`, by id, with worker ids made
    /// alike; and how many calls went the direct lane.
    async fn queue_session(direct: bool, calls: &[&str]) -> (Vec<(String, String)>, usize) {
        // One reply per request, except for a request the client cancels.
        let replies_expected = calls.iter().filter(|c| c.contains("\"id\"")).count()
            - calls.iter().filter(|c| c.contains("notifications/cancelled")).count();
        use rmcp::ServiceExt;
        use std::io::{BufRead, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(crate::store::SqliteStore::open(dir.path()).expect("store"));
        let queue = crate::mcp::queue::Queue::start(
            store,
            crate::mcp::queue::QueueConfig::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        // A worker known before the session: `WORKER` in a call stands for its id.
        let worker = queue.create_worker().await.expect("a worker");
        let calls: Vec<String> = calls.iter().map(|c| c.replace("WORKER", &worker)).collect();
        let server = crate::mcp::queue::QueueServer::new(queue);
        let counting = Arc::new(Counting(server.clone(), std::sync::atomic::AtomicUsize::new(0)));
        let (in_r, in_w) = nix::unistd::pipe().expect("pipe");
        let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
        let mut transport =
            LineTransport::new(crate::mcp::stdio::test_input(in_r), crate::mcp::stdio::test_output(out_w));
        if direct {
            transport = transport.with_direct(Arc::clone(&counting) as Arc<dyn DirectTools>);
        }
        let mut client_in = std::fs::File::from(in_w);
        writeln!(
            client_in,
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        )
        .expect("write");
        let service = tokio::spawn(async move { server.serve(transport).await.expect("handshake").waiting().await });
        let n = replies_expected;
        let lines = calls;
        let replies = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufReader::new(std::fs::File::from(out_r));
            let mut line = String::new();
            out.read_line(&mut line).expect("the initialize answer");
            writeln!(client_in, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#).expect("write");
            for call in &lines {
                writeln!(client_in, "{call}").expect("write");
            }
            let mut replies = Vec::new();
            for _ in 0..n {
                line.clear();
                out.read_line(&mut line).expect("a reply");
                replies.push(line.clone());
            }
            drop(client_in);
            replies
        })
        .await
        .expect("join");
        service.await.expect("join").ok();
        let mut by_id: Vec<(String, String)> = replies
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).expect("a reply is JSON");
                (v["id"].to_string(), alike_worker_ids(r.trim_end()))
            })
            .collect();
        by_id.sort();
        (by_id, counting.1.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// `worker_<digits>_<9 chars>` made alike.
    fn alike_worker_ids(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("worker_") {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 7..];
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && tail.as_bytes().get(digits) == Some(&b'_') && tail.len() >= digits + 10 {
                out.push_str("worker_ID");
                rest = &tail[digits + 10..];
            } else {
                out.push_str("worker_");
                rest = tail;
            }
        }
        out.push_str(rest);
        out
    }

    /// Over the direct lane the queue answers byte for byte what it answers through rmcp: the
    /// three tools' plain calls take it (a poll cancelled by `notifications/cancelled` included),
    /// a call with `_meta` and an unknown tool do not.
    #[tokio::test]
    async fn the_direct_lane_answers_what_rmcp_answers() {
        let calls = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"worker_create","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"worker_submit","arguments":{"worker_id":"w"}}}"#,
            r#"{"jsonrpc":"2.0","id":"s","method":"tools/call","params":{"name":"worker_submit","arguments":{"worker_id":"worker_1_abcdefghi","task_id":"t","response":"r"}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"worker_create","arguments":{},"_meta":{"progressToken":1}}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"worker_poll","arguments":{"worker_id":7}}}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"worker_poll","arguments":{"worker_id":"worker_1_abcdefghi"}}}"#,
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"worker_poll","arguments":{"worker_id":"WORKER"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":8,"reason":"test"}}"#,
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"worker_submit","arguments":{"worker_id":"WORKER","task_id":"task_1_abcdefghi","response":"r"}}}"#,
        ];
        let (through_rmcp, none) = queue_session(false, &calls).await;
        let (direct, taken) = queue_session(true, &calls).await;
        assert_eq!((none, taken), (0, 7));
        // The cancelled poll is left unanswered, both ways; the submit after it is answered.
        assert!(direct.iter().all(|(id, _)| id != "8") && direct.iter().any(|(id, _)| id == "9"), "{direct:?}");
        assert_eq!(direct, through_rmcp);
        assert!(direct.iter().any(|(_, r)| r.contains("worker_ID")), "{direct:?}");
    }

    async fn transport_over(input: &'static [u8], max_line: usize) -> (Vec<String>, String) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let output = crate::mcp::stdio::test_output(w);
        let mut transport = LineTransport::with_max_line(input, output, max_line);
        let mut got = Vec::new();
        while let Some(message) = rmcp::transport::Transport::<RoleServer>::receive(&mut transport).await {
            got.push(format!("{message:?}"));
        }
        drop(transport);
        let written = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut text).map(|_| text)
        });
        (got, written.await.expect("join").expect("read"))
    }

    /// What the transport makes of a stream of lines: blank and non-JSON lines skipped, a line
    /// over the limit discarded whole (even split across reads), a JSON value that is no message
    /// answered with `Invalid request`, CRLF accepted, the last line without a newline kept out.
    #[tokio::test]
    async fn lines_are_read_skipped_discarded_and_refused_as_rmcp_does() {
        let long = format!("{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"pad\":\"{}\"}}\n", "x".repeat(200));
        let input: &'static [u8] = Box::leak(
            format!(
                "\n\
                 not json\n\
                 {{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"a\"}}}}\r\n\
                 {long}\
                 [1,2]\n\
                 {{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}}\n\
                 {{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}}"
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (got, written) = transport_over(input, 128).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("CallToolRequest") && got[0].contains("\"a\""), "{}", got[0]);
        assert!(got[1].contains("PingRequest") && got[1].contains("Number(2)"), "{}", got[1]);
        let replies: Vec<serde_json::Value> =
            written.lines().map(|l| serde_json::from_str(l).expect("a reply is JSON")).collect();
        assert_eq!(replies.len(), 1, "{written}");
        assert_eq!(replies[0]["error"]["code"], -32600);
        assert_eq!(replies[0]["id"], serde_json::Value::Null);
    }
}
