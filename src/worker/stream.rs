//! Reading the CLI's `--output-format stream-json` events. Pure: lines in, a transcript out.
//!
//! What a worker did is taken from the events, never from what the model says: a tool counts as
//! used when a `tool_use` block got a `tool_result` that is not a permission denial.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// The result text kept for the `worker_result`, in characters.
pub const MAX_RESULT_CHARS: usize = 256 * 1024;
/// Tool calls remembered per worker; further calls are counted but not kept.
pub const MAX_TOOL_CALLS: usize = 4096;

/// What happened to one `tool_use` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// No `tool_result` yet.
    Pending,
    /// The tool ran and answered.
    Ok,
    /// The tool ran and reported an error.
    Failed,
    /// The CLI refused it (permission, unknown tool): the tool did not run.
    Refused,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub outcome: CallOutcome,
}

/// The final `result` event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultEvent {
    pub subtype: String,
    pub is_error: bool,
    pub text: Option<String>,
    pub num_turns: Option<u64>,
    pub total_cost_usd: Option<f64>,
    pub api_error_status: Option<u16>,
    pub errors: Vec<String>,
    pub denied_ids: Vec<String>,
    pub denied_names: Vec<String>,
    /// `structured_output` (with `--json-schema`).
    pub structured_output: Option<Value>,
}

/// A `system/api_retry` event: the API failed and the CLI is trying again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiRetry {
    pub error_status: Option<u16>,
    pub error: Option<String>,
    /// How long the CLI waits before it tries again (the server's `retry-after` when it sent one).
    pub retry_delay_ms: Option<u64>,
}

/// What the stream says about models and rate limits: the governance facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Governed {
    /// The model `system/init` names.
    pub init_model: Option<String>,
    /// The model of the last real (not `<synthetic>`) assistant message.
    pub answered_by: Option<String>,
    /// `system/model_fallback` events: (from, to).
    pub fallbacks: Vec<(String, String)>,
    /// The last `rate_limit_event`'s `rate_limit_info`: status and `resetsAt` (epoch seconds).
    pub rate_limit: Option<(String, Option<u64>)>,
    /// How many `system/api_retry` events came.
    pub api_retries: u64,
}

/// Everything worth knowing from one worker's event stream.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// `system/init` seen: the CLI started and its MCP servers were tried.
    pub init_seen: bool,
    /// MCP server statuses from `system/init`: `connected`, `failed`, `pending`, ...
    pub servers: BTreeMap<String, String>,
    pub calls: Vec<ToolCall>,
    by_id: HashMap<String, usize>,
    pub calls_dropped: u64,
    pub result: Option<ResultEvent>,
    pub last_retry: Option<ApiRetry>,
    /// The text of a synthetic `API Error: ...` assistant message and its `error` field.
    pub api_error: Option<(String, String)>,
    pub lines: u64,
    pub unreadable_lines: u64,
    pub governed: Governed,
}

