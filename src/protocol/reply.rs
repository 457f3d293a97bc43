//! The JSON document inside an agent's raw reply text (`run --input text`, `POST
//! /v1/actions?input=text`), taken the way agent frameworks take it: the first fenced `json` block
//! (a fence without a language counts when its content is an object), else the outermost object
//! in the text that is valid JSON. Pure.

use serde_json::Value;

use super::documents::{MAX_DEPTH, Piece, Splitter};
use super::{LineError, LineErrorKind};

/// The excerpt of a reply quoted when it holds no JSON, in characters.
pub const EXCERPT_CHARS: usize = 80;
/// Candidate objects tried before giving up (bounds the work on adversarial text).
const MAX_CANDIDATES: usize = 64;

/// The document found in `text` and the 1-based line of `text` it starts on.
pub fn extract(text: &str) -> Result<(Value, u64), LineError> {
    if let Some(found) = fenced(text) {
        return found;
    }
    outermost_object(text).ok_or_else(|| {
        LineError::new(
            LineErrorKind::InvalidJson,
            format!("the reply holds no JSON object (no ```json block, no {{...}}): \"{}\"", excerpt(text)),
            None,
        )
    })
}

/// The first fenced block labelled `json` (or unlabelled, holding an object): its parse.
fn fenced(text: &str) -> Option<Result<(Value, u64), LineError>> {
    // An open fence: where its content starts, its label, its lines.
    let mut open: Option<(u64, String, Vec<&str>)> = None;
    for (number, line) in (1u64..).zip(text.lines()) {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(label) = trimmed.strip_prefix("```") {
                    open = Some((number + 1, label.trim().to_ascii_lowercase(), Vec::new()));
                }
            }
            Some((start, label, body)) => {
                if trimmed.starts_with("```") {
                    let content = body.join("\n");
                    let labelled = label == "json";
                    if labelled || (label.is_empty() && content.trim_start().starts_with('{')) {
                        let parsed = serde_json::from_str::<Value>(&content).map(|v| (v, *start)).map_err(|err| {
                            LineError::new(
                                LineErrorKind::InvalidJson,
                                format!("the ```json block is not valid JSON: {err}: \"{}\"", excerpt(&content)),
                                Some(*start),
                            )
                        });
                        return Some(parsed);
                    }
                    open = None;
                } else {
                    body.push(line);
                }
            }
        }
    }
    None
}

/// The first balanced `{...}` in the text that parses as a JSON object.
fn outermost_object(text: &str) -> Option<(Value, u64)> {
    let bytes = text.as_bytes();
    let mut from = 0;
    for _ in 0..MAX_CANDIDATES {
        let at = from + bytes[from..].iter().position(|b| *b == b'{')?;
        let line_before = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count() as u64;
        let mut splitter = Splitter::new(bytes.len(), MAX_DEPTH);
        let mut pieces = Vec::new();
        splitter.feed(&bytes[at..], &mut pieces);
        splitter.finish(&mut pieces);
        if let Some(Piece::Document { text, .. }) = pieces.first()
            && let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(text)
        {
            return Some((value, line_before));
        }
        from = at + 1;
    }
    None
}

/// A short, one-line excerpt of `text`.
pub fn excerpt(text: &str) -> String {
    let flat: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    super::schema::truncate_chars(&flat, EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(text: &str) -> (Value, u64) {
        extract(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    #[test]
    fn a_fenced_json_block_wins() {
        let reply = "I will delegate this.\n\n```json\n{\n  \"actions\": [{\"type\": \"x\"}]\n}\n```\n\nExample: {\"not\": \"this\"}";
        assert_eq!(found(reply), (json!({"actions": [{"type": "x"}]}), 4));
        let unlabelled = "Sure:\n```\n{\"actions\": []}\n```";
        assert_eq!(found(unlabelled), (json!({"actions": []}), 3));
        let shell_first = "```sh\necho {\"no\": 1}\n```\n```JSON\n{\"actions\": []}\n```";
        assert_eq!(found(shell_first), (json!({"actions": []}), 5));
    }

    #[test]
    fn else_the_outermost_object() {
        assert_eq!(
            found("Here you go: {\"actions\": [{\"a\": {\"b\": 1}}]} Done."),
            (json!({"actions":[{"a":{"b":1}}]}), 1)
        );
        // Braces in prose before the object are skipped.
        assert_eq!(found("Use {braces} wisely.\nThen:\n{\"actions\": []}"), (json!({"actions": []}), 3));
    }

    #[test]
    fn no_json_is_invalid_json_with_an_excerpt() {
        let err = extract("I could not decide what to do.").unwrap_err();
        assert_eq!(err.error.kind, LineErrorKind::InvalidJson);
        assert!(err.error.message.contains("I could not decide"), "{}", err.error.message);
        let long = "word ".repeat(1000);
        let err = extract(&long).unwrap_err();
        assert!(err.error.message.chars().count() < 200, "{}", err.error.message);
        let err = extract("```json\n{\"actions\": [\n```").unwrap_err();
        assert!(err.error.message.contains("```json block"), "{}", err.error.message);
        assert_eq!(err.line, Some(2));
    }
}
