//! What becomes of an action that was running when its daemon died (a crash, `kill -9`; or, in a
//! cluster, a daemon found dead): answered `interrupted`, or run again when its `retries` allow
//! another attempt. Pure: the stored JSON in, the decision out; the caller writes it (a result,
//! or [`Journal::requeue`](crate::store::Journal::requeue) with the new stored JSON).
//!
//! The stored JSON is what `accept` wrote (`{"index", "action"}`, see [`super::stored_action`])
//! plus `failedAttempts`: the kinds of the attempts that failed before a restart (`interrupted`,
//! and every attempt the daemon retried: the recorder writes each one with
//! [`Journal::attempt_failed`](crate::store::Journal::attempt_failed)), which the pool counts as
//! used retries when it runs the action again.

use serde_json::Value;

use crate::protocol::governance::MAX_RETRIES;
use crate::protocol::{ErrorKind, WorkerError, WorkerResult};

pub use crate::store::types::FAILED_ATTEMPTS;

/// What to do with an interrupted action: its one result (retries exhausted, or none asked for),
/// or run it again from the new stored JSON (the interrupted attempt added to
/// `failedAttempts`). The store's type, so a cluster's reaper applies it in its transaction.
pub use crate::store::Verdict as Interruption;

/// Decides for the action `task_id`, running when its daemon died, from what `accept` stored.
pub fn after_interruption(task_id: &str, stored: &Value) -> Interruption {
    let before = failed_before(stored);
    let retries = stored["action"]["retries"].as_u64().map_or(0, |n| n.min(u64::from(MAX_RETRIES)));
    let used = u64::try_from(before.len()).unwrap_or(u64::MAX);
    if used < retries {
        let mut again = stored.clone();
        let mut failed = before;
        failed.push(ErrorKind::Interrupted);
        again[FAILED_ATTEMPTS] = serde_json::to_value(failed).unwrap_or_default();
        return Interruption::Rerun(again);
    }
    let message = if retries == 0 {
        "the daemon stopped (crash, kill, or silent past the node timeout) while this worker ran; it was not run again"
    } else {
        "the daemon stopped (crash, kill, or silent past the node timeout) while this worker ran; its retries are used up"
    };
    let error = WorkerError::new(ErrorKind::Interrupted, message, true);
    let mut result = WorkerResult::failure(task_id, super::stored_origin(stored), error);
    if retries > 0 || !before.is_empty() {
        result.governance.attempts = Some(u32::try_from(before.len() + 1).unwrap_or(u32::MAX));
        result.governance.failed_attempts = before;
    }
    Interruption::Answer(Box::new(result))
}

/// The kinds of the attempts that failed before a restart, as stored (none for an action that
/// never was interrupted). An entry that does not read as a kind still counts, as `interrupted`:
/// the count, not the names, decides whether retries are left.
pub fn failed_before(stored: &Value) -> Vec<ErrorKind> {
    let Some(kinds) = stored.get(FAILED_ATTEMPTS).and_then(Value::as_array) else { return Vec::new() };
    kinds.iter().map(|kind| serde_json::from_value(kind.clone()).unwrap_or(ErrorKind::Interrupted)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored(retries: Option<u64>, failed: Option<Value>) -> Value {
        let mut action = json!({"type": "spawn_worker", "taskId": "t", "task": "x", "servers": ["fs"]});
        if let Some(retries) = retries {
            action["retries"] = retries.into();
        }
        let mut stored = json!({"index": 3, "action": action});
        if let Some(failed) = failed {
            stored[FAILED_ATTEMPTS] = failed;
        }
        stored
    }

    fn answer(decision: Interruption) -> WorkerResult {
        match decision {
            Interruption::Answer(result) => *result,
            Interruption::Rerun(stored) => panic!("run again: {stored}"),
        }
    }

    #[test]
    fn without_retries_it_is_answered_interrupted_as_before() {
        for retries in [None, Some(0)] {
            let result = answer(after_interruption("t", &stored(retries, None)));
            let error = result.error.as_ref().expect("an error");
            assert_eq!((error.kind, error.retryable, result.success), (ErrorKind::Interrupted, true, false));
            assert!(error.message.ends_with("it was not run again"), "{}", error.message);
            assert_eq!((result.task_id.as_str(), result.origin.index), ("t", 3));
            assert_eq!(result.governance.attempts, None, "nothing added without retries");
            assert!(result.governance.failed_attempts.is_empty());
        }
    }

    #[test]
    fn with_retries_left_it_runs_again_with_the_interrupted_attempt_recorded() {
        let Interruption::Rerun(again) = after_interruption("t", &stored(Some(2), None)) else {
            panic!("a retry is left")
        };
        assert_eq!(again[FAILED_ATTEMPTS], json!(["interrupted"]));
        assert_eq!((&again["index"], &again["action"]), (&json!(3), &stored(Some(2), None)["action"]));
        assert_eq!(failed_before(&again), [ErrorKind::Interrupted]);
        // Interrupted once more: the second retry.
        let Interruption::Rerun(third) = after_interruption("t", &again) else { panic!("one retry is left") };
        assert_eq!(third[FAILED_ATTEMPTS], json!(["interrupted", "interrupted"]));
        // And once more: none is left.
        let result = answer(after_interruption("t", &third));
        assert_eq!(result.error.map(|e| e.kind), Some(ErrorKind::Interrupted));
        assert_eq!(result.governance.attempts, Some(3));
        assert_eq!(result.governance.failed_attempts, [ErrorKind::Interrupted, ErrorKind::Interrupted]);
    }

    #[test]
    fn exhausted_retries_are_answered_with_the_attempts() {
        let result = answer(after_interruption("t", &stored(Some(1), Some(json!(["interrupted"])))));
        let error = result.error.expect("an error");
        assert!(error.message.ends_with("its retries are used up"), "{}", error.message);
        assert_eq!((result.governance.attempts, result.governance.failed_attempts), (Some(2), vec![error.kind]));
    }

    #[test]
    fn unreadable_failed_attempts_still_count() {
        let odd = stored(Some(2), Some(json!(["interrupted", 7])));
        assert_eq!(failed_before(&odd), [ErrorKind::Interrupted, ErrorKind::Interrupted]);
        assert!(matches!(after_interruption("t", &odd), Interruption::Answer(_)), "both retries are used");
        assert!(failed_before(&stored(Some(2), Some(json!("interrupted")))).is_empty(), "not a list: none");
        assert_eq!(failed_before(&stored(None, Some(json!(["rate_limited"])))), [ErrorKind::RateLimited]);
    }
}
