//! Command-line arguments, and their translation into one validated settings type per command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Turns the Claude Code CLI into a pool of tool-using workers, and serves a polling task queue over MCP.
#[derive(Debug, Parser)]
#[command(name = "mcp-workers", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Project directory: holds `.claude/mcp_servers.json`, `profiles/` and `workspace/`.
    #[arg(long, global = true, env = "MCP_WORKERS_ROOT", default_value = ".")]
    pub root: PathBuf,
    /// Where durable state lives (the SQLite store). Default: `<root>/.mcp-workers`.
    #[arg(long, global = true, env = "MCP_WORKERS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read `{"actions":[...]}` JSON lines on stdin, run a Claude Code worker per `spawn_worker`
    /// action, write one `worker_result` line per action on stdout.
    Run(RunArgs),
    /// Print the JSON Schema that `spawn_worker` actions are validated with.
    Schema,
    /// Run a built-in MCP server over stdio.
    Mcp(crate::mcp::McpArgs),
    /// Start each server of the registry once and report its status and tools.
    Check(crate::check::CheckArgs),
    /// The service: the worker API (/v1/actions, /v1/tasks, /v1/events), the polling queue at
    /// /mcp (Streamable HTTP), /healthz, /readyz and /metrics, over a crash-safe journal.
    Serve(crate::http::ServeArgs),
    /// Add tasks to the polling queue; prints their ids.
    Enqueue(crate::queue_cli::EnqueueArgs),
    /// List the polling queue's tasks, or show one with its response.
    Tasks(crate::queue_cli::TasksArgs),
}

/// How workers are run; shared by `run` and (later) `serve`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// How many workers run at once; further actions wait in order.
    #[arg(long, env = "MCP_WORKERS_MAX_WORKERS", default_value_t = default_max_workers())]
    pub max_workers: usize,
    /// The Claude Code CLI to run. Default: `claude` next to the project's `.tools`, else on PATH.
    #[arg(long, env = "MCP_WORKERS_CLAUDE")]
    pub claude: Option<PathBuf>,
    /// The server registry. Default: `<root>/.claude/mcp_servers.json`.
    #[arg(long, env = "MCP_WORKERS_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// The workers' working directory. Default: `<root>/workspace`.
    #[arg(long, env = "MCP_WORKERS_WORKSPACE")]
    pub workspace: Option<PathBuf>,
    /// Worker profiles (`NAME.md`). Default: `<root>/profiles`.
    #[arg(long, env = "MCP_WORKERS_PROFILES")]
    pub profiles: Option<PathBuf>,
    /// The largest `timeout` an action may ask for.
    #[arg(long, env = "MCP_WORKERS_MAX_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub max_timeout: Duration,
    /// After SIGTERM, how long a worker may take to exit before its process group is killed.
    #[arg(long, env = "MCP_WORKERS_KILL_GRACE", default_value = "2s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// Retries the CLI itself makes on API errors (CLAUDE_CODE_MAX_RETRIES).
    #[arg(long, env = "MCP_WORKERS_API_RETRIES", default_value_t = 2)]
    pub api_retries: u32,
    /// Connect timeout per MCP server (MCP_TIMEOUT).
    #[arg(long, env = "MCP_WORKERS_MCP_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub mcp_connect_timeout: Duration,
    /// Extra environment variables to pass to every worker, by name (repeatable).
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Run the CLI without `--bare` (then user/project settings are still ignored, but CLAUDE.md
    /// files are read, and auth may come from ANTHROPIC_AUTH_TOKEN or an OAuth token).
    #[arg(long, env = "MCP_WORKERS_NO_BARE")]
    pub no_bare: bool,
    /// The longest input line (one JSON document) accepted, in bytes.
    #[arg(long, env = "MCP_WORKERS_MAX_LINE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_line_bytes: usize,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
}

fn default_max_workers() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(2, 16))
}

/// Parses humantime values like `45s`, `2m`, `500ms`.
/// A bare number is read as seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration (e.g. 30, 45s, 2m, 500ms): {e}"))
}

/// Runs the chosen command. Returns the process exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { global, command } = cli;
    match command {
        Command::Run(args) => crate::run::run_stdin(&global, args).await,
        Command::Schema => {
            println!("{}", crate::protocol::schema::SCHEMA_TEXT.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp(args) => crate::mcp::run(&global, args).await,
        Command::Check(args) => crate::check::run(&global, args).await,
        Command::Serve(args) => crate::http::run(&global, args).await,
        Command::Enqueue(args) => crate::queue_cli::enqueue(&global, args).await,
        Command::Tasks(args) => crate::queue_cli::tasks(&global, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("59"), Ok(Duration::from_secs(59)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
