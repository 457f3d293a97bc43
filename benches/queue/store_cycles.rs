//! The store alone: claim+submit cycles per second on `SqliteStore`, against the same SQL run
//! the way the store ran it before (one transaction per call, through `spawn_blocking`, on one
//! connection behind a mutex), in the same run, on the same kind of file.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_workers::store::sqlite::db;
use mcp_workers::store::{QueueStore, SqliteStore, now_ms};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

const TASKS: usize = 4000;

/// Cycles/s of `callers` concurrent workers each claiming and submitting until the queue is empty.
async fn ours(callers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let prompts: Vec<String> = (0..TASKS).map(|i| format!("p{i}")).collect();
    store.enqueue(&prompts).await.expect("enqueue");
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let w = store.create_worker(Duration::from_secs(600)).await.expect("worker");
                while let Some(t) = store.claim(&w, Duration::from_secs(60)).await.expect("claim") {
                    store.submit(&w, &t.id, "ok").await.expect("submit");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    TASKS as f64 / started.elapsed().as_secs_f64()
}

fn claim(conn: &mut Connection, worker: &str) -> rusqlite::Result<Option<String>> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = tx
        .prepare_cached(
            "UPDATE tasks SET state = 'leased', owner = ?1, lease_expires_ms = ?2, attempts = attempts + 1,
                 updated_ms = ?2
             WHERE seq = (SELECT seq FROM tasks WHERE state = 'queued' ORDER BY seq LIMIT 1) RETURNING id",
        )?
        .query_row(params![worker, now + 60_000], |r| r.get::<_, String>(0))
        .optional()?;
    if id.is_some() {
        tx.prepare_cached("UPDATE workers SET active_until_ms = max(active_until_ms, ?2) WHERE id = ?1")?
            .execute(params![worker, now + 60_000])?;
    }
    tx.commit()?;
    Ok(id)
}

fn submit(conn: &mut Connection, worker: &str, task: &str) -> rusqlite::Result<()> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached("SELECT 1 FROM workers WHERE id = ?1")?.exists(params![worker])?;
    tx.prepare_cached("SELECT state, owner FROM tasks WHERE id = ?1")?
        .query_row(params![task], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?;
    tx.prepare_cached(
        "UPDATE tasks SET state = 'done', response = 'ok', lease_expires_ms = NULL, updated_ms = ?2 WHERE id = ?1",
    )?
    .execute(params![task, now])?;
    tx.prepare_cached("UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1")?.execute(params![worker, now])?;
    tx.commit()
}

/// The baseline: the same statements, one transaction per call via `spawn_blocking`.
async fn per_call_blocking(callers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = SqliteStore::open(dir.path()).expect("store");
    let prompts: Vec<String> = (0..TASKS).map(|i| format!("p{i}")).collect();
    seed.enqueue(&prompts).await.expect("enqueue");
    let worker = seed.create_worker(Duration::from_secs(600)).await.expect("worker");
    drop(seed);
    let conn = Arc::new(Mutex::new(db::open_file(&dir.path().join(db::FILE_NAME)).expect("conn")));
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (conn, w) = (Arc::clone(&conn), worker.clone());
            tokio::spawn(async move {
                loop {
                    let (c, w1) = (Arc::clone(&conn), w.clone());
                    let claimed = tokio::task::spawn_blocking(move || claim(&mut c.lock().expect("conn"), &w1))
                        .await
                        .expect("join")
                        .expect("claim");
                    let Some(task) = claimed else { break };
                    let (c, w1) = (Arc::clone(&conn), w.clone());
                    tokio::task::spawn_blocking(move || submit(&mut c.lock().expect("conn"), &w1, &task))
                        .await
                        .expect("join")
                        .expect("submit");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    TASKS as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn report() {
    println!("## the store alone: claim+submit cycles/s ({TASKS} tasks, median of 3 runs, alternating)");
    for callers in [1, 16] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            a.push(ours(callers).await);
            b.push(per_call_blocking(callers).await);
        }
        let (a, b) = (median(a), median(b));
        println!(
            "{callers:>2} caller(s): SqliteStore (writer thread, group commit) {a:.0}/s; baseline (spawn_blocking, one transaction per call) {b:.0}/s; ratio {:.2}",
            a / b
        );
    }
}
