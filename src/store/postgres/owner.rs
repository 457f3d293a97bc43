//! One live daemon per node name: a session advisory lock on `<schema>:node:<name>`, on a
//! connection of its own, held while the store lives. Holding it is what lets a restarted
//! daemon declare its earlier incarnation dead at once (that one's lock went with its session),
//! and it refuses a second daemon under the same name. If the lock's connection drops (a
//! database restart), it is taken again as soon as the database answers; if another daemon took
//! it meanwhile, that is logged as an error every time it is tried.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::PgConfig;
use crate::store::{Result, StoreError};

const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a start waits for a name held by a session that may be ending.
const TAKE_PATIENCE: Duration = Duration::from_secs(3);

/// Takes the lock of `name` (an error if another daemon holds it) and keeps it in the
/// background.
pub(super) async fn start(config: PgConfig, name: String, stop: CancellationToken) -> Result<()> {
    // A daemon killed a moment ago: the database may not have noticed its session end yet.
    let patience = tokio::time::Instant::now() + TAKE_PATIENCE;
    let client = loop {
        match take(&config, &name).await {
            Err(StoreError::Busy(_)) if tokio::time::Instant::now() < patience => {
                tokio::time::sleep(CHECK_EVERY / 5).await;
            }
            taken => break taken?,
        }
    };
    tokio::spawn(keep(config, name, client, stop));
    Ok(())
}

async fn take(config: &PgConfig, name: &str) -> Result<tokio_postgres::Client> {
    let client = super::pool::connect(config, None).await?;
    let key = format!("{}:node:{name}", config.schema);
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&super::schema::LOCK_CLASS, &key])
        .await?
        .try_get(0)?;
    if got {
        Ok(client)
    } else {
        Err(StoreError::Busy(format!(
            "another daemon named `{name}` already serves schema {} at {config}; give each daemon its own \
             --node-name (MCP_WORKERS_NODE_NAME)",
            config.schema
        )))
    }
}

async fn keep(config: PgConfig, name: String, mut client: tokio_postgres::Client, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if !client.is_closed() {
            continue;
        }
        tracing::warn!(store = %config, "the node name lock's connection dropped; taking the lock again");
        loop {
            match take(&config, &name).await {
                Ok(again) => {
                    tracing::info!(store = %config, "node name lock held again");
                    client = again;
                    break;
                }
                Err(err @ StoreError::Busy(_)) => tracing::error!(error = %err, "lost the node name to another daemon"),
                Err(err) => tracing::warn!(error = %err, "cannot take the node name lock again yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}
