//! Wakeups from other handles: a dedicated listener connection (never in a transaction) that
//! LISTENs on [`CHANNEL`](super::CHANNEL) and feeds the subscriptions; after every (re)connect it
//! wakes them all, since notifications sent while it was away are lost (a catch-up: subscribers
//! re-query). A slow poll wakes waiting subscribers anyway (the fallback; the only source in
//! poll-only mode). A notification is a hint: subscribers always re-query.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::Feeds;
use super::config::PgConfig;
use crate::store::Result;
use crate::store::changes::Demand;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Connects the listener (an error if the first attempt fails), then keeps it connected in
/// the background until `stop`.
pub(super) async fn start(config: PgConfig, feeds: Arc<Feeds>, stop: CancellationToken) -> Result<()> {
    let first = listen(&config).await?;
    tokio::spawn(run(config, feeds, stop, first));
    Ok(())
}

type Listening = (tokio_postgres::Client, mpsc::UnboundedReceiver<AsyncMessage>);

async fn listen(config: &PgConfig) -> Result<Listening> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = super::pool::connect(config, Some(tx)).await?;
    client.batch_execute(&format!("LISTEN {}", super::CHANNEL)).await?;
    Ok((client, rx))
}

async fn run(config: PgConfig, feeds: Arc<Feeds>, stop: CancellationToken, first: Listening) {
    let (tasks, events) = (format!("{}:tasks", config.schema), format!("{}:events", config.schema));
    let cancels = format!("{}:cancels", config.schema);
    let mut current = Some(first);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let (client, mut rx) = match current.take() {
            Some(listening) => listening,
            None => match listen(&config).await {
                Ok(listening) => {
                    tracing::info!(store = %config, "store listener reconnected");
                    // What was sent while we were away is lost: everybody re-queries.
                    feeds.all();
                    backoff = BACKOFF_FIRST;
                    listening
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "store listener cannot connect");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = rx.recv() => message,
            };
            match message {
                Some(AsyncMessage::Notification(n)) if n.channel() == super::CHANNEL => {
                    if n.payload() == tasks {
                        feeds.tasks.notify();
                    } else if n.payload() == events {
                        feeds.events.notify();
                    } else if n.payload() == cancels {
                        feeds.cancels.notify();
                    }
                }
                Some(_) => {}
                // The connection ended (the database restarted, the backend was terminated).
                None => break,
            }
        }
        drop(client);
        tracing::warn!(store = %config, "store listener connection lost; reconnecting");
        feeds.all();
    }
}

/// While somebody waits, wakes every subscriber each `interval` (they re-query).
pub(super) async fn poll(interval: Duration, demand: Arc<Demand>, feeds: Arc<Feeds>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if demand.wanted() {
            feeds.all();
        }
    }
}
