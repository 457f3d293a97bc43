//! The queue's SQL: one function per [`QueueStore`](crate::store::QueueStore) method, run by the
//! writer (in its batch's transaction) or the reader thread.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::threads::Effects;
use crate::store::ids::new_id;
use crate::store::{Counts, Millis, Result, StoreError, SubmitOutcome, SweepReport, Task, TaskState};

/// The columns [`task_from_row`] reads, in its order: a macro, so that every statement naming
/// them is a literal (no `format!` per call, before the statement cache hashes it).
macro_rules! task_columns {
    () => {
        "id, prompt, state, attempts, owner, lease_expires_ms, response, dead_reason, created_ms, updated_ms"
    };
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let state: String = row.get(2)?;
    let state = TaskState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, format!("bad state {state}").into())
    })?;
    Ok(Task {
        id: row.get(0)?,
        prompt: row.get(1)?,
        state,
        attempts: row.get(3)?,
        owner: row.get(4)?,
        lease_expires_ms: row.get(5)?,
        response: row.get(6)?,
        dead_reason: row.get(7)?,
        created_ms: row.get(8)?,
        updated_ms: row.get(9)?,
    })
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub fn enqueue(conn: &Connection, prompts: &[String], now: Millis) -> Result<(Vec<String>, Effects)> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO tasks (id, prompt, state, created_ms, updated_ms) VALUES (?1, ?2, 'queued', ?3, ?3)",
    )?;
    let mut ids = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let id = new_id("task", now);
        insert.execute(params![id, prompt, now])?;
        ids.push(id);
    }
    let effects = if ids.is_empty() { Effects::NONE } else { Effects::TASKS };
    Ok((ids, effects))
}

pub fn create_worker(conn: &Connection, now: Millis, active_until: Millis) -> Result<(String, Effects)> {
    let id = new_id("worker", now);
    conn.prepare_cached("INSERT INTO workers (id, created_ms, last_seen_ms, active_until_ms) VALUES (?1, ?2, ?2, ?3)")?
        .execute(params![id, now, active_until])?;
    Ok((id, Effects::NONE))
}

/// The hot UPDATEs, named for `tests::the_hot_updates_run_in_one_pass`, which EXPLAINs them.
pub(super) const TOUCH_WORKER: &str =
    "UPDATE workers SET last_seen_ms = ?2, active_until_ms = max(active_until_ms, ?3) WHERE id = ?1";
pub(super) const LEASE_TASK: &str = "UPDATE tasks SET state = 'leased', owner = ?1, lease_expires_ms = ?3,
     attempts = attempts + 1, updated_ms = ?2 WHERE seq = ?4";
pub(super) const FINISH_TASK: &str =
    "UPDATE tasks SET state = 'done', response = ?2, lease_expires_ms = NULL, updated_ms = ?3 WHERE id = ?1";

pub fn touch_worker(conn: &Connection, worker_id: &str, now: Millis, active_until: Millis) -> Result<(bool, Effects)> {
    let changed = conn.prepare_cached(TOUCH_WORKER)?.execute(params![worker_id, now, active_until])?;
    Ok((changed > 0, Effects::NONE))
}

pub fn claim(conn: &Connection, worker_id: &str, now: Millis, lease_until: Millis) -> Result<(Option<Task>, Effects)> {
    // The oldest queued task, then its lease, in the caller's write transaction (nothing else
    // changes the row in between); the answer is the row as read with the lease applied. Not
    // one `UPDATE ... RETURNING`: SQLite gathers returned rows in an ephemeral table, made and
    // dropped per statement, which was a fifth of a claim's instructions (BENCHMARKS.md, issue 13).
    let next = conn
        .prepare_cached(concat!(
            "SELECT ",
            task_columns!(),
            ", seq FROM tasks WHERE state = 'queued' ORDER BY seq LIMIT 1"
        ))?
        .query_row([], |row| Ok((task_from_row(row)?, row.get::<_, i64>(10)?)))
        .optional()?;
    let Some((mut task, seq)) = next else { return Ok((None, Effects::NONE)) };
    conn.prepare_cached(LEASE_TASK)?.execute(params![worker_id, now, lease_until, seq])?;
    task.state = TaskState::Leased;
    task.owner = Some(worker_id.to_owned());
    task.lease_expires_ms = Some(lease_until);
    task.attempts = task.attempts.saturating_add(1);
    task.updated_ms = now;
    // A worker holding a lease stays active at least as long as the lease.
    conn.prepare_cached("UPDATE workers SET active_until_ms = max(active_until_ms, ?2) WHERE id = ?1")?
        .execute(params![worker_id, lease_until])?;
    Ok((Some(task), Effects::NONE))
}

