//! The SQLite backend's two threads, so no call needs a blocking-pool round trip:
//!
//! - **the writer** owns the one write connection. It takes every write waiting at that moment
//!   and runs them in ONE transaction (group commit), each in its own savepoint so one failing
//!   write does not undo the others; every caller is answered only after the commit (or with
//!   the commit's error). While some [`Changes`](crate::store::Changes) subscriber waits, it
//!   also reads `PRAGMA data_version` every [`WATCH_INTERVAL`] (it changes only when another
//!   connection committed: another process) and feeds the subscriptions.
//! - **the reader** runs reads, one after another, on its own connection (WAL: never blocked by
//!   the writer, and it sees every commit that was answered).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::changes::{ChangeFeed, Demand};
use crate::store::{Clock, Millis, Result, StoreError};

/// How often the writer looks for other processes' writes while a subscriber waits.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(5);

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;

/// What a committed write changed, for the subscriptions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Effects {
    /// Queued tasks may have appeared.
    pub tasks: bool,
    /// Events were appended.
    pub events: bool,
}

impl Effects {
    pub const NONE: Self = Self { tasks: false, events: false };
    pub const TASKS: Self = Self { tasks: true, events: false };
    pub const EVENTS: Self = Self { tasks: false, events: true };
}

/// The subscriptions the writer feeds.
pub struct Feeds {
    pub tasks: ChangeFeed,
    pub events: ChangeFeed,
}

impl Feeds {
    pub fn notify(&self, effects: Effects) {
        if effects.tasks {
            self.tasks.notify();
        }
        if effects.events {
            self.events.notify();
        }
    }
}

/// One write waiting for its transaction.
pub trait Job: Send {
    /// Runs inside the batch's transaction. `None`: it failed (or panicked) and is rolled back.
    fn run(&mut self, conn: &Connection, now: Millis) -> Option<Effects>;
    /// Answers the caller, once the batch is over: its own outcome, or `batch_failed`.
    fn answer(self: Box<Self>, batch_failed: Option<&StoreError>);
}

pub enum Msg {
    Job(Box<dyn Job>),
    /// A subscriber started waiting: look for other processes' writes.
    Wake,
}

/// A write and the caller waiting for it.
pub struct Pending<T, F> {
    op: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Pending<T, F> {
    pub fn new(op: F) -> (Self, oneshot::Receiver<Result<T>>) {
        let (reply, rx) = oneshot::channel();
        (Self { op: Some(op), outcome: None, reply }, rx)
    }
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection, Millis) -> Result<(T, Effects)> + Send,
{
    fn run(&mut self, conn: &Connection, now: Millis) -> Option<Effects> {
        let op = self.op.take()?;
        match catch_unwind(AssertUnwindSafe(|| op(conn, now))) {
            Ok(Ok((value, effects))) => {
                self.outcome = Some(Ok(value));
                Some(effects)
            }
            Ok(Err(err)) => {
                self.outcome = Some(Err(err));
                None
            }
            Err(_) => {
                self.outcome = Some(Err(StoreError::Corrupt("a store operation panicked".into())));
                None
            }
        }
    }

    fn answer(self: Box<Self>, batch_failed: Option<&StoreError>) {
        let outcome = match (batch_failed, self.outcome) {
            (_, Some(Err(own))) => Err(own),
            (Some(err), _) => Err(err.shared()),
            (None, Some(ok)) => ok,
            (None, None) => Err(StoreError::Closed),
        };
        // The caller may have gone away; the write is committed either way.
        let _ = self.reply.send(outcome);
    }
}

/// The writer thread's loop; returns when every handle to the store is gone. `version`:
/// `PRAGMA data_version` read while the store was opened (before its handle was returned, so no
/// other process's commit after that goes unseen, however late this thread starts).
///
/// While a subscriber waits, `data_version` is read after every wake-up (each start of a wait
/// sends one, and every batch): tried in this branch was waking the writer only when idle and
/// reading at most once per interval, which made `serve`'s HTTP cycles no faster and, in two
/// runs of four, slower (another process's enqueue was seen later; BENCHMARKS.md).
pub fn run_writer(
    conn: Connection,
    rx: Receiver<Msg>,
    clock: Clock,
    feeds: Arc<Feeds>,
    demand: Arc<Demand>,
    mut version: i64,
) {
    loop {
        let first = if demand.wanted() {
            match rx.recv_timeout(WATCH_INTERVAL) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            }
        };
        if demand.wanted() {
            match data_version(&conn) {
                Ok(now) if now != version => {
                    version = now;
                    feeds.notify(Effects { tasks: true, events: true });
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "cannot read the store's data version"),
            }
        }
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        if let Some(Msg::Job(job)) = first {
            batch.push(job);
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Wake) => {}
                Err(_) => break,
            }
        }
        if !batch.is_empty()
            && let Some(effects) = commit(&conn, batch, &clock)
        {
            feeds.notify(effects);
        }
    }
}

/// `PRAGMA data_version`: changes when another connection commits, not on our own commits.
pub fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
}

/// Runs `batch` in one transaction and answers every job. Returns what the commit changed, or
/// `None` if nothing was committed.
pub fn commit(conn: &Connection, batch: Vec<Box<dyn Job>>, clock: &Clock) -> Option<Effects> {
    if let Err(err) = run_cached(conn, "BEGIN IMMEDIATE") {
        abort(conn, batch, &err.into());
        return None;
    }
    commit_begun(conn, batch, clock)
}

