//! The SQL of [`crate::store::Ledger`]: one row per charge, read back by time.

use std::time::Duration;

use rusqlite::{Connection, params};

use super::threads::Effects;
use crate::store::{Millis, Result};

pub fn charge(conn: &Connection, task_id: &str, usd: f64, now: Millis) -> Result<((), Effects)> {
    conn.prepare_cached("INSERT INTO charges (task_id, usd, at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![task_id, usd, now])?;
    Ok(((), Effects::NONE))
}

pub fn charges_within(conn: &Connection, window: Millis, now: Millis) -> Result<Vec<(Duration, f64)>> {
    let mut statement = conn.prepare_cached("SELECT at_ms, usd FROM charges WHERE at_ms > ?1 ORDER BY at_ms, id")?;
    let rows = statement
        .query_map(params![now.saturating_sub(window)], |row| Ok((row.get::<_, Millis>(0)?, row.get::<_, f64>(1)?)))?;
    let mut charges = Vec::new();
    for row in rows {
        let (at, usd) = row?;
        let ago = u64::try_from(now.saturating_sub(at)).unwrap_or(0);
        charges.push((Duration::from_millis(ago), usd));
    }
    Ok(charges)
}
