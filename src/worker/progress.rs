//! Live progress of a worker (opt-in: `run --progress`, or `"progress": true` on an action):
//! `worker_progress` lines made from the CLI's stream-json events. Pure except [`Sink`], which
//! only ever `try_send`s: a slow reader drops progress and never blocks a worker (results travel
//! on their own channel and are never dropped).
//!
//! Each line: `taskId`, `seq` (1, 2, ... per worker), `elapsedMs`, `turns` (model turns so far),
//! `toolsUsed` (tools that ran so far), `event` and its fields:
//! `started` (`model`, `servers`), `tool_started` (`tool`, `input`: a short preview with
//! secret-looking values redacted), `tool_finished` (`tool`, `ok`, `durationMs`), `text` (a
//! bounded preview), `retrying` (`attempt`, `errorStatus`, `error`), `model_fallback` (`from`,
//! `to`), and `heartbeat` (`openTools`) while a tool call is open.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use super::stream::strip_mcp_prefix;
use super::transcript::Secrets;
use crate::protocol::schema::truncate_chars;

/// Progress lines one worker may emit; later ones are dropped (a heartbeat does not count).
pub const MAX_EVENTS_PER_WORKER: u64 = 1000;
/// Characters of a text preview.
pub const TEXT_PREVIEW_CHARS: usize = 200;
/// Characters of a tool input preview, and of each string in it.
pub const INPUT_PREVIEW_CHARS: usize = 200;
const INPUT_STRING_CHARS: usize = 40;

/// One `worker_progress` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub task_id: String,
    pub seq: u64,
    pub elapsed_ms: u64,
    pub turns: u64,
    pub tools_used: Vec<String>,
    pub event: &'static str,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl ProgressLine {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where a worker's progress goes: a bounded queue, offered to and never waited on.
#[derive(Debug, Clone)]
pub struct Sink {
    to: To,
    /// Every action reports progress (`run --progress`), not only those that ask.
    pub all: bool,
}

#[derive(Debug, Clone)]
enum To {
    /// `run`'s stdout writer: a full queue drops new lines.
    Queue(mpsc::Sender<ProgressLine>),
    /// `serve`'s SSE subscribers: one that lags loses the oldest lines.
    Broadcast(broadcast::Sender<ProgressLine>),
}

impl Sink {
    pub fn queue(tx: mpsc::Sender<ProgressLine>, all: bool) -> Sink {
        Sink { to: To::Queue(tx), all }
    }

    pub fn broadcast(tx: broadcast::Sender<ProgressLine>, all: bool) -> Sink {
        Sink { to: To::Broadcast(tx), all }
    }

    /// Passes the line on if there is room; drops it otherwise. Never waits.
    pub fn offer(&self, line: ProgressLine) {
        match &self.to {
            To::Queue(tx) => drop(tx.try_send(line)),
            To::Broadcast(tx) => drop(tx.send(line)),
        }
    }
}

/// One worker's progress state.
#[derive(Debug)]
pub struct Progress {
    task_id: String,
    prefixes: Vec<String>,
    seq: u64,
    turns: BTreeSet<String>,
    tools_used: Vec<String>,
    /// Open tool calls: id → (short name, started at ms).
    open: BTreeMap<String, (String, u64)>,
    /// Values never shown in a preview (the registry's secrets, by value).
    secrets: Secrets,
}

impl Progress {
    pub fn new(task_id: &str, servers: &[String], secrets: Secrets) -> Progress {
        Progress {
            task_id: task_id.to_owned(),
            prefixes: servers.iter().map(|s| crate::registry::tool_prefix(s)).collect(),
            seq: 0,
            turns: BTreeSet::new(),
            tools_used: Vec::new(),
            open: BTreeMap::new(),
            secrets,
        }
    }

