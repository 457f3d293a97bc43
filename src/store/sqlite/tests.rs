//! The SQLite backend: the store contract on a real file in a temporary directory, plus what
//! only SQLite has (its schema version, other processes seen through `data_version`).

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::contract::{Harness, ledger_contract, ms, prompts, soon, store_contract};
use crate::store::{Clock, QueueStore};

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }
}

#[async_trait]
impl Harness for Sqlite {
    type Store = SqliteStore;
    async fn open(&self, clock: &Clock) -> SqliteStore {
        SqliteStore::open_file(&self.dir.path().join(super::db::FILE_NAME), clock.clone()).expect("open store")
    }
}

store_contract!(Sqlite::new());
ledger_contract!(Sqlite::new());

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
