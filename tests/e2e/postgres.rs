//! The store on PostgreSQL, black box: `serve`, `mcp queue`, `enqueue` and `tasks` as separate
//! processes on one database (each test in a schema of its own, dropped afterwards). The
//! database is `MCP_WORKERS_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/test`;
//! `scripts/postgres.sh` starts it); without one these tests fail, never skip.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BIN, Driver, HttpServer, data_dir};

const LONG: Duration = Duration::from_secs(30);

fn base_url() -> String {
    std::env::var("MCP_WORKERS_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of this test's own on the test database, dropped with the value.
pub(crate) struct Schema {
    name: String,
}

impl Schema {
    pub(crate) fn new() -> Self {
        Self { name: format!("e2e_{}", uuid::Uuid::new_v4().simple()) }
    }

    /// The store URL naming this schema.
    pub(crate) fn url(&self) -> String {
        format!("{}?schema={}", base_url(), self.name)
    }

    /// `mcp-workers --store URL ARGS` in its own process (a data dir of its own, unused).
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let dir = data_dir();
        Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", &self.url()])
            .args(args)
            .output()
            .expect("run")
    }

    fn enqueue(&self, prompts: &[&str]) -> Vec<String> {
        let mut args = vec!["enqueue"];
        args.extend_from_slice(prompts);
        let out = self.cli(&args);
        assert!(out.status.success(), "enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    fn tasks(&self) -> Vec<Value> {
        let out = self.cli(&["tasks", "--json"]);
        assert!(out.status.success(), "tasks failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("tasks --json")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (base_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await
            })
        })
        .join();
    }
}

