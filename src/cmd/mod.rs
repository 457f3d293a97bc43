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

use crate::args::GlobalArgs;
use crate::store::{OpenStore, StoreLocation};

/// The store that `--store` / `--store-schema` (or the data directory) names, checked.
pub fn store_location(global: &GlobalArgs) -> anyhow::Result<StoreLocation> {
    StoreLocation::parse(global.store.as_deref(), global.store_schema.as_deref(), &global.data_dir())
        .map_err(anyhow::Error::msg)
}

/// Opens the store at `location` (creating and migrating it as needed).
pub async fn open_store(location: &StoreLocation) -> anyhow::Result<OpenStore> {
    use anyhow::Context;
    location.open().await.with_context(|| format!("cannot open the store {location}"))
}

/// `mcp-workers schema`: prints the action schema.
pub fn schema() -> anyhow::Result<ExitCode> {
    println!("{}", crate::protocol::schema::SCHEMA_TEXT.trim_end());
    Ok(ExitCode::SUCCESS)
}
