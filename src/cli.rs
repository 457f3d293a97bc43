//! The command line: the top-level parser and the command router. Each command's flags, checks and
//! entry point live in `cmd/`; this file only names them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::GlobalArgs;
use crate::cmd;

/// Turns the Claude Code CLI into a pool of tool-using workers, and serves a polling task queue over MCP.
#[derive(Debug, Parser)]
#[command(name = "mcp-workers", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read `{"actions":[...]}` JSON lines on stdin, run a Claude Code worker per `spawn_worker`
    /// action, write one `worker_result` line per action on stdout.
    Run(cmd::run::RunArgs),
    /// Print the JSON Schema that `spawn_worker` actions are validated with.
    Schema,
    /// Run a built-in MCP server over stdio.
    Mcp(cmd::mcp::McpArgs),
    /// Start each server of the registry once and report its status and tools.
    Check(cmd::check::CheckArgs),
    /// The service: the worker API (/v1/actions, /v1/tasks, /v1/events), the polling queue at
    /// /mcp (Streamable HTTP), /healthz, /readyz and /metrics, over a crash-safe journal.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Add tasks to the polling queue; prints their ids.
    Enqueue(cmd::tasks::EnqueueArgs),
    /// List the polling queue's tasks, or show one with its response.
    Tasks(cmd::tasks::TasksArgs),
}

impl Command {
    /// The stdio MCP servers that serve one client each get a current-thread runtime.
    pub fn single_threaded(&self) -> bool {
        matches!(self, Command::Mcp(args) if args.single_threaded())
    }
}

/// Runs the chosen command. Returns the process exit code.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { global, command } = cli;
    match command {
        Command::Run(args) => cmd::run::exec(&global, args).await,
        Command::Schema => cmd::schema(),
        Command::Mcp(args) => cmd::mcp::exec(&global, args).await,
        Command::Check(args) => cmd::check::exec(&global, args).await,
        Command::Serve(args) => cmd::serve::exec(&global, *args).await,
        Command::Enqueue(args) => cmd::tasks::enqueue(&global, args).await,
        Command::Tasks(args) => cmd::tasks::tasks(&global, args).await,
    }
}
