//! The stdio servers' MCP transport: one JSON-RPC message per line, read from [`stdio::Input`]
//! (or any reader) and written behind to [`stdio::Output`].
//!
//! It does what rmcp's `AsyncRwTransport` does, with two differences that make a call cheaper:
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
//!
//! Kept from rmcp: lines longer than [`DEFAULT_MAX_LINE_LENGTH`] are discarded (logged) without
//! being buffered; a line that is not JSON is ignored; JSON that is no JSON-RPC message gets an
//! `Invalid request` error; end of input or a read error ends the session. `receive` is
//! cancellation-safe: a partly read line stays in the buffer for the next call.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, ErrorData, JsonObject, JsonRpcMessage, Request, RequestId,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::async_rw::{DEFAULT_MAX_LINE_LENGTH, JsonRpcMessageCodec, JsonRpcMessageCodecError};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio_util::codec::Decoder;

use super::stdio::{Input, Output, WriteBehind};

/// A line-delimited JSON-RPC transport for an MCP server (see the module's documentation).
pub struct LineTransport<R> {
    read: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
    /// Dropping the rest of a line that was too long, until its newline.
    discarding: bool,
    out: Arc<Sink>,
    generic: JsonRpcMessageCodec<RxJsonRpcMessage<RoleServer>>,
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
        }
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
        if let Some(message) = fast_tool_call(line) {
            return Ok(Some(message));
        }
        let mut buf = tokio_util::bytes::BytesMut::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\n");
        match self.generic.decode(&mut buf) {
            Ok(message) => Ok(message),
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

impl<R: AsyncRead + Unpin + Send> rmcp::transport::Transport<RoleServer> for LineTransport<R> {
    type Error = io::Error;

    fn send(&mut self, item: TxJsonRpcMessage<RoleServer>) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let bytes = serde_json::to_vec(&item).map(|mut bytes| {
            bytes.push(b'\n');
            bytes
        });
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

/// The message a plain `tools/call` line is, or `None` for every other line.
fn fast_tool_call(line: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
    let call: PlainToolCall<'_> = serde_json::from_slice(line).ok()?;
    if call.jsonrpc != "2.0" || call.method != "tools/call" {
        return None;
    }
    let mut params = CallToolRequestParams::new(call.params.name);
    params.arguments = call.params.arguments;
    let request: CallToolRequest = Request::new(params);
    Some(JsonRpcMessage::request(ClientRequest::CallToolRequest(request), call.id))
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
