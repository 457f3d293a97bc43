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
    let outcome = runtime.block_on(mcp_workers::cli::execute(cli));
    // Do not wait for a blocking read of stdin that may never return (a shutdown by signal, or a
    // reader of stdout that went away): all work is finished by now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mcp-workers: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
