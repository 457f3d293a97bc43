//! Retries of an action (`retries`): which failures are run again, and after how long. Pure.
//!
//! Only failures that another run may cure: `rate_limited`, `idle_timeout`, `interrupted`, and
//! `claude_error` / `mcp_unavailable` when marked retryable. Never a deterministic failure (bad
//! input, a 400, `max_turns`, `budget_exceeded`), a timeout of the whole action, a cancellation or
//! a shutdown. The wait doubles with each attempt (capped), with jitter (a random half of it
//! added), and is at least what the failure asked for (`retryAfterMs`).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::protocol::{ErrorKind, WorkerError};

/// The longest wait between two attempts, jitter included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether another attempt may cure this failure.
pub fn retryable(error: &WorkerError) -> bool {
    match error.kind {
        ErrorKind::RateLimited | ErrorKind::IdleTimeout | ErrorKind::Interrupted => true,
        ErrorKind::ClaudeError | ErrorKind::McpUnavailable => error.retryable,
        _ => false,
    }
}

/// The wait before attempt `next` (2, 3, ...): `base · 2^(next-2)` plus up to half of it again
/// (`jitter` in 0..1), at least `retry_after`, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, next: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let exponent = next.saturating_sub(2).min(16);
    let doubled = base.saturating_mul(1 << exponent).min(MAX_BACKOFF);
    let jittered = doubled.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0);
    jittered.max(retry_after.unwrap_or_default()).min(MAX_BACKOFF)
}

/// A random number in 0..1 (std's per-process random hash keys; no dependency needed).
pub fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_curable_failures_are_retried() {
        let check = |kind, retryable_flag, want| {
            let error = WorkerError::new(kind, "x", retryable_flag);
            assert_eq!(retryable(&error), want, "{kind:?} retryable={retryable_flag}");
        };
        check(ErrorKind::RateLimited, true, true);
        check(ErrorKind::IdleTimeout, true, true);
        check(ErrorKind::Interrupted, true, true);
        check(ErrorKind::ClaudeError, true, true);
        check(ErrorKind::ClaudeError, false, false);
        check(ErrorKind::McpUnavailable, true, true);
        check(ErrorKind::McpUnavailable, false, false);
        for kind in [
            ErrorKind::InvalidAction,
            ErrorKind::Timeout,
            ErrorKind::MaxTurns,
            ErrorKind::Cancelled,
            ErrorKind::Shutdown,
            ErrorKind::BudgetExceeded,
            ErrorKind::SpawnFailed,
            ErrorKind::InternalError,
        ] {
            check(kind, true, false);
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_bounds() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 2, 0.0, None), s);
        assert_eq!(backoff(s, 3, 0.0, None), 2 * s);
        assert_eq!(backoff(s, 4, 1.0, None), 6 * s, "4 s plus half of it");
        assert_eq!(backoff(s, 5, 0.5, None), 10 * s, "8 s plus a quarter");
        assert_eq!(backoff(s, 11, 0.0, None), MAX_BACKOFF);
        assert_eq!(backoff(s, 2, 0.0, Some(7 * s)), 7 * s, "what the failure asked for");
        assert_eq!(backoff(s, 2, 0.0, Some(3600 * s)), MAX_BACKOFF);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
