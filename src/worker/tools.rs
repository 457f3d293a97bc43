//! An action's `tools` rules as the CLI's `--allowedTools` and `--disallowedTools` patterns.
//! Pure.
//!
//! `allow` narrows each server it names to those tools; a requested server it does not name keeps
//! `mcp__<server>__*`. Tools not allowed are still offered and, under `dontAsk`, denied when called
//! (they show in `deniedTools`); `deny` removes tools from what the model is offered.

use crate::protocol::agent::{ToolRules, split_entry};
use crate::registry::tool_prefix;

/// (`--allowedTools`, `--disallowedTools`) for the requested servers.
pub fn patterns(rules: Option<&ToolRules>, servers: &[String]) -> (Vec<String>, Vec<String>) {
    let empty = ToolRules::default();
    let rules = rules.unwrap_or(&empty);
    let mut allowed = Vec::new();
    for server in servers {
        let named: Vec<String> = rules
            .allow
            .iter()
            .filter_map(|e| split_entry(e))
            .filter(|(s, _)| s == server)
            .map(|(_, tool)| format!("{}{tool}", tool_prefix(server)))
            .collect();
        if named.is_empty() {
            allowed.push(format!("{}*", tool_prefix(server)));
        } else {
            allowed.extend(named);
        }
    }
    let denied = rules
        .deny
        .iter()
        .filter_map(|e| split_entry(e))
        .filter(|(s, _)| servers.iter().any(|name| name == s))
        .map(|(server, tool)| format!("{}{tool}", tool_prefix(server)))
        .collect();
    (allowed, denied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<String> {
        vec!["filesystem".into(), "my.fs".into()]
    }

    #[test]
    fn cases() {
        assert_eq!(patterns(None, &servers()), (vec!["mcp__filesystem__*".into(), "mcp__my_fs__*".into()], vec![]));
        let rules = ToolRules {
            allow: vec!["my.fs.read_*".into(), "my.fs.list".into()],
            deny: vec!["filesystem.write_file".into()],
        };
        assert_eq!(
            patterns(Some(&rules), &servers()),
            (
                vec!["mcp__filesystem__*".into(), "mcp__my_fs__read_*".into(), "mcp__my_fs__list".into()],
                vec!["mcp__filesystem__write_file".into()]
            )
        );
    }
}
