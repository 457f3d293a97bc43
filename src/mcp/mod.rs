//! Built-in MCP servers: the polling queue and Telegram; and `no-roots`, a filter in front of a
//! stdio server that must keep its command-line directories. `stdio` gives them standard input and
//! output on the runtime's reactor.

pub mod no_roots;
pub mod queue;
pub mod stdio;
pub mod telegram;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(subcommand)]
    pub server: McpServer,
}

#[derive(Debug, Subcommand)]
pub enum McpServer {
    /// The polling task queue (worker_create / worker_poll / worker_submit) over stdio.
    Queue(queue::QueueArgs),
    /// A Telegram Bot API server (tg_send, tg_edit, tg_delete, tg_pin, tg_get_chat) over stdio.
    Telegram(telegram::TelegramArgs),
    /// Run a stdio MCP server with the client's `roots` capability hidden from it, so that
    /// server-filesystem keeps the directories on its command line: `no-roots -- CMD ARGS...`.
    NoRoots(no_roots::NoRootsArgs),
}

pub async fn run(global: &crate::cli::GlobalArgs, args: McpArgs) -> anyhow::Result<std::process::ExitCode> {
    match args.server {
        McpServer::Queue(a) => queue::run_stdio(global, a).await,
        McpServer::Telegram(a) => telegram::run_stdio(global, a).await,
        McpServer::NoRoots(a) => no_roots::run(a).await,
    }
}
