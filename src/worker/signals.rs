//! What a running worker's stream says about the account's limits, for the pool's breaker. Pure:
//! the transcript in, each new signal out once. Structured events only, never the prose:
//! `system/api_retry` (`error: "rate_limit"` or status 429 with `retry_delay_ms`; `overloaded` or
//! 529), a `rate_limit_event` whose status is `rejected` (with `resetsAt`), and the final
//! `result`'s `api_error_status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::stream::Transcript;

/// When the stream names no wait: how long a rate limit pauses the starts.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(30);
/// When the stream names no wait: the shared backoff after an overload.
pub const DEFAULT_OVERLOAD_BACKOFF: Duration = Duration::from_secs(2);

/// One thing the breaker should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The account is rate limited for this long (from now).
    RateLimited(Duration),
    /// The API is overloaded: back off this long.
    Overloaded(Duration),
}

/// Where a worker sends its signals (the pool's breaker); cheap to clone.
#[derive(Clone)]
pub struct SignalSink(pub Arc<dyn Fn(Signal) + Send + Sync>);

impl std::fmt::Debug for SignalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalSink")
    }
}

/// What was already reported from one transcript.
#[derive(Debug, Default)]
pub struct Signals {
    retries_seen: u64,
    rejected_seen: Option<Option<u64>>,
    result_seen: bool,
    /// A rate limit with its time was reported already in this run.
    limit_reported: bool,
}

impl Signals {
    /// The new signal after the latest line, if any (`now` for `resetsAt`).
    pub fn next(&mut self, t: &Transcript, now: SystemTime) -> Option<Signal> {
        let signal = self.find(t, now);
        if matches!(signal, Some(Signal::RateLimited(_))) {
            self.limit_reported = true;
        }
        signal
    }

    fn find(&mut self, t: &Transcript, now: SystemTime) -> Option<Signal> {
        if t.governed.api_retries != self.retries_seen {
            self.retries_seen = t.governed.api_retries;
            let retry = t.last_retry.as_ref()?;
            let wait = retry.retry_delay_ms.map(Duration::from_millis);
            return match (retry.error.as_deref(), retry.error_status) {
                (Some("rate_limit"), _) | (_, Some(429)) => {
                    Some(Signal::RateLimited(wait.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)))
                }
                (Some("overloaded"), _) | (_, Some(529)) => {
                    Some(Signal::Overloaded(wait.unwrap_or(DEFAULT_OVERLOAD_BACKOFF)))
                }
                _ => None,
            };
        }
        if let Some((status, resets)) = &t.governed.rate_limit {
            if status == "rejected" && self.rejected_seen != Some(*resets) {
                self.rejected_seen = Some(*resets);
                let wait = resets
                    .map(|at| SystemTime::UNIX_EPOCH + Duration::from_secs(at))
                    .and_then(|at| at.duration_since(now).ok())
                    .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE);
                return Some(Signal::RateLimited(wait));
            }
        }
        if let Some(result) = t.result.as_ref().filter(|_| !self.result_seen) {
            self.result_seen = true;
            // The CLI's retries ran out on the limit (or it made none): the wait it last named, else a default.
            let named = t.last_retry.as_ref().and_then(|r| r.retry_delay_ms).map(Duration::from_millis);
            return match result.api_error_status {
                // Already said, with its time (api_retry, rate_limit_event): nothing new.
                Some(429) if self.limit_reported => None,
                Some(429) => Some(Signal::RateLimited(named.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE))),
                Some(529) => Some(Signal::Overloaded(named.unwrap_or(DEFAULT_OVERLOAD_BACKOFF))),
                _ => None,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signals after each line, in order.
    fn signals(lines: &[&str]) -> Vec<Signal> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let (mut t, mut s) = (Transcript::default(), Signals::default());
        let mut out = Vec::new();
        for line in lines {
            t.feed(line);
            out.extend(s.next(&t, now));
        }
        out
    }

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn retries_rate_limit_events_and_results() {
        let retry = |error: &str, status: u16, ms: u64| {
            format!(
                r#"{{"type":"system","subtype":"api_retry","error":"{error}","error_status":{status},"retry_delay_ms":{ms}}}"#
            )
        };
        let (limited, busy, other) =
            (retry("rate_limit", 429, 3000), retry("overloaded", 529, 500), retry("server_error", 500, 1));
        assert_eq!(signals(&[&limited]), [Signal::RateLimited(SECS(3))]);
        assert_eq!(signals(&[&busy]), [Signal::Overloaded(Duration::from_millis(500))]);
        assert_eq!(signals(&[&other]), []);
        // Each retry once, even when two are alike.
        assert_eq!(signals(&[&limited, r#"{"type":"stream_event"}"#, &limited]).len(), 2);
        let rejected = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1060}}"#;
        let allowed = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1060}}"#;
        assert_eq!(signals(&[allowed, rejected, rejected]), [Signal::RateLimited(SECS(60))]);
        let final_429 = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429}"#;
        assert_eq!(signals(&[final_429]), [Signal::RateLimited(DEFAULT_RATE_LIMIT_PAUSE)]);
        assert_eq!(signals(&[&limited, final_429]), [Signal::RateLimited(SECS(3))], "the final 429 adds nothing");
        assert_eq!(signals(&[rejected, final_429]), [Signal::RateLimited(SECS(60))], "nor after a rate-limit event");
        let fine = r#"{"type":"result","subtype":"success","is_error":false,"result":"API Error: 429 rate limit"}"#;
        assert_eq!(signals(&[fine]), [], "never the prose");
    }
}
