//! The SQLite backend of [`QueueStore`] and [`Journal`]: one file, `<data-dir>/store.sqlite3`
//! (WAL), shared by the queue and the journal, and by every process that opens the data dir.
//!
//! Per handle: a writer thread owning the write connection (group commit: every write waiting
//! at that moment in one `IMMEDIATE` transaction, each answered after the commit), a reader
//! thread with its own connection, and a third connection for WAL checkpoints
//! ([`QueueStore::maintain`]), so none of them holds up the others. See `threads.rs`.
//! Processes never deadlock upgrading a read lock (writes start `IMMEDIATE`); `busy_timeout`
//! makes the loser wait.

pub mod db;
mod journal;
mod ledger;
mod queue;
#[cfg(test)]
mod tests;
mod threads;

use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use serde_json::Value;

use self::threads::{Feeds, Msg, ReadJob, read, write};
use super::changes::{ChangeFeed, Demand};
use super::clock::millis;
use super::{
    ActionRecord, ActionState, Changes, Clock, Counts, EventRecord, Journal, Ledger, QueueStore, Recovery, Result,
    StoreError, SubmitOutcome, SweepReport, Task, TaskState, Unfinished,
};
use crate::protocol::WorkerResult;

pub struct SqliteStore {
    writer: Sender<Msg>,
    reader: Sender<ReadJob>,
    checkpointer: Arc<Checkpointer>,
    feeds: Arc<Feeds>,
    clock: Clock,
    waker: Arc<Mutex<Option<Sender<Msg>>>>,
}

/// A connection only for checkpoints, so they never hold up the writer or the reader; opened
/// at the first one (a short-lived `mcp queue` never needs it).
struct Checkpointer {
    path: std::path::PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl Checkpointer {
    fn checkpoint(&self) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if conn.is_none() {
            *conn = Some(db::open_migrated(&self.path)?);
        }
        let Some(conn) = conn.as_ref() else { return Err(StoreError::Closed) };
        // PASSIVE: copies what it can without waiting for, or blocking, readers and writers.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.waker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

impl SqliteStore {
    /// Opens `<data_dir>/store.sqlite3`, creating and migrating it as needed.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.to_path_buf(), source })?;
        Self::open_file(&data_dir.join(db::FILE_NAME), Clock::System)
    }

    /// Opens a given SQLite file, reading "now" from `clock`.
    pub fn open_file(path: &Path, clock: Clock) -> Result<Self> {
        let write_conn = db::open_file(path)?;
        let (writer, writer_rx) = mpsc::channel();
        let (reader, reader_rx) = mpsc::channel::<ReadJob>();
        // The writer's feeds hold the demand, and so this sender: cleared on drop, so that the
        // writer's channel closes (and its thread ends) with the last handle.
        let waker = Arc::new(Mutex::new(Some(writer.clone())));
        let wake = Arc::clone(&waker);
        let demand = Demand::new(move || {
            if let Some(tx) = wake.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
                let _ = tx.send(Msg::Wake);
            }
        });
        let feeds = Arc::new(Feeds {
            tasks: ChangeFeed::new(Arc::clone(&demand)),
            events: ChangeFeed::new(Arc::clone(&demand)),
        });
        let (writer_feeds, writer_clock) = (Arc::clone(&feeds), clock.clone());
        spawn("store-writer", move || threads::run_writer(write_conn, writer_rx, writer_clock, writer_feeds, demand))?;
        let read_path = path.to_path_buf();
        spawn("store-reader", move || threads::run_reader(&read_path, reader_rx))?;
        let checkpointer = Arc::new(Checkpointer { path: path.to_path_buf(), conn: Mutex::new(None) });
        Ok(Self { writer, reader, checkpointer, feeds, clock, waker })
    }

    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection, super::Millis) -> Result<(T, threads::Effects)> + Send + 'static,
    ) -> Result<T> {
        write(&self.writer, op).await
    }

    async fn read<T: Send + 'static>(&self, op: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        read(&self.reader, op).await
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).map(drop).map_err(|e| StoreError::Backend(Arc::new(e)))
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn enqueue(&self, prompts: &[String]) -> Result<Vec<String>> {
        let prompts = prompts.to_vec();
        self.write(move |c, now| queue::enqueue(c, &prompts, now)).await
    }

    async fn create_worker(&self, active_for: Duration) -> Result<String> {
        self.write(move |c, now| queue::create_worker(c, now, now.saturating_add(millis(active_for)))).await
    }

    async fn touch_worker(&self, worker_id: &str, active_for: Duration) -> Result<bool> {
        let w = worker_id.to_owned();
        self.write(move |c, now| queue::touch_worker(c, &w, now, now.saturating_add(millis(active_for)))).await
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Task>> {
        let w = worker_id.to_owned();
        self.write(move |c, now| queue::claim(c, &w, now, now.saturating_add(millis(lease)))).await
    }

    async fn release(&self, task_id: &str, worker_id: &str) -> Result<bool> {
        let (t, w) = (task_id.to_owned(), worker_id.to_owned());
        self.write(move |c, now| queue::release(c, &t, &w, now)).await
    }

    async fn submit(&self, worker_id: &str, task_id: &str, response: &str) -> Result<SubmitOutcome> {
        let (w, t, r) = (worker_id.to_owned(), task_id.to_owned(), response.to_owned());
        self.write(move |c, now| queue::submit(c, &w, &t, &r, now)).await
    }

    async fn sweep(&self, max_attempts: u32) -> Result<SweepReport> {
        self.write(move |c, now| queue::sweep(c, now, max_attempts)).await
    }

    async fn task(&self, task_id: &str) -> Result<Option<Task>> {
        let t = task_id.to_owned();
        self.read(move |c| queue::task(c, &t)).await
    }

    async fn tasks(&self, state: Option<TaskState>, limit: u32) -> Result<Vec<Task>> {
        self.read(move |c| queue::tasks(c, state, limit)).await
    }

    async fn counts(&self) -> Result<Counts> {
        self.read(queue::counts).await
    }

    async fn any_active_worker(&self) -> Result<bool> {
        let now = self.clock.now();
        self.read(move |c| queue::any_active_worker(c, now)).await
    }

    async fn purge_tasks(&self, keep: Duration) -> Result<u64> {
        self.write(move |c, now| queue::purge_tasks(c, now.saturating_sub(millis(keep)))).await
    }

    async fn maintain(&self) -> Result<()> {
        let checkpointer = Arc::clone(&self.checkpointer);
        // Rare (once per sweep) and it may fsync: the blocking pool is the right place.
        tokio::task::spawn_blocking(move || checkpointer.checkpoint()).await.map_err(|_| StoreError::Closed)?
    }

    fn task_changes(&self) -> Changes {
        self.feeds.tasks.subscribe()
    }
}

