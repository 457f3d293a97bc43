//! The polling queue MCP server (issue 3).

use clap::Args;

#[derive(Debug, Args)]
pub struct QueueArgs {}

pub async fn run_stdio(_global: &crate::cli::GlobalArgs, _args: QueueArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the queue server is not built yet")
}
