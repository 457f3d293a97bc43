//! The SQLite backend: the store contract on a real file in a temporary directory, plus what
//! only SQLite has (its schema version, other processes seen through `data_version`).

use async_trait::async_trait;

use std::sync::Arc;

use super::{Mode, SqliteStore};
use crate::store::contract::{Harness, ledger_contract, ms, prompts, soon, store_contract};
use crate::store::{Clock, QueueStore};

struct Sqlite {
    dir: tempfile::TempDir,
    mode: Mode,
}

impl Sqlite {
    fn new() -> Self {
        Self::in_mode(Mode::Threads)
    }

    fn in_mode(mode: Mode) -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir"), mode }
    }
}

#[async_trait]
impl Harness for Sqlite {
    type Store = SqliteStore;
    async fn open(&self, clock: &Clock) -> SqliteStore {
        SqliteStore::open_file_with(&self.dir.path().join(super::db::FILE_NAME), clock.clone(), self.mode)
            .expect("open store")
    }
}

store_contract!(Sqlite::new());
ledger_contract!(Sqlite::new());

/// The same contract with the store inline on the caller's runtime (`mcp queue` on stdio).
/// The contract runs its cases on a multi-thread runtime: two drains may then race for the
/// connection, which the inline mode must survive too.
mod inline {
    use super::{Mode, Sqlite};
    use crate::store::contract::store_contract;

    store_contract!(Sqlite::in_mode(Mode::Inline));
}

#[tokio::test]
async fn an_inline_write_waits_for_another_process_lock_off_the_runtime_thread() {
    // This test's runtime has one thread: if the store waited for the lock on it, the COMMIT
    // below could never run, and the write would fail with SQLITE_BUSY after the busy timeout.
    let h = Sqlite::in_mode(Mode::Inline);
    let store = Arc::new(h.open(&Clock::System).await);
    let other = rusqlite::Connection::open(h.dir.path().join(super::db::FILE_NAME)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let writer = Arc::clone(&store);
    let pending = tokio::spawn(async move { writer.create_worker(ms(60_000)).await });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!pending.is_finished(), "the write cannot commit while another connection holds the lock");
    other.execute_batch("COMMIT").unwrap();
    let worker = soon("the write after the lock was released", pending).await.unwrap().expect("committed");
    assert!(store.touch_worker(&worker, ms(1_000)).await.unwrap(), "the worker is in the store");
}

#[tokio::test]
async fn inline_writes_that_wait_together_commit_together_and_each_gets_its_answer() {
    let h = Sqlite::in_mode(Mode::Inline);
    let store = Arc::new(h.open(&Clock::System).await);
    let probe = rusqlite::Connection::open(h.dir.path().join(super::db::FILE_NAME)).unwrap();
    // The WAL's frame count: every commit appends at least one frame.
    let frames =
        |mode: &str| probe.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1)).unwrap();
    frames("TRUNCATE");
    assert_eq!(frames("PASSIVE"), 0, "an empty WAL to start from");
    // 32 writes queued on this one thread before any drain runs: one transaction.
    let writes: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_worker(ms(60_000)).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for write in writes {
        ids.insert(write.await.unwrap().expect("committed"));
    }
    assert_eq!(ids.len(), 32, "each write has its own answer");
    // One transaction writes each page it changed once (a table and two indexes: a few
    // frames); 32 transactions would append 32 frames at least.
    let written = frames("PASSIVE");
    assert!((1..8).contains(&written), "{written} WAL frames: the 32 writes were not one commit");
}

/// The inline store's drainer lives on the runtime of the first write. A runtime that shuts
/// down with a write queued and the drainer not yet run answers it `Closed` (it does not hang),
/// and the next runtime's writes get a drainer of their own.
#[test]
fn an_inline_write_survives_the_runtime_its_drainer_ran_on() {
    let h = Sqlite::in_mode(Mode::Inline);
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let first = runtime();
    let store = Arc::new(first.block_on(h.open(&Clock::System)));
    first.block_on(store.create_worker(ms(60_000))).expect("a write on the first runtime");
    // Polled once: queued, the drainer woken; the runtime ends before the drainer runs.
    let mut queued = Box::pin(store.create_worker(ms(60_000)));
    first.block_on(async { assert!(futures_util::poll!(queued.as_mut()).is_pending()) });
    drop(first);
    let second = runtime();
    let answer = second.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), queued).await });
    assert!(
        matches!(answer, Ok(Err(crate::store::StoreError::Closed))),
        "a write its runtime dropped is answered Closed: {answer:?}"
    );
    let worker = second
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), store.create_worker(ms(1_000))).await
        })
        .expect("a write on the next runtime is drained (not left to a drainer that is gone)")
        .expect("committed");
    assert!(second.block_on(store.touch_worker(&worker, ms(1_000))).unwrap());
}

