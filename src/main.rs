//! The `mcp-workers` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use mcp_workers::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcp_workers::logging::init(&cli.global);
    let runtime = match runtime_for(&cli.command) {
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

fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    // The stdio MCP servers (`mcp queue`, `mcp telegram`, `mcp no-roots`) serve one client each, and
    // every worker starts its own: on one thread a call wakes no other thread, and start-up and
    // memory cost least. Everything else (`mcp workers` too: it runs workers) gets the multi-thread one.
    if command.single_threaded() {
        // Blocking threads: the store's calls (serialised on one connection anyway) and a blocking
        // stdin or stdout where it cannot be polled; a few are enough.
        tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(4).build()
    } else {
        tokio::runtime::Runtime::new()
    }
}
