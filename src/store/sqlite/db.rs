//! Opening the SQLite file and migrating its schema. Shared by every table that lives in the
//! store file: a new table is one more entry at the end of [`MIGRATIONS`].

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::store::{Result, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(std::sync::Arc::new(err))
    }
}

/// The store file inside the data directory.
pub const FILE_NAME: &str = "store.sqlite3";

/// Schema steps, in order. `PRAGMA user_version` records how many are applied. Never edit an
/// entry that has shipped: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the polling queue.
    "CREATE TABLE tasks (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               TEXT NOT NULL UNIQUE,
        prompt           TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_expires_ms INTEGER,
        response         TEXT,
        dead_reason      TEXT,
        created_ms       INTEGER NOT NULL,
        updated_ms       INTEGER NOT NULL
    );
    CREATE INDEX tasks_by_state ON tasks (state, seq);
    CREATE INDEX tasks_by_lease ON tasks (lease_expires_ms) WHERE state = 'leased';
    CREATE TABLE workers (
        id              TEXT PRIMARY KEY,
        created_ms      INTEGER NOT NULL,
        last_seen_ms    INTEGER NOT NULL,
        active_until_ms INTEGER NOT NULL
    );
    CREATE INDEX workers_by_activity ON workers (active_until_ms);",
    // 2: the action journal of `serve` (see journal.rs).
    "CREATE TABLE actions (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id     TEXT NOT NULL UNIQUE,
        action      TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('accepted', 'running', 'done')),
        pid         INTEGER,
        result      TEXT,
        accepted_ms INTEGER NOT NULL,
        started_ms  INTEGER,
        finished_ms INTEGER
    );
    CREATE INDEX actions_by_state ON actions (state, seq);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        kind    TEXT NOT NULL,
        data    TEXT NOT NULL,
        at_ms   INTEGER NOT NULL
    );",
    // 3: the daemon-wide budget's charges (see ledger.rs).
    "CREATE TABLE charges (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        usd     REAL NOT NULL,
        at_ms   INTEGER NOT NULL
    );
    CREATE INDEX charges_by_time ON charges (at_ms);",
    // 4: workers keyed by their id alone (`WITHOUT ROWID`): `worker_create` writes two b-trees
    // (the table and its activity index) instead of three (a rowid table, the id's unique
    // index, the activity index), and a lookup by id is one search instead of two. A row with
    // no id (never written by us: ids are made by `new_id`) cannot be polled and is dropped.
    "CREATE TABLE workers_by_id (
        id              TEXT PRIMARY KEY NOT NULL,
        created_ms      INTEGER NOT NULL,
        last_seen_ms    INTEGER NOT NULL,
        active_until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO workers_by_id (id, created_ms, last_seen_ms, active_until_ms)
        SELECT id, created_ms, last_seen_ms, active_until_ms FROM workers WHERE id IS NOT NULL;
    DROP TABLE workers;
    ALTER TABLE workers_by_id RENAME TO workers;
    CREATE INDEX workers_by_activity ON workers (active_until_ms);",
];

/// WAL size (pages) at which a commit checkpoints by itself.
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 20_000;

/// Page size of a new store file. A commit appends every page it changed to the WAL, whole:
/// the queue's writes are small rows one commit at a time (a `worker_create` changes two pages),
/// so the page is the unit of what a commit costs, in bytes written, WAL checksums and the page
/// cache the WAL grows into. 1 KiB pages: a sequential `worker_create` writes 2 KiB instead of
/// 8 KiB (BENCHMARKS.md, issue 13); a large prompt or result spans more, smaller pages (the same
/// bytes).
pub const PAGE_SIZE: i64 = 1024;

/// How long a writer waits for another process's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one SQLite file with the store's settings and applies [`MIGRATIONS`].
pub fn open_file(path: &Path) -> Result<Connection> {
    let mut conn = open_migrated(path)?;
    migrate(&mut conn, MIGRATIONS)?;
    Ok(conn)
}

/// Opens one SQLite file with the store's settings, for a file that [`open_file`] migrated
/// already (a second connection of the same handle: no write lock taken).
pub fn open_migrated(path: &Path) -> Result<Connection> {
    // Through the store's VFS (one write per WAL commit, see vfs.rs); should it fail to
    // register, the platform's VFS serves, slower and otherwise the same.
    let conn = match super::vfs::name() {
        Ok(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)?,
        Err(code) => {
            tracing::warn!(code, "the store's SQLite VFS could not be registered: using SQLite's own");
            Connection::open(path)?
        }
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Only a file with no pages yet takes it (before WAL mode writes the first page); an
    // existing store keeps the page size it was made with.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL: readers never block the writer; NORMAL: a commit survives a crash of the process
    // (kill -9); only a power loss can take the last commits.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The schema's CHECKs on `state` stay for other tools; our connections do not evaluate them.
    // An UPDATE of a column a CHECK reads cannot run in one pass: SQLite first gathers the rows
    // in an ephemeral b-tree, made and dropped per statement, which was a sixth of a poll's or
    // a submit's instructions (BENCHMARKS.md, issue 13). Our statements write only the literal
    // states, and every read checks the state (`TaskState::parse`, a bad one is `Corrupt`).
    conn.pragma_update(None, "ignore_check_constraints", "ON")?;
    // Checkpoints (which fsync) would otherwise run inside whichever commit crosses 1000 WAL
    // pages: the queue's hot path. The queue checkpoints from a side connection instead
    // (`QueueStore::maintain`); this larger limit is only a safety net.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    // The writer runs every queue and journal statement: keep them all prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Applies the steps of `migrations` that `PRAGMA user_version` says are missing, each in its
/// own transaction, so two processes starting together cannot both apply one.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    // Up to date (every start but the first): no write lock, no transaction to commit.
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version == known {
        return Ok(());
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > known {
            return Err(StoreError::TooNew { found: version, known });
        }
        let Some(step) = usize::try_from(version).ok().and_then(|v| migrations.get(v)) else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::debug!(version = version + 1, "store schema migrated");
    }
}
