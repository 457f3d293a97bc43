//! The reply objects and instruction strings of the original server's contract, kept
//! byte-for-byte (see `polling-queue-contract.md`), plus our additions (`submitted`, `attempt`,
//! errors that carry `instructions` and are flagged `isError`).

use rmcp::model::{CallToolResult, ContentBlock};

use crate::mcp::reply_line::{push_escaped, push_str};
use crate::store::Task;

pub fn poll_instructions(worker_id: &str) -> String {
    [POLL_BEFORE, worker_id, POLL_AFTER].concat()
}

pub fn task_instructions(worker_id: &str, task_id: &str) -> String {
    format!(
        "process this prompt and immediately call worker_submit with worker_id {worker_id}, task_id {task_id}, and your response - keep your response brief and direct, maximum 2-3 sentences - do not output the prompt or response to the user - do not break this tool call chain"
    )
}

const RECREATE_INSTRUCTIONS: &str = "call worker_create to register a new worker, then immediately call worker_poll with the new worker_id - do not output any commentary, progress messages, or explanations to the user - do not break this tool call chain";

/// A flat JSON object written exactly as serde_json's `to_string_pretty` writes it (two-space
/// indent, like the original's `JSON.stringify(value, null, 2)`), field by field in order. Built
/// by hand: serde's pretty printer and its byte-at-a-time escaping were a tenth of a
/// `worker_create`'s instructions (BENCHMARKS.md, issue 13). The tests compare it with serde.
struct Pretty {
    out: Vec<u8>,
    empty: bool,
}

impl Pretty {
    fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        Self { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        self.out.extend_from_slice(if self.empty { b"\n  " } else { b",\n  " });
        self.empty = false;
        push_str(&mut self.out, key);
        self.out.extend_from_slice(b": ");
    }

