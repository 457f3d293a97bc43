//! The action fields an orchestrating agent uses beyond the basics (issue 11): `outputSchema`
//! (a structured result) and `tools` (exact allow and deny lists). Read from an action that
//! already passed the schema; checked here for what the schema cannot say. Pure.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest `outputSchema`, serialised: it goes to the CLI in argv (one argv string is capped
/// at 128 KiB on Linux).
pub const MAX_OUTPUT_SCHEMA_BYTES: usize = 64 * 1024;

/// The agent-facing options of one action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentOptions {
    /// `outputSchema`: a valid JSON Schema with an object root.
    pub output_schema: Option<Arc<Value>>,
    /// `tools`: entries `SERVER.TOOL` (TOOL may hold `*`), each naming a requested server.
    pub tools: Option<ToolRules>,
    /// `progress`: this action's worker reports `worker_progress` lines.
    pub progress: bool,
    /// `continue`: the task whose session this action resumes.
    pub continue_from: Option<String>,
    /// `fork`: resume into a new session, leaving the first one as it was.
    pub fork: bool,
}

/// `{"allow": [...], "deny": [...]}`: the action's `tools`, or a profile's default
/// (`profiles/NAME.tools.json`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRules {
    /// Narrows each server it names to these tools (a server it does not name keeps all its tools).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tools removed from what the model is offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl ToolRules {
    /// Problems with the entries, for these requested servers (`/tools/allow/0: ...`).
    pub fn problems(&self, servers: &[String]) -> Vec<String> {
        let mut problems = Vec::new();
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, entry) in entries.iter().enumerate() {
                match split_entry(entry) {
                    None => problems.push(format!("/tools/{list}/{i}: {entry:?} is not SERVER.TOOL")),
                    Some((server, _)) if !servers.iter().any(|s| s == server) => problems.push(format!(
                        "/tools/{list}/{i}: {entry:?} names the server {server:?}, which the action does not request"
                    )),
                    Some(_) => {}
                }
            }
        }
        problems
    }

    /// The rules for these servers only (a profile's default may name others).
    pub fn for_servers(&self, servers: &[String]) -> ToolRules {
        let keep = |entries: &[String]| -> Vec<String> {
            entries
                .iter()
                .filter(|e| split_entry(e).is_some_and(|(server, _)| servers.iter().any(|s| s == server)))
                .cloned()
                .collect()
        };
        ToolRules { allow: keep(&self.allow), deny: keep(&self.deny) }
    }
}

/// `SERVER.TOOL` → (SERVER, TOOL): the tool is after the last dot (server names may hold dots,
/// tool names and their globs may not), made of `[A-Za-z0-9_*-]`.
pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
    let (server, tool) = entry.rsplit_once('.')?;
    let tool_ok = !tool.is_empty() && tool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*'));
    (tool_ok && !server.is_empty()).then_some((server, tool))
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
        let tools = match action.get("tools").map(|t| serde_json::from_value::<ToolRules>(t.clone())) {
            None => None,
            Some(Ok(rules)) => {
                problems.extend(rules.problems(&servers_of(action)));
                Some(rules)
            }
            Some(Err(err)) => {
                problems.push(format!("/tools: {err}"));
                None
            }
        };
        let progress = action.get("progress").and_then(Value::as_bool).unwrap_or(false);
        let continue_from = action.get("continue").and_then(Value::as_str).map(str::to_owned);
        let fork = action.get("fork").and_then(Value::as_bool).unwrap_or(false);
        if fork && continue_from.is_none() {
            problems.push("/fork: `fork` needs `continue` (the task whose session to branch)".to_owned());
        }
        if problems.is_empty() {
            Ok(AgentOptions { output_schema, tools, progress, continue_from, fork })
        } else {
            Err(problems)
        }
    }

    /// Adds the options to an action's JSON (what the journal keeps; read back by `from_action`).
    pub fn write_json(&self, action: &mut Value) {
        if let Some(schema) = &self.output_schema {
            action["outputSchema"] = (**schema).clone();
        }
        if let Some(tools) = &self.tools {
            action["tools"] = serde_json::to_value(tools).unwrap_or_default();
        }
        if self.progress {
            action["progress"] = true.into();
        }
        if let Some(task_id) = &self.continue_from {
            action["continue"] = task_id.clone().into();
        }
        if self.fork {
            action["fork"] = true.into();
        }
    }
}

fn servers_of(action: &Value) -> Vec<String> {
    let names = action.get("servers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    names.iter().filter_map(Value::as_str).map(str::to_owned).collect()
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
    let problems = super::schema::problems(&validator, output, 8);
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
    fn tools_name_requested_servers() {
        let action = |tools: Value| json!({"servers": ["filesystem", "my.fs"], "tools": tools});
        let ok = AgentOptions::from_action(&action(
            json!({"allow": ["filesystem.read_*", "my.fs.list"], "deny": ["filesystem.write_file"]}),
        ))
        .unwrap();
        let rules = ok.tools.unwrap();
        assert_eq!(rules.allow, ["filesystem.read_*", "my.fs.list"]);
        let err = AgentOptions::from_action(&action(
            json!({"allow": ["telegram.tg_send", "filesystem"], "deny": ["filesystem.a.b/c"]}),
        ))
        .unwrap_err();
        assert!(err[0].starts_with("/tools/allow/0:") && err[0].contains("does not request"), "{err:?}");
        assert!(err[1].starts_with("/tools/allow/1:") && err[1].contains("SERVER.TOOL"), "{err:?}");
        assert!(err[2].starts_with("/tools/deny/0:"), "{err:?}");
        assert_eq!(split_entry("my.fs.read_*"), Some(("my.fs", "read_*")));
        assert_eq!(split_entry(".x"), None);
        let profile = ToolRules { allow: vec!["a.x".into(), "b.y".into()], deny: vec!["b.z".into()] };
        assert_eq!(profile.for_servers(&["a".into()]), ToolRules { allow: vec!["a.x".into()], deny: vec![] });
    }

    #[test]
    fn outputs_are_validated() {
        assert_eq!(validate_output(&person(), &json!({"name":"Ada","age":36})), Ok(()));
        let err = validate_output(&person(), &json!({"name":"Ada","age":"36"})).unwrap_err();
        assert!(err.contains("/age"), "{err}");
    }
}
