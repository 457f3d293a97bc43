//! Built-in MCP servers: the polling queue and Telegram; and `no-roots`, a filter in front of a
//! stdio server that must keep its command-line directories. Their flags are in `cmd/mcp.rs`.

pub mod disconnect;
pub mod no_roots;
pub mod queue;
pub mod telegram;
