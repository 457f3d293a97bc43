//! The PostgreSQL backend: the store contract on a real database, each harness in a schema of
//! its own (created by the first `open`, dropped with the harness), so tests run in parallel;
//! plus what only this backend has (migrations under concurrency, the listener's reconnect,
//! the database clock). The database is `MCP_WORKERS_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`; without one these tests fail, never skip.

use std::sync::Arc;

use async_trait::async_trait;

use super::{PgConfig, PgStore};
use crate::store::contract::{Harness, ledger_contract, ms, prompts, soon, store_contract};
use crate::store::{Clock, QueueStore, StoreError};

pub(crate) fn test_url() -> String {
    std::env::var("MCP_WORKERS_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A private schema on the test database, dropped with the value.
pub(crate) struct Pg {
    pub schema: String,
}

impl Pg {
    pub fn new() -> Self {
        Self { schema: format!("t_{}", uuid::Uuid::new_v4().simple()) }
    }

    pub fn config(&self) -> PgConfig {
        PgConfig::parse(&test_url(), Some(&self.schema)).expect("test database URL")
    }

    /// A plain connection to the test database (no schema set), for what a test does by hand.
    pub async fn raw(&self) -> tokio_postgres::Client {
        super::pool::connect(&self.config(), None).await.expect("connect to the test database")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let (config, schema) = (self.config(), self.schema.clone());
        // Drop is not async, and the test's runtime may be gone: a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let client = super::pool::connect(&config, None).await?;
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
                Ok::<_, StoreError>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}

#[async_trait]
impl Harness for Pg {
    type Store = PgStore;
    async fn open(&self, clock: &Clock) -> PgStore {
        match PgStore::open(self.config(), clock.clone()).await {
            Ok(store) => store,
            Err(err) => panic!(
                "cannot open the PostgreSQL test store ({err}); start PostgreSQL (scripts/test.sh does) or set MCP_WORKERS_TEST_PG"
            ),
        }
    }
}

store_contract!(Pg::new());
ledger_contract!(Pg::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let h = Pg::new();
    let opens = (0..6).map(|_| {
        let config = h.config();
        tokio::spawn(async move { PgStore::open(config, Clock::System).await.map(drop) })
    });
    for open in opens.collect::<Vec<_>>() {
        open.await.unwrap().expect("every concurrent open succeeds");
    }
    let raw = h.raw().await;
    let applied: i64 =
        raw.query_one(&format!("SELECT count(*) FROM {}.schema_migrations", h.schema), &[]).await.unwrap().get(0);
    assert_eq!(applied, super::schema::MIGRATIONS.len() as i64);
    raw.batch_execute(&format!("INSERT INTO {}.schema_migrations (version) VALUES (99)", h.schema)).await.unwrap();
    let err = PgStore::open(h.config(), Clock::System).await.err().expect("must refuse");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[tokio::test]
async fn the_database_clock_sets_leases() {
    let h = Pg::new();
    let store = h.open(&Clock::System).await;
    store.enqueue(&prompts(&["a"])).await.unwrap();
    let w = store.create_worker(ms(60_000)).await.unwrap();
    let t = store.claim(&w, ms(30_000)).await.unwrap().unwrap();
    let raw = h.raw().await;
    let db_now: i64 = raw.query_one("SELECT floor(extract(epoch FROM now()) * 1000)::int8", &[]).await.unwrap().get(0);
    let expires = t.lease_expires_ms.unwrap();
    assert!((db_now + 29_000..=db_now + 30_000).contains(&expires), "lease {expires}, database now {db_now}");
}

#[tokio::test]
async fn the_database_clock_dates_the_budget_charges() {
    use crate::store::Ledger;
    let h = Pg::new();
    let store = h.open(&Clock::System).await;
    let raw = h.raw().await;
    // A charge written by hand a minute ago on the database's clock, and one through the store now.
    let schema = &h.schema;
    raw.batch_execute(&format!(
        "INSERT INTO {schema}.charges (task_id, usd, at_ms) VALUES ('old', 1.5, floor(extract(epoch FROM now()) * 1000)::int8 - 60000)"
    ))
    .await
    .unwrap();
    store.charge("new", 0.5).await.unwrap();
    let charges = store.charges_within(ms(3_600_000)).await.unwrap();
    assert_eq!(charges.iter().map(|c| c.1).collect::<Vec<_>>(), [1.5, 0.5], "oldest first");
    assert!((ms(60_000)..ms(70_000)).contains(&charges[0].0), "{charges:?}");
    assert!(charges[1].0 < ms(10_000), "{charges:?}");
    assert_eq!(store.charges_within(ms(30_000)).await.unwrap().len(), 1, "the old one is outside 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_reconnects_and_wakeups_resume() {
    let h = Pg::new();
    let store = h.open(&Clock::System).await;
    let other = h.open(&Clock::System).await;
    let raw = h.raw().await;
    let mut changes = store.task_changes();
    // Kill every listener of this database that listens for us (both handles' listeners).
    let killed: i64 = raw
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 2, "terminated {killed} listeners");
    // The reconnect wakes subscribers (catch-up); then another handle's enqueue must wake us
    // again, through the new listener.
    soon("the catch-up wakeup after the reconnect", changes.changed()).await;
    wait_for_listeners(&raw, 2).await;
    let waiting = tokio::spawn(async move {
        changes.changed().await;
        changes
    });
    other.enqueue(&prompts(&["after the kill"])).await.unwrap();
    soon("another handle's enqueue after the reconnect", waiting).await.unwrap();
    let w = store.create_worker(ms(60_000)).await.unwrap();
    assert_eq!(store.claim(&w, ms(1_000)).await.unwrap().unwrap().prompt, "after the kill");
}

/// Waits until `n` listener connections are back (synchronises on exposed state, not a sleep).
async fn wait_for_listeners(raw: &tokio_postgres::Client, n: i64) {
    soon("the listeners to reconnect", async {
        loop {
            let listening: i64 = raw
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'LISTEN%' AND state = 'idle'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if listening >= n {
                return;
            }
            tokio::time::sleep(ms(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn poll_only_mode_still_wakes_on_another_handles_write() {
    let h = Pg::new();
    let config = PgConfig::parse(&format!("{}?listen=false&poll_interval=50ms", test_url()), Some(&h.schema)).unwrap();
    let store = PgStore::open(config.clone(), Clock::System).await.unwrap();
    let other = PgStore::open(config, Clock::System).await.unwrap();
    let mut changes = store.task_changes();
    let waiting = tokio::spawn(async move { changes.changed().await });
    other.enqueue(&prompts(&["polled"])).await.unwrap();
    soon("a poll-only wakeup", waiting).await.unwrap();
    let _ = Arc::new(store);
}

#[tokio::test]
async fn a_bad_password_or_a_tls_failure_never_shows_the_password() {
    // The test server has TLS with a certificate no platform root vouches for: the handshake
    // itself must fail (proof that TLS is attempted), and no error shows the password.
    let h = Pg::new();
    let url = test_url().replacen("://postgres@", "://postgres:Sup3rSecretPw@", 1);
    let tls = PgConfig::parse(&format!("{url}?sslmode=require"), Some(&h.schema)).unwrap();
    let err = PgStore::open(tls, Clock::System).await.err().expect("an unverifiable certificate is refused");
    let text = err.to_string();
    assert!(!text.contains("Sup3rSecretPw"), "{text}");
    assert!(
        text.contains("***") && (text.contains("certificate") || text.contains("tls") || text.contains("TLS")),
        "{text}"
    );
    let unreachable = PgConfig::parse("postgres://u:Sup3rSecretPw@127.0.0.1:1/test?connect_timeout=2", None).unwrap();
    let text = PgStore::open(unreachable, Clock::System).await.err().expect("nothing listens on port 1").to_string();
    assert!(!text.contains("Sup3rSecretPw") && text.contains("postgres://u:***@127.0.0.1:1/test"), "{text}");
}
