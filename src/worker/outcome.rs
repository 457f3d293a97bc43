//! Deciding what a finished worker's `worker_result` says. Pure: facts in, verdict out.
//!
//! Success is never read from the exit code alone (the CLI exits 1 with `subtype:"success"` on API
//! errors, and 0 on permission denials and SIGINT): the deadline, our own stop, the requested
//! servers' status, the `result` event and the exit status are weighed in that order.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::protocol::{ErrorKind, ServerStatus, WorkerError};

use super::stream::Transcript;

/// Why the daemon itself ended a worker, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The action's `timeout` ran out.
    Deadline,
    /// The daemon is shutting down.
    Shutdown,
    /// The caller cancelled this action.
    Cancelled,
    /// A requested MCP server did not connect (seen in `system/init`).
    McpUnavailable,
    /// The no-progress watchdog tripped (`idleTimeout`, `toolTimeout`).
    Idle,
}

/// How the child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("an unknown status"),
        }
    }
}

/// The facts about one finished worker.
#[derive(Debug)]
pub struct Facts<'a> {
    pub transcript: &'a Transcript,
    pub exit: ExitInfo,
    pub stop: Option<Stop>,
    pub stderr_tail: &'a str,
    /// The servers the action asked for.
    pub requested: &'a [String],
    /// Failure reasons from the CLI's MCP logs, by server.
    pub mcp_reasons: &'a BTreeMap<String, String>,
    pub timeout: Duration,
}

/// What the `worker_result` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub success: bool,
    pub result: String,
    pub error: Option<WorkerError>,
}

impl Verdict {
    fn ok(result: String) -> Self {
        Self { success: true, result, error: None }
    }

    fn fail(kind: ErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        let message = message.into();
        Self { success: false, result: message.clone(), error: Some(WorkerError::new(kind, message, retryable)) }
    }

    /// A failure whose human `result` differs from the error message (e.g. the model's own words).
    fn fail_with_result(result: String, kind: ErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        Self { success: false, result, error: Some(WorkerError::new(kind, message, retryable)) }
    }
}

/// The status of each requested server, as reported, with a reason where one is known.
pub fn server_statuses(facts: &Facts<'_>) -> BTreeMap<String, ServerStatus> {
    if !facts.transcript.init_seen {
        return BTreeMap::new();
    }
    facts
        .requested
        .iter()
        .map(|name| {
            let status = facts.transcript.servers.get(name).cloned().unwrap_or_else(|| "missing".to_owned());
            let reason = (status != "connected").then(|| facts.mcp_reasons.get(name).cloned()).flatten();
            (name.clone(), ServerStatus { status, reason })
        })
        .collect()
}

/// Requested servers that are not `connected`, with their status (once `system/init` was seen).
pub fn unavailable_servers(transcript: &Transcript, requested: &[String]) -> Vec<(String, String)> {
    if !transcript.init_seen {
        return Vec::new();
    }
    requested
        .iter()
        .filter_map(|name| {
            let status = transcript.servers.get(name).map_or("missing", String::as_str);
            (status != "connected").then(|| (name.clone(), status.to_owned()))
        })
        .collect()
}

pub fn decide(facts: &Facts<'_>) -> Verdict {
    let t = facts.transcript;
    match facts.stop {
        Some(Stop::Shutdown) => {
            return Verdict::fail(ErrorKind::Shutdown, "the daemon shut down before the worker finished", true);
        }
        Some(Stop::Cancelled) => return Verdict::fail(ErrorKind::Cancelled, "the worker was cancelled", false),
        Some(Stop::Deadline) => {
            return Verdict::fail(
                ErrorKind::Timeout,
                format!("Worker timed out after {} ms", facts.timeout.as_millis()),
                true,
            );
        }
        // The worker adds the phase, the tool and the silence (`watchdog::Trip`).
        Some(Stop::Idle) => return Verdict::fail(ErrorKind::IdleTimeout, "the worker made no progress", true),
        Some(Stop::McpUnavailable) | None => {}
    }
    let unavailable = unavailable_servers(t, facts.requested);
    if !unavailable.is_empty() {
        let retryable = unavailable.iter().all(|(_, status)| status == "pending");
        let parts: Vec<String> = unavailable
            .iter()
            .map(|(name, status)| match facts.mcp_reasons.get(name) {
                Some(reason) => format!("{name} ({status}: {reason})"),
                None => format!("{name} ({status})"),
            })
            .collect();
        return Verdict::fail(
            ErrorKind::McpUnavailable,
            format!("MCP server did not connect: {}", parts.join(", ")),
            retryable,
        );
    }
    let Some(result) = &t.result else {
        return no_result(facts);
    };
    if result.subtype == "error_max_turns" {
        let message = result.errors.first().cloned().unwrap_or_else(|| "Reached the maximum number of turns".into());
        return Verdict::fail_with_result(
            result.text.clone().unwrap_or_else(|| message.clone()),
            ErrorKind::MaxTurns,
            message,
            false,
        );
    }
    if result.subtype == "error_max_budget_usd" {
        let message = result.errors.first().cloned().unwrap_or_else(|| "Reached the maximum budget".into());
        return Verdict::fail(ErrorKind::BudgetExceeded, message, false);
    }
    if !result.is_error && result.subtype == "success" {
        return Verdict::ok(result.text.clone().unwrap_or_default());
    }
    let text = result
        .text
        .clone()
        .or_else(|| result.errors.first().cloned())
        .or_else(|| t.api_error.as_ref().map(|(_, text)| text.clone()))
        .unwrap_or_else(|| format!("the worker failed ({})", result.subtype));
    let status = result.api_error_status.or_else(|| t.last_retry.as_ref().and_then(|r| r.error_status));
    let (kind, retryable) = classify_api_error(status, &text);
    Verdict::fail(kind, text, retryable)
}

