//! The journal's SQL: one function per [`Journal`](crate::store::Journal) method, in the same
//! file as the queue (tables `actions` and `events`), run by the writer (in its batch's
//! transaction) or the reader thread.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::threads::Effects;
use crate::protocol::WorkerResult;
use crate::store::types::{KEEP_EVENTS, result_value as to_value, shown_action};
use crate::store::{
    ActionRecord, ActionState, EventKind, EventRecord, Millis, Recovery, Result, StoreError, Unfinished,
};

pub fn known(conn: &Connection, task_ids: &[String]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM actions WHERE task_id = ?1")?;
    let mut known = Vec::new();
    for id in task_ids {
        if stmt.exists(params![id])? {
            known.push(id.clone());
        }
    }
    Ok(known)
}

pub fn accept(
    conn: &Connection,
    accepted: &[(String, Value)],
    refused: &[WorkerResult],
    now: Millis,
) -> Result<(Vec<EventRecord>, Effects)> {
    let mut events = Vec::with_capacity(accepted.len() + refused.len());
    for (task_id, action) in accepted {
        conn.prepare_cached(
            "INSERT INTO actions (task_id, action, state, accepted_ms) VALUES (?1, ?2, 'accepted', ?3)",
        )?
        .execute(params![task_id, action.to_string(), now])?;
        events.push(insert_event(conn, task_id, EventKind::Accepted, json!({ "taskId": task_id }), now)?);
    }
    for result in refused {
        let data = to_value(result)?;
        // A refused action with a reused id keeps the first record; its refusal is still an event.
        conn.prepare_cached(
            "INSERT OR IGNORE INTO actions (task_id, action, state, result, accepted_ms, finished_ms)
             VALUES (?1, 'null', 'done', ?2, ?3, ?3)",
        )?
        .execute(params![result.task_id, data.to_string(), now])?;
        events.push(insert_event(conn, &result.task_id, EventKind::Result, data, now)?);
    }
    let effects = if events.is_empty() { Effects::NONE } else { Effects::EVENTS };
    Ok((events, effects))
}

/// Finishing an action: a hot UPDATE, EXPLAINed by `tests::the_hot_updates_run_in_one_pass`.
pub(super) const FINISH_ACTION: &str =
    "UPDATE actions SET state = 'done', result = ?2, finished_ms = ?3 WHERE task_id = ?1 AND state != 'done'";

pub fn started(conn: &Connection, task_id: &str, now: Millis) -> Result<(EventRecord, Effects)> {
    conn.prepare_cached(
        "UPDATE actions SET state = 'running', started_ms = ?2 WHERE task_id = ?1 AND state = 'accepted'",
    )?
    .execute(params![task_id, now])?;
    let event = insert_event(conn, task_id, EventKind::Started, json!({ "taskId": task_id }), now)?;
    Ok((event, Effects::EVENTS))
}

pub fn finish(conn: &Connection, result: &WorkerResult, now: Millis) -> Result<(Option<EventRecord>, Effects)> {
    let data = to_value(result)?;
    let changed = conn.prepare_cached(FINISH_ACTION)?.execute(params![result.task_id, data.to_string(), now])?;
    if changed == 0 {
        return Ok((None, Effects::NONE));
    }
    let event = insert_event(conn, &result.task_id, EventKind::Result, data, now)?;
    conn.prepare_cached("DELETE FROM events WHERE id <= ?1")?.execute(params![event.id - KEEP_EVENTS])?;
    Ok((Some(event), Effects::EVENTS))
}

const RECORD_COLUMNS: &str = "task_id, state, action, result, accepted_ms, started_ms, finished_ms";

type RecordRow = (String, String, String, Option<String>, Millis, Option<Millis>, Option<Millis>);

fn record_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
}

