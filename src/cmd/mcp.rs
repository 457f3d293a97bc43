//! `mcp-workers mcp NAME`: the built-in stdio MCP servers (the polling queue, Telegram) and the
//! `no-roots` filter.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::queue_args::QueueArgs;
use super::worker_args::{NeedClaude, WorkerArgs};
use crate::args::{GlobalArgs, parse_duration, parse_positive_duration};
use crate::mcp::telegram::{DEFAULT_API_BASE, TelegramSettings};

#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(subcommand)]
    pub server: McpServer,
}

#[derive(Debug, Subcommand)]
pub enum McpServer {
    /// The polling task queue (worker_create / worker_poll / worker_submit) over stdio.
    Queue(QueueArgs),
    /// A Telegram Bot API server (tg_send, tg_edit, tg_delete, tg_pin, tg_get_chat) over stdio.
    Telegram(TelegramArgs),
    /// The worker pool as MCP tools (spawn_worker, worker_wait, worker_status, worker_cancel,
    /// worker_list) over stdio: for Claude Desktop, Claude Code, and workers that spawn workers.
    Workers(WorkersArgs),
    /// Run a stdio MCP server with the client's `roots` capability hidden from it, so that
    /// server-filesystem keeps the directories on its command line: `no-roots -- CMD ARGS...`.
    NoRoots(NoRootsArgs),
}

#[derive(Debug, Args)]
pub struct TelegramArgs {
    /// The Bot API base URL: a local Bot API server, or a fake one in tests.
    #[arg(long, env = "TELEGRAM_API_BASE", default_value = DEFAULT_API_BASE)]
    pub api_base: String,
    /// The longest one Bot API call may take.
    #[arg(long, env = "TELEGRAM_API_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub api_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// How long `spawn_worker` and `worker_wait` wait for a result when the call names no `wait`.
    #[arg(long, env = "MCP_WORKERS_DEFAULT_WAIT", default_value = "25s", value_parser = parse_duration)]
    pub default_wait: Duration,
    /// How often a waiting call hears a progress notification (when its client sent a progress token).
    #[arg(long, env = "MCP_WORKERS_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub progress_interval: Duration,
    /// The deepest level of workers that spawn workers: a workers server inside a worker of this
    /// depth refuses `spawn_worker` (kind `depth_exceeded`).
    #[arg(long, env = "MCP_WORKERS_MAX_DEPTH", default_value_t = 2)]
    pub max_depth: u32,
}

#[derive(Debug, Args)]
pub struct NoRootsArgs {
    /// The server to run, and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub async fn exec(global: &GlobalArgs, args: McpArgs) -> anyhow::Result<ExitCode> {
    match args.server {
        McpServer::Queue(a) => crate::mcp::queue::run_stdio(&global.data_dir(), &a.settings()).await,
        McpServer::Telegram(a) => {
            let settings = TelegramSettings::new(a.api_base, a.api_timeout);
            crate::mcp::telegram::run_stdio(settings).await
        }
        McpServer::NoRoots(a) => crate::mcp::no_roots::run(a.command).await,
        McpServer::Workers(a) => {
            if a.default_wait > crate::mcp::workers::server::MAX_WAIT {
                anyhow::bail!("--default-wait must be at most {} s", crate::mcp::workers::server::MAX_WAIT.as_secs());
            }
            let daemon = std::sync::Arc::new(a.worker.settings(global, NeedClaude::Yes)?);
            let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let settings = crate::mcp::workers::WorkersSettings {
                default_wait: a.default_wait,
                progress_interval: a.progress_interval,
                depth: crate::worker::command::own_depth(&env),
                max_depth: a.max_depth,
            };
            crate::mcp::workers::run_stdio(daemon, &settings).await
        }
    }
}

impl McpArgs {
    /// Whether this server serves one client on one thread (`workers` runs a pool of workers).
    pub fn single_threaded(&self) -> bool {
        !matches!(self.server, McpServer::Workers(_))
    }
}