/// [`commit`] once `BEGIN IMMEDIATE` succeeded: runs the jobs (each in a savepoint when there
/// are several), commits, answers every job.
pub fn commit_begun(conn: &Connection, mut batch: Vec<Box<dyn Job>>, clock: &Clock) -> Option<Effects> {
    tracing::trace!(writes = batch.len(), "store batch");
    let single = batch.len() == 1;
    let mut effects = Effects::NONE;
    let mut failure: Option<StoreError> = None;
    for job in &mut batch {
        if !single && let Err(err) = run_cached(conn, "SAVEPOINT job") {
            failure = Some(err.into());
            break;
        }
        let step = match job.run(conn, clock.now()) {
            Some(done) => {
                effects.tasks |= done.tasks;
                effects.events |= done.events;
                if single { Ok(()) } else { run_cached(conn, "RELEASE job") }
            }
            None if single => {
                // Its own error answers it; nothing else was in the transaction.
                let _ = conn.execute_batch("ROLLBACK");
                batch.into_iter().for_each(|job| job.answer(None));
                return None;
            }
            // SQLite rolls a whole transaction back by itself on some errors (disk full).
            None if conn.is_autocommit() => {
                failure = Some(StoreError::Corrupt("the store rolled the transaction back".into()));
                break;
            }
            None => conn.execute_batch("ROLLBACK TO job; RELEASE job"),
        };
        if let Err(err) = step {
            failure = Some(err.into());
            break;
        }
    }
    if let Some(err) = failure {
        abort(conn, batch, &err);
        return None;
    }
    match run_cached(conn, "COMMIT") {
        Ok(()) => {
            batch.into_iter().for_each(|job| job.answer(None));
            Some(effects)
        }
        Err(err) => {
            abort(conn, batch, &err.into());
            None
        }
    }
}

/// Runs one statement without results from the connection's statement cache: the transaction
/// control of every batch, so none of it is parsed again per batch.
pub fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

pub fn abort(conn: &Connection, batch: Vec<Box<dyn Job>>, err: &StoreError) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    tracing::warn!(error = %err, writes = batch.len(), "store transaction failed");
    batch.into_iter().for_each(|job| job.answer(Some(err)));
}

/// A read, run on the reader's connection (or told why there is none).
pub type ReadJob = Box<dyn FnOnce(std::result::Result<&Connection, &StoreError>) + Send>;

/// The reader thread's loop: opens its connection (off the caller's start-up path), then runs
/// reads until every handle to the store is gone.
pub fn run_reader(path: &std::path::Path, rx: Receiver<ReadJob>) {
    let conn = super::db::open_migrated(path);
    if let Err(err) = &conn {
        tracing::warn!(error = %err, "the store's read connection cannot be opened");
    }
    while let Ok(job) = rx.recv() {
        // A panicking read drops its reply sender: its caller gets `Closed`, the thread goes on.
        let _ = catch_unwind(AssertUnwindSafe(|| job(conn.as_ref())));
    }
}

/// Sends a read to the reader thread and waits for it.
pub async fn read<T: Send + 'static>(
    reader: &Sender<ReadJob>,
    op: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    reader
        .send(Box::new(move |conn: std::result::Result<&Connection, &StoreError>| {
            let _ = tx.send(conn.map_err(StoreError::shared).and_then(op));
        }))
        .map_err(|_| StoreError::Closed)?;
    rx.await.map_err(|_| StoreError::Closed)?
}

/// Sends a write to the writer thread and waits until its transaction committed.
pub async fn write<T: Send + 'static>(
    writer: &Sender<Msg>,
    op: impl FnOnce(&Connection, Millis) -> Result<(T, Effects)> + Send + 'static,
) -> Result<T> {
    let (job, rx) = Pending::new(op);
    writer.send(Msg::Job(Box::new(job))).map_err(|_| StoreError::Closed)?;
    rx.await.map_err(|_| StoreError::Closed)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(id: &'static str) -> impl FnOnce(&Connection, Millis) -> Result<((), Effects)> + Send {
        move |conn, now| {
            conn.execute(
                "INSERT INTO tasks (id, prompt, state, created_ms, updated_ms) VALUES (?1, 'p', 'queued', ?2, ?2)",
                rusqlite::params![id, now],
            )?;
            Ok(((), Effects::TASKS))
        }
    }

    #[tokio::test]
    async fn one_batch_one_transaction_and_a_failing_write_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::db::open_file(&dir.path().join("s.sqlite3")).unwrap();
        let (a, ra) = Pending::new(insert("a"));
        let (dup, rdup) = Pending::new(insert("a"));
        let (b, rb) = Pending::new(insert("b"));
        let (panics, rpanics) = Pending::new(|_: &Connection, _: Millis| -> Result<((), Effects)> { panic!("boom") });
        let batch: Vec<Box<dyn Job>> = vec![Box::new(a), Box::new(dup), Box::new(panics), Box::new(b)];
        let before = conn.total_changes();
        let effects = commit(&conn, batch, &Clock::manual(7)).expect("committed");
        assert!(effects.tasks && !effects.events);
        assert!(ra.await.unwrap().is_ok());
        assert!(matches!(rdup.await.unwrap(), Err(StoreError::Backend(_))), "UNIQUE violated");
        assert!(matches!(rpanics.await.unwrap(), Err(StoreError::Corrupt(_))));
        assert!(rb.await.unwrap().is_ok());
        assert!(conn.is_autocommit(), "committed");
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM tasks ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(conn.total_changes() - before, 2);
    }

    #[tokio::test]
    async fn a_failed_begin_answers_every_write_with_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::db::open_file(&dir.path().join("s.sqlite3")).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        // BEGIN inside a transaction fails: nothing may run, everyone hears of it.
        let (a, ra) = Pending::new(insert("a"));
        let (b, rb) = Pending::new(insert("b"));
        let effects = commit(&conn, vec![Box::new(a), Box::new(b)], &Clock::manual(7));
        assert!(effects.is_none());
        assert!(ra.await.unwrap().is_err() && rb.await.unwrap().is_err());
    }
}