impl Transcript {
    /// Takes one line of the stream. Lines that are not JSON events are counted and skipped.
    pub fn feed(&mut self, line: &str) {
        self.lines += 1;
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            self.unreadable_lines += 1;
            return;
        };
        match (event["type"].as_str(), event["subtype"].as_str()) {
            (Some("system"), Some("init")) => self.on_init(&event),
            (Some("system"), Some("api_retry")) => {
                self.last_retry = Some(ApiRetry {
                    error_status: status(&event["error_status"]),
                    error: event["error"].as_str().map(str::to_owned),
                    retry_delay_ms: event["retry_delay_ms"].as_u64(),
                });
                self.governed.api_retries += 1;
            }
            (Some("system"), Some("model_fallback")) | (Some("rate_limit_event"), _) => self.governed.feed(&event),
            (Some("assistant"), _) => self.on_assistant(&event),
            (Some("user"), _) => self.on_user(&event),
            (Some("result"), _) => self.on_result(&event),
            _ => {}
        }
    }

    fn on_init(&mut self, event: &Value) {
        self.init_seen = true;
        self.governed.init_model = event["model"].as_str().map(str::to_owned);
        for server in event["mcp_servers"].as_array().into_iter().flatten() {
            if let (Some(name), Some(status)) = (server["name"].as_str(), server["status"].as_str()) {
                self.servers.insert(name.to_owned(), status.to_owned());
            }
        }
    }

    fn on_assistant(&mut self, event: &Value) {
        let message = &event["message"];
        if let Some(model) = message["model"].as_str().filter(|m| *m != "<synthetic>") {
            self.governed.answered_by = Some(model.to_owned());
        }
        if let Some(error) = event["error"].as_str() {
            let text = blocks_text(&message["content"]);
            self.api_error = Some((error.to_owned(), truncate(&text, 2048)));
        }
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] != "tool_use" {
                continue;
            }
            let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else { continue };
            if self.by_id.contains_key(id) {
                continue;
            }
            if self.calls.len() >= MAX_TOOL_CALLS {
                self.calls_dropped += 1;
                continue;
            }
            self.by_id.insert(id.to_owned(), self.calls.len());
            self.calls.push(ToolCall { id: id.to_owned(), name: name.to_owned(), outcome: CallOutcome::Pending });
        }
    }

    fn on_user(&mut self, event: &Value) {
        for block in event["message"]["content"].as_array().into_iter().flatten() {
            if block["type"] != "tool_result" {
                continue;
            }
            let Some(&index) = block["tool_use_id"].as_str().and_then(|id| self.by_id.get(id)) else { continue };
            let is_error = block["is_error"].as_bool().unwrap_or(false);
            let outcome = if !is_error {
                CallOutcome::Ok
            } else if is_refusal(&blocks_text(&block["content"])) {
                CallOutcome::Refused
            } else {
                CallOutcome::Failed
            };
            self.calls[index].outcome = outcome;
        }
    }

    fn on_result(&mut self, event: &Value) {
        let denials = event["permission_denials"].as_array().cloned().unwrap_or_default();
        let result = ResultEvent {
            subtype: event["subtype"].as_str().unwrap_or_default().to_owned(),
            is_error: event["is_error"].as_bool().unwrap_or(false),
            text: event["result"].as_str().map(|t| truncate(t, MAX_RESULT_CHARS)),
            num_turns: event["num_turns"].as_u64(),
            total_cost_usd: event["total_cost_usd"].as_f64(),
            api_error_status: status(&event["api_error_status"]),
            errors: event["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|e| truncate(e, 1024))
                .collect(),
            denied_ids: denials.iter().filter_map(|d| d["tool_use_id"].as_str()).map(str::to_owned).collect(),
            denied_names: denials.iter().filter_map(|d| d["tool_name"].as_str()).map(str::to_owned).collect(),
            structured_output: event.get("structured_output").filter(|v| !v.is_null()).cloned(),
        };
        for id in &result.denied_ids {
            if let Some(&index) = self.by_id.get(id) {
                self.calls[index].outcome = CallOutcome::Refused;
            }
        }
        self.result = Some(result);
    }

    /// MCP tools that really ran, prefix removed, in first-use order, without repeats.
    /// `servers` are the selected server names, used to strip `mcp__<server>__` exactly.
    pub fn tools_used(&self, servers: &[String]) -> Vec<String> {
        self.mcp_tools(servers, |outcome| matches!(outcome, CallOutcome::Ok | CallOutcome::Failed))
    }

    /// MCP tools the CLI refused to run, prefix removed, without repeats.
    pub fn tools_denied(&self, servers: &[String]) -> Vec<String> {
        self.mcp_tools(servers, |outcome| outcome == CallOutcome::Refused)
    }

    fn mcp_tools(&self, servers: &[String], keep: impl Fn(CallOutcome) -> bool) -> Vec<String> {
        let prefixes: Vec<String> = servers.iter().map(|s| crate::registry::tool_prefix(s)).collect();
        let mut seen = Vec::new();
        for call in self.calls.iter().filter(|c| keep(c.outcome) && c.name.starts_with("mcp__")) {
            let short = strip_mcp_prefix(&call.name, &prefixes).to_owned();
            if !seen.contains(&short) {
                seen.push(short);
            }
        }
        seen
    }
}

