//! One input document to a list of items: validated actions, refusals and acknowledgements.

use std::time::Duration;

use serde_json::Value;

use super::{
    AckTag, ActionAck, DEFAULT_TIMEOUT, ErrorKind, LineError, LineErrorKind, Origin, SpawnAction, WorkerError,
    WorkerResult, schema,
};

/// Every message for a malformed action starts with this (the seed's troubleshooting text).
pub const INVALID_PREFIX: &str = "Invalid spawn_worker action";

/// What one action of a document turned into. (Not boxed: items live only from parsing to
/// admission, and nearly all of them are `Spawn`.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A valid `spawn_worker` action (servers not yet checked against the registry).
    Spawn(SpawnAction),
    /// A `spawn_worker` action (or an unreadable one) that is refused: its one `worker_result`.
    Refused(Box<WorkerResult>),
    /// An action of another type, acknowledged and left alone.
    Ack(ActionAck),
}

/// Limits that come from the daemon's settings rather than the schema.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_timeout: Duration,
    /// Defaults and ceilings of the governance fields (budget, watchdog).
    pub governance: super::governance::GovernanceLimits,
}

/// Parses one line of text. `line` is its 1-based number, when it has one.
pub fn parse_line(text: &str, line: Option<u64>, limits: Limits) -> Result<Vec<Item>, LineError> {
    let document: Value = serde_json::from_str(text)
        .map_err(|err| LineError::new(LineErrorKind::InvalidJson, format!("input is not valid JSON: {err}"), line))?;
    parse_document(document, line, limits)
}

/// Parses one JSON document `{"actions":[...]}`.
pub fn parse_document(document: Value, line: Option<u64>, limits: Limits) -> Result<Vec<Item>, LineError> {
    let Value::Object(mut envelope) = document else {
        return Err(LineError::new(
            LineErrorKind::InvalidEnvelope,
            "input must be a JSON object with an `actions` array",
            line,
        ));
    };
    let actions = match envelope.remove("actions") {
        Some(Value::Array(actions)) => actions,
        Some(_) => {
            return Err(LineError::new(LineErrorKind::InvalidEnvelope, "`actions` must be an array", line));
        }
        None => {
            return Err(LineError::new(LineErrorKind::InvalidEnvelope, "input has no `actions` array", line));
        }
    };
    Ok(actions
        .into_iter()
        .enumerate()
        .map(|(index, action)| parse_action(action, Origin { line, index }, limits))
        .collect())
}

/// Classifies and validates one element of `actions`.
pub fn parse_action(action: Value, origin: Origin, limits: Limits) -> Item {
    match action.get("type").and_then(Value::as_str) {
        Some(other) if other != "spawn_worker" => {
            return Item::Ack(ActionAck { kind: AckTag::ActionAck, action_type: other.to_owned(), origin });
        }
        _ => {}
    }
    let (action, nested) = match unnest(action) {
        Ok(unnested) => unnested,
        Err((action, problems)) => {
            let task_id = echoable_task_id(&action).unwrap_or_else(new_task_id);
            return refused(task_id, origin, problems);
        }
    };
    let task_id = echoable_task_id(&action).unwrap_or_else(new_task_id);
    let refuse = |problems: Vec<String>| {
        let problems = problems.into_iter().map(|p| nested_path(p, &nested)).collect();
        refused(task_id.clone(), origin, problems)
    };
    if let Err(problems) = schema::validate(&action) {
        return refuse(problems);
    }
    let timeout = match action.get("timeout").and_then(Value::as_u64) {
        None => DEFAULT_TIMEOUT,
        Some(ms) => Duration::from_millis(ms),
    };
    if timeout > limits.max_timeout {
        return refuse(vec![format!(
            "/timeout: {} is greater than the largest allowed timeout, {} ms",
            timeout.as_millis(),
            limits.max_timeout.as_millis()
        )]);
    }
    let agent = match super::agent::AgentOptions::from_action(&action) {
        Ok(agent) => Box::new(agent),
        Err(problems) => return refuse(problems),
    };
    let governance = match super::governance::Governance::from_action(&action, &limits.governance) {
        Ok(governance) => governance,
        Err(problems) => return refuse(problems),
    };
    let str_field = |name: &str| action.get(name).and_then(Value::as_str).map(str::to_owned);
    Item::Spawn(SpawnAction {
        task_id: task_id.clone(),
        task: str_field("task").unwrap_or_default(),
        servers: action
            .get("servers")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        timeout,
        profile: str_field("profile"),
        max_turns: action.get("maxTurns").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
        model: str_field("model"),
        agent,
        governance,
        origin,
    })
}

