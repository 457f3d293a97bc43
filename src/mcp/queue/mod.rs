//! The polling queue MCP server (issue 3): `worker_create`, `worker_poll`, `worker_submit`
//! over stdio (`mcp-workers mcp queue`) and Streamable HTTP (`mcp-workers serve`), on the
//! durable store of the data directory. Every process that opens one data directory serves one
//! queue.

pub mod demo;
pub mod hub;
#[cfg(test)]
mod hub_tests;
pub mod replies;
pub mod server;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

pub use hub::{Queue, QueueConfig};
pub use server::QueueServer;

use crate::cli::{GlobalArgs, parse_duration};
use crate::store::{QueueStore, SqliteStore};

/// The queue's settings, shared by `mcp queue` and `serve`.
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

/// A duration that must be more than zero (`0` would make polls spin).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}` is zero; give a duration of more than 0 (e.g. 59, 45s)")),
        d => Ok(d),
    }
}

impl QueueArgs {
    pub fn config(&self) -> QueueConfig {
        QueueConfig {
            poll_timeout: self.timeout,
            lease: self.lease,
            inactive_grace: self.inactive_grace,
            max_attempts: self.max_attempts,
            max_response_bytes: self.max_response_bytes,
            progress_interval: self.progress_interval,
            ..QueueConfig::default()
        }
    }
}

/// Opens the data directory's store and starts the queue (and the demo source if asked).
pub fn start(global: &GlobalArgs, args: &QueueArgs, shutdown: &CancellationToken) -> anyhow::Result<Arc<Queue>> {
    let dir = global.data_dir();
    let store = SqliteStore::open(&dir).with_context(|| format!("cannot open the store in {}", dir.display()))?;
    Ok(start_on(Arc::new(store), args, shutdown))
}

/// Starts the queue (and the demo source if asked) on an open store.
pub fn start_on(store: Arc<dyn QueueStore>, args: &QueueArgs, shutdown: &CancellationToken) -> Arc<Queue> {
    let queue = Queue::start(store, args.config(), shutdown.clone());
    if args.demo_tasks {
        tokio::spawn(demo::run(Arc::clone(&queue), args.demo_interval, shutdown.clone()));
    }
    queue
}

/// `mcp-workers mcp queue`: serve the queue over stdio until stdin closes.
pub async fn run_stdio(global: &GlobalArgs, args: QueueArgs) -> anyhow::Result<ExitCode> {
    use rmcp::ServiceExt;
    let shutdown = CancellationToken::new();
    crate::shutdown::on_signals(shutdown.clone())?;
    let queue = start(global, &args, &shutdown)?;
    tracing::info!(timeout = ?args.timeout, data_dir = %global.data_dir().display(), "queue server on stdio");
    // End of stdin cancels `shutdown` at once, so waiting polls end (and release what they
    // hold) instead of keeping the process alive until rmcp's drain timeout.
    let stdin = EofCancels { inner: tokio::io::stdin(), token: shutdown.clone() };
    let transport = (stdin, tokio::io::stdout());
    let service = match QueueServer::new(queue).serve_with_ct(transport, shutdown.child_token()).await {
        Ok(service) => service,
        Err(
            rmcp::service::ServerInitializeError::ConnectionClosed(_) | rmcp::service::ServerInitializeError::Cancelled,
        ) => {
            tracing::info!("stdin closed before the MCP handshake; exiting");
            return Ok(ExitCode::SUCCESS);
        }
        Err(err) => return Err(err).context("MCP handshake on stdio failed"),
    };
    let reason = service.waiting().await;
    shutdown.cancel();
    tracing::debug!(?reason, "stdio closed; queue server exits");
    Ok(ExitCode::SUCCESS)
}

/// A reader that cancels `token` when it reaches end of input.
struct EofCancels<R> {
    inner: R,
    token: CancellationToken,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for EofCancels<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0 {
            self.token.cancel();
        }
        poll
    }
}
