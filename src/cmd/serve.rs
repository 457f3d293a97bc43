//! `mcp-workers serve`: the flags, their checks (the listen address and the bearer token), and the
//! order of start-up and shutdown: bind, open the store, start the queue and the service (which
//! recovers the journal), serve HTTP; on a signal, drain the service, then close HTTP.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::queue_args::QueueArgs;
use super::worker_args::{NeedClaude, WorkerArgs, WorkerToolArgs};
use crate::args::{GlobalArgs, parse_duration};
use crate::http::HostGuard;
use crate::mcp::queue::QueueSettings;
use crate::service::Service;
use crate::service::cluster::{ClusterSettings, Membership};
use crate::settings::DaemonSettings;
use crate::store::StoreLocation;

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
    #[arg(long, env = "MCP_WORKERS_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How long done and dead tasks, finished actions and events are kept (checked every
    /// minute); `0` keeps everything.
    #[arg(long, env = "MCP_WORKERS_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
    /// With a PostgreSQL store: this daemon's name among the daemons sharing the journal (one
    /// live daemon per name). Default: the host name and the data directory.
    #[arg(long, env = "MCP_WORKERS_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// With a PostgreSQL store: a daemon silent this long is declared dead by another, which
    /// answers its running actions `interrupted` and runs its unstarted ones.
    #[arg(long, env = "MCP_WORKERS_NODE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub tools: WorkerToolArgs,
}

/// `serve`'s settings, checked.
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub guard: HostGuard,
    pub api_token: Option<String>,
    pub shutdown_grace: Duration,
    pub retention: Duration,
    pub store: StoreLocation,
    /// How this daemon takes part in a cluster (used with a PostgreSQL store).
    pub cluster: ClusterSettings,
    pub queue: QueueSettings,
    pub daemon: Arc<DaemonSettings>,
    /// The workers tools at `/mcp` (their progress interval is the queue's).
    pub workers: crate::mcp::workers::WorkersSettings,
}

impl ServeArgs {
    pub async fn settings(&self, global: &GlobalArgs) -> anyhow::Result<ServeSettings> {
        let api_token = self.api_token.clone().filter(|t| !t.trim().is_empty());
        if api_token.is_none() && !self.listen.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {} without a bearer token: set MCP_WORKERS_API_TOKEN (or --api-token)",
                self.listen
            );
        }
        if self.node_timeout < Duration::from_millis(300) {
            anyhow::bail!("--node-timeout must be at least 300ms (a third of it is the heartbeat)");
        }
        let daemon = Arc::new(self.worker.settings(global, NeedClaude::Yes).await?);
        let name = match self.node_name.as_deref().map(str::trim) {
            Some("") => anyhow::bail!("--node-name must not be empty"),
            Some(name) => name.to_owned(),
            None => format!("{}:{}", host_name(), daemon.worker.cli.data_dir.display()),
        };
        Ok(ServeSettings {
            listen: self.listen,
            guard: HostGuard::loopback_and(&self.allow_hosts),
            api_token,
            shutdown_grace: self.shutdown_grace,
            retention: self.retention,
            store: super::store_location(global)?,
            queue: self.queue.settings(),
            workers: self.tools.settings(self.queue.progress_interval)?,
            cluster: ClusterSettings { name, node_timeout: self.node_timeout },
            daemon,
        })
    }
}

/// The machine's host name (Linux), for the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

pub async fn exec(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let retention = args.worker.transcript_retention;
    let settings = args.settings(global).await?;
    crate::worker::transcript::sweep(&settings.daemon.worker.cli.data_dir, retention);
    crate::protocol::schema::warm_up();
    // `shutdown` fires on SIGINT/SIGTERM: no new actions, no new starts, polls end. The HTTP
    // server itself stays up until every running worker has its result recorded.
    let shutdown = CancellationToken::new();
    let force = crate::shutdown::on_signals(shutdown.clone())?;
    let _containment = crate::worker::process::Containment::start()?;
    // Bind first: a taken port must fail before recovery starts any journalled action.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // One store for the queue and the journal: one SQLite writer (one group commit for both),
    // or one PostgreSQL pool.
    let store = super::open_store(&settings.store).await?;
    let cluster = store.cluster().map(|c| Membership::new(c, settings.cluster.clone()));
    if !settings.retention.is_zero() {
        let (queue, journal) = (store.queue.clone(), store.journal.clone());
        tokio::spawn(crate::store::retention::run(queue, journal, settings.retention, shutdown.clone()));
    }
    let queue = crate::mcp::queue::start_on(store.queue, &settings.queue, &shutdown);
    let running = Service::start(
        settings.daemon.clone(),
        store.journal,
        queue,
        settings.api_token.clone(),
        shutdown.clone(),
        force.clone(),
        cluster,
    )
    .await?;
    tracing::info!(%addr, store = %settings.store, "serving /v1/actions, /v1/events and MCP (the queue and the workers tools) at /mcp");
    // The address goes to stderr too, for scripts that bind port 0.
    eprintln!("listening on http://{addr}/mcp");
    let http_stop = CancellationToken::new();
    let app = crate::http::app(running.service.clone(), settings.guard.clone(), &settings.workers, &shutdown);
    let mut server = tokio::spawn(crate::http::serve(listener, app, http_stop.clone()));
    let notifier = crate::service::notify::ready(&running.service);
    // Normally a signal ends this; if the HTTP server itself fails, stop the same orderly way.
    let failed = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = &mut server => Some(ended),
    };
    shutdown.cancel();
    notifier.stopping(running.service.pool.running());
    running.stop(settings.shutdown_grace, &force).await;
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
