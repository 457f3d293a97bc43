//! The shutdown trigger: SIGINT or SIGTERM cancel one token that every task watches.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM. A second signal is left to the default action
/// only after the daemon had its chance: it is logged and ignored here.
pub fn on_signals(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = sigint.recv() => "SIGINT",
                _ = sigterm.recv() => "SIGTERM",
            };
            if token.is_cancelled() {
                tracing::warn!(signal = name, "already shutting down");
            } else {
                tracing::info!(signal = name, "shutting down: stopping workers");
                token.cancel();
            }
        }
    });
    Ok(())
}
