//! Progress notifications while a tool call waits (`worker_poll`, `spawn_worker`, `worker_wait`):
//! one every interval, for as long as the [`ProgressTicker`] lives.

use std::future::Future;
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;

/// Sends a progress notification every `every` until dropped (or the client is gone). `report`
/// gets the whole seconds waited so far and gives the notification's `total` and message.
pub struct ProgressTicker(tokio::task::JoinHandle<()>);

impl ProgressTicker {
    pub fn start<F, Fut>(peer: Peer<RoleServer>, token: ProgressToken, every: Duration, mut report: F) -> Self
    where
        F: FnMut(f64) -> Fut + Send + 'static,
        Fut: Future<Output = (Option<f64>, String)> + Send,
    {
        Self(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let waited = started.elapsed().as_secs_f64().floor();
                let (total, message) = report(waited).await;
                let mut param = ProgressNotificationParam::new(token.clone(), waited).with_message(message);
                if let Some(total) = total {
                    param = param.with_total(total);
                }
                if peer.notify_progress(param).await.is_err() {
                    return;
                }
            }
        }))
    }
}

impl Drop for ProgressTicker {
    fn drop(&mut self) {
        self.0.abort();
    }
}
