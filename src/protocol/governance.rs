//! The governance fields of the protocol: what an action may ask for (`maxBudgetUsd`,
//! `idleTimeout`, `toolTimeout`, `retries`, `fallbackModels`), the daemon's defaults and ceilings
//! for them, and what a result or an error says about them. Pure: nothing here does I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ErrorKind;

/// The most retries an action may ask for (the schema's maximum too).
pub const MAX_RETRIES: u32 = 10;

/// An action's governance fields, with the daemon's defaults applied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Governance {
    /// The CLI's `--max-budget-usd`.
    pub max_budget_usd: Option<f64>,
    /// The longest silence allowed while the model works.
    pub idle_timeout: Option<Duration>,
    /// The longest one tool call may stay open.
    pub tool_timeout: Option<Duration>,
    /// How many times a retryable failure is run again (0..=10).
    pub retries: u32,
    /// The CLI's `--fallback-model`, in order.
    pub fallback_models: Vec<String>,
}

/// The daemon's defaults and ceilings for the governance fields (flags of `run` and `serve`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GovernanceLimits {
    /// `maxBudgetUsd` when an action names none.
    pub default_budget_usd: Option<f64>,
    /// The largest `maxBudgetUsd` an action may ask for.
    pub max_budget_usd: Option<f64>,
    /// `idleTimeout` when an action names none.
    pub default_idle_timeout: Option<Duration>,
    /// `toolTimeout` when an action names none.
    pub default_tool_timeout: Option<Duration>,
}

impl Governance {
    /// Reads the fields of an action that passed the schema, applies the daemon's defaults, and
    /// checks the ceilings. `Err` holds the problems, each as `/field: why`.
    pub fn from_action(action: &Value, limits: &GovernanceLimits) -> Result<Governance, Vec<String>> {
        let ms = |name: &str| action.get(name).and_then(Value::as_u64).map(Duration::from_millis);
        let governance = Governance {
            max_budget_usd: action.get("maxBudgetUsd").and_then(Value::as_f64).or(limits.default_budget_usd),
            idle_timeout: ms("idleTimeout").or(limits.default_idle_timeout),
            tool_timeout: ms("toolTimeout").or(limits.default_tool_timeout),
            retries: action
                .get("retries")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
                .min(MAX_RETRIES),
            fallback_models: action
                .get("fallbackModels")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        let mut problems = Vec::new();
        if let (Some(asked), Some(ceiling)) = (governance.max_budget_usd, limits.max_budget_usd) {
            if asked > ceiling {
                problems
                    .push(format!("/maxBudgetUsd: {asked} is greater than the largest allowed budget, {ceiling} USD"));
            }
        }
        if problems.is_empty() { Ok(governance) } else { Err(problems) }
    }

    /// Writes the fields back into an action's JSON (what a journal stores), so that reading it
    /// again gives the same values whatever the defaults are then.
    pub fn write_json(&self, action: &mut Value) {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Some(budget) = self.max_budget_usd {
            action["maxBudgetUsd"] = budget.into();
        }
        if let Some(idle) = self.idle_timeout {
            action["idleTimeout"] = millis(idle).into();
        }
        if let Some(tool) = self.tool_timeout {
            action["toolTimeout"] = millis(tool).into();
        }
        if self.retries > 0 {
            action["retries"] = self.retries.into();
        }
        if !self.fallback_models.is_empty() {
            action["fallbackModels"] = self.fallback_models.clone().into();
        }
    }

    /// Whether the no-progress watchdog has anything to watch.
    pub fn watched(&self) -> bool {
        self.idle_timeout.is_some() || self.tool_timeout.is_some()
    }
}

/// What the watchdog was watching when it tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the CLI reported `system/init` (its MCP servers connecting).
    Starting,
    /// The model was working (a request out, or its answer streaming).
    Model,
    /// A tool call was open.
    Tool,
}