fn record(row: RecordRow) -> Result<ActionRecord> {
    let (task_id, state, action, result, accepted_ms, started_ms, finished_ms) = row;
    let state = ActionState::parse_stored(&task_id, &state)?;
    let action = shown_action(&action);
    let result = result.and_then(|r| serde_json::from_str(&r).ok());
    Ok(ActionRecord { task_id, state, action, result, accepted_ms, started_ms, finished_ms, node: None })
}

pub fn purge_actions(conn: &Connection, before: Millis) -> Result<((u64, u64), Effects)> {
    let actions = conn
        .prepare_cached("DELETE FROM actions WHERE state = 'done' AND finished_ms < ?1")?
        .execute(params![before])?;
    let events = conn.prepare_cached("DELETE FROM events WHERE at_ms < ?1")?.execute(params![before])?;
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Ok(((count(actions), count(events)), Effects::NONE))
}

pub fn action(conn: &Connection, task_id: &str) -> Result<Option<ActionRecord>> {
    let row = conn
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM actions WHERE task_id = ?1"))?
        .query_row(params![task_id], record_row)
        .optional()?;
    row.map(record).transpose()
}

pub fn actions(conn: &Connection, state: Option<ActionState>, limit: u32) -> Result<Vec<ActionRecord>> {
    let state = state.map(ActionState::as_str);
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM actions WHERE ?1 IS NULL OR state = ?1 ORDER BY seq DESC LIMIT ?2"
        ))?
        .query_map(params![state, limit], record_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(record).collect()
}

pub fn events_after(conn: &Connection, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
    let mut stmt = conn.prepare_cached("SELECT id, kind, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(params![after, limit], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (id, kind, data) = row?;
        let kind = EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event {id}: kind {kind}")))?;
        events.push(EventRecord { id, kind, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
    }
    Ok(events)
}

pub fn recover(conn: &Connection) -> Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut stmt = conn.prepare("SELECT task_id, state, action FROM actions WHERE state != 'done' ORDER BY seq")?;
    let rows =
        stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?;
    for row in rows {
        let (task_id, state, action) = row?;
        recovery.add(task_id, &state, &action)?;
    }
    Ok(recovery)
}

pub fn unfinished(conn: &Connection) -> Result<Unfinished> {
    let (accepted, running): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(state = 'accepted'), 0), COALESCE(SUM(state = 'running'), 0) FROM actions",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(Unfinished { accepted: accepted.max(0).unsigned_abs(), running: running.max(0).unsigned_abs() })
}

fn insert_event(conn: &Connection, task_id: &str, kind: EventKind, data: Value, now: Millis) -> Result<EventRecord> {
    conn.prepare_cached("INSERT INTO events (task_id, kind, data, at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![task_id, kind.as_str(), data.to_string(), now])?;
    Ok(EventRecord { id: conn.last_insert_rowid(), kind, data })
}

pub fn requeue(conn: &Connection, task_id: &str, stored: &Value) -> Result<(bool, Effects)> {
    let changed = conn
        .prepare_cached(
            "UPDATE actions SET state = 'accepted', action = ?2, started_ms = NULL WHERE task_id = ?1 AND state = 'running'",
        )?
        .execute(params![task_id, stored.to_string()])?;
    Ok((changed > 0, Effects::NONE))
}

pub fn attempt_failed(conn: &Connection, task_id: &str, kind: &str) -> Result<(bool, Effects)> {
    let stored: Option<String> = conn
        .prepare_cached("SELECT action FROM actions WHERE task_id = ?1 AND state = 'running'")?
        .query_row(params![task_id], |row| row.get(0))
        .optional()?;
    let Some(stored) = stored else { return Ok((false, Effects::NONE)) };
    let stored = crate::store::types::with_failed_attempt(serde_json::from_str(&stored).unwrap_or(Value::Null), kind);
    conn.prepare_cached("UPDATE actions SET action = ?2 WHERE task_id = ?1")?
        .execute(params![task_id, stored.to_string()])?;
    Ok((true, Effects::NONE))
}
