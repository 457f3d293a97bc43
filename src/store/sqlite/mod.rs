//! The SQLite backend of [`QueueStore`] and [`Journal`]: one file, `<data-dir>/store.sqlite3`
//! (WAL), shared by the queue and the journal, and by every process that opens the data dir.
//!
//! Per handle, in [`Mode::Threads`] (the default): a writer thread owning the write connection
//! (group commit: every write waiting at that moment in one `IMMEDIATE` transaction, each
//! answered after the commit), a reader thread with its own connection (see `threads.rs`). In
//! [`Mode::Inline`] (one client on a current-thread runtime: `mcp queue` on stdio) no thread of
//! its own: the same group commit runs on the runtime's thread (see `inline.rs`). Either way a
//! further connection, opened at the first checkpoint, runs WAL checkpoints
//! ([`QueueStore::maintain`]), only when the file changed since the last complete one.
//! Processes never deadlock upgrading a read lock (writes start `IMMEDIATE`); `busy_timeout`
//! makes the loser wait.

pub mod db;
mod inline;
mod journal;
mod ledger;
mod queue;
#[cfg(test)]
mod tests;
mod threads;
mod vfs;

use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use serde_json::Value;

use self::inline::Inline;
use self::threads::{Feeds, Msg, ReadJob, read, write};
use super::changes::{ChangeFeed, Demand};
use super::clock::millis;
use super::{
    ActionRecord, ActionState, Changes, Clock, Counts, EventRecord, Journal, Ledger, QueueStore, Recovery, Result,
    StoreError, SubmitOutcome, SweepReport, Task, TaskState, Unfinished,
};
use crate::protocol::WorkerResult;

/// How a handle runs its SQL. Both modes keep every guarantee of the traits (one transaction
/// per call, committed before the answer, group commit of the writes waiting together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A writer thread and a reader thread: for many callers on a multi-thread runtime (`serve`,
    /// the CLI), whose threads must never wait on SQLite.
    #[default]
    Threads,
    /// No thread of its own: writes are batched and committed on the caller's runtime thread
    /// (a blocking thread only while another process holds the write lock). For one client on
    /// a current-thread runtime (`mcp queue` on stdio): a call then crosses no thread.
    Inline,
}

enum Engine {
    Threads {
        writer: Sender<Msg>,
        reader: Sender<ReadJob>,
        /// The writer's wake-up sender, held by the demand callback: cleared on drop so the
        /// writer's channel closes (and its thread ends) with the last handle.
        waker: Arc<Mutex<Option<Sender<Msg>>>>,
    },
    Inline(Arc<Inline>),
}

pub struct SqliteStore {
    engine: Engine,
    checkpointer: Arc<Checkpointer>,
    feeds: Arc<Feeds>,
    clock: Clock,
}

/// A connection only for checkpoints, so they never hold up the writer or the reader; opened
/// at the first one (a short-lived `mcp queue` never needs it).
struct Checkpointer {
    path: std::path::PathBuf,
    conn: Mutex<Option<Connection>>,
    /// This connection's `PRAGMA data_version` after the last complete checkpoint: it moves
    /// only when another connection commits a change, so while it stands still there is
    /// nothing to copy (the queue's sweeper asks every 500 ms).
    clean_at: Mutex<Option<i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Checkpointer {
    /// Whether the file surely has nothing to checkpoint (cheap: one pragma, no thread).
    fn clean(&self) -> bool {
        let Ok(conn) = self.conn.try_lock() else { return false };
        let Some(conn) = conn.as_ref() else { return false };
        let version = conn.pragma_query_value(None, "data_version", |row| row.get::<_, i64>(0)).ok();
        version.is_some() && version == *lock(&self.clean_at)
    }

    fn checkpoint(&self) -> Result<()> {
        let mut conn = lock(&self.conn);
        if conn.is_none() {
            *conn = Some(db::open_migrated(&self.path)?);
        }
        let Some(conn) = conn.as_ref() else { return Err(StoreError::Closed) };
        let version: i64 = conn.pragma_query_value(None, "data_version", |row| row.get(0))?;
        // PASSIVE: copies what it can without waiting for, or blocking, readers and writers.
        let (busy, log, copied): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        *lock(&self.clean_at) = (busy == 0 && log == copied).then_some(version);
        Ok(())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Engine::Threads { waker, .. } = &self.engine {
            lock(waker).take();
        }
    }
}

impl SqliteStore {
    /// Opens `<data_dir>/store.sqlite3`, creating and migrating it as needed.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, Mode::Threads)
    }

