//! Queue benchmark (prints figures; see BENCHMARKS.md): `cargo bench --bench queue`.
//!
//! 1. Full cycles per second (enqueue, worker_poll, worker_submit) over Streamable HTTP with 16
//!    concurrent clients on the durable SQLite store; baseline: the same clients doing bare
//!    `tools/list` round trips (a cycle is two tool calls).
//! 2. Enqueue-to-delivery latency to a waiting poll: in-process (the library's `Queue`) and
//!    across processes (a `serve` process, the task enqueued by this process through the store);
//!    baseline: an MCP `ping` round trip over HTTP.
//! 3. Cold start of `mcp-workers mcp queue` to an answered `initialize`; baseline: spawning
//!    `cat` and reading one line back.
//! 4. The store alone (`store_cycles.rs`): claim+submit cycles/s on `SqliteStore` (group commit
//!    on its writer thread), 1 and 16 callers; baseline: the same SQL, one transaction per call
//!    through `spawn_blocking` on a mutexed connection (what the store did before).

#[path = "../support/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{BIN, Mcp, PROTOCOL, serve};
use mcp_workers::mcp::queue::{Queue, QueueConfig};
mod store_cycles;

use mcp_workers::store::{QueueStore, SqliteStore};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = samples[((samples.len() * 99) / 100).min(samples.len() - 1)];
    (ms(samples[samples.len() / 2]), ms(p99))
}

async fn latency_in_process(samples: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let queue = Queue::start(store, QueueConfig::default(), CancellationToken::new());
    let w = queue.create_worker().await.expect("worker");
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let (q, id) = (Arc::clone(&queue), w.clone());
        let poll = tokio::spawn(async move {
            q.poll(&id, std::future::pending()).await.expect("poll");
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(3)).await;
        let t0 = Instant::now();
        queue.enqueue(vec![format!("latency {i}")]).await.expect("enqueue");
        out.push(poll.await.expect("poll task") - t0);
    }
    out
}

/// A thread that answers each request at once: a store thread doing no SQL.
fn echo_thread() -> std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
    std::thread::spawn(move || {
        for reply in rx {
            let _ = reply.send(());
        }
    });
    tx
}

async fn hop(thread: &std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    thread.send(tx).expect("echo thread");
    rx.await.expect("echo");
}

/// The same hops as an in-process delivery (two round trips to the store's writer thread, a
/// `Notify`, a oneshot to a waiting task), with no SQLite: the runtime's own floor here.
async fn handoff_floor(samples: usize) -> Vec<Duration> {
    let notify = Arc::new(tokio::sync::Notify::new());
    let slot: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>> = Arc::default();
    let (n, s) = (Arc::clone(&notify), Arc::clone(&slot));
    let thread = echo_thread();
    let dispatcher_thread = thread.clone();
    tokio::spawn(async move {
        loop {
            n.notified().await;
            hop(&dispatcher_thread).await;
            if let Some(tx) = s.lock().expect("slot").take() {
                let _ = tx.send(());
            }
        }
    });
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *slot.lock().expect("slot") = Some(tx);
        let waiter = tokio::spawn(async move {
            rx.await.expect("handoff");
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(3)).await;
        let t0 = Instant::now();
        hop(&thread).await;
        notify.notify_one();
        out.push(waiter.await.expect("waiter") - t0);
    }
    out
}

async fn latency_across_processes(url: &str, store: Arc<SqliteStore>, samples: usize) -> Vec<Duration> {
    let mut mcp = Mcp::connect(url).await;
    let w = mcp.call("worker_create", json!({})).await["worker_id"].as_str().expect("worker").to_owned();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let (url2, w2) = (url.to_owned(), w.clone());
        let mut poller =
            Mcp { http: mcp.http.clone(), url: url2, session: mcp.session.clone(), next_id: 1000 + i as u64 };
        let poll = tokio::spawn(async move {
            let got = poller.call("worker_poll", json!({"worker_id": w2})).await;
            (Instant::now(), got)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t0 = Instant::now();
        let s = Arc::clone(&store);
        s.enqueue(&[format!("x {i}")]).await.expect("enqueue");
        let (t1, got) = poll.await.expect("poll");
        assert!(got["task_id"].is_string(), "{got}");
        out.push(t1 - t0);
    }
    out
}

async fn ping_round_trips(url: &str, samples: usize) -> Vec<Duration> {
    let mut mcp = Mcp::connect(url).await;
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        mcp.request("ping", json!({})).await;
        out.push(t0.elapsed());
    }
    out
}

fn cold_start(samples: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = format!(
        "{}\n",
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    );
    let once = |cmd: &mut Command| {
        let t0 = Instant::now();
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        child.stdin.as_mut().expect("stdin").write_all(init.as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let took = t0.elapsed();
        assert!(line.contains("\"id\":1"), "{line}");
        drop(child.stdin.take());
        let _ = child.wait();
        took
    };
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..samples {
        ours.push(once(Command::new(BIN).arg("--data-dir").arg(dir.path()).args(["mcp", "queue", "--timeout=59"])));
        floor.push(once(&mut Command::new("cat")));
    }
    (ours, floor)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        http::print_http_cycles(3000).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut server, url) = serve(dir.path());
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let (med, p99) = stats(latency_in_process(1000).await);
        let (fmed, fp99) = stats(handoff_floor(1000).await);
        println!("## enqueue-to-delivery, in-process (1000 samples)");
        println!(
            "median {med:.3} ms, p99 {p99:.3} ms; baseline (same hops, no SQLite) median {fmed:.3} ms, p99 {fp99:.3} ms"
        );
        let (med, p99) = stats(latency_across_processes(&url, Arc::clone(&store), 200).await);
        let (pmed, pp99) = stats(ping_round_trips(&url, 200).await);
        println!("## enqueue-to-delivery, across processes over HTTP (200 samples)");
        println!(
            "median {med:.3} ms, p99 {p99:.3} ms; baseline HTTP ping round trip median {pmed:.3} ms, p99 {pp99:.3} ms"
        );
        let _ = server.kill();
        let _ = server.wait();
        store_cycles::report().await;
    });
    let (ours, floor) = cold_start(30);
    let ((med, p99), (fmed, fp99)) = (stats(ours), stats(floor));
    println!("## cold start of `mcp-workers mcp queue` to an answered initialize (30 runs)");
    println!("median {med:.2} ms, p99 {p99:.2} ms; baseline spawn `cat` + echo median {fmed:.2} ms, p99 {fp99:.2} ms");
}
