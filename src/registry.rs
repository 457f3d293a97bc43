//! The server catalogue: `.claude/mcp_servers.json`, checked once at start-up, and the selection of
//! the servers one action asked for.
//!
//! Entries are passed to the CLI as written (unknown keys included) with two exceptions: a stdio
//! `command` of `mcp-workers` is replaced by this executable's own path, so built-in servers work
//! when the daemon is not on PATH; and nothing is expanded: `${VAR}` placeholders stay for the CLI,
//! so secrets never touch disk. The names those placeholders use are recorded per server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The command name that means "this executable".
pub const SELF_COMMAND: &str = "mcp-workers";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the server registry {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the server registry {path} is not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("the server registry {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One server of the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEntry {
    /// The entry as the CLI gets it.
    pub config: Map<String, Value>,
    /// Environment variables named by `${VAR}` / `${VAR:-default}` placeholders in the entry.
    pub variables: BTreeSet<String>,
    /// The entry's one-line `description`, for the workers server's tool schema. It is ours:
    /// taken out of `config`, so the CLI never sees it.
    pub description: Option<String>,
}

/// The loaded registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    servers: BTreeMap<String, ServerEntry>,
}

/// The servers one action selected: the MCP config to write and the variables it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// `{"mcpServers": {...}}` with only the selected entries.
    pub config: Value,
    /// Variables named by the selected entries' placeholders.
    pub variables: BTreeSet<String>,
    /// The `--allowedTools` patterns, one per server: `mcp__<name>__*`.
    pub allowed_tools: Vec<String>,
}

impl Registry {
    /// Reads and checks the registry file.
    pub fn load(path: &Path, self_exe: &Path) -> Result<Self, RegistryError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::Read { path: path.to_owned(), source })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| RegistryError::Json { path: path.to_owned(), source })?;
        Self::from_value(value, self_exe).map_err(|message| RegistryError::Invalid { path: path.to_owned(), message })
    }

    /// Checks a parsed registry document.
    pub fn from_value(value: Value, self_exe: &Path) -> Result<Self, String> {
        let Value::Object(mut top) = value else {
            return Err("must be a JSON object with an `mcpServers` object".into());
        };
        let Some(Value::Object(entries)) = top.remove("mcpServers") else {
            return Err("must have an `mcpServers` object".into());
        };
        let mut servers = BTreeMap::new();
        for (name, entry) in entries {
            if !is_server_name(&name) {
                return Err(format!(
                    "server name {name:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$ to be selectable"
                ));
            }
            let Value::Object(mut config) = entry else {
                return Err(format!("server {name:?} must be an object"));
            };
            check_entry(&name, &config)?;
            let description = match config.remove("description") {
                None => None,
                Some(Value::String(text)) => Some(text),
                Some(_) => return Err(format!("server {name:?}: `description` must be a string")),
            };
            if config.get("command").and_then(Value::as_str) == Some(SELF_COMMAND) {
                config.insert("command".into(), Value::String(self_exe.to_string_lossy().into_owned()));
            }
            let mut variables = BTreeSet::new();
            collect_placeholders(&Value::Object(config.clone()), &mut variables);
            servers.insert(name, ServerEntry { config, variables, description });
        }
        Ok(Self { servers })
    }

    pub fn get(&self, name: &str) -> Option<&ServerEntry> {
        self.servers.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &ServerEntry)> {
        self.servers.iter().map(|(name, entry)| (name.as_str(), entry))
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The first requested name that is not in the registry, if any.
    pub fn first_unknown<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        names.iter().map(String::as_str).find(|name| !self.servers.contains_key(*name))
    }

    /// The config and environment for exactly `names` (all known: see [`Registry::first_unknown`]).
    pub fn select(&self, names: &[String]) -> Selection {
        let mut servers = Map::new();
        let mut variables = BTreeSet::new();
        let mut allowed_tools = Vec::new();
        for name in names {
            if let Some(entry) = self.servers.get(name) {
                servers.insert(name.clone(), Value::Object(entry.config.clone()));
                variables.extend(entry.variables.iter().cloned());
                allowed_tools.push(format!("{}*", tool_prefix(name)));
            }
        }
        Selection { config: json!({ "mcpServers": servers }), variables, allowed_tools }
    }
}

