//! Why an MCP server failed to connect: the CLI writes it only to its per-server log,
//! `$HOME/.cache/claude-cli-nodejs/<cwd-slug>/mcp-logs-<server>/*.jsonl`.

use std::collections::BTreeMap;
use std::path::Path;

/// The reason kept per server, in characters.
const MAX_REASON_CHARS: usize = 500;

/// The last error lines logged for each of `servers`, read from the worker's HOME.
pub fn failure_reasons(home: &Path, servers: &[String]) -> BTreeMap<String, String> {
    let mut reasons = BTreeMap::new();
    let Ok(slugs) = std::fs::read_dir(home.join(".cache/claude-cli-nodejs")) else { return reasons };
    for slug in slugs.flatten() {
        let Ok(dirs) = std::fs::read_dir(slug.path()) else { continue };
        for dir in dirs.flatten() {
            let dir_name = dir.file_name().to_string_lossy().into_owned();
            let Some(logged) = dir_name.strip_prefix("mcp-logs-") else { continue };
            let Some(server) = servers.iter().find(|s| *s == logged || sanitize(s) == logged) else { continue };
            if let Some(reason) = last_errors(&dir.path()) {
                reasons.insert(server.clone(), reason);
            }
        }
    }
    reasons
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The last two `error` entries of the newest log file in `dir`.
fn last_errors(dir: &Path) -> Option<String> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl" || x == "txt"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
    let text = std::fs::read_to_string(newest.path()).ok()?;
    let errors: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry.get("error").and_then(|e| e.as_str()).map(|e| e.trim().to_owned()))
        .filter(|e| !e.is_empty())
        .collect();
    let tail = errors.len().saturating_sub(2);
    let joined = errors[tail..].join(" | ");
    (!joined.is_empty()).then(|| crate::protocol::schema::truncate_chars(&joined, MAX_REASON_CHARS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_newest_log_of_each_requested_server() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".cache/claude-cli-nodejs/-srv-app-workspace/mcp-logs-my_fs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("2026-01-01.jsonl"),
            "{\"debug\":\"starting\"}\n{\"error\":\"spawn nope ENOENT\"}\nnot json\n{\"error\":\"Connection closed\"}\n",
        )
        .unwrap();
        let reasons = failure_reasons(home.path(), &["my.fs".to_owned(), "other".to_owned()]);
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons["my.fs"], "spawn nope ENOENT | Connection closed");
        assert!(failure_reasons(Path::new("/nonexistent"), &["x".to_owned()]).is_empty());
    }
}
