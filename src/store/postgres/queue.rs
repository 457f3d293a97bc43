//! The queue's SQL on PostgreSQL: one function per [`QueueStore`](crate::store::QueueStore)
//! method, run inside the transaction `PgStore` opened; `now` is the transaction's time (the
//! database clock, or the tests' manual clock).

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::pool::Conn;
use crate::store::ids::new_id;
use crate::store::{Counts, Millis, Result, StoreError, SubmitOutcome, SweepReport, Task, TaskState};

macro_rules! task_columns {
    () => {
        "id, prompt, state, attempts, owner, lease_expires_ms, response, dead_reason, created_ms, updated_ms"
    };
}

fn task_from_row(row: &Row) -> Result<Task> {
    let state: String = row.try_get(2)?;
    let state = TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("task state {state}")))?;
    let attempts: i32 = row.try_get(3)?;
    Ok(Task {
        id: row.try_get(0)?,
        prompt: row.try_get(1)?,
        state,
        attempts: u32::try_from(attempts).unwrap_or(0),
        owner: row.try_get(4)?,
        lease_expires_ms: row.try_get(5)?,
        response: row.try_get(6)?,
        dead_reason: row.try_get(7)?,
        created_ms: row.try_get(8)?,
        updated_ms: row.try_get(9)?,
    })
}

pub async fn enqueue(c: &Conn, prompts: &[String], now: Millis) -> Result<Vec<String>> {
    // One statement for the whole batch; `seq` is assigned in the arrays' order.
    let insert = c
        .prepare(
            "INSERT INTO tasks (id, prompt, state, created_ms, updated_ms)
             SELECT id, prompt, 'queued', $3, $3 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(id, prompt, n)
             ORDER BY n",
        )
        .await?;
    let ids: Vec<String> = prompts.iter().map(|_| new_id("task", now)).collect();
    c.client.execute(&insert, &[&ids, &prompts, &now]).await?;
    Ok(ids)
}

pub async fn create_worker(c: &Conn, now: Millis, active_until: Millis) -> Result<String> {
    let id = new_id("worker", now);
    let insert = c
        .prepare("INSERT INTO workers (id, created_ms, last_seen_ms, active_until_ms) VALUES ($1, $2, $2, $3)")
        .await?;
    c.client.execute(&insert, &[&id, &now, &active_until]).await?;
    Ok(id)
}

pub async fn touch_worker(c: &Conn, worker_id: &str, now: Millis, active_until: Millis) -> Result<bool> {
    let update = c
        .prepare("UPDATE workers SET last_seen_ms = $2, active_until_ms = greatest(active_until_ms, $3) WHERE id = $1")
        .await?;
    Ok(c.client.execute(&update, &[&worker_id, &now, &active_until]).await? > 0)
}

pub async fn claim(c: &Conn, worker_id: &str, now: Millis, lease_until: Millis) -> Result<Option<Task>> {
    // The oldest queued task not locked by another claim in flight; the lock is held until
    // this transaction commits, so two claims never take one task. A worker holding a lease
    // stays active at least as long as the lease (the second update, in the same statement).
    let claim = c
        .prepare(concat!(
            "WITH claimed AS (
                 UPDATE tasks SET state = 'leased', owner = $1, lease_expires_ms = $3, attempts = attempts + 1,
                     updated_ms = $2
                 WHERE seq = (SELECT seq FROM tasks WHERE state = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING ",
            task_columns!(),
            "
             ), kept AS (
                 UPDATE workers SET active_until_ms = greatest(active_until_ms, $3)
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM claimed)
             )
             SELECT ",
            task_columns!(),
            " FROM claimed"
        ))
        .await?;
    c.client.query_opt(&claim, &[&worker_id, &now, &lease_until]).await?.as_ref().map(task_from_row).transpose()
}

pub async fn release(c: &Conn, task_id: &str, worker_id: &str, now: Millis) -> Result<bool> {
    let release = c
        .prepare(
            "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, attempts = greatest(attempts - 1, 0),
                 updated_ms = $3
             WHERE id = $1 AND owner = $2 AND state = 'leased'",
        )
        .await?;
    Ok(c.client.execute(&release, &[&task_id, &worker_id, &now]).await? > 0)
}

