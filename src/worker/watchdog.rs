//! The no-progress watchdog: when a worker has been silent too long. Pure: the transcript and the
//! time of each line in, the instant of the next trip out (the process layer sleeps until then).
//!
//! There is no heartbeat on the CLI's stdout, so silence is judged by phase:
//! - `starting` (before `system/init`, MCP servers connecting): `idleTimeout` plus the MCP
//!   connect timeout, since the CLI says nothing until its servers are up;
//! - `model` (no tool call open): `idleTimeout` since the last line; with
//!   `--include-partial-messages` every SSE event of an answer is a line, so a working model is
//!   never silent for long; after a `system/api_retry` the CLI's announced wait is allowed on top;
//! - `tool` (a `tool_use` without its `tool_result`): the stream is silent for the whole call, so
//!   only `toolTimeout` applies, counted from when the oldest open call began.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::stream::{CallOutcome, Transcript};
use crate::protocol::governance::{ErrorDetail, Phase};

/// Why the watchdog tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    pub phase: Phase,
    /// The open tool (phase `tool`).
    pub tool: Option<String>,
    /// How long the worker was silent (or the tool open).
    pub silent: Duration,
}

impl Trip {
    /// The error's message and its detail fields.
    pub fn describe(&self) -> (String, ErrorDetail) {
        let ms = u64::try_from(self.silent.as_millis()).unwrap_or(u64::MAX);
        let message = match (&self.phase, &self.tool) {
            (Phase::Tool, Some(tool)) => format!("the tool call {tool} was open for {ms} ms (toolTimeout)"),
            (Phase::Starting, _) => format!("no progress for {ms} ms while Claude Code was starting (idleTimeout)"),
            _ => format!("no progress for {ms} ms while the model was working (idleTimeout)"),
        };
        let detail =
            ErrorDetail { phase: Some(self.phase), tool: self.tool.clone(), silent_ms: Some(ms), ..Default::default() };
        (message, detail)
    }
}

/// One worker's watchdog.
#[derive(Debug, Clone)]
pub struct Watchdog {
    idle: Option<Duration>,
    tool: Option<Duration>,
    /// Extra silence allowed before `system/init`.
    starting: Duration,
    /// When the last line came (the spawn, before any).
    last: Instant,
    /// The silence the CLI announced with its last `api_retry` (its backoff).
    retry_wait: Duration,
    retries_seen: u64,
    init_seen: bool,
    /// Open tool calls: id → (name, since).
    open: HashMap<String, (String, Instant)>,
}

impl Watchdog {
    /// A watchdog for these limits, started now; `None` when there is nothing to watch.
    pub fn new(idle: Option<Duration>, tool: Option<Duration>, starting: Duration, now: Instant) -> Option<Watchdog> {
        (idle.is_some() || tool.is_some()).then(|| Watchdog {
            idle,
            tool,
            starting,
            last: now,
            retry_wait: Duration::ZERO,
            retries_seen: 0,
            init_seen: false,
            open: HashMap::new(),
        })
    }

    /// Takes the transcript as it is after a line that came at `now`.
    pub fn observe(&mut self, transcript: &Transcript, now: Instant) {
        self.last = now;
        self.init_seen = transcript.init_seen;
        if transcript.governed.api_retries != self.retries_seen {
            self.retries_seen = transcript.governed.api_retries;
            let wait = transcript.last_retry.as_ref().and_then(|r| r.retry_delay_ms).unwrap_or(0);
            self.retry_wait = Duration::from_millis(wait);
        } else {
            self.retry_wait = Duration::ZERO;
        }
        self.open.retain(|id, _| transcript.calls.iter().any(|c| &c.id == id && c.outcome == CallOutcome::Pending));
        for call in transcript.calls.iter().filter(|c| c.outcome == CallOutcome::Pending) {
            self.open.entry(call.id.clone()).or_insert_with(|| (call.name.clone(), now));
        }
    }

    fn phase(&self) -> Phase {
        if !self.open.is_empty() {
            Phase::Tool
        } else if self.init_seen {
            Phase::Model
        } else {
            Phase::Starting
        }
    }

