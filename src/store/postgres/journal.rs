//! The journal's SQL on PostgreSQL: one function per [`Journal`](crate::store::Journal) method,
//! run inside the transaction `PgStore` opened.
//!
//! Event ids come from the one-row `event_counter`, incremented in the writing transaction: its
//! row lock serialises event writers until they commit, so ids are gap-free and become visible
//! in order (a sequence would let a reader see id 5 before id 4 commits, and an SSE client
//! resuming after 5 would never see 4).

use serde_json::{Value, json};

use super::pool::Conn;
use crate::protocol::WorkerResult;
use crate::store::types::{KEEP_EVENTS, result_value as to_value, shown_action};
use crate::store::{
    ActionRecord, ActionState, EventKind, EventRecord, Millis, Recovery, Result, StoreError, Unfinished,
};

pub async fn known(c: &Conn, task_ids: &[String]) -> Result<Vec<String>> {
    let select = c.prepare("SELECT task_id FROM actions WHERE task_id = ANY($1)").await?;
    let rows = c.client.query(&select, &[&task_ids]).await?;
    let found: std::collections::HashSet<String> =
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>()?;
    Ok(task_ids.iter().filter(|id| found.contains(*id)).cloned().collect())
}

pub async fn accept(
    c: &Conn,
    accepted: &[(String, Value)],
    refused: &[WorkerResult],
    now: Millis,
) -> Result<Vec<EventRecord>> {
    let mut events = Vec::with_capacity(accepted.len() + refused.len());
    let insert =
        c.prepare("INSERT INTO actions (task_id, action, state, accepted_ms) VALUES ($1, $2, 'accepted', $3)").await?;
    for (task_id, action) in accepted {
        c.client.execute(&insert, &[task_id, &action.to_string(), &now]).await?;
        events.push(insert_event(c, task_id, EventKind::Accepted, json!({ "taskId": task_id }), now).await?);
    }
    // A refused action with a reused id keeps the first record; its refusal is still an event.
    let refuse = c
        .prepare(
            "INSERT INTO actions (task_id, action, state, result, accepted_ms, finished_ms)
             VALUES ($1, 'null', 'done', $2, $3, $3) ON CONFLICT (task_id) DO NOTHING",
        )
        .await?;
    for result in refused {
        let data = to_value(result)?;
        c.client.execute(&refuse, &[&result.task_id, &data.to_string(), &now]).await?;
        events.push(insert_event(c, &result.task_id, EventKind::Result, data, now).await?);
    }
    Ok(events)
}

/// `node`: the cluster node this handle joined as (then only an action it holds may start,
/// and only while the node is alive); `None` before a join.
pub async fn started(c: &Conn, task_id: &str, now: Millis, node: Option<i64>) -> Result<EventRecord> {
    fence_node(c, node).await?;
    let update = c
        .prepare(
            "UPDATE actions SET state = 'running', started_ms = $2
             WHERE task_id = $1 AND state = 'accepted' AND node IS NOT DISTINCT FROM $3",
        )
        .await?;
    if c.client.execute(&update, &[&task_id, &now, &node]).await? == 0 && node.is_some() {
        return Err(StoreError::Fenced(format!("action {task_id} is no longer held by this daemon")));
    }
    insert_event(c, task_id, EventKind::Started, json!({ "taskId": task_id }), now).await
}

pub async fn finish(c: &Conn, result: &WorkerResult, now: Millis, node: Option<i64>) -> Result<Option<EventRecord>> {
    fence_node(c, node).await?;
    let data = to_value(result)?;
    let update = c
        .prepare(
            "UPDATE actions SET state = 'done', result = $2, finished_ms = $3
             WHERE task_id = $1 AND state <> 'done' AND ($4::INT8 IS NULL OR node = $4)",
        )
        .await?;
    if c.client.execute(&update, &[&result.task_id, &data.to_string(), &now, &node]).await? == 0 {
        if node.is_some() {
            // Done already (a second result is refused, as ever), or handed to another node.
            let state = c.prepare("SELECT state FROM actions WHERE task_id = $1").await?;
            let row = c.client.query_opt(&state, &[&result.task_id]).await?;
            if row.is_some_and(|r| r.try_get::<_, String>(0).is_ok_and(|s| s != "done")) {
                return Err(StoreError::Fenced(format!("action {} is held by another daemon", result.task_id)));
            }
        }
        return Ok(None);
    }
    Ok(Some(result_event(c, &result.task_id, data, now).await?))
}

/// The result's event, and the event log trimmed to what is kept.
pub(super) async fn result_event(c: &Conn, task_id: &str, data: Value, now: Millis) -> Result<EventRecord> {
    let event = insert_event(c, task_id, EventKind::Result, data, now).await?;
    let trim = c.prepare("DELETE FROM events WHERE id <= $1").await?;
    c.client.execute(&trim, &[&(event.id - KEEP_EVENTS)]).await?;
    Ok(event)
}

/// Refuses the transaction's writes if `node` was declared dead. The row lock (`FOR SHARE`)
/// orders this against a survivor's declaration: either this commits first (and the survivor
/// then finds the action done) or the declaration does (and this sees `dead`).
pub(super) async fn fence_node(c: &Conn, node: Option<i64>) -> Result<()> {
    let Some(node) = node else { return Ok(()) };
    let select = c.prepare("SELECT state FROM nodes WHERE id = $1 FOR SHARE").await?;
    match c.client.query_opt(&select, &[&node]).await? {
        Some(row) if row.try_get::<_, String>(0)? == "alive" => Ok(()),
        _ => Err(StoreError::Fenced("this daemon was declared dead by another (silent past the node timeout)".into())),
    }
}

