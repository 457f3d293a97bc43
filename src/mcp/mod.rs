//! Built-in MCP servers: the polling queue, Telegram and the worker pool as tools (`workers`); and `no-roots`, a filter in front of a
//! stdio server that must keep its command-line directories. Their flags are in `cmd/mcp.rs`;
//! `stdio` gives them standard input and output on the runtime's reactor,
//! `transport` the JSON-RPC lines over them.

pub mod combined;
pub mod disconnect;
pub mod no_roots;
pub mod queue;
mod reply_line;
pub mod stdio;
pub mod telegram;
pub mod ticker;
pub mod transport;
pub mod workers;