pub async fn submit(c: &Conn, worker_id: &str, task_id: &str, response: &str, now: Millis) -> Result<SubmitOutcome> {
    let worker = c.prepare("SELECT 1 FROM workers WHERE id = $1").await?;
    // FOR UPDATE: a sweep or claim in flight on this task finishes first (or waits for us).
    let task = c.prepare("SELECT state, owner FROM tasks WHERE id = $1 FOR UPDATE").await?;
    // Both in one round trip.
    let (worker_params, task_params): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&worker_id], [&task_id]);
    let (worker, task) =
        tokio::join!(c.client.query_opt(&worker, &worker_params), c.client.query_opt(&task, &task_params));
    if worker?.is_none() {
        return Ok(SubmitOutcome::UnknownWorker);
    }
    let Some(row) = task? else {
        return Ok(SubmitOutcome::UnknownTask);
    };
    let (state, owner): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    let state =
        TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("task {task_id}: state {state}")))?;
    let owned = owner.as_deref() == Some(worker_id);
    let outcome = match state {
        TaskState::Done => SubmitOutcome::AlreadyDone { by: owner },
        TaskState::Dead => SubmitOutcome::Dead,
        TaskState::Leased | TaskState::Queued if owned => {
            let done = c
                .prepare(
                    "UPDATE tasks SET state = 'done', response = $2, lease_expires_ms = NULL, updated_ms = $3
                     WHERE id = $1",
                )
                .await?;
            c.client.execute(&done, &[&task_id, &response, &now]).await?;
            SubmitOutcome::Accepted
        }
        TaskState::Leased | TaskState::Queued => SubmitOutcome::NotOwner,
    };
    let seen = c.prepare("UPDATE workers SET last_seen_ms = $2 WHERE id = $1").await?;
    c.client.execute(&seen, &[&worker_id, &now]).await?;
    Ok(outcome)
}

/// The two kinds of expired leases a sweep handles, with their SQL (dead-letter, then requeue).
const EXPIRED: [(&str, &str); 2] = [
    (
        "UPDATE tasks SET state = 'dead', lease_expires_ms = NULL, updated_ms = $1,
             dead_reason = 'lease expired after ' || attempts || ' attempt(s), last worker ' || coalesce(owner, '?')
         WHERE state = 'leased' AND attempts >= $2 AND lease_expires_ms <= $1",
        "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, updated_ms = $1
         WHERE state = 'leased' AND lease_expires_ms <= $1",
    ),
    (
        "UPDATE tasks SET state = 'dead', lease_expires_ms = NULL, updated_ms = $1,
             dead_reason = 'worker went inactive after ' || attempts || ' attempt(s), last worker ' || coalesce(owner, '?')
         WHERE state = 'leased' AND attempts >= $2
           AND owner IN (SELECT id FROM workers WHERE active_until_ms < $1)",
        "UPDATE tasks SET state = 'queued', lease_expires_ms = NULL, updated_ms = $1
         WHERE state = 'leased' AND owner IN (SELECT id FROM workers WHERE active_until_ms < $1)",
    ),
];

pub async fn sweep(c: &Conn, now: Millis, max_attempts: u32) -> Result<SweepReport> {
    let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let mut report = SweepReport::default();
    for (dead_sql, requeue_sql) in EXPIRED {
        let dead = c.prepare(dead_sql).await?;
        report.dead += c.client.execute(&dead, &[&now, &max_attempts]).await?;
        let requeue = c.prepare(requeue_sql).await?;
        report.requeued += c.client.execute(&requeue, &[&now]).await?;
    }
    let remove = c.prepare("DELETE FROM workers WHERE active_until_ms < $1").await?;
    report.workers_removed = c.client.execute(&remove, &[&now]).await?;
    Ok(report)
}

pub async fn purge_tasks(c: &Conn, before: Millis) -> Result<u64> {
    let delete = c.prepare("DELETE FROM tasks WHERE state IN ('done', 'dead') AND updated_ms < $1").await?;
    Ok(c.client.execute(&delete, &[&before]).await?)
}

pub async fn task(c: &Conn, task_id: &str) -> Result<Option<Task>> {
    let select = c.prepare(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1")).await?;
    c.client.query_opt(&select, &[&task_id]).await?.as_ref().map(task_from_row).transpose()
}

pub async fn tasks(c: &Conn, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>> {
    let select = c
        .prepare(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE $1::text IS NULL OR state = $1 ORDER BY seq LIMIT $2"
        ))
        .await?;
    let rows = c.client.query(&select, &[&state.map(TaskState::as_str), &i64::from(limit)]).await?;
    rows.iter().map(task_from_row).collect()
}

pub async fn counts(c: &Conn) -> Result<Counts> {
    let mut counts = Counts::default();
    let by_state = c.prepare("SELECT state, count(*) FROM tasks GROUP BY state").await?;
    for row in c.client.query(&by_state, &[]).await? {
        counts.add_state(&row.try_get::<_, String>(0)?, row.try_get(1)?)?;
    }
    let workers = c.prepare("SELECT count(*) FROM workers").await?;
    let n: i64 = c.client.query_one(&workers, &[]).await?.try_get(0)?;
    counts.workers = u64::try_from(n).unwrap_or(0);
    Ok(counts)
}

pub async fn any_active_worker(c: &Conn, now: Millis) -> Result<bool> {
    let select = c.prepare("SELECT 1 FROM workers WHERE active_until_ms >= $1 LIMIT 1").await?;
    Ok(c.client.query_opt(&select, &[&now]).await?.is_some())
}
