//! The `mcp-workers` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use mcp_workers::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcp_workers::logging::init(&cli.global);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("mcp-workers: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mcp_workers::cli::dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mcp-workers: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
