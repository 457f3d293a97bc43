//! `mcp-workers run`: the stdin filter (`filter.rs`) on the process's stdin and stdout.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::worker_args::{NeedClaude, WorkerArgs};
use crate::args::GlobalArgs;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// How stdin is read: `json`, a stream of JSON documents (one per line, pretty-printed, or
    /// several on a line); `text`, the whole input is an agent's reply, whose JSON is its first
    /// fenced ```json block, else its outermost object.
    #[arg(long, value_enum, default_value_t = Input::Json)]
    pub input: Input,
    /// Every action reports live `worker_progress` lines (without it, only actions with
    /// `"progress": true` do).
    #[arg(long)]
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Input {
    Json,
    Text,
}

pub async fn exec(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = Arc::new(args.worker.settings(global, NeedClaude::Yes).await?);
    crate::worker::transcript::sweep(&settings.worker.cli.data_dir, args.worker.transcript_retention);
    crate::protocol::schema::warm_up();
    let shutdown = CancellationToken::new();
    let force = crate::shutdown::on_signals(shutdown.clone())?;
    let _containment = crate::worker::process::Containment::start()?;
    info!(
        max_workers = settings.max_workers,
        servers = settings.registry.len(),
        claude = %settings.worker.cli.claude.display(),
        "reading actions from stdin"
    );
    let mode = match args.input {
        Input::Json => crate::filter::InputMode::Json,
        Input::Text => crate::filter::InputMode::Text,
    };
    let progress = if args.progress { crate::filter::Progress::All } else { crate::filter::Progress::Asked };
    crate::filter::serve_lines(settings, mode, progress, tokio::io::stdin(), tokio::io::stdout(), shutdown, force)
        .await;
    Ok(ExitCode::SUCCESS)
}