/// Maps an API failure to a kind and whether trying again may help.
pub fn classify_api_error(status: Option<u16>, text: &str) -> (ErrorKind, bool) {
    let lower = text.to_ascii_lowercase();
    match status {
        Some(429 | 529) => (ErrorKind::RateLimited, true),
        _ if lower.contains("overloaded") || lower.contains("rate limit") => (ErrorKind::RateLimited, true),
        Some(500..=599 | 408) => (ErrorKind::ClaudeError, true),
        Some(400..=499) => (ErrorKind::ClaudeError, false),
        _ if lower.contains("not logged in") || lower.contains("invalid api key") => (ErrorKind::ClaudeError, false),
        _ => {
            let transient = ["timed out", "timeout", "unable to connect", "econnreset", "econnrefused", "socket"];
            (ErrorKind::ClaudeError, transient.iter().any(|w| lower.contains(w)))
        }
    }
}

/// The CLI ended without a `result` event.
fn no_result(facts: &Facts<'_>) -> Verdict {
    let detail = first_error_line(facts.stderr_tail);
    match (facts.exit.code, detail) {
        (_, Some(line)) if line.contains("Invalid MCP configuration") => {
            Verdict::fail(ErrorKind::InternalError, format!("the CLI refused the MCP config: {line}"), false)
        }
        (_, Some(line)) => Verdict::fail(
            ErrorKind::ClaudeError,
            format!("Claude Code ended with {} and no result: {line}", facts.exit),
            facts.exit.signal.is_some(),
        ),
        (_, None) => {
            Verdict::fail(ErrorKind::ClaudeError, format!("Claude Code ended with {} and no result", facts.exit), true)
        }
    }
}

