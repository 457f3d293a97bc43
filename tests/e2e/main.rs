//! The one integration-test binary: the daemon, its built-in servers and the real Claude Code CLI,
//! driven as black boxes against local stand-ins (`support::fake_model` for the Anthropic Messages
//! API, `support::fake_telegram` for the Bot API). One module per subject; helpers in `support/`.

mod agent;
mod cluster;
mod contain;
mod engine;
mod fake_model_smoke;
mod governance;
mod notify;
mod postgres;
mod queue;
mod queue_drain;
mod run;
mod serve;
mod servers;
mod support;
mod workers;