/// An `invalid_action` refusal naming every problem.
fn refused(task_id: String, origin: Origin, problems: Vec<String>) -> Item {
    let message = format!("{INVALID_PREFIX}: {}", problems.join("; "));
    Item::Refused(Box::new(WorkerResult::failure(
        task_id,
        origin,
        WorkerError::new(ErrorKind::InvalidAction, message, false),
    )))
}

/// The `{"type":"spawn_worker","data":{...}}` shape agents also write, made flat: the fields
/// under `data` join the top-level ones (a field in both places is a problem). Returns the flat
/// action and the names that came from `data` (so problems can name `/data/NAME`).
fn unnest(action: Value) -> Result<(Value, Vec<String>), (Value, Vec<String>)> {
    let Value::Object(mut fields) = action else { return Ok((action, Vec::new())) };
    let Some(data) = fields.remove("data") else { return Ok((Value::Object(fields), Vec::new())) };
    let Value::Object(data) = data else {
        return Err((Value::Object(fields), vec!["/data: must be an object holding the action's fields".to_owned()]));
    };
    let mut nested = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in data {
        if fields.contains_key(&name) {
            problems.push(format!("/data/{name}: `{name}` is given both at the top level and under `data`"));
        } else {
            nested.push(name.clone());
            fields.insert(name, value);
        }
    }
    if problems.is_empty() { Ok((Value::Object(fields), nested)) } else { Err((Value::Object(fields), problems)) }
}

/// `/NAME...: reason` → `/data/NAME...: reason` when NAME came from `data`.
fn nested_path(problem: String, nested: &[String]) -> String {
    let Some(rest) = problem.strip_prefix('/') else { return problem };
    let name = rest.split(['/', ':']).next().unwrap_or_default();
    if !name.is_empty() && nested.iter().any(|n| n == name) { format!("/data/{rest}") } else { problem }
}

/// A caller's `taskId` is echoed, even on a refused action, when it is a sane identifier.
fn echoable_task_id(action: &Value) -> Option<String> {
    let id = action.get("taskId")?.as_str()?;
    is_task_id(id).then(|| id.to_owned())
}

