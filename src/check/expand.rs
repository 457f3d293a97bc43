//! The CLI's `${VAR}` / `${VAR:-default}` expansion of a registry entry over a worker's
//! environment (built by `worker::command::environment`). Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::registry::ServerEntry;

/// A stdio entry with its placeholders expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub command: String,
    pub args: Vec<String>,
    /// The entry's own `env`, added to the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Placeholders with no default whose variable is not set (left as literal `${VAR}`, as the CLI does).
    pub missing: Vec<String>,
}

impl Launch {
    pub fn from_entry(entry: &ServerEntry, vars: &BTreeMap<String, String>) -> Self {
        let mut missing = BTreeSet::new();
        let mut expand = |v: &Value| v.as_str().map(|s| expand(s, vars, &mut missing)).unwrap_or_default();
        let command = entry.config.get("command").map(&mut expand).unwrap_or_default();
        let args = entry.config.get("args").and_then(Value::as_array).map(|a| a.iter().map(&mut expand).collect());
        let env = entry
            .config
            .get("env")
            .and_then(Value::as_object)
            .map(|e| e.iter().map(|(k, v)| (k.clone(), expand(v))).collect())
            .unwrap_or_default();
        Self { command, args: args.unwrap_or_default(), env, missing: missing.into_iter().collect() }
    }

    /// The programs that must exist: the command, and for `mcp-workers mcp no-roots -- CMD`, CMD too.
    pub fn programs(&self) -> Vec<&str> {
        let mut programs = vec![self.command.as_str()];
        if let ["mcp", "no-roots", rest @ ..] = self.args.iter().map(String::as_str).collect::<Vec<_>>().as_slice()
            && let Some(inner) = rest.iter().find(|a| **a != "--")
        {
            programs.push(inner);
        }
        programs
    }
}

/// Expands `${NAME}` (kept literally when unset, and recorded in `missing`) and `${NAME:-default}`
/// (the default when unset or empty).
pub fn expand(text: &str, vars: &BTreeMap<String, String>, missing: &mut BTreeSet<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (crate::registry::is_var_name(name), vars.get(name), default) {
            (false, _, _) => out.push_str(&rest[start..start + 2 + end + 1]),
            (true, Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (true, Some(value), _) => out.push_str(value),
            (true, None, Some(default)) => out.push_str(default),
            (true, None, None) => {
                missing.insert(name.to_owned());
                out.push_str(&rest[start..start + 2 + end + 1]);
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Where `program` would be found: as a path (relative to `cwd`) when it has a `/`, else on `path`.
pub fn find_program(program: &str, path: &str, cwd: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| crate::settings::is_executable(p);
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let candidate = cwd.join(program);
        return executable(&candidate).then_some(candidate);
    }
    path.split(':').filter(|d| !d.is_empty()).map(|dir| Path::new(dir).join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn expansion_follows_the_cli() {
        let v = vars(&[("A", "1"), ("EMPTY", "")]);
        let check = |text: &str, want: &str, want_missing: &[&str]| {
            let mut missing = BTreeSet::new();
            assert_eq!(expand(text, &v, &mut missing), want, "{text}");
            assert_eq!(missing.iter().map(String::as_str).collect::<Vec<_>>(), want_missing, "{text}");
        };
        check("plain", "plain", &[]);
        check("${A}/x", "1/x", &[]);
        check("${B}", "${B}", &["B"]);
        check("${B:-def}", "def", &[]);
        check("${EMPTY:-def}", "def", &[]);
        check("${EMPTY}", "", &[]);
        check("a ${A} b ${B:-} c", "a 1 b  c", &[]);
        check("${1X} ${UNCLOSED", "${1X} ${UNCLOSED", &[]);
    }

    #[test]
    fn launches() {
        let entry = crate::registry::Registry::from_value(
            json!({"mcpServers": {
                "tg": {"command": "mcp-workers", "args": ["mcp", "telegram"],
                       "env": {"TELEGRAM_BOT_TOKEN": "${TELEGRAM_BOT_TOKEN}", "TELEGRAM_API_BASE": "${TELEGRAM_API_BASE:-https://api.telegram.org}"}},
                "fs": {"command": "mcp-workers", "args": ["mcp", "no-roots", "--", "mcp-server-filesystem", "${MCP_WORKERS_WORKSPACE}"]}
            }}),
            Path::new("/opt/mcp-workers"),
        )
        .unwrap();
        let server_vars = vars(&[
            ("PATH", "/usr/bin"),
            ("TELEGRAM_API_BASE", "http://127.0.0.1:9"),
            ("MCP_WORKERS_WORKSPACE", "/r/workspace"),
        ]);
        let tg = entry.get("tg").unwrap();
        let launch = Launch::from_entry(tg, &server_vars);
        assert_eq!(launch.command, "/opt/mcp-workers");
        assert_eq!(launch.missing, ["TELEGRAM_BOT_TOKEN"]);
        assert_eq!(launch.env["TELEGRAM_API_BASE"], "http://127.0.0.1:9");
        assert_eq!(launch.programs(), ["/opt/mcp-workers"]);

        let fs = entry.get("fs").unwrap();
        let launch = Launch::from_entry(fs, &server_vars);
        assert_eq!(launch.args.last().map(String::as_str), Some("/r/workspace"));
        assert_eq!(launch.programs(), ["/opt/mcp-workers", "mcp-server-filesystem"]);
        assert!(launch.missing.is_empty());
    }

    #[test]
    fn programs_are_found_on_path() {
        assert!(find_program("sh", "/nonexistent:/bin:/usr/bin", Path::new("/")).is_some());
        assert!(find_program("surely-not-a-command-xyz", "/bin:/usr/bin", Path::new("/")).is_none());
        assert!(find_program("/bin/sh", "", Path::new("/")).is_some());
        assert!(find_program("", "/bin", Path::new("/")).is_none());
    }
}
