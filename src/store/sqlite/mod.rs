//! [`Store`] on one SQLite file (WAL). One connection per process behind a mutex: SQLite
//! serialises writers anyway, and writes are short. Write transactions start `IMMEDIATE`, so two
//! processes never deadlock upgrading a read lock; `busy_timeout` makes the loser wait.

pub mod db;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::ids::new_id;
use super::{Counts, Millis, Result, Store, StoreError, SubmitOutcome, SweepReport, Task, TaskState};

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second connection, only for checkpoints, so they never hold up the first.
    checkpointer: Mutex<Connection>,
}

const TASK_COLUMNS: &str =
    "id, prompt, state, attempts, owner, lease_expires_ms, response, dead_reason, created_ms, updated_ms";

impl SqliteStore {
    /// Opens `<data_dir>/store.sqlite3`, creating and migrating it as needed.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.to_path_buf(), source })?;
        Self::open_file(&data_dir.join(db::FILE_NAME))
    }

    /// Opens a given SQLite file.
    pub fn open_file(path: &Path) -> Result<Self> {
        let conn = db::open_file(path)?;
        let checkpointer = db::open_file(path)?;
        Ok(Self { conn: Mutex::new(conn), checkpointer: Mutex::new(checkpointer) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind (rusqlite
        // rolls back on drop), so the connection is still good.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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

/// Requeues or dead-letters the leased tasks matched by `condition`.
fn expire_leases(tx: &Connection, condition: &str, reason: &str, now: Millis, max_attempts: u32) -> Result<(u64, u64)> {
    let dead = tx.execute(
        &format!(
            "UPDATE tasks SET state = 'dead', lease_expires_ms = NULL, updated_ms = ?1,
                 dead_reason = ?3 || ' after ' || attempts || ' attempt(s), last worker ' || coalesce(owner, '?')
             WHERE state = 'leased' AND attempts >= ?2 AND ({condition})"
        ),
        params![now, max_attempts, reason],
    )?;
    let requeued = tx.execute(
        &format!(
            "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, updated_ms = ?1
             WHERE state = 'leased' AND ({condition})"
        ),
        params![now],
    )?;
    Ok((to_u64(requeued), to_u64(dead)))
}

impl Store for SqliteStore {
    fn enqueue(&self, prompts: &[String], now: Millis) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(prompts.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tasks (id, prompt, state, created_ms, updated_ms) VALUES (?1, ?2, 'queued', ?3, ?3)",
            )?;
            for prompt in prompts {
                let id = new_id("task", now);
                insert.execute(params![id, prompt, now])?;
                ids.push(id);
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    fn create_worker(&self, now: Millis, active_until: Millis) -> Result<String> {
        let id = new_id("worker", now);
        self.conn().execute(
            "INSERT INTO workers (id, created_ms, last_seen_ms, active_until_ms) VALUES (?1, ?2, ?2, ?3)",
            params![id, now, active_until],
        )?;
        Ok(id)
    }

    fn touch_worker(&self, worker_id: &str, now: Millis, active_until: Millis) -> Result<bool> {
        let changed = self
            .conn()
            .prepare_cached(
                "UPDATE workers SET last_seen_ms = ?2, active_until_ms = max(active_until_ms, ?3) WHERE id = ?1",
            )?
            .execute(params![worker_id, now, active_until])?;
        Ok(changed > 0)
    }

    fn claim(&self, worker_id: &str, now: Millis, lease_until: Millis) -> Result<Option<Task>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let task = tx
            .prepare_cached(&format!(
                "UPDATE tasks SET state = 'leased', owner = ?1, lease_expires_ms = ?3, attempts = attempts + 1,
                     updated_ms = ?2
                 WHERE seq = (SELECT seq FROM tasks WHERE state = 'queued' ORDER BY seq LIMIT 1)
                 RETURNING {TASK_COLUMNS}"
            ))?
            .query_row(params![worker_id, now, lease_until], task_from_row)
            .optional()?;
        if task.is_some() {
            // A worker holding a lease stays active at least as long as the lease.
            tx.prepare_cached("UPDATE workers SET active_until_ms = max(active_until_ms, ?2) WHERE id = ?1")?
                .execute(params![worker_id, lease_until])?;
        }
        tx.commit()?;
        Ok(task)
    }

    fn release(&self, task_id: &str, worker_id: &str, now: Millis) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, attempts = max(attempts - 1, 0),
                 updated_ms = ?3
             WHERE id = ?1 AND owner = ?2 AND state = 'leased'",
            params![task_id, worker_id, now],
        )?;
        Ok(changed > 0)
    }

    fn submit(&self, worker_id: &str, task_id: &str, response: &str, now: Millis) -> Result<SubmitOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let worker_known = tx.prepare_cached("SELECT 1 FROM workers WHERE id = ?1")?.exists(params![worker_id])?;
        if !worker_known {
            return Ok(SubmitOutcome::UnknownWorker);
        }
        let row: Option<(String, Option<String>)> = tx
            .prepare_cached("SELECT state, owner FROM tasks WHERE id = ?1")?
            .query_row(params![task_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((state, owner)) = row else {
            return Ok(SubmitOutcome::UnknownTask);
        };
        let state =
            TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("task {task_id}: state {state}")))?;
        let owned = owner.as_deref() == Some(worker_id);
        let outcome = match state {
            TaskState::Done => SubmitOutcome::AlreadyDone { by: owner },
            TaskState::Dead => SubmitOutcome::Dead,
            TaskState::Leased | TaskState::Queued if owned => {
                tx.prepare_cached(
                    "UPDATE tasks SET state = 'done', response = ?2, lease_expires_ms = NULL, updated_ms = ?3
                     WHERE id = ?1",
                )?
                .execute(params![task_id, response, now])?;
                SubmitOutcome::Accepted
            }
            TaskState::Leased | TaskState::Queued => SubmitOutcome::NotOwner,
        };
        tx.prepare_cached("UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1")?.execute(params![worker_id, now])?;
        tx.commit()?;
        Ok(outcome)
    }

    fn sweep(&self, now: Millis, max_attempts: u32) -> Result<SweepReport> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (requeued, dead) = expire_leases(&tx, "lease_expires_ms <= ?1", "lease expired", now, max_attempts)?;
        let (requeued_w, dead_w) = expire_leases(
            &tx,
            "owner IN (SELECT id FROM workers WHERE active_until_ms < ?1)",
            "worker went inactive",
            now,
            max_attempts,
        )?;
        let workers_removed = tx.execute("DELETE FROM workers WHERE active_until_ms < ?1", params![now])?;
        tx.commit()?;
        Ok(SweepReport {
            requeued: requeued + requeued_w,
            dead: dead + dead_w,
            workers_removed: to_u64(workers_removed),
        })
    }

    fn task(&self, task_id: &str) -> Result<Option<Task>> {
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))?
            .query_row(params![task_id], task_from_row)
            .optional()?)
    }

    fn tasks(&self, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ?1 IS NULL OR state = ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![state.map(TaskState::as_str), limit], task_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn counts(&self) -> Result<Counts> {
        let conn = self.conn();
        let mut counts = Counts::default();
        let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let state: String = row.get(0)?;
            let n: i64 = row.get(1)?;
            let n = u64::try_from(n).unwrap_or(0);
            match TaskState::parse(&state) {
                Some(TaskState::Queued) => counts.queued = n,
                Some(TaskState::Leased) => counts.leased = n,
                Some(TaskState::Done) => counts.done = n,
                Some(TaskState::Dead) => counts.dead = n,
                None => return Err(StoreError::Corrupt(format!("task state {state}"))),
            }
        }
        let workers: i64 = conn.query_row("SELECT count(*) FROM workers", [], |r| r.get(0))?;
        counts.workers = u64::try_from(workers).unwrap_or(0);
        Ok(counts)
    }

    fn any_active_worker(&self, now: Millis) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM workers WHERE active_until_ms >= ?1 LIMIT 1")?
            .exists(params![now])?)
    }

    fn maintain(&self) -> Result<()> {
        let conn = self.checkpointer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // PASSIVE: copies what it can without waiting for, or blocking, readers and writers.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn change_token(&self) -> Result<u64> {
        // data_version changes when another connection commits; our own commits do not change it.
        let version: i64 = self.conn().pragma_query_value(None, "data_version", |r| r.get(0))?;
        Ok(version as u64)
    }
}