/// `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`, as in the schema.
pub fn is_task_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// A fresh, time-ordered task id.
pub fn new_task_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_timeout: Duration::from_secs(600),
        governance: crate::protocol::governance::GovernanceLimits {
            default_budget_usd: None,
            max_budget_usd: None,
            default_idle_timeout: None,
            default_tool_timeout: None,
        },
    };

    fn items(text: &str) -> Result<Vec<Item>, LineError> {
        parse_line(text, Some(1), LIMITS)
    }

    fn line_error(text: &str, kind: LineErrorKind) {
        match items(text) {
            Err(err) => assert_eq!(err.error.kind, kind, "{text}: {err:?}"),
            Ok(items) => panic!("{text}: expected {kind:?}, got {items:?}"),
        }
    }

    #[test]
    fn line_errors() {
        line_error("", LineErrorKind::InvalidJson);
        line_error("not json", LineErrorKind::InvalidJson);
        line_error("{\"actions\":[", LineErrorKind::InvalidJson);
        line_error(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), LineErrorKind::InvalidJson);
        line_error("[]", LineErrorKind::InvalidEnvelope);
        line_error("42", LineErrorKind::InvalidEnvelope);
        line_error("{}", LineErrorKind::InvalidEnvelope);
        line_error("{\"actions\":{}}", LineErrorKind::InvalidEnvelope);
    }

    #[test]
    fn valid_action_gets_defaults() {
        let got = items(r#"{"actions":[{"type":"spawn_worker","task":"hi","servers":["fs"]}]}"#).unwrap();
        let [Item::Spawn(action)] = got.as_slice() else { panic!("{got:?}") };
        assert_eq!(action.timeout, DEFAULT_TIMEOUT);
        assert_eq!(action.servers, ["fs"]);
        assert_eq!(action.origin, Origin { line: Some(1), index: 0 });
        assert!(uuid::Uuid::parse_str(&action.task_id).is_ok());
    }

    #[test]
    fn caller_task_id_is_echoed_even_when_refused() {
        let got = items(r#"{"actions":[{"type":"spawn_worker","taskId":"job-7","servers":["fs"]}]}"#).unwrap();
        let [Item::Refused(result)] = got.as_slice() else { panic!("{got:?}") };
        assert_eq!(result.task_id, "job-7");
        let error = result.error.as_ref().unwrap();
        assert_eq!(error.kind, ErrorKind::InvalidAction);
        assert!(error.message.starts_with(INVALID_PREFIX), "{}", error.message);
        assert!(error.message.contains("task"), "{}", error.message);
    }

    #[test]
    fn other_types_are_acknowledged_and_non_objects_refused() {
        let got = items(r#"{"actions":[{"type":"send_message","x":1},7,{"task":"t"}]}"#).unwrap();
        assert!(matches!(&got[0], Item::Ack(ack) if ack.action_type == "send_message" && ack.origin.index == 0));
        assert!(matches!(&got[1], Item::Refused(r) if r.origin.index == 1));
        assert!(matches!(&got[2], Item::Refused(r) if r.origin.index == 2));
    }

    #[test]
    fn timeout_above_the_configured_maximum_is_refused() {
        let action = json!({"type":"spawn_worker","task":"t","servers":["fs"],"timeout":600_001});
        let Item::Refused(result) = parse_action(action, Origin::default(), LIMITS) else { panic!() };
        assert!(result.result.contains("/timeout"), "{}", result.result);
    }

    #[test]
    fn an_action_survives_a_round_trip_through_json() {
        let text = r#"{"type":"spawn_worker","taskId":"j","task":"t","servers":["a","b"],"timeout":5000,"profile":"p","maxTurns":3,"model":"m","maxBudgetUsd":0.5,"idleTimeout":100,"toolTimeout":200,"retries":2,"fallbackModels":["x"],"outputSchema":{"type":"object","properties":{"n":{"type":"string"}}},"tools":{"allow":["a.x"]},"progress":true,"continue":"j0","fork":true}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let Item::Spawn(action) = parse_action(value, Origin::default(), LIMITS) else { panic!() };
        let Item::Spawn(again) = parse_action(action.to_json(), action.origin, LIMITS) else { panic!() };
        assert_eq!(again, action);
    }

    #[test]
    fn data_nested_actions_equal_the_flat_form() {
        let flat = json!({"type":"spawn_worker","taskId":"n-1","task":"t","servers":["fs"],"timeout":5000});
        let nested = json!({"type":"spawn_worker","data":{"taskId":"n-1","task":"t","servers":["fs"],"timeout":5000}});
        let mixed = json!({"type":"spawn_worker","taskId":"n-1","data":{"task":"t","servers":["fs"],"timeout":5000}});
        let want = parse_action(flat, Origin::default(), LIMITS);
        assert!(matches!(want, Item::Spawn(_)), "{want:?}");
        assert_eq!(parse_action(nested, Origin::default(), LIMITS), want);
        assert_eq!(parse_action(mixed, Origin::default(), LIMITS), want);
    }

    fn refusal(action: Value) -> (String, String) {
        let Item::Refused(result) = parse_action(action.clone(), Origin::default(), LIMITS) else {
            panic!("{action} was not refused")
        };
        (result.task_id.clone(), result.result.clone())
    }

    #[test]
    fn data_nested_problems_name_their_place() {
        let (id, message) =
            refusal(json!({"type":"spawn_worker","task":"t","data":{"taskId":"n-2","task":"u","servers":["fs"]}}));
        assert_eq!(id, "n-2");
        assert!(message.starts_with(INVALID_PREFIX) && message.contains("/data/task"), "{message}");
        let (_, message) = refusal(json!({"type":"spawn_worker","data":{"task":"t","servers":"fs"}}));
        assert!(message.contains("/data/servers"), "{message}");
        let (_, message) = refusal(json!({"type":"spawn_worker","data":"task"}));
        assert!(message.contains("/data"), "{message}");
        let (_, message) = refusal(json!({"type":"spawn_worker","data":{"task":"t"}}));
        assert!(message.contains("servers"), "{message}");
        // Another consumer's action keeps its `data` untouched.
        let ack = parse_action(json!({"type":"send_message","data":{"x":1}}), Origin::default(), LIMITS);
        assert!(matches!(ack, Item::Ack(a) if a.action_type == "send_message"));
    }

    #[test]
    fn task_ids() {
        assert!(is_task_id("0193a-b.c:d_e"));
        assert!(!is_task_id(""));
        assert!(!is_task_id("-x"));
        assert!(!is_task_id("a/b"));
        assert!(!is_task_id(&"a".repeat(129)));
    }
}