/// The most telling line of stderr: the first `Error...` line, else the last non-empty one.
fn first_error_line(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let pick = lines.iter().find(|l| l.starts_with("Error")).or(lines.last())?;
    let next = lines.iter().skip_while(|l| *l != pick).nth(1);
    let text = match next {
        Some(next) if pick.ends_with(':') => format!("{pick} {next}"),
        _ => (*pick).to_owned(),
    };
    Some(crate::protocol::schema::truncate_chars(&text, 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lines: &[&str], exit: ExitInfo, stop: Option<Stop>, stderr: &str, want: (bool, Option<ErrorKind>, bool)) {
        let mut t = Transcript::default();
        lines.iter().for_each(|l| t.feed(l));
        let requested = vec!["fs".to_owned()];
        let reasons = BTreeMap::from([("fs".to_owned(), "spawn ENOENT".to_owned())]);
        let facts = Facts {
            transcript: &t,
            exit,
            stop,
            stderr_tail: stderr,
            requested: &requested,
            mcp_reasons: &reasons,
            timeout: Duration::from_millis(1500),
        };
        let v = decide(&facts);
        let got = (v.success, v.error.as_ref().map(|e| e.kind), v.error.as_ref().is_some_and(|e| e.retryable));
        assert_eq!(got, want, "{lines:?} {stop:?}: {v:?}");
    }

    const OK: ExitInfo = ExitInfo { code: Some(0), signal: None };
    const ONE: ExitInfo = ExitInfo { code: Some(1), signal: None };
    const INIT_OK: &str = r#"{"type":"system","subtype":"init","mcp_servers":[{"name":"fs","status":"connected"}]}"#;
    const INIT_FAILED: &str = r#"{"type":"system","subtype":"init","mcp_servers":[{"name":"fs","status":"failed"}]}"#;
    const INIT_PENDING: &str = r#"{"type":"system","subtype":"init","mcp_servers":[{"name":"fs","status":"pending"}]}"#;
    const INIT_NONE: &str = r#"{"type":"system","subtype":"init","mcp_servers":[]}"#;
    const SUCCESS: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"done"}"#;

    #[test]
    fn verdicts() {
        use ErrorKind::*;
        check(&[INIT_OK, SUCCESS], OK, None, "", (true, None, false));
        // Our own stops win over whatever the stream says.
        check(&[INIT_OK, SUCCESS], OK, Some(Stop::Deadline), "", (false, Some(Timeout), true));
        check(&[INIT_OK], OK, Some(Stop::Shutdown), "", (false, Some(Shutdown), true));
        check(&[INIT_OK], OK, Some(Stop::Cancelled), "", (false, Some(Cancelled), false));
        // Requested servers that did not connect.
        check(&[INIT_FAILED, SUCCESS], OK, None, "", (false, Some(McpUnavailable), false));
        check(&[INIT_PENDING], OK, Some(Stop::McpUnavailable), "", (false, Some(McpUnavailable), true));
        check(&[INIT_NONE, SUCCESS], OK, None, "", (false, Some(McpUnavailable), false));
        // API errors: rc 1 with subtype success.
        let api = |status: u16, text: &str| {
            format!(
                r#"{{"type":"result","subtype":"success","is_error":true,"api_error_status":{status},"result":"{text}"}}"#
            )
        };
        check(&[INIT_OK, &api(500, "API Error: 500 boom")], ONE, None, "", (false, Some(ClaudeError), true));
        check(&[INIT_OK, &api(429, "API Error: 429")], ONE, None, "", (false, Some(RateLimited), true));
        check(
            &[INIT_OK, &api(529, "API Error: Repeated 529 Overloaded errors")],
            ONE,
            None,
            "",
            (false, Some(RateLimited), true),
        );
        check(&[INIT_OK, &api(400, "API Error: 400 bad")], ONE, None, "", (false, Some(ClaudeError), false));
        check(&[INIT_OK, &api(401, "API Error: 401")], ONE, None, "", (false, Some(ClaudeError), false));
        let timed_out = r#"{"type":"result","subtype":"success","is_error":true,"result":"Request timed out"}"#;
        check(&[INIT_OK, timed_out], ONE, None, "", (false, Some(ClaudeError), true));
        let login =
            r#"{"type":"result","subtype":"success","is_error":true,"result":"Not logged in · Please run /login"}"#;
        check(&[INIT_OK, login], ONE, None, "", (false, Some(ClaudeError), false));
        let max_turns = r#"{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["Reached maximum number of turns (2)"]}"#;
        check(&[INIT_OK, max_turns], ONE, None, "", (false, Some(MaxTurns), false));
        let budget = r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"total_cost_usd":0.15,"errors":["Reached maximum budget ($0.1)"]}"#;
        check(&[INIT_OK, budget], ONE, None, "", (false, Some(BudgetExceeded), false));
        check(&[INIT_OK, SUCCESS], OK, Some(Stop::Idle), "", (false, Some(IdleTimeout), true));
        let interrupted = r#"{"type":"result","subtype":"error_during_execution","is_error":true}"#;
        check(&[INIT_OK, interrupted], OK, None, "", (false, Some(ClaudeError), false));
        // No result at all.
        check(
            &[],
            ONE,
            None,
            "Error: Invalid MCP configuration:\nmcpServers: bad",
            (false, Some(InternalError), false),
        );
        check(&[INIT_OK], ExitInfo { code: None, signal: Some(9) }, None, "Killed", (false, Some(ClaudeError), true));
        check(&[INIT_OK], OK, None, "", (false, Some(ClaudeError), true));
    }

    #[test]
    fn mcp_reason_is_named() {
        let mut t = Transcript::default();
        t.feed(INIT_FAILED);
        let requested = vec!["fs".to_owned()];
        let reasons = BTreeMap::from([("fs".to_owned(), "spawn nope ENOENT".to_owned())]);
        let facts = Facts {
            transcript: &t,
            exit: OK,
            stop: None,
            stderr_tail: "",
            requested: &requested,
            mcp_reasons: &reasons,
            timeout: Duration::ZERO,
        };
        let v = decide(&facts);
        assert_eq!(v.result, "MCP server did not connect: fs (failed: spawn nope ENOENT)");
        assert_eq!(server_statuses(&facts)["fs"].reason.as_deref(), Some("spawn nope ENOENT"));
    }
}
