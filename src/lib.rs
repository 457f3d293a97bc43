//! mcp-workers: turns the Claude Code CLI into a pool of tool-using workers, and serves a durable
//! polling task queue over MCP. See ARCHITECTURE.md for the map.

pub mod args;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod filter;
pub mod http;
pub mod lines;
pub mod logging;
pub mod mcp;
pub mod pool;
pub mod profile;
pub mod protocol;
pub mod registry;
pub mod scratch;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod worker;