impl Governed {
    /// A `system/model_fallback` or a `rate_limit_event`.
    fn feed(&mut self, event: &Value) {
        if event["type"] == "rate_limit_event" {
            let info = &event["rate_limit_info"];
            if let Some(status) = info["status"].as_str() {
                self.rate_limit = Some((status.to_owned(), info["resetsAt"].as_u64()));
            }
            return;
        }
        if let (Some(from), Some(to)) = (event["original_model"].as_str(), event["fallback_model"].as_str()) {
            self.fallbacks.push((from.to_owned(), to.to_owned()));
        }
    }

    /// The model that answered last: an assistant message's, else the last fallback's, else init's.
    pub fn model(&self) -> Option<String> {
        self.answered_by.clone().or_else(|| self.fallbacks.last().map(|(_, to)| to.clone())).or(self.init_model.clone())
    }
}

/// `mcp__<server>__tool` → `tool`, preferring the selected servers' exact prefixes (a server name
/// may itself contain `__`).
pub fn strip_mcp_prefix<'a>(name: &'a str, prefixes: &[String]) -> &'a str {
    if let Some(rest) = prefixes.iter().filter_map(|p| name.strip_prefix(p.as_str())).next() {
        return rest;
    }
    let rest = &name["mcp__".len()..];
    rest.split_once("__").map_or(rest, |(_, tool)| tool)
}

/// The CLI's wording when it did not run a tool at all.
fn is_refusal(text: &str) -> bool {
    text.contains("requested permissions to use")
        || text.contains("don't ask mode")
        || text.trim_start().starts_with("<tool_use_error>")
}

fn status(value: &Value) -> Option<u16> {
    value.as_u64().and_then(|n| u16::try_from(n).ok())
}

