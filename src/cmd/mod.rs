//! One module per subcommand: its clap flags, the checks that turn them into that command's one
//! validated settings type, and its entry point (`exec`). Everything below `cmd/` (the engine)
//! takes plain settings types and never sees clap.
//!
//! `worker_args.rs` and `queue_args.rs` are the flag groups that several commands share.

pub mod check;
pub mod mcp;
pub mod queue_args;
pub mod run;
pub mod serve;
pub mod tasks;
pub mod worker_args;

use std::process::ExitCode;

/// `mcp-workers schema`: prints the action schema.
pub fn schema() -> anyhow::Result<ExitCode> {
    println!("{}", crate::protocol::schema::SCHEMA_TEXT.trim_end());
    Ok(ExitCode::SUCCESS)
}
