//! `mcp-workers run`: the stdin/stdout filter.

pub async fn run_stdin(
    _global: &crate::cli::GlobalArgs,
    _args: crate::cli::RunArgs,
) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