/// The text of a content value: a string, or the `text` of its text blocks.
fn blocks_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    crate::protocol::schema::truncate_chars(s, max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(lines: &[&str]) -> Transcript {
        let mut t = Transcript::default();
        lines.iter().for_each(|l| t.feed(l));
        t
    }

    const INIT: &str = r#"{"type":"system","subtype":"init","tools":["mcp__filesystem__write_file"],"mcp_servers":[{"name":"filesystem","status":"connected"},{"name":"tg","status":"failed"}]}"#;

    fn tool_use(id: &str, name: &str) -> String {
        format!(
            r#"{{"type":"assistant","message":{{"content":[{{"type":"tool_use","id":"{id}","name":"{name}","input":{{}}}}]}}}}"#
        )
    }

    fn tool_result(id: &str, is_error: bool, text: &str) -> String {
        format!(
            r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"{id}","is_error":{is_error},"content":"{text}"}}]}}}}"#
        )
    }

    #[test]
    fn init_records_server_statuses() {
        let t = transcript(&[INIT]);
        assert!(t.init_seen);
        assert_eq!(t.servers["filesystem"], "connected");
        assert_eq!(t.servers["tg"], "failed");
    }

    #[test]
    fn tools_used_counts_executed_calls_once_in_order_without_denials() {
        let servers = vec!["filesystem".to_owned(), "my__odd".to_owned()];
        let lines = [
            INIT.to_owned(),
            tool_use("a", "mcp__filesystem__write_file"),
            tool_use("b", "mcp__filesystem__read_file"),
            tool_result("b", false, "ok"),
            tool_result("a", true, "EACCES"),
            tool_use("c", "mcp__filesystem__write_file"),
            tool_result("c", false, "ok"),
            tool_use("d", "mcp__other__send"),
            tool_result(
                "d",
                true,
                "Claude requested permissions to use mcp__other__send, but you haven't granted it yet.",
            ),
            tool_use("e", "mcp__my__odd__x"),
            tool_result("e", false, "ok"),
            tool_use("f", "Bash"),
            tool_result("f", false, "ok"),
            tool_use("g", "mcp__filesystem__list_directory"),
        ];
        let t = transcript(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(t.tools_used(&servers), ["write_file", "read_file", "x"]);
        assert_eq!(t.tools_denied(&servers), ["send"]);
    }

    #[test]
    fn result_denials_mark_calls_refused() {
        let t = transcript(&[
            &tool_use("a", "mcp__fs__write_file"),
            &tool_result("a", true, "some wording we do not know"),
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done","num_turns":2,"total_cost_usd":0.002,"permission_denials":[{"tool_name":"mcp__fs__write_file","tool_use_id":"a","tool_input":{}}]}"#,
        ]);
        assert!(t.tools_used(&["fs".into()]).is_empty());
        let r = t.result.unwrap();
        assert_eq!((r.text.as_deref(), r.num_turns, r.total_cost_usd), (Some("done"), Some(2), Some(0.002)));
        assert_eq!(r.denied_names, ["mcp__fs__write_file"]);
    }

    #[test]
    fn api_errors_and_retries_are_recorded() {
        let t = transcript(&[
            r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"error_status":529,"error":"overloaded"}"#,
            r#"{"type":"assistant","error":"rate_limit","message":{"model":"<synthetic>","content":[{"type":"text","text":"API Error: 429"}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: 429 rate limited"}"#,
        ]);
        assert_eq!(
            t.last_retry,
            Some(ApiRetry { error_status: Some(529), error: Some("overloaded".into()), retry_delay_ms: None })
        );
        assert_eq!(t.api_error, Some(("rate_limit".into(), "API Error: 429".into())));
        assert_eq!(t.result.unwrap().api_error_status, Some(429));
    }

    #[test]
    fn models_fallbacks_and_rate_limits_are_recorded() {
        let t = transcript(&[
            r#"{"type":"system","subtype":"init","model":"big","mcp_servers":[]}"#,
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":429,"error":"rate_limit","retry_delay_ms":3000}"#,
            r#"{"type":"system","subtype":"model_fallback","trigger":"overloaded","original_model":"big","fallback_model":"small"}"#,
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1700000000}}"#,
        ]);
        assert_eq!(t.last_retry.as_ref().and_then(|r| r.retry_delay_ms), Some(3000));
        assert_eq!(t.governed.model().as_deref(), Some("small"));
        assert_eq!(t.governed.rate_limit, Some(("rejected".into(), Some(1_700_000_000))));
        let t = transcript(&[
            r#"{"type":"system","subtype":"init","model":"big","mcp_servers":[]}"#,
            r#"{"type":"assistant","message":{"model":"small","content":[]}}"#,
            r#"{"type":"assistant","error":"x","message":{"model":"<synthetic>","content":[]}}"#,
        ]);
        assert_eq!(t.governed.model().as_deref(), Some("small"));
    }

    #[test]
    fn garbage_lines_are_counted_not_fatal() {
        let t = transcript(&["", "not json", "[1,2]", r#"{"type":"assistant","message":7}"#, "{\"type\":\"user\"}"]);
        assert_eq!(t.lines, 5);
        assert_eq!(t.unreadable_lines, 2);
        assert!(t.calls.is_empty() && t.result.is_none());
    }

    #[test]
    fn huge_result_text_is_bounded() {
        let line = format!(
            r#"{{"type":"result","subtype":"success","is_error":false,"result":"{}"}}"#,
            "y".repeat(MAX_RESULT_CHARS + 10)
        );
        let t = transcript(&[&line]);
        assert_eq!(t.result.unwrap().text.unwrap().chars().count(), MAX_RESULT_CHARS + 1);
    }
}
