//! The JSON Schema for `spawn_worker` actions, kept as a file in the repository and compiled once.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

/// The schema text, as shipped in `schema/spawn_worker.schema.json` and printed by `mcp-workers schema`.
pub const SCHEMA_TEXT: &str = include_str!("../../schema/spawn_worker.schema.json");

/// At most this many problems are named in one error message.
const MAX_PROBLEMS: usize = 16;
/// Each problem's text is cut to this many characters (a reason can quote a huge value).
const MAX_PROBLEM_CHARS: usize = 200;

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA_TEXT).expect("the embedded schema is valid JSON");
    jsonschema::validator_for(&schema).expect("the embedded schema is a valid JSON Schema")
});

/// Compiles the schema now, so the first action does not pay for it.
pub fn warm_up() {
    LazyLock::force(&VALIDATOR);
}

/// Checks one action against the schema. On failure, returns every problem as `path: reason`.
pub fn validate(action: &Value) -> Result<(), Vec<String>> {
    let problems = problems(&VALIDATOR, action, MAX_PROBLEMS);
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// At most `max` problems of `value` under `validator`, each as `path: reason`, bounded.
pub fn problems(validator: &Validator, value: &Value, max: usize) -> Vec<String> {
    validator
        .iter_errors(value)
        .take(max)
        .map(|err| {
            let path = err.instance_path().to_string();
            let path = if path.is_empty() { "/".to_owned() } else { path };
            truncate_chars(&format!("{path}: {err}"), MAX_PROBLEM_CHARS)
        })
        .collect()
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_compiles() {
        warm_up();
    }

    fn check(action: Value, expected: &[&str]) {
        match validate(&action) {
            Ok(()) => assert!(expected.is_empty(), "{action} passed, expected {expected:?}"),
            Err(problems) => {
                assert!(!expected.is_empty(), "{action} failed: {problems:?}");
                for want in expected {
                    assert!(problems.iter().any(|p| p.contains(want)), "{action}: {want:?} not in {problems:?}");
                }
            }
        }
    }

    #[test]
    fn cases() {
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"]}), &[]);
        check(
            json!({"type":"spawn_worker","task":"t","servers":["fs"],"timeout":1000,"taskId":"a-1","profile":"p","maxTurns":3,"model":"claude-x"}),
            &[],
        );
        check(json!({"type":"spawn_worker","servers":["fs"]}), &["/: ", "task"]);
        check(json!({"type":"spawn_worker","task":"","servers":["fs"]}), &["/task"]);
        check(json!({"type":"spawn_worker","task":"   ","servers":["fs"]}), &["/task"]);
        check(json!({"type":"spawn_worker","task":"t","servers":[]}), &["/servers"]);
        check(json!({"type":"spawn_worker","task":"t","servers":"fs"}), &["/servers"]);
        check(json!({"type":"spawn_worker","task":"t","servers":[1]}), &["/servers/0"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs","fs"]}), &["/servers"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["../x"]}), &["/servers/0"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"timeout":"60s"}), &["/timeout"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"timeout":0}), &["/timeout"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"timeout":1.5}), &["/timeout"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"profile":"../etc/passwd"}), &["/profile"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"taskId":""}), &["/taskId"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"timout":5}), &["timout"]);
        check(json!({"type":"spawn_worker","task":7,"servers":null}), &["/task", "/servers"]);
        check(json!(["not", "an", "object"]), &["/: "]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"outputSchema":{"type":"object"}}), &[]);
        check(
            json!({"type":"spawn_worker","task":"t","servers":["fs"],"outputSchema":{"type":"string"}}),
            &["/outputSchema"],
        );
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"outputSchema":{}}), &["/outputSchema"]);
        check(json!({"type":"spawn_worker","task":"t","servers":["fs"],"outputSchema":true}), &["/outputSchema"]);
    }

    #[test]
    fn huge_values_are_not_echoed_whole() {
        let task = "x".repeat(2 << 20);
        let problems = validate(&json!({"type":"spawn_worker","task":task,"servers":["fs"]})).unwrap_err();
        assert!(problems.iter().all(|p| p.chars().count() <= MAX_PROBLEM_CHARS + 1), "{problems:?}");
    }
}