fn check_entry(name: &str, config: &Map<String, Value>) -> Result<(), String> {
    let kind = match config.get("type") {
        None => "stdio",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(format!("server {name:?}: `type` must be a string")),
    };
    let string = |key: &str| config.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    match kind {
        // The CLI silently drops a stdio entry without a command: refuse it here instead.
        "stdio" => {
            if string("command").is_none() {
                return Err(format!("server {name:?}: a stdio server needs a non-empty `command`"));
            }
            if let Some(args) = config.get("args")
                && !args.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            {
                return Err(format!("server {name:?}: `args` must be an array of strings"));
            }
            if let Some(env) = config.get("env")
                && !env.as_object().is_some_and(|e| e.values().all(Value::is_string))
            {
                return Err(format!("server {name:?}: `env` must be an object of strings"));
            }
        }
        "http" | "sse" => {
            if string("url").is_none() {
                return Err(format!("server {name:?}: an {kind} server needs a `url`"));
            }
        }
        other => return Err(format!("server {name:?}: unknown type {other:?} (stdio, http or sse)")),
    }
    Ok(())
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`, as in the action schema.
pub fn is_server_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The prefix the CLI gives this server's tools: `mcp__<name>__`, with characters outside
/// `[A-Za-z0-9_-]` replaced by `_`.
pub fn tool_prefix(server: &str) -> String {
    let clean: String =
        server.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    format!("mcp__{clean}__")
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what the CLI takes as a variable name inside `${...}`.
pub fn is_var_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Records the `NAME` of every `${NAME}` and `${NAME:-default}` in any string below `value`.
pub fn collect_placeholders(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => placeholders_in(s, into),
        Value::Array(items) => items.iter().for_each(|v| collect_placeholders(v, into)),
        Value::Object(map) => map.values().for_each(|v| collect_placeholders(v, into)),
        _ => {}
    }
}

fn placeholders_in(s: &str, into: &mut BTreeSet<String>) {
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { return };
        let inner = &rest[..end];
        let name = inner.split_once(":-").map_or(inner, |(name, _)| name);
        if is_var_name(name) {
            into.insert(name.to_owned());
        }
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(value: Value) -> Result<Registry, String> {
        Registry::from_value(value, Path::new("/opt/bin/mcp-workers"))
    }

    #[test]
    fn placeholders() {
        let check = |s: &str, want: &[&str]| {
            let mut got = BTreeSet::new();
            placeholders_in(s, &mut got);
            assert_eq!(got.iter().map(String::as_str).collect::<Vec<_>>(), want, "{s}");
        };
        check("plain", &[]);
        check("${A}", &["A"]);
        check("Bearer ${TOKEN} and ${X:-def}", &["TOKEN", "X"]);
        check("${1BAD} ${ok_2}", &["ok_2"]);
        check("${UNCLOSED", &[]);
        check("$HOME ${}", &[]);
    }

    #[test]
    fn select_keeps_only_requested_servers_and_their_variables() {
        let reg = registry(json!({"mcpServers": {
            "telegram": {"command": "mcp-workers", "args": ["mcp", "telegram"], "env": {"TELEGRAM_BOT_TOKEN": "${TELEGRAM_BOT_TOKEN}"}},
            "web": {"type": "http", "url": "http://127.0.0.1:${PORT:-80}/mcp", "headers": {"Authorization": "Bearer ${WEB_TOKEN}"}},
            "my.fs": {"command": "node", "args": ["fs.js"]}
        }}))
        .unwrap();
        assert_eq!(reg.first_unknown(&["web".into(), "nope".into()]), Some("nope"));
        let sel = reg.select(&["telegram".into(), "my.fs".into()]);
        assert_eq!(sel.variables.iter().collect::<Vec<_>>(), ["TELEGRAM_BOT_TOKEN"]);
        assert_eq!(sel.allowed_tools, ["mcp__telegram__*", "mcp__my_fs__*"]);
        let servers = sel.config["mcpServers"].as_object().unwrap();
        assert_eq!(servers.keys().collect::<Vec<_>>(), ["my.fs", "telegram"]);
        assert_eq!(servers["telegram"]["command"], "/opt/bin/mcp-workers");
        assert_eq!(servers["telegram"]["env"]["TELEGRAM_BOT_TOKEN"], "${TELEGRAM_BOT_TOKEN}");
    }

    #[test]
    fn bad_registries_are_refused_with_a_reason() {
        let bad = [
            (json!([]), "mcpServers"),
            (json!({"servers": {}}), "mcpServers"),
            (json!({"mcpServers": {"a": {"args": []}}}), "command"),
            (json!({"mcpServers": {"a": {"type": "http"}}}), "url"),
            (json!({"mcpServers": {"a": {"type": "ws", "url": "x"}}}), "unknown type"),
            (json!({"mcpServers": {"a b": {"command": "x"}}}), "server name"),
            (json!({"mcpServers": {"a": {"command": "x", "args": [1]}}}), "args"),
            (json!({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}), "env"),
        ];
        for (value, want) in bad {
            let err = registry(value.clone()).unwrap_err();
            assert!(err.contains(want), "{value}: {err}");
        }
    }

    #[test]
    fn tool_prefixes() {
        assert_eq!(tool_prefix("filesystem"), "mcp__filesystem__");
        assert_eq!(tool_prefix("my.fs server-1"), "mcp__my_fs_server-1__");
    }
}
