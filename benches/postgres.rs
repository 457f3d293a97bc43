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
//! 4. Full queue cycles/s over Streamable HTTP, 16 clients: two `serve` daemons on one
//!    PostgreSQL schema (8 clients each) versus one `serve` on SQLite (all 16), alternating.
//! 5. Actions accepted-to-started across daemons: daemon A's one slot is held, so every action
//!    posted to A (`?wait=true`) is claimed and run by daemon B; `startedMs - acceptedMs` from
//!    the journal (both the database's clock; 1 ms resolution). Baselines in the same run: the
//!    same posted to B itself, and one `serve` on SQLite. Both with a stub `claude`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_workers::store::{Clock, PgConfig, PgStore, QueueStore, SqliteStore};

#[path = "support/http.rs"]
mod http;
#[path = "support/stub.rs"]
mod stub;

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

    // 4. full cycles over HTTP: two daemons on PostgreSQL against one on SQLite
    http_cycles().await;
    // 5. actions accepted-to-started across daemons
    accepted_to_started().await;
}

const HTTP_TASKS: usize = 2000;

async fn http_cycles() {
    let s = schema();
    let store = format!("{}?schema={s}", base_url());
    let (da, db, dq) =
        (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (mut a, url_a) = http::serve_with(http::BIN, da.path(), &["--store", &store, "--node-name", "a"]);
    let (mut b, url_b) = http::serve_with(http::BIN, db.path(), &["--store", &store, "--node-name", "b"]);
    let (mut q, url_q) = http::serve_with(http::BIN, dq.path(), &[]);
    let producer_pg: Arc<dyn QueueStore> = Arc::new(pg(&s).await);
    let producer_sq: Arc<dyn QueueStore> = Arc::new(SqliteStore::open(dq.path()).expect("sqlite"));
    let (mut on_pg, mut on_sq) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        on_pg.push(http::cycles_per_second_on(&[&url_a, &url_b], producer_pg.clone(), HTTP_TASKS).await);
        on_sq.push(http::cycles_per_second_on(&[&url_q], producer_sq.clone(), HTTP_TASKS).await);
    }
    let (pg_med, sq_med) = (http::median(on_pg.clone()), http::median(on_sq.clone()));
    println!(
        "full queue cycles/s over Streamable HTTP, {} clients, {HTTP_TASKS} tasks x 3 alternating rounds: 2 daemons + PostgreSQL median {pg_med:.0} {on_pg:.0?}, 1 daemon + SQLite median {sq_med:.0} {on_sq:.0?}, ratio {:.2}",
        http::CLIENTS,
        pg_med / sq_med
    );
    for child in [&mut a, &mut b, &mut q] {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(producer_pg);
    drop_schema(&s).await;
}

const ACTIONS: usize = 60;

/// `serve` with a stub `claude` and a registry of one server, in its own project root.
fn stub_daemon(root: &std::path::Path, claude: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    std::fs::create_dir_all(root.join(".claude")).expect("registry dir");
    std::fs::write(root.join(".claude/mcp_servers.json"), r#"{"mcpServers":{"bench":{"command":"true"}}}"#)
        .expect("registry");
    let (root_s, claude_s) = (root.to_string_lossy().into_owned(), claude.to_string_lossy().into_owned());
    let mut args = vec!["--root", root_s.as_str(), "--claude", claude_s.as_str()];
    args.extend_from_slice(extra);
    let (child, url) = http::serve_with(http::BIN, &root.join("data"), &args);
    (child, url.trim_end_matches("/mcp").to_owned())
}

/// Posts one action after another to `post_to` (waiting for each result), then reads
/// `startedMs - acceptedMs` of each from the journal.
async fn started_after_accept(post_to: &str, prefix: &str) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(ACTIONS);
    for i in 0..ACTIONS {
        let id = format!("{prefix}{i}");
        let body = serde_json::json!({"actions": [{"type": "spawn_worker", "taskId": id, "task": "bench", "servers": ["bench"]}]});
        let answer: serde_json::Value = http
            .post(format!("{post_to}/v1/actions?wait=true"))
            .json(&body)
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("answer");
        assert_eq!(answer["results"][0]["success"], true, "{answer}");
        let task: serde_json::Value =
            http.get(format!("{post_to}/v1/tasks/{id}")).send().await.expect("GET").json().await.expect("task");
        let (accepted, started) =
            (task["acceptedMs"].as_u64().expect("accepted"), task["startedMs"].as_u64().expect("started"));
        samples.push(Duration::from_millis(started.saturating_sub(accepted)));
    }
    samples
}

async fn accepted_to_started() {
    let s = schema();
    let store = format!("{}?schema={s}", base_url());
    let dir = tempfile::tempdir().expect("dir");
    let fast = stub::stub(dir.path(), "claude-fast", "");
    let held = stub::stub(dir.path(), "claude-held", "exec sleep 600\n");
    let (ra, rb, rq) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("q"));
    let one = ["--max-workers", "1"];
    let (mut a, url_a) =
        stub_daemon(&ra, &held, &[&["--store", store.as_str(), "--node-name", "a"][..], &one[..]].concat());
    let http = reqwest::Client::new();
    // A's only slot: held for the whole run.
    let hold = serde_json::json!({"actions": [{"type": "spawn_worker", "taskId": "hold", "task": "hold", "servers": ["bench"]}]});
    http.post(format!("{url_a}/v1/actions")).json(&hold).send().await.expect("POST hold");
    loop {
        let task: serde_json::Value =
            http.get(format!("{url_a}/v1/tasks/hold")).send().await.expect("GET").json().await.expect("task");
        if task["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut b, url_b) = stub_daemon(&rb, &fast, &["--store", store.as_str(), "--node-name", "b"]);
    let (mut q, url_q) = stub_daemon(&rq, &fast, &[]);
    let (mut across, mut local, mut sqlite) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        across.extend(started_after_accept(&url_a, &format!("x{round}-")).await);
        local.extend(started_after_accept(&url_b, &format!("l{round}-")).await);
        sqlite.extend(started_after_accept(&url_q, &format!("s{round}-")).await);
    }
    let show = |v: Vec<Duration>| {
        let (med, p99) = stats(v);
        format!("median {med:.0} ms p99 {p99:.0} ms")
    };
    println!(
        "actions accepted-to-started ({} per case, 1 ms resolution): posted to A, run by B {}; posted to B, run by B {}; one daemon on SQLite {}",
        3 * ACTIONS,
        show(across),
        show(local),
        show(sqlite)
    );
    for child in [&mut a, &mut b, &mut q] {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop_schema(&s).await;
}
