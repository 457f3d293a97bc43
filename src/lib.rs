//! mcp-workers: turns the Claude Code CLI into a pool of tool-using workers, and serves a durable
//! polling task queue over MCP. See ARCHITECTURE.md for the map.

pub(crate) mod args;
pub(crate) mod check;
pub mod cli;
pub(crate) mod cmd;
pub(crate) mod filter;
pub(crate) mod http;
pub(crate) mod lines;
pub mod logging;
pub mod mcp;
pub(crate) mod pool;
pub(crate) mod profile;
pub(crate) mod protocol;
pub(crate) mod registry;
pub(crate) mod scratch;
pub(crate) mod service;
pub(crate) mod settings;
pub(crate) mod shutdown;
pub mod store;
pub(crate) mod worker;

/// The environment variable that carries a worker's depth in a chain of workers that spawn
/// workers (`mcp-workers mcp workers` inside a worker): set by the daemon for every worker.
pub(crate) const DEPTH_VAR: &str = "MCP_WORKERS_DEPTH";