pub async fn purge_actions(c: &Conn, before: Millis) -> Result<(u64, u64)> {
    let actions = c.prepare("DELETE FROM actions WHERE state = 'done' AND finished_ms < $1").await?;
    let events = c.prepare("DELETE FROM events WHERE at_ms < $1").await?;
    Ok((c.client.execute(&actions, &[&before]).await?, c.client.execute(&events, &[&before]).await?))
}

/// The columns [`record`] reads (a macro: statements are `&'static str`).
macro_rules! record_columns {
    () => {
        "task_id, state, action, result, accepted_ms, started_ms, finished_ms, \
         (SELECT name FROM nodes WHERE nodes.id = actions.node)"
    };
}

fn record(row: &tokio_postgres::Row) -> Result<ActionRecord> {
    let task_id: String = row.try_get(0)?;
    let state = ActionState::parse_stored(&task_id, &row.try_get::<_, String>(1)?)?;
    let action = shown_action(&row.try_get::<_, String>(2)?);
    let result = row.try_get::<_, Option<String>>(3)?.and_then(|r| serde_json::from_str(&r).ok());
    Ok(ActionRecord {
        task_id,
        state,
        action,
        result,
        accepted_ms: row.try_get(4)?,
        started_ms: row.try_get(5)?,
        finished_ms: row.try_get(6)?,
        node: row.try_get(7)?,
    })
}

pub async fn action(c: &Conn, task_id: &str) -> Result<Option<ActionRecord>> {
    let select = c.prepare(concat!("SELECT ", record_columns!(), " FROM actions WHERE task_id = $1")).await?;
    c.client.query_opt(&select, &[&task_id]).await?.as_ref().map(record).transpose()
}

pub async fn actions(c: &Conn, state: Option<ActionState>, limit: u32) -> Result<Vec<ActionRecord>> {
    let select = c
        .prepare(concat!(
            "SELECT ",
            record_columns!(),
            " FROM actions WHERE $1::TEXT IS NULL OR state = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .await?;
    let state = state.map(ActionState::as_str);
    let rows = c.client.query(&select, &[&state, &i64::from(limit)]).await?;
    rows.iter().map(record).collect()
}

pub async fn events_after(c: &Conn, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
    let select = c.prepare("SELECT id, kind, data FROM events WHERE id > $1 ORDER BY id LIMIT $2").await?;
    let rows = c.client.query(&select, &[&after, &i64::from(limit)]).await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, kind, data): (i64, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let kind = EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event {id}: kind {kind}")))?;
        events.push(EventRecord { id, kind, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
    }
    Ok(events)
}

pub async fn recover(c: &Conn) -> Result<Recovery> {
    let select = c.prepare("SELECT task_id, state, action FROM actions WHERE state <> 'done' ORDER BY seq").await?;
    let mut recovery = Recovery::default();
    for row in c.client.query(&select, &[]).await? {
        recovery.add(row.try_get(0)?, &row.try_get::<_, String>(1)?, &row.try_get::<_, String>(2)?)?;
    }
    Ok(recovery)
}

pub async fn unfinished(c: &Conn) -> Result<Unfinished> {
    let select = c
        .prepare(
            "SELECT count(*) FILTER (WHERE state = 'accepted'), count(*) FILTER (WHERE state = 'running') FROM actions",
        )
        .await?;
    let row = c.client.query_one(&select, &[]).await?;
    let (accepted, running): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(Unfinished { accepted: accepted.max(0).unsigned_abs(), running: running.max(0).unsigned_abs() })
}

async fn insert_event(c: &Conn, task_id: &str, kind: EventKind, data: Value, now: Millis) -> Result<EventRecord> {
    let insert = c
        .prepare(
            "WITH next AS (UPDATE event_counter SET last = last + 1 RETURNING last)
             INSERT INTO events (id, task_id, kind, data, at_ms) SELECT last, $1, $2, $3, $4 FROM next RETURNING id",
        )
        .await?;
    let row = c.client.query_one(&insert, &[&task_id, &kind.as_str(), &data.to_string(), &now]).await?;
    Ok(EventRecord { id: row.try_get(0)?, kind, data })
}

pub async fn requeue(c: &Conn, task_id: &str, stored: &Value) -> Result<bool> {
    let update = c
        .prepare(
            "UPDATE actions SET state = 'accepted', action = $2, started_ms = NULL WHERE task_id = $1 AND state = 'running'",
        )
        .await?;
    Ok(c.client.execute(&update, &[&task_id, &stored.to_string()]).await? > 0)
}

pub async fn attempt_failed(c: &Conn, task_id: &str, kind: &str, node: Option<i64>) -> Result<bool> {
    let select = c
        .prepare(
            "SELECT action FROM actions WHERE task_id = $1 AND state = 'running'
             AND ($2::INT8 IS NULL OR node = $2) FOR UPDATE",
        )
        .await?;
    let Some(row) = c.client.query_opt(&select, &[&task_id, &node]).await? else { return Ok(false) };
    let stored: String = row.try_get(0)?;
    let stored = crate::store::types::with_failed_attempt(serde_json::from_str(&stored).unwrap_or(Value::Null), kind);
    let update = c.prepare("UPDATE actions SET action = $2 WHERE task_id = $1").await?;
    c.client.execute(&update, &[&task_id, &stored.to_string()]).await?;
    Ok(true)
}