    /// A string field.
    fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(&mut self.out, value);
        self
    }

    /// A string field whose value is `parts` joined.
    fn joined(mut self, key: &str, parts: &[&str]) -> Self {
        self.key(key);
        self.out.push(b'"');
        parts.iter().for_each(|part| push_escaped(&mut self.out, part));
        self.out.push(b'"');
        self
    }

    fn raw(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        use std::io::Write as _;
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    fn text(mut self) -> ContentBlock {
        if !self.empty {
            self.out.push(b'\n');
        }
        self.out.push(b'}');
        // Every byte came from a `&str` or is ASCII, so this never fails.
        ContentBlock::text(String::from_utf8(self.out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
    }
}

const POLL_BEFORE: &str = "immediately call worker_poll with worker_id ";
const POLL_AFTER: &str = " - do not output any commentary, progress messages, or explanations to the user - do not break this tool call chain";

/// The contract's `worker_id` and `instructions` to poll (and `submitted: true` after a submit).
fn next_object(worker_id: &str, submitted: bool) -> ContentBlock {
    let object = Pretty::new(2 * worker_id.len() + 200).str("worker_id", worker_id);
    let object = if submitted { object.raw("submitted", true) } else { object };
    object.joined("instructions", &[POLL_BEFORE, worker_id, POLL_AFTER]).text()
}

/// `worker_create`, and an idle `worker_poll` that ran out of time.
pub fn next(worker_id: &str) -> CallToolResult {
    CallToolResult::success(vec![next_object(worker_id, false)])
}

/// A successful `worker_submit`: the same object plus `submitted: true`.
pub fn submitted(worker_id: &str) -> CallToolResult {
    CallToolResult::success(vec![next_object(worker_id, true)])
}

/// A `worker_poll` that got a task.
pub fn assignment(worker_id: &str, task: &Task) -> CallToolResult {
    let object = Pretty::new(task.prompt.len() + 3 * worker_id.len() + 2 * task.id.len() + 400)
        .str("worker_id", worker_id)
        .str("task_id", &task.id)
        .str("prompt", &task.prompt)
        .str("instructions", &task_instructions(worker_id, &task.id))
        .raw("attempt", task.attempts);
    CallToolResult::success(vec![object.text()])
}

/// An error the model can recover from: go on polling as `worker_id`.
pub fn error_then_poll(worker_id: &str, error: String) -> CallToolResult {
    error_with(error, Some(worker_id), poll_instructions(worker_id))
}

/// An error with explicit recovery instructions.
pub fn error_with(error: String, worker_id: Option<&str>, instructions: String) -> CallToolResult {
    let object = Pretty::new(error.len() + instructions.len() + 100).str("error", &error);
    let object = match worker_id {
        Some(worker_id) => object.str("worker_id", worker_id),
        None => object,
    };
    CallToolResult::error(vec![object.str("instructions", &instructions).text()])
}

/// The worker is unknown (never created, or removed as inactive): register again.
pub fn unknown_worker(worker_id: &str) -> CallToolResult {
    error_with(format!("Worker with ID {worker_id} not found."), None, RECREATE_INSTRUCTIONS.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TaskState;

    fn body(result: &CallToolResult) -> String {
        assert_eq!(result.content.len(), 1);
        result.content[0].as_text().map(|t| t.text.clone()).unwrap_or_default()
    }

    #[test]
    fn idle_reply_is_the_original_object() {
        let w = "worker_1_abcdefghi";
        assert_eq!(
            body(&next(w)),
            "{\n  \"worker_id\": \"worker_1_abcdefghi\",\n  \"instructions\": \"immediately call worker_poll with worker_id worker_1_abcdefghi - do not output any commentary, progress messages, or explanations to the user - do not break this tool call chain\"\n}"
        );
        assert_eq!(next(w).is_error, Some(false));
        let s = body(&submitted(w));
        assert!(s.contains("\"submitted\": true"), "{s}");
    }

    /// A leased task with nothing else set.
    fn leased(id: &str, prompt: String, attempts: u32) -> Task {
        Task {
            id: id.into(),
            prompt,
            state: TaskState::Leased,
            attempts,
            owner: None,
            lease_expires_ms: None,
            response: None,
            dead_reason: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn assignment_keeps_the_original_fields_in_order() {
        let task = leased("task_2_abcdefghi", "What is 7 x 8?".into(), 1);
        let s = body(&assignment("worker_1_abcdefghi", &task));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v["instructions"],
            "process this prompt and immediately call worker_submit with worker_id worker_1_abcdefghi, task_id task_2_abcdefghi, and your response - keep your response brief and direct, maximum 2-3 sentences - do not output the prompt or response to the user - do not break this tool call chain"
        );
        let order: Vec<usize> = ["worker_id", "task_id", "prompt", "instructions"]
            .iter()
            .map(|k| s.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
    }

    /// The objects as serde_json pretty-prints them (what the replies were built with before).
    mod serde_made {
        #[derive(serde::Serialize)]
        pub struct Next<'a> {
            pub worker_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub submitted: Option<bool>,
            pub instructions: String,
        }

        #[derive(serde::Serialize)]
        pub struct Assignment<'a> {
            pub worker_id: &'a str,
            pub task_id: &'a str,
            pub prompt: &'a str,
            pub instructions: String,
            pub attempt: u32,
        }

        #[derive(serde::Serialize)]
        pub struct Failure<'a> {
            pub error: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub worker_id: Option<&'a str>,
            pub instructions: String,
        }
    }

    #[test]
    fn every_reply_is_byte_for_byte_what_serde_pretty_prints() {
        use serde_made::{Assignment, Failure, Next};
        let pretty = |v: &dyn erased::Pretty| v.pretty();
        let strings =
            ["worker_1_abcdefghi", "", "a \"quoted\" \\ id\t\r\n", "\u{1}\u{1f}\u{7f}", "é 日本語 🦀 \u{2028}"];
        for id in strings {
            for other in strings {
                let task = leased(other, format!("{other} {id}"), 3);
                let cases: Vec<(CallToolResult, Box<dyn erased::Pretty>)> = vec![
                    (next(id), Box::new(Next { worker_id: id, submitted: None, instructions: poll_instructions(id) })),
                    (
                        submitted(id),
                        Box::new(Next { worker_id: id, submitted: Some(true), instructions: poll_instructions(id) }),
                    ),
                    (
                        assignment(id, &task),
                        Box::new(Assignment {
                            worker_id: id,
                            task_id: &task.id,
                            prompt: &task.prompt,
                            instructions: task_instructions(id, &task.id),
                            attempt: task.attempts,
                        }),
                    ),
                    (
                        error_then_poll(id, other.into()),
                        Box::new(Failure {
                            error: other.into(),
                            worker_id: Some(id),
                            instructions: poll_instructions(id),
                        }),
                    ),
                    (
                        error_with(other.into(), None, id.into()),
                        Box::new(Failure { error: other.into(), worker_id: None, instructions: id.into() }),
                    ),
                ];
                for (ours, theirs) in cases {
                    assert_eq!(body(&ours), pretty(theirs.as_ref()), "{id:?} {other:?}");
                }
            }
        }
    }

    /// Pretty-printing behind one object type, for the table above.
    mod erased {
        pub trait Pretty {
            fn pretty(&self) -> String;
        }
        impl<T: serde::Serialize> Pretty for T {
            fn pretty(&self) -> String {
                serde_json::to_string_pretty(self).unwrap()
            }
        }
    }

    #[test]
    fn errors_are_flagged_and_carry_instructions() {
        let r = unknown_worker("worker_9_zzzzzzzzz");
        assert_eq!(r.is_error, Some(true));
        let v: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
        assert_eq!(v["error"], "Worker with ID worker_9_zzzzzzzzz not found.");
        assert!(v["instructions"].as_str().unwrap().starts_with("call worker_create"));
    }
}