    /// When the watchdog trips if no further line comes (`None`: never, in this phase).
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase() {
            Phase::Tool => {
                let oldest = self.open.values().map(|(_, since)| *since).min()?;
                Some(oldest + self.tool?)
            }
            Phase::Model => Some(self.last + self.idle? + self.retry_wait),
            Phase::Starting => Some(self.last + self.idle? + self.starting),
        }
    }

    /// What tripped, at `now` (at or after [`Watchdog::deadline`]).
    pub fn trip(&self, now: Instant) -> Trip {
        let phase = self.phase();
        let oldest = self.open.values().min_by_key(|(_, since)| *since);
        match (phase, oldest) {
            (Phase::Tool, Some((name, since))) => Trip { phase, tool: Some(name.clone()), silent: now - *since },
            _ => Trip { phase, tool: None, silent: now - self.last },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const INIT: &str = r#"{"type":"system","subtype":"init","mcp_servers":[]}"#;

    fn tool_use(id: &str) -> String {
        format!(
            r#"{{"type":"assistant","message":{{"content":[{{"type":"tool_use","id":"{id}","name":"mcp__s__slow","input":{{}}}}]}}}}"#
        )
    }

    fn tool_result(id: &str) -> String {
        format!(
            r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"{id}","content":"ok"}}]}}}}"#
        )
    }

    /// Feeds `lines` at the given offsets (from t0); returns the watchdog and t0.
    fn fed(idle: Option<Duration>, tool: Option<Duration>, lines: &[(Duration, &str)]) -> (Watchdog, Instant) {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(idle, tool, 10 * S, t0).unwrap();
        let mut t = Transcript::default();
        for (at, line) in lines {
            t.feed(line);
            dog.observe(&t, t0 + *at);
        }
        (dog, t0)
    }

    #[test]
    fn nothing_to_watch_is_no_watchdog() {
        assert!(Watchdog::new(None, None, S, Instant::now()).is_none());
    }

    #[test]
    fn starting_allows_the_connect_time_on_top() {
        let (dog, t0) = fed(Some(2 * S), None, &[]);
        assert_eq!(dog.deadline(), Some(t0 + 12 * S));
        assert_eq!(dog.trip(t0 + 12 * S), Trip { phase: Phase::Starting, tool: None, silent: 12 * S });
    }

    #[test]
    fn every_line_moves_the_model_deadline() {
        let (dog, t0) = fed(Some(2 * S), None, &[(S, INIT), (3 * S, r#"{"type":"stream_event"}"#)]);
        assert_eq!(dog.deadline(), Some(t0 + 5 * S));
        assert_eq!(dog.trip(t0 + 5 * S).phase, Phase::Model);
    }

    #[test]
    fn an_api_retry_allows_its_announced_wait() {
        let retry = r#"{"type":"system","subtype":"api_retry","error_status":429,"retry_delay_ms":7000}"#;
        let (dog, t0) = fed(Some(2 * S), None, &[(S, INIT), (S, retry)]);
        assert_eq!(dog.deadline(), Some(t0 + 10 * S));
        let (dog, t0) = fed(Some(2 * S), None, &[(S, INIT), (S, retry), (4 * S, r#"{"type":"stream_event"}"#)]);
        assert_eq!(dog.deadline(), Some(t0 + 6 * S), "the allowance ends with the next line");
    }

    #[test]
    fn an_open_tool_is_judged_by_the_tool_limit_only() {
        let (dog, t0) = fed(Some(2 * S), Some(30 * S), &[(S, INIT), (2 * S, &tool_use("a"))]);
        assert_eq!(dog.deadline(), Some(t0 + 32 * S));
        let trip = dog.trip(t0 + 32 * S);
        assert_eq!((trip.phase, trip.tool.as_deref(), trip.silent), (Phase::Tool, Some("mcp__s__slow"), 30 * S));
        // Without a tool limit, an open call is bounded by the wall clock only.
        let (dog, _) = fed(Some(2 * S), None, &[(S, INIT), (2 * S, &tool_use("a"))]);
        assert_eq!(dog.deadline(), None);
        // A second call opened later does not restart the first one's clock.
        let (dog, t0) = fed(None, Some(30 * S), &[(S, INIT), (2 * S, &tool_use("a")), (9 * S, &tool_use("b"))]);
        assert_eq!(dog.deadline(), Some(t0 + 32 * S));
    }

    #[test]
    fn a_tool_result_returns_to_the_model_phase() {
        let (open, close) = (tool_use("a"), tool_result("a"));
        let lines = [(S, INIT), (2 * S, open.as_str()), (40 * S, close.as_str())];
        let (dog, t0) = fed(Some(2 * S), Some(60 * S), &lines);
        assert_eq!(dog.deadline(), Some(t0 + 42 * S));
        // Only a tool limit: the model phase is not watched.
        let (dog, _) = fed(None, Some(60 * S), &lines);
        assert_eq!(dog.deadline(), None);
    }
}
