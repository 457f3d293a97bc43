//! The global flags and the value parsers every command shares. A leaf: it imports nothing of the
//! crate, so any command module may use it without a cycle.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Project directory: holds `.claude/mcp_servers.json`, `profiles/` and `workspace/`.
    #[arg(long, global = true, env = "MCP_WORKERS_ROOT", default_value = ".")]
    pub root: PathBuf,
    /// Where durable state lives (the SQLite store). Default: `<root>/.mcp-workers`.
    #[arg(long, global = true, env = "MCP_WORKERS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the queue, the journal and the budget's charges live: `sqlite:PATH` (a file; default
    /// `<data-dir>/store.sqlite3`) or `postgres://USER:PASSWORD@HOST:PORT/DB` (several daemons
    /// share one database; `?sslmode=require` for TLS, `?schema=NAME`, `?pool_size=N`,
    /// `?listen=false` for poll-only behind PgBouncer). The password is never logged.
    #[arg(long, global = true, env = "MCP_WORKERS_STORE", hide_env_values = true, value_name = "URL")]
    pub store: Option<String>,
    /// The PostgreSQL schema the store's tables live in (default `mcp_workers`; overrides the
    /// URL's `?schema=`).
    #[arg(long, global = true, env = "MCP_WORKERS_STORE_SCHEMA", value_name = "NAME")]
    pub store_schema: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "MCP_WORKERS_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// More log detail (-v, -vv). `RUST_LOG` overrides this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The data directory, defaulting to `<root>/.mcp-workers`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| self.root.join(".mcp-workers"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses humantime values like `45s`, `2m`, `500ms`. A bare number is read as seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration (e.g. 30, 45s, 2m, 500ms): {e}"))
}

/// A duration that must be more than zero (`0` would make polls spin).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}` is zero; give a duration of more than 0 (e.g. 59, 45s)")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let check =
            |input: &str, expected: Option<Duration>| assert_eq!(parse_duration(input).ok(), expected, "{input}");
        check("59", Some(Duration::from_secs(59)));
        check(" 45s ", Some(Duration::from_secs(45)));
        check("500ms", Some(Duration::from_millis(500)));
        check("2m", Some(Duration::from_secs(120)));
        check("soon", None);
        check("", None);
        check("-1", None);
    }

    #[test]
    fn positive_durations() {
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }
}
