//! The PostgreSQL store against SQLite, side by side in one run (prints figures; see
//! BENCHMARKS.md): `cargo bench --bench postgres`. Needs the test database
//! (`MCP_WORKERS_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/test`; each part in a
//! schema of its own, dropped after).
//!
//! 1. Store cycles/s: 16 concurrent callers claiming and submitting 2000 tasks, on two
//!    `PgStore` handles (two daemons) versus one `SqliteStore` (one daemon).
//! 2. Enqueue-to-wakeup across handles: handle A enqueues one task while handle B waits on
//!    `task_changes` and then claims it (median, p99): PostgreSQL (LISTEN/NOTIFY) versus SQLite
//!    (another handle on the file: `data_version`, read every 5 ms while somebody waits).
//! 3. What NOTIFY costs: single-row insert commits/s on one connection, with and without a
//!    `pg_notify` in the transaction (one listener connected).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_workers::store::{Clock, PgConfig, PgStore, QueueStore, SqliteStore};

const TASKS: usize = 2000;
const CALLERS: usize = 16;
const SAMPLES: usize = 200;

fn base_url() -> String {
    std::env::var("MCP_WORKERS_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn schema() -> String {
    format!("bench_{}", uuid::Uuid::new_v4().simple())
}

async fn pg(schema: &str) -> PgStore {
    pg_with(schema, "").await
}

/// A handle with extra URL parameters (`query`: `""` or `?...`).
async fn pg_with(schema: &str, query: &str) -> PgStore {
    let config = PgConfig::parse(&format!("{}{query}", base_url()), Some(schema)).expect("url");
    PgStore::open(config, Clock::System).await.expect("open PostgreSQL (is it running? scripts/postgres.sh)")
}

async fn raw() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn drop_schema(schema: &str) {
    raw().await.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.expect("drop schema");
}

/// Cycles/s of CALLERS workers spread over `stores`, each claiming and submitting until empty.
async fn cycles(stores: Vec<Arc<dyn QueueStore>>) -> f64 {
    let prompts: Vec<String> = (0..TASKS).map(|i| format!("p{i}")).collect();
    stores[0].enqueue(&prompts).await.expect("enqueue");
    let started = Instant::now();
    let workers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
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

/// Enqueue on `a`, wake on `b`'s subscription, claim on `b`: one sample per task.
async fn wakeups(a: Arc<dyn QueueStore>, b: Arc<dyn QueueStore>) -> Vec<Duration> {
    let w = b.create_worker(Duration::from_secs(600)).await.expect("worker");
    let mut changes = b.task_changes();
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Drain wakeups left over from the previous round.
        while tokio::time::timeout(Duration::from_millis(1), changes.changed()).await.is_ok() {}
        let waiter = {
            let b = Arc::clone(&b);
            let w = w.clone();
            tokio::spawn(async move {
                loop {
                    changes.changed().await;
                    if let Some(t) = b.claim(&w, Duration::from_secs(60)).await.expect("claim") {
                        let claimed = Instant::now();
                        b.submit(&w, &t.id, "ok").await.expect("submit");
                        return (claimed, changes);
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(2)).await; // let the waiter start waiting
        let sent = Instant::now();
        a.enqueue(&[format!("w{i}")]).await.expect("enqueue");
        let (got, back) = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").expect("waiter");
        changes = back;
        samples.push(got - sent);
    }
    samples
}

/// Insert commits/s on one connection, with or without a NOTIFY in each transaction.
async fn commits(client: &tokio_postgres::Client, schema: &str, notify: bool) -> f64 {
    client.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {schema}.n (v int)")).await.expect("table");
    let insert = client.prepare(&format!("INSERT INTO {schema}.n VALUES ($1)")).await.expect("insert");
    let ping = client.prepare("SELECT pg_notify('mcp_workers_bench', 'x')").await.expect("notify");
    let n = 300;
    let started = Instant::now();
    for i in 0..n {
        client.batch_execute("BEGIN").await.expect("begin");
        client.execute(&insert, &[&i]).await.expect("row");
        if notify {
            client.execute(&ping, &[]).await.expect("notify");
        }
        client.batch_execute("COMMIT").await.expect("commit");
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(samples[samples.len() / 2]), ms(samples[((samples.len() * 99) / 100).min(samples.len() - 1)]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // 1. cycles
    let s = schema();
    let (a, b) = (Arc::new(pg(&s).await), Arc::new(pg(&s).await));
    let pg_cycles = cycles(vec![a.clone(), b.clone()]).await;
    drop((a, b));
    drop_schema(&s).await;
    // Where the time goes: the same with commits not waiting for the WAL flush.
    let s = schema();
    let no_flush = "?options=-c%20synchronous_commit%3Doff";
    let (a, b) = (Arc::new(pg_with(&s, no_flush).await), Arc::new(pg_with(&s, no_flush).await));
    let pg_async_cycles = cycles(vec![a.clone(), b.clone()]).await;
    drop((a, b));
    drop_schema(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(SqliteStore::open(dir.path()).expect("sqlite"));
    let sqlite_cycles = cycles(vec![sqlite]).await;
    println!(
        "store cycles/s, {CALLERS} callers, {TASKS} tasks: PostgreSQL (2 handles) {pg_cycles:.0}, SQLite (1 handle) {sqlite_cycles:.0}, ratio {:.2}; PostgreSQL with synchronous_commit=off {pg_async_cycles:.0}",
        pg_cycles / sqlite_cycles
    );

    // 2. wakeups across handles
    let s = schema();
    let (a, b) = (Arc::new(pg(&s).await), Arc::new(pg(&s).await));
    let (pg_med, pg_p99) = stats(wakeups(a.clone(), b.clone()).await);
    drop((a, b));
    drop_schema(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store.sqlite3");
    let a: Arc<dyn QueueStore> = Arc::new(SqliteStore::open_file(&file, Clock::System).expect("sqlite a"));
    let b: Arc<dyn QueueStore> = Arc::new(SqliteStore::open_file(&file, Clock::System).expect("sqlite b"));
    let (sq_med, sq_p99) = stats(wakeups(a, b).await);
    println!(
        "enqueue on A to claimed on B, {SAMPLES} samples: PostgreSQL NOTIFY median {pg_med:.2} ms p99 {pg_p99:.2} ms; SQLite data_version median {sq_med:.2} ms p99 {sq_p99:.2} ms"
    );

    // 3. NOTIFY's cost in commits/s (a listener is connected, as in a cluster)
    let s = schema();
    let listener = raw().await;
    listener.batch_execute("LISTEN mcp_workers_bench").await.expect("listen");
    let client = raw().await;
    client.batch_execute(&format!("CREATE SCHEMA {s}")).await.expect("schema");
    // Alternating rounds, so load on the machine hits both alike; medians of the rounds.
    let (mut plain, mut notified) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        plain.push(commits(&client, &s, false).await);
        notified.push(commits(&client, &s, true).await);
    }
    drop_schema(&s).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, notified) = (median(plain), median(notified));
    println!(
        "insert commits/s on one connection (median of 5 alternating rounds of 300): without NOTIFY {plain:.0}, with NOTIFY {notified:.0}, ratio {:.2}",
        notified / plain
    );
}
