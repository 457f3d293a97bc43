//! `mcp-workers mcp workers`: the worker pool as MCP tools over stdio, for MCP hosts (Claude
//! Desktop, Claude Code) and for workers that spawn workers. One [`desk::Desk`] on one
//! [`crate::pool::Pool`] per process; results are kept in memory for as long as it runs.

pub mod desk;
pub mod front;
pub mod server;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use front::Front;
pub use server::{ServerSettings, WorkersServer};

use crate::pool::{Pool, Stopping};
use crate::settings::DaemonSettings;

/// How the stdio workers server runs.
#[derive(Debug, Clone)]
pub struct WorkersSettings {
    pub default_wait: Duration,
    pub progress_interval: Duration,
    /// How deep in a chain of workers this server runs (its `MCP_WORKERS_DEPTH`; 0 when a person
    /// or an MCP host started it).
    pub depth: u32,
    /// The deepest level of workers it may start: it refuses to spawn when `depth >= max_depth`.
    pub max_depth: u32,
}

impl WorkersSettings {
    pub fn server(&self) -> ServerSettings {
        let refuse_spawn = (self.depth >= self.max_depth).then(|| {
            format!(
                "this workers server runs inside a worker at depth {} and the depth limit is {} \
                 (--max-depth / MCP_WORKERS_MAX_DEPTH): do the task yourself instead of spawning a worker",
                self.depth, self.max_depth
            )
        });
        ServerSettings { default_wait: self.default_wait, progress_interval: self.progress_interval, refuse_spawn }
    }
}

/// Serves the workers tools on stdin/stdout until stdin closes or a signal comes; then stops the
/// workers (each gets its `shutdown` result) and leaves no process behind.
pub async fn run_stdio(daemon: Arc<DaemonSettings>, settings: &WorkersSettings) -> anyhow::Result<ExitCode> {
    use rmcp::ServiceExt;
    crate::protocol::schema::warm_up();
    let shutdown = CancellationToken::new();
    let force = crate::shutdown::on_signals(shutdown.clone())?;
    let _containment = crate::worker::process::Containment::start()?;
    let (events_tx, events) = mpsc::channel(1024);
    // Every worker reports progress: the desk keeps each one's latest line for waiting calls.
    let (progress_tx, progress) = tokio::sync::broadcast::channel(1024);
    let daemon = daemon.with_progress(crate::worker::progress::Sink::broadcast(progress_tx, true));
    let (pool, finished) = Pool::start(Arc::clone(&daemon), events_tx, Stopping::immediate(&shutdown, &force));
    let desk = desk::Desk::start(pool, daemon.limits, events, progress);
    let server = WorkersServer::new(Arc::clone(&desk) as Arc<dyn Front>, &daemon.registry, settings.server());
    tracing::info!(
        max_workers = daemon.max_workers,
        servers = daemon.registry.len(),
        depth = settings.depth,
        max_depth = settings.max_depth,
        "workers server on stdio"
    );
    let outcome = match server.serve_with_ct(crate::mcp::transport::stdio(), shutdown.child_token()).await {
        Ok(service) => {
            let reason = service.waiting().await;
            tracing::debug!(?reason, "stdio closed");
            Ok(())
        }
        Err(
            rmcp::service::ServerInitializeError::ConnectionClosed(_) | rmcp::service::ServerInitializeError::Cancelled,
        ) => Ok(()),
        Err(err) => Err(err).context("MCP handshake on stdio failed"),
    };
    // The client is gone: nobody can collect a result any more. Stop every worker.
    let unfinished = desk.unfinished();
    if unfinished > 0 {
        tracing::info!(unfinished, "client gone; stopping the workers");
    }
    shutdown.cancel();
    drop(desk);
    finished.wait().await;
    outcome.map(|()| ExitCode::SUCCESS)
}
