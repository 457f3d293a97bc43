//! The end-to-end test binary: the daemon and the real Claude Code CLI, driven as black boxes
//! against a scripted stand-in for the Anthropic Messages API (`support::fake_model`).

mod fake_model_smoke;
mod notify;
mod queue_drain;
mod run;
mod serve;
mod servers;
mod support;
