//! The schema: versioned migrations embedded in the binary, applied in one transaction under an
//! advisory lock, so daemons starting together apply each step once; a schema newer than this
//! binary knows is refused.

use super::pool::Conn;
use crate::store::{Result, StoreError};

/// Schema steps, in order; `schema_migrations` records the applied ones. Never edit an entry
/// that has shipped: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the polling queue, the action journal and the event log (the SQLite tables, plus the
    // event counter that makes event ids gap-free across concurrent writers).
    "CREATE TABLE tasks (
        seq              BIGSERIAL PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        prompt           TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_expires_ms BIGINT,
        response         TEXT,
        dead_reason      TEXT,
        created_ms       BIGINT NOT NULL,
        updated_ms       BIGINT NOT NULL
    );
    CREATE INDEX tasks_by_state ON tasks (state, seq);
    CREATE INDEX tasks_by_lease ON tasks (lease_expires_ms) WHERE state = 'leased';
    CREATE TABLE workers (
        id              TEXT PRIMARY KEY,
        created_ms      BIGINT NOT NULL,
        last_seen_ms    BIGINT NOT NULL,
        active_until_ms BIGINT NOT NULL
    );
    CREATE INDEX workers_by_activity ON workers (active_until_ms);
    CREATE TABLE actions (
        seq         BIGSERIAL PRIMARY KEY,
        task_id     TEXT NOT NULL UNIQUE,
        action      TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('accepted', 'running', 'done')),
        result      TEXT,
        accepted_ms BIGINT NOT NULL,
        started_ms  BIGINT,
        finished_ms BIGINT
    );
    CREATE INDEX actions_by_state ON actions (state, seq);
    CREATE TABLE events (
        id      BIGINT PRIMARY KEY,
        task_id TEXT NOT NULL,
        kind    TEXT NOT NULL,
        data    TEXT NOT NULL,
        at_ms   BIGINT NOT NULL
    );
    CREATE TABLE event_counter (
        one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        last BIGINT NOT NULL
    );
    INSERT INTO event_counter (one, last) VALUES (TRUE, 0);",
    // 2: the daemon-wide budget's charges (see ledger.rs), shared by every daemon on the schema.
    "CREATE TABLE charges (
        id      BIGSERIAL PRIMARY KEY,
        task_id TEXT NOT NULL,
        usd     DOUBLE PRECISION NOT NULL,
        at_ms   BIGINT NOT NULL
    );
    CREATE INDEX charges_by_time ON charges (at_ms);",
    // 3: several daemons on one journal: the nodes, which node holds an action, and the cancels
    // one node asks of another.
    "CREATE TABLE nodes (
        id           BIGSERIAL PRIMARY KEY,
        name         TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('alive', 'dead', 'left')),
        joined_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        ended_at     TIMESTAMPTZ
    );
    CREATE INDEX nodes_alive ON nodes (heartbeat_at) WHERE state = 'alive';
    ALTER TABLE actions ADD COLUMN node BIGINT, ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX actions_unclaimed ON actions (seq) WHERE state = 'accepted' AND node IS NULL;
    CREATE INDEX actions_held ON actions (node) WHERE state <> 'done';",
];

/// The first key of our advisory locks (the second is the schema's hash).
pub const LOCK_CLASS: i32 = 0x6d63_7077; // "mcpw"

/// Creates the schema if missing and applies the missing steps of `migrations`, all in one
/// transaction holding `pg_advisory_xact_lock`. `conn`'s `search_path` names the schema.
pub async fn migrate(conn: &Conn, schema: &str, migrations: &[&str]) -> Result<()> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    conn.begin().await?;
    let outcome = apply(conn, schema, migrations, known).await;
    conn.end(outcome.is_ok()).await?;
    outcome
}

async fn apply(conn: &Conn, schema: &str, migrations: &[&str], known: i64) -> Result<()> {
    let c = &conn.client;
    c.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&LOCK_CLASS, &schema]).await?;
    let exists = c.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).await?.is_some();
    if !exists {
        // `schema` is checked (config::check_schema): safe unquoted.
        c.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    }
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let version: i64 = c.query_one("SELECT coalesce(max(version), 0)::int8 FROM schema_migrations", &[]).await?.get(0);
    if version > known {
        return Err(StoreError::TooNew { found: version, known });
    }
    for (step, sql) in migrations.iter().enumerate().skip(usize::try_from(version).unwrap_or(usize::MAX)) {
        c.batch_execute(sql).await?;
        let applied = i32::try_from(step + 1).unwrap_or(i32::MAX);
        c.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&applied]).await?;
        tracing::debug!(version = applied, schema, "store schema migrated");
    }
    Ok(())
}
