//! The SQLite backend without threads of its own ([`Mode::Inline`](super::Mode::Inline)), for a
//! process on a current-thread runtime serving one client: `mcp-workers mcp queue` on stdio.
//!
//! A write goes into a pending batch, and the first one wakes the drainer, a task of the runtime
//! (spawned at the first write; woken, not spawned, for every later batch: a spawn per batch was
//! a twentieth of a `worker_create`'s instructions).
//! When the drainer runs (after the tasks that were ready with it, e.g. the other handlers of a
//! pipelined burst, have queued their writes), it runs the whole batch in ONE transaction on
//! the runtime's thread, exactly as the writer thread does (`threads::commit_begun`: a savepoint
//! each, every caller answered after the `COMMIT`). So a call crosses no thread: no futex wake
//! of a writer and none back, which on a loaded machine is most of a call's wall time.
//!
//! The runtime's thread must never wait for another process: the write lock is asked for with
//! no busy timeout, and when another connection holds it (another process, or a commit of ours
//! still waiting on a blocking thread) the batch goes to the blocking pool, which waits for the
//! lock with the normal [`BUSY_TIMEOUT`](super::db::BUSY_TIMEOUT). Once the lock is held the
//! normal timeout is back, so nothing else in the transaction behaves differently.
//!
//! Reads run on the same connection (WAL: a read never waits for a writer), inline when the
//! connection is free. While a [`Changes`](crate::store::Changes) subscriber waits, a task reads
//! `PRAGMA data_version` every [`WATCH_INTERVAL`] (it moves only on other connections' commits).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use rusqlite::{Connection, ErrorCode};

use super::db::BUSY_TIMEOUT;
use super::threads::{self, Effects, Feeds, Job, Pending, WATCH_INTERVAL};
use crate::store::changes::{ChangeFeed, Demand};
use crate::store::{Clock, Millis, Result, StoreError};

/// The connection and the writes waiting for it.
pub struct Inline {
    conn: Arc<Mutex<Connection>>,
    pending: Mutex<Vec<Box<dyn Job>>>,
    /// A drain is due: writes are pending and the drainer has not yet taken them.
    scheduled: AtomicBool,
    /// The drainer task runs (it is spawned at the first write, and again after a runtime that
    /// ran it dropped it).
    drainer_runs: AtomicBool,
    /// Wakes the drainer.
    drainer: AtomicWaker,
    /// The watcher task of other processes' writes runs.
    watching: AtomicBool,
    /// `PRAGMA data_version` when last read.
    version: AtomicI64,
    clock: Clock,
    pub feeds: Arc<Feeds>,
    demand: Arc<Demand>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

impl Inline {
    /// Takes a migrated connection (see [`super::db::open_file`]).
    pub fn new(conn: Connection, clock: Clock) -> Arc<Self> {
        let version = data_version(&conn).unwrap_or(0);
        // The demand's callback starts the watcher; it needs the handle, made just below.
        let me: Arc<OnceLock<Weak<Inline>>> = Arc::new(OnceLock::new());
        let slot = Arc::clone(&me);
        let demand = Demand::new(move || {
            if let Some(inline) = slot.get().and_then(Weak::upgrade) {
                inline.start_watching();
            }
        });
        let feeds = Arc::new(Feeds {
            tasks: ChangeFeed::new(Arc::clone(&demand)),
            events: ChangeFeed::new(Arc::clone(&demand)),
        });
        let inline = Arc::new(Self {
            conn: Arc::new(Mutex::new(conn)),
            pending: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            drainer_runs: AtomicBool::new(false),
            drainer: AtomicWaker::new(),
            watching: AtomicBool::new(false),
            version: AtomicI64::new(version),
            clock,
            feeds,
            demand,
        });
        let _ = me.set(Arc::downgrade(&inline));
        inline
    }

    /// Queues a write for the next drain and waits until its transaction committed.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Connection, Millis) -> Result<(T, Effects)> + Send + 'static,
    ) -> Result<T> {
        let (job, rx) = Pending::new(op);
        lock(&self.pending).push(Box::new(job));
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            if self.drainer_runs.swap(true, Ordering::AcqRel) {
                self.drainer.wake();
            } else {
                tokio::spawn(Drainer(Arc::downgrade(self)));
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on the connection: here when it is free, else on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let guarded = |conn: &Connection| {
            catch_unwind(AssertUnwindSafe(|| op(conn)))
                .unwrap_or_else(|_| Err(StoreError::Corrupt("a store read panicked".into())))
        };
        if let Ok(conn) = self.conn.try_lock() {
            return guarded(&conn);
        }
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || guarded(&lock(&conn))).await.map_err(|_| StoreError::Closed)?
    }

