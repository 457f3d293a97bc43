//! The SQL of [`crate::store::Ledger`] on PostgreSQL (table `charges`, migration 2): one row per
//! charge, read back by the database's time, so every daemon on the schema shares the budget's
//! windows.

use std::time::Duration;

use super::pool::Conn;
use crate::store::{Millis, Result};

pub async fn charge(c: &Conn, task_id: &str, usd: f64, now: Millis) -> Result<()> {
    let insert = c.prepare("INSERT INTO charges (task_id, usd, at_ms) VALUES ($1, $2, $3)").await?;
    c.client.execute(&insert, &[&task_id, &usd, &now]).await?;
    Ok(())
}

pub async fn charges_within(c: &Conn, window: Millis, now: Millis) -> Result<Vec<(Duration, f64)>> {
    let select = c.prepare("SELECT at_ms, usd FROM charges WHERE at_ms > $1 ORDER BY at_ms, id").await?;
    let rows = c.client.query(&select, &[&now.saturating_sub(window)]).await?;
    let mut charges = Vec::with_capacity(rows.len());
    for row in rows {
        let (at, usd): (Millis, f64) = (row.try_get(0)?, row.try_get(1)?);
        let ago = u64::try_from(now.saturating_sub(at)).unwrap_or(0);
        charges.push((Duration::from_millis(ago), usd));
    }
    Ok(charges)
}
