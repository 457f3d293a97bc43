//! The polling queue's flags, shared by `mcp queue` and `serve`, and their translation into the
//! engine's [`QueueSettings`].

use std::time::Duration;

use clap::Args;

use crate::args::{parse_duration, parse_positive_duration};
use crate::mcp::queue::{QueueConfig, QueueSettings};

#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// How long worker_poll waits for a task: seconds (`59`) or a duration (`45s`). More than 0.
    #[arg(long, default_value = "59", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// How long a handed-out task belongs to its worker before it is queued again.
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration)]
    pub lease: Duration,
    /// Deliveries of one task before it is dead-lettered.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// A worker not seen for the poll timeout plus this grace is removed (its leases released).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub inactive_grace: Duration,
    /// The largest response worker_submit stores, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_response_bytes: usize,
    /// How often a waiting worker_poll sends a progress notification (if the client asked).
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    pub progress_interval: Duration,
    /// Queue the original's 20 sample prompts, one every 20 s while a worker is active.
    #[arg(long)]
    pub demo_tasks: bool,
    /// The demo source's interval (for tests).
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration, hide = true)]
    pub demo_interval: Duration,
}

impl QueueArgs {
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            config: QueueConfig {
                poll_timeout: self.timeout,
                lease: self.lease,
                inactive_grace: self.inactive_grace,
                max_attempts: self.max_attempts,
                max_response_bytes: self.max_response_bytes,
                progress_interval: self.progress_interval,
                ..QueueConfig::default()
            },
            demo_interval: self.demo_tasks.then_some(self.demo_interval),
        }
    }
}
