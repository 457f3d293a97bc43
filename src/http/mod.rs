//! `mcp-workers serve`: the HTTP face of the daemon. Today: the polling queue over Streamable
//! HTTP at `/mcp`. The router is built in [`routes`]: add routes there; the Host/Origin guard
//! wraps all of them.

pub mod disconnect;
mod guard;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clap::Args;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

pub use guard::HostGuard;

use crate::cli::GlobalArgs;
use crate::mcp::queue::{self, Queue, QueueArgs, QueueServer};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MCP_WORKERS_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// A further host name accepted in `Host` and `Origin` headers (repeatable). Loopback names
    /// (localhost, 127.0.0.1, ::1) are always accepted.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    #[command(flatten)]
    pub queue: QueueArgs,
}

/// The daemon's HTTP routes, unguarded.
pub fn routes(queue: Arc<Queue>, guard: &HostGuard, shutdown: &CancellationToken) -> Router {
    let config = StreamableHttpServerConfig::default()
        // Sessions (for clients on protocol versions before 2026-07-28) route a client's
        // notifications/cancelled to its poll; a client that just goes away is seen by
        // `disconnect::track`. Keep-alives make hyper notice a dead connection within a second.
        .with_sse_keep_alive(Some(Duration::from_secs(1)))
        .with_allowed_hosts(guard.hosts().iter().cloned())
        .with_cancellation_token(shutdown.child_token());
    let mcp: StreamableHttpService<QueueServer, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(QueueServer::new(Arc::clone(&queue))),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new().nest_service("/mcp", mcp).layer(axum::middleware::from_fn(disconnect::track))
}

/// `routes` behind the Host/Origin guard.
pub fn app(queue: Arc<Queue>, guard: HostGuard, shutdown: &CancellationToken) -> Router {
    let router = routes(queue, &guard, shutdown);
    guard.wrap(router)
}

/// `mcp-workers serve`.
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    crate::shutdown::on_signals(shutdown.clone())?;
    let queue = queue::start(global, &args.queue, &shutdown)?;
    let guard = HostGuard::loopback_and(&args.allow_hosts);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    tracing::info!(%addr, data_dir = %global.data_dir().display(), "serving MCP (Streamable HTTP) at /mcp");
    // The address goes to stderr too, for scripts that bind port 0.
    eprintln!("listening on http://{addr}/mcp");
    let stop = shutdown.clone();
    // Replies are written in several small pieces (SSE events): without TCP_NODELAY, Nagle's
    // algorithm and the client's delayed ACK add about 40 ms to each.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app(queue, guard, &shutdown))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("HTTP server failed")?;
    Ok(ExitCode::SUCCESS)
}