    /// Opens `<data_dir>/store.sqlite3` in the given [`Mode`].
    pub fn open_with(data_dir: &Path, mode: Mode) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.to_path_buf(), source })?;
        Self::open_file_with(&data_dir.join(db::FILE_NAME), Clock::System, mode)
    }

    /// Opens a given SQLite file, reading "now" from `clock`.
    pub fn open_file(path: &Path, clock: Clock) -> Result<Self> {
        Self::open_file_with(path, clock, Mode::Threads)
    }

    /// Opens a given SQLite file in the given [`Mode`], reading "now" from `clock`.
    pub fn open_file_with(path: &Path, clock: Clock, mode: Mode) -> Result<Self> {
        let write_conn = db::open_file(path)?;
        let checkpointer =
            Arc::new(Checkpointer { path: path.to_path_buf(), conn: Mutex::new(None), clean_at: Mutex::new(None) });
        if mode == Mode::Inline {
            let inline = Inline::new(write_conn, clock.clone());
            let feeds = Arc::clone(&inline.feeds);
            return Ok(Self { engine: Engine::Inline(inline), checkpointer, feeds, clock });
        }
        let version = threads::data_version(&write_conn)?;
        let (writer, writer_rx) = mpsc::channel();
        let (reader, reader_rx) = mpsc::channel::<ReadJob>();
        let waker = Arc::new(Mutex::new(Some(writer.clone())));
        let wake = Arc::clone(&waker);
        let demand = Demand::new(move || {
            if let Some(tx) = lock(&wake).as_ref() {
                let _ = tx.send(Msg::Wake);
            }
        });
        let feeds = Arc::new(Feeds {
            tasks: ChangeFeed::new(Arc::clone(&demand)),
            events: ChangeFeed::new(Arc::clone(&demand)),
        });
        let (writer_feeds, writer_clock) = (Arc::clone(&feeds), clock.clone());
        spawn("store-writer", move || {
            threads::run_writer(write_conn, writer_rx, writer_clock, writer_feeds, demand, version);
        })?;
        let read_path = path.to_path_buf();
        spawn("store-reader", move || threads::run_reader(&read_path, reader_rx))?;
        Ok(Self { engine: Engine::Threads { writer, reader, waker }, checkpointer, feeds, clock })
    }

    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection, super::Millis) -> Result<(T, threads::Effects)> + Send + 'static,
    ) -> Result<T> {
        match &self.engine {
            Engine::Threads { writer, .. } => write(writer, op).await,
            Engine::Inline(inline) => inline.write(op).await,
        }
    }

    async fn read<T: Send + 'static>(&self, op: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        match &self.engine {
            Engine::Threads { reader, .. } => read(reader, op).await,
            Engine::Inline(inline) => inline.read(op).await,
        }
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

    async fn touch_and_claim(
        &self,
        worker_id: &str,
        active_for: Duration,
        lease: Duration,
    ) -> Result<Option<Option<Task>>> {
        let w = worker_id.to_owned();
        self.write(move |c, now| {
            let (known, _) = queue::touch_worker(c, &w, now, now.saturating_add(millis(active_for)))?;
            if !known {
                return Ok((None, threads::Effects::NONE));
            }
            let (task, effects) = queue::claim(c, &w, now, now.saturating_add(millis(lease)))?;
            Ok((Some(task), effects))
        })
        .await
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
        if self.checkpointer.clean() {
            return Ok(());
        }
        let checkpointer = Arc::clone(&self.checkpointer);
        // Only after changes, and it may fsync: the blocking pool is the right place.
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

    async fn requeue(&self, task_id: &str, stored: &Value) -> Result<bool> {
        let (t, stored) = (task_id.to_owned(), stored.clone());
        self.write(move |c, _| journal::requeue(c, &t, &stored)).await
    }

    async fn attempt_failed(&self, task_id: &str, kind: &str) -> Result<bool> {
        let (t, kind) = (task_id.to_owned(), kind.to_owned());
        self.write(move |c, _| journal::attempt_failed(c, &t, &kind)).await
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
