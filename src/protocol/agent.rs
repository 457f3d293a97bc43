//! The action fields an orchestrating agent uses beyond the basics (issue 11): `outputSchema`
//! (a structured result). Read from an action that already passed the schema; checked here for
//! what the schema cannot say. Pure.

use std::sync::Arc;

use serde_json::Value;

/// The longest `outputSchema`, serialised: it goes to the CLI in argv (one argv string is capped
/// at 128 KiB on Linux).
pub const MAX_OUTPUT_SCHEMA_BYTES: usize = 64 * 1024;

/// The agent-facing options of one action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentOptions {
    /// `outputSchema`: a valid JSON Schema with an object root.
    pub output_schema: Option<Arc<Value>>,
}

impl AgentOptions {
    /// Reads and checks the options of a schema-valid action; problems as `/path: reason`.
    pub fn from_action(action: &Value) -> Result<AgentOptions, Vec<String>> {
        let mut problems = Vec::new();
        let output_schema = action.get("outputSchema").and_then(|schema| match check_output_schema(schema) {
            Ok(()) => Some(Arc::new(schema.clone())),
            Err(problem) => {
                problems.push(format!("/outputSchema: {problem}"));
                None
            }
        });
        if problems.is_empty() { Ok(AgentOptions { output_schema }) } else { Err(problems) }
    }

    /// Adds the options to an action's JSON (what the journal keeps; read back by `from_action`).
    pub fn write_json(&self, action: &mut Value) {
        if let Some(schema) = &self.output_schema {
            action["outputSchema"] = (**schema).clone();
        }
    }
}

fn check_output_schema(schema: &Value) -> Result<(), String> {
    let size = serde_json::to_string(schema).map_or(usize::MAX, |text| text.len());
    if size > MAX_OUTPUT_SCHEMA_BYTES {
        return Err(format!("longer than {MAX_OUTPUT_SCHEMA_BYTES} bytes"));
    }
    jsonschema::validator_for(schema)
        .map(drop)
        .map_err(|err| super::schema::truncate_chars(&format!("not a valid JSON Schema: {err}"), 200))
}

/// Checks a structured output against its schema: `Err` names the first problems.
pub fn validate_output(schema: &Value, output: &Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema).map_err(|err| format!("the schema does not compile: {err}"))?;
    let problems: Vec<String> = validator
        .iter_errors(output)
        .take(8)
        .map(|err| {
            let path = err.instance_path().to_string();
            let path = if path.is_empty() { "/".to_owned() } else { path };
            super::schema::truncate_chars(&format!("{path}: {err}"), 200)
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn person() -> Value {
        json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]})
    }

    #[test]
    fn output_schema_is_checked_at_admission() {
        let ok = AgentOptions::from_action(&json!({"outputSchema": person()})).unwrap();
        assert_eq!(ok.output_schema.as_deref(), Some(&person()));
        assert_eq!(AgentOptions::from_action(&json!({})).unwrap(), AgentOptions::default());
        let broken = AgentOptions::from_action(&json!({"outputSchema": {"type":"object","minProperties":"x"}}));
        assert!(broken.unwrap_err()[0].starts_with("/outputSchema: not a valid JSON Schema"));
        let huge = json!({"type":"object","description":"x".repeat(MAX_OUTPUT_SCHEMA_BYTES)});
        assert!(AgentOptions::from_action(&json!({"outputSchema": huge})).unwrap_err()[0].contains("longer"));
    }

    #[test]
    fn outputs_are_validated() {
        assert_eq!(validate_output(&person(), &json!({"name":"Ada","age":36})), Ok(()));
        let err = validate_output(&person(), &json!({"name":"Ada","age":"36"})).unwrap_err();
        assert!(err.contains("/age"), "{err}");
    }
}
