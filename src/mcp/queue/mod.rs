//! The polling queue MCP server (issue 3): `worker_create`, `worker_poll`, `worker_submit`
//! over stdio (`mcp-workers mcp queue`) and Streamable HTTP (`mcp-workers serve`), on the
//! durable store (`--store`: the data directory's SQLite file by default, or PostgreSQL). Every
//! process that opens one store serves one queue.

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
use tokio_util::sync::CancellationToken;

pub use hub::{Queue, QueueConfig};
pub use server::QueueServer;

use crate::mcp::transport::LineTransport;
use crate::store::{QueueStore, SqliteMode, StoreLocation};

/// How the queue runs: the hand-out rules, and the demo source's interval (`None`: no demo tasks).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub config: QueueConfig,
    pub demo_interval: Option<Duration>,
}

/// Opens the store and starts the queue (and the demo source if asked). A SQLite store runs
/// inline on this (current-thread) runtime, for one client: no thread of its own.
pub async fn start(
    location: &StoreLocation,
    settings: &QueueSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<Queue>> {
    let store =
        location.open_in(SqliteMode::Inline).await.with_context(|| format!("cannot open the store {location}"))?;
    Ok(start_on(store.queue, settings, shutdown))
}

/// Starts the queue (and the demo source if asked) on an open store.
pub fn start_on(store: Arc<dyn QueueStore>, settings: &QueueSettings, shutdown: &CancellationToken) -> Arc<Queue> {
    let queue = Queue::start(store, settings.config.clone(), shutdown.clone());
    if let Some(interval) = settings.demo_interval {
        tokio::spawn(demo::run(Arc::clone(&queue), interval, shutdown.clone()));
    }
    queue
}

/// `mcp-workers mcp queue`: serve the queue over stdio until stdin closes.
pub async fn run_stdio(location: &StoreLocation, settings: &QueueSettings) -> anyhow::Result<ExitCode> {
    use rmcp::ServiceExt;
    let shutdown = CancellationToken::new();
    crate::shutdown::on_signals(shutdown.clone())?;
    let queue = start(location, settings, &shutdown).await?;
    tracing::info!(timeout = ?settings.config.poll_timeout, store = %location, "queue server on stdio");
    // End of stdin cancels `shutdown` at once, so waiting polls end (and release what they
    // hold) instead of keeping the process alive until rmcp's drain timeout.
    let (stdin, stdout) = crate::mcp::stdio::stdio();
    let server = QueueServer::new(queue);
    let transport = LineTransport::new(EofCancels { inner: stdin, token: shutdown.clone() }, stdout)
        .with_direct(Arc::new(server.clone()));
    let service = match server.serve_with_ct(transport, shutdown.child_token()).await {
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
