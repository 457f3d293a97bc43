//! Every HTTP route of `serve`: the polling queue and the workers tools over Streamable HTTP at
//! `/mcp` ([`routes`]) and
//! the worker API (`api.rs`), assembled in [`app`] behind the bearer token and the Host/Origin
//! guard, served by [`serve`]. The order of start-up and shutdown is `cmd/serve.rs`'s.

pub mod api;
pub mod disconnect;
mod guard;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use guard::HostGuard;

use crate::mcp::combined::QueueAndWorkers;
use crate::mcp::queue::{Queue, QueueServer};
use crate::mcp::workers::{Front, WorkersServer, WorkersSettings};
use crate::service::Service;
use crate::service::front::ServiceFront;

/// The daemon's MCP route, unguarded: the queue's tools and the workers tools.
pub fn routes(queue: Arc<Queue>, workers: WorkersServer, guard: &HostGuard, shutdown: &CancellationToken) -> Router {
    let config = StreamableHttpServerConfig::default()
        // Sessions (for clients on protocol versions before 2026-07-28) route a client's
        // notifications/cancelled to its poll; a client that just goes away is seen by
        // `disconnect::track`. Keep-alives make hyper notice a dead connection within a second.
        .with_sse_keep_alive(Some(Duration::from_secs(1)))
        .with_allowed_hosts(guard.hosts().iter().cloned())
        .with_cancellation_token(shutdown.child_token());
    let mcp: StreamableHttpService<QueueAndWorkers, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(QueueAndWorkers { queue: QueueServer::new(Arc::clone(&queue)), workers: workers.clone() }),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new().nest_service("/mcp", mcp).layer(axum::middleware::from_fn(disconnect::track))
}

/// Everything `serve` answers: the queue at `/mcp` and the worker API, behind the bearer token
/// (when set), the health routes open, and all of it behind the Host/Origin guard.
pub fn app(service: Arc<Service>, guard: HostGuard, workers: &WorkersSettings, shutdown: &CancellationToken) -> Router {
    let token: Option<Arc<str>> = service.api_token.as_deref().map(Arc::from);
    let front: Arc<dyn Front> = Arc::new(ServiceFront::new(service.clone()));
    let workers = WorkersServer::new(front, &service.settings.registry, workers.server());
    let protected = routes(service.queue.clone(), workers, &guard, shutdown)
        .merge(api::protected(service.clone()))
        .layer(axum::middleware::from_fn_with_state(token, api::require_token));
    guard.wrap(protected.merge(api::open(service)))
}

/// Serves `app` on `listener` until `stop` fires, then lets open connections finish.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) -> std::io::Result<()> {
    // Replies are written in several small pieces (SSE events): without TCP_NODELAY, Nagle's
    // algorithm and the client's delayed ACK add about 40 ms to each.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}
