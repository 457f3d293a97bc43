//! `mcp-workers check`: starts each registry server once and reports its tools (issue 4).

use clap::Args;

#[derive(Debug, Args)]
pub struct CheckArgs {}

pub async fn run(_global: &crate::cli::GlobalArgs, _args: CheckArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("`check` is not built yet")
}