/// The hot UPDATEs of the queue and the journal run in one pass, with no ephemeral table
/// (which a CHECK on an updated column would force: `db::open_migrated` turns CHECKs off).
#[test]
fn the_hot_updates_run_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let conn = super::db::open_file(&dir.path().join(super::db::FILE_NAME)).unwrap();
    let statements = [
        super::queue::LEASE_TASK,
        super::queue::FINISH_TASK,
        super::queue::TOUCH_WORKER,
        super::journal::FINISH_ACTION,
    ];
    for sql in statements {
        let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let unbound = rusqlite::params_from_iter(std::iter::repeat_n(rusqlite::types::Null, explain.parameter_count()));
        let opcodes: Vec<String> = explain.query_map(unbound, |row| row.get(1)).unwrap().map(Result::unwrap).collect();
        assert!(!opcodes.is_empty(), "{sql}");
        assert!(!opcodes.iter().any(|op| op == "OpenEphemeral"), "{sql} needs an ephemeral table: {opcodes:?}");
    }
    // The constraint is still in the schema, for every other tool.
    let schema: String =
        conn.query_row("SELECT sql FROM sqlite_schema WHERE name = 'tasks'", [], |r| r.get(0)).unwrap();
    assert!(schema.contains("CHECK (state IN"), "{schema}");
}

#[test]
fn a_new_store_has_small_pages() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(super::db::FILE_NAME)).unwrap();
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap();
    assert_eq!(page_size, super::db::PAGE_SIZE);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(super::db::FILE_NAME)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).err().expect("must refuse");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn a_store_of_schema_3_keeps_its_workers_when_they_move_to_a_table_without_rowid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(super::db::FILE_NAME);
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    super::db::migrate(&mut conn, &super::db::MIGRATIONS[..3]).unwrap();
    conn.execute_batch(
        "INSERT INTO workers VALUES ('worker_1_a', 1, 2, 4000000000000);
         INSERT INTO workers VALUES ('worker_1_b', 1, 2, 3);
         INSERT INTO workers VALUES (NULL, 1, 2, 3);",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.touch_worker("worker_1_a", ms(1_000)).await.unwrap(), "a worker of schema 3 is known");
    assert!(store.any_active_worker().await.unwrap(), "its activity index came along");
    assert_eq!(store.counts().await.unwrap().workers, 2, "every worker with an id is kept");
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, super::db::MIGRATIONS.len() as i64);
    assert!(conn.prepare("SELECT rowid FROM workers").is_err(), "workers has no rowid now");
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap();
    assert_eq!(page_size, 4096, "an existing file keeps its page size");
    let sweep: i64 =
        conn.query_row("SELECT count(*) FROM workers WHERE active_until_ms < 10", [], |r| r.get(0)).unwrap();
    assert_eq!(sweep, 1);
}

#[tokio::test]
async fn a_plain_connection_writing_the_file_wakes_a_waiting_subscriber() {
    // What `enqueue` from another process looks like: a commit on a connection we do not own.
    let h = Sqlite::new();
    let store = h.open(&Clock::System).await;
    let mut changes = store.task_changes();
    let waiting = tokio::spawn(async move { changes.changed().await });
    let conn = rusqlite::Connection::open(h.dir.path().join(super::db::FILE_NAME)).unwrap();
    conn.execute("INSERT INTO tasks (id, prompt, state, created_ms, updated_ms) VALUES ('t', 'p', 'queued', 1, 1)", [])
        .unwrap();
    soon("a foreign commit", waiting).await.unwrap();
    let w = store.create_worker(ms(60_000)).await.unwrap();
    assert_eq!(store.claim(&w, ms(1_000)).await.unwrap().unwrap().prompt, "p");
    assert!(store.enqueue(&prompts(&[])).await.unwrap().is_empty());
}

#[tokio::test]
async fn dropping_the_last_handle_ends_its_threads_and_closes_the_file() {
    let h = Sqlite::new();
    let store = h.open(&Clock::System).await;
    let mut changes = store.task_changes();
    store.enqueue(&prompts(&["a"])).await.unwrap();
    changes.changed().await;
    let wal = h.dir.path().join(format!("{}-wal", super::db::FILE_NAME));
    assert!(wal.exists());
    drop(store);
    // SQLite removes the WAL when the last connection closes: once the writer and reader
    // threads have ended (a subscription left alive must not keep them).
    soon("the threads to close their connections", async {
        while wal.exists() {
            tokio::time::sleep(ms(10)).await;
        }
    })
    .await;
    drop(changes);
    let again = h.open(&Clock::System).await;
    assert_eq!(again.tasks(None, 10).await.unwrap().len(), 1);
}
