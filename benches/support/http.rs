//! Shared by the benches (`#[path]`-included): a bare-bones Streamable HTTP MCP client, a `serve`
//! child on port 0, and the two figures compared over HTTP: full queue cycles per second with
//! [`CLIENTS`] concurrent clients, and the bare `tools/list` round trips that are their baseline.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mcp_workers::store::{QueueStore, SqliteStore};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-workers");
pub const CLIENTS: usize = 16;
pub const PROTOCOL: &str = "2025-06-18";

/// A bare-bones Streamable HTTP MCP client (JSON-RPC over POST, SSE replies).
pub struct Mcp {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub next_id: u64,
}

impl Mcp {
    pub async fn connect(url: &str) -> Self {
        let mut mcp = Self { http: reqwest::Client::new(), url: url.to_owned(), session: None, next_id: 0 };
        let params =
            json!({"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}});
        mcp.request("initialize", params).await;
        mcp.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        mcp
    }

    async fn post(&mut self, body: Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_string());
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        let resp = req.send().await.expect("POST");
        if let Some(s) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            self.session = Some(s.to_owned());
        }
        resp
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
            .text()
            .await
            .expect("body");
        for line in text.lines() {
            let data = line.strip_prefix("data:").map_or(line, str::trim);
            if let Ok(v) = serde_json::from_str::<Value>(data)
                && v["id"] == id
            {
                return v["result"].clone();
            }
        }
        panic!("no reply to {method}: {text}");
    }

    /// A tool call; returns the JSON object in its text content.
    pub async fn call(&mut self, tool: &str, args: Value) -> Value {
        let result = self.request("tools/call", json!({"name": tool, "arguments": args})).await;
        serde_json::from_str(result["content"][0]["text"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
    }
}

/// Starts `mcp-workers serve` on a free loopback port; returns the child and the /mcp URL.
#[allow(dead_code)] // each bench includes this file; not every one calls everything
pub fn serve(dir: &std::path::Path) -> (Child, String) {
    serve_bin(BIN, dir)
}

/// [`serve`] of a given `mcp-workers` binary.
pub fn serve_bin(bin: &str, dir: &std::path::Path) -> (Child, String) {
    serve_with(bin, dir, &[])
}

/// [`serve_bin`] with further arguments after `serve` (global flags such as `--store` too).
#[allow(dead_code)] // each bench includes this file; not every one calls everything
pub fn serve_with(bin: &str, dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--timeout", "30"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = loop {
        let line = lines.next().expect("serve exited").expect("stderr line");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Full cycles per second: `n` tasks enqueued (in chunks, by another thread, through the store)
/// while [`CLIENTS`] workers poll and submit over HTTP.
pub async fn cycles_per_second(url: &str, store: Arc<SqliteStore>, n: usize) -> f64 {
    cycles_per_second_on(&[url], store, n).await
}

/// [`cycles_per_second`] with the clients spread over several daemons (round robin).
pub async fn cycles_per_second_on(urls: &[&str], store: Arc<dyn QueueStore>, n: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut mcp = Mcp::connect(urls[i % urls.len()]).await;
        let w = mcp.call("worker_create", json!({})).await["worker_id"].as_str().expect("worker").to_owned();
        clients.push((mcp, w));
    }
    let started = Instant::now();
    let producer = tokio::spawn(async move {
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            let prompts: Vec<String> = chunk.iter().map(|i| format!("bench prompt {i}")).collect();
            store.enqueue(&prompts).await.expect("enqueue");
        }
    });
    let mut tasks = Vec::new();
    for (mut mcp, w) in clients {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let got = mcp.call("worker_poll", json!({"worker_id": w})).await;
                if let Some(t) = got["task_id"].as_str() {
                    let r = mcp.call("worker_submit", json!({"worker_id": w, "task_id": t, "response": "ok"})).await;
                    assert_eq!(r["submitted"], true, "{r}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    producer.await.expect("producer");
    n as f64 / elapsed.as_secs_f64()
}

/// Bare `tools/list` round trips per second from [`CLIENTS`] clients for `window`.
pub async fn bare_round_trips_per_second(url: &str, window: Duration) -> f64 {
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..CLIENTS {
        let mut mcp = Mcp::connect(url).await;
        let count = Arc::clone(&count);
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                mcp.request("tools/list", json!({})).await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Three alternating rounds of [`cycles_per_second`] (`n` tasks) and [`bare_round_trips_per_second`]
/// (1 s) against one `serve`; prints the medians and the ratio.
#[allow(dead_code)] // each bench includes this file; not every one calls everything
pub async fn print_http_cycles(n: usize) {
    print_http_cycles_of(&[BIN], n).await;
}

/// [`print_http_cycles`] for each binary (this build first), one `serve` each, their rounds
/// alternating so the machine's load falls on all alike.
pub async fn print_http_cycles_of(bins: &[&str], n: usize) {
    let mut runs = Vec::new();
    for bin in bins {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, url) = serve_bin(bin, dir.path());
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        runs.push((dir, server, url, store, Vec::new(), Vec::new()));
    }
    for _ in 0..3 {
        for (_, _, url, store, cycles, bare) in &mut runs {
            cycles.push(cycles_per_second(url, Arc::clone(store), n).await);
            bare.push(bare_round_trips_per_second(url, Duration::from_secs(1)).await);
        }
    }
    println!("## cycles over Streamable HTTP, {CLIENTS} clients, SQLite store ({n} tasks x 3 runs)");
    for (bin, (_dir, mut server, _, _, cycles, bare)) in bins.iter().zip(runs) {
        let ratios: Vec<String> = cycles.iter().zip(&bare).map(|(c, b)| format!("{:.2}", c / (b / 2.0))).collect();
        let (cycles, bare) = (median(cycles), median(bare));
        println!("{bin}:");
        println!("cycles/s (median): {cycles:.0}");
        println!(
            "baseline tools/list round trips/s: {bare:.0} (= {:.0} two-call cycles/s); ratio {:.2} (rounds: {})",
            bare / 2.0,
            cycles / (bare / 2.0),
            ratios.join(", ")
        );
        let _ = server.kill();
        let _ = server.wait();
    }
}