#[async_trait]
impl Journal for SqliteStore {
    async fn known(&self, task_ids: &[String]) -> Result<Vec<String>> {
        let ids = task_ids.to_vec();
        self.read(move |c| journal::known(c, &ids)).await
    }

    async fn accept(&self, accepted: &[(String, Value)], refused: &[WorkerResult]) -> Result<Vec<EventRecord>> {
        let (accepted, refused) = (accepted.to_vec(), refused.to_vec());
        self.write(move |c, now| journal::accept(c, &accepted, &refused, now)).await
    }

    async fn started(&self, task_id: &str) -> Result<EventRecord> {
        let t = task_id.to_owned();
        self.write(move |c, now| journal::started(c, &t, now)).await
    }

    async fn finish(&self, result: &WorkerResult) -> Result<Option<EventRecord>> {
        let result = result.clone();
        self.write(move |c, now| journal::finish(c, &result, now)).await
    }

    async fn action(&self, task_id: &str) -> Result<Option<ActionRecord>> {
        let t = task_id.to_owned();
        self.read(move |c| journal::action(c, &t)).await
    }

    async fn actions(&self, state: Option<ActionState>, limit: u32) -> Result<Vec<ActionRecord>> {
        self.read(move |c| journal::actions(c, state, limit)).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        self.read(move |c| journal::events_after(c, after, limit)).await
    }

    async fn recover(&self) -> Result<Recovery> {
        self.read(journal::recover).await
    }

    async fn purge_actions(&self, keep: Duration) -> Result<(u64, u64)> {
        self.write(move |c, now| journal::purge_actions(c, now.saturating_sub(millis(keep)))).await
    }

    async fn unfinished(&self) -> Result<Unfinished> {
        self.read(journal::unfinished).await
    }

    fn event_changes(&self) -> Changes {
        self.feeds.events.subscribe()
    }
}

#[async_trait]
impl Ledger for SqliteStore {
    async fn charge(&self, task_id: &str, usd: f64) -> Result<()> {
        let t = task_id.to_owned();
        self.write(move |c, now| ledger::charge(c, &t, usd, now)).await
    }

    async fn charges_within(&self, window: Duration) -> Result<Vec<(Duration, f64)>> {
        let now = self.clock.now();
        self.read(move |c| ledger::charges_within(c, millis(window), now)).await
    }
}
