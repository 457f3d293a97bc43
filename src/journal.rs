//! The action journal of `serve`: every accepted action is written down before it is
//! acknowledged, with its state (`accepted` → `running` → `done`) and its `worker_result`, in the
//! same SQLite file as the queue. After a crash, `recover` says what was running (those get an
//! `interrupted` result: no action runs twice unasked) and what had not started (those run).
//!
//! It also keeps the event log behind `GET /v1/events`: one row per event, so a client can resume
//! with `Last-Event-ID`, even across restarts. Blocking, like the store: call from
//! `spawn_blocking`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use crate::protocol::WorkerResult;
use crate::store::{Millis, Result, StoreError};

/// Events kept for resumption; older ones are trimmed.
pub const KEEP_EVENTS: i64 = 100_000;

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    /// `accepted`, `started` or `result`.
    pub kind: String,
    pub data: Value,
}

/// An action as the journal knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub task_id: String,
    pub state: String,
    pub action: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub accepted_ms: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
}

/// What a previous run left unfinished.
#[derive(Debug, Default, PartialEq)]
pub struct Recovery {
    /// Running when the daemon stopped: (task id, what `accept` stored).
    pub interrupted: Vec<(String, Value)>,
    /// Accepted, never started: (task id, what `accept` stored), oldest first.
    pub pending: Vec<(String, Value)>,
}

pub struct Journal {
    conn: Mutex<Connection>,
}

