//! The structured result of a worker asked for `outputSchema`: the CLI's `structured_output`,
//! re-validated by the daemon. Pure: the schema, the `result` event and the verdict in; the
//! verdict and the output out.
//!
//! The CLI ends a run `success` without `structured_output` when the model never called its
//! `StructuredOutput` tool (`structured_output_missing`, retryable: another run may call it), and
//! with `error_max_structured_output_retries` when every call was invalid
//! (`structured_output_invalid`, not retryable; so is an output our own validation refuses).

use serde_json::Value;

use crate::protocol::agent::validate_output;
use crate::protocol::{ErrorKind, WorkerError};

use super::outcome::Verdict;
use super::stream::ResultEvent;

/// The CLI's subtype when the model's structured outputs kept failing its validation.
const GAVE_UP: &str = "error_max_structured_output_retries";

/// `verdict` as it stands once the structured output is weighed, and the output to report.
pub fn weigh(schema: &Value, result: Option<&ResultEvent>, verdict: Verdict) -> (Verdict, Option<Value>) {
    let Some(result) = result else { return (verdict, None) };
    if result.subtype == GAVE_UP {
        let detail = result.errors.first().map_or_else(String::new, |e| format!(": {e}"));
        let message = format!("the worker's structured output never matched outputSchema{detail}");
        return (fail(ErrorKind::StructuredOutputInvalid, message, false), None);
    }
    if !verdict.success {
        return (verdict, None);
    }
    match &result.structured_output {
        None => {
            let message = "the worker finished without giving the structured output that outputSchema asks for";
            (fail(ErrorKind::StructuredOutputMissing, message.to_owned(), true), None)
        }
        Some(output) => match validate_output(schema, output) {
            Ok(()) => (verdict, Some(output.clone())),
            Err(problems) => {
                let message = format!("the worker's structured output does not match outputSchema: {problems}");
                (fail(ErrorKind::StructuredOutputInvalid, message, false), None)
            }
        },
    }
}

fn fail(kind: ErrorKind, message: String, retryable: bool) -> Verdict {
    Verdict { success: false, result: message.clone(), error: Some(WorkerError::new(kind, message, retryable)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]})
    }

    fn ok() -> Verdict {
        Verdict { success: true, result: "done".into(), error: None }
    }

    fn result(subtype: &str, output: Option<Value>) -> ResultEvent {
        ResultEvent { subtype: subtype.into(), structured_output: output, ..ResultEvent::default() }
    }

    fn kind(v: &Verdict) -> Option<(ErrorKind, bool)> {
        v.error.as_ref().map(|e| (e.kind, e.retryable))
    }

    #[test]
    fn cases() {
        let person = json!({"name":"Ada","age":36});
        let (v, out) = weigh(&schema(), Some(&result("success", Some(person.clone()))), ok());
        assert!(v.success && out == Some(person), "{v:?}");
        let (v, out) = weigh(&schema(), Some(&result("success", None)), ok());
        assert_eq!((kind(&v), out), (Some((ErrorKind::StructuredOutputMissing, true)), None));
        let (v, _) = weigh(&schema(), Some(&result("success", Some(json!({"name":"Ada","age":"x"})))), ok());
        assert_eq!(kind(&v), Some((ErrorKind::StructuredOutputInvalid, false)));
        assert!(v.result.contains("/age"), "{}", v.result);
        let failed = Verdict { success: false, result: "x".into(), error: None };
        let mut gave_up = result(GAVE_UP, None);
        gave_up.errors = vec!["Failed to provide valid structured output after 5 attempts".into()];
        let (v, _) = weigh(&schema(), Some(&gave_up), failed.clone());
        assert_eq!(kind(&v), Some((ErrorKind::StructuredOutputInvalid, false)));
        assert!(v.result.contains("after 5 attempts"), "{}", v.result);
        // Another failure stays what it was.
        let (v, _) = weigh(&schema(), Some(&result("error_max_turns", None)), failed.clone());
        assert_eq!(v, failed);
        assert_eq!(weigh(&schema(), None, failed.clone()).0, failed);
    }
}