/// Kind-specific fields of an `error` object; all absent for most kinds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// `idle_timeout`: what was going on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phase: Option<Phase>,
    /// `idle_timeout` in phase `tool`: the open tool (its full name, `mcp__server__tool`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool: Option<String>,
    /// `idle_timeout`: how long the worker had been silent (or the tool open), ms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub silent_ms: Option<u64>,
    /// `rate_limited`, `budget_exhausted`: how long to wait before trying again, ms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after_ms: Option<u64>,
}

/// Governance fields of a `worker_result`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultGovernance {
    /// How many times the worker ran (present when the action allowed retries).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attempts: Option<u32>,
    /// The kinds of the attempts that failed before the last one, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failed_attempts: Vec<ErrorKind>,
    /// The model that gave the last answer (differs from the asked one after a fallback).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<String>,
}

/// `{"type":"dispatch_paused","reason":"rate_limit","until":EPOCH_MS,"retryAfterMs":N}` and
/// `{"type":"dispatch_resumed","reason":"rate_limit"}`: the account-wide breaker stopped (and
/// later resumed) starting new workers; running ones go on. Information only: an agent that
/// knows nothing of them skips them by their `type` and loses nothing (every action still gets
/// its one `worker_result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchLine {
    #[serde(rename = "type")]
    pub kind: DispatchKind,
    /// `rate_limit` (a 429 or a rejected rate-limit event) or `overloaded` (a 529).
    pub reason: String,
    /// When starts resume, in milliseconds since the Unix epoch (paused only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub until: Option<u64>,
    /// The same as a wait from now, ms (paused only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchKind {
    DispatchPaused,
    DispatchResumed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_and_ceilings_refuse() {
        let limits = GovernanceLimits {
            default_budget_usd: Some(0.5),
            max_budget_usd: Some(1.0),
            default_idle_timeout: Some(Duration::from_secs(30)),
            default_tool_timeout: None,
        };
        let g = Governance::from_action(&json!({}), &limits).unwrap();
        assert_eq!(g.max_budget_usd, Some(0.5));
        assert_eq!(g.idle_timeout, Some(Duration::from_secs(30)));
        assert!(g.watched());
        let g = Governance::from_action(&json!({"maxBudgetUsd": 0.75, "idleTimeout": 5, "retries": 3}), &limits);
        let g = g.unwrap();
        assert_eq!((g.max_budget_usd, g.idle_timeout, g.retries), (Some(0.75), Some(Duration::from_millis(5)), 3));
        let refused = Governance::from_action(&json!({"maxBudgetUsd": 2}), &limits).unwrap_err();
        assert!(refused[0].starts_with("/maxBudgetUsd"), "{refused:?}");
        assert!(!Governance::from_action(&json!({}), &GovernanceLimits::default()).unwrap().watched());
    }

    #[test]
    fn fields_survive_a_round_trip() {
        let g = Governance {
            max_budget_usd: Some(0.25),
            idle_timeout: Some(Duration::from_millis(1500)),
            tool_timeout: Some(Duration::from_secs(90)),
            retries: 2,
            fallback_models: vec!["a".into(), "b".into()],
        };
        let mut value = json!({});
        g.write_json(&mut value);
        assert_eq!(Governance::from_action(&value, &GovernanceLimits::default()).unwrap(), g);
    }

    #[test]
    fn details_serialise_only_when_present() {
        assert_eq!(serde_json::to_value(ErrorDetail::default()).unwrap(), json!({}));
        let d =
            ErrorDetail { phase: Some(Phase::Tool), tool: Some("t".into()), silent_ms: Some(5), retry_after_ms: None };
        assert_eq!(serde_json::to_value(d).unwrap(), json!({"phase": "tool", "tool": "t", "silentMs": 5}));
        let r = ResultGovernance { attempts: Some(3), failed_attempts: vec![ErrorKind::RateLimited], model: None };
        assert_eq!(serde_json::to_value(r).unwrap(), json!({"attempts": 3, "failedAttempts": ["rate_limited"]}));
    }
}