impl Journal {
    /// Opens `<data_dir>/store.sqlite3` (shared with the queue), creating and migrating it.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self { conn: Mutex::new(crate::store::sqlite::db::open_in(data_dir)?) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Which of `task_ids` the journal already holds.
    pub fn known(&self, task_ids: &[String]) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM actions WHERE task_id = ?1")?;
        let mut known = Vec::new();
        for id in task_ids {
            if stmt.exists(params![id])? {
                known.push(id.clone());
            }
        }
        Ok(known)
    }

    /// Records accepted actions (state `accepted`) and refused ones (state `done`, with their
    /// result) in one transaction, with an event each. Returns the events, in order.
    pub fn accept(
        &self,
        accepted: &[(String, Value)],
        refused: &[&WorkerResult],
        now: Millis,
    ) -> Result<Vec<EventRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut events = Vec::new();
        for (task_id, action) in accepted {
            tx.execute(
                "INSERT INTO actions (task_id, action, state, accepted_ms) VALUES (?1, ?2, 'accepted', ?3)",
                params![task_id, action.to_string(), now],
            )?;
            events.push(insert_event(&tx, task_id, "accepted", &serde_json::json!({ "taskId": task_id }), now)?);
        }
        for result in refused {
            let data = to_value(result)?;
            // A refused action with a reused id keeps the first record; its refusal is still an event.
            tx.execute(
                "INSERT OR IGNORE INTO actions (task_id, action, state, result, accepted_ms, finished_ms)
                 VALUES (?1, 'null', 'done', ?2, ?3, ?3)",
                params![result.task_id, data.to_string(), now],
            )?;
            events.push(insert_event(&tx, &result.task_id, "result", &data, now)?);
        }
        tx.commit()?;
        Ok(events)
    }

    /// Marks an action as running.
    pub fn started(&self, task_id: &str, now: Millis) -> Result<EventRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE actions SET state = 'running', started_ms = ?2 WHERE task_id = ?1 AND state = 'accepted'",
            params![task_id, now],
        )?;
        let event = insert_event(&tx, task_id, "started", &serde_json::json!({ "taskId": task_id }), now)?;
        tx.commit()?;
        Ok(event)
    }

    /// Records an action's one result. A second result for the same action is refused (`None`).
    pub fn finish(&self, result: &WorkerResult, now: Millis) -> Result<Option<EventRecord>> {
        let data = to_value(result)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE actions SET state = 'done', result = ?2, finished_ms = ?3 WHERE task_id = ?1 AND state != 'done'",
            params![result.task_id, data.to_string(), now],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let event = insert_event(&tx, &result.task_id, "result", &data, now)?;
        tx.execute("DELETE FROM events WHERE id <= ?1", params![event.id - KEEP_EVENTS])?;
        tx.commit()?;
        Ok(Some(event))
    }

    pub fn get(&self, task_id: &str) -> Result<Option<ActionRecord>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT task_id, state, action, result, accepted_ms, started_ms, finished_ms FROM actions WHERE task_id = ?1",
            params![task_id],
            |row| {
                let action: String = row.get(2)?;
                let result: Option<String> = row.get(3)?;
                // `accept` stores `{"index": i, "action": {...}}`; show the action itself.
                let mut stored: Value = serde_json::from_str(&action).unwrap_or(Value::Null);
                let action = match stored.get_mut("action") {
                    Some(inner) => inner.take(),
                    None => stored,
                };
                Ok(ActionRecord {
                    task_id: row.get(0)?,
                    state: row.get(1)?,
                    action,
                    result: result.and_then(|r| serde_json::from_str(&r).ok()),
                    accepted_ms: row.get(4)?,
                    started_ms: row.get(5)?,
                    finished_ms: row.get(6)?,
                })
            },
        )
        .optional()
        .map_err(StoreError::from)
    }

    /// Events with an id above `after`, oldest first, at most `limit`.
    pub fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, kind, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = stmt.query_map(params![after, limit], |row| {
            let data: String = row.get(2)?;
            Ok(EventRecord {
                id: row.get(0)?,
                kind: row.get(1)?,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// What the previous run left: running actions and not-yet-started ones.
    pub fn recover(&self) -> Result<Recovery> {
        let conn = self.conn();
        let mut recovery = Recovery::default();
        let mut stmt = conn.prepare("SELECT task_id, state, action FROM actions WHERE state != 'done' ORDER BY seq")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?;
        for row in rows {
            let (task_id, state, action) = row?;
            let action =
                serde_json::from_str(&action).map_err(|e| StoreError::Corrupt(format!("action {task_id}: {e}")))?;
            if state == "running" {
                recovery.interrupted.push((task_id, action));
            } else {
                recovery.pending.push((task_id, action));
            }
        }
        Ok(recovery)
    }

    /// How many actions are in each unfinished state: (accepted, running).
    pub fn unfinished_counts(&self) -> Result<(u64, u64)> {
        let conn = self.conn();
        let (accepted, running): (i64, i64) = conn.query_row(
            "SELECT COALESCE(SUM(state = 'accepted'), 0), COALESCE(SUM(state = 'running'), 0) FROM actions",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((accepted.max(0).unsigned_abs(), running.max(0).unsigned_abs()))
    }
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    task_id: &str,
    kind: &str,
    data: &Value,
    now: Millis,
) -> Result<EventRecord> {
    tx.execute(
        "INSERT INTO events (task_id, kind, data, at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![task_id, kind, data.to_string(), now],
    )?;
    Ok(EventRecord { id: tx.last_insert_rowid(), kind: kind.to_owned(), data: data.clone() })
}

fn to_value(result: &WorkerResult) -> Result<Value> {
    serde_json::to_value(result).map_err(|e| StoreError::Corrupt(format!("cannot serialise a result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorKind, Origin, WorkerError};
    use serde_json::json;

    fn result(id: &str, kind: Option<ErrorKind>) -> WorkerResult {
        let mut r = WorkerResult::failure(id, Origin::default(), WorkerError::new(ErrorKind::Timeout, "x", true));
        match kind {
            None => {
                r.success = true;
                r.error = None;
            }
            Some(kind) => r.error = Some(WorkerError::new(kind, "x", true)),
        }
        r
    }

    #[test]
    fn lifecycle_recovery_and_resumable_events() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let a = json!({"type":"spawn_worker","taskId":"a","task":"t","servers":["fs"]});
        let b = json!({"type":"spawn_worker","taskId":"b","task":"t","servers":["fs"]});
        let c = json!({"type":"spawn_worker","taskId":"c","task":"t","servers":["fs"]});
        let refused = result("r", Some(ErrorKind::InvalidAction));
        let events = journal
            .accept(&[("a".into(), a.clone()), ("b".into(), b.clone()), ("c".into(), c.clone())], &[&refused], 1)
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["accepted", "accepted", "accepted", "result"]
        );
        assert_eq!(journal.known(&["a".into(), "zz".into(), "r".into()]).unwrap(), ["a", "r"]);
        journal.started("a", 2).unwrap();
        journal.started("b", 2).unwrap();
        assert!(journal.finish(&result("b", None), 3).unwrap().is_some());
        assert!(journal.finish(&result("b", Some(ErrorKind::Timeout)), 4).unwrap().is_none(), "one result only");
        assert_eq!(journal.get("b").unwrap().unwrap().result.unwrap()["success"], true);
        assert_eq!(journal.unfinished_counts().unwrap(), (1, 1));
        drop(journal);

        // A restart: the file still knows everything.
        let journal = Journal::open(dir.path()).unwrap();
        let recovery = journal.recover().unwrap();
        assert_eq!(recovery.interrupted, [("a".to_owned(), a)]);
        assert_eq!(recovery.pending, [("c".to_owned(), c)]);
        let all = journal.events_after(0, 100).unwrap();
        assert_eq!(all.len(), 7);
        let rest = journal.events_after(all[4].id, 100).unwrap();
        assert_eq!(rest.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["started", "result"]);
    }
}
