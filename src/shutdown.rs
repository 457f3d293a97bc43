//! The shutdown trigger: the first SIGINT or SIGTERM cancels the `shutdown` token that every task
//! watches (a graceful stop: drain, grace, then stop workers); a second one cancels the returned
//! `force` token as well: graces are skipped and workers are killed at once (as `docker compose`
//! does on a second Ctrl+C). Either way every action still gets its one result.

use tokio_util::sync::CancellationToken;

/// Installs the handlers. Returns the token that a second signal cancels.
pub fn on_signals(shutdown: CancellationToken) -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let force = CancellationToken::new();
    let forced = force.clone();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = sigint.recv() => "SIGINT",
                _ = sigterm.recv() => "SIGTERM",
            };
            if !shutdown.is_cancelled() {
                tracing::info!(signal = name, "shutting down: stopping workers (send it again to stop at once)");
                shutdown.cancel();
            } else if !forced.is_cancelled() {
                tracing::warn!(signal = name, "second signal: killing the workers now, skipping the graces");
                forced.cancel();
            }
        }
    });
    Ok(force)
}
