//! One `serve` per schema's journal: a session advisory lock on a connection of its own, held
//! while the store lives. Until daemons share a journal (node registry, fenced finishes: not
//! built yet), a second `serve` on one schema would answer the first one's running actions
//! `interrupted` and run its backlog twice, so it is refused. If the lock's connection drops
//! (a database restart), it is taken again as soon as the database answers; if another
//! `serve` took it meanwhile, that is logged as an error every time it is tried.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::PgConfig;
use crate::store::{Result, StoreError};

const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Takes the lock (an error if another `serve` holds it) and keeps it in the background.
pub(super) async fn start(config: PgConfig, stop: CancellationToken) -> Result<()> {
    let client = take(&config).await?;
    tokio::spawn(keep(config, client, stop));
    Ok(())
}

async fn take(config: &PgConfig) -> Result<tokio_postgres::Client> {
    let client = super::pool::connect(config, None).await?;
    let key = format!("{}:journal", config.schema);
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&super::schema::LOCK_CLASS, &key])
        .await?
        .try_get(0)?;
    if got {
        Ok(client)
    } else {
        Err(StoreError::Busy(format!(
            "another `serve` already runs on the journal of schema {} at {config}; one serve daemon per schema \
             (several daemons on one journal are not supported yet; `enqueue`, `tasks` and `mcp queue` may share it)",
            config.schema
        )))
    }
}

async fn keep(config: PgConfig, mut client: tokio_postgres::Client, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if !client.is_closed() {
            continue;
        }
        tracing::warn!(store = %config, "the journal lock's connection dropped; taking the lock again");
        loop {
            match take(&config).await {
                Ok(again) => {
                    tracing::info!(store = %config, "journal lock held again");
                    client = again;
                    break;
                }
                Err(err @ StoreError::Busy(_)) => tracing::error!(error = %err, "lost the journal to another serve"),
                Err(err) => tracing::warn!(error = %err, "cannot take the journal lock again yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}
