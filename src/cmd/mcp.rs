//! `mcp-workers mcp NAME`: the built-in stdio MCP servers (the polling queue, Telegram) and the
//! `no-roots` filter.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::queue_args::QueueArgs;
use super::worker_args::{NeedClaude, WorkerArgs, WorkerToolArgs};
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
    Workers(Box<WorkersArgs>),
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
    #[command(flatten)]
    pub tools: WorkerToolArgs,
    /// How often a waiting call hears a progress notification (when its client sent a progress token).
    #[arg(long, env = "MCP_WORKERS_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub progress_interval: Duration,
}

#[derive(Debug, Args)]
pub struct NoRootsArgs {
    /// The server to run, and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub async fn exec(global: &GlobalArgs, args: McpArgs) -> anyhow::Result<ExitCode> {
    match args.server {
        McpServer::Queue(a) => crate::mcp::queue::run_stdio(&super::store_location(global)?, &a.settings()).await,
        McpServer::Telegram(a) => {
            let settings = TelegramSettings::new(a.api_base, a.api_timeout);
            crate::mcp::telegram::run_stdio(settings).await
        }
        McpServer::NoRoots(a) => crate::mcp::no_roots::run(a.command).await,
        McpServer::Workers(a) => {
            let settings = a.tools.settings(a.progress_interval)?;
            let daemon = std::sync::Arc::new(a.worker.settings(global, NeedClaude::Yes).await?);
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
