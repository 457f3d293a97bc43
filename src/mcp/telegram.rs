//! The Telegram MCP server (issue 4).

use clap::Args;

#[derive(Debug, Args)]
pub struct TelegramArgs {}

pub async fn run_stdio(
    _global: &crate::cli::GlobalArgs,
    _args: TelegramArgs,
) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the telegram server is not built yet")
}