    /// The lines one stream-json line gives, at `elapsed_ms`.
    pub fn feed(&mut self, line: &str, elapsed_ms: u64) -> Vec<ProgressLine> {
        let Ok(event) = serde_json::from_str::<Value>(line) else { return Vec::new() };
        let mut out = Vec::new();
        match (event["type"].as_str(), event["subtype"].as_str()) {
            (Some("system"), Some("init")) => {
                let servers: Vec<&str> =
                    event["mcp_servers"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
                out.push(("started", json!({"model": event["model"], "servers": servers})));
            }
            (Some("system"), Some("api_retry")) => out.push((
                "retrying",
                json!({"attempt": event["attempt"], "errorStatus": event["error_status"], "error": event["error"]}),
            )),
            (Some("system"), Some("model_fallback")) => out.push((
                "model_fallback",
                json!({"from": event["original_model"], "to": event["fallback_model"], "trigger": event["trigger"]}),
            )),
            (Some("assistant"), _) => {
                if let Some(id) = event["message"]["id"].as_str() {
                    self.turns.insert(id.to_owned());
                }
                for block in event["message"]["content"].as_array().into_iter().flatten() {
                    match block["type"].as_str() {
                        Some("tool_use") => {
                            let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else {
                                continue;
                            };
                            let tool = self.short(name);
                            self.open.insert(id.to_owned(), (tool.clone(), elapsed_ms));
                            out.push(("tool_started", json!({"tool": tool, "input": self.preview(&block["input"])})));
                        }
                        Some("text") => {
                            let text = block["text"].as_str().unwrap_or_default();
                            out.push(("text", json!({"text": self.scrub(&truncate_chars(text, TEXT_PREVIEW_CHARS))})));
                        }
                        _ => {}
                    }
                }
            }
            (Some("user"), _) => {
                for block in event["message"]["content"].as_array().into_iter().flatten() {
                    let Some(id) = block["tool_use_id"].as_str() else { continue };
                    let Some((tool, started)) = self.open.remove(id) else { continue };
                    let ok = !block["is_error"].as_bool().unwrap_or(false);
                    if ok && !self.tools_used.contains(&tool) {
                        self.tools_used.push(tool.clone());
                    }
                    let duration = elapsed_ms.saturating_sub(started);
                    out.push(("tool_finished", json!({"tool": tool, "ok": ok, "durationMs": duration})));
                }
            }
            _ => {}
        }
        out.into_iter().filter_map(|(event, fields)| self.line(event, fields, elapsed_ms, true)).collect()
    }

    /// A `heartbeat` when a tool call is open.
    pub fn heartbeat(&mut self, elapsed_ms: u64) -> Option<ProgressLine> {
        if self.open.is_empty() {
            return None;
        }
        let tools: Vec<&String> = self.open.values().map(|(tool, _)| tool).collect();
        let fields = json!({"openTools": tools});
        self.line("heartbeat", fields, elapsed_ms, false)
    }

    fn line(&mut self, event: &'static str, fields: Value, elapsed_ms: u64, counted: bool) -> Option<ProgressLine> {
        if counted && self.seq >= MAX_EVENTS_PER_WORKER {
            return None;
        }
        self.seq += 1;
        let Value::Object(fields) = fields else { return None };
        Some(ProgressLine {
            kind: "worker_progress",
            task_id: self.task_id.clone(),
            seq: self.seq,
            elapsed_ms,
            turns: self.turns.len() as u64,
            tools_used: self.tools_used.clone(),
            event,
            fields,
        })
    }

    fn short(&self, name: &str) -> String {
        if name.starts_with("mcp__") { strip_mcp_prefix(name, &self.prefixes).to_owned() } else { name.to_owned() }
    }

    /// A short preview of a tool input: secret-looking keys and the registry's secrets redacted,
    /// long strings cut.
    fn preview(&self, input: &Value) -> String {
        let shown = redact(input);
        self.scrub(&truncate_chars(&shown.to_string(), INPUT_PREVIEW_CHARS))
    }

    fn scrub(&self, text: &str) -> String {
        self.secrets.scrub(text)
    }
}

fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = ["token", "secret", "password", "passwd", "key", "auth", "cookie", "credential"]
                        .iter()
                        .any(|word| lower.contains(word));
                    (k.clone(), if secret { Value::String("[redacted]".into()) } else { redact(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) => Value::String(truncate_chars(s, INPUT_STRING_CHARS)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &str =
        r#"{"type":"system","subtype":"init","model":"claude-x","mcp_servers":[{"name":"fs","status":"connected"}]}"#;
    const CALL: &str = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"t1","name":"mcp__fs__write_file","input":{"path":"/w/a.txt","content":"hello s3cr3t-value","api_key":"k"}}]}}"#;
    const RESULT: &str =
        r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}"#;
    const TEXT: &str = r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"All done."}]}}"#;

    #[test]
    fn a_tool_call_in_order() {
        let mut p = Progress::new("job", &["fs".into()], Secrets::new(["s3cr3t-value".into()]));
        let mut lines = Vec::new();
        for (i, line) in [INIT, CALL, RESULT, TEXT].iter().enumerate() {
            if i == 2 {
                lines.extend(p.heartbeat(150));
            }
            lines.extend(p.feed(line, 100 * i as u64));
        }
        let events: Vec<&str> = lines.iter().map(|l| l.event).collect();
        assert_eq!(events, ["started", "tool_started", "heartbeat", "tool_finished", "text"]);
        assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(lines[0].fields["servers"], json!(["fs"]));
        let input = lines[1].fields["input"].as_str().unwrap();
        assert!(
            input.contains("/w/a.txt") && !input.contains("s3cr3t") && input.contains("\"api_key\":\"[redacted]\""),
            "{input}"
        );
        assert_eq!(lines[2].fields["openTools"], json!(["write_file"]));
        assert_eq!(
            (lines[3].fields["tool"].clone(), lines[3].fields["ok"].clone()),
            (json!("write_file"), json!(true))
        );
        assert_eq!(lines[3].fields["durationMs"], 100);
        assert_eq!((lines[4].turns, lines[4].tools_used.clone()), (2, vec!["write_file".to_owned()]));
        assert_eq!(p.heartbeat(500), None, "no heartbeat without an open call");
        let text = lines[4].to_line();
        assert!(text.starts_with(r#"{"type":"worker_progress","taskId":"job","seq":5"#), "{text}");
    }

    #[test]
    fn bounded_per_worker() {
        let mut p = Progress::new("job", &[], Secrets::default());
        let n = (0..MAX_EVENTS_PER_WORKER + 50).map(|_| p.feed(TEXT, 1).len()).sum::<usize>();
        assert_eq!(n as u64, MAX_EVENTS_PER_WORKER);
    }
}
