//! `mcp-workers serve`: the HTTP face of the daemon: the polling queue over Streamable HTTP at
//! `/mcp` ([`routes`]) and the worker API of `service::api`, assembled in [`app`] behind the
//! bearer token and the Host/Origin guard; [`run`] orders start-up and the drain-then-stop.

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
use crate::service::{Service, api};
use crate::settings::DaemonSettings;
use crate::store::SqliteStore;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MCP_WORKERS_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// A further host name accepted in `Host` and `Origin` headers (repeatable). Loopback names
    /// (localhost, 127.0.0.1, ::1) are always accepted.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// The bearer token every route but /healthz and /readyz requires. Required when listening
    /// beyond loopback.
    #[arg(long, env = "MCP_WORKERS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// After SIGTERM, how long running workers may finish before they are stopped. Keep it below
    /// the container's stop grace / systemd's TimeoutStopSec.
    #[arg(long, env = "MCP_WORKERS_SHUTDOWN_GRACE", default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub worker: crate::cli::WorkerArgs,
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

/// Everything `serve` answers: the queue at `/mcp` and the worker API, behind the bearer token
/// (when set), the health routes open, and all of it behind the Host/Origin guard.
pub fn app(service: Arc<Service>, guard: HostGuard, shutdown: &CancellationToken) -> Router {
    let token: Option<Arc<str>> = service.api_token.as_deref().map(Arc::from);
    let protected = routes(service.queue.clone(), &guard, shutdown)
        .merge(api::protected(service.clone()))
        .layer(axum::middleware::from_fn_with_state(token, api::require_token));
    guard.wrap(protected.merge(api::open(service)))
}

/// `mcp-workers serve`.
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let api_token = args.api_token.clone().filter(|t| !t.trim().is_empty());
    if api_token.is_none() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without a bearer token: set MCP_WORKERS_API_TOKEN (or --api-token)",
            args.listen
        );
    }
    let settings = Arc::new(DaemonSettings::from_args(global, &args.worker)?);
    crate::protocol::schema::warm_up();
    // `shutdown` fires on SIGINT/SIGTERM: no new actions, no new starts, polls end. The HTTP
    // server itself stays up until every running worker has its result recorded.
    let shutdown = CancellationToken::new();
    crate::shutdown::on_signals(shutdown.clone())?;
    // Bind first: a taken port must fail before recovery starts any journalled action.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // One store for the queue and the journal: one writer, one group commit for both.
    let store = Arc::new(SqliteStore::open(&global.data_dir()).context("cannot open the store")?);
    let queue = queue::start_on(store.clone(), &args.queue, &shutdown);
    let journal = store;
    let running = Service::start(settings, journal, queue, api_token, shutdown.clone()).await?;
    let guard = HostGuard::loopback_and(&args.allow_hosts);
    tracing::info!(%addr, data_dir = %global.data_dir().display(), "serving /v1/actions, /v1/events and MCP at /mcp");
    // The address goes to stderr too, for scripts that bind port 0.
    eprintln!("listening on http://{addr}/mcp");
    let http_stop = CancellationToken::new();
    let stop = http_stop.clone();
    // Replies are written in several small pieces (SSE events): without TCP_NODELAY, Nagle's
    // algorithm and the client's delayed ACK add about 40 ms to each.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app(running.service.clone(), guard, &shutdown))
        .with_graceful_shutdown(async move { stop.cancelled().await });
    let mut server = tokio::spawn(async move { server.await });
    // Normally a signal ends this; if the HTTP server itself fails, stop the same orderly way.
    let failed = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = &mut server => Some(ended),
    };
    shutdown.cancel();
    running.stop(args.shutdown_grace).await;
    http_stop.cancel();
    let ended = match failed {
        Some(ended) => Ok(ended),
        None => tokio::time::timeout(Duration::from_secs(5), server).await,
    };
    match ended {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => return Err(err).context("HTTP server failed"),
        Ok(Err(err)) => anyhow::bail!("HTTP server task failed: {err}"),
        Err(_) => tracing::warn!("some HTTP connections did not close in time"),
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