pub fn release(conn: &Connection, task_id: &str, worker_id: &str, now: Millis) -> Result<(bool, Effects)> {
    let changed = conn
        .prepare_cached(
            "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, attempts = max(attempts - 1, 0),
                 updated_ms = ?3
             WHERE id = ?1 AND owner = ?2 AND state = 'leased'",
        )?
        .execute(params![task_id, worker_id, now])?;
    Ok((changed > 0, if changed > 0 { Effects::TASKS } else { Effects::NONE }))
}

pub fn submit(
    conn: &Connection,
    worker_id: &str,
    task_id: &str,
    response: &str,
    now: Millis,
) -> Result<(SubmitOutcome, Effects)> {
    let worker_known = conn.prepare_cached("SELECT 1 FROM workers WHERE id = ?1")?.exists(params![worker_id])?;
    if !worker_known {
        return Ok((SubmitOutcome::UnknownWorker, Effects::NONE));
    }
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT state, owner FROM tasks WHERE id = ?1")?
        .query_row(params![task_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((state, owner)) = row else {
        return Ok((SubmitOutcome::UnknownTask, Effects::NONE));
    };
    let state =
        TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("task {task_id}: state {state}")))?;
    let owned = owner.as_deref() == Some(worker_id);
    let outcome = match state {
        TaskState::Done => SubmitOutcome::AlreadyDone { by: owner },
        TaskState::Dead => SubmitOutcome::Dead,
        TaskState::Leased | TaskState::Queued if owned => {
            conn.prepare_cached(FINISH_TASK)?.execute(params![task_id, response, now])?;
            SubmitOutcome::Accepted
        }
        TaskState::Leased | TaskState::Queued => SubmitOutcome::NotOwner,
    };
    conn.prepare_cached("UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1")?.execute(params![worker_id, now])?;
    Ok((outcome, Effects::NONE))
}

/// Requeues or dead-letters the leased tasks matched by `condition`.
fn expire_leases(
    conn: &Connection,
    condition: &str,
    reason: &str,
    now: Millis,
    max_attempts: u32,
) -> Result<(u64, u64)> {
    let dead = conn.execute(
        &format!(
            "UPDATE tasks SET state = 'dead', lease_expires_ms = NULL, updated_ms = ?1,
                 dead_reason = ?3 || ' after ' || attempts || ' attempt(s), last worker ' || coalesce(owner, '?')
             WHERE state = 'leased' AND attempts >= ?2 AND ({condition})"
        ),
        params![now, max_attempts, reason],
    )?;
    let requeued = conn.execute(
        &format!(
            "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, updated_ms = ?1
             WHERE state = 'leased' AND ({condition})"
        ),
        params![now],
    )?;
    Ok((to_u64(requeued), to_u64(dead)))
}

pub fn sweep(conn: &Connection, now: Millis, max_attempts: u32) -> Result<(SweepReport, Effects)> {
    let (requeued, dead) = expire_leases(conn, "lease_expires_ms <= ?1", "lease expired", now, max_attempts)?;
    let (requeued_w, dead_w) = expire_leases(
        conn,
        "owner IN (SELECT id FROM workers WHERE active_until_ms < ?1)",
        "worker went inactive",
        now,
        max_attempts,
    )?;
    let workers_removed = conn.execute("DELETE FROM workers WHERE active_until_ms < ?1", params![now])?;
    let report =
        SweepReport { requeued: requeued + requeued_w, dead: dead + dead_w, workers_removed: to_u64(workers_removed) };
    Ok((report, if report.requeued > 0 { Effects::TASKS } else { Effects::NONE }))
}

pub fn purge_tasks(conn: &Connection, before: Millis) -> Result<(u64, Effects)> {
    let n = conn
        .prepare_cached("DELETE FROM tasks WHERE state IN ('done', 'dead') AND updated_ms < ?1")?
        .execute(params![before])?;
    Ok((to_u64(n), Effects::NONE))
}

pub fn task(conn: &Connection, task_id: &str) -> Result<Option<Task>> {
    Ok(conn
        .prepare_cached(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ?1"))?
        .query_row(params![task_id], task_from_row)
        .optional()?)
}

pub fn tasks(conn: &Connection, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE ?1 IS NULL OR state = ?1 ORDER BY seq LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![state.map(TaskState::as_str), limit], task_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn counts(conn: &Connection) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        counts.add_state(&row.get::<_, String>(0)?, row.get(1)?)?;
    }
    let workers: i64 = conn.query_row("SELECT count(*) FROM workers", [], |r| r.get(0))?;
    counts.workers = u64::try_from(workers).unwrap_or(0);
    Ok(counts)
}

pub fn any_active_worker(conn: &Connection, now: Millis) -> Result<bool> {
    Ok(conn.prepare_cached("SELECT 1 FROM workers WHERE active_until_ms >= ?1 LIMIT 1")?.exists(params![now])?)
}