/// A poll waiting on one process gets a task that another process enqueues, at once (the
/// listener's NOTIFY, not the fallback poll: well under its 2 s).
fn poll_gets_task_enqueued_elsewhere(driver: &mut Driver, schema: &Schema) {
    let w = driver.create_worker();
    driver.start("p", "worker_poll", json!({"worker_id": w}), true);
    driver.expect(|e| e["event"] == "progress" && e["id"] == "p", LONG);
    let started = Instant::now();
    let ids = schema.enqueue(&["across processes"]);
    let got = driver.outcome("p", LONG);
    assert_eq!(got["json"]["task_id"], ids[0].as_str(), "{got}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let sub = driver.call("s", "worker_submit", json!({"worker_id": w, "task_id": ids[0], "response": "pg"}));
    assert_eq!(sub["json"]["submitted"], true, "{sub}");
    let all = schema.tasks();
    assert_eq!((all.len(), all[0]["state"].as_str(), all[0]["response"].as_str()), (1, Some("done"), Some("pg")));
}

#[test]
fn http_poll_on_serve_gets_a_task_enqueued_by_another_process() {
    let schema = Schema::new();
    let dir = data_dir();
    let url = schema.url();
    let server = HttpServer::start(dir.path(), &["--store", &url, "--timeout=50", "--progress-interval", "200ms"]);
    let mut driver = Driver::http(&server.url);
    poll_gets_task_enqueued_elsewhere(&mut driver, &schema);
    assert!(!dir.path().join("store.sqlite3").exists(), "nothing went to SQLite");
}

#[test]
fn stdio_poll_gets_a_task_enqueued_by_another_process() {
    let schema = Schema::new();
    let dir = data_dir();
    let url = schema.url();
    let mut driver = Driver::stdio(dir.path(), &["--store", &url, "--timeout", "50", "--progress-interval=200ms"]);
    poll_gets_task_enqueued_elsewhere(&mut driver, &schema);
}

#[test]
fn kill_9_of_serve_with_a_task_leased_then_restart_delivers_every_task_once() {
    let schema = Schema::new();
    let dir = data_dir();
    let url = schema.url();
    let ids = schema.enqueue(&["one", "two"]);
    let flags = ["--store", url.as_str(), "--timeout=20", "--lease=2s"];
    let mut server = HttpServer::start(dir.path(), &flags);
    let mut a = Driver::http(&server.url);
    let wa = a.create_worker();
    assert_eq!(a.call("p", "worker_poll", json!({"worker_id": wa}))["json"]["task_id"], ids[0].as_str());
    server.kill9();
    a.kill();
    let states: Vec<Value> = schema.tasks().iter().map(|t| t["state"].clone()).collect();
    assert_eq!(states, [json!("leased"), json!("queued")]);
    // The killed daemon's node name lock went with its connection: a new serve starts at once.
    let server = HttpServer::start(dir.path(), &flags);
    let mut b = Driver::http(&server.url);
    let wb = b.create_worker();
    let mut delivered = Vec::new();
    for i in 0..2 {
        let got = b.call(&format!("p{i}"), "worker_poll", json!({"worker_id": wb}));
        let task_id = got["json"]["task_id"].as_str().unwrap_or_else(|| panic!("no task: {got}")).to_owned();
        let sub =
            b.call(&format!("s{i}"), "worker_submit", json!({"worker_id": wb, "task_id": task_id, "response": "ok"}));
        assert_eq!(sub["json"]["submitted"], true, "{sub}");
        delivered.push(task_id);
    }
    delivered.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(delivered, all);
    let after = schema.tasks();
    assert!(after.iter().all(|t| t["state"] == "done"), "{after:?}");
    let first = after.iter().find(|t| t["id"] == ids[0].as_str()).expect("first task");
    assert_eq!(first["attempts"], 2, "the leased task was redelivered after its lease: {first}");
}

#[test]
fn a_second_serve_under_one_node_name_is_refused_and_the_password_is_never_shown() {
    // Trust auth ignores the password, so the URL with one connects; it must show up nowhere.
    let schema = Schema::new();
    let secret = "Sup3rSecretPw";
    let url = schema.url().replacen("://postgres@", &format!("://postgres:{secret}@"), 1);
    assert!(url.contains(secret), "the test URL names user postgres: {url}");
    let (one, two) = (data_dir(), data_dir());
    let first = HttpServer::start(one.path(), &["--store", &url, "-v", "--node-name", "one"]);
    first.wait_log("serving");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(two.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &url, "--node-name", "one"])
        .output()
        .expect("second serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("another daemon named `one` already serves"), "{stderr}");
    assert!(stderr.contains("postgres:***@"), "{stderr}");
    let unreachable = format!("postgres://u:{secret}@127.0.0.1:1/test?connect_timeout=2");
    let out = Command::new(BIN).args(["--store", &unreachable, "tasks"]).output().expect("tasks");
    let tasks_err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && tasks_err.contains("cannot open the store postgres://u:***@127.0.0.1:1"),
        "{tasks_err}"
    );
    let first_log = first.stderr.lock().unwrap().join("\n");
    for text in [&first_log, &stderr.to_string(), &tasks_err.to_string()] {
        assert!(!text.contains(secret), "the password leaked: {text}");
    }
}

/// A TCP proxy in front of the test database that the test can cut (every connection closed,
/// new ones refused) and restore: a database outage or restart, without touching the real
/// server other tests use.
struct Proxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = std::net::TcpStream::connect("127.0.0.1:5432") else { continue };
                let mut streams = open2.lock().unwrap();
                for s in [&client, &server] {
                    streams.push(s.try_clone().expect("clone"));
                }
                for (mut from, mut to) in
                    [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The store URL through this proxy, naming `schema`.
    fn url(&self, schema: &Schema) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test?schema={}&connect_timeout=2", self.port, schema.name)
    }
}