    /// Takes the pending batch and commits it: on this thread if the write lock is free now,
    /// else on a blocking thread that waits for it.
    fn drain(self: &Arc<Self>) {
        self.scheduled.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return;
        }
        let batch = match self.conn.try_lock() {
            Ok(conn) => match begin_without_waiting(&conn) {
                Ok(()) => {
                    self.finish(&conn, threads::commit_begun(&conn, batch, &self.clock));
                    return;
                }
                Err(err) if is_busy(&err) => batch,
                Err(err) => {
                    threads::abort(&conn, batch, &err.into());
                    return;
                }
            },
            // A batch of ours is still on a blocking thread: queue behind it.
            Err(_) => batch,
        };
        let me = Arc::clone(self);
        // If the runtime is shutting down the closure is dropped, and with it every reply
        // sender: the callers get `Closed`, nothing hangs.
        drop(tokio::task::spawn_blocking(move || {
            let conn = lock(&me.conn);
            let effects = threads::commit(&conn, batch, &me.clock);
            me.finish(&conn, effects);
        }));
    }

    fn finish(&self, conn: &Connection, effects: Option<Effects>) {
        if let Some(effects) = effects {
            self.feeds.notify(effects);
            if self.demand.wanted() {
                self.look_for_foreign_writes(conn);
            }
        }
    }

    /// Notifies every subscription if another connection committed since the last look.
    fn look_for_foreign_writes(&self, conn: &Connection) {
        match data_version(conn) {
            Ok(now) if self.version.swap(now, Ordering::AcqRel) != now => {
                self.feeds.notify(Effects { tasks: true, events: true });
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the store's data version"),
        }
    }

    /// Starts the watcher task unless it runs (called when the first subscriber starts waiting).
    fn start_watching(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.watching.store(false, Ordering::Release);
            return;
        };
        let me = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(inline) = me.upgrade() else { return };
                if let Ok(conn) = inline.conn.try_lock() {
                    inline.look_for_foreign_writes(&conn);
                }
                if !inline.demand.wanted() {
                    inline.watching.store(false, Ordering::SeqCst);
                    // A subscriber that came in just now saw `watching` still set: go on for it.
                    if !inline.demand.wanted() || inline.watching.swap(true, Ordering::SeqCst) {
                        return;
                    }
                }
                drop(inline);
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        });
    }
}

/// `BEGIN IMMEDIATE` without waiting for another connection's write lock; the normal busy
/// timeout is back afterwards either way.
fn begin_without_waiting(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::ZERO)?;
    let begun = threads::run_cached(conn, "BEGIN IMMEDIATE");
    let restored = conn.busy_timeout(BUSY_TIMEOUT);
    if begun.is_ok() && restored.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    begun.and(restored)
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
}

/// The drainer task: drains whenever a drain is due, until the store is gone. Dropped by its
/// runtime (a shutdown), it answers the pending writes `Closed` and lets the next write spawn
/// a drainer again.
struct Drainer(Weak<Inline>);

impl std::future::Future for Drainer {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inline) = self.0.upgrade() else { return Poll::Ready(()) };
        // Registered before the flag is read: a write that sets it after this wakes us again.
        inline.drainer.register(cx.waker());
        if inline.scheduled.load(Ordering::Acquire) {
            inline.drain();
        }
        Poll::Pending
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if let Some(inline) = self.0.upgrade() {
            inline.scheduled.store(false, Ordering::Release);
            inline.drainer_runs.store(false, Ordering::Release);
            let batch = std::mem::take(&mut *lock(&inline.pending));
            batch.into_iter().for_each(|job| job.answer(Some(&StoreError::Closed)));
        }
    }
}

impl Drop for Inline {
    /// Lets the drainer see that the store is gone, and end.
    fn drop(&mut self) {
        self.drainer.wake();
    }
}