/// The status code of `GET path` on a server at `base` (`http://127.0.0.1:PORT/mcp`).
fn status(base: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let authority = base.trim_start_matches("http://").split('/').next().expect("authority");
    let Ok(mut stream) = std::net::TcpStream::connect(authority) else { return 0 };
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn until_status(base: &str, path: &str, want: impl Fn(u16) -> bool) {
    let deadline = Instant::now() + LONG;
    loop {
        let got = status(base, path);
        if want(got) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} stayed {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_is_unready_while_the_database_is_away_and_rides_out_its_return() {
    if std::env::var_os("MCP_WORKERS_TEST_PG").is_some() {
        // The proxy forwards to 127.0.0.1:5432; a custom database would not be behind it.
        panic!("this test needs the default test database on 127.0.0.1:5432 (unset MCP_WORKERS_TEST_PG)");
    }
    let schema = Schema::new();
    let proxy = Proxy::start();
    let dir = data_dir();
    let url = proxy.url(&schema);
    let flags = ["--store", &url, "--timeout=50", "--progress-interval", "200ms", "--node-name", "n1"];
    let server = HttpServer::start(dir.path(), &flags);
    until_status(&server.url, "/readyz", |s| s == 200);
    proxy.cut();
    until_status(&server.url, "/readyz", |s| s == 503);
    assert_eq!(status(&server.url, "/healthz"), 200, "alive all the same");
    proxy.restore();
    until_status(&server.url, "/readyz", |s| s == 200);
    server.wait_log("node name lock held again");
    // The node name is still this daemon's: a second serve under it is refused.
    let other = data_dir();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(other.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &schema.url(), "--node-name", "n1"])
        .output()
        .expect("second serve");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another daemon named `n1` already serves"), "{out:?}");
    // And the queue works again, a task enqueued elsewhere reaching a poll that waits here.
    let mut driver = Driver::http(&server.url);
    poll_gets_task_enqueued_elsewhere(&mut driver, &schema);
}

#[test]
fn the_daemons_listener_terminated_by_the_database_reconnects_and_wakeups_resume() {
    let schema = Schema::new();
    let dir = data_dir();
    // Our own application_name, to find this daemon's connections among other tests'.
    let url = format!("{}&application_name={}", schema.url(), schema.name);
    let server = HttpServer::start(dir.path(), &["--store", &url, "--timeout=50", "--progress-interval", "200ms"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let killed: i64 = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                &[&schema.name],
            )
            .await
            .expect("terminate")
            .get(0)
    });
    assert_eq!(killed, 1, "the daemon has one listener connection");
    server.wait_log("store listener reconnected");
    let mut driver = Driver::http(&server.url);
    poll_gets_task_enqueued_elsewhere(&mut driver, &schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_on_one_schema_share_the_budget_windows() {
    use crate::support::daemon::{Daemon, action};
    use crate::support::fake_model::{FakeModel, Request, text, with_usage};
    let schema = Schema::new();
    let url = schema.url();
    let model = FakeModel::start().await;
    model.script("two-cents", |_: &Request| with_usage(3_000, 200, text("two cents")));
    let args = [
        "--store",
        url.as_str(),
        "--budget",
        "0.05usd/hour",
        "--budget-estimate-usd",
        "0.025",
        "--budget-policy",
        "refuse",
        "--max-workers",
        "1",
    ];
    // Two daemons, each with a project and a data directory of its own: only the schema is shared.
    let (first, second) = (crate::serve::fs_project(), crate::serve::fs_project());
    let mut one = Daemon::start(&first, &model, &args);
    for id in ["one", "two"] {
        one.send_action(action(id, &format!("two-cents {id}"), &["filesystem"], 60_000)).await;
        let result = one.next().await;
        assert_eq!(result["success"], true, "{result}");
        let cost = result["costUsd"].as_f64().unwrap_or(0.0);
        assert!((cost - 0.02).abs() < 1e-6, "each action costs 0.02: {result}");
    }
    // The first daemon still runs; the second sees its 0.04 and has no room for 0.025.
    let mut two = Daemon::start(&second, &model, &args);
    two.send_action(action("three", "two-cents three", &["filesystem"], 60_000)).await;
    let refused = two.next().await;
    assert_eq!(refused["error"]["kind"], "budget_exhausted", "{refused}");
    let after = refused["error"]["retryAfterMs"].as_u64().unwrap_or(0);
    assert!((3_000_000..=3_600_000).contains(&after), "when the first daemon's first charge ages out: {refused}");
    assert_eq!(model.requests_for("two-cents three").len(), 0, "a refused action never reaches the model");
    for daemon in [one, two] {
        let (status, rest, _) = daemon.finish().await;
        assert!(status.success() && rest.is_empty(), "{status:?} {rest:?}");
    }
}
